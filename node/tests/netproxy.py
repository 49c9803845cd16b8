"""A TCP proxy per directed link between replicas, so tests can cut the network.

`cut()` makes a link a black hole: open connections are closed and new ones are accepted
and then ignored, as packets vanish in a real partition (nothing is refused, so the
sender learns nothing until its own timeouts fire). `heal()` restores it. Everything
listens on loopback and runs in one background thread with its own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tests.harness import free_port


class Link:
    def __init__(self, hub: ProxyHub, target_port: int) -> None:
        self.hub = hub
        self.target_port = target_port
        self.port = free_port()
        self.cut_flag = False
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while not self.cut_flag:
                data = await reader.read(65536)
                if not data or self.cut_flag:
                    break
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_flag:
            self.writers.add(writer)  # black hole: hold the connection, read nothing
            return
        if not self.hub.running:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.writers.difference_update((writer, up_writer))
            for w in (writer, up_writer):
                w.close()

    def _close_all(self) -> None:
        for writer in list(self.writers):
            writer.close()
        self.writers.clear()


class ProxyHub:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.links: dict[tuple[str, str], Link] = {}
        self.running = True

    def link(self, src: str, dst: str, target_port: int) -> int:
        """A proxy for traffic from `src` to `dst`'s peer port; returns its port."""
        link = Link(self, target_port)
        asyncio.run_coroutine_threadsafe(link.start(), self.loop).result(5)
        self.links[(src, dst)] = link
        return link.port

    def _set(self, pairs: list[tuple[str, str]], cut: bool) -> None:
        def apply() -> None:
            for pair in pairs:
                link = self.links[pair]
                link.cut_flag = cut
                if cut:
                    link._close_all()

        self.loop.call_soon_threadsafe(apply)

    def isolate(self, node: str) -> None:
        self._set([p for p in self.links if node in p], True)

    def heal(self) -> None:
        self._set(list(self.links), False)

    def close(self) -> None:
        """Close every connection and listener, let the transports finish closing, then
        stop and close the loop (no transport may be left for the garbage collector)."""

        async def shutdown() -> None:
            self.running = False
            for link in self.links.values():
                link._close_all()
                if link.server is not None:
                    link.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0.05)  # closing transports finish on the next iterations

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()
