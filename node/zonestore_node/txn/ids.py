"""Ids for incomplete keys: unique, never reused, surviving restarts and leader changes.

Only the leader allocates, from an in-memory counter. Every allocation reaches the
replicated log before anyone sees the id: ids for incomplete keys travel inside the
commit that uses them, AllocateIds and ReserveIds propose a command carrying only the
new high-water mark. Applying a command raises the replicated high-water mark (META
`id_high_water`, written by txn/apply.py), and the counter never goes below it, so a
new leader, which has applied every committed entry before it accepts requests, never
hands out an id that was acknowledged before. Ids of proposals that never committed may
be handed out again: nobody was told about them.
"""

from __future__ import annotations

import struct

from zonestore_node.model import limits
from zonestore_node.storage.engine import Engine, Family

HWM_KEY = b"id_high_water"
_U64 = struct.Struct(">Q")


def stored_high_water(engine: Engine) -> int:
    """The highest id any applied command allocated or reserved (0: none)."""
    raw = engine.get(Family.META, HWM_KEY)
    return int(_U64.unpack(raw)[0]) if raw else 0


def encode_high_water(value: int) -> bytes:
    return _U64.pack(value)


class IdAllocator:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._next = 1

    def allocate(self, count: int) -> range:
        start = max(self._next, stored_high_water(self._engine) + 1)
        if start + count > limits.MAX_ID:
            raise OverflowError("id space exhausted")
        self._next = start + count
        return range(start, start + count)

    def reserve(self, ident: int) -> None:
        """Never hand out `ident` (nor anything below it) from now on."""
        self._next = max(self._next, ident + 1)
