"""Entity validation and the index entries an entity contributes.

Owns the index key layout (in the `indexes` column family, before the version suffix):

    kind index       b"K" ++ partition ++ esc(kind) ++ path
    property index   b"P" ++ partition ++ esc(kind) ++ esc(property) ++ value ++ path
    composite index  b"C" ++ partition ++ uint32be(index_id) ++ [ancestor]
                        ++ column_1 ++ ... ++ column_n ++ path

where `value` is `keycodec`'s index value encoding, and `path` the entity's key path.
Every indexed property value contributes one property-index entry: each array element
separately, embedded-entity sub-properties as "outer.inner". A descending scan reads the
same entries backwards (see query/), so there is no separate descending index.

Composite indexes (Datastore's index.yaml: a kind, `ancestor`, ordered properties each
ASC or DESC) are defined at run time; their registry lives in the META family (written
only by applying a CreateIndexCommand, so every replica holds the same one). A column is
the property's value encoding, bitwise inverted (`invert`) for DESC: encodings are
prefix-free, so concatenation stays unambiguous and order reverses. An entity has one
entry per combination of its columns' values (array elements "explode": the product of
the element counts), and none when it lacks a column's property. An ancestor index adds
`encode_path(a)` for every ancestor `a` of the entity, itself included, so a
HAS_ANCESTOR(a) query reads one contiguous range. An entity whose composite entries would
exceed MAX_COMPOSITE_ENTRIES (20,000), or whose entries' storage sizes would sum past
2 MiB (`composite_keys`), is refused (INVALID_ARGUMENT), as production refuses "too many
indexed properties".
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import yaml
from google.cloud.datastore_v1.types import entity as entity_types

from zonestore_node.model import keys, limits
from zonestore_node.model.errors import invalid
from zonestore_node.storage import keycodec
from zonestore_node.storage.engine import Engine, Family

EntityPb: Any = entity_types.Entity.pb()
ValuePb: Any = entity_types.Value.pb()

KIND_INDEX = b"K"
PROPERTY_INDEX = b"P"
COMPOSITE_INDEX = b"C"
MAX_COMPOSITE_ENTRIES = limits.MAX_COMPOSITE_ENTRIES
MAX_COMPOSITE_PROPERTIES = 100
MAX_VECTOR_DIMENSION = 2048  # production's maximum, as model.vectors.MAX_DIMENSION


def micros(timestamp: Any) -> int:
    return int(timestamp.seconds) * 1_000_000 + int(timestamp.nanos) // 1000


def encode_value(value: Any, project: str, database: str) -> bytes | None:
    """The index encoding of a scalar value (None for arrays and entities)."""
    return _encode(value.WhichOneof("value_type"), value, project, database)


def _encode(which: str | None, value: Any, project: str, database: str) -> bytes | None:
    if which == "string_value":
        return keycodec.value_string(value.string_value)
    if which == "integer_value":
        return keycodec.value_int(value.integer_value)
    if which == "boolean_value":
        return keycodec.value_bool(value.boolean_value)
    if which == "double_value":
        return keycodec.value_double(value.double_value)
    if which == "timestamp_value":
        return keycodec.value_timestamp(micros(value.timestamp_value))
    if which == "key_value":
        k = value.key_value
        p = k.partition_id
        return keycodec.value_key(
            p.project_id or project, p.database_id or database, p.namespace_id, keys.path_of(k)
        )
    if which == "blob_value":
        return keycodec.value_blob(value.blob_value)
    if which == "geo_point_value":
        g = value.geo_point_value
        return keycodec.value_geo(g.latitude, g.longitude)
    if which in ("null_value", None):
        return keycodec.value_null()
    return None


def _check_value(
    name: str,
    value: Any,
    project: str,
    database: str,
    in_array: bool,
    depth: int = 0,
    out: list[tuple[str, bytes]] | None = None,
    full: str = "",
) -> None:
    """Validate one value; with `out`, also collect its indexed values under the
    dotted name `full` (what `index_values` would give, in one walk with the checks)."""
    which = value.WhichOneof("value_type")
    if which is None:
        # Clients cannot read such a value back (the Python client raises ValueError).
        raise invalid(f'Property "{name}" has a value with no type; use null_value for null.')
    if which == "array_value":
        if in_array:
            raise invalid(f'Property "{name}" contains an array value inside an array.')
        # A vector (meaning 31, model/vectors.py) may be excluded as a whole, as the
        # clients write one; any other array is excluded element by element.
        if value.exclude_from_indexes and value.meaning != 31:
            raise invalid(
                f'Property "{name}": an array value cannot have exclude_from_indexes set; '
                "set it on the array's elements."
            )
        elements_out = None if value.exclude_from_indexes else out
        for element in value.array_value.values:
            _check_value(name, element, project, database, True, depth, elements_out, full)
        return
    elif which == "entity_value":
        if depth >= limits.MAX_ENTITY_DEPTH:
            raise invalid(
                f'Property "{name}" nests entity values more than '
                f"{limits.MAX_ENTITY_DEPTH} levels deep."
            )
        check_properties(
            value.entity_value,
            project,
            database,
            nested=True,
            depth=depth + 1,
            out=None if value.exclude_from_indexes else out,
            prefix=full + ".",
        )
        return
    elif which == "key_value":
        keys.normalize_reference(value.key_value, project, database)
    elif which == "geo_point_value":
        g = value.geo_point_value
        if not (-90.0 <= g.latitude <= 90.0) or math.isnan(g.latitude):
            raise invalid(f'Property "{name}": latitude {g.latitude} is outside [-90, 90].')
        if not (-180.0 <= g.longitude <= 180.0) or math.isnan(g.longitude):
            raise invalid(f'Property "{name}": longitude {g.longitude} is outside [-180, 180].')
    elif which == "timestamp_value":
        t = value.timestamp_value
        if not (-62135596800 <= t.seconds <= 253402300799) or not (0 <= t.nanos < 10**9):
            raise invalid(f'Property "{name}": timestamp is outside 0001-01-01..9999-12-31.')
        t.nanos -= t.nanos % 1000  # Datastore keeps microseconds (so does the index)
    if which in ("string_value", "blob_value"):
        size = len(value.string_value.encode() if which == "string_value" else value.blob_value)
        if not value.exclude_from_indexes and size > limits.MAX_INDEXED_BYTES:
            raise invalid(
                f'The value of property "{name}" is longer than {limits.MAX_INDEXED_BYTES} '
                "bytes; set exclude_from_indexes to store it unindexed."
            )
        if size > limits.MAX_UNINDEXED_VALUE_BYTES:
            raise invalid(
                f'The value of property "{name}" is {size} bytes, over the '
                f"{limits.MAX_UNINDEXED_VALUE_BYTES}-byte limit of an unindexed value."
            )
    if out is not None and not value.exclude_from_indexes:
        encoded = _encode(which, value, project, database)
        if encoded is not None:
            out.append((full, encoded))


def check_filter_value(name: str, value: Any) -> None:
    """A query filter's operand obeys the indexed-value limit: a longer string or blob
    can never be in an index, and production refuses it (INVALID_ARGUMENT) rather than
    answering with an empty result."""
    which = value.WhichOneof("value_type")
    if which == "string_value":
        size = len(value.string_value.encode())
    elif which == "blob_value":
        size = len(value.blob_value)
    else:
        return
    if size > limits.MAX_INDEXED_BYTES:
        raise invalid(
            f'The filter value on "{name}" is {size} bytes, longer than the '
            f"{limits.MAX_INDEXED_BYTES}-byte limit of an indexed value."
        )


def check_properties(
    entity: Any,
    project: str,
    database: str,
    *,
    nested: bool = False,
    depth: int = 0,
    out: list[tuple[str, bytes]] | None = None,
    prefix: str = "",
) -> None:
    props = entity.properties
    for name in props:  # cheaper than .items() on upb's map
        keys.check_label(name, "property name")
        _check_value(name, props[name], project, database, False, depth, out, prefix + name)
    if nested and entity.HasField("key"):
        keys.normalize_reference(entity.key, project, database, allow_incomplete=True)


def check_entity(
    entity: Any, project: str, database: str, out: list[tuple[str, bytes]] | None = None
) -> None:
    """Validate a whole entity for writing (its key is validated by the caller); with
    `out`, also collect its `index_values` there."""
    check_properties(entity, project, database, out=out)
    size = entity.ByteSize()
    if size > limits.MAX_ENTITY_BYTES:
        raise invalid(
            f"Entity {keys.path_of(entity.key)} is {size} bytes, over the "
            f"{limits.MAX_ENTITY_BYTES}-byte limit."
        )


def _collect(
    prefix: str, entity: Any, project: str, database: str, out: list[tuple[str, bytes]]
) -> None:
    props = entity.properties
    for name in props:
        value = props[name]
        full = prefix + name
        which = value.WhichOneof("value_type")
        if which == "array_value":
            if value.exclude_from_indexes:  # a vector excluded as a whole
                continue
            for element in value.array_value.values:
                _collect_one(full, element, project, database, out)
        else:
            _collect_one(full, value, project, database, out)


def _collect_one(
    name: str, value: Any, project: str, database: str, out: list[tuple[str, bytes]]
) -> None:
    if value.exclude_from_indexes:
        return
    if value.WhichOneof("value_type") == "entity_value":
        _collect(name + ".", value.entity_value, project, database, out)
        return
    encoded = encode_value(value, project, database)
    if encoded is not None:
        out.append((name, encoded))


def index_values(entity: Any) -> list[tuple[str, bytes]]:
    """(property name, encoded value) of every indexed value of a validated entity."""
    p = entity.key.partition_id
    out: list[tuple[str, bytes]] = []
    _collect("", entity, p.project_id, p.database_id, out)
    return out


def kind_prefix(partition: bytes, kind: str) -> bytes:
    return KIND_INDEX + partition + keycodec.escape(kind.encode())


def property_prefix(partition: bytes, kind: str, name: str) -> bytes:
    return (
        PROPERTY_INDEX + partition + keycodec.escape(kind.encode()) + keycodec.escape(name.encode())
    )


@dataclass(frozen=True, slots=True)
class EntityIndexing:
    """What an entity contributes to the indexes, before the composite registry is
    consulted: a pure function of the entity (`entity_indexing`). The leader computes
    it once while validating a write and hands it to its own apply with the command
    (`txn.command.Write.index_memo`); a follower recomputes it from the entity bytes."""

    partition: bytes
    path: tuple[keycodec.PathElement, ...]
    encoded_path: bytes
    builtin: frozenset[bytes]  # kind and single-property entries
    indexed: tuple[tuple[str, bytes], ...]  # (property name, encoded value)

    @property
    def encoded_key(self) -> bytes:
        return self.partition + self.encoded_path


def entity_indexing(
    entity: Any, indexed: Sequence[tuple[str, bytes]] | None = None
) -> EntityIndexing:
    """`indexed`: the entity's `index_values` when the caller has them already."""
    key = entity.key
    p = key.partition_id
    partition = keycodec.encode_partition(p.project_id, p.database_id, p.namespace_id)
    path = keys.path_of(key)
    encoded_path = keycodec.encode_path(path)
    escaped_kind = keycodec.escape_str(path[-1][0])
    base = PROPERTY_INDEX + partition + escaped_kind
    out = [KIND_INDEX + partition + escaped_kind + encoded_path]
    prefixes: dict[str, bytes] = {}  # array elements share their property's prefix
    if indexed is None:
        indexed = index_values(entity)
    for name, value in indexed:
        prefix = prefixes.get(name)
        if prefix is None:
            prefix = prefixes[name] = base + keycodec.escape_str(name)
        out.append(prefix + value + encoded_path)
    return EntityIndexing(partition, path, encoded_path, frozenset(out), tuple(indexed))


def indexing_keys(
    ei: EntityIndexing, registry: Registry | None = None, *, strict: bool = True
) -> set[bytes]:
    """`index_keys` from an entity's `EntityIndexing`."""
    composites = registry.for_kind(ei.path[-1][0]) if registry is not None else ()
    if not composites:
        return set(ei.builtin)
    grouped: dict[str, list[bytes]] = {}
    for name, value in ei.indexed:
        grouped.setdefault(name, []).append(value)
    out = composite_keys(ei.partition, ei.path, grouped, composites, strict=strict)
    out |= ei.builtin
    return out


def index_keys(entity: Any, registry: Registry | None = None, *, strict: bool = True) -> set[bytes]:
    """Every index user key (before the version suffix) a validated entity contributes,
    composite entries of `registry`'s indexes on its kind included.

    `strict`: refuse (INVALID_ARGUMENT) an entity over MAX_COMPOSITE_ENTRIES; otherwise
    (versions already stored, backfill) such an entity has no composite entries at all.
    """
    return indexing_keys(entity_indexing(entity), registry, strict=strict)


# Composite indexes ---------------------------------------------------------------

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_INVERT = bytes(range(255, -1, -1))
REGISTRY_PREFIX = b"composite_index/"  # META: ++ uint32be(index_id) -> encoded CompositeIndex
REGISTRY_GENERATION = b"composite_index_generation"  # META: uint64be commit_ts of last change
# META: uint32be, the highest index_id a dropped index had: ids are never given twice (a
# dropped index's entries in a partition no scan found must never be read as a new one's).
REGISTRY_LAST_ID = b"composite_index_last_id"
_REGISTRY_FORMAT = 1


def invert(raw: bytes) -> bytes:
    """`keycodec.invert`, by table (index maintenance inverts every DESC column)."""
    return raw.translate(_INVERT)


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    descending: bool = False
    # A vector index's one column (index.yaml `vectorConfig: {dimension: N, flat: {}}`):
    # the dimension of the vectors it holds; 0 for an ordinary (ASC/DESC) column.
    vector_dimension: int = 0


@dataclass(frozen=True, slots=True)
class CompositeDefinition:
    """What index.yaml declares: a kind, whether it is an ancestor index, its columns."""

    kind: str
    ancestor: bool
    columns: tuple[Column, ...]

    def yaml(self) -> str:
        """The index.yaml entry, as production suggests it in "no matching index found"."""
        lines = [f"- kind: {self.kind}"]
        if self.ancestor:
            lines.append("  ancestor: yes")
        lines.append("  properties:")
        for c in self.columns:
            lines.append(f"  - name: {c.name}")
            if c.descending:
                lines.append("    direction: desc")
            if c.vector_dimension:
                lines.append("    vectorConfig:")
                lines.append(f"      dimension: {c.vector_dimension}")
                lines.append("      flat: {}")
        return "\n".join(lines) + "\n"

    @property
    def vector(self) -> bool:
        """A vector index (find_nearest): no composite entries of its own (see
        `vector_definition`)."""
        return any(c.vector_dimension for c in self.columns)

    def pack(self) -> list[Any]:
        # A vector column packs its dimension as a third element; ordinary columns keep
        # the two-element form older nodes read (upgrade every replica before declaring
        # a vector index).
        return [
            self.kind,
            self.ancestor,
            [
                [c.name, c.descending, c.vector_dimension]
                if c.vector_dimension
                else [c.name, c.descending]
                for c in self.columns
            ],
        ]

    @staticmethod
    def unpack(fields: list[Any]) -> CompositeDefinition:
        kind, ancestor, columns = fields
        return CompositeDefinition(
            str(kind),
            bool(ancestor),
            tuple(Column(str(c[0]), bool(c[1]), int(c[2]) if len(c) > 2 else 0) for c in columns),
        )

    def check(self) -> None:
        keys.check_name(self.kind, "kind")
        if not self.columns:
            raise invalid(f"The composite index on {self.kind} needs at least one property.")
        if self.vector:
            column = self.columns[0]
            if len(self.columns) != 1 or self.ancestor or column.descending:
                raise invalid(
                    f"The vector index on {self.kind} must have exactly one property, the "
                    "vector one (no ancestor, no direction): zonestore's pre-filters run "
                    "through the ordinary indexes."
                )
            if not 0 < column.vector_dimension <= MAX_VECTOR_DIMENSION:
                raise invalid(
                    f"The vector index on {self.kind}.{column.name} needs a dimension "
                    f"between 1 and {MAX_VECTOR_DIMENSION}."
                )
            if "." in column.name:
                raise invalid(
                    f"The vector index on {self.kind} names {column.name}: zonestore "
                    "indexes vectors of top-level properties only."
                )
        if len(self.columns) > MAX_COMPOSITE_PROPERTIES:
            raise invalid(f"A composite index has at most {MAX_COMPOSITE_PROPERTIES} properties.")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise invalid(f"The composite index on {self.kind} names a property twice.")
        for name in names:
            if not name or name == "__key__":
                raise invalid(f'The composite index on {self.kind} has a bad property "{name}".')


@dataclass(frozen=True, slots=True)
class CompositeIndex:
    index_id: int
    definition: CompositeDefinition
    # The commit_ts of the command that created and backfilled it: a read at
    # read_ts >= ready_ts sees every entry; an older snapshot must not use the index.
    ready_ts: int

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(
            [_REGISTRY_FORMAT, self.index_id, self.definition.pack(), self.ready_ts],
            use_bin_type=True,
        )
        return packed

    @staticmethod
    def decode(raw: bytes) -> CompositeIndex:
        version, index_id, definition, ready_ts = msgpack.unpackb(raw, raw=False)
        if version != _REGISTRY_FORMAT:
            raise ValueError(f"unknown composite index record format {version}")
        return CompositeIndex(int(index_id), CompositeDefinition.unpack(definition), ready_ts)

    def prefix(self, partition: bytes) -> bytes:
        return COMPOSITE_INDEX + partition + _U32.pack(self.index_id)


@dataclass(frozen=True, slots=True)
class Registry:
    """Every composite index, as applied to this replica's store."""

    indexes: tuple[CompositeIndex, ...] = ()
    generation: bytes = b""
    last_dropped_id: int = 0  # ids up to it were given once: next_id() stays above
    _by_kind: dict[str, tuple[CompositeIndex, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        for index in self.indexes:
            kind = index.definition.kind
            self._by_kind[kind] = (*self._by_kind.get(kind, ()), index)

    def for_kind(self, kind: str) -> tuple[CompositeIndex, ...]:
        return self._by_kind.get(kind, ())

    def find(self, definition: CompositeDefinition) -> CompositeIndex | None:
        return next((i for i in self.for_kind(definition.kind) if i.definition == definition), None)

    def next_id(self) -> int:
        return max([self.last_dropped_id, *(i.index_id for i in self.indexes)]) + 1


def registry_generation(engine: Engine) -> bytes:
    return engine.get(Family.META, REGISTRY_GENERATION) or b""


def load_registry(engine: Engine) -> Registry:
    it = engine.iterator(Family.META, upper_bound=keycodec.prefix_end(REGISTRY_PREFIX))
    it.seek(REGISTRY_PREFIX)
    found: list[CompositeIndex] = []
    while it.valid():
        found.append(CompositeIndex.decode(it.value()))
        it.next()
    last = engine.get(Family.META, REGISTRY_LAST_ID)
    return Registry(tuple(found), registry_generation(engine), _U32.unpack(last)[0] if last else 0)


def registry_drop(
    registry: Registry, index: CompositeIndex, commit_ts: int
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The META key to delete and the META writes that unregister `index`."""
    last = max(registry.last_dropped_id, index.index_id)
    return REGISTRY_PREFIX + _U32.pack(index.index_id), [
        (REGISTRY_GENERATION, _U64.pack(commit_ts)),
        (REGISTRY_LAST_ID, _U32.pack(last)),
    ]


def composite_index_prefix(partition: bytes, index_id: int) -> bytes:
    """Where one composite index's entries in one partition begin (all of them share it)."""
    return COMPOSITE_INDEX + partition + _U32.pack(index_id)


def registry_puts(index: CompositeIndex) -> list[tuple[bytes, bytes]]:
    """The META writes that register `index` (and move the generation)."""
    return [
        (REGISTRY_PREFIX + _U32.pack(index.index_id), index.encode()),
        (REGISTRY_GENERATION, _U64.pack(index.ready_ts)),
    ]


def composite_keys(
    partition: bytes,
    path: Sequence[keycodec.PathElement],
    values: dict[str, list[bytes]],
    indexes: Iterable[CompositeIndex],
    *,
    strict: bool = True,
) -> set[bytes]:
    """The composite entries of one entity (`values`: property -> encoded values)."""
    encoded_path = keycodec.encode_path(path)
    total = 0
    total_bytes = 0
    key_bytes = 0
    plans: list[tuple[CompositeIndex, list[list[bytes]], list[bytes]]] = []
    for index in indexes:
        if index.definition.vector:
            continue  # its entries are model.vectors', kept for every vector value
        choices: list[list[bytes]] = []
        sizes: list[int] = []  # per column: the storage sizes of its distinct values
        for column in index.definition.columns:
            present = values.get(column.name)
            if not present:
                break
            unique = sorted(set(present))
            choices.append([invert(v) for v in unique] if column.descending else unique)
            sizes.append(sum(value_storage_size(v) for v in unique))
        else:
            ancestors = [b""]
            ancestor_bytes = 0
            if index.definition.ancestor:
                ancestors = [keycodec.encode_path(path[:i]) for i in range(1, len(path) + 1)]
                ancestor_bytes = sum(_path_size(path[:i]) for i in range(1, len(path) + 1))
            combos = 1
            for options in choices:
                combos *= len(options)
            count = len(ancestors) * combos
            total += count
            # Storage size of every entry (the storage-size page): the entity's key size,
            # its values' sizes, 32; in an ancestor index also the ancestor's path size
            # (zonestore's reading: the page does not break that case down). Summed in
            # closed form: a column's value appears in combos / len(column) entries.
            if not key_bytes:
                key_bytes = _path_size(path) + 16 + _namespace_size(partition)
            value_bytes = sum(
                size * (combos // len(options))
                for size, options in zip(sizes, choices, strict=True)
            )
            total_bytes += (
                count * (key_bytes + 32) + len(ancestors) * value_bytes + combos * ancestor_bytes
            )
            plans.append((index, choices, ancestors))
    if total > MAX_COMPOSITE_ENTRIES or total_bytes > limits.MAX_COMPOSITE_ENTRY_BYTES:
        if strict:
            if total > MAX_COMPOSITE_ENTRIES:
                raise invalid(
                    f"Too many indexed properties: entity {tuple(path)} would have {total} "
                    f"composite index entries; at most {MAX_COMPOSITE_ENTRIES} are allowed."
                )
            raise invalid(
                f"Too many indexed properties: entity {tuple(path)} would have composite "
                f"index entries of {total_bytes} bytes; at most "
                f"{limits.MAX_COMPOSITE_ENTRY_BYTES} are allowed."
            )
        return set()
    out: set[bytes] = set()
    for index, choices, ancestors in plans:
        prefix = index.prefix(partition)
        for combo in itertools.product(*choices):
            body = b"".join(combo) + encoded_path
            for ancestor in ancestors:
                out.add(prefix + ancestor + body)
    return out


def _path_size(path: Sequence[keycodec.PathElement]) -> int:
    """The storage size of a key path: string sizes of kinds and names, 8 per id."""
    size = 0
    for kind, ident in path:
        size += len(kind.encode()) + 1
        size += 8 if isinstance(ident, int) else len(ident.encode()) + 1
    return size


def _namespace_size(partition: bytes) -> int:
    pos = keycodec.unescape(partition, 0)[1]
    pos = keycodec.unescape(partition, pos)[1]
    namespace = keycodec.unescape(partition, pos)[0]
    return len(namespace) + 1 if namespace else 0


def value_storage_size(encoded: bytes) -> int:
    """The storage size (the storage-size page) of an indexed value, from its index
    encoding (or its bitwise inverse, a DESC column's): null and booleans 1, integers,
    timestamps and doubles 8, geo points 16, strings UTF-8 bytes + 1, blobs their
    bytes, keys their key size."""
    if encoded and encoded[0] >= 0x80:  # inverted (DESC): every tag is below 0x80
        encoded = invert(encoded)
    tag = encoded[0]
    if tag in (keycodec.TAG_INT, keycodec.TAG_DOUBLE):
        return 8
    if tag == keycodec.TAG_GEO:
        return 16
    if tag == keycodec.TAG_BYTES:
        raw, _ = keycodec.unescape(encoded, 1)
        return len(raw) + (1 if encoded[-1] == keycodec.SUB_STRING else 0)
    if tag == keycodec.TAG_KEY:
        _, _, namespace, path, _ = keycodec.decode_key(encoded, 1)
        return 16 + _path_size(path) + (len(namespace.encode()) + 1 if namespace else 0)
    return 1  # null, false, true


def entity_composite_keys(
    entity: Any, indexes: Iterable[CompositeIndex], *, strict: bool = True
) -> set[bytes]:
    """`composite_keys` of a validated entity (what a backfill writes)."""
    p = entity.key.partition_id
    partition = keycodec.encode_partition(p.project_id, p.database_id, p.namespace_id)
    grouped: dict[str, list[bytes]] = {}
    for name, value in index_values(entity):
        grouped.setdefault(name, []).append(value)
    return composite_keys(partition, keys.path_of(entity.key), grouped, indexes, strict=strict)


def _vector_dimension(prop: dict[str, Any]) -> int:
    """A property's `vectorConfig: {dimension: N, flat: {}}` (Firestore's shape for a
    vector field: `flat` is the only index type), or 0 when it has none."""
    config = prop.get("vectorConfig")
    if config is None:
        return 0
    if not isinstance(config, dict) or set(config) - {"dimension", "flat"}:
        raise invalid(f"index.yaml: vectorConfig is {{dimension: N, flat: {{}}}}, not {config!r}")
    if "flat" not in config or config["flat"] not in ({}, None):
        raise invalid("index.yaml: vectorConfig needs `flat: {}` (the only vector index type).")
    dimension = config.get("dimension")
    if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension <= 0:
        raise invalid(f"index.yaml: vectorConfig needs a positive integer dimension: {config!r}")
    if "direction" in prop:
        raise invalid(f"index.yaml: a vector property has no direction: {prop!r}")
    return dimension


def parse_index_yaml(text: str) -> list[CompositeDefinition]:
    """Datastore's index.yaml: `indexes: [{kind, ancestor: yes|no, properties: [{name,
    direction: asc|desc}]}]`; a vector index (find_nearest) is one property with
    `vectorConfig: {dimension: N, flat: {}}` instead of a direction.
    INVALID_ARGUMENT (DatastoreError) on anything else."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise invalid(f"index.yaml does not parse: {exc}") from exc
    if doc is None:
        return []
    if not isinstance(doc, dict) or not isinstance(doc.get("indexes", []), list):
        raise invalid("index.yaml must be a mapping with an `indexes` list.")
    out: list[CompositeDefinition] = []
    for entry in doc.get("indexes") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
            raise invalid(f"index.yaml: every index needs a kind: {entry!r}")
        ancestor = entry.get("ancestor", False)
        if isinstance(ancestor, str):  # "yes"/"no" are booleans in YAML 1.1 already
            ancestor = ancestor.lower() in ("yes", "true")
        columns = []
        for prop in entry.get("properties") or []:
            if not isinstance(prop, dict) or not isinstance(prop.get("name"), str):
                raise invalid(f"index.yaml: every property needs a name: {prop!r}")
            direction = str(prop.get("direction", "asc")).lower()
            if direction not in ("asc", "desc"):
                raise invalid(f"index.yaml: direction must be asc or desc, not {direction!r}")
            columns.append(Column(prop["name"], direction == "desc", _vector_dimension(prop)))
        definition = CompositeDefinition(entry["kind"], bool(ancestor), tuple(columns))
        definition.check()
        out.append(definition)
    return out
