"""Applying a commit command to MVCC storage: the deterministic state machine.

Given the same store state and the same command, every replica produces the same batch
and the same result: no clock, no randomness, no I/O but reads of the store. Validation
of a transaction's read set happens here, in log order, so a conflict is decided
identically everywhere.

Entity payload layout (entities column family): uint64be(create_ts) ++ Entity bytes;
an empty payload is a tombstone (mvcc.TOMBSTONE).

Preconditions (`Write.base_version`: a Mutation's base_version or update_time, both the
entity's commit_ts here): a mismatch keeps the stored entity and reports
conflict_detected (SERVER_VALUE), or fails the whole commit with FAILED_PRECONDITION
(FAIL; the status the Firestore emulator in Datastore mode answers).

Masks and transforms (txn/transform.py says why they are evaluated here, in log order):
the stored entity is the mutation's entity merged into the current one under the mask
(model/masks.py), then transformed; it is validated again (size, values) since the merge
and the transforms change it, and indexed from its final bytes (the leader's index memo
describes the mutation's entity, not this one).

Composite indexes: a CreateIndexCommand registers the index in META and backfills it in
the same batch, from the newest version of every entity of its kind at that point of the
log, all entries at the command's commit_ts (so a read at read_ts >= commit_ts sees a
complete index; the planner does not use it for older snapshots). Later commits keep it
up to date like every other index: the diff of old and new `indexing.index_keys`, which
include the composite entries of the registry as applied so far.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from zonestore_node.model import indexing, masks, vectors
from zonestore_node.model.errors import Code, DatastoreError
from zonestore_node.storage import keycodec, mvcc
from zonestore_node.storage.engine import Family, WriteBatch
from zonestore_node.txn import ids, transform
from zonestore_node.txn.command import (
    Command,
    CommitCommand,
    CreateIndexCommand,
    DropIndexCommand,
    Op,
    Write,
)

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
    transform_results: list[Any] = field(default_factory=list)  # Value messages, in order


@dataclass(slots=True)
class ApplyResult:
    commit_ts: int
    error: Code | None = None
    message: str = ""
    writes: list[WriteResult] = field(default_factory=list)
    index_updates: int = 0


LATEST = (1 << 63) - 1
_BACKFILL_CHUNK = 512


def _index_keys(
    entity_bytes: bytes, registry: indexing.Registry | None, *, strict: bool = False
) -> set[bytes]:
    entity = indexing.EntityPb.FromString(entity_bytes)
    # Vector entries (model/vectors.py) are index keys like the others: diffed the same way.
    return indexing.index_keys(entity, registry, strict=strict) | vectors.index_keys(entity)


class IndexKeyCache:
    """Index keys of recently written entity versions, by (encoded key, commit_ts), and
    the newest version of recently written keys.

    An overwrite needs the index keys of the version it replaces; recomputing them
    means parsing and walking the old entity. A version's index keys never change, so
    remembering them is pure memoization: results stay deterministic. They depend on
    the composite index registry too: the owner clears the cache when it changes.

    The newest version of a key this replica applied (its commit_ts and create_ts, or
    that it is a tombstone) spares the RocksDB seek an overwrite starts with, which
    was a fifth of a follower's apply time on an overwrite workload. It is exact as
    long as entities change only through `apply`: the owner clears it when a snapshot
    replaces the state. Garbage collection may drop a tombstone the cache still names,
    which `apply` reads the same way as no version at all.

    Index keys are kept as tuples and handed out as new sets: a tuple of bytes drops
    out of the garbage collector's lists after its first collection, a set never does,
    and 20,000 cached sets made every full collection walk them.
    """

    def __init__(self, capacity: int = 20_000) -> None:
        self._capacity = capacity
        self._entries: dict[tuple[bytes, int], tuple[bytes, ...]] = {}
        self._newest: dict[bytes, tuple[int, int]] = {}  # encoded -> (commit_ts, create_ts)

    def get(
        self, encoded: bytes, commit_ts: int, payload: bytes, registry: indexing.Registry | None
    ) -> set[bytes]:
        cached = self._entries.get((encoded, commit_ts))
        if cached is None:
            return _index_keys(split_payload(payload)[1], registry)
        return set(cached)

    def newest(self, encoded: bytes) -> tuple[int, bytes, set[bytes]] | None:
        """(commit_ts, a payload standing for the newest version, its index keys), when
        known without reading the store. The payload carries create_ts and is empty
        for a tombstone, but not the entity: only for writes that need no more of it."""
        found = self._newest.get(encoded)
        if found is None:
            return None
        commit_ts, create_ts = found
        if create_ts < 0:
            return commit_ts, mvcc.TOMBSTONE, set()
        index = self._entries.get((encoded, commit_ts))
        if index is None:
            return None
        return commit_ts, _U64.pack(create_ts), set(index)

    def clear(self) -> None:
        self._entries.clear()
        self._newest.clear()

    def put(self, encoded: bytes, commit_ts: int, index: set[bytes]) -> None:
        if len(self._entries) >= self._capacity:
            self._entries.clear()  # crude but bounded: the next overwrites recompute
        self._entries[(encoded, commit_ts)] = tuple(index)

    def wrote(self, encoded: bytes, commit_ts: int, payload: bytes) -> None:
        """`encoded` now has its newest version at `commit_ts` (payload as stored)."""
        if len(self._newest) >= self._capacity:
            self._newest.clear()
        self._newest[encoded] = (commit_ts, split_payload(payload)[0] if payload else -1)


class Applier:
    """`apply` with an index-key cache and the composite index registry: what a
    replica's state machine calls. The registry changes only by applying a
    Create/DropIndexCommand or installing a snapshot (`invalidate`): after either, its
    generation (one META key) is read again by the next command, and the registry
    reloaded when it moved."""

    def __init__(self) -> None:
        self.cache = IndexKeyCache()
        self._registry: indexing.Registry | None = None
        self._fresh = False  # whether _registry is known current without reading META

    def registry(self, store: mvcc.Store) -> indexing.Registry:
        if self._registry is not None and self._fresh:
            return self._registry
        generation = indexing.registry_generation(store.engine)
        if self._registry is None or self._registry.generation != generation:
            self._registry = indexing.load_registry(store.engine)
            self.cache.clear()
        self._fresh = True
        return self._registry

    def invalidate(self) -> None:
        """The state changed underneath (a snapshot installed): forget what was cached."""
        self._fresh = False
        self.cache.clear()

    def __call__(self, store: mvcc.Store, command: Command, batch: WriteBatch) -> ApplyResult:
        if isinstance(command, CreateIndexCommand):
            self._fresh = False  # the registry changes: re-read it (from the batch's write)
            return create_index(store, command, batch)
        if isinstance(command, DropIndexCommand):
            self._fresh = False
            return drop_index(store, command, batch)
        return apply(store, command, batch, self.cache, self.registry(store))


_HIGH_WATER = b"\x00id-high-water"  # stands for the id high-water mark in `touches`


def touches(command: Command) -> frozenset[bytes] | None:
    """What applying `command` reads from the store and writes, for the replica group's
    batching (replica/group.py): its entities (their versions and old index entries),
    and the id high-water mark when it carries one. None when it reads more: a
    transaction validating its reads, a composite index backfill (which also changes
    the registry every command reads)."""
    if not isinstance(command, CommitCommand) or command.read_ts is not None:
        return None
    keys = frozenset(w.encoded for w in command.writes)
    return keys | {_HIGH_WATER} if command.id_high_water else keys


def apply(
    store: mvcc.Store,
    command: CommitCommand,
    batch: WriteBatch,
    cache: IndexKeyCache | None = None,
    registry: indexing.Registry | None = None,
) -> ApplyResult:
    """Evaluate `command` against the store and add its effect to `batch`.

    `registry`: the composite indexes as applied so far (read from the store if None).

    On an error the command writes nothing but the id high-water mark (ids it carried
    may have been handed out), and the result names the error.
    """
    commit_ts = command.commit_ts
    result = ApplyResult(commit_ts)
    if command.id_high_water and command.id_high_water > ids.stored_high_water(store.engine):
        # Applied even when the commit itself fails: the ids may have been handed out.
        batch.put(Family.META, ids.HWM_KEY, ids.encode_high_water(command.id_high_water))
    if command.read_ts is not None:
        conflict = _validate(store, command)
        if conflict:
            result.error, result.message = Code.ABORTED, conflict
            return result

    if registry is None:
        registry = indexing.load_registry(store.engine)
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
            known = (
                cache.newest(write.encoded)
                if cache is not None and write.mask is None and not write.transforms
                else None
            )
            if known is not None:
                current_ts, current_payload, old_index = known
            else:
                newest = store.newest(Family.ENTITIES, write.encoded)
                current_payload = newest.payload if newest else None
                current_ts = newest.commit_ts if newest else 0
                if newest is not None and newest.payload and cache is not None:
                    old_index = cache.get(write.encoded, newest.commit_ts, newest.payload, registry)
        exists = bool(current_payload)
        if write.encoded in overlay:
            current_ts = commit_ts if exists else 0
        elif not exists:
            current_ts = 0

        if write.base_version is not None and write.base_version != current_ts:
            if write.fail_on_conflict:
                return ApplyResult(
                    commit_ts,
                    Code.FAILED_PRECONDITION,
                    f"the stored version ({current_ts}) does not match the required base "
                    f"version ({write.base_version})",
                )
            # Nothing changes: the stored entity's version and times (none if missing).
            stored_create = split_payload(current_payload)[0] if current_payload else 0
            result.writes.append(
                WriteResult(current_ts, stored_create, current_ts, conflict_detected=True)
            )
            continue
        if write.op is Op.INSERT and exists:
            return ApplyResult(commit_ts, Code.ALREADY_EXISTS, "entity already exists")
        if write.op is Op.UPDATE and not exists:
            return ApplyResult(commit_ts, Code.NOT_FOUND, "no entity to update")

        if old_index is None:
            old_index = (
                _index_keys(split_payload(current_payload)[1], registry)
                if current_payload
                else set()
            )
        if write.op is Op.DELETE:
            new_payload = mvcc.TOMBSTONE
            new_index: set[bytes] = set()
            create_ts = 0
        else:
            create_ts = split_payload(current_payload)[0] if current_payload else commit_ts
            entity_bytes = write.entity
            try:
                if write.mask is not None or write.transforms:
                    entity_bytes, transformed = _evaluate_recipe(write, current_payload, commit_ts)
                    new_index = _index_keys(entity_bytes, registry, strict=True)
                else:
                    transformed = []
                    new_index = (
                        indexing.indexing_keys(write.index_memo, registry, strict=True)
                        | vectors.index_keys_of(write.entity)
                        if write.index_memo is not None
                        else _index_keys(write.entity, registry, strict=True)
                    )
            except DatastoreError as exc:  # too many composite entries; a bad recipe
                return ApplyResult(commit_ts, exc.code, exc.message)
            new_payload = entity_payload(create_ts, entity_bytes)
        if exists or write.op is not Op.DELETE:
            entity_puts.append((write.encoded, new_payload))
        overlay[write.encoded] = new_payload
        overlay_index[write.encoded] = new_index
        for key in old_index - new_index:
            index_puts[key] = mvcc.TOMBSTONE
        for key in new_index - old_index:
            index_puts[key] = INDEX_LIVE
        result.writes.append(
            WriteResult(commit_ts, create_ts, commit_ts)
            if write.op is Op.DELETE
            else WriteResult(commit_ts, create_ts, commit_ts, transform_results=transformed)
        )

    for encoded, payload in entity_puts:
        store.put_version(batch, Family.ENTITIES, encoded, commit_ts, payload)
        if cache is not None:
            if payload:
                cache.put(encoded, commit_ts, overlay_index[encoded])
            cache.wrote(encoded, commit_ts, payload)
    for key, marker in index_puts.items():
        store.put_version(batch, Family.INDEXES, key, commit_ts, marker)
    vectors.note(store.engine, commit_ts, index_puts)  # query/vectors.py's matrices
    result.index_updates = len(index_puts)
    return result


def _evaluate_recipe(
    write: Write, current_payload: bytes | None, commit_ts: int
) -> tuple[bytes, list[Any]]:
    """The entity a masked and/or transformed write stores, and the transforms' results.
    DatastoreError (INVALID_ARGUMENT) when the outcome is not a valid entity."""
    entity = indexing.EntityPb.FromString(write.entity)
    if write.mask is not None:
        current = (
            indexing.EntityPb.FromString(split_payload(current_payload)[1])
            if current_payload
            else None
        )
        entity = masks.merge(current, entity, [masks.parse_path(p) for p in write.mask])
    results = transform.apply_all(entity, write.transforms, commit_ts)
    p = entity.key.partition_id
    indexing.check_entity(entity, p.project_id, p.database_id)
    return entity.SerializeToString(deterministic=True), results


def create_index(store: mvcc.Store, command: CreateIndexCommand, batch: WriteBatch) -> ApplyResult:
    """Register a composite index and backfill it at the command's commit_ts (a vector
    index is only registered).

    Deterministic: the entities are the newest versions in the store when the command
    is applied (log order), found through the kind index of every partition. The
    backfill is one batch, applied synchronously like every command.
    """
    commit_ts = command.commit_ts
    registry = indexing.load_registry(store.engine)
    if registry.find(command.definition) is not None:
        return ApplyResult(commit_ts)
    index = indexing.CompositeIndex(registry.next_id(), command.definition, commit_ts)
    entries = 0
    # A vector index only registers: its entries (model.vectors) exist for every vector
    # value already, so there is nothing to backfill.
    members = [] if command.definition.vector else _kind_members(store, command.definition.kind)
    for partition, paths in members:
        for start in range(0, len(paths), _BACKFILL_CHUNK):
            chunk = paths[start : start + _BACKFILL_CHUNK]
            versions = store.get_many(Family.ENTITIES, [partition + p for p in chunk], LATEST)
            for version in versions:
                if version is None:
                    continue
                entity = indexing.EntityPb.FromString(split_payload(version.payload)[1])
                for key in indexing.entity_composite_keys(entity, (index,), strict=False):
                    store.put_version(batch, Family.INDEXES, key, commit_ts, INDEX_LIVE)
                    entries += 1
    for key, value in indexing.registry_puts(index):
        batch.put(Family.META, key, value)
    return ApplyResult(commit_ts, index_updates=entries)


def drop_index(store: mvcc.Store, command: DropIndexCommand, batch: WriteBatch) -> ApplyResult:
    """Unregister a composite index and delete its entries (every version) in every
    partition that has composite entries: a skip scan of them, one seek per partition.

    Deterministic: the partitions are those in the store when the command is applied.
    No query uses the index once it is unregistered (at any read time), so its entries
    go at once, history included; its id is never given again.
    """
    commit_ts = command.commit_ts
    registry = indexing.load_registry(store.engine)
    index = next((i for i in registry.indexes if i.index_id == command.index_id), None)
    if index is None:
        return ApplyResult(commit_ts)
    end = keycodec.prefix_end(indexing.COMPOSITE_INDEX)
    position = indexing.COMPOSITE_INDEX
    while True:
        it = store.engine.iterator(Family.INDEXES, upper_bound=end)
        it.seek(position)
        if not it.valid():
            break
        raw = it.key()
        pos = 1
        for _ in range(3):  # project, database, namespace
            pos = keycodec.unescape(raw, pos)[1]
        partition = raw[1:pos]
        prefix = indexing.composite_index_prefix(partition, index.index_id)
        batch.delete_range(Family.INDEXES, prefix, keycodec.prefix_end(prefix))
        position = keycodec.prefix_end(indexing.COMPOSITE_INDEX + partition)
    key, puts = indexing.registry_drop(registry, index, commit_ts)
    batch.delete(Family.META, key)
    for key, value in puts:
        batch.put(Family.META, key, value)
    return ApplyResult(commit_ts)


def _kind_members(store: mvcc.Store, kind: str) -> list[tuple[bytes, list[bytes]]]:
    """(encoded partition, encoded paths) of every live entity of `kind`: a skip scan of
    the kind index, one seek per partition."""
    out: list[tuple[bytes, list[bytes]]] = []
    escaped = keycodec.escape(kind.encode())
    end = keycodec.prefix_end(indexing.KIND_INDEX)
    position = indexing.KIND_INDEX
    while True:
        it = store.engine.iterator(Family.INDEXES, upper_bound=end)
        it.seek(position)
        if not it.valid():
            return out
        raw = it.key()
        pos = 1
        for _ in range(3):  # project, database, namespace
            pos = keycodec.unescape(raw, pos)[1]
        partition = raw[1:pos]
        prefix = indexing.KIND_INDEX + partition + escaped
        cut = len(prefix)
        paths = [
            v.encoded[cut:]
            for v in store.scan(Family.INDEXES, prefix, keycodec.prefix_end(prefix), LATEST)
        ]
        if paths:
            out.append((partition, paths))
        position = keycodec.prefix_end(indexing.KIND_INDEX + partition)


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
