"""Peer transport: length-prefixed msgpack frames over TCP between replicas.

Owns connections, framing and reconnection; knows nothing of what the frames mean. One
outbound connection per peer, fed by a bounded queue: everything queued while a write
is in flight goes out in the next write (batching without timers). A lost connection
drops what was queued (Raft retransmits), reports the peer unreachable, and reconnects
with exponential backoff. Inbound connections start with a hello frame naming the
sender. Frames are `[kind, body]` with plain msgpack types: never pickle.

A silent partition leaves TCP connections that accept writes into the void for many
minutes. So the receiving side acknowledges traffic on the same connection (an ACK
frame, at most every `ACK_EVERY_S`), and a sender whose frames stay unacknowledged for
`SILENCE_LIMIT_S` drops the connection and dials again: a new connection only works
once the path is back.

TLS: `ssl_server` / `ssl_client` contexts are accepted and passed to asyncio as they are;
the security work supplies them (mutual TLS with a per-cluster CA).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any

import msgpack

log = logging.getLogger("zonestore.transport")

_LEN = struct.Struct(">I")
MAX_FRAME = 64 << 20
HELLO = 0
ACK = 3
QUEUE_LIMIT = 4096
ACK_EVERY_S = 0.1
SILENCE_LIMIT_S = 2.0

Handler = Callable[[str, int, Any], None]
"""(peer id, frame kind, frame body) -> None; called on the event loop."""


def encode_frame(kind: int, body: Any) -> bytes:
    payload: bytes = msgpack.packb([kind, body], use_bin_type=True)
    return _LEN.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, Any]:
    header = await reader.readexactly(4)
    (length,) = _LEN.unpack(header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
    kind, body = msgpack.unpackb(await reader.readexactly(length), raw=False)
    return int(kind), body


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class _Link:
    """The outbound side towards one peer."""

    def __init__(self, transport: Transport, peer: str) -> None:
        self.transport = transport
        self.peer = peer
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_LIMIT)
        self.task: asyncio.Task[None] | None = None
        self.connected = False
        self.writer: asyncio.StreamWriter | None = None
        self.connected_at = 0.0
        self.unacked_since: float | None = None

    async def run(self) -> None:
        backoff = 0.05
        while True:
            addr = self.transport.addresses.get(self.peer)
            if not addr:
                await asyncio.sleep(0.5)
                continue
            try:
                host, port = split_addr(addr)
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, ssl=self.transport.ssl_client), timeout=2.0
                )
            except (OSError, TimeoutError, ValueError) as exc:
                self._fail(f"connect: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            self.connected = True
            self.writer = writer
            self.connected_at = time.monotonic()
            self.unacked_since = None
            watchdog = asyncio.get_running_loop().create_task(self._watch(reader, writer))
            try:
                writer.write(encode_frame(HELLO, [self.transport.node_id, self.transport.hello]))
                while True:
                    frame = await self.queue.get()
                    chunks = [frame]
                    while not self.queue.empty():
                        chunks.append(self.queue.get_nowait())
                    if self.unacked_since is None:
                        self.unacked_since = time.monotonic()
                    writer.writelines(chunks)
                    await writer.drain()
            except (OSError, ConnectionError) as exc:
                self._fail(f"send: {exc}")
            finally:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
                self.connected = False
                self.writer = None
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read the peer's ACKs; abort the connection when frames go unacknowledged."""
        while True:
            try:
                kind, _ = await asyncio.wait_for(read_frame(reader), timeout=ACK_EVERY_S * 2)
                if kind == ACK:
                    self.unacked_since = None
            except TimeoutError:
                pass
            except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
                writer.transport.abort()
                return
            since = self.unacked_since
            if since is not None and time.monotonic() - since > SILENCE_LIMIT_S:
                log.info("transport.silent_peer peer=%s; reconnecting", self.peer)
                writer.transport.abort()
                return

    def _fail(self, why: str) -> None:
        dropped = self.queue.qsize()
        while not self.queue.empty():
            self.queue.get_nowait()
        log.debug("transport.peer_unreachable peer=%s why=%s dropped=%d", self.peer, why, dropped)
        self.transport.on_unreachable(self.peer)


class Transport:
    def __init__(
        self,
        node_id: str,
        listen_addr: str,
        handler: Handler,
        on_unreachable: Callable[[str], None],
        *,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
        hello: dict[str, str] | None = None,
        on_hello: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.hello = hello or {}
        self.on_hello = on_hello
        self.listen_addr = listen_addr
        self.handler = handler
        self.on_unreachable = on_unreachable
        self.ssl_server = ssl_server
        self.ssl_client = ssl_client
        self.addresses: dict[str, str] = {}
        self._links: dict[str, _Link] = {}
        self._server: asyncio.Server | None = None
        self._inbound: set[asyncio.StreamWriter] = set()

    def set_address(self, peer: str, addr: str) -> None:
        if peer != self.node_id and addr:
            self.addresses[peer] = addr

    async def start(self) -> None:
        if not self.listen_addr:
            return  # a group of one: nobody to listen to
        host, port = split_addr(self.listen_addr)
        self._server = await asyncio.start_server(
            self._accept, host or "0.0.0.0", port, ssl=self.ssl_server, limit=MAX_FRAME
        )

    def send(self, peer: str, kind: int, body: Any) -> bool:
        """Queue one frame for `peer`; False when it had to be dropped (queue full)."""
        link = self._links.get(peer)
        if link is None:
            link = self._links[peer] = _Link(self, peer)
            link.task = asyncio.get_running_loop().create_task(link.run(), name=f"link-{peer}")
        try:
            link.queue.put_nowait(encode_frame(kind, body))
            return True
        except asyncio.QueueFull:
            return False

    async def send_paced(self, peer: str, kind: int, body: Any, max_queued: int = 4) -> None:
        """Queue one frame, first waiting until few are queued (bulk transfers such as
        snapshots must neither flood memory nor starve Raft traffic)."""
        link = self._links.get(peer)
        while link is not None and link.queue.qsize() >= max_queued:  # noqa: ASYNC110 - no drain event
            await asyncio.sleep(0.002)
        self.send(peer, kind, body)

    def is_connected(self, peer: str) -> bool:
        link = self._links.get(peer)
        return bool(link and link.connected)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._inbound.add(writer)
        peer = "?"
        try:
            kind, body = await asyncio.wait_for(read_frame(reader), timeout=5.0)
            if kind != HELLO or not isinstance(body, list) or len(body) != 2:
                return
            peer = str(body[0])
            if self.on_hello is not None:
                self.on_hello(peer, body[1])
            last_ack = 0.0
            while True:
                kind, body = await read_frame(reader)
                self.handler(peer, kind, body)
                now = time.monotonic()
                if now - last_ack >= ACK_EVERY_S:
                    last_ack = now
                    writer.write(encode_frame(ACK, None))
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            log.warning("transport.bad_frame peer=%s error=%s", peer, exc)
        finally:
            self._inbound.discard(writer)
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._inbound):
            writer.transport.abort()  # ends each inbound reader with IncompleteReadError
        tasks = [link.task for link in self._links.values() if link.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
