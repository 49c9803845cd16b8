"""Taking a base backup of a running group: `zonestore backup create`.

    1. ask the group (any replica's admin API, then the leader's view) which replica to
       back up from: a healthy follower when there is one (least lag first), so the
       leader keeps its disk and CPU for the writes; the leader otherwise;
    2. that replica makes a checkpoint at its applied index (backup/checkpoint.py): one
       commit timestamp, while writes go on;
    3. stream every file of it to the destination, hashing on the way (several at a time);
    4. write the manifest LAST (catalog.py): only then is the backup complete;
    5. release the checkpoint on the replica.

A failure at any step (the replica dies mid-upload, the destination refuses) leaves no
manifest, so the partial backup is never listed as complete; what was uploaded is removed
when possible, and the next `backup create` starts afresh. A leader change meanwhile does
not matter: the checkpoint is a set of immutable files on the replica that made it.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from zonestore_node.backup import catalog, objstore

log = logging.getLogger("zonestore.backup")

PARALLEL_UPLOADS = 4
# What a backup may read from its source replica per second, all files together (None:
# no limit). Unpaced, a copy at disk speed (~650 MB/s here) took half of a 2-core
# machine and cut the group's writes by ~60% while it ran (make bench: writecost).
DEFAULT_MAX_RATE = 64 * 1000 * 1000
# Credit a paused stream may save up: a burst of at most this many seconds' worth.
_BURST_S = 0.25
HTTP_TIMEOUT_S = 60.0
CHUNK = 1 << 20


class AdminClient:
    """A few admin API calls (urllib: no event loop in the CLI)."""

    def __init__(self, token: str = "") -> None:
        self.token = token

    def request(self, addr: str, method: str, path: str, body: object = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            if exc.code == 401:
                detail = "the admin API wants a token: --admin-token-file FILE"
            raise catalog.BackupError(
                f"{method} http://{addr}{path} answered {exc.code}: {detail}"
            ) from None
        except OSError as exc:
            raise catalog.BackupError(f"cannot reach the admin API at {addr}: {exc}") from exc

    def stream(self, addr: str, path: str) -> Iterator[bytes]:
        req = urllib.request.Request(f"http://{addr}{path}")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            response = urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            raise catalog.BackupError(
                f"GET http://{addr}{path} answered {exc.code}: {exc.read()[:300]!r}"
            ) from None
        except OSError as exc:
            raise catalog.BackupError(f"cannot read http://{addr}{path}: {exc}") from exc
        with response:
            expected = response.length  # Content-Length (None: chunked)
            read = 0
            try:
                while chunk := response.read(CHUNK):
                    read += len(chunk)
                    yield chunk
            except OSError as exc:  # the replica died or the connection broke mid-file
                raise catalog.BackupError(f"reading http://{addr}{path} broke off: {exc}") from exc
            # http.client ends a body cut short by a closed connection without an error.
            if expected is not None and read < expected:
                raise catalog.BackupError(
                    f"reading http://{addr}{path} broke off after {read} of {expected} bytes:"
                    " the connection closed"
                )


def _recently_heard(member: dict[str, Any]) -> bool:
    """Healthy in the leader's status, or heard from within the last second: each Raft
    quorum check clears every follower's `healthy` for a moment, and a backup asked
    then would otherwise land on the leader."""
    contact = member.get("last_contact_ms")
    return bool(member.get("healthy")) or (contact is not None and contact < 1000)


def choose_sources(admin: AdminClient, addr: str) -> list[str]:
    """Admin addresses to back up from, best first: healthy followers by lag, then the
    leader, then the replica asked."""
    status = admin.request(addr, "GET", "/admin/status")
    members = {m["id"]: m for m in status.get("members", [])}
    leader = status.get("leader")
    if leader and leader != status.get("node_id"):
        leader_addr = (members.get(leader) or {}).get("admin_address")
        if leader_addr:
            try:  # the leader knows who is healthy and how far behind
                status = admin.request(leader_addr, "GET", "/admin/status")
                members = {m["id"]: m for m in status.get("members", [])}
            except catalog.BackupError:
                pass
    followers = sorted(
        (
            m
            for m in members.values()
            if m["id"] != leader and _recently_heard(m) and m.get("admin_address")
        ),
        key=lambda m: (m.get("role") != "voter", m.get("lag") or 0),
    )
    order = [m["admin_address"] for m in followers]
    leader_addr = (members.get(leader or "") or {}).get("admin_address")
    for extra in (leader_addr, addr):
        if extra and extra not in order:
            order.append(extra)
    return order


@dataclass(frozen=True, slots=True)
class Result:
    manifest: catalog.Manifest
    source: str
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.manifest.total_bytes / 1e6 / max(self.seconds, 1e-9)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Pacer:
    """Holds readers, on any number of threads, to `rate` bytes per second in all."""

    def __init__(self, rate: int | None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"a rate must be above 0 bytes/s, got {rate}")
        self.rate = rate
        self._lock = threading.Lock()
        self._due = time.monotonic()  # when the bytes taken so far have been paid for

    def take(self, size: int) -> None:
        if self.rate is None:
            return
        with self._lock:
            now = time.monotonic()
            self._due = max(self._due, now - _BURST_S) + size / self.rate
            wait = self._due - now
        if wait > 0:
            time.sleep(wait)


def create(
    admin: AdminClient,
    addr: str,
    store: objstore.ObjectStore,
    parallel: int = PARALLEL_UPLOADS,
    max_rate: int | None = DEFAULT_MAX_RATE,
) -> Result:
    """Take a base backup of the group `addr` belongs to into `store`, reading at most
    `max_rate` bytes per second from the source replica (None: as fast as it goes)."""
    pacer = Pacer(max_rate)
    started, started_at = time.monotonic(), _now()
    errors: list[str] = []
    checkpoint: dict[str, Any] | None = None
    source = ""
    for source in choose_sources(admin, addr):
        try:
            checkpoint = admin.request(source, "POST", "/admin/backup/checkpoints", {})
            break
        except catalog.BackupError as exc:
            errors.append(str(exc))
    if checkpoint is None:
        raise catalog.BackupError("no replica could make a checkpoint: " + "; ".join(errors))
    checkpoint_id = str(checkpoint["id"])
    backup_id = catalog.new_backup_id(int(checkpoint["commit_ts"]), checkpoint_id[:8])
    log.info(
        "backup.started id=%s source=%s index=%s files=%d",
        backup_id,
        checkpoint["node_id"],
        checkpoint["applied_index"],
        len(checkpoint["files"]),
    )
    prefix = catalog.files_prefix(backup_id)

    def upload(item: dict[str, Any]) -> catalog.FileEntry:
        name = str(item["name"])
        digest = hashlib.sha256()

        def hashed() -> Iterator[bytes]:
            path = f"/admin/backup/checkpoints/{checkpoint_id}/files/{urllib.parse.quote(name)}"
            for chunk in admin.stream(source, path):
                pacer.take(len(chunk))
                digest.update(chunk)
                yield chunk

        size = store.put_stream(prefix + name, hashed())
        if size != int(item["size"]):
            raise catalog.BackupError(
                f"{name}: read {size} bytes from {source}, the checkpoint listed {item['size']}"
            )
        return catalog.FileEntry(name, size, digest.hexdigest())

    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
            entries = list(pool.map(upload, checkpoint["files"]))
        manifest = catalog.Manifest(
            backup_id=backup_id,
            group_id=str(checkpoint.get("group_id", "")),
            applied_index=int(checkpoint["applied_index"]),
            commit_ts=int(checkpoint["commit_ts"]),
            files=tuple(sorted(entries, key=lambda e: e.name)),
            source_node=str(checkpoint["node_id"]),
            started_at=started_at,
            completed_at=_now(),
        )
        store.put_bytes(catalog.manifest_key(backup_id), manifest.to_json())  # complete now
    except BaseException as exc:
        try:  # best effort: leave no partial objects behind (they are never listed anyway)
            store.delete_prefix(f"{catalog.BASE}{backup_id}/")
        except Exception as cleanup:
            log.warning("backup.cleanup_failed id=%s error=%s", backup_id, cleanup)
        if isinstance(exc, objstore.ObjectStoreError):
            raise catalog.BackupError(f"backup {backup_id} failed: {exc}") from exc
        raise
    finally:
        try:
            admin.request(source, "DELETE", f"/admin/backup/checkpoints/{checkpoint_id}")
        except catalog.BackupError as exc:  # the replica went away: it drops it on restart
            log.warning("backup.release_failed checkpoint=%s error=%s", checkpoint_id, exc)
    return Result(manifest, source, time.monotonic() - started)
