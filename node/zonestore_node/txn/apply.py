"""Applying a commit command to MVCC storage: the deterministic state machine.

Given the same store state and the same command, every replica produces the same batch
and the same result: no clock, no randomness, no I/O but reads of the store. Validation
of a transaction's read set happens here, in log order, so a conflict is decided
identically everywhere.

Entity payload layout (entities column family): uint64be(create_ts) ++ Entity bytes;
an empty payload is a tombstone (mvcc.TOMBSTONE).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from zonestore_node.model import indexing
from zonestore_node.model.errors import Code
from zonestore_node.storage import mvcc
from zonestore_node.storage.engine import Family, WriteBatch
from zonestore_node.txn import ids
from zonestore_node.txn.command import CommitCommand, Op

_U64 = struct.Struct(">Q")
INDEX_LIVE = b"\x01"


def entity_payload(create_ts: int, entity: bytes) -> bytes:
    return _U64.pack(create_ts) + entity


def split_payload(payload: bytes) -> tuple[int, bytes]:
    """(create_ts, Entity bytes) of a live entity payload."""
    return int(_U64.unpack_from(payload)[0]), payload[8:]


@dataclass(frozen=True, slots=True)
class WriteResult:
    version: int
    create_ts: int  # 0 when the entity does not exist after the write
    update_ts: int
    conflict_detected: bool = False


@dataclass(slots=True)
class ApplyResult:
    commit_ts: int
    error: Code | None = None
    message: str = ""
    writes: list[WriteResult] = field(default_factory=list)
    index_updates: int = 0


def _index_keys(entity_bytes: bytes) -> set[bytes]:
    entity = indexing.EntityPb.FromString(entity_bytes)
    return indexing.index_keys(entity)


class IndexKeyCache:
    """Index keys of recently written entity versions, by (encoded key, commit_ts).

    An overwrite needs the index keys of the version it replaces; recomputing them
    means parsing and walking the old entity. A version's index keys never change, so
    remembering them is pure memoization: results stay deterministic.
    """

    def __init__(self, capacity: int = 20_000) -> None:
        self._capacity = capacity
        self._entries: dict[tuple[bytes, int], set[bytes]] = {}

    def get(self, encoded: bytes, commit_ts: int, payload: bytes) -> set[bytes]:
        cached = self._entries.get((encoded, commit_ts))
        if cached is None:
            cached = _index_keys(split_payload(payload)[1])
        return cached

    def put(self, encoded: bytes, commit_ts: int, index: set[bytes]) -> None:
        if len(self._entries) >= self._capacity:
            self._entries.clear()  # crude but bounded: the next overwrites recompute
        self._entries[(encoded, commit_ts)] = index


class Applier:
    """`apply` with an index-key cache: what a replica's state machine calls."""

    def __init__(self) -> None:
        self.cache = IndexKeyCache()

    def __call__(self, store: mvcc.Store, command: CommitCommand, batch: WriteBatch) -> ApplyResult:
        return apply(store, command, batch, self.cache)


def apply(
    store: mvcc.Store,
    command: CommitCommand,
    batch: WriteBatch,
    cache: IndexKeyCache | None = None,
) -> ApplyResult:
    """Evaluate `command` against the store and add its effect to `batch`.

    On an error the command writes nothing but the id high-water mark (ids it carried
    may have been handed out), and the result names the error.
    """
    commit_ts = command.commit_ts
    result = ApplyResult(commit_ts)
    if command.id_high_water > ids.stored_high_water(store.engine):
        # Applied even when the commit itself fails: the ids may have been handed out.
        batch.put(Family.META, ids.HWM_KEY, ids.encode_high_water(command.id_high_water))
    if command.read_ts is not None:
        conflict = _validate(store, command)
        if conflict:
            result.error, result.message = Code.ABORTED, conflict
            return result

    # Pending state of the keys this command touches: encoded -> payload (b"" = deleted).
    overlay: dict[bytes, bytes] = {}
    overlay_index: dict[bytes, set[bytes]] = {}
    index_puts: dict[bytes, bytes] = {}
    entity_puts: list[tuple[bytes, bytes]] = []

    for write in command.writes:
        current_payload: bytes | None
        old_index: set[bytes] | None = None
        if write.encoded in overlay:
            current_payload = overlay[write.encoded]
            old_index = overlay_index.get(write.encoded)
        else:
            newest = store.newest(Family.ENTITIES, write.encoded)
            current_payload = newest.payload if newest else None
            current_ts = newest.commit_ts if newest else 0
            if newest is not None and newest.payload and cache is not None:
                old_index = cache.get(write.encoded, newest.commit_ts, newest.payload)
        exists = bool(current_payload)
        if write.encoded in overlay:
            current_ts = commit_ts if exists else 0
        elif not exists:
            current_ts = 0

        if write.base_version is not None and write.base_version != current_ts:
            result.writes.append(WriteResult(current_ts, 0, 0, conflict_detected=True))
            continue
        if write.op is Op.INSERT and exists:
            return ApplyResult(commit_ts, Code.ALREADY_EXISTS, "entity already exists")
        if write.op is Op.UPDATE and not exists:
            return ApplyResult(commit_ts, Code.NOT_FOUND, "no entity to update")

        if old_index is None:
            old_index = _index_keys(split_payload(current_payload)[1]) if current_payload else set()
        if write.op is Op.DELETE:
            new_payload = mvcc.TOMBSTONE
            new_index: set[bytes] = set()
            create_ts = 0
        else:
            create_ts = split_payload(current_payload)[0] if current_payload else commit_ts
            new_payload = entity_payload(create_ts, write.entity)
            new_index = _index_keys(write.entity)
        if exists or write.op is not Op.DELETE:
            entity_puts.append((write.encoded, new_payload))
        overlay[write.encoded] = new_payload
        overlay_index[write.encoded] = new_index
        for key in old_index - new_index:
            index_puts[key] = mvcc.TOMBSTONE
        for key in new_index - old_index:
            index_puts[key] = INDEX_LIVE
        result.writes.append(WriteResult(commit_ts, create_ts, commit_ts))

    for encoded, payload in entity_puts:
        store.put_version(batch, Family.ENTITIES, encoded, commit_ts, payload)
        if cache is not None and payload:
            cache.put(encoded, commit_ts, overlay_index[encoded])
    for key, marker in index_puts.items():
        store.put_version(batch, Family.INDEXES, key, commit_ts, marker)
    result.index_updates = len(index_puts)
    return result


def _validate(store: mvcc.Store, command: CommitCommand) -> str:
    read_ts = command.read_ts
    assert read_ts is not None
    for encoded in command.read_keys:
        newest = store.newest(Family.ENTITIES, encoded)
        if newest is not None and newest.commit_ts > read_ts:
            return "transaction aborted: an entity it read was changed by a concurrent commit"
    for r in command.read_ranges:
        if store.written_after(Family.INDEXES, r.lo, r.hi, read_ts):
            return "transaction aborted: a query it ran would now return different results"
    return ""


def decode_entity(payload: bytes) -> tuple[int, Any]:
    create_ts, raw = split_payload(payload)
    return create_ts, indexing.EntityPb.FromString(raw)
