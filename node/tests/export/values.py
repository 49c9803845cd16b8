"""Entities of every value type, and a comparison that is property by property and flag
by flag (exclude_from_indexes, at every level of embedded entities)."""

from __future__ import annotations

import datetime
import math
from typing import Any

from google.cloud import datastore
from google.cloud.datastore.helpers import GeoPoint


def every_value_type(
    client: datastore.Client, namespace: str | None = None
) -> list[datastore.Entity]:
    """A handful of entities covering every value type, ancestors and namespaces."""

    def key(*path: Any, ns: str | None = namespace) -> datastore.Key:
        return client.key(*path, namespace=ns)

    inner = datastore.Entity(key("Inner", "i1"), exclude_from_indexes=("hidden",))
    inner.update({"a": 1, "hidden": "not indexed", "deeper": {"x": [1, 2], "t": "deep"}})
    keyless = datastore.Entity()
    keyless.update({"z": 2.5, "list": ["a", None]})
    full = datastore.Entity(
        key("Parent", "p", "Thing", 7),
        exclude_from_indexes=("big_blob", "text", "unindexed_list", "unindexed_entity"),
    )
    full.update(
        {
            "null": None,
            "yes": True,
            "no": False,
            "int": 42,
            "negative": -(2**63),
            "max": 2**63 - 1,
            "double": 3.25,
            "nan": float("nan"),
            "inf": float("-inf"),
            "string": "héllo wörld ✓",
            "empty_string": "",
            "bytes": b"\x00\xff\x10",
            "timestamp": datetime.datetime(2020, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.UTC),
            "geo": GeoPoint(-33.5, 151.25),
            "key": key("Other", "x", "Leaf", 99),
            "key_elsewhere": key("Other", 5, ns="elsewhere"),
            "entity": inner,
            "keyless": keyless,
            "array": [1, "two", 3.0, None, b"five", key("K", 1), GeoPoint(1, 2)],
            "empty_array": [],
            "unindexed_list": ["a", "b"],
            "unindexed_entity": keyless,
            "big_blob": bytes(range(256)) * 3000,
            "text": "long " * 20_000,
        }
    )
    others = []
    for i, path in enumerate(
        [("Thing", "named"), ("Thing", 1, "Child", "c"), ("Root", 123456789012), ("Other", "x")]
    ):
        entity = datastore.Entity(key(*path))
        entity.update({"i": i, "label": f"e{i}"})
        others.append(entity)
    return [full, *others]


def normalize(value: Any) -> Any:
    if isinstance(value, datastore.Entity):
        key = normalize(value.key) if value.key is not None else None
        props = {name: normalize(v) for name, v in sorted(value.items())}
        return ("entity", key, props, sorted(value.exclude_from_indexes))
    if isinstance(value, dict):  # written as a plain dict: an entity without a key
        return ("entity", None, {n: normalize(v) for n, v in sorted(value.items())}, [])
    if isinstance(value, datastore.Key):
        return ("key", value.flat_path, value.namespace)
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).isoformat()
    if isinstance(value, GeoPoint):
        return ("geo", value.latitude, value.longitude)
    return (type(value).__name__, value)


def by_key(entities: list[datastore.Entity]) -> dict[Any, Any]:
    return {(e.key.namespace, e.key.flat_path): normalize(e) for e in entities}


def read_all(
    client: datastore.Client, namespaces: list[str | None], kinds: list[str]
) -> list[datastore.Entity]:
    found: list[datastore.Entity] = []
    for namespace in namespaces:
        for kind in kinds:
            found.extend(client.query(kind=kind, namespace=namespace).fetch())
    return found


def assert_same(got: list[datastore.Entity], expected: list[datastore.Entity]) -> None:
    """Equal entity by entity, property by property, flag by flag; a failure names them."""
    have, want = by_key(got), by_key(expected)
    assert sorted(have, key=repr) == sorted(want, key=repr), "different keys"
    for key, wanted in want.items():
        _, _, props, flags = have[key]
        _, _, wanted_props, wanted_flags = wanted
        for name in sorted(set(props) | set(wanted_props)):
            assert props.get(name) == wanted_props.get(name), (
                f"{key} property {name!r}: {props.get(name)!r} != {wanted_props.get(name)!r}"
            )
        assert flags == wanted_flags, f"{key} exclude_from_indexes"
