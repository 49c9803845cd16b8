"""Forwarding to the leader: any replica accepts any request.

A follower that cannot serve a request (a write, a strong read, anything inside a
transaction) passes its bytes on to the leader's client port and relays the answer,
status codes included. Each relay counts a hop in metadata and a request makes at most
`MAX_HOPS`, so replicas with stale views of the leader cannot bounce it forever (a
leader handing over leadership relays what reaches it to its successor); while no
leader is known (an election, a transfer), the request waits up to `LEADER_WAIT_S`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

FORWARDED = "x-zonestore-forwarded"
LEADER_WAIT_S = 5.0
MAX_HOPS = 3
_PASS_HEADERS = ("x-goog-request-params", "authorization")


def _identity(raw: bytes) -> bytes:
    return raw


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
    ) -> None:
        self._service = service_name
        self._leader_addr = leader_addr
        self._serves_here = serves_here
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, addr: str) -> grpc.aio.Channel:
        channel = self._channels.get(addr)
        if channel is None:
            channel = grpc.aio.insecure_channel(
                addr,
                options=[
                    ("grpc.max_receive_message_length", 64 << 20),
                    ("grpc.max_send_message_length", 64 << 20),
                ],
            )
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
        remaining = context.time_remaining()
        response: bytes = await call(
            request.SerializeToString(), metadata=metadata, timeout=remaining
        )
        return response

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
