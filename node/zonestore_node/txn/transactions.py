"""Open transactions on the leader: their snapshots, read sets and expiry.

A read-write transaction reads at `read_ts` and records what it read (entity keys and
scanned index ranges); Commit hands both to apply, which validates them in log order.
Transaction ids are an 8-byte tag of the leadership that began them (leader and term)
followed by 16 random bytes: opaque to clients, unguessable across a cluster. Open
transactions live in the leader's memory, so a leader change loses them; the tag lets
the new leader answer ABORTED (the clients retry the whole transaction) instead of
"invalid" for ids it never issued itself. Abandoned transactions expire (270 s total,
60 s idle, as Datastore does).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from zonestore_node.model import limits
from zonestore_node.model.errors import Code, DatastoreError, invalid
from zonestore_node.txn.command import ReadRange


@dataclass(slots=True)
class Transaction:
    id: bytes
    project: str
    database: str
    read_only: bool
    read_ts: int
    started: float
    last_used: float
    read_keys: set[bytes] = field(default_factory=set)
    read_ranges: list[ReadRange] = field(default_factory=list)


TAG_BYTES = 8


def epoch_tag(leadership: str) -> bytes:
    return hashlib.blake2b(leadership.encode(), digest_size=TAG_BYTES).digest()


class Registry:
    def __init__(
        self,
        monotonic: Callable[[], float] = time.monotonic,
        leadership: Callable[[], str] = lambda: "",
    ) -> None:
        """`leadership()` names the current leadership (e.g. "node-a/term-7")."""
        self._now = monotonic
        self._leadership = leadership
        self._open: dict[bytes, Transaction] = {}

    def __len__(self) -> int:
        return len(self._open)

    def begin(self, project: str, database: str, read_only: bool, read_ts: int) -> Transaction:
        now = self._now()
        txn_id = epoch_tag(self._leadership()) + os.urandom(16)
        txn = Transaction(txn_id, project, database, read_only, read_ts, now, now)
        self._open[txn.id] = txn
        return txn

    def get(self, txn_id: bytes, project: str, database: str) -> Transaction:
        txn = self._open.get(txn_id)
        now = self._now()
        if txn is not None and self._expired(txn, now):
            del self._open[txn_id]
            txn = None
        if txn is None:
            if len(txn_id) == TAG_BYTES + 16 and txn_id[:TAG_BYTES] != epoch_tag(
                self._leadership()
            ):
                raise DatastoreError(
                    Code.ABORTED,
                    "The transaction was begun under another leader; retry it.",
                )
            raise invalid("The transaction has expired or is invalid.")
        if txn.project != project or txn.database != database:
            raise invalid("The transaction belongs to another project or database.")
        txn.last_used = now
        return txn

    def open(self) -> list[Transaction]:
        return list(self._open.values())

    def finish(self, txn_id: bytes) -> None:
        self._open.pop(txn_id, None)

    def _expired(self, txn: Transaction, now: float) -> bool:
        return (
            now - txn.started > limits.TXN_MAX_LIFETIME_S
            or now - txn.last_used > limits.TXN_MAX_IDLE_S
        )

    def expire(self) -> int:
        now = self._now()
        dead = [t for t, txn in self._open.items() if self._expired(txn, now)]
        for txn_id in dead:
            del self._open[txn_id]
        return len(dead)
