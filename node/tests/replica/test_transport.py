"""Peer transport: a link survives its peer going away and coming back, on both event
loops the node may run (uvloop by default, asyncio's own)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

from zonestore_node.replica.transport import Transport


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _link_reconnects_after_the_peer_restarts() -> None:
    pa, pb = _free_port(), _free_port()
    got: list[Any] = []
    sender = Transport("a", f"127.0.0.1:{pa}", lambda p, k, b: None, lambda p: None)
    receiver = Transport("b", f"127.0.0.1:{pb}", lambda p, k, b: got.append(b), lambda p: None)
    await sender.start()
    await receiver.start()
    sender.set_address("b", f"127.0.0.1:{pb}")

    async def until(cond: Callable[[], bool], seconds: float) -> None:
        async with asyncio.timeout(seconds):
            while not cond():
                await asyncio.sleep(0.01)

    async def pump() -> None:
        n = 0
        while True:
            sender.send("b", 1, n)
            n += 1
            await asyncio.sleep(0.02)

    pumping = asyncio.get_running_loop().create_task(pump())
    try:
        await until(lambda: len(got) >= 3, 5.0)
        await receiver.close()  # the peer dies: its connections are cut
        await asyncio.sleep(0.5)  # frames sent meanwhile hit the dead connection
        got.clear()
        receiver = Transport("b", f"127.0.0.1:{pb}", lambda p, k, b: got.append(b), lambda p: None)
        await receiver.start()
        await until(lambda: len(got) >= 3, 10.0)
    finally:
        pumping.cancel()
        await sender.close()
        await receiver.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_link_reconnects_after_the_peer_restarts(loop: str) -> None:
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_link_reconnects_after_the_peer_restarts())


async def _acks_carry_the_receivers_wall_clock() -> None:
    pa, pb = _free_port(), _free_port()
    clocks: list[tuple[str, int]] = []
    sender = Transport(
        "a", f"127.0.0.1:{pa}", lambda p, k, b: None, lambda p: None,
        on_clock=lambda peer, wall: clocks.append((peer, wall)),
    )  # fmt: skip
    receiver = Transport("b", f"127.0.0.1:{pb}", lambda p, k, b: None, lambda p: None)
    await sender.start()
    await receiver.start()
    sender.set_address("b", f"127.0.0.1:{pb}")
    try:
        async with asyncio.timeout(5):
            while not clocks:
                sender.send("b", 1, "ping")
                await asyncio.sleep(0.05)
        peer, wall = clocks[0]
        assert peer == "b"
        assert abs(wall - time.time_ns() // 1000) < 5_000_000
    finally:
        await sender.close()
        await receiver.close()


def test_acks_carry_the_receivers_wall_clock() -> None:
    asyncio.run(_acks_carry_the_receivers_wall_clock())
