"""Forwarding to the leader: any replica accepts any request.

A follower that cannot serve a request (a write, a strong read, anything inside a
transaction) passes its bytes on to the leader's client port and relays the answer,
status codes included. A request is forwarded at most once (marked in metadata), so
two replicas that disagree about the leader cannot bounce it back and forth; while no
leader is known (an election), the request waits up to `LEADER_WAIT_S`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

FORWARDED = "x-zonestore-forwarded"
LEADER_WAIT_S = 5.0
_PASS_HEADERS = ("x-goog-request-params", "authorization")


def _identity(raw: bytes) -> bytes:
    return raw


class NoLeader(Exception):
    """No leader became known in time."""


class Forwarder:
    def __init__(self, service_name: str, leader_addr: Callable[[], str | None]) -> None:
        self._service = service_name
        self._leader_addr = leader_addr
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
    def was_forwarded(context: Any) -> bool:
        return any(k == FORWARDED for k, _ in (context.invocation_metadata() or ()))

    async def leader(self) -> str:
        async with asyncio.timeout(LEADER_WAIT_S):
            while True:
                addr = self._leader_addr()
                if addr:
                    return addr
                await asyncio.sleep(0.05)

    async def forward(self, method: str, request: Any, context: Any) -> bytes:
        try:
            addr = await self.leader()
        except TimeoutError:
            raise NoLeader("no leader is known; the replica group may have lost quorum") from None
        call = self._channel(addr).unary_unary(
            f"/{self._service}/{method}",
            request_serializer=_identity,
            response_deserializer=_identity,
        )
        metadata = [(k, v) for k, v in (context.invocation_metadata() or ()) if k in _PASS_HEADERS]
        metadata.append((FORWARDED, "1"))
        remaining = context.time_remaining()
        response: bytes = await call(
            request.SerializeToString(), metadata=metadata, timeout=remaining
        )
        return response

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
