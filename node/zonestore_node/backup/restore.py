"""`zonestore restore`: the data folder of a NEW group, as of a point in time.

    1. plan: the base backup (the one asked for, else the newest whose commit timestamp
       is at or before the target) and the chain of archived segments that continues
       its log without a gap; refuse a target the backups and archive cannot reach
       exactly (before the oldest backup, or after the newest archived commit: what
       happened after it is unknown). A gap in the archive (segments after a missing
       range: the archiver dropped entries, archive.gap) ends what can be replayed:
       the latest, or a time after the gap, is refused naming the missing indexes and
       the last restorable time (`--to-time` it), never restored short in silence;
    2. download every file of the backup into a staging folder, checking size and
       SHA-256 against the manifest (a missing or corrupted object is refused, named);
    3. replay archived commands after the backup's index through the same
       deterministic apply every replica runs (txn/apply.py), stopping before the first
       commit stamped after the target: commit timestamps increase in log order, so the
       result holds exactly the commits at or before it. A segment whose header
       disagrees with its name (group, first or last index), or a commit stamped
       before the one replayed ahead of it (two histories in one archive folder: two
       groups without a group id archiving to one URL both write archive/default/), is
       refused, named;
    4. make it a new group of one: drop the old log, hard state and address book, record
       a log snapshot at the restored index whose only voter is `--node-id`, and a fresh
       group id (`group/id`) — replicas refuse peers of another group
       (replica/group.py), so the folder can never join the group it came from;
    5. move the staging folder into place as <data dir>/db.

`zonestore serve --data-dir DIR --node-id ID` then serves it as a group of one (served
with another --node-id, it refuses to start, naming ID: server.Node._check_membership);
more replicas join as learners (`zonestore members add`) and are promoted as usual.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from zonestore_node.backup import archive, catalog, checkpoint, objstore
from zonestore_node.raft.messages import EntryType
from zonestore_node.replica.group import APPLIED_KEY, COMMIT_PREFIX, GROUP_ID_KEY, PEERS_KEY
from zonestore_node.replica.raftlog import HARD_STATE_KEY, SNAPSHOT_KEY
from zonestore_node.storage import mvcc
from zonestore_node.storage.engine import Engine, Family
from zonestore_node.txn import apply, command

log = logging.getLogger("zonestore.backup")

_U64x2 = struct.Struct(">QQ")
LATEST = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Gap:
    """Archived log indexes [first, last] that no segment holds, with segments after."""

    first: int
    last: int
    before_ts: int  # the newest commit the backup + chain before the gap hold
    after_ts: int  # the newest commit archived after it

    def describe(self, group_id: str) -> str:
        return (
            f"the archive of group {group_id or 'default'} has a gap after index "
            f"{self.first - 1} (commit time {catalog.rfc3339(self.before_ts)}): indexes "
            f"{self.first}..{self.last} are missing (the archiver dropped them: "
            "archive.gap in its log, zonestore_archive_gaps_total), and commits archived "
            f"after them, up to {catalog.rfc3339(self.after_ts)}, cannot be replayed"
        )


@dataclass(slots=True)
class Plan:
    manifest: catalog.Manifest
    segments: list[archive.SegmentInfo]  # a gapless chain after the backup's index
    target_ts: int  # replay commits with commit_ts <= this (LATEST: all archived)
    reach_ts: int  # the newest commit the backup + chain hold
    notes: list[str] = field(default_factory=list)  # what the operator should know


@dataclass(slots=True)
class Result:
    manifest: catalog.Manifest
    applied_index: int
    commit_ts: int
    replayed: int  # commands replayed from the archive
    group_id: str
    download_bytes: int
    download_s: float
    replay_s: float
    notes: list[str] = field(default_factory=list)


def chain(
    segments: list[archive.SegmentInfo], after_index: int
) -> tuple[list[archive.SegmentInfo], int]:
    """The segments that continue the log from `after_index` + 1 without a gap, and the
    first index they do not cover."""
    picked: list[archive.SegmentInfo] = []
    next_index = after_index + 1
    progress = True
    while progress:
        progress = False
        # Of the segments holding next_index, the one reaching furthest.
        covering = [s for s in segments if s.first <= next_index <= s.last]
        if covering:
            best = max(covering, key=lambda s: s.last)
            picked.append(best)
            next_index = best.last + 1
            progress = True
    return picked, next_index


def gap(segments: list[archive.SegmentInfo], next_index: int, reach_ts: int) -> Gap | None:
    """The missing range at `next_index` (where `chain` stopped), if anything was
    archived after it; None when the archive simply ends there."""
    later = [s for s in segments if s.first > next_index]
    if not later:
        return None
    resume = min(s.first for s in later)
    return Gap(next_index, resume - 1, reach_ts, max(s.last_ts for s in later))


def plan(store: objstore.ObjectStore, backup_id: str, target_ts: int | None) -> Plan:
    """Choose the backup and segments for a target (None: the latest restorable)."""
    if backup_id:
        candidates = [catalog.read_manifest(store, backup_id)]
    else:
        candidates = catalog.list_backups(store).complete
        if not candidates:
            raise catalog.BackupError(f"no complete base backup in {store}")
    if target_ts is not None:
        fitting = [m for m in candidates if m.commit_ts <= target_ts]
        if not fitting:
            oldest = min(candidates, key=lambda m: m.commit_ts)
            raise catalog.BackupError(
                f"no base backup at or before {catalog.rfc3339(target_ts)}: the "
                f"{'chosen' if backup_id else 'oldest'} one ({oldest.backup_id}) holds the "
                f"state as of {catalog.rfc3339(oldest.commit_ts)}"
            )
        candidates = fitting
    manifest = max(candidates, key=lambda m: (m.commit_ts, m.backup_id))
    group = manifest.group_id or "default"
    notes = []
    groups = sorted({m.group_id or "default" for m in candidates})
    if not backup_id and len(groups) > 1:
        notes.append(
            f"{store} holds backups of {len(groups)} groups ({', '.join(groups)}); chose "
            f"{manifest.backup_id} of group {group}, the newest that fits: name another "
            "with --backup ID"
        )
    archived = archive.list_segments(store, manifest.group_id)
    segments, next_index = chain(archived, manifest.applied_index)
    reach_ts = max([manifest.commit_ts, *(s.last_ts for s in segments)])
    missing = gap(archived, next_index, reach_ts)
    if missing is not None and (target_ts is None or target_ts > reach_ts):
        wanted = "the latest" if target_ts is None else catalog.rfc3339(target_ts)
        raise catalog.BackupError(
            f"cannot restore to {wanted}: {missing.describe(manifest.group_id)}. The last "
            f"restorable time from backup {manifest.backup_id} is {catalog.rfc3339(reach_ts)}:"
            f" restore to it with --to-time {catalog.rfc3339(reach_ts)} (a base backup "
            f"taken after index {missing.last} starts a new restorable window)"
        )
    if target_ts is not None and target_ts > reach_ts:
        raise catalog.BackupError(
            f"cannot restore to {catalog.rfc3339(target_ts)}: backup {manifest.backup_id} and "
            f"the archive after it reach only to {catalog.rfc3339(reach_ts)} (the newest "
            "archived commit; what came after is unknown). Choose a time at or before it, "
            "or --to-latest"
        )
    if target_ts is None and not segments:
        notes.append(
            f"the archive holds no segment of group {group} after index "
            f"{manifest.applied_index} (looked in {store.url}"
            f"{archive.group_folder(manifest.group_id)}): the latest restorable state is the "
            f"backup's own, {catalog.rfc3339(manifest.commit_ts)}; is --archive-to this URL?"
        )
    target = LATEST if target_ts is None else target_ts
    return Plan(manifest, segments, target, reach_ts, notes)


def _download(store: objstore.ObjectStore, manifest: catalog.Manifest, into: Path) -> int:
    total = 0
    for entry in manifest.files:
        path = into.joinpath(*entry.name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            catalog.read_checked(store, manifest.backup_id, entry, out.write)
            out.flush()
            os.fsync(out.fileno())
        total += entry.size
    return total


def _replay(
    store: objstore.ObjectStore, engine: Engine, the_plan: Plan, index: int, commit_ts: int
) -> tuple[int, int, int]:
    """Apply archived commands after `index` up to the target; returns the new
    (applied index, commit ts, commands replayed)."""
    state = mvcc.Store(engine)
    applier = apply.Applier()
    replayed = 0
    for segment in the_plan.segments:
        where = store.url + segment.key
        try:
            raw = store.get_bytes(segment.key)
        except objstore.ObjectNotFound:
            raise catalog.BackupError(f"archive segment {where} is missing") from None
        header, entries = archive.decode_segment(raw, where)
        _check_segment(segment, header, entries, the_plan.manifest.group_id, where)
        for entry_index, _term, entry_type, data in entries:
            if entry_index <= index:
                continue
            if entry_index != index + 1:
                raise catalog.BackupError(
                    f"archive segment {where} skips from index {index} to {entry_index}"
                )
            if entry_type == EntryType.NORMAL and data.startswith(COMMIT_PREFIX):
                cmd = command.decode(data[1:])
                if cmd.commit_ts > the_plan.target_ts:
                    return index, commit_ts, replayed
                if cmd.commit_ts < commit_ts:
                    # Commit timestamps increase in log order within one group's log.
                    raise catalog.BackupError(
                        f"archive segment {where}: the commit at index {entry_index} is "
                        f"stamped {catalog.rfc3339(cmd.commit_ts)}, before the one replayed "
                        f"ahead of it ({catalog.rfc3339(commit_ts)}): the folder mixes two "
                        "histories (groups without a group id all archive to "
                        f"{archive.group_folder('')}); restore from a backup of one group, "
                        "with its archive alone"
                    )
                batch = engine.batch()
                applier(state, cmd, batch)
                commit_ts = max(commit_ts, cmd.commit_ts)
                index = entry_index
                batch.put(Family.META, APPLIED_KEY, _U64x2.pack(index, commit_ts))
                engine.write(batch)
                replayed += 1
            else:  # a leader's no-op or a membership change: no state to replay
                index = entry_index
    return index, commit_ts, replayed


def _check_segment(
    segment: archive.SegmentInfo,
    header: dict[str, object],
    entries: list[list[object]],
    group_id: str,
    where: str,
) -> None:
    """Refuse a segment whose content is not what its name promises: another group's
    (copied into the wrong folder), or other indexes (a truncated or renamed upload,
    which would end the replay short in silence)."""
    said = (header.get("group_id", ""), header.get("first"), header.get("last"))
    held = (entries[0][0], entries[-1][0]) if entries else (None, None)
    if said[0] != group_id:
        raise catalog.BackupError(
            f"archive segment {where} belongs to group {said[0] or 'default'!s}, not to the "
            f"backup's group {group_id or 'default'}"
        )
    if (said[1], said[2]) != (segment.first, segment.last) or held != (said[1], said[2]):
        raise catalog.BackupError(
            f"archive segment {where}: its name says indexes {segment.first}..{segment.last}, "
            f"its header {said[1]}..{said[2]}, its entries {held[0]}..{held[1]}"
        )


def _new_group(engine: Engine, node_id: str, index: int, commit_ts: int) -> str:
    """Forget the old group's log and members; a group of one, `node_id`, at `index`."""
    group_id = "g-" + secrets.token_hex(8)
    batch = engine.batch()
    batch.delete_range(Family.RAFTLOG, b"", b"\xff" * 16)
    it = engine.iterator(Family.META)
    it.seek(b"raft/")
    while it.valid() and it.key().startswith(b"raft/"):
        batch.delete(Family.META, it.key())
        it.next()
    batch.put(Family.META, APPLIED_KEY, _U64x2.pack(index, commit_ts))
    # The log starts after a snapshot at `index` (the state is this database), whose
    # configuration has one voter; term 1, nobody voted, everything up to it committed.
    batch.put(
        Family.META,
        SNAPSHOT_KEY,
        msgpack.packb([index, 1, [node_id], []], use_bin_type=True),
    )
    batch.put(Family.META, HARD_STATE_KEY, msgpack.packb([1, "", index], use_bin_type=True))
    batch.delete(Family.META, PEERS_KEY)
    batch.put(Family.META, GROUP_ID_KEY, group_id.encode())
    engine.write(batch)
    return group_id


def restore(store: objstore.ObjectStore, the_plan: Plan, data_dir: Path, node_id: str) -> Result:
    target = data_dir / "db"
    if target.exists() and any(target.iterdir()):
        raise catalog.BackupError(
            f"{target} already holds a database: restore into a new --data-dir"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    for stale in data_dir.glob(".restore-*"):  # a restore killed before it finished
        log.warning("restore.removed_interrupted staging=%s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    staging = data_dir / f".restore-{secrets.token_hex(4)}"
    manifest = the_plan.manifest
    try:
        started = time.monotonic()
        size = _download(store, manifest, staging)
        downloaded = time.monotonic()
        engine = Engine(staging)
        try:
            index, commit_ts = checkpoint.read_position(engine)
            if (index, commit_ts) != (manifest.applied_index, manifest.commit_ts):
                raise catalog.BackupError(
                    f"backup {manifest.backup_id}: its database is at index {index}, "
                    f"the manifest says {manifest.applied_index}"
                )
            index, commit_ts, replayed = _replay(store, engine, the_plan, index, commit_ts)
            group_id = _new_group(engine, node_id, index, commit_ts)
        finally:
            engine.close()  # syncs the WAL
        replayed_at = time.monotonic()
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Result(
        manifest,
        index,
        commit_ts,
        replayed,
        group_id,
        size,
        downloaded - started,
        replayed_at - downloaded,
    )


def run_cli(args: argparse.Namespace, store: objstore.ObjectStore) -> int:
    target_ts = catalog.parse_rfc3339(args.to_time) if args.to_time else None
    the_plan = plan(store, args.backup, target_ts)
    data_dir = Path(args.data_dir)
    result = restore(store, the_plan, data_dir, args.node_id)
    mb_s = result.download_bytes / 1e6 / max(result.download_s, 1e-9)
    print(
        f"restored backup {result.manifest.backup_id} "
        f"({catalog.rfc3339(result.manifest.commit_ts)}, index {result.manifest.applied_index}) "
        f"+ {result.replayed} archived commits -> state as of "
        f"{catalog.rfc3339(result.commit_ts)} (index {result.applied_index})\n"
        f"downloaded {result.download_bytes} bytes in {result.download_s:.1f} s "
        f"({mb_s:.1f} MB/s), replayed in {result.replay_s:.1f} s\n"
        f"new group {result.group_id}, one voter {args.node_id}; serve it with:\n"
        f"  zonestore serve --data-dir {data_dir} --node-id {args.node_id}"
    )
    for note in the_plan.notes:
        print(f"note: {note}")
    return 0
