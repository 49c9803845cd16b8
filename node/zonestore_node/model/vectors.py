"""Vector values and their index entries; the log of vector index changes per engine.

A vector value is what the clients write for a `Vector`: an array value with
`meaning` 31 whose elements are all doubles, 1 to 2,048 of them (production's maximum
dimension). zonestore keeps entries for every vector value of a top-level property, like
a built-in index, in an index keyspace of its own. A query may only search an index that
is declared (model.indexing: a CompositeDefinition with one vector column, from index.yaml
or created on demand under --auto-index; query.executor checks): the declaration gates
queries, not maintenance, so declaring one needs no backfill (see the README):

    V ++ partition ++ escaped kind ++ escaped property ++ uint16be(dimension)
      ++ encoded key path ++ the vector as `dimension` big-endian float64s

The vector sits in the key, so an entity's vector entries are a pure function of the
entity like its other index keys: `txn.apply` diffs old and new keys (a changed vector
tombstones the old entry and writes the new one), versioned like every index entry,
identical on every replica. The (partition, kind, property, dimension) prefix is one
vector index: a query vector of dimension d searches only entries of dimension d, so an
entity whose vector has another dimension is not in that index and is never returned
(production: "only documents which contain vectors whose dimensionality match the
query_vector can be returned"). An array with meaning 31 holding anything but doubles,
or none, or more than 2,048, is not a vector: it is stored and indexed as a plain array.

The change log (`note`, `changes`): apply records the vector entries each command wrote,
in log order, so query/vectors.py can keep its in-memory matrices current without
rescanning RocksDB; `reset` (a snapshot installed underneath) makes it rebuild. It is a
cache of what RocksDB holds, never the source of truth.

Imports storage.keycodec only.
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.cloud.datastore_v1.types import entity as entity_types

from zonestore_node.storage import keycodec

VECTOR_INDEX = b"V"
MEANING_VECTOR = 31
MAX_DIMENSION = 2048
# A serialized Value carrying meaning 31: field 14, varint, 31. Entities without these
# bytes have no vector (a cheap test before parsing; a false positive only parses).
_MEANING_BYTES = b"\x70\x1f"
_DIM = struct.Struct(">H")
_EntityPb: Any = entity_types.Entity.pb()


def vector_of(value: Any) -> tuple[float, ...] | None:
    """The vector a `Value` holds, or None when it is not a vector value."""
    if value.meaning != MEANING_VECTOR or value.WhichOneof("value_type") != "array_value":
        return None
    elements = value.array_value.values
    if not 0 < len(elements) <= MAX_DIMENSION:
        return None
    out = []
    for element in elements:
        if element.WhichOneof("value_type") != "double_value":
            return None
        out.append(element.double_value)
    return tuple(out)


def group_prefix(partition: bytes, kind: str, name: str, dimension: int) -> bytes:
    """The key prefix of one vector index: (partition, kind, property, dimension)."""
    return (
        VECTOR_INDEX
        + partition
        + keycodec.escape_str(kind)
        + keycodec.escape_str(name)
        + _DIM.pack(dimension)
    )


def pack(vector: Iterable[float], dimension: int) -> bytes:
    return struct.pack(f">{dimension}d", *vector)


def split(key: bytes, prefix: bytes, dimension: int) -> tuple[bytes, bytes]:
    """(encoded path, packed vector) of an entry under `prefix`."""
    cut = len(key) - 8 * dimension
    return key[len(prefix) : cut], key[cut:]


def index_keys(entity: Any) -> set[bytes]:
    """The vector index entries of an entity (top-level vector properties)."""
    out: set[bytes] = set()
    partition: bytes | None = None
    path: bytes = b""
    kind = ""
    props = entity.properties
    for name in props:
        vector = vector_of(props[name])
        if vector is None:
            continue
        if partition is None:
            p = entity.key.partition_id
            partition = keycodec.encode_partition(p.project_id, p.database_id, p.namespace_id)
            elements = tuple(
                (e.kind, e.id if e.WhichOneof("id_type") == "id" else e.name)
                for e in entity.key.path
            )
            path = keycodec.encode_path(elements)
            kind = elements[-1][0]
        dim = len(vector)
        out.add(group_prefix(partition, kind, name, dim) + path + pack(vector, dim))
    return out


def index_keys_of(entity_bytes: bytes) -> set[bytes]:
    """`index_keys` of a serialized entity; parses only when it may hold a vector."""
    if _MEANING_BYTES not in entity_bytes:
        return set()
    return index_keys(_EntityPb.FromString(entity_bytes))


# The change log ---------------------------------------------------------------------

MAX_LOG_ENTRIES = 200_000


@dataclass(slots=True)
class ChangeLog:
    """Vector entries written by applied commands, oldest first (commit_ts ascending).
    `floor`: every change with commit_ts > floor is here (older ones were trimmed);
    `epoch` moves when the store changed underneath (snapshot install)."""

    commit_ts: list[int] = field(default_factory=list)
    entries: list[tuple[bytes, bool]] = field(default_factory=list)  # (key, live)
    floor: int = 0
    epoch: int = 0


_logs: weakref.WeakKeyDictionary[Any, ChangeLog] = weakref.WeakKeyDictionary()


def changes(engine: Any) -> ChangeLog:
    log = _logs.get(engine)
    if log is None:
        log = _logs[engine] = ChangeLog()
    return log


def note(engine: Any, commit_ts: int, index_puts: Mapping[bytes, bytes]) -> None:
    """Record the vector entries among one applied command's index writes (marker
    b"" = tombstone): tombstones first, so a replaced vector is removed, then added."""
    vector_keys = [k for k in index_puts if k[:1] == VECTOR_INDEX]
    if not vector_keys:
        return
    log = changes(engine)
    for live in (False, True):
        for key in vector_keys:
            if bool(index_puts[key]) == live:
                log.commit_ts.append(commit_ts)
                log.entries.append((key, live))
    if len(log.entries) > MAX_LOG_ENTRIES:
        half = len(log.entries) // 2
        log.floor = log.commit_ts[half - 1]
        # keep whole commits: drop every change up to and including `floor`
        while half < len(log.commit_ts) and log.commit_ts[half] == log.floor:
            half += 1
        del log.commit_ts[:half]
        del log.entries[:half]


def reset(engine: Any) -> None:
    """The store changed underneath (a snapshot was installed): rebuild from RocksDB."""
    log = changes(engine)
    log.commit_ts.clear()
    log.entries.clear()
    log.epoch += 1
