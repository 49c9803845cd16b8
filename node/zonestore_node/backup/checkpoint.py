"""The node's side of a base backup: a RocksDB checkpoint at the applied index, served
over the admin HTTP API for `zonestore backup create` to stream to object storage.

    POST   /admin/backup/checkpoints                    make one now: its id, the group,
                                                        applied index and commit timestamp,
                                                        and every file with its size
    GET    /admin/backup/checkpoints/{id}/files/{name}  one file's bytes
    DELETE /admin/backup/checkpoints/{id}               done with it (idempotent)

Why a checkpoint is a consistent backup at one commit timestamp: the state machine and
its applied position (`raft/applied`: index and commit timestamp) live in one RocksDB and
every apply writes them in one batch on the event loop; the checkpoint is made on the
event loop too, so it falls between two applied batches and holds exactly the commits up
to the index recorded inside it. Commit timestamps increase in log order, so "up to that
index" is "at or before that commit timestamp". Writes go on meanwhile: a checkpoint is
hard links to immutable SST files (plus one memtable flush), milliseconds.

Any replica can serve one; the CLI asks a follower when there is one so the leader's
disk and CPU stay with the writes. Checkpoints live under <data>/backup-checkpoints/
(they pin their SST files on disk until deleted); one left behind by a CLI that died is
removed after ABANDON_AFTER_S without a request, and all of them when the node starts.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from zonestore_node.replica.group import APPLIED_KEY, GROUP_ID_KEY, RaftGroup
from zonestore_node.storage.engine import Engine, Family

log = logging.getLogger("zonestore.backup")

ABANDON_AFTER_S = 3600.0
DIR_NAME = "backup-checkpoints"
_U64x2 = struct.Struct(">QQ")
_ID = re.compile(r"^[0-9a-f]{16}$")


@dataclass(slots=True)
class _Checkpoint:
    path: Path
    last_used: float


def read_position(engine: Engine) -> tuple[int, int]:
    """(applied index, commit timestamp µs) recorded in a database (0, 0 when empty)."""
    raw = engine.get(Family.META, APPLIED_KEY)
    if not raw:
        return 0, 0
    index, commit_ts = _U64x2.unpack(raw)
    return int(index), int(commit_ts)


def read_group_id(engine: Engine) -> str:
    raw = engine.get(Family.META, GROUP_ID_KEY)
    return raw.decode() if raw else ""


def list_files(root: Path) -> list[dict[str, Any]]:
    """Every file under a checkpoint folder, relative `/` names, sorted."""
    return [
        {"name": path.relative_to(root).as_posix(), "size": path.stat().st_size}
        for path in sorted(root.rglob("*"))
        if path.is_file()
    ]


class CheckpointService:
    """Checkpoints of one replica's database, kept until the backup that asked is done."""

    def __init__(self, group: RaftGroup) -> None:
        self.group = group
        self.root = group.engine.path.parent / DIR_NAME
        self._checkpoints: dict[str, _Checkpoint] = {}
        shutil.rmtree(self.root, ignore_errors=True)  # left by an earlier run

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/admin/backup/checkpoints", self._create)
        app.router.add_get("/admin/backup/checkpoints/{id}/files/{name:.+}", self._file)
        app.router.add_delete("/admin/backup/checkpoints/{id}", self._delete)

    def create(self) -> dict[str, Any]:
        """Make a checkpoint now (on the event loop: between two applied batches)."""
        self._drop_abandoned()
        checkpoint_id = secrets.token_hex(8)
        path = self.root / checkpoint_id
        self.root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.group.engine.checkpoint(path)
        took = time.monotonic() - started
        source = Engine(path, read_only=True)
        try:
            index, commit_ts = read_position(source)
            group_id = read_group_id(source)
        finally:
            source.close()
        self._checkpoints[checkpoint_id] = _Checkpoint(path, time.monotonic())
        files = list_files(path)
        log.info(
            "backup.checkpoint id=%s index=%d commit_ts=%d files=%d bytes=%d took_ms=%.1f",
            checkpoint_id,
            index,
            commit_ts,
            len(files),
            sum(f["size"] for f in files),
            took * 1000,
        )
        status = self.group.status()
        return {
            "id": checkpoint_id,
            "group_id": group_id,
            "node_id": self.group.config.node_id,
            "role": status["role"],
            "term": status["term"],
            "applied_index": index,
            "commit_ts": commit_ts,
            "files": files,
        }

    def remove(self, checkpoint_id: str) -> bool:
        entry = self._checkpoints.pop(checkpoint_id, None)
        if entry is None:
            return False
        shutil.rmtree(entry.path, ignore_errors=True)
        return True

    def _drop_abandoned(self) -> None:
        now = time.monotonic()
        for checkpoint_id, entry in list(self._checkpoints.items()):
            if now - entry.last_used > ABANDON_AFTER_S:
                log.warning("backup.checkpoint_abandoned id=%s", checkpoint_id)
                self.remove(checkpoint_id)

    async def _create(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(self.create())

    async def _file(self, request: web.Request) -> web.StreamResponse:
        checkpoint_id, name = request.match_info["id"], request.match_info["name"]
        entry = self._checkpoints.get(checkpoint_id) if _ID.match(checkpoint_id) else None
        if entry is None:
            return web.json_response({"error": f"no checkpoint {checkpoint_id!r}"}, status=404)
        path = (entry.path / name).resolve()
        if entry.path.resolve() not in path.parents or not path.is_file():
            return web.json_response(
                {"error": f"no file {name!r} in checkpoint {checkpoint_id}"}, status=404
            )
        entry.last_used = time.monotonic()
        return web.FileResponse(path, chunk_size=1 << 20)

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        removed = self.remove(request.match_info["id"])
        return web.json_response({"changed": removed})
