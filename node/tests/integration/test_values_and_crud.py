"""Every Value type round-trips through a real node; put/get/delete, single and multi,
missing keys, named databases and namespaces, through the official Python client."""

from __future__ import annotations

import datetime
import math
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import datastore
from google.cloud.datastore.helpers import GeoPoint

from tests.harness import NodeProcess
from tests.integration.support import datastore_client, raw_api

UTC = datetime.UTC


def roundtrip(client: Any, props: dict[str, Any], exclude: tuple[str, ...] = ()) -> Any:
    key = client.key("Values", "one")
    entity = datastore.Entity(key, exclude_from_indexes=exclude)
    entity.update(props)
    client.put(entity)
    got = client.get(key)
    assert got is not None
    return got


def test_null_bool_and_int64_bounds_round_trip(client: Any) -> None:
    props = {
        "null": None,
        "yes": True,
        "no": False,
        "zero": 0,
        "max": 2**63 - 1,
        "min": -(2**63),
        "neg": -42,
    }
    got = roundtrip(client, props)
    assert dict(got) == props
    assert got["yes"] is True and got["no"] is False
    assert got["null"] is None


def test_doubles_round_trip_including_infinities_nan_and_negative_zero(client: Any) -> None:
    props = {"pi": math.pi, "inf": math.inf, "ninf": -math.inf, "nan": math.nan, "nz": -0.0}
    got = roundtrip(client, props)
    assert got["pi"] == math.pi
    assert got["inf"] == math.inf and got["ninf"] == -math.inf
    assert math.isnan(got["nan"])
    assert got["nz"] == 0.0 and math.copysign(1.0, got["nz"]) == -1.0
    assert isinstance(got["pi"], float)


def test_timestamps_keep_microseconds_and_come_back_in_utc(client: Any) -> None:
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    local = datetime.datetime(2021, 6, 30, 23, 59, 59, 123456, tzinfo=plus_two)
    props = {
        "utc": datetime.datetime(2020, 2, 29, 12, 0, 0, 1, tzinfo=UTC),
        "local": local,
        "epoch": datetime.datetime(1970, 1, 1, tzinfo=UTC),
        "old": datetime.datetime(1, 1, 1, tzinfo=UTC),
        "late": datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    }
    got = roundtrip(client, props)
    for name, value in props.items():
        assert got[name] == value, name
        assert got[name].utcoffset() == datetime.timedelta(0)
    assert got["utc"].microsecond == 1
    assert got["local"].hour == 21  # 23:59 at +02:00 is 21:59 UTC


def test_strings_round_trip_unicode_and_empty(client: Any) -> None:
    props = {
        "empty": "",
        "ascii": "hello",
        "unicode": "zürich 東京 🚀 \u0000 nul inside",
        "rtl": "שלום",
    }
    got = roundtrip(client, props)
    assert dict(got) == props


def test_bytes_round_trip_including_zero_bytes(client: Any) -> None:
    props = {"blob": bytes(range(256)), "empty": b"", "zeros": b"\x00\x00\x00"}
    got = roundtrip(client, props)
    assert dict(got) == props
    assert isinstance(got["blob"], bytes)


def test_key_values_round_trip_with_ancestors_and_partitions(client: Any) -> None:
    parent = client.key("Parent", "p", "Child", 7)
    other_ns = client.key("Thing", 3, namespace="elsewhere")
    got = roundtrip(client, {"parent": parent, "other": other_ns, "keys": [parent, other_ns]})
    assert got["parent"] == parent
    assert got["parent"].flat_path == ("Parent", "p", "Child", 7)
    assert got["parent"].project == client.project
    assert got["other"].namespace == "elsewhere"
    assert got["other"] == other_ns
    assert got["keys"] == [parent, other_ns]


def test_key_values_may_point_into_another_project_or_database(client: Any) -> None:
    """As production and Google's emulator allow (only entity keys must match)."""
    foreign = datastore.Key("Thing", 1, project="elsewhere")
    other_db = datastore.Key("Thing", 2, project=client.project, database="db9")
    got = roundtrip(client, {"foreign": foreign, "other_db": other_db})
    assert got["foreign"].project == "elsewhere"
    assert got["foreign"].flat_path == ("Thing", 1)
    assert got["other_db"].database == "db9"


def test_timestamps_are_kept_to_the_microsecond(client: Any) -> None:
    from google.cloud.datastore_v1.types import entity as entity_pb

    key = client.key("Nanos", 1).to_protobuf()
    entity = entity_pb.Entity(key=key)
    entity.properties["t"] = entity_pb.Value(timestamp_value={"seconds": 5, "nanos": 123456789})
    raw_api(client).commit(
        request={"project_id": client.project, "mode": 2, "mutations": [{"upsert": entity}]}
    )
    response = raw_api(client).lookup(request={"project_id": client.project, "keys": [key]})
    stored = response.found[0].entity.properties["t"].timestamp_value
    assert stored.nanosecond == 123456000


def test_geopoints_round_trip_at_the_extremes(client: Any) -> None:
    props = {
        "paris": GeoPoint(48.8566, 2.3522),
        "north": GeoPoint(90.0, 180.0),
        "south": GeoPoint(-90.0, -180.0),
    }
    got = roundtrip(client, props)
    assert dict(got) == props


def test_arrays_round_trip_mixed_and_empty(client: Any) -> None:
    props = {
        "mixed": [1, "two", 3.0, None, True, b"six"],
        "empty": [],
        "ints": list(range(100)),
    }
    got = roundtrip(client, props)
    assert got["mixed"] == props["mixed"]
    assert got["ints"] == props["ints"]
    assert got["empty"] == []


def test_embedded_entities_round_trip_nested_in_arrays(client: Any) -> None:
    inner = datastore.Entity()
    inner.update({"a": 1, "deep": {"b": "c"}})
    keyed = datastore.Entity(client.key("Embedded", "e"))
    keyed["x"] = 1.5
    got = roundtrip(client, {"inner": inner, "list": [inner, keyed], "dict": {"z": [1, 2]}})
    assert got["inner"]["a"] == 1
    assert got["inner"]["deep"]["b"] == "c"
    assert got["list"][1]["x"] == 1.5
    assert got["list"][1].key == client.key("Embedded", "e")
    assert got["dict"]["z"] == [1, 2]


def test_exclude_from_indexes_is_preserved(client: Any) -> None:
    got = roundtrip(client, {"text": "x" * 10, "tags": ["a", "b"], "n": 1}, ("text", "tags"))
    assert got.exclude_from_indexes == {"text", "tags"}


def test_large_unindexed_text_and_blob_round_trip(client: Any) -> None:
    text = "é" * 400_000  # 800 KB of UTF-8
    blob = bytes(range(256)) * 512
    got = roundtrip(client, {"text": text, "blob": blob}, ("text", "blob"))
    assert got["text"] == text
    assert got["blob"] == blob


def test_long_string_in_an_embedded_entity_needs_its_own_exclusion(client: Any) -> None:
    """As production and Google's emulator do: excluding the embedded entity does not
    lift the 1,500-byte limit of its sub-properties (googleapis/google-cloud-node#1916);
    excluding the sub-property itself does."""
    inner = datastore.Entity()
    inner["body"] = "y" * 5000
    with pytest.raises(exceptions.InvalidArgument, match='"body" is longer than 1500 bytes'):
        roundtrip(client, {"doc": inner}, ("doc",))
    inner = datastore.Entity(exclude_from_indexes=("body",))
    inner["body"] = "y" * 5000
    got = roundtrip(client, {"doc": inner}, ("doc",))
    assert got["doc"]["body"] == "y" * 5000


def test_values_written_raw_come_back_byte_identical(client: Any) -> None:
    """meaning, entity keys inside values and every oneof survive untouched."""
    from google.cloud.datastore_v1.types import entity as entity_pb

    key = client.key("Raw", 1).to_protobuf()
    entity = entity_pb.Entity(key=key)
    entity.properties["m"] = entity_pb.Value(integer_value=5, meaning=15)
    entity.properties["u"] = entity_pb.Value(string_value="x", exclude_from_indexes=True)
    raw_api(client).commit(
        request={
            "project_id": client.project,
            "mode": 2,  # NON_TRANSACTIONAL
            "mutations": [{"upsert": entity}],
        }
    )
    response = raw_api(client).lookup(request={"project_id": client.project, "keys": [key]})
    assert len(response.found) == 1
    assert response.found[0].entity == entity


# CRUD -----------------------------------------------------------------------


def test_put_get_update_and_delete_one_entity(client: Any) -> None:
    key = client.key("Task", "t1")
    entity = datastore.Entity(key)
    entity.update({"done": False, "n": 1})
    client.put(entity)
    assert client.get(key) == {"done": False, "n": 1}
    entity["done"] = True
    client.put(entity)
    assert client.get(key) == {"done": True, "n": 1}
    client.delete(key)
    assert client.get(key) is None


def test_put_replaces_the_whole_entity(client: Any) -> None:
    key = client.key("Task", "replace")
    first = datastore.Entity(key)
    first.update({"a": 1, "b": 2})
    client.put(first)
    second = datastore.Entity(key)
    second["c"] = 3
    client.put(second)
    assert dict(client.get(key)) == {"c": 3}


def test_put_multi_and_get_multi_return_every_entity(client: Any) -> None:
    entities = []
    for i in range(50):
        entity = datastore.Entity(client.key("Item", i + 1))
        entity["i"] = i
        entities.append(entity)
    client.put_multi(entities)
    keys = [e.key for e in entities]
    got = client.get_multi(keys)
    assert sorted(e["i"] for e in got) == list(range(50))
    assert {e.key for e in got} == set(keys)


def test_get_multi_reports_missing_keys(client: Any) -> None:
    present = datastore.Entity(client.key("Item", "here"))
    present["x"] = 1
    client.put(present)
    missing: list[Any] = []
    got = client.get_multi(
        [client.key("Item", "here"), client.key("Item", "gone"), client.key("Other", 9)],
        missing=missing,
    )
    assert [e.key for e in got] == [client.key("Item", "here")]
    assert {m.key for m in missing} == {client.key("Item", "gone"), client.key("Other", 9)}
    assert all(m.key.project == client.project for m in missing)


def test_get_of_a_never_written_key_returns_none(client: Any) -> None:
    assert client.get(client.key("Nothing", "here")) is None


def test_delete_multi_removes_every_entity_and_deleting_twice_is_fine(client: Any) -> None:
    keys = [client.key("Del", i) for i in range(1, 11)]
    client.put_multi([datastore.Entity(k) for k in keys])
    assert len(client.get_multi(keys)) == 10
    client.delete_multi(keys[:5])
    assert {e.key for e in client.get_multi(keys)} == set(keys[5:])
    client.delete_multi(keys)
    client.delete_multi(keys)
    assert client.get_multi(keys) == []


def test_entities_with_ancestor_paths_are_distinct_from_their_parents(client: Any) -> None:
    parent = datastore.Entity(client.key("Org", "acme"))
    parent["name"] = "Acme"
    child = datastore.Entity(client.key("Org", "acme", "User", "ann"))
    child["name"] = "Ann"
    client.put_multi([parent, child])
    assert client.get(client.key("Org", "acme"))["name"] == "Acme"
    assert client.get(client.key("Org", "acme", "User", "ann"))["name"] == "Ann"
    assert client.get(client.key("User", "ann")) is None


def test_namespaces_are_isolated(node: NodeProcess, project: str) -> None:
    a = datastore_client(node.client_addr, project, namespace="a")
    b = datastore_client(node.client_addr, project, namespace="b")
    default = datastore_client(node.client_addr, project)
    ea = datastore.Entity(a.key("K", "same"))
    ea["ns"] = "a"
    a.put(ea)
    assert b.get(b.key("K", "same")) is None
    assert default.get(default.key("K", "same")) is None
    got = a.get(a.key("K", "same"))
    assert got["ns"] == "a"
    assert got.key.namespace == "a"


def test_named_database_is_isolated_from_the_default_one(node: NodeProcess, project: str) -> None:
    db2 = datastore_client(node.client_addr, project, database="db2")
    default = datastore_client(node.client_addr, project)
    entity = datastore.Entity(db2.key("K", "x"))
    entity["where"] = "db2"
    db2.put(entity)
    assert default.get(default.key("K", "x")) is None
    got = db2.get(db2.key("K", "x"))
    assert got["where"] == "db2"
    assert got.key.database == "db2"
    # A fetched entity can be written back in the named database (its key says db2).
    got["again"] = True
    db2.put(got)
    assert db2.get(db2.key("K", "x"))["again"] is True
    db2.delete(got.key)
    assert db2.get(db2.key("K", "x")) is None


def test_projects_are_isolated(node: NodeProcess, project: str) -> None:
    mine = datastore_client(node.client_addr, project)
    theirs = datastore_client(node.client_addr, project + "-other")
    mine.put(datastore.Entity(mine.key("K", 1)))
    assert theirs.get(theirs.key("K", 1)) is None


@pytest.mark.parametrize("database", ["", "db2"])
def test_lookup_keys_come_back_with_the_request_partition(
    node: NodeProcess, project: str, database: str
) -> None:
    client = datastore_client(node.client_addr, project, database=database or None)
    key_pb = client.key("K", "p").to_protobuf()
    request: dict[str, Any] = {"project_id": project, "keys": [key_pb]}
    if database:
        request["database_id"] = database
    key_pb.partition_id.project_id = ""  # as the Node client sends it
    key_pb.partition_id.database_id = ""
    response = raw_api(client).lookup(request=request)
    returned = response.missing[0].entity.key.partition_id
    assert returned.project_id == project
    assert returned.database_id == database


def test_eventually_consistent_reads_see_acknowledged_writes_on_a_single_node(
    client: Any,
) -> None:
    key = client.key("Eventual", 1)
    entity = datastore.Entity(key)
    entity["n"] = 1
    client.put(entity)
    assert client.get(key, eventual=True)["n"] == 1
    assert [e["n"] for e in client.get_multi([key], eventual=True)] == [1]
