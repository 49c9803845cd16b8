"""The HTTP side of a node: health, readiness, Prometheus metrics and the admin API.

Served by aiohttp beside the gRPC port; the admin operations live in api/admin.py.

/healthz, /readyz and /metrics are always open (kubelet probes, Prometheus). With an
`AdminToken`, every /admin/* request needs `Authorization: Bearer <token>` (401
otherwise); without one the admin API is open, which server.py allows only on a
loopback address or with --admin-insecure.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from zonestore_node.api.admin import AdminApi
from zonestore_node.api.metrics import Metrics
from zonestore_node.filewatch import Watched

log = logging.getLogger("zonestore.http")


def _read_token(path: Path) -> bytes:
    token = path.read_text().strip().encode()
    if not token:
        raise ValueError(f"the admin token file {path} is empty")
    return token


class AdminToken:
    """The admin token, kept in a file (a mounted Secret) and read again when it changes
    (filewatch.Watched: an empty file mid-update keeps the previous token)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._token = Watched([path], lambda: _read_token(path), "admin.token")

    def matches(self, header: str | None) -> bool:
        scheme, _, given = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self._token.current())


def _require_token(token: AdminToken) -> Any:  # an aiohttp middleware
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/admin") and not token.matches(
            request.headers.get("Authorization")
        ):
            return web.json_response(
                {"error": "the admin API needs 'Authorization: Bearer <admin token>'"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="zonestore-admin"'},
            )
        return await handler(request)

    return middleware


def build_app(
    metrics: Metrics,
    status: Callable[[], dict[str, Any]],
    ready: Callable[[], bool],
    refresh: Callable[[], None],
    admin: AdminApi | None = None,
    admin_token: AdminToken | None = None,
) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def metrics_endpoint(_: web.Request) -> web.Response:
        refresh()
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def admin_status(_: web.Request) -> web.Response:
        return web.json_response(status())

    app = web.Application(
        middlewares=[_require_token(admin_token)] if admin_token is not None else [],
        client_max_size=1 << 20,
    )
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/admin/status", admin_status)
    if admin is not None:
        admin.routes(app)
    return app
