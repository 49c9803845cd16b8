"""A small asyncio Kubernetes API client for the process kubelet and the provisioner.

Owns: reading a kubeconfig (client certificate, CA; inline `-data` or file paths),
JSON requests with the patch content types, list+watch with resourceVersion resume.
Only what the two programs need; errors surface as `ApiError` with the HTTP status and
the API server's message, so a Node-authorizer denial reads as such in the logs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import yaml

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class ApiError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        self.status = status
        try:
            message = json.loads(body).get("message", body)
        except (ValueError, AttributeError):
            message = body
        super().__init__(f"{method} {path}: {status}: {message}")


class Gone(ApiError):
    """410: the watch's resourceVersion is too old; relist."""


def _material(user: Mapping[str, Any], cluster: Mapping[str, Any], workdir: str) -> dict[str, str]:
    """File paths for cert, key and CA (inline data is written under `workdir`)."""
    out: dict[str, str] = {}
    for key, src, field in (
        ("cert", user, "client-certificate"),
        ("key", user, "client-key"),
        ("ca", cluster, "certificate-authority"),
    ):
        if src.get(f"{field}-data"):
            fd, path = tempfile.mkstemp(prefix=f"{key}-", suffix=".pem", dir=workdir)
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64decode(src[f"{field}-data"]))
            out[key] = path
        elif src.get(field):
            out[key] = str(src[field])
    return out


class Api:
    """One aiohttp session against the server named by a kubeconfig's current context."""

    def __init__(self, kubeconfig: str, workdir: str) -> None:
        with open(kubeconfig) as f:
            cfg = yaml.safe_load(f)
        ctx_name = cfg.get("current-context") or cfg["contexts"][0]["name"]
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        self.server = str(cluster["server"]).rstrip("/")
        os.makedirs(workdir, exist_ok=True)
        files = _material(user, cluster, workdir)
        self.ssl = ssl.create_default_context(cafile=files.get("ca"))
        if "cert" in files:
            self.ssl.load_cert_chain(files["cert"], files.get("key"))
        self.token = user.get("token")
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl, limit=32), headers=headers
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        limit: float = 30.0,
    ) -> Any:
        url = self.server + path + (f"?{urlencode(params)}" if params else "")
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        async with self.session.request(
            method, url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=limit)
        ) as resp:
            text = await resp.text()
            if resp.status >= 400:
                cls = Gone if resp.status == 410 else ApiError
                raise cls(resp.status, method, path, text)
            return json.loads(text) if text else None

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str) -> Any:
        try:
            return await self.get(path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def create(self, path: str, body: Any) -> Any:
        return await self.request("POST", path, body)

    async def patch(self, path: str, body: Any, content_type: str = MERGE) -> Any:
        return await self.request("PATCH", path, body, content_type=content_type)

    async def delete(self, path: str, body: Any = None) -> Any:
        return await self.request("DELETE", path, body)

    async def watch(
        self, path: str, params: Mapping[str, str] | None = None, timeout_seconds: int = 240
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """List then watch `path` forever: yields ("SYNC", list) after each (re)list,
        then (type, object) events; relists on 410 and on dropped connections."""
        base = dict(params or {})
        rv = ""
        while True:
            if not rv:
                listing = await self.get(path, base)
                rv = listing["metadata"]["resourceVersion"]
                yield "SYNC", listing
            q = {
                **base,
                "watch": "1",
                "resourceVersion": rv,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(timeout_seconds),
            }
            url = f"{self.server}{path}?{urlencode(q)}"
            try:
                async with self.session.get(
                    url, timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
                ) as resp:
                    if resp.status == 410:
                        rv = ""
                        continue
                    if resp.status >= 400:
                        raise ApiError(resp.status, "WATCH", path, await resp.text())
                    async for line in resp.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        etype, obj = event["type"], event["object"]
                        if etype == "ERROR":
                            if obj.get("code") == 410:
                                rv = ""
                            break
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if etype != "BOOKMARK":
                            yield etype, obj
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                await asyncio.sleep(1.0)


async def retrying(coro_factory: Any, attempts: int = 5, delay: float = 0.5) -> Any:
    """Run `coro_factory()` until it succeeds or `attempts` run out (transient network
    or 5xx errors while the API server restarts); 4xx are raised at once."""
    for i in range(attempts):
        try:
            return await coro_factory()
        except ApiError as e:
            if e.status < 500 or i == attempts - 1:
                raise
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            if i == attempts - 1:
                raise
        await asyncio.sleep(delay * (2**i))
    return None


@contextlib.asynccontextmanager
async def api(kubeconfig: str, workdir: str) -> AsyncIterator[Api]:
    client = Api(kubeconfig, workdir)
    try:
        yield client
    finally:
        await client.close()
