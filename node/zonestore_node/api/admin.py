"""The admin API: membership and leadership operations, for the operator and the CLI.

    GET    /admin/status                 this replica's view (role, term, leader, members)
    POST   /admin/members                {"id", "peer_address", "zone", "role": "learner"}
    POST   /admin/members/{id}/promote   learner -> voter
    DELETE /admin/members/{id}           remove a member
    POST   /admin/leader                 {"target": id}: transfer leadership
    POST   /admin/snapshot               take a snapshot now (and compact the log)
    POST   /admin/backup/checkpoints     checkpoint for a base backup (backup/checkpoint.py)

Every mutation is idempotent: asking for a state that already holds answers 200 with
{"changed": false}. Mutations go to the leader; a follower answers 421 with the
leader's id and admin address, which the caller follows once. A change is confirmed
(200) once the membership entry is committed and applied on the leader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
from aiohttp import web

from zonestore_node.backup.checkpoint import CheckpointService
from zonestore_node.raft.confchange import ConfChange, ConfChangeError, ConfChangeOp
from zonestore_node.replica.group import NotLeader, RaftGroup

CHANGE_TIMEOUT_S = 10.0
TRANSFER_TIMEOUT_S = 5.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def member_context(peer_address: str, zone: str) -> bytes:
    packed: bytes = msgpack.packb({"peer": peer_address, "zone": zone}, use_bin_type=True)
    return packed


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class AdminApi:
    def __init__(self, group: RaftGroup) -> None:
        self.group = group

    def _misdirected(self) -> web.Response:
        leader = self.group.leader or None
        info = self.group.peers.get(leader or "")
        return _error(
            421,
            "not the leader",
            leader=leader,
            leader_admin_address=info.admin_addr if info else None,
        )

    def _guard(self, fn: Handler) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                return await fn(request)
            except NotLeader:
                return self._misdirected()
            except (ConfChangeError, ValueError, KeyError, TypeError, AttributeError) as exc:
                return _error(400, f"bad request: {exc}")  # e.g. a JSON body that is not an object
            except TimeoutError:
                return _error(504, "the change was not confirmed in time; check /admin/status")

        return handler

    async def _change(self, change: ConfChange) -> web.Response:
        future = self.group.propose_conf_change(change)
        async with asyncio.timeout(CHANGE_TIMEOUT_S):
            await future
        return web.json_response(
            {"changed": True, "op": change.op.name.lower(), "id": change.node_id}
        )

    async def add_member(self, request: web.Request) -> web.Response:
        body = await request.json()
        member = str(body["id"])
        peer = str(body.get("peer_address", ""))
        zone = str(body.get("zone", ""))
        if body.get("role", "learner") != "learner":
            raise ValueError("members join as learners; promote them once caught up")
        if not peer:
            raise ValueError("peer_address is required")
        self.group.check_leader()
        if member in self.group.node.conf_state.members():
            return web.json_response({"changed": False, "id": member})
        self.group.transport.set_address(member, peer)
        return await self._change(
            ConfChange(ConfChangeOp.ADD_LEARNER, member, member_context(peer, zone))
        )

    async def promote(self, request: web.Request) -> web.Response:
        member = request.match_info["id"]
        self.group.check_leader()
        conf = self.group.node.conf_state
        if member in conf.voters:
            return web.json_response({"changed": False, "id": member})
        if member not in conf.learners:
            return _error(404, f"{member} is not a member")
        return await self._change(ConfChange(ConfChangeOp.PROMOTE_LEARNER, member))

    async def remove(self, request: web.Request) -> web.Response:
        member = request.match_info["id"]
        self.group.check_leader()
        if member not in self.group.node.conf_state.members():
            return web.json_response({"changed": False, "id": member})
        if member == self.group.config.node_id:
            return _error(409, "the leader cannot remove itself; transfer leadership first")
        return await self._change(ConfChange(ConfChangeOp.REMOVE_MEMBER, member))

    async def transfer(self, request: web.Request) -> web.Response:
        body = await request.json()
        target = str(body["target"])
        if self.group.leader == target:
            return web.json_response({"changed": False, "leader": target})
        self.group.check_leader()
        if target not in self.group.node.conf_state.voters:
            return _error(400, f"{target} is not a voter")
        self.group.transfer_leadership(target)
        async with asyncio.timeout(TRANSFER_TIMEOUT_S):
            while self.group.leader != target:  # noqa: ASYNC110 - bounded; leadership has no event
                await asyncio.sleep(0.02)
        return web.json_response({"changed": True, "leader": target})

    async def snapshot(self, _: web.Request) -> web.Response:
        index = self.group.take_snapshot()
        return web.json_response({"snapshot_index": index})

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/admin/members", self._guard(self.add_member))
        app.router.add_post("/admin/members/{id}/promote", self._guard(self.promote))
        app.router.add_delete("/admin/members/{id}", self._guard(self.remove))
        app.router.add_post("/admin/leader", self._guard(self.transfer))
        app.router.add_post("/admin/snapshot", self._guard(self.snapshot))
        CheckpointService(self.group).routes(app)  # backup/checkpoint.py: base backups
