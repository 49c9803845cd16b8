"""The WAL fdatasync of the driver loop (replica/group.py): in a thread, or inline when quiet."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable


def _settle(future: asyncio.Future[float], result: float, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class SyncThread:
    """Runs the WAL fdatasync off the event loop: one long-lived thread fed by a queue.

    asyncio.to_thread cost ~70-100 us of CPU per call on these machines (executor
    bookkeeping, a context copy, two chained futures); this hand-off ~30 us, once per
    Ready on every replica. The driver awaits each sync before the next, so at most one
    is queued. Not joined on close, like the default executor's threads were not."""

    def __init__(self, sync: Callable[[], float]) -> None:
        self._sync = sync
        self._queue: queue.SimpleQueue[
            tuple[asyncio.AbstractEventLoop, asyncio.Future[float]] | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def __call__(self) -> asyncio.Future[float]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="wal-sync", daemon=True)
            self._thread.start()
        self._queue.put((loop, future))
        return future

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            loop, future = item
            result, error = 0.0, None
            try:
                result = self._sync()
            except BaseException as exc:  # handed to the driver that awaits it
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(_settle, future, result, error)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread = None


class SyncPolicy:
    """Whether the next WAL fdatasync runs inline on the event loop or in `SyncThread`.

    The thread lets the loop evaluate and answer other requests while the disk syncs,
    which is what a busy replica needs. A quiet one (one client, entries arriving one
    per Ready) gains nothing from that overlap and pays two thread hand-offs per sync
    instead: measured at one client, ~80 us of node CPU per write of ~800 (on a 2-core
    VM, context switches are most of it). So the sync runs inline while recent Readies
    carried about one entry each and recent syncs were short (a slow disk never blocks
    the loop: its heartbeats and reads go on). Averages are exponential, so a burst of
    concurrent writes moves to the thread within a few Readies; an inline sync queues
    what arrives meanwhile into the next Ready, which grows it, so the switch back is
    self-reinforcing rather than oscillating.
    """

    QUIET_ENTRIES = 1.5  # mean entries per synced Ready at or below which it is quiet
    SHORT_SYNC_S = 0.002  # mean sync duration at or below which inline is harmless
    WEIGHT = 0.2  # of the newest Ready in the averages

    def __init__(self) -> None:
        self.entries = 1.0
        self.seconds = 0.0
        self.inline_syncs = 0

    def inline(self, entries: int) -> bool:
        w = self.WEIGHT
        self.entries += w * (entries - self.entries)
        quiet = self.entries <= self.QUIET_ENTRIES and self.seconds <= self.SHORT_SYNC_S
        if quiet:
            self.inline_syncs += 1
        return quiet

    def observe(self, seconds: float) -> None:
        self.seconds += self.WEIGHT * (seconds - self.seconds)
