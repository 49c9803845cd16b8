"""What a backup destination holds, and the manifest that makes a base backup complete.

Layout under a destination (objstore keys):

    base/<backup id>/files/<name>          the checkpoint's files, uploaded first
    base/<backup id>/manifest.json         written LAST: a backup without it is incomplete
    archive/<group id>/<first>-<last>-<last commit ts>.seg   archived log segments
                                           (backup/archive.py)

A backup id is `<UTC time of its commit timestamp>-<8 hex>`, so ids sort by time. The
manifest (JSON, `format` 1) records the group, the commit timestamp and log index the
backup holds the state at, every file with its size and SHA-256, the zonestore version,
and when it was made. Nothing lists a backup as complete unless its manifest exists and
parses; `verify` re-reads every file and checks size and checksum, and refuses naming
the first object that is missing or differs.

Deleting removes the manifest first, so a backup being deleted is never seen complete
with files missing.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from zonestore_node.backup import objstore

FORMAT_VERSION = 1
KIND = "zonestore-base-backup"
BASE = "base/"
ARCHIVE = "archive/"
MANIFEST = "manifest.json"


class BackupError(Exception):
    """A backup is unusable or an operation on one failed; the message says why and names
    the object."""


def zonestore_version() -> str:
    try:
        return importlib.metadata.version("zonestore")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def rfc3339(commit_ts_us: int) -> str:
    """A commit timestamp (µs since the epoch) as RFC 3339 UTC with microseconds."""
    moment = datetime.datetime.fromtimestamp(commit_ts_us / 1e6, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> int:
    """RFC 3339 (e.g. 2026-12-06T07:30:00Z, with optional fraction or offset) -> µs."""
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time (like 2026-12-06T07:30:00Z)") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add Z (UTC) or an offset like +01:00")
    delta = moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def new_backup_id(commit_ts_us: int, suffix: str) -> str:
    moment = datetime.datetime.fromtimestamp(commit_ts_us / 1e6, tz=datetime.UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{suffix}"


@dataclass(frozen=True, slots=True)
class FileEntry:
    name: str  # relative to the checkpoint folder, `/`-separated
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    backup_id: str
    group_id: str
    applied_index: int  # the state holds every log entry up to here...
    commit_ts: int  # ...i.e. every commit at or before this timestamp (µs)
    files: tuple[FileEntry, ...]
    source_node: str = ""
    started_at: str = ""
    completed_at: str = ""
    zonestore_version: str = field(default_factory=zonestore_version)
    format: int = FORMAT_VERSION

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        body = {
            "kind": KIND,
            "format": self.format,
            "id": self.backup_id,
            "group_id": self.group_id,
            "applied_index": self.applied_index,
            "commit_ts": self.commit_ts,
            "commit_time": rfc3339(self.commit_ts),
            "source_node": self.source_node,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "zonestore_version": self.zonestore_version,
            "total_bytes": self.total_bytes,
            "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        return json.dumps(body, indent=1).encode() + b"\n"

    @staticmethod
    def from_json(raw: bytes, where: str) -> Manifest:
        try:
            body = json.loads(raw)
            if body.get("kind") != KIND:
                raise ValueError(f"kind is {body.get('kind')!r}, not {KIND!r}")
            if body.get("format") != FORMAT_VERSION:
                raise ValueError(
                    f"format {body.get('format')!r}; this zonestore reads format {FORMAT_VERSION}"
                )
            return Manifest(
                backup_id=str(body["id"]),
                group_id=str(body["group_id"]),
                applied_index=int(body["applied_index"]),
                commit_ts=int(body["commit_ts"]),
                files=tuple(
                    FileEntry(str(f["name"]), int(f["size"]), str(f["sha256"]))
                    for f in body["files"]
                ),
                source_node=str(body.get("source_node", "")),
                started_at=str(body.get("started_at", "")),
                completed_at=str(body.get("completed_at", "")),
                zonestore_version=str(body.get("zonestore_version", "")),
                format=int(body["format"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackupError(f"manifest {where} is not a valid backup manifest: {exc}") from exc


def files_prefix(backup_id: str) -> str:
    return f"{BASE}{backup_id}/files/"


def manifest_key(backup_id: str) -> str:
    return f"{BASE}{backup_id}/{MANIFEST}"


@dataclass(frozen=True, slots=True)
class Listing:
    complete: list[Manifest]  # by id (time)
    incomplete: list[str]  # ids with objects but no manifest


def list_backups(store: objstore.ObjectStore) -> Listing:
    ids: set[str] = set()
    with_manifest: list[str] = []
    for info in store.list(BASE):
        backup_id, _, rest = info.key[len(BASE) :].partition("/")
        ids.add(backup_id)
        if rest == MANIFEST:
            with_manifest.append(backup_id)
    complete = [read_manifest(store, backup_id) for backup_id in sorted(with_manifest)]
    return Listing(complete, sorted(ids - set(with_manifest)))


def read_manifest(store: objstore.ObjectStore, backup_id: str) -> Manifest:
    if not backup_id or "/" in backup_id or backup_id in (".", ".."):
        raise BackupError(f"bad backup id {backup_id!r}")
    key = manifest_key(backup_id)
    try:
        raw = store.get_bytes(key)
    except objstore.ObjectNotFound:
        if store.list(f"{BASE}{backup_id}/"):
            raise BackupError(
                f"backup {backup_id} in {store} is incomplete (no {key}): an upload that did "
                "not finish; delete it with `zonestore backup delete`"
            ) from None
        raise BackupError(f"no backup {backup_id} in {store}") from None
    manifest = Manifest.from_json(raw, f"{store.url}{key}")
    if manifest.backup_id != backup_id:
        raise BackupError(f"manifest {key} names backup {manifest.backup_id!r}, not {backup_id}")
    return manifest


def read_checked(
    store: objstore.ObjectStore,
    backup_id: str,
    entry: FileEntry,
    sink: Callable[[bytes], object] | None = None,
) -> None:
    """Stream one file of a backup, checking size and SHA-256 against the manifest;
    `sink` gets the bytes. Raises BackupError naming the object when it is missing or
    differs (the sink may have had some of its bytes by then)."""
    key = files_prefix(backup_id) + entry.name
    digest = hashlib.sha256()
    size = 0
    try:
        chunks: Iterator[bytes] = store.iter_chunks(key)
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            if sink is not None:
                sink(chunk)
    except objstore.ObjectNotFound:
        raise BackupError(f"backup {backup_id}: object {store.url}{key} is missing") from None
    except objstore.ObjectStoreError as exc:
        raise BackupError(f"backup {backup_id}: cannot read {store.url}{key}: {exc}") from exc
    if size != entry.size:
        raise BackupError(
            f"backup {backup_id}: object {store.url}{key} has {size} bytes, "
            f"the manifest says {entry.size}: corrupted or truncated"
        )
    if digest.hexdigest() != entry.sha256:
        raise BackupError(
            f"backup {backup_id}: object {store.url}{key} fails its SHA-256 check "
            f"(got {digest.hexdigest()}, manifest {entry.sha256}): corrupted"
        )


def verify(store: objstore.ObjectStore, backup_id: str) -> Manifest:
    """Re-read every file of a complete backup; raises BackupError naming the first
    missing or corrupted object."""
    manifest = read_manifest(store, backup_id)
    for entry in manifest.files:
        read_checked(store, backup_id, entry)
    return manifest


def delete(store: objstore.ObjectStore, backup_id: str) -> int:
    """Remove a backup, complete or not (manifest first); returns the objects removed."""
    if not backup_id or "/" in backup_id:
        raise BackupError(f"bad backup id {backup_id!r}")
    removed = 0
    if store.exists(manifest_key(backup_id)):
        store.delete(manifest_key(backup_id))
        removed += 1
    removed += store.delete_prefix(f"{BASE}{backup_id}/")
    if not removed:
        raise BackupError(f"no backup {backup_id} in {store}")
    return removed


def describe(manifest: Manifest) -> dict[str, Any]:
    return {
        "id": manifest.backup_id,
        "group_id": manifest.group_id,
        "commit_time": rfc3339(manifest.commit_ts),
        "applied_index": manifest.applied_index,
        "bytes": manifest.total_bytes,
        "files": len(manifest.files),
        "source_node": manifest.source_node,
        "completed_at": manifest.completed_at,
    }
