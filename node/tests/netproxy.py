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

`delay(node, seconds)` holds every chunk forwarded on a link to or from `node` back by
`seconds` (latency, not a rate limit: chunks queue with their arrival time and leave
when due, in order), on connections open and new; `delay(node, 0)` or `heal()` ends it.

Run as a process, it forwards fixed links and takes its delays from a file (the
network-namespace mode runs one in each replica's namespace: tests/jepsen/netns.py):
    python -m tests.netproxy --delays FILE SRC>DST=LISTEN_HOST:PORT>TARGET_HOST:PORT ...
FILE holds a JSON object {node: seconds}, re-read when it changes (within 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
import time

from tests.harness import free_port


class Link:
    def __init__(
        self,
        hub: ProxyHub,
        src: str,
        dst: str,
        target_port: int,
        listen: tuple[str, int] | None = None,
        target_host: str = "127.0.0.1",
    ) -> None:
        self.hub = hub
        self.src, self.dst = src, dst
        self.target_host, self.target_port = target_host, target_port
        self.host, self.port = listen or ("127.0.0.1", free_port())
        self.cut_flag = False
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, self.host, self.port)

    def delay_s(self) -> float:
        return max(self.hub.delays.get(self.src, 0.0), self.hub.delays.get(self.dst, 0.0))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward chunks, each when its delay (taken on arrival) is due."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def pump() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while not self.cut_flag:
                    data = await reader.read(65536)
                    if not data or self.cut_flag:
                        break
                    queue.put_nowait((loop.time() + self.delay_s(), data))
            queue.put_nowait(None)

        pumping = asyncio.create_task(pump())
        try:
            with contextlib.suppress(ConnectionError, OSError):
                while (item := await queue.get()) is not None and not self.cut_flag:
                    due, data = item
                    if due > loop.time():
                        await asyncio.sleep(due - loop.time())
                    if self.cut_flag:
                        break
                    writer.write(data)
                    await writer.drain()
        finally:
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_flag:
            self.writers.add(writer)  # black hole: hold the connection, read nothing
            return
        if not self.hub.running:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
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
        self.delays: dict[str, float] = {}  # node -> seconds added to its links' chunks
        self.running = True

    def link(
        self,
        src: str,
        dst: str,
        target_port: int,
        listen: tuple[str, int] | None = None,
        target_host: str = "127.0.0.1",
    ) -> int:
        """A proxy for traffic from `src` to `dst`'s peer port; returns its port."""
        link = Link(self, src, dst, target_port, listen, target_host)
        asyncio.run_coroutine_threadsafe(link.start(), self.loop).result(5)
        self.links[(src, dst)] = link
        return link.port

    def delay(self, node: str, seconds: float) -> None:
        """Hold back every chunk on `node`'s links `seconds` (0: no more delay)."""
        self.delays = {**self.delays, node: seconds}

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

    def cut_links(self) -> list[str]:
        cut = [f"{a}->{b}" for (a, b), link in sorted(self.links.items()) if link.cut_flag]
        return cut + [f"delay {n} {s * 1000:.0f}ms" for n, s in sorted(self.delays.items()) if s]

    def heal(self) -> None:
        self.delays = {}
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


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netproxy", description="fixed links with delays")
    parser.add_argument("--delays", required=True, help="JSON file {node: seconds}")
    parser.add_argument("links", nargs="+", help="SRC>DST=LISTEN_HOST:PORT>TARGET_HOST:PORT")
    args = parser.parse_args(argv)
    hub = ProxyHub()
    for spec in args.links:
        names, _, route = spec.partition("=")
        src, _, dst = names.partition(">")
        listen, _, target = route.partition(">")
        target_host, target_port = _address(target)
        hub.link(src, dst, target_port, _address(listen), target_host)
    print(f"netproxy: {len(args.links)} links up", flush=True)
    seen = (0, 0)
    while True:  # until killed (with its namespace)
        with contextlib.suppress(OSError, ValueError):
            st = os.stat(args.delays)
            mtime = (st.st_ino, st.st_mtime_ns)  # replaced whole, so a new inode each time
            if mtime != seen:
                with open(args.delays) as f:
                    hub.delays = {str(k): float(v) for k, v in json.load(f).items()}
                seen = mtime
                print(f"netproxy: delays {hub.delays}", flush=True)
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
