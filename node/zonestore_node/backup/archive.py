"""Continuous archiving of committed log entries, for point-in-time recovery.

With `--archive-to URL` the leader ships every committed log entry to

    archive/<group id>/<first index>-<last index>-<last commit ts>.seg

in segments: an `Archiver` task reads what the replica has applied (hence committed)
from the in-memory log every POLL_S, buffers it, and uploads a segment once it holds
SEGMENT_BYTES or its oldest entry has waited `max_delay_s` (default 60 s). Restore
(backup/restore.py) replays segments after a base backup's index up to a target commit
timestamp; commit timestamps increase in log order, so "up to a timestamp" is a prefix
of the log.

Never a stalled write path: the archiver only reads the log mirror on the event loop
(bounded per turn) and uploads in a worker thread. When the destination is down it keeps
buffering and retrying with backoff and reports its lag (`zonestore_archive_lag_seconds`:
how long the oldest committed, not yet archived entry has waited; alert
ZonestoreArchiveLagging). Past MAX_BUFFER_BYTES it drops the buffer and counts a gap
(`zonestore_archive_gaps_total`) rather than grow without bound; so it does when the log
was compacted past what it had shipped. A gap ends the restorable window before it; the
next base backup starts a new one (restore refuses to replay across a gap).

Leader changes: a new leader lists the archive and goes on after the highest archived
index (all committed entries are in its log, Raft's leader completeness, unless
compacted: a gap). Two leaders briefly shipping overlapping ranges is harmless: committed
entries are the same on every replica, and restore reads each index once. A leader
losing leadership, or stopping, uploads what it has buffered first (those entries are
committed).

Segment format: SEGMENT_MAGIC, then msgpack [header, entries], then the SHA-256 of all
that; header {"format", "group_id", "first", "last", "last_ts"}; an entry is
[index, term, type, data] exactly as in the log (raft/messages.Entry).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from zonestore_node.api.metrics import Metrics
from zonestore_node.backup import catalog, checkpoint, objstore
from zonestore_node.raft.storage import StorageError as LogStorageError
from zonestore_node.replica.group import NotLeader, RaftGroup

log = logging.getLogger("zonestore.archive")

SEGMENT_MAGIC = b"ZSARCHIVE1\n"
FORMAT_VERSION = 1
POLL_S = 1.0
MAX_DELAY_S = 60.0
SEGMENT_BYTES = 16 << 20
MAX_BUFFER_BYTES = 256 << 20
MAX_ENTRIES_PER_TURN = 20_000
RETRY_MAX_S = 30.0
_KEY = re.compile(r"^(\d{20})-(\d{20})-(\d{17})\.seg$")


def group_folder(group_id: str) -> str:
    return f"{catalog.ARCHIVE}{group_id or 'default'}/"


def segment_key(group_id: str, first: int, last: int, last_ts: int) -> str:
    return f"{group_folder(group_id)}{first:020d}-{last:020d}-{last_ts:017d}.seg"


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    key: str
    first: int
    last: int
    last_ts: int  # the newest commit timestamp among its entries (µs; 0: none)


def list_segments(store: objstore.ObjectStore, group_id: str) -> list[SegmentInfo]:
    folder = group_folder(group_id)
    found = []
    for info in store.list(folder):
        match = _KEY.match(info.key[len(folder) :])
        if match:
            first, last, last_ts = (int(g) for g in match.groups())
            found.append(SegmentInfo(info.key, first, last, last_ts))
    found.sort(key=lambda s: (s.first, -s.last))
    return found


def encode_segment(group_id: str, entries: list[list[Any]], last_ts: int) -> bytes:
    header = {
        "format": FORMAT_VERSION,
        "group_id": group_id,
        "first": entries[0][0],
        "last": entries[-1][0],
        "last_ts": last_ts,
    }
    packed: bytes = msgpack.packb([header, entries], use_bin_type=True)
    body = SEGMENT_MAGIC + packed
    return body + hashlib.sha256(body).digest()


def decode_segment(raw: bytes, where: str) -> tuple[dict[str, Any], list[list[Any]]]:
    """(header, entries); raises BackupError naming `where` when the segment is damaged."""
    if not raw.startswith(SEGMENT_MAGIC) or len(raw) < len(SEGMENT_MAGIC) + 32:
        raise catalog.BackupError(f"archive segment {where} is not a zonestore segment")
    body, digest = raw[:-32], raw[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise catalog.BackupError(f"archive segment {where} fails its SHA-256 check: corrupted")
    try:
        header, entries = msgpack.unpackb(body[len(SEGMENT_MAGIC) :], raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise catalog.BackupError(f"archive segment {where} does not parse: {exc}") from exc
    if header.get("format") != FORMAT_VERSION:
        raise catalog.BackupError(f"archive segment {where}: unknown format {header.get('format')}")
    return header, entries


class ArchiveMetrics:
    """The archiver's series, defined with every node metric in api/metrics.py."""

    def __init__(self, metrics: Metrics) -> None:
        self.lag = metrics.archive_lag
        self.last_archived = metrics.archive_last_commit
        self.segments = metrics.archive_segments
        self.bytes = metrics.archive_bytes
        self.failures = metrics.archive_failures
        self.gaps = metrics.archive_gaps


class Archiver:
    """Ships this replica's committed log to `store` while it leads."""

    def __init__(
        self,
        group: RaftGroup,
        store: objstore.ObjectStore,
        metrics: Metrics,
        *,
        max_delay_s: float = MAX_DELAY_S,
        segment_bytes: int = SEGMENT_BYTES,
        poll_s: float = POLL_S,
    ) -> None:
        self.group = group
        self.store = store
        self.metrics = ArchiveMetrics(metrics)
        self.max_delay_s = max_delay_s
        self.segment_bytes = segment_bytes
        self.poll_s = poll_s
        self.next_index: int | None = None  # None: find out from the archive
        self.archived_index = 0
        self._buffer: list[list[Any]] = []
        self._buffer_bytes = 0
        self._archived_ts = 0  # commit ts of the newest archived commit
        self._oldest_wall = 0.0  # when the oldest buffered entry was read
        self._retry_at = 0.0
        self._backoff = 1.0

    @property
    def group_id(self) -> str:
        return checkpoint.read_group_id(self.group.engine)

    async def run(self) -> None:
        log.info("archive.started destination=%s", self.store)
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let archiving take the node down
                log.exception("archive.step_failed")

    def _leads(self) -> bool:
        try:
            self.group.check_leader()
        except NotLeader:
            return False
        return True

    async def step(self) -> None:
        if not self._leads():
            if self._buffer:
                await self._upload(final=True)  # committed: ship before letting go
            self.next_index = None
            self.metrics.lag.set(0)
            return
        if self.next_index is None:
            segments = await asyncio.to_thread(list_segments, self.store, self.group_id)
            if not self._leads():
                return
            self.next_index = max((s.last for s in segments), default=0) + 1
            self.archived_index = self.next_index - 1
            if segments:
                self._archived_ts = max(s.last_ts for s in segments)
                self.metrics.last_archived.set(self._archived_ts / 1e6)
            log.info("archive.resume next_index=%d", self.next_index)
        self._read()
        now = time.monotonic()
        due = self._buffer and (
            self._buffer_bytes >= self.segment_bytes or now - self._oldest_wall >= self.max_delay_s
        )
        if due and now >= self._retry_at:
            await self._upload(final=False)
        self.metrics.lag.set(now - self._oldest_wall if self._buffer else 0)

    def _read(self) -> None:
        """Buffer what was applied (so committed) since the last turn, at most
        MAX_ENTRIES_PER_TURN entries per turn of the event loop."""
        assert self.next_index is not None
        storage = self.group.storage
        hi = min(self.group.applied_index, self.next_index + MAX_ENTRIES_PER_TURN - 1)
        if hi < self.next_index:
            return
        first = storage.first_index()
        if self.next_index < first:
            self._gap(f"the log was compacted to {first - 1} before index {self.next_index}")
            self.next_index = first
        try:
            entries = storage.entries(self.next_index, hi + 1)
        except LogStorageError as exc:
            self._gap(str(exc))
            self.next_index = storage.first_index()
            return
        if not entries:
            return
        if not self._buffer:
            self._oldest_wall = time.monotonic()
        for entry in entries:
            self._buffer.append([entry.index, entry.term, int(entry.type), entry.data])
            self._buffer_bytes += len(entry.data) + 16
        self.next_index = entries[-1].index + 1
        if self._buffer_bytes > MAX_BUFFER_BYTES:
            self._gap(f"more than {MAX_BUFFER_BYTES} bytes waiting: the destination is down?")
            self._buffer, self._buffer_bytes = [], 0

    def _gap(self, why: str) -> None:
        self.metrics.gaps.inc()
        log.error(
            "archive.gap from_index=%d reason=%s: point-in-time recovery cannot cross it; "
            "take a base backup",
            self.archived_index + 1,
            why,
        )

    async def _upload(self, final: bool) -> None:
        entries = self._buffer
        if not entries:
            return
        # The newest commit timestamp in the segment (the last command's: timestamps
        # increase in log order); a segment of no-ops only carries the previous one.
        last_ts = _newest_commit_ts(entries) or self._archived_ts
        group_id = self.group_id
        blob = encode_segment(group_id, entries, last_ts)
        key = segment_key(group_id, entries[0][0], entries[-1][0], last_ts)
        try:
            await asyncio.to_thread(self.store.put_bytes, key, blob)
        except Exception as exc:
            self.metrics.failures.inc()
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, RETRY_MAX_S)
            log.warning("archive.upload_failed key=%s error=%s", key, exc)
            if final:
                self._gap(f"could not ship the last buffer before stepping down: {exc}")
                self._clear()
            return
        self._backoff = 1.0
        self._retry_at = 0.0
        self.archived_index = entries[-1][0]
        self._archived_ts = last_ts
        self.metrics.segments.inc()
        self.metrics.bytes.inc(len(blob))
        if last_ts:
            self.metrics.last_archived.set(last_ts / 1e6)
        log.info("archive.segment key=%s entries=%d bytes=%d", key, len(entries), len(blob))
        # Entries buffered while the upload ran stay for the next segment.
        if self._buffer is entries:
            self._clear()

    def _clear(self) -> None:
        self._buffer, self._buffer_bytes = [], 0

    async def close(self, timeout_s: float = 5.0) -> None:
        """On a graceful stop: ship what is buffered (committed) if it can be done soon."""
        if self._buffer:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._upload(final=True)
        self.store.close()


def _newest_commit_ts(entries: list[list[Any]]) -> int:
    from zonestore_node.replica.group import COMMIT_PREFIX
    from zonestore_node.txn import command

    for _, _, _, data in reversed(entries):
        if data.startswith(COMMIT_PREFIX):
            return int(command.decode(data[1:]).commit_ts)
    return 0


def for_node(
    url: str, group: RaftGroup, metrics: Metrics, max_delay_s: float = MAX_DELAY_S
) -> Archiver | None:
    """The archiver `--archive-to URL` asks for (None when empty). Raises ValueError for
    a URL that names no destination. S3 settings come from the AWS_* environment."""
    if not url:
        return None
    if not max_delay_s > 0:
        raise ValueError("--archive-max-delay-seconds must be above 0")
    return Archiver(group, objstore.open_store(url), metrics, max_delay_s=max_delay_s)
