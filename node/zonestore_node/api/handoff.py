"""The node's side of the edge hand-off: requests from zonestore-edge over a Unix socket.

The edge (node/edge, Go) terminates gRPC and REST on the client port and passes each call
here in length-prefixed binary frames (node/edge/PROTOCOL.md), many per socket read.
Each request becomes a task that runs the same wrapped DatastoreApi handler the grpc.aio
server runs (auth, the error table, metrics unchanged) with a `HandoffContext` standing
in for grpc's servicer context; the answers finished in one loop iteration go back in
one write. Requests are parsed with the raw protobuf types, nothing else per request.

A request this replica cannot serve (NotLeader) is answered NOT_LEADER: the edge relays
it to the leader's edge itself (`EdgeRelay` replaces api/forward.py's Forwarder). The
node publishes who leads (`publish_leader`) on every change, and the edge pushes its own
metrics text, which `EdgeMetricsCollector` adds to the node's /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import grpc
from google.cloud.datastore_v1.types import datastore as ds
from prometheus_client.parser import text_string_to_metric_families

from zonestore_node.api import admin_api, forward
from zonestore_node.api.datastore import SERVICE, DatastoreApi, _lenient

log = logging.getLogger("zonestore.edge")

HEAD = struct.Struct("<IBI")  # length of what follows the length, frame type, id
REQUEST = struct.Struct("<BIB")  # method, timeout ms (0: none), metadata pairs
U16 = struct.Struct("<H")
HEAD_AFTER_LENGTH = HEAD.size - 4

# Frame types.
F_REQUEST, F_CANCEL, F_RESPONSE, F_LEADER, F_RESET, F_HELLO, F_METRICS = range(1, 8)
NOT_LEADER = 255
PROTOCOL_VERSION = 1
# The wire numbers of the methods (node/edge/node.go `methods`).
METHODS = (
    ("Lookup", "lookup", ds.LookupRequest),
    ("RunQuery", "run_query", ds.RunQueryRequest),
    ("RunAggregationQuery", "run_aggregation_query", ds.RunAggregationQueryRequest),
    ("BeginTransaction", "begin_transaction", ds.BeginTransactionRequest),
    ("Commit", "commit", ds.CommitRequest),
    ("Rollback", "rollback", ds.RollbackRequest),
    ("AllocateIds", "allocate_ids", ds.AllocateIdsRequest),
    ("ReserveIds", "reserve_ids", ds.ReserveIdsRequest),
)


class Aborted(grpc.aio.AbortError):  # type: ignore[misc]
    """`HandoffContext.abort`: the status to answer (a grpc AbortError, so the API's
    handlers let it through as they let grpc's own through)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class RelayToEdge(Exception):
    """This replica cannot serve the request: the edge relays it to the leader."""


class EdgeRelay(forward.Forwarder):
    """The forwarder of a node behind an edge: routing belongs to the edge."""

    def __init__(self) -> None:
        super().__init__(SERVICE, lambda: None, lambda: False)

    async def route(self) -> str | None:
        raise RelayToEdge


class HandoffContext:
    """What DatastoreApi's handlers use of grpc's servicer context."""

    __slots__ = ("_deadline", "_metadata", "trailers")

    def __init__(self, metadata: tuple[tuple[str, str], ...], deadline: float | None) -> None:
        self._metadata = metadata
        self._deadline = deadline
        self.trailers: Any = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailers = metadata

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Aborted(code, details)


def _encode_pairs(pairs: Iterable[tuple[str, str]]) -> bytes:
    out = []
    for key, value in pairs:
        k, v = key.encode(), str(value).encode()
        out.append(U16.pack(len(k)) + k + U16.pack(len(v)) + v)
    return b"".join(out)


_ANSWERED = bytes([len(forward.ANSWERED)]) + _encode_pairs(forward.ANSWERED)


def _trailers(trailers: Any) -> bytes:
    if trailers is forward.ANSWERED:
        return _ANSWERED
    pairs = list(trailers or ())
    return bytes([len(pairs)]) + _encode_pairs(pairs)


def response_frame(request_id: int, code: int, trailers: bytes, payload: bytes) -> bytes:
    size = HEAD_AFTER_LENGTH + 1 + len(trailers) + len(payload)
    return HEAD.pack(size, F_RESPONSE, request_id) + bytes([code]) + trailers + payload


def leader_frame(serves_here: bool, addr: str, local_reads: bool = False) -> bytes:
    body = bytes([(1 if serves_here else 0) | (2 if local_reads else 0)]) + addr.encode()
    return HEAD.pack(HEAD_AFTER_LENGTH + len(body), F_LEADER, 0) + body


Handler = Callable[[Any, Any], Awaitable[Any]]


class HandoffServer:
    """Serves the edge's connection(s) on a Unix socket."""

    def __init__(
        self,
        api: DatastoreApi,
        reset: Callable[[], Awaitable[None]] | None = None,
        reset_refusal: str = "",
        local_reads: bool = False,
        admin: admin_api.DatastoreAdminApi | None = None,
    ) -> None:
        """`reset`: deletes all data (POST /reset), or None with `reset_refusal` saying
        why it is refused (PERMISSION_DENIED). `admin`: the Admin API and its operations
        (wire numbers 8 onwards, in the order of its `methods()`)."""
        self.table: list[tuple[Handler, Callable[[bytes], Any]]] = [
            (api._wrap(name, getattr(api, attr)), _lenient(request.pb()))
            for name, attr, request in METHODS
        ]
        if admin is not None:
            self.table += [(fn, _lenient(request)) for _, _, fn, request, _ in admin.wrapped()]
        self._reset = reset
        self._reset_refusal = reset_refusal
        self._local_reads = local_reads  # TEST ONLY: --unsafe-local-reads
        self._connections: set[_Connection] = set()
        self._leader = leader_frame(False, "")
        self.metrics_text = ""
        self._server: asyncio.AbstractServer | None = None

    @property
    def edge_ready(self) -> bool:
        """An edge is connected and has said it serves the client port."""
        return any(c.hello for c in self._connections)

    async def start(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Connection(self), path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()

    def publish_leader(self, serves_here: bool, addr: str) -> None:
        frame = leader_frame(serves_here, addr, self._local_reads)
        if frame == self._leader:
            return
        self._leader = frame
        for conn in self._connections:
            conn.write(frame)

    async def reset(self) -> tuple[int, bytes]:
        """(status code, message) of a reset."""
        if self._reset is None:
            return grpc.StatusCode.PERMISSION_DENIED.value[0], self._reset_refusal.encode()
        try:
            await self._reset()
        except RelayToEdge:
            return NOT_LEADER, b""
        return 0, b""


class _Connection(asyncio.Protocol):
    def __init__(self, server: HandoffServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.out: list[bytes] = []
        self.flushing = False
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.hello = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server._connections.add(self)
        transport.write(self.server._leader)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        self.hello = False
        self.transport = None
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()
        log.info("edge.disconnected reason=%s", exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def write(self, frame: bytes) -> None:
        if self.transport is not None:
            self.transport.write(frame)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        loop = asyncio.get_running_loop()
        pos, end = 0, len(buf)
        head = HEAD.unpack_from
        while end - pos >= HEAD.size:
            length, kind, request_id = head(buf, pos)
            stop = pos + 4 + length
            if stop > end:
                break
            start = pos + HEAD.size
            if kind == F_REQUEST:
                method, timeout_ms, pairs = REQUEST.unpack_from(buf, start)
                p = start + REQUEST.size
                metadata: tuple[tuple[str, str], ...] = ()
                if pairs:
                    items = []
                    for _ in range(pairs):
                        (n,) = U16.unpack_from(buf, p)
                        key = bytes(buf[p + 2 : p + 2 + n]).decode()
                        p += 2 + n
                        (n,) = U16.unpack_from(buf, p)
                        value = bytes(buf[p + 2 : p + 2 + n]).decode()
                        p += 2 + n
                        items.append((key, value))
                    metadata = tuple(items)
                deadline = loop.time() + timeout_ms / 1000 if timeout_ms else None
                body = bytes(buf[p:stop])
                self.tasks[request_id] = loop.create_task(
                    self.serve(request_id, method, metadata, deadline, body)
                )
            elif kind == F_CANCEL:
                task = self.tasks.pop(request_id, None)
                if task is not None:
                    task.cancel()
            elif kind == F_METRICS:
                self.server.metrics_text = bytes(buf[start:stop]).decode(errors="replace")
            elif kind == F_HELLO:
                self.hello = True
                log.info("edge.connected version=%d", buf[start] if stop > start else 0)
            elif kind == F_RESET:
                self.tasks[request_id] = loop.create_task(self.reset(request_id))
            else:
                log.error("edge.bad_frame type=%d", kind)
                self.close()
                return
            pos = stop
        del buf[:pos]

    def answer(self, frame: bytes) -> None:
        self.out.append(frame)
        if not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flushing = False
        if self.out:
            if self.transport is not None:
                self.transport.write(b"".join(self.out))
            self.out.clear()

    async def serve(
        self,
        request_id: int,
        method: int,
        metadata: tuple[tuple[str, str], ...],
        deadline: float | None,
        body: bytes,
    ) -> None:
        context = HandoffContext(metadata, deadline)
        try:
            if method >= len(self.server.table):
                raise Aborted(grpc.StatusCode.UNIMPLEMENTED, f"method {method} is not served")
            handler, parse = self.server.table[method]
            response = await handler(parse(body), context)
            payload = response if isinstance(response, bytes) else response.SerializeToString()
            frame = response_frame(request_id, 0, _trailers(context.trailers), payload)
        except Aborted as exc:
            frame = response_frame(
                request_id, exc.code.value[0], _trailers(context.trailers), exc.details.encode()
            )
        except RelayToEdge:
            frame = response_frame(request_id, NOT_LEADER, b"\x00", b"")
        except asyncio.CancelledError:
            self.tasks.pop(request_id, None)
            raise
        except Exception as exc:  # never leave the edge waiting
            log.exception("edge.handoff_failed")
            frame = response_frame(
                request_id,
                grpc.StatusCode.INTERNAL.value[0],
                _ANSWERED,
                f"internal error: {type(exc).__name__}".encode(),
            )
        self.tasks.pop(request_id, None)
        self.answer(frame)

    async def reset(self, request_id: int) -> None:
        try:
            code, message = await self.server.reset()
        except asyncio.CancelledError:
            self.tasks.pop(request_id, None)
            raise
        except Exception as exc:
            log.exception("edge.reset_failed")
            code, message = grpc.StatusCode.INTERNAL.value[0], f"reset failed: {exc}".encode()
        self.tasks.pop(request_id, None)
        self.answer(response_frame(request_id, code, _ANSWERED, message))


class EdgeMetricsCollector:
    """The edge's metrics (pushed as Prometheus text) in the node's registry."""

    def __init__(self, server: HandoffServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Any]:
        text = self.server.metrics_text
        if text:
            yield from text_string_to_metric_families(text)
