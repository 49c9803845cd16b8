"""Ids for incomplete keys: unique, never reused, surviving restarts.

Ids come from one node-wide counter. The counter's high-water mark is made durable a
block at a time before any id of the block is handed out, so after a crash allocation
resumes above every id that may have been returned. ReserveIds moves the counter past
the reserved ids, so they are never auto-allocated.
"""

from __future__ import annotations

import struct

from zonestore_node.model import limits
from zonestore_node.storage.engine import Engine, Family

HWM_KEY = b"id_high_water"
BLOCK = 10_000
_U64 = struct.Struct(">Q")


class IdAllocator:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        stored = engine.get(Family.META, HWM_KEY)
        self._next = int(_U64.unpack(stored)[0]) if stored else 1
        self._limit = self._next  # ids below _limit are durably reserved for us

    def _extend(self, needed_next: int) -> None:
        limit = max(needed_next, self._next) + BLOCK
        batch = self._engine.batch()
        batch.put(Family.META, HWM_KEY, _U64.pack(limit))
        self._engine.write(batch)
        self._engine.sync_wal()  # rare (once a block); a short GIL-free stall at most
        self._limit = limit

    def allocate(self, count: int) -> range:
        if self._next + count > limits.MAX_ID:
            raise OverflowError("id space exhausted")
        if self._next + count > self._limit:
            self._extend(self._next + count)
        start = self._next
        self._next += count
        return range(start, start + count)

    def reserve(self, ident: int) -> None:
        """Never hand out `ident` (nor anything below it) from now on."""
        if ident >= self._next:
            self._next = ident + 1
            if self._next > self._limit:
                self._extend(self._next)
