"""Forwarding to the leader: any replica accepts any request.

A follower that cannot serve a request (a write, a strong read, anything inside a
transaction) passes its bytes on to the leader's client port and relays the answer,
status codes included. Each relay counts a hop in metadata and a request makes at most
`MAX_HOPS`, so replicas with stale views of the leader cannot bounce it forever (a
leader handing over leadership relays what reaches it to its successor); while no
leader is known (an election, a transfer), the request waits up to `LEADER_WAIT_S`.

No bounce: each relay also adds the address it goes to (`RELAYED_TO`, comma-separated).
Those replicas had the request and could not serve it, so while this replica's view of
the leader has not changed since the request came in, a view naming one of them is
stale (during a transfer A -> B, A names B before B knows it leads, and B still names
A; relaying back would spend the hops in a ping-pong). The request waits for the view
to move instead, for at most `BOUNCE_WAIT_S` (the replica where the request started is
not in the list, and its view can be the right one), then goes back all the same. The
hop limit stays the backstop and still fails at once. The edge (node/edge/edge.go)
applies the same rule.

The client's `authorization` metadata is relayed and the leader checks it again (api/
auth.py). When the client port speaks TLS, so does the relay: `credentials` verify the
leader's client-port certificate against the cluster CA (grpc checks the leader's
advertised client address against the certificate's SANs) and present this replica's
peer certificate, which a leader requiring client certificates accepts (server.py adds
the cluster CA to the client CAs).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc

FORWARDED = "x-zonestore-forwarded"
RELAYED_TO = "x-zonestore-relayed-to"
ANSWERED = (("x-zonestore-answered", "1"),)
# Relayed calls whose effect a lost connection leaves in doubt.
_NOT_IDEMPOTENT = frozenset({"Commit", "AllocateIds"})
LEADER_WAIT_S = 5.0
# How long a request may be held back from a replica it was already relayed to while
# this replica's view does not move (far above a view's lag behind a transfer).
BOUNCE_WAIT_S = 0.25
MAX_HOPS = 3
_PASS_HEADERS = ("x-goog-request-params", "authorization")


def _identity(raw: bytes) -> bytes:
    return raw


def relayed_status(method: str, exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    """The status to give the client for a relayed call that failed.

    The leader's own answers (marked ANSWERED) pass through unchanged. Anything else is
    the connection failing: before the request left ("failed to connect") nothing
    happened, so UNAVAILABLE; after it left, a Commit or AllocateIds may have taken
    effect on the leader, and saying UNAVAILABLE would invite a blind retry.
    """
    trailing = exc.trailing_metadata() or ()
    if any(k == ANSWERED[0][0] for k, _ in trailing):
        return exc.code(), exc.details() or ""
    details = exc.details() or ""
    if method in _NOT_IDEMPOTENT and "failed to connect" not in details.lower():
        return (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"The connection to the leader broke while relaying ({details}); the request "
            "may or may not have been applied.",
        )
    return grpc.StatusCode.UNAVAILABLE, f"The leader could not be reached: {details}"


def relayed_to(context: Any) -> list[str]:
    """The client addresses the request was relayed to, in order."""
    return [
        addr.strip()
        for key, value in context.invocation_metadata() or ()
        if key == RELAYED_TO
        for addr in value.split(",")
        if addr.strip()
    ]


class Visited:
    """One request's no-bounce rule (above): `holds(addr)` says whether to hold it back
    from `addr`, the leader the view names now. Made when the request comes in."""

    def __init__(self, context: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self._relayed_to = frozenset(relayed_to(context))
        self._clock = clock
        self._arrival: str | None = None  # the first view asked about
        self._held_until = 0.0
        self._moved = False  # the view named another replica since

    def holds(self, addr: str) -> bool:
        if self._arrival is None:
            self._arrival = addr
            self._held_until = self._clock() + BOUNCE_WAIT_S
        self._moved = self._moved or addr != self._arrival
        return addr in self._relayed_to and not self._moved and self._clock() < self._held_until


class NoLeader(Exception):
    """No leader became known in time."""


class Forwarder:
    """`leader_addr()` names another replica's client address when that replica leads;
    `serves_here()` says this replica can now serve the request itself (it just became
    a ready leader)."""

    def __init__(
        self,
        service_name: str,
        leader_addr: Callable[[], str | None],
        serves_here: Callable[[], bool],
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._credentials = credentials  # None: cleartext, like the client port
        self._service = service_name
        self._leader_addr = leader_addr
        self._serves_here = serves_here
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, addr: str) -> grpc.aio.Channel:
        channel = self._channels.get(addr)
        if channel is None:
            options = [
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", 64 << 20),
            ]
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(addr, self._credentials, options=options)
            else:
                channel = grpc.aio.insecure_channel(addr, options=options)
            self._channels[addr] = channel
        return channel

    @staticmethod
    def hops(context: Any) -> int:
        for key, value in context.invocation_metadata() or ():
            if key == FORWARDED:
                try:
                    return int(value)
                except ValueError:
                    return MAX_HOPS
        return 0

    async def route(self) -> str | None:
        """Wait until the request can go somewhere: None means "serve it here"."""
        try:
            async with asyncio.timeout(LEADER_WAIT_S):
                while True:
                    if self._serves_here():
                        return None
                    addr = self._leader_addr()
                    if addr:
                        return addr
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise NoLeader("no leader is known; the replica group may have lost quorum") from None

    async def forward(self, addr: str, method: str, request: Any, context: Any) -> bytes:
        call = self._channel(addr).unary_unary(
            f"/{self._service}/{method}",
            request_serializer=_identity,
            response_deserializer=_identity,
        )
        metadata = [(k, v) for k, v in (context.invocation_metadata() or ()) if k in _PASS_HEADERS]
        metadata.append((FORWARDED, str(self.hops(context) + 1)))
        metadata.append((RELAYED_TO, ",".join([*relayed_to(context), addr])))
        remaining = context.time_remaining()
        response: bytes = await call(
            request.SerializeToString(), metadata=metadata, timeout=remaining
        )
        return response

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
