"""The entity codec: every Datastore value type survives v1 -> EntityProto -> v1 with its
flags and meanings, and the bytes match what the Firestore emulator writes."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from google.cloud import datastore
from google.cloud.datastore import helpers
from hypothesis import given
from hypothesis import strategies as st

from zonestore_node.export import entities
from zonestore_node.export import onestore as o

PROJECT = "proj"
# One record of an export the Firestore emulator (datastore mode) wrote for
# Entity(key=Key("Thing", "named", namespace="ns1", project="demo"), v=1).
EMULATOR_RECORD = bytes.fromhex(
    "6a1e6a0464656d6f72100b12055468696e6722056e616d65640ca201036e7331"
    "72091a0176200"
    "02a02080182"
    "01100b12055468696e6722056e616d65640c"
)


def client() -> datastore.Client:
    return datastore.Client(project=PROJECT, credentials=None, _http=object())


def key(*path: Any, namespace: str | None = None) -> datastore.Key:
    return datastore.Key(*path, project=PROJECT, namespace=namespace)


def every_value_type() -> datastore.Entity:
    entity = datastore.Entity(
        key("Parent", "p", "Thing", 7, namespace="ns"),
        exclude_from_indexes=("big_blob", "text", "unindexed_list", "unindexed_entity"),
    )
    inner = datastore.Entity(key("Inner", "i1"), exclude_from_indexes=("hidden",))
    inner.update({"a": 1, "hidden": "not indexed", "deeper": {"x": [1, 2]}})
    keyless = datastore.Entity()
    keyless.update({"z": 2.5})
    entity.update(
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
            "old_timestamp": datetime.datetime(1, 1, 1, tzinfo=datetime.UTC),
            "geo": helpers.GeoPoint(-33.5, 151.25),
            "key": key("Other", "x", "Leaf", 99, namespace="elsewhere"),
            "entity": inner,
            "keyless": keyless,
            "array": [1, "two", 3.0, None, b"five", key("K", 1)],
            "empty_array": [],
            "unindexed_list": ["a", "b"],
            "unindexed_entity": keyless,
            "big_blob": b"\x01" * 1_000_000,
            "text": "long " * 10_000,
        }
    )
    return entity


def to_pb(entity: datastore.Entity) -> Any:
    return helpers.entity_to_protobuf(entity)._pb


def normalized(pb: Any) -> Any:
    """The same message with NaN compared by identity (NaN != NaN)."""
    copy = type(pb)()
    copy.CopyFrom(pb)
    for value in copy.properties.values():
        if (
            value.WhichOneof("value_type") == "double_value"
            and value.double_value != value.double_value
        ):
            value.string_value = "NaN"
    return copy


def test_every_value_type_round_trips_with_flags_and_meanings() -> None:
    original = to_pb(every_value_type())
    record = entities.encode(original)
    back = entities.decode(record, entities.Target(PROJECT))
    assert normalized(back) == normalized(original)
    # And through the official client's own view: values and the unindexed set.
    again = helpers.entity_from_protobuf(back)
    first = helpers.entity_from_protobuf(original)
    assert again.exclude_from_indexes == first.exclude_from_indexes
    assert again["entity"].exclude_from_indexes == {"hidden"}
    assert again["timestamp"] == first["timestamp"]


def test_the_v3_encoding_is_the_one_google_uses() -> None:
    proto = entities.to_entity_proto(to_pb(every_value_type()))
    by_name = {p.name.decode(): p for p in proto.property}
    raw = {p.name.decode(): p for p in proto.raw_property}
    assert proto.key.app == PROJECT.encode() and proto.key.name_space == b"ns"
    assert [e.type for e in proto.entity_group.element] == [b"Parent"]
    assert by_name["timestamp"].meaning == o.MEANING_GD_WHEN
    assert by_name["timestamp"].value.int64Value == 1577934245123456
    assert by_name["geo"].meaning == o.MEANING_GEORSS_POINT
    assert (by_name["geo"].value.pointvalue.x, by_name["geo"].value.pointvalue.y) == (-33.5, 151.25)
    assert by_name["bytes"].meaning == o.MEANING_BYTESTRING
    assert raw["big_blob"].meaning == o.MEANING_BLOB
    assert not raw["text"].HasField("meaning")
    assert by_name["entity"].meaning == o.MEANING_ENTITY_PROTO
    assert (
        by_name["empty_array"].meaning == o.MEANING_EMPTY_LIST
        and not by_name["empty_array"].multiple
    )
    assert sum(1 for p in proto.property if p.name == b"array") == 6
    assert all(p.multiple for p in proto.property if p.name == b"array")
    assert sum(1 for p in proto.raw_property if p.name == b"unindexed_list") == 2
    ref = by_name["key"].value.referencevalue
    assert ref.name_space == b"elsewhere"
    assert [(e.type, e.name or e.id) for e in ref.pathelement] == [(b"Other", b"x"), (b"Leaf", 99)]
    embedded = o.EntityProto.FromString(by_name["entity"].value.stringValue)
    assert [p.name for p in embedded.raw_property] == [b"hidden"]
    keyless = o.EntityProto.FromString(by_name["keyless"].value.stringValue)
    assert keyless.key.app == b"" and not keyless.key.path.element


def test_bytes_equal_the_firestore_emulators_record() -> None:
    decoded = entities.decode(EMULATOR_RECORD, entities.Target("demo"))
    assert decoded.key.partition_id.namespace_id == "ns1"
    assert decoded.properties["v"].integer_value == 1
    assert entities.encode(decoded) == EMULATOR_RECORD


def test_import_moves_the_exports_keys_to_the_target_project() -> None:
    original = to_pb(every_value_type())
    record = entities.encode(original)
    back = entities.decode(record, entities.Target("other-project", "db2", PROJECT))
    assert back.key.partition_id.project_id == "other-project"
    assert back.key.partition_id.database_id == "db2"
    assert back.properties["key"].key_value.partition_id.project_id == "other-project"
    assert back.properties["key"].key_value.partition_id.namespace_id == "elsewhere"


def test_app_engine_app_ids_name_their_project() -> None:
    assert entities.project_of_app("s~my-app") == "my-app"
    assert entities.project_of_app("e~my-app") == "my-app"
    assert entities.project_of_app("plain") == "plain"


def test_meanings_and_legacy_values_survive() -> None:
    pb = to_pb(datastore.Entity(key("K", 1)))
    pb.properties["rated"].integer_value = 50
    pb.properties["rated"].meaning = 13  # GD_RATING
    pb.properties["zipped"].blob_value = b"x"
    pb.properties["zipped"].meaning = 22  # ZLIB
    pb.properties["zipped"].exclude_from_indexes = True
    pb.properties["point"].geo_point_value.latitude = 1.0
    pb.properties["point"].meaning = 23  # a point without GEORSS_POINT
    user = pb.properties["user"]
    user.meaning = 20
    user.entity_value.properties["email"].string_value = "a@example.com"
    user.entity_value.properties["email"].exclude_from_indexes = True
    user.entity_value.properties["auth_domain"].string_value = "example.com"
    user.entity_value.properties["auth_domain"].exclude_from_indexes = True
    back = entities.decode(entities.encode(pb), entities.Target(PROJECT))
    assert back == pb


def test_a_record_that_is_not_an_entity_is_refused() -> None:
    with pytest.raises(entities.ConversionError):
        entities.decode(o.EntityProto().SerializeToString(), entities.Target(PROJECT))


names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=50),
    st.binary(max_size=50),
    st.datetimes(timezones=st.just(datetime.UTC)).map(
        lambda d: d.replace(microsecond=d.microsecond)
    ),
)


@given(
    st.dictionaries(
        names.filter(lambda n: not n.startswith("__")),
        st.one_of(scalars, st.lists(scalars, max_size=4)),
        max_size=8,
    ),
    st.sets(names, max_size=3),
)
def test_generated_entities_round_trip(props: dict[str, Any], unindexed: set[str]) -> None:
    entity = datastore.Entity(key("Gen", "g"), exclude_from_indexes=tuple(unindexed & set(props)))
    entity.update(props)
    original = to_pb(entity)
    assert entities.decode(entities.encode(original), entities.Target(PROJECT)) == original
