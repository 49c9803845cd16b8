"""Every limit and error, with the gRPC status (as the client's exception) and a clear
message; large requests and responses; malformed requests never take the node down."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import datastore
from google.cloud.datastore.helpers import GeoPoint
from google.cloud.datastore_v1.types import entity as entity_pb

from tests.harness import NodeProcess
from tests.integration.support import raw_api

MAX_ENTITY = 1_048_572


def commit(client: Any, *mutations: dict[str, Any], project: str | None = None) -> Any:
    return raw_api(client).commit(
        request={
            "project_id": client.project if project is None else project,
            "mode": 2,
            "mutations": list(mutations),
        }
    )


def raw_key(project: str, *path: tuple[str, int | str | None]) -> entity_pb.Key:
    """A key exactly as given: ids and names set even when zero or empty (proto-plus
    would drop those), None leaving the element incomplete."""
    key = entity_pb.Key.pb()()
    key.partition_id.project_id = project
    for kind, ident in path:
        element = key.path.add()
        element.kind = kind
        if isinstance(ident, int):
            element.id = ident
        elif isinstance(ident, str):
            element.name = ident
    return entity_pb.Key.wrap(key)


def entity_of_size(client: Any, name: str, size: int) -> Any:
    """An entity whose serialized protobuf is exactly `size` bytes (near the maximum, a
    second property keeps the blob under the 1,048,487-byte limit of one value)."""
    entity = datastore.Entity(client.key("Big", name), exclude_from_indexes=("blob", "pad"))
    if size > 1_048_000:
        entity["pad"] = b"p" * 1000

    def serialized_size() -> int:
        return len(datastore.helpers.entity_to_protobuf(entity)._pb.SerializeToString())

    entity["blob"] = b"x" * size
    entity["blob"] = b"x" * (2 * size - serialized_size())  # length varints: ~exact
    entity["blob"] = b"x" * (len(entity["blob"]) + size - serialized_size())
    assert serialized_size() == size
    return entity


# Sizes -----------------------------------------------------------------------------


def test_an_entity_of_exactly_the_maximum_size_is_accepted(client: Any) -> None:
    entity = entity_of_size(client, "max", MAX_ENTITY)
    client.put(entity)
    assert len(client.get(entity.key)["blob"]) == len(entity["blob"])


def test_an_entity_one_byte_over_the_maximum_size_is_invalid(client: Any) -> None:
    entity = entity_of_size(client, "over", MAX_ENTITY + 1)
    with pytest.raises(exceptions.InvalidArgument, match="1048572-byte limit"):
        client.put(entity)
    assert client.get(entity.key) is None


@pytest.mark.parametrize("kind", ["str", "bytes"])
def test_an_indexed_value_over_1500_bytes_is_invalid_unless_excluded(
    client: Any, kind: str
) -> None:
    def value(n: int) -> str | bytes:
        return "é" * (n // 2) if kind == "str" else b"b" * n

    ok = datastore.Entity(client.key("Idx", "1500"))
    ok["v"] = value(1500)
    client.put(ok)
    too_long = datastore.Entity(client.key("Idx", "1502"))
    too_long["v"] = value(1502)
    with pytest.raises(exceptions.InvalidArgument, match=r'"v" is longer than 1500 bytes'):
        client.put(too_long)
    excluded = datastore.Entity(client.key("Idx", "1502"), exclude_from_indexes=("v",))
    excluded["v"] = value(1502)
    client.put(excluded)
    assert client.get(excluded.key)["v"] == value(1502)


def test_an_indexed_long_string_inside_an_array_or_embedded_entity_is_invalid(
    client: Any,
) -> None:
    in_array = datastore.Entity(client.key("Idx", "array"))
    in_array["tags"] = ["short", "x" * 1501]
    with pytest.raises(exceptions.InvalidArgument, match="1500 bytes"):
        client.put(in_array)
    inner = datastore.Entity()
    inner["body"] = "x" * 1501
    in_entity = datastore.Entity(client.key("Idx", "entity"))
    in_entity["doc"] = inner
    with pytest.raises(exceptions.InvalidArgument, match="1500 bytes"):
        client.put(in_entity)


def test_a_5_mb_put_multi_is_accepted(client: Any) -> None:
    entities = [entity_of_size(client, f"five-{i}", 1_000_000) for i in range(5)]
    client.put_multi(entities)
    assert len(client.get_multi([e.key for e in entities])) == 5


def test_a_commit_over_10_mib_is_invalid_and_the_node_carries_on(client: Any) -> None:
    """10 MiB is Datastore's request limit; gRPC's own receive limit sits 1 MiB above it
    so that the node can answer with a clear message instead of a dropped stream."""
    entities = [entity_of_size(client, f"ten-{i}", 960_000) for i in range(11)]  # 10.56 MB
    with pytest.raises(exceptions.InvalidArgument, match="10485760 bytes"):
        client.put_multi(entities)
    assert client.get(entities[0].key) is None
    client.put_multi(entities[:10])  # 9.6 MB is fine


def test_a_request_over_the_grpc_limit_is_refused_and_the_node_carries_on(client: Any) -> None:
    entities = [entity_of_size(client, f"twelve-{i}", 1_000_000) for i in range(12)]
    with pytest.raises(exceptions.ResourceExhausted):
        client.put_multi(entities)
    assert client.get(entities[0].key) is None
    client.put(entity_of_size(client, "after", 1000))


def test_get_multi_of_large_entities_is_split_with_deferred_and_the_client_loops(
    client: Any,
) -> None:
    entities = [entity_of_size(client, f"nine-{i}", 900_000) for i in range(5)]
    client.put_multi(entities)
    keys = [e.key for e in entities]
    response = raw_api(client).lookup(
        request={"project_id": client.project, "keys": [k.to_protobuf() for k in keys]}
    )
    assert len(response.deferred) > 0  # over 4 MiB in one response would fail in Python
    assert len(response.found) + len(response.deferred) == 5
    got = client.get_multi(keys)
    assert {e.key for e in got} == set(keys)


def test_get_multi_of_near_maximum_entities_stays_under_the_clients_4_mib_limit(
    client: Any,
) -> None:
    """Four entities just under the maximum: a response holding all four would be a
    few bytes over the Python channel's 4 MiB receive limit."""
    entities = [entity_of_size(client, f"near-{i}", MAX_ENTITY - 32) for i in range(4)]
    client.put_multi(entities[:2])
    client.put_multi(entities[2:])
    got = client.get_multi([e.key for e in entities])
    assert len(got) == 4


# Counts ---------------------------------------------------------------------------


def test_1000_lookup_keys_are_accepted_and_1001_are_invalid(client: Any) -> None:
    keys = [client.key("Many", i + 1) for i in range(1001)]
    assert client.get_multi(keys[:1000]) == []
    with pytest.raises(exceptions.InvalidArgument, match="at most 1000 keys"):
        client.get_multi(keys)


def test_a_key_path_of_100_elements_is_accepted_and_101_is_invalid(client: Any) -> None:
    path_100: list[Any] = []
    for i in range(100):
        path_100 += ["Level", i + 1]
    client.put(datastore.Entity(client.key(*path_100)))
    assert client.get(client.key(*path_100)) is not None
    with pytest.raises(exceptions.InvalidArgument, match="more than 100 elements"):
        client.put(datastore.Entity(client.key(*path_100, "Level", 101)))


# Keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ((("__Reserved__", 1),), "reserved"),
        ((("Kind", "__reserved__"),), "reserved"),
        ((("", 1),), "kind is empty"),
        ((("Kind", ""),), "name is empty"),
        ((("Kind", 0),), "must not be 0"),
        ((("Parent", None), ("Kind", 1)), "incomplete"),
    ],
)
def test_invalid_keys_are_rejected_in_writes_and_lookups(
    client: Any, path: tuple[tuple[str, int | str | None], ...], message: str
) -> None:
    key = raw_key(client.project, *path)
    with pytest.raises(exceptions.InvalidArgument, match=message):
        commit(client, {"upsert": {"key": key}})
    with pytest.raises(exceptions.InvalidArgument, match=message):
        raw_api(client).lookup(request={"project_id": client.project, "keys": [key]})


def test_an_incomplete_key_is_invalid_in_a_lookup_and_an_update(client: Any) -> None:
    key = raw_key(client.project, ("Kind", None))
    with pytest.raises(exceptions.InvalidArgument, match="incomplete"):
        raw_api(client).lookup(request={"project_id": client.project, "keys": [key]})
    with pytest.raises(exceptions.InvalidArgument, match="incomplete"):
        commit(client, {"update": {"key": key}})


def test_a_key_of_another_project_or_database_is_invalid(client: Any) -> None:
    foreign = raw_key("someone-else", ("Kind", 1))
    with pytest.raises(exceptions.InvalidArgument, match="Mismatched project"):
        commit(client, {"upsert": {"key": foreign}})
    other_db = raw_key(client.project, ("Kind", 1))
    other_db.partition_id.database_id = "db9"
    with pytest.raises(exceptions.InvalidArgument, match="Mismatched database"):
        raw_api(client).lookup(request={"project_id": client.project, "keys": [other_db]})


def test_a_namespace_of_101_bytes_is_invalid(client: Any) -> None:
    ok = client.key("Kind", 1, namespace="n" * 100)
    client.put(datastore.Entity(ok))
    too_long = client.key("Kind", 1, namespace="n" * 101).to_protobuf()
    with pytest.raises(exceptions.InvalidArgument, match="namespace is longer than 100 bytes"):
        commit(client, {"upsert": {"key": too_long}})


def test_a_value_with_no_type_is_invalid(client: Any) -> None:
    """Stored, it would make the entity unreadable for the Python client."""
    entity = entity_pb.Entity(key=raw_key(client.project, ("Kind", "untyped")))
    entity.properties["v"] = entity_pb.Value()
    with pytest.raises(exceptions.InvalidArgument, match='"v" has a value with no type'):
        commit(client, {"upsert": entity})
    assert client.get(client.key("Kind", "untyped")) is None


def test_a_reserved_property_name_is_invalid(client: Any) -> None:
    entity = datastore.Entity(client.key("Kind", "prop"))
    entity["__key__"] = 1
    with pytest.raises(exceptions.InvalidArgument, match="reserved"):
        client.put(entity)


def test_an_empty_project_is_invalid_argument(client: Any) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="project_id"):
        raw_api(client).lookup(
            request={"project_id": "", "keys": [raw_key("", ("Kind", 1))]},
            metadata=[],
        )
    with pytest.raises(exceptions.InvalidArgument, match="project_id"):
        commit(client, {"upsert": {"key": raw_key("", ("Kind", 1))}}, project="")


# Values ---------------------------------------------------------------------------


def test_an_array_inside_an_array_is_invalid(client: Any) -> None:
    entity = entity_pb.Entity(key=raw_key(client.project, ("Kind", "nested")))
    inner = entity_pb.Value(array_value={"values": [entity_pb.Value(integer_value=1)]})
    entity.properties["a"] = entity_pb.Value(array_value={"values": [inner]})
    with pytest.raises(exceptions.InvalidArgument, match="array value inside an array"):
        commit(client, {"upsert": entity})


@pytest.mark.parametrize(
    ("lat", "lng", "message"),
    [(90.5, 0.0, "latitude"), (-91.0, 0.0, "latitude"), (0.0, 180.5, "longitude")],
)
def test_a_geopoint_out_of_range_is_invalid(
    client: Any, lat: float, lng: float, message: str
) -> None:
    entity = datastore.Entity(client.key("Geo", "bad"))
    entity["where"] = GeoPoint(lat, lng)
    with pytest.raises(exceptions.InvalidArgument, match=message):
        client.put(entity)


# Mutations ------------------------------------------------------------------------


def test_the_same_entity_twice_in_one_non_transactional_commit_is_invalid(client: Any) -> None:
    key = client.key("Twice", 1)
    with pytest.raises(exceptions.InvalidArgument, match="multiple mutations"):
        client.put_multi([datastore.Entity(key), datastore.Entity(key)])
    assert client.get(key) is None


def test_the_same_entity_twice_in_one_transaction_is_allowed_and_the_last_wins(
    client: Any,
) -> None:
    key = client.key("Twice", 2)
    with client.transaction() as txn:
        first = datastore.Entity(key)
        first["n"] = 1
        second = datastore.Entity(key)
        second["n"] = 2
        txn.put(first)
        txn.put(second)
    assert client.get(key)["n"] == 2


def test_inserting_an_existing_entity_is_already_exists(client: Any) -> None:
    key = client.key("Ins", "x").to_protobuf()
    commit(client, {"insert": {"key": key}})
    with pytest.raises(exceptions.AlreadyExists, match="already exists") as info:
        commit(client, {"insert": {"key": key}})
    assert isinstance(info.value, exceptions.Conflict)
    assert info.value.grpc_status_code == grpc.StatusCode.ALREADY_EXISTS


def test_a_failed_mutation_fails_the_whole_commit(client: Any) -> None:
    existing = client.key("Ins", "exists")
    client.put(datastore.Entity(existing))
    fresh = client.key("Ins", "fresh")
    with pytest.raises(exceptions.AlreadyExists):
        commit(
            client,
            {"upsert": {"key": fresh.to_protobuf()}},
            {"insert": {"key": existing.to_protobuf()}},
        )
    assert client.get(fresh) is None


def test_updating_a_missing_entity_is_not_found(client: Any) -> None:
    with pytest.raises(exceptions.NotFound, match="no entity to update"):
        commit(client, {"update": {"key": client.key("Upd", "missing").to_protobuf()}})
    client.put(datastore.Entity(client.key("Upd", "here")))
    commit(client, {"update": {"key": client.key("Upd", "here").to_protobuf()}})


def test_a_mutation_without_an_operation_is_invalid(client: Any) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="operation"):
        commit(client, {})


def test_a_base_version_mismatch_reports_a_conflict_without_writing(client: Any) -> None:
    key = client.key("Base", 1)
    client.put(datastore.Entity(key))
    entity = entity_pb.Entity(key=key.to_protobuf())
    entity.properties["n"] = entity_pb.Value(integer_value=7)
    response = commit(client, {"upsert": entity, "base_version": 1})
    assert response.mutation_results[0].conflict_detected is True
    assert "n" not in client.get(key)


# Malformed requests -----------------------------------------------------------------


def test_garbage_request_bytes_get_an_error_and_the_node_keeps_serving(
    node: NodeProcess, client: Any
) -> None:
    channel = grpc.insecure_channel(node.client_addr)
    try:
        for method in ("Commit", "Lookup", "BeginTransaction", "AllocateIds"):
            call = channel.unary_unary(f"/google.datastore.v1.Datastore/{method}")
            for payload in (b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", bytes(range(256))):
                with pytest.raises(grpc.RpcError) as info:
                    call(payload, timeout=10)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
                assert "not a valid" in (info.value.details() or "")
        unknown = channel.unary_unary("/google.datastore.v1.Datastore/NoSuchMethod")
        with pytest.raises(grpc.RpcError) as info:
            unknown(b"", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        channel.close()
    client.put(datastore.Entity(client.key("Alive", 1)))
    assert client.get(client.key("Alive", 1)) is not None
    assert node.proc is not None and node.proc.poll() is None
