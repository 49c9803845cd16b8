"""A replica group of one: the single-node commit path, with group commit.

Commands are applied in submission order, each into its own RocksDB batch written with
`sync=False`; one WAL fdatasync in a worker thread then makes a whole group durable,
and only then are the group's results released and the read watermark advanced. So
every write that arrives while an fsync is in flight shares the next one.

Reads run at `read_ts()`, the commit timestamp of the newest durable command: a reader
never observes a write that a crash could still take back. The state machine (`apply`)
is injected: this module does not import txn/.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

from zonestore_node.storage import mvcc
from zonestore_node.storage.engine import Engine, Family, WriteBatch

MAX_TS_KEY = b"max_commit_ts"
_U64 = struct.Struct(">Q")


class Command(Protocol):
    @property
    def commit_ts(self) -> int: ...


ApplyFn = Callable[[mvcc.Store, Any, WriteBatch], Any]


class GroupStats:
    """Counters the metrics endpoint reads."""

    __slots__ = ("commands", "fsync_seconds", "groups", "last_group_size")

    def __init__(self) -> None:
        self.groups = 0
        self.commands = 0
        self.last_group_size = 0
        self.fsync_seconds = 0.0


class LocalGroup:
    def __init__(self, engine: Engine, store: mvcc.Store, apply: ApplyFn) -> None:
        self.engine = engine
        self.store = store
        self._apply = apply
        stored = engine.get(Family.META, MAX_TS_KEY)
        self._durable_ts = int(_U64.unpack(stored)[0]) if stored else 0
        self._applied_ts = self._durable_ts
        self._pending: list[tuple[asyncio.Future[Any], Any]] = []
        self._wakeup = asyncio.Event()
        self.stats = GroupStats()
        self._closed = False

    def read_ts(self) -> int:
        return self._durable_ts

    def last_commit_ts(self) -> int:
        """The newest timestamp applied (durable or not): the clock must stay above it."""
        return self._applied_ts

    def submit(self, command: Any) -> asyncio.Future[Any]:
        """Apply now, in call order; the future resolves once the effect is durable."""
        if self._closed:
            raise RuntimeError("commit group is closed")
        batch = self.engine.batch()
        result = self._apply(self.store, command, batch)
        if batch.count:
            batch.put(Family.META, MAX_TS_KEY, _U64.pack(command.commit_ts))
            self.engine.write(batch)
        self._applied_ts = max(self._applied_ts, command.commit_ts)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((future, result))
        self._wakeup.set()
        return future

    async def run(self) -> None:
        """The group-commit loop: one fdatasync per group of submitted commands."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                if self._closed:
                    return
                continue
            group, self._pending = self._pending, []
            watermark = self._applied_ts
            started = time.perf_counter()
            await asyncio.to_thread(self.engine.sync_wal)
            self.stats.fsync_seconds += time.perf_counter() - started
            self.stats.groups += 1
            self.stats.commands += len(group)
            self.stats.last_group_size = len(group)
            self._durable_ts = max(self._durable_ts, watermark)
            for future, result in group:
                if not future.done():
                    future.set_result(result)

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()
