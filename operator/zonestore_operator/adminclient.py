"""The one way the operator talks to a zonestore node: its admin HTTP API.

    GET  /healthz, /readyz, /admin/status
    POST /admin/members                  {"id", "peer_address", "zone", "role": "learner"}
    POST /admin/members/{id}/promote
    DELETE /admin/members/{id}
    POST /admin/leader                   {"target": id}
    POST /admin/snapshot

Mutating calls must reach the leader: a follower answers 421 with
{"leader": id, "leader_admin_address": "host:port"} and the client follows that once.
Every call carries `Authorization: Bearer <token>` when the client is `authorized` with
the Datastore's admin token (Secret `<name>-admin-token`; the node requires it on
/admin/*). Every call has a timeout; failures raise `AdminError` (`AdminTimeout` for timeouts) with
the method, URL and cause in the message. All mutating calls are idempotent on the node,
so a retry after an unclear failure is safe.

Imports only `model.node` from the operator; aiohttp does the HTTP.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from zonestore_operator.model.node import NodeStatus, NodeStatusError, parse_node_status

DEFAULT_TIMEOUT_S = 3.0


class AdminError(RuntimeError):
    """A node's admin API call failed; the message says which call and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AdminTimeout(AdminError):
    """The node did not answer within the timeout."""


class _Sessions:
    """The HTTP session every view of one AdminClient shares."""

    session: aiohttp.ClientSession | None = None


class AdminClient:
    """Addresses are "host:port" of a node's admin listener."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, token: str | None = None) -> None:
        self.timeout_s = timeout_s
        self._token = token
        self._sessions = _Sessions()

    def authorized(self, token: str | None) -> AdminClient:
        """A view of this client that sends `token` (one per Datastore); it shares the
        connection pool, and closing either closes both."""
        view = AdminClient(self.timeout_s, token)
        view._sessions = self._sessions
        return view

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._sessions.session is not None:
            await self._sessions.session.close()
            self._sessions.session = None

    def _http(self) -> aiohttp.ClientSession:
        held = self._sessions.session
        if held is None or held.closed:
            held = self._sessions.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        return held

    async def _call(
        self, method: str, address: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        url = f"http://{address}{path}"
        try:
            async with asyncio.timeout(self.timeout_s):
                headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
                async with self._http().request(method, url, json=body, headers=headers) as resp:
                    text = await resp.text()
                    try:
                        payload = json.loads(text) if text else None
                    except json.JSONDecodeError:
                        payload = text
                    return resp.status, payload
        except TimeoutError:
            raise AdminTimeout(
                f"admin {method} {url} timed out after {self.timeout_s:g}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise AdminError(f"admin {method} {url} failed: {exc}") from exc

    async def _mutate(
        self, method: str, address: str, path: str, body: dict[str, Any] | None = None
    ) -> Any:
        status, payload = await self._call(method, address, path, body)
        if status == 421:
            leader = payload.get("leader_admin_address") if isinstance(payload, dict) else None
            if not isinstance(leader, str) or not leader:
                raise AdminError(
                    f"admin {method} {path} at {address}: not the leader and no leader known",
                    status,
                )
            status, payload = await self._call(method, leader, path, body)
            if status == 421:
                raise AdminError(
                    f"admin {method} {path}: redirected to {leader}, which is not the leader either",
                    status,
                )
            address = leader
        if not 200 <= status < 300:
            raise AdminError(
                f"admin {method} http://{address}{path} answered {status}: {payload!r}", status
            )
        return payload

    async def status(self, address: str) -> NodeStatus:
        code, payload = await self._call("GET", address, "/admin/status")
        if code != 200:
            raise AdminError(f"admin GET http://{address}/admin/status answered {code}", code)
        try:
            return parse_node_status(payload)
        except NodeStatusError as exc:
            raise AdminError(f"admin GET http://{address}/admin/status: {exc}") from exc

    async def healthy(self, address: str) -> bool:
        code, _ = await self._call("GET", address, "/healthz")
        return code == 200

    async def ready(self, address: str) -> bool:
        code, _ = await self._call("GET", address, "/readyz")
        return code == 200

    async def add_learner(self, address: str, member_id: str, peer_address: str, zone: str) -> None:
        body = {"id": member_id, "peer_address": peer_address, "zone": zone, "role": "learner"}
        await self._mutate("POST", address, "/admin/members", body)

    async def promote(self, address: str, member_id: str) -> None:
        await self._mutate("POST", address, f"/admin/members/{member_id}/promote")

    async def remove(self, address: str, member_id: str) -> None:
        await self._mutate("DELETE", address, f"/admin/members/{member_id}")

    async def transfer_leader(self, address: str, target: str) -> None:
        await self._mutate("POST", address, "/admin/leader", {"target": target})

    async def snapshot(self, address: str) -> None:
        await self._mutate("POST", address, "/admin/snapshot")
