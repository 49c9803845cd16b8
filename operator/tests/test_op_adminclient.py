"""The admin client against a tiny aiohttp server on 127.0.0.1 playing a leader and a
follower: status parsing, the one 421 redirect, errors and timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from zonestore_operator.adminclient import AdminClient, AdminError, AdminTimeout
from zonestore_operator.model.node import Membership, RaftRole

STATUS = {
    "node_id": "ds-a-0",
    "zone": "a",
    "role": "leader",
    "term": 4,
    "leader": "ds-a-0",
    "commit_index": 10,
    "applied_index": 9,
    "ready": True,
    "members": [
        {
            "id": "ds-b-0",
            "peer_address": "ds-b-0.ds-peers.ns.svc:7081",
            "zone": "b",
            "role": "learner",
            "match_index": 7,
            "lag": 3,
            "last_contact_ms": 12,
            "healthy": True,
        }
    ],
}


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"127.0.0.1:{port}"


def _json(payload: Any, status: int = 200) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_: web.Request) -> web.Response:
        return web.json_response(payload, status=status)

    return handler


def _run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


def test_status_is_parsed_into_a_node_status() -> None:
    async def body() -> None:
        app = web.Application()
        app.router.add_get("/admin/status", _json(STATUS))
        runner, address = await _serve(app)
        try:
            async with AdminClient() as client:
                status = await client.status(address)
        finally:
            await runner.cleanup()
        assert status.role is RaftRole.LEADER
        assert (status.term, status.commit_index, status.applied_index) == (4, 10, 9)
        [member] = status.members
        assert (member.id, member.membership, member.lag) == ("ds-b-0", Membership.LEARNER, 3)

    _run(body)


def test_mutation_at_a_follower_follows_the_421_to_the_leader_once() -> None:
    async def body() -> None:
        calls: list[tuple[str, str, Any]] = []
        leader_app = web.Application()

        async def add(request: web.Request) -> web.Response:
            calls.append(("leader", request.path, await request.json()))
            return web.json_response({})

        async def promote(request: web.Request) -> web.Response:
            calls.append(("leader", request.path, None))
            return web.json_response({})

        leader_app.router.add_post("/admin/members", add)
        leader_app.router.add_post("/admin/members/{id}/promote", promote)
        leader_runner, leader_address = await _serve(leader_app)

        async def redirect(request: web.Request) -> web.Response:
            calls.append(("follower", request.path, None))
            return web.json_response(
                {"leader": "ds-a-0", "leader_admin_address": leader_address}, status=421
            )

        follower_app = web.Application()
        follower_app.router.add_route("*", "/{tail:.*}", redirect)
        follower_runner, follower_address = await _serve(follower_app)
        try:
            async with AdminClient() as client:
                await client.add_learner(follower_address, "ds-c-0", "ds-c-0.p:7081", "c")
                await client.promote(follower_address, "ds-c-0")
        finally:
            await follower_runner.cleanup()
            await leader_runner.cleanup()
        assert calls == [
            ("follower", "/admin/members", None),
            (
                "leader",
                "/admin/members",
                {"id": "ds-c-0", "peer_address": "ds-c-0.p:7081", "zone": "c", "role": "learner"},
            ),
            ("follower", "/admin/members/ds-c-0/promote", None),
            ("leader", "/admin/members/ds-c-0/promote", None),
        ]

    _run(body)


def test_a_second_421_is_an_error_not_a_loop() -> None:
    async def body() -> None:
        hits = 0
        address = ""

        async def redirect(_: web.Request) -> web.Response:
            nonlocal hits
            hits += 1
            return web.json_response({"leader": "x", "leader_admin_address": address}, status=421)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", redirect)
        runner, address = await _serve(app)
        try:
            async with AdminClient() as client:
                with pytest.raises(AdminError, match="not the leader either"):
                    await client.remove(address, "ds-c-0")
        finally:
            await runner.cleanup()
        assert hits == 2

    _run(body)


def test_error_status_raises_with_the_call_and_the_answer() -> None:
    async def body() -> None:
        app = web.Application()
        app.router.add_post("/admin/leader", _json({"error": "no such member"}, status=409))
        runner, address = await _serve(app)
        try:
            async with AdminClient() as client:
                with pytest.raises(AdminError) as caught:
                    await client.transfer_leader(address, "nobody")
        finally:
            await runner.cleanup()
        assert caught.value.status == 409
        assert "POST" in str(caught.value)
        assert "/admin/leader answered 409" in str(caught.value)

    _run(body)


def test_a_node_that_does_not_answer_in_time_raises_a_clear_timeout() -> None:
    async def body() -> None:
        async def slow(_: web.Request) -> web.Response:
            await asyncio.sleep(1)
            return web.json_response(STATUS)

        app = web.Application()
        app.router.add_get("/admin/status", slow)
        runner, address = await _serve(app)
        try:
            async with AdminClient(timeout_s=0.2) as client:
                with pytest.raises(
                    AdminTimeout, match=r"admin GET .*/admin/status timed out after 0.2s"
                ):
                    await client.status(address)
        finally:
            await runner.cleanup()

    _run(body)


def test_unreachable_node_raises_admin_error() -> None:
    async def body() -> None:
        async with AdminClient(timeout_s=1) as client:
            with pytest.raises(AdminError, match="failed"):
                await client.status("127.0.0.1:1")

    _run(body)


def test_malformed_status_is_reported_not_trusted() -> None:
    async def body() -> None:
        app = web.Application()
        app.router.add_get("/admin/status", _json({"role": "boss"}))
        runner, address = await _serve(app)
        try:
            async with AdminClient() as client:
                with pytest.raises(AdminError, match="is not a raft role"):
                    await client.status(address)
        finally:
            await runner.cleanup()

    _run(body)
