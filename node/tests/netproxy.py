"""A TCP proxy per directed link between replicas, so tests can cut the network.

A cut link is a black hole: open connections are closed and new ones are accepted and
then ignored, as packets vanish in a real partition (nothing is refused, so the sender
learns nothing until its own timeouts fire). `heal()` restores every link. Everything
listens on loopback and runs in one background thread with its own event loop.

A link carries one replica's connection to another (src dials dst): src's messages and
dst's acknowledgements of them. So `cut(src, dst)` is a one-way partition: src's
messages no longer reach dst while dst's still reach src. `isolate(node)` cuts every
link to and from a node; `partition(groups)` cuts every link between groups (a replica
in no group is cut off from all); `cut_pair(a, b)` both ways between two replicas only,
which, with a third reaching both, makes a non-transitive ("bridge") partition. Every
change has taken effect when the call returns.
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
        async def apply() -> None:
            for pair in pairs:
                link = self.links[pair]
                link.cut_flag = cut
                if cut:
                    link._close_all()

        asyncio.run_coroutine_threadsafe(apply(), self.loop).result(5)

    def isolate(self, node: str) -> None:
        self._set([p for p in self.links if node in p], True)

    def cut(self, src: str, dst: str) -> None:
        """One way: what `src` sends to `dst` vanishes; `dst` still reaches `src`."""
        self._set([(src, dst)], True)

    def cut_pair(self, a: str, b: str) -> None:
        self._set([p for p in self.links if set(p) == {a, b}], True)

    def partition(self, groups: list[set[str]]) -> None:
        """Cut every link whose ends are not in one group."""
        side = {node: i for i, group in enumerate(groups) for node in group}
        self._set(
            [
                (src, dst)
                for src, dst in self.links
                if src not in side or dst not in side or side[src] != side[dst]
            ],
            True,
        )

    def cut_links(self) -> list[tuple[str, str]]:
        return sorted(pair for pair, link in self.links.items() if link.cut_flag)

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
