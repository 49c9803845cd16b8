"""Datastore semantics on the leader: lookups, commits, transactions, ids.

The gRPC edge hands in parsed protobuf values (keys, mutations) and the request's
project and database; this module validates them, resolves which snapshot to read,
evaluates a commit into a `CommitCommand` (timestamps and ids captured here, before
the command is proposed), submits it to the commit group, and returns domain results
that the edge turns back into protobuf responses. Errors are `DatastoreError`s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from zonestore_node.model import indexing, keys, limits, masks
from zonestore_node.model.errors import Code, DatastoreError, invalid
from zonestore_node.replica.group import OutcomeUnknown, ProposalLost
from zonestore_node.storage import mvcc
from zonestore_node.storage.engine import Family
from zonestore_node.txn import apply as apply_mod
from zonestore_node.txn import transform
from zonestore_node.txn.clock import HybridClock
from zonestore_node.txn.command import (
    Command,
    CommitCommand,
    CreateIndexCommand,
    DropIndexCommand,
    Op,
    ReadRange,
    Write,
)
from zonestore_node.txn.ids import IdAllocator
from zonestore_node.txn.transactions import Registry, Transaction

log = logging.getLogger("zonestore.service")

# Bytes an EntityResult adds around its entity: tags, lengths, version, two timestamps.
_RESULT_OVERHEAD = 64


class CommitGroup(Protocol):
    """Where commands go to become durable: the replica group (replica/group.py).

    `check_leader`, `submit` and `read_barrier` raise the group's NotLeader when this
    replica cannot serve the request; the edge forwards it to the leader.
    """

    clock: HybridClock

    def read_ts(self) -> int: ...
    def leadership(self) -> str: ...
    def check_leader(self) -> None: ...
    def submit(self, command: Command) -> asyncio.Future[Any]: ...
    def read_barrier(self) -> asyncio.Future[int]: ...


COMMIT_TIMEOUT_S = 30.0
_FAIL = 3  # Mutation.ConflictResolutionStrategy.FAIL
_STRATEGIES = (0, 1, 3)  # STRATEGY_UNSPECIFIED (= SERVER_VALUE), SERVER_VALUE, FAIL


def _precondition(mutation: Any) -> int | None:
    """The version a mutation's conflict detection requires, if any. update_time is
    compared as the entity's commit_ts in microseconds (its update time, which is also
    its version here); a time finer than a microsecond can match no entity (-1)."""
    which = mutation.WhichOneof("conflict_detection_strategy")
    if which is None:
        return None
    if which == "base_version":
        return int(mutation.base_version)
    t = mutation.update_time
    if t.nanos % 1000:
        return -1
    return int(t.seconds) * 1_000_000 + int(t.nanos) // 1000


@dataclass(frozen=True, slots=True)
class ReadSpec:
    """Which snapshot a read sees: parsed from the request's read_options."""

    transaction: bytes | None = None
    new_transaction: bool = False
    new_transaction_read_only: bool = False
    new_transaction_read_ts: int | None = None
    read_ts: int | None = None  # read_time, in microseconds
    eventual: bool = False


@dataclass(slots=True)
class Found:
    key: Any
    version: int
    create_ts: int
    update_ts: int
    entity: bytes  # serialized Entity, key included


@dataclass(slots=True)
class LookupResult:
    read_ts: int
    found: list[Found] = field(default_factory=list)
    missing: list[Any] = field(default_factory=list)
    deferred: list[Any] = field(default_factory=list)
    transaction: bytes = b""


@dataclass(slots=True)
class MutationOutcome:
    key: Any | None  # set only where an id was allocated
    version: int
    create_ts: int
    update_ts: int
    conflict_detected: bool
    transform_results: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class CommitResult:
    commit_ts: int
    mutations: list[MutationOutcome]
    index_updates: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A resolved read: the timestamp to read at, and the transaction recording it."""

    read_ts: int
    txn: Transaction | None
    new_transaction: bytes = b""


class DatastoreService:
    def __init__(self, store: mvcc.Store, group: CommitGroup, ids: IdAllocator) -> None:
        self.store = store
        self.group = group
        self.ids = ids
        self.clock = group.clock
        # The wall clock retention is measured by (server.py: the clock guard's earliest).
        self.horizon_wall_us: Callable[[], int] = self.clock.wall
        # Told how long each replicated command took (metrics).
        self.on_replicated: Callable[[float], None] | None = None
        self.transactions = Registry(leadership=group.leadership)
        self.retention_us = 3600 * 1_000_000
        # --legacy-limits: the old 500-mutation cap per Commit (production has none now).
        self.legacy_limits = False

    # Snapshots ----------------------------------------------------------------

    async def snapshot(self, project: str, database: str, spec: ReadSpec) -> Snapshot:
        """Resolve which snapshot a read sees.

        Transactions live on the leader. Strong reads are linearizable: the leader
        confirms it still leads (ReadIndex) and reads at the newest applied commit.
        Eventual reads see whatever this replica has applied. A `read_time` read is
        served here when this replica has applied past it, else by the leader.
        """
        if spec.transaction is not None:
            self.group.check_leader()
            txn = self.transactions.get(spec.transaction, project, database)
            return Snapshot(txn.read_ts, txn)
        if spec.new_transaction:
            txn = await self._begin(
                project, database, spec.new_transaction_read_only, spec.new_transaction_read_ts
            )
            return Snapshot(txn.read_ts, txn, txn.id)
        if spec.read_ts is not None:
            read_ts = self._check_read_time(spec.read_ts)
            if read_ts > self.group.read_ts():
                read_ts = min(read_ts, await self.group.read_barrier())
            return Snapshot(read_ts, None)
        if spec.eventual:
            return Snapshot(self.group.read_ts(), None)
        return Snapshot(await self.group.read_barrier(), None)

    def retention_horizon(self) -> int:
        """The oldest timestamp still readable (read_time, snapshots): the retention
        window back from now. From the wall clock too, not only from the newest commit:
        otherwise, once writes stop, the window never moves and versions that have
        long left it are neither collected nor refused."""
        now = max(self.clock.last, self.horizon_wall_us())
        return now - self.retention_us

    def _check_read_time(self, read_ts: int) -> int:
        oldest = self.retention_horizon()
        if read_ts < oldest:
            raise invalid("read_time is older than the version retention window (1 hour).")
        return read_ts

    async def _begin(
        self, project: str, database: str, read_only: bool, read_ts: int | None
    ) -> Transaction:
        self.group.check_leader()
        ts = await self.group.read_barrier()
        if read_ts is not None:
            ts = min(self._check_read_time(read_ts), ts)
        return self.transactions.begin(project, database, read_only, ts)

    # Lookup -------------------------------------------------------------------

    async def lookup(
        self, project: str, database: str, key_pbs: list[Any], spec: ReadSpec
    ) -> LookupResult:
        if len(key_pbs) > limits.MAX_LOOKUP_KEYS:
            raise invalid(f"A lookup may have at most {limits.MAX_LOOKUP_KEYS} keys.")
        snap = await self.snapshot(project, database, spec)
        result = LookupResult(snap.read_ts, transaction=snap.new_transaction)
        encoded: list[bytes] = []
        for key in key_pbs:
            keys.normalize(key, project, database)
            encoded.append(keys.encode(key))
        if snap.txn is not None and not snap.txn.read_only:
            snap.txn.read_keys.update(encoded)
        versions = self.store.get_many(Family.ENTITIES, encoded, snap.read_ts)
        # Keep the response under the budget *after* adding a result (a budget checked
        # before adding let a near-maximum entity push it past the client's 4 MiB);
        # the first result always goes in, so every response makes progress.
        size = 0
        deferring = False
        for key, version in zip(key_pbs, versions, strict=True):
            if version is None:
                cost = key.ByteSize() + _RESULT_OVERHEAD
            else:
                create_ts, raw = apply_mod.split_payload(version.payload)
                cost = len(raw) + _RESULT_OVERHEAD
            deferring = deferring or (
                size + cost > limits.MAX_RESPONSE_BYTES and bool(result.found or result.missing)
            )
            if deferring:
                result.deferred.append(key)
            elif version is None:
                result.missing.append(key)
            else:
                result.found.append(
                    Found(key, version.commit_ts, create_ts, version.commit_ts, raw)
                )
            size += cost
        return result

    # Transactions ---------------------------------------------------------------

    async def begin_transaction(
        self, project: str, database: str, read_only: bool, read_ts: int | None
    ) -> bytes:
        return (await self._begin(project, database, read_only, read_ts)).id

    def rollback(self, project: str, database: str, txn_id: bytes) -> None:
        if not txn_id:
            raise invalid("Rollback needs a transaction.")
        self.group.check_leader()
        self.transactions.get(txn_id, project, database)
        self.transactions.finish(txn_id)

    # Commit -----------------------------------------------------------------------

    async def commit(
        self,
        project: str,
        database: str,
        transaction: bytes | None,
        mutations: list[Any],
        *,
        transactional: bool,
    ) -> CommitResult:
        if self.legacy_limits and len(mutations) > limits.LEGACY_MAX_MUTATIONS:
            raise invalid(
                f"A commit may have at most {limits.LEGACY_MAX_MUTATIONS} mutations "
                "(--legacy-limits)."
            )
        self.group.check_leader()
        txn: Transaction | None = None
        if transactional:
            if not transaction:
                raise invalid("A transactional commit needs a transaction.")
            txn = self.transactions.get(transaction, project, database)
            self.transactions.finish(transaction)
            if txn.read_only and mutations:
                raise invalid("A read-only transaction cannot write.")
        elif transaction:
            raise invalid("A non-transactional commit must not name a transaction.")

        writes: list[Write] = []
        allocated: list[Any | None] = []
        seen: set[bytes] = set()
        transforms_of: dict[bytes, int] = {}
        size = 0
        for mutation in mutations:
            write, new_key = self._evaluate(project, database, mutation)
            if not transactional and write.encoded in seen:
                raise invalid(
                    "A non-transactional commit may not contain multiple mutations "
                    "affecting the same entity."
                )
            seen.add(write.encoded)
            if write.transforms:
                count = transforms_of.get(write.encoded, 0) + len(write.transforms)
                if count > limits.MAX_TRANSFORMS_PER_ENTITY:
                    raise invalid(
                        f"A commit may apply at most {limits.MAX_TRANSFORMS_PER_ENTITY} "
                        "property transforms to one entity."
                    )
                transforms_of[write.encoded] = count
            # A transaction's writes all arrive in this one Commit: the 10 MiB
            # transaction cap is the sum of their sizes (the request cap, checked at the
            # edge, bounds it too; this names the limit the way production does).
            size += len(write.entity) or len(write.encoded)
            if size > limits.MAX_TRANSACTION_BYTES:
                raise invalid(
                    f"Transaction too big: its writes exceed {limits.MAX_TRANSACTION_BYTES} bytes."
                )
            writes.append(write)
            allocated.append(new_key)

        command = CommitCommand(
            commit_ts=self.clock.now(),
            writes=tuple(writes),
            read_ts=txn.read_ts if txn is not None else None,
            read_keys=tuple(txn.read_keys) if txn is not None else (),
            read_ranges=tuple(txn.read_ranges) if txn is not None else (),
            transactional=transactional,
            id_high_water=max((k.path[-1].id for k in allocated if k is not None), default=0),
        )
        applied = await self._replicate(command)
        if applied.error is not None:
            raise DatastoreError(applied.error, applied.message)
        outcomes = [
            MutationOutcome(
                key, w.version, w.create_ts, w.update_ts, w.conflict_detected, w.transform_results
            )
            for key, w in zip(allocated, applied.writes, strict=True)
        ]
        return CommitResult(applied.commit_ts, outcomes, applied.index_updates)

    def _evaluate(self, project: str, database: str, mutation: Any) -> tuple[Write, Any | None]:
        which = mutation.WhichOneof("operation")
        if which is None:
            raise invalid("A mutation must have an operation.")
        base = _precondition(mutation)
        fail = mutation.conflict_resolution_strategy == _FAIL
        if mutation.conflict_resolution_strategy not in _STRATEGIES:
            raise invalid(
                f"Unknown conflict_resolution_strategy {mutation.conflict_resolution_strategy}."
            )
        if mutation.conflict_resolution_strategy and base is None:
            raise invalid(
                "A conflict_resolution_strategy needs a conflict detection strategy "
                "(base_version or update_time)."
            )
        if which == "delete":
            if mutation.property_transforms:
                raise invalid("A delete mutation cannot have property transforms.")
            key = mutation.delete
            keys.normalize(key, project, database)
            return Write(Op.DELETE, keys.encode(key), b"", base, fail), None
        entity = getattr(mutation, which)
        if not entity.HasField("key"):
            raise invalid("An entity to write must have a key.")
        op = {"insert": Op.INSERT, "update": Op.UPDATE, "upsert": Op.UPSERT}[which]
        keys.normalize(entity.key, project, database, allow_incomplete=op is not Op.UPDATE)
        new_key = None
        if not keys.is_complete(entity.key):
            self._assign_id(entity.key)
            new_key = entity.key
        mask = None
        if mutation.HasField("property_mask"):
            mask = tuple(mutation.property_mask.paths)
            masks.parse_paths(mask)  # validated here; apply merges (model/masks.py)
        recipes = transform.check(mutation.property_transforms, project, database)
        indexed: list[tuple[str, bytes]] = []
        indexing.check_entity(entity, project, database, indexed)
        ei = indexing.entity_indexing(entity, indexed)
        return Write(
            op,
            ei.encoded_key,
            entity.SerializeToString(),
            base,
            fail,
            mask,
            recipes,
            index_memo=None if mask is not None or recipes else ei,
        ), new_key

    async def _replicate(self, command: Command) -> apply_mod.ApplyResult:
        """Submit a command and wait for its result.

        A proposal overwritten by a new leader did not take effect: UNAVAILABLE, safe to
        retry. One that is neither applied nor refused in time may still commit:
        DEADLINE_EXCEEDED says the outcome is unknown (see the README).
        """
        started = time.perf_counter()
        future = self.group.submit(command)
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                result: apply_mod.ApplyResult = await future
            if self.on_replicated is not None:
                self.on_replicated(time.perf_counter() - started)
            return result
        except TimeoutError:
            raise DatastoreError(
                Code.DEADLINE_EXCEEDED,
                "The commit was not confirmed in time; it may or may not have been applied.",
            ) from None
        except OutcomeUnknown as exc:
            raise DatastoreError(
                Code.DEADLINE_EXCEEDED,
                "The replica stopped before the commit was confirmed; it may or may not have "
                "been applied.",
            ) from exc
        except ProposalLost as exc:
            raise DatastoreError(
                Code.UNAVAILABLE,
                "The leader changed before the commit was replicated; it was not applied. "
                "Retry it.",
            ) from exc

    def _assign_id(self, key: Any) -> None:
        """Give an incomplete key an id that no live entity uses yet."""
        while True:
            key.path[-1].id = self.ids.allocate(1)[0]
            encoded = keys.encode(key)
            if self.store.newest(Family.ENTITIES, encoded) is None:
                return

    # Ids ---------------------------------------------------------------------------

    async def allocate_ids(self, project: str, database: str, key_pbs: list[Any]) -> list[Any]:
        for key in key_pbs:
            keys.normalize(key, project, database, allow_incomplete=True)
            if keys.is_complete(key):
                raise invalid("AllocateIds needs incomplete keys.")
        self.group.check_leader()
        for key in key_pbs:
            self._assign_id(key)
        if key_pbs:  # the ids count as handed out only once the log says so
            high = max(key.path[-1].id for key in key_pbs)
            await self._replicate(CommitCommand(self.clock.now(), (), id_high_water=high))
        return key_pbs

    async def reserve_ids(self, project: str, database: str, key_pbs: list[Any]) -> None:
        for key in key_pbs:
            keys.normalize(key, project, database)
        self.group.check_leader()
        reserved = [k.path[-1].id for k in key_pbs if k.path[-1].WhichOneof("id_type") == "id"]
        for ident in reserved:
            self.ids.reserve(ident)
        if reserved:
            await self._replicate(CommitCommand(self.clock.now(), (), id_high_water=max(reserved)))

    # Composite indexes ----------------------------------------------------------------

    async def ensure_index(self, definition: indexing.CompositeDefinition) -> None:
        """Have `definition` registered, backfilled and applied here (idempotent).

        Proposes a CreateIndexCommand through the log (the leader only: NotLeader
        elsewhere, which the edge forwards); its apply registers and backfills the
        index on every replica. Returns once this replica has applied it.
        """
        definition.check()
        if indexing.load_registry(self.store.engine).find(definition) is not None:
            return
        self.group.check_leader()
        started = time.perf_counter()
        result = await self._replicate(CreateIndexCommand(self.clock.now(), definition))
        log.info(
            "index.created kind=%s ancestor=%s columns=%s entries=%d seconds=%.3f",
            definition.kind,
            definition.ancestor,
            ",".join(c.name + (" desc" if c.descending else "") for c in definition.columns),
            result.index_updates,
            time.perf_counter() - started,
        )

    async def drop_index(self, index_id: int) -> None:
        """Unregister composite index `index_id` and delete its entries (through the log,
        the leader only; idempotent). Returns once this replica has applied it."""
        self.group.check_leader()
        started = time.perf_counter()
        await self._replicate(DropIndexCommand(self.clock.now(), index_id))
        log.info("index.dropped id=%d seconds=%.3f", index_id, time.perf_counter() - started)

    # Query hooks ---------------------------------------------------------------------

    def record_reads(self, snap: Snapshot, ranges: list[ReadRange], read_keys: list[bytes]) -> None:
        """What a query inside a read-write transaction read: the index ranges it scanned
        and the entities whose contents decided its result (residual filters)."""
        if snap.txn is not None and not snap.txn.read_only:
            snap.txn.read_ranges.extend(ranges)
            snap.txn.read_keys.update(read_keys)
