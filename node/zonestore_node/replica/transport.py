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
once the path is back. An ACK carries the acknowledging replica's wall clock (µs), which
the sender hands to `on_clock` (the replica's ClockGuard compares clocks with it).

TLS: with `tls` (a `PeerTls`), every connection is mutual TLS against a per-cluster CA:
the listener accepts plain TCP and upgrades it with the *current* server context (so a
rotated certificate is used by the next connection while existing ones carry on), and
a peer whose certificate the CA did not sign is refused (`transport.tls_refused`) before
any frame is read. Hostnames are not checked: the CA is per cluster, so "signed by it"
is the identity, and peers are dialled by addresses (pod DNS names, IPs, test proxies)
that need not all sit in a SAN. Fixed `ssl_server` / `ssl_client` contexts are still
accepted for callers that build their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from zonestore_node.filewatch import RELOAD_EVERY_S, Watched

log = logging.getLogger("zonestore.transport")

_LEN = struct.Struct(">I")
MAX_FRAME = 64 << 20
HELLO = 0
ACK = 3
QUEUE_LIMIT = 4096
ACK_EVERY_S = 0.1
SILENCE_LIMIT_S = 2.0

TLS_HANDSHAKE_TIMEOUT_S = 5.0

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


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: str
    key: str
    ca: str


class PeerTls:
    """Mutual-TLS contexts built from PEM files, rebuilt when the files change.

    The files are looked at when a connection is about to be made or accepted; a
    Kubernetes Secret update shows up there, and a set that does not load yet keeps the
    previous contexts (filewatch.Watched). Bad files at start stop the node.
    """

    def __init__(
        self,
        files: TlsFiles,
        reload_every: float = RELOAD_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.files = files
        self._contexts = Watched(
            [Path(files.cert), Path(files.key), Path(files.ca)],
            self._build,
            "transport.tls",
            reload_every,
            clock,
        )

    @property
    def generation(self) -> int:
        return self._contexts.generation

    def _build(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        f = self.files
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.minimum_version = ssl.TLSVersion.TLSv1_2
        server.verify_mode = ssl.CERT_REQUIRED
        server.load_verify_locations(cafile=f.ca)
        server.load_cert_chain(f.cert, f.key)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.minimum_version = ssl.TLSVersion.TLSv1_2
        client.check_hostname = False  # see the module docstring
        client.verify_mode = ssl.CERT_REQUIRED
        client.load_verify_locations(cafile=f.ca)
        client.load_cert_chain(f.cert, f.key)
        return server, client

    def server_context(self) -> ssl.SSLContext:
        return self._contexts.current()[0]

    def client_context(self) -> ssl.SSLContext:
        return self._contexts.current()[1]


def _is_tls_refusal(exc: BaseException) -> bool:
    """A certificate was refused (by us or by the peer), as opposed to a dropped link."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    reason = str(getattr(exc, "reason", "") or "").upper()
    return isinstance(exc, ssl.SSLError) and ("ALERT" in reason or "CERTIFICATE" in reason)


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
                    asyncio.open_connection(host, port, ssl=self.transport.client_context()),
                    timeout=2.0,
                )
            except (OSError, TimeoutError, ValueError) as exc:
                if _is_tls_refusal(exc):
                    self.transport.log_refusal(f"{host}:{port}", "dial", self.peer, exc)
                self._fail(f"connect: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            self.connected = True
            self.writer = writer
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
                    if writer.is_closing():
                        # The watchdog aborted it. uvloop raises RuntimeError on a write
                        # to a closed transport (asyncio drops it, drain() then raises).
                        raise ConnectionResetError("connection closed")
                    writer.writelines(chunks)
                    await writer.drain()
            except (OSError, ConnectionError) as exc:
                if _is_tls_refusal(exc):
                    self.transport.log_refusal(addr, "dial", self.peer, exc)
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
                kind, body = await asyncio.wait_for(read_frame(reader), timeout=ACK_EVERY_S * 2)
                if kind == ACK:
                    self.unacked_since = None
                    on_clock = self.transport.on_clock
                    if on_clock is not None and type(body) is int:
                        on_clock(self.peer, body)
            except TimeoutError:
                pass
            except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError) as exc:
                if _is_tls_refusal(exc):  # TLS 1.3: the server refuses us after our Finished
                    self.transport.log_refusal(
                        str(writer.get_extra_info("peername")), "dial", self.peer, exc
                    )
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
        tls: PeerTls | None = None,
        hello: dict[str, str] | None = None,
        on_hello: Callable[[str, Any], None] | None = None,
        on_clock: Callable[[str, int], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.on_clock = on_clock  # (peer, its wall clock in µs) from each ACK
        self.hello = hello or {}
        self.on_hello = on_hello
        self.listen_addr = listen_addr
        self.handler = handler
        self.on_unreachable = on_unreachable
        self.ssl_server = ssl_server
        self.ssl_client = ssl_client
        self.tls = tls
        self.tls_refusals = 0
        self._refusal_logged: dict[str, float] = {}
        self.addresses: dict[str, str] = {}
        self._links: dict[str, _Link] = {}
        self._server: asyncio.Server | None = None
        self._inbound: set[asyncio.StreamWriter] = set()

    def client_context(self) -> ssl.SSLContext | None:
        return self.tls.client_context() if self.tls is not None else self.ssl_client

    def log_refusal(self, remote: str, side: str, peer: str, exc: BaseException) -> None:
        """A TLS handshake failed: count it; log it, at most every 5 s per remote."""
        self.tls_refusals += 1
        now = time.monotonic()
        if now - self._refusal_logged.get(remote, -1e9) >= 5.0:
            self._refusal_logged[remote] = now
            log.warning(
                "transport.tls_refused side=%s remote=%s peer=%s error=%s", side, remote, peer, exc
            )

    def set_address(self, peer: str, addr: str) -> None:
        if peer != self.node_id and addr:
            self.addresses[peer] = addr

    async def start(self) -> None:
        if not self.listen_addr:
            return  # a group of one: nobody to listen to
        host, port = split_addr(self.listen_addr)
        self._server = await asyncio.start_server(
            self._accept,
            host or "0.0.0.0",
            port,
            ssl=None if self.tls is not None else self.ssl_server,
            limit=MAX_FRAME,
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

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._inbound.add(writer)
        peer = "?"
        try:
            if self.tls is not None:
                # Upgrade before reading anything: no frame from an unverified peer.
                try:
                    await writer.start_tls(
                        self.tls.server_context(), ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S
                    )
                except (ssl.SSLError, OSError, TimeoutError) as exc:
                    remote = writer.get_extra_info("peername")
                    where = f"{remote[0]}:{remote[1]}" if isinstance(remote, tuple) else "?"
                    self.log_refusal(where, "accept", "?", exc)
                    return
            kind, body = await asyncio.wait_for(read_frame(reader), timeout=5.0)
            if kind != HELLO or not isinstance(body, list) or len(body) != 2:
                return
            peer = str(body[0])
            if self.on_hello is not None:
                self.on_hello(peer, body[1])
            last_ack = 0.0
            while True:
                kind, body = await read_frame(reader)
                try:
                    self.handler(peer, kind, body)
                except Exception:  # one bad frame must not cost the connection
                    log.exception("transport.handler_failed peer=%s kind=%d", peer, kind)
                now = time.monotonic()
                if now - last_ack >= ACK_EVERY_S and not writer.is_closing():
                    last_ack = now
                    writer.write(encode_frame(ACK, time.time_ns() // 1000))
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ssl.SSLError):
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
