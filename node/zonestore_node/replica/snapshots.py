"""Snapshots of a replica group: taking them, streaming them to a peer, installing them.

The state machine lives in the same database as the log, so a snapshot is a RocksDB
checkpoint (hard links, milliseconds) taken right after applying its index, under
<data>/snapshots/<index>. A replica too far behind gets it streamed in chunks
(FRAME_SNAP frames: every key of the state families) and then the InstallSnapshot
message; it stages the chunks in a database of its own and steps the message only once
the staging is complete, then replaces its state in one atomic RocksDB batch together
with the log's snapshot record. Every `snapshot_every` applied entries a snapshot is
taken and the log compacted, keeping `snapshot_keep` entries for followers that are only
a little behind.

`SnapshotMixin` is a part of `RaftGroup` (replica/group.py), which owns the state named
here and calls these methods from its driver loop: `_restore` while persisting a Ready
that carries a snapshot, `_after_restore` once that batch is written, `_send_snapshot`
for an InstallSnapshot message, `_on_snapshot_chunk` and `_staged_for` for frames.
Must not import replica/group.py (it imports this).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from zonestore_node.model import vectors
from zonestore_node.raft import messages as rmsg
from zonestore_node.raft.node import Node
from zonestore_node.replica.config import GroupConfig
from zonestore_node.replica.layout import (
    APPLIED_KEY,
    APPLIED_VALUE,
    FRAME_RAFT,
    FRAME_SNAP,
    GROUP_ID_KEY,
    PEERS_KEY,
    STATE_FAMILIES,
)
from zonestore_node.replica.raftlog import RocksLogStorage
from zonestore_node.replica.transport import Transport
from zonestore_node.storage.engine import Engine, Family, WriteBatch

log = logging.getLogger("zonestore.replica")

SNAP_CHUNK_BYTES = 512 * 1024


class IncomingSnapshot:
    """A snapshot being received: chunks staged in a database of their own."""

    def __init__(self, index: int, applied_ts: int, path: Path) -> None:
        if path.exists():
            shutil.rmtree(path)
        self.index = index
        self.applied_ts = applied_ts
        self.path = path
        self.engine = Engine(path)
        self.next_seq = 0
        self.complete = False

    def discard(self) -> None:
        self.engine.close()
        shutil.rmtree(self.path, ignore_errors=True)


class SnapshotMixin:
    """Snapshot taking, sending, staging and installing, for `RaftGroup`."""

    # State owned by RaftGroup (see its __init__).
    config: GroupConfig
    engine: Engine
    storage: RocksLogStorage
    node: Node
    transport: Transport
    clock: Any
    _apply: Callable[..., Any]  # the state machine; its `invalidate()`, if any, on restore
    applied_index: int
    applied_ts: int
    applied_bytes_since_snapshot: int
    group_id: str
    snapshots_sent: int
    snapshots_received: int
    _wake: asyncio.Event
    _address_book: dict[str, list[str]]
    _receiving: IncomingSnapshot | None
    _staged: dict[int, IncomingSnapshot]
    _claimed: set[int]
    _streams: int

    @property
    def _snapshots_dir(self) -> Path:
        return self.engine.path.parent / "snapshots"

    def _checkpoint_dir(self, index: int) -> Path:
        return self._snapshots_dir / f"{index:020d}"

    def _checkpoint(self, index: int) -> None:
        """A checkpoint of the state as of `index` (call right after applying it)."""
        target = self._checkpoint_dir(index)
        self._snapshots_dir.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        self.engine.checkpoint(target)
        for old in self._snapshots_dir.iterdir():
            if old != target:
                shutil.rmtree(old, ignore_errors=True)

    def take_snapshot(self) -> int:
        """Snapshot the applied state and compact the log behind it; returns its index."""
        index = self.applied_index
        current = self.storage.snapshot().metadata.index
        if index <= current and self._checkpoint_dir(current).exists():
            return current
        conf = self.node.conf_state_at(index)
        self._checkpoint(index)
        batch = self.engine.batch()
        if index > current:
            self.storage.create_snapshot(index, conf, batch)
        compact_to = self._compact_point(index)
        if compact_to >= self.storage.first_index():
            self.storage.compact(compact_to, batch)
        self.engine.write(batch)
        self.applied_bytes_since_snapshot = 0
        log.info("raft.snapshot_taken node=%s index=%d", self.config.node_id, index)
        return index

    def _compact_point(self, index: int) -> int:
        """The log index to compact up to behind a snapshot at `index`: at most
        `snapshot_keep` entries and `snapshot_keep_bytes` of them stay."""
        compact_to = index - self.config.snapshot_keep
        lo = max(self.storage.first_index(), compact_to + 1)
        kept = 0
        for entry in reversed(self.storage.entries(lo, index + 1)):
            kept += len(entry.data)
            if kept > self.config.snapshot_keep_bytes:
                return entry.index
        return compact_to

    def _held_bytes(self, after: int, upto: int) -> int:
        """Bytes of the log entries held in (after, upto]."""
        lo = max(after + 1, self.storage.first_index())
        hi = min(upto, self.storage.last_index())
        if hi < lo:
            return 0
        return sum(len(entry.data) for entry in self.storage.entries(lo, hi + 1))

    async def _send_snapshot(self, msg: rmsg.Message) -> None:
        assert msg.snapshot is not None
        peer, index = msg.to, msg.snapshot.metadata.index
        try:
            path = self._checkpoint_dir(index)
            if not path.exists():
                self.take_snapshot()  # the snapshot came from a leader: checkpoint now
                raise FileNotFoundError(f"no checkpoint for snapshot {index}; took a new one")
            source = Engine(path, read_only=True)
            try:
                applied_ts = 0
                raw = source.get(Family.META, APPLIED_KEY)
                if raw:
                    applied_ts = APPLIED_VALUE.unpack(raw)[1]
                seq = 0
                for family in STATE_FAMILIES:
                    items: list[list[bytes]] = []
                    size = 0
                    it = source.iterator(family)
                    it.seek(b"")
                    while it.valid():
                        key = it.key()
                        if not (family is Family.META and key.startswith(b"raft/")):
                            value = it.value()
                            items.append([key, value])
                            size += len(key) + len(value)
                        it.next()
                        if size >= SNAP_CHUNK_BYTES:
                            await self.transport.send_paced(
                                peer,
                                FRAME_SNAP,
                                [index, applied_ts, seq, family.value, items, False],
                            )
                            seq, items, size = seq + 1, [], 0
                    if items:
                        await self.transport.send_paced(
                            peer, FRAME_SNAP, [index, applied_ts, seq, family.value, items, False]
                        )
                        seq += 1
                await self.transport.send_paced(
                    peer, FRAME_SNAP, [index, applied_ts, seq, Family.META.value, [], True]
                )
            finally:
                source.close()
            self.transport.send(peer, FRAME_RAFT, rmsg.to_wire(msg))
            self.snapshots_sent += 1
            self.node.report_snapshot(peer, failure=False)
            log.info(
                "raft.snapshot_sent node=%s peer=%s index=%d", self.config.node_id, peer, index
            )
        except Exception as exc:
            log.warning("raft.snapshot_send_failed peer=%s index=%d error=%s", peer, index, exc)
            self.node.report_snapshot(peer, failure=True)
        self._wake.set()

    def _on_snapshot_chunk(self, peer: str, body: Any) -> None:
        try:
            index, applied_ts, seq, family, items, last = body
            if seq == 0:
                if index in self._staged or index <= self.applied_index:
                    return  # a resend of what is staged, or older than the state: skip it
                self._drop_receiving()
                self._streams += 1
                path = self.engine.path.parent / f"snapshot-incoming-{index}-{self._streams}"
                self._receiving = IncomingSnapshot(index, applied_ts, path)
            incoming = self._receiving
            if incoming is None or incoming.index != index or incoming.next_seq != seq:
                if incoming is not None and incoming.index == index:
                    self._drop_receiving()  # a gap: this stream is lost, wait for a resend
                return
            batch = incoming.engine.batch()
            for key, value in items:
                batch.put(Family(family), key, value)
            incoming.engine.write(batch)
            incoming.next_seq += 1
            if last:
                incoming.complete = True
                self._receiving = None
                self._staged[index] = incoming
                # Older stagings are superseded, unless a pending Ready still names one.
                self._drop_staged(lambda i: i < index and i not in self._claimed)
        except Exception as exc:  # a bad chunk or a staging failure must not kill the link
            log.warning("replica.bad_snapshot_chunk peer=%s error=%s", peer, exc)
            self._drop_receiving()

    def _drop_receiving(self) -> None:
        if self._receiving is not None:
            self._receiving.discard()
            self._receiving = None

    def _drop_staged(self, which: Callable[[int], bool]) -> None:
        for index in [i for i in self._staged if which(i)]:
            self._staged.pop(index).discard()

    def _staged_for(self, msg: rmsg.Message) -> bool:
        """Whether the snapshot an InstallSnapshot names is staged; if so it is claimed
        (kept) until the Ready that may carry it has been handled."""
        assert msg.snapshot is not None
        index = msg.snapshot.metadata.index
        if index not in self._staged:
            return False
        self._claimed.add(index)
        return True

    def _restore(self, snap: rmsg.Snapshot, batch: WriteBatch) -> None:
        """Replace the state machine by the staged snapshot, in the same batch as the
        log's snapshot record: one atomic RocksDB write, so a crash leaves either the old
        state and log or the new ones."""
        index = snap.metadata.index
        incoming = self._staged.get(index)
        if incoming is None:
            raise RuntimeError(f"snapshot {index} is not staged")
        for family in (Family.ENTITIES, Family.INDEXES):
            batch.delete_range(family, b"", b"\xff" * 64)
        it = self.engine.iterator(Family.META)
        it.seek(b"")
        while it.valid():
            if not it.key().startswith(b"raft/"):
                batch.delete(Family.META, it.key())
            it.next()
        for family in STATE_FAMILIES:
            it = incoming.engine.iterator(family)
            it.seek(b"")
            while it.valid():
                batch.put(family, it.key(), it.value())
                it.next()
        self.storage.apply_snapshot(snap, batch)
        self.applied_index = index
        self.applied_bytes_since_snapshot = 0
        self.applied_ts = max(self.applied_ts, incoming.applied_ts)
        self.clock.observe(self.applied_ts)
        batch.put(Family.META, APPLIED_KEY, APPLIED_VALUE.pack(self.applied_index, self.applied_ts))
        batch.put(Family.META, PEERS_KEY, msgpack.packb(self._address_book, use_bin_type=True))

    def _after_restore(self, snap: rmsg.Snapshot) -> None:
        self.group_id = (self.engine.get(Family.META, GROUP_ID_KEY) or b"").decode()
        self.transport.hello.update(group=self.group_id, fresh="")
        vectors.reset(self.engine)  # in-memory vector matrices rebuild from the new state
        invalidate = getattr(self._apply, "invalidate", None)
        if invalidate is not None:
            invalidate()  # the state machine's caches describe the state just replaced
        self._drop_staged(lambda index: index <= snap.metadata.index)
        self.snapshots_received += 1
        with contextlib.suppress(OSError):
            self._checkpoint(snap.metadata.index)
        log.info(
            "raft.snapshot_installed node=%s index=%d", self.config.node_id, snap.metadata.index
        )
