"""The commit command: what the leader evaluated a Commit into, ready to be logged.

A `CommitCommand` is the unit that goes through the (replicated) log. Everything
non-deterministic is captured in it before it is proposed: the commit timestamp, the
allocated ids (already inside the entities' keys), the snapshot the transaction read
at. Applying it (txn/apply.py) is then a pure function of the store and the command,
so every replica reaches the same state.

Wire format: msgpack of plain lists (never pickle), versioned by its first element,
which also says which command it is:
    1   CommitCommand  [1, commit_ts, writes, read_ts, read_keys, read_ranges,
                        transactional, id_high_water]; a write is [op, encoded, entity,
                        base_version]
    2   CommitCommand  as 1, a write being [op, encoded, entity, base_version,
                        fail_on_conflict, mask, transforms] (written only when a write
                        carries one of those: older commands keep format 1)
    16  CreateIndexCommand  [16, commit_ts, [kind, ancestor, [[name, descending], ...]]]
                        a vector index's one column is [name, false, dimension]
`decode` reads either; entries written before composite indexes (all format 1) read as
they always did. A node older than format 16 refuses that entry (upgrade every replica
before creating composite indexes); likewise format 2 (upgrade before clients send
property masks, transforms or FAIL conflict resolution).

Masks and transforms travel as the recipe, not the result: what they produce depends on
the entity as it stands when the command applies (txn/apply.py, transform.py), and the
recipe carries everything that needs (REQUEST_TIME is the command's commit_ts).

"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

from zonestore_node.model import indexing

FORMAT_VERSION = 1
FORMAT_WITH_RECIPES = 2
CREATE_INDEX_FORMAT = 16
DROP_INDEX_FORMAT = 17


class Op(IntEnum):
    INSERT = 1
    UPDATE = 2
    UPSERT = 3
    DELETE = 4


@dataclass(frozen=True, slots=True)
class Write:
    op: Op
    encoded: bytes  # the entity key (keycodec.encode_key)
    entity: bytes  # serialized Entity with its complete key; empty for DELETE
    # Optimistic precondition: conflict if the entity's current version differs (a
    # Mutation's base_version, or its update_time in microseconds: the same number here).
    base_version: int | None = None
    # On a conflict: fail the whole commit (FAIL) instead of keeping the server's entity.
    fail_on_conflict: bool = False
    # Mutation.property_mask paths (None: no mask, write the whole entity).
    mask: tuple[str, ...] | None = None
    # Mutation.property_transforms, each a serialized PropertyTransform, in order.
    transforms: tuple[bytes, ...] = ()
    # What the leader computed while validating the entity (never encoded: a replica
    # applying the logged command recomputes it from `entity`, with the same result).
    index_memo: indexing.EntityIndexing | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ReadRange:
    """A scanned range of the indexes column family: [lo, hi) of index user keys."""

    lo: bytes
    hi: bytes


@dataclass(frozen=True, slots=True)
class CommitCommand:
    commit_ts: int
    writes: tuple[Write, ...]
    # Serializable validation (transactions only): nothing read may have changed since.
    read_ts: int | None = None
    read_keys: tuple[bytes, ...] = ()
    read_ranges: tuple[ReadRange, ...] = ()
    # Non-transactional commits must not touch one entity twice; transactions may.
    transactional: bool = False
    # The highest id this command allocates or reserves (0: none); see txn/ids.py.
    id_high_water: int = 0

    def encode(self) -> bytes:
        recipes = any(w.fail_on_conflict or w.mask is not None or w.transforms for w in self.writes)
        writes = (
            [
                [
                    int(w.op),
                    w.encoded,
                    w.entity,
                    w.base_version,
                    w.fail_on_conflict,
                    None if w.mask is None else list(w.mask),
                    list(w.transforms),
                ]
                for w in self.writes
            ]
            if recipes
            else [[int(w.op), w.encoded, w.entity, w.base_version] for w in self.writes]
        )
        packed: bytes = msgpack.packb(
            [
                FORMAT_WITH_RECIPES if recipes else FORMAT_VERSION,
                self.commit_ts,
                writes,
                self.read_ts,
                list(self.read_keys),
                [[r.lo, r.hi] for r in self.read_ranges],
                self.transactional,
                self.id_high_water,
            ],
            use_bin_type=True,
        )
        return packed

    @staticmethod
    def decode(raw: bytes) -> CommitCommand:
        return CommitCommand.from_fields(msgpack.unpackb(raw, raw=False))

    @staticmethod
    def from_fields(fields: list[Any]) -> CommitCommand:
        version, commit_ts, writes, read_ts, read_keys, ranges, transactional, id_hwm = fields
        if version == FORMAT_VERSION:
            decoded = tuple(Write(Op(op), enc, ent, base) for op, enc, ent, base in writes)
        elif version == FORMAT_WITH_RECIPES:
            decoded = tuple(
                Write(
                    Op(op),
                    enc,
                    ent,
                    base,
                    bool(fail),
                    None if mask is None else tuple(mask),
                    tuple(transforms),
                )
                for op, enc, ent, base, fail, mask, transforms in writes
            )
        else:
            raise ValueError(f"unknown commit command format {version}")
        return CommitCommand(
            commit_ts=commit_ts,
            writes=decoded,
            read_ts=read_ts,
            read_keys=tuple(read_keys),
            read_ranges=tuple(ReadRange(lo, hi) for lo, hi in ranges),
            transactional=transactional,
            id_high_water=id_hwm,
        )


@dataclass(frozen=True, slots=True)
class CreateIndexCommand:
    """Register a composite index and backfill it from every entity of its kind, at
    `commit_ts` (txn/apply.py). Idempotent: an index already registered is left alone."""

    commit_ts: int
    definition: indexing.CompositeDefinition

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(
            [CREATE_INDEX_FORMAT, self.commit_ts, self.definition.pack()], use_bin_type=True
        )
        return packed


@dataclass(frozen=True, slots=True)
class DropIndexCommand:
    """Unregister composite index `index_id` and delete its entries, at `commit_ts`
    (txn/apply.py). Idempotent: an index not registered is left alone."""

    commit_ts: int
    index_id: int

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(
            [DROP_INDEX_FORMAT, self.commit_ts, self.index_id], use_bin_type=True
        )
        return packed


Command = CommitCommand | CreateIndexCommand | DropIndexCommand


def decode(raw: bytes) -> Command:
    """Any logged command, by its format tag."""
    fields = msgpack.unpackb(raw, raw=False)
    if fields and fields[0] == CREATE_INDEX_FORMAT:
        _, commit_ts, definition = fields
        return CreateIndexCommand(commit_ts, indexing.CompositeDefinition.unpack(definition))
    if fields and fields[0] == DROP_INDEX_FORMAT:
        _, commit_ts, index_id = fields
        return DropIndexCommand(commit_ts, index_id)
    return CommitCommand.from_fields(fields)
