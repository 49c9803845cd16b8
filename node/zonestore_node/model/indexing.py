"""Entity validation and the index entries an entity contributes.

Owns the index key layout (in the `indexes` column family, before the version suffix):

    kind index       b"K" ++ partition ++ esc(kind) ++ path
    property index   b"P" ++ partition ++ esc(kind) ++ esc(property) ++ value ++ path

where `value` is `keycodec`'s index value encoding, and `path` the entity's key path.
Every indexed property value contributes one property-index entry: each array element
separately, embedded-entity sub-properties as "outer.inner". A descending scan reads the
same entries backwards (see query/), so there is no separate descending index.
"""

from __future__ import annotations

import math
from typing import Any

from google.cloud.datastore_v1.types import entity as entity_types

from zonestore_node.model import keys, limits
from zonestore_node.model.errors import invalid
from zonestore_node.storage import keycodec

EntityPb: Any = entity_types.Entity.pb()
ValuePb: Any = entity_types.Value.pb()

KIND_INDEX = b"K"
PROPERTY_INDEX = b"P"


def micros(timestamp: Any) -> int:
    return int(timestamp.seconds) * 1_000_000 + int(timestamp.nanos) // 1000


def encode_value(value: Any, project: str, database: str) -> bytes | None:
    """The index encoding of a scalar value (None for arrays and entities)."""
    which = value.WhichOneof("value_type")
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


def _check_value(name: str, value: Any, project: str, database: str, in_array: bool) -> None:
    which = value.WhichOneof("value_type")
    if which is None:
        # Clients cannot read such a value back (the Python client raises ValueError).
        raise invalid(f'Property "{name}" has a value with no type; use null_value for null.')
    if which == "array_value":
        if in_array:
            raise invalid(f'Property "{name}" contains an array value inside an array.')
        if value.exclude_from_indexes:
            raise invalid(
                f'Property "{name}": an array value cannot have exclude_from_indexes set; '
                "set it on the array's elements."
            )
        for element in value.array_value.values:
            _check_value(name, element, project, database, True)
    elif which == "entity_value":
        check_properties(value.entity_value, project, database, nested=True)
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
    if (
        which in ("string_value", "blob_value")
        and not value.exclude_from_indexes
        and len(value.string_value.encode() if which == "string_value" else value.blob_value)
        > limits.MAX_INDEXED_BYTES
    ):
        raise invalid(
            f'The value of property "{name}" is longer than {limits.MAX_INDEXED_BYTES} bytes; '
            "set exclude_from_indexes to store it unindexed."
        )


def check_properties(entity: Any, project: str, database: str, *, nested: bool = False) -> None:
    for name, value in entity.properties.items():
        keys.check_name(name, "property name")
        _check_value(name, value, project, database, False)
    if nested and entity.HasField("key"):
        keys.normalize_reference(entity.key, project, database, allow_incomplete=True)


def check_entity(entity: Any, project: str, database: str) -> None:
    """Validate a whole entity for writing (its key is validated by the caller)."""
    check_properties(entity, project, database)
    size = entity.ByteSize()
    if size > limits.MAX_ENTITY_BYTES:
        raise invalid(
            f"Entity {keys.path_of(entity.key)} is {size} bytes, over the "
            f"{limits.MAX_ENTITY_BYTES}-byte limit."
        )


def _collect(
    prefix: str, entity: Any, project: str, database: str, out: list[tuple[str, bytes]]
) -> None:
    for name, value in entity.properties.items():
        full = prefix + name
        which = value.WhichOneof("value_type")
        if which == "array_value":
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


def index_keys(entity: Any) -> set[bytes]:
    """Every index user key (before the version suffix) a validated entity contributes."""
    key = entity.key
    p = key.partition_id
    partition = keycodec.encode_partition(p.project_id, p.database_id, p.namespace_id)
    path = keys.path_of(key)
    kind = path[-1][0]
    encoded_path = keycodec.encode_path(path)
    escaped_kind = keycodec.escape(kind.encode())
    out = {KIND_INDEX + partition + escaped_kind + encoded_path}
    base = PROPERTY_INDEX + partition + escaped_kind
    prefixes: dict[str, bytes] = {}  # array elements share their property's prefix
    for name, value in index_values(entity):
        prefix = prefixes.get(name)
        if prefix is None:
            prefix = prefixes[name] = base + keycodec.escape(name.encode())
        out.add(prefix + value + encoded_path)
    return out
