"""The HTTP side of a node: health, readiness, Prometheus metrics and the admin API.

Served by aiohttp beside the gRPC port; the admin operations live in api/admin.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from zonestore_node.api.admin import AdminApi
from zonestore_node.api.metrics import Metrics


def build_app(
    metrics: Metrics,
    status: Callable[[], dict[str, Any]],
    ready: Callable[[], bool],
    refresh: Callable[[], None],
    admin: AdminApi | None = None,
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

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/admin/status", admin_status)
    if admin is not None:
        admin.routes(app)
    return app
