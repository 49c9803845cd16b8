"""The WAL fdatasync of the driver loop (replica/group.py), run off the event loop."""

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
