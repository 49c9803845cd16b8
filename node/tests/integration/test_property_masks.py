"""Property masks through the API: `LookupRequest.property_mask` and
`RunQueryRequest.property_mask` return only the named properties (dotted paths into
embedded entities), `Mutation.property_mask` updates only the named ones. Raw GAPIC
requests: the official Python client does not expose masks. On one node and on a
three-replica group, where every replica's own copy must answer the same."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions

from tests.harness import Cluster
from tests.integration.support import datastore_client, raw_api

REPLICATION_WAIT_S = 15.0
EVENTUAL = {"read_consistency": 2}  # this replica's own copy


def key(project: str, name: str) -> dict[str, Any]:
    return {"partition_id": {"project_id": project}, "path": [{"kind": "User", "name": name}]}


def user(project: str, name: str, age: int, city: str, zip_code: str) -> dict[str, Any]:
    return {
        "key": key(project, name),
        "properties": {
            "name": {"string_value": name},
            "age": {"integer_value": age},
            "addr": {
                "entity_value": {
                    "properties": {
                        "city": {"string_value": city},
                        "zip": {"string_value": zip_code},
                        "geo": {"entity_value": {"properties": {"lat": {"double_value": 1.5}}}},
                    }
                }
            },
            "tags": {"array_value": {"values": [{"string_value": "a"}, {"string_value": "b"}]}},
            "a.b": {"string_value": "dotted name"},
        },
    }


def seed(api: Any, project: str) -> None:
    api.commit(
        request={
            "project_id": project,
            "mode": 2,
            "mutations": [
                {"upsert": user(project, "ann", 31, "Oslo", "0150")},
                {"upsert": user(project, "bob", 19, "Bergen", "5003")},
                {"upsert": user(project, "cid", 45, "Tromsø", "9008")},
            ],
        }
    )


def shape(entity: Any) -> dict[str, Any]:
    """An entity's properties as plain Python (embedded entities as dicts)."""
    out: dict[str, Any] = {}
    for name, value in entity.properties.items():
        which = value._pb.WhichOneof("value_type")
        if which == "entity_value":
            out[name] = shape(value.entity_value)
        elif which == "array_value":
            out[name] = [v.string_value for v in value.array_value.values]
        else:
            out[name] = getattr(value, which)
    return out


def lookup(api: Any, project: str, names: list[str], paths: list[str], **extra: Any) -> Any:
    return api.lookup(
        request={
            "project_id": project,
            "keys": [key(project, n) for n in names],
            "property_mask": {"paths": paths},
            **extra,
        }
    )


def query(api: Any, project: str, paths: list[str], **extra: Any) -> list[tuple[str, Any]]:
    """Users older than 20 by age, masked: the filter and order see whole entities."""
    q = {
        "kind": [{"name": "User"}],
        "filter": {
            "property_filter": {
                "property": {"name": "age"},
                "op": 3,  # GREATER_THAN
                "value": {"integer_value": 20},
            }
        },
        "order": [{"property": {"name": "age"}, "direction": 2}],
    }
    response = api.run_query(
        request={"project_id": project, "query": q, "property_mask": {"paths": paths}, **extra}
    )
    return [(er.entity.key.path[0].name, shape(er.entity)) for er in response.batch.entity_results]


def test_lookup_returns_only_the_masked_properties(client: Any, project: str) -> None:
    api = raw_api(client)
    seed(api, project)
    response = lookup(api, project, ["ann", "nobody"], ["name", "addr.city", "addr.geo.lat"])
    assert len(response.found) == 1 and len(response.missing) == 1
    entity = response.found[0].entity
    assert entity.key.path[0].name == "ann"  # the key always stays
    assert shape(entity) == {"name": "ann", "addr": {"city": "Oslo", "geo": {"lat": 1.5}}}
    assert response.found[0].version > 0
    # A backslash escapes a dot inside a name; a path through a non-entity names nothing.
    escaped = lookup(api, project, ["ann"], ["a\\.b", "name.first", "tags"])
    assert shape(escaped.found[0].entity) == {"a.b": "dotted name", "tags": ["a", "b"]}
    # `__key__` alone: the key and no properties; an empty mask likewise.
    for paths in (["__key__"], []):
        bare = lookup(api, project, ["ann"], paths).found[0].entity
        assert bare.key.path[0].name == "ann" and shape(bare) == {}
    # Without a mask, everything.
    whole = api.lookup(request={"project_id": project, "keys": [key(project, "ann")]})
    assert set(shape(whole.found[0].entity)) == {"name", "age", "addr", "tags", "a.b"}


def test_run_query_filters_whole_entities_and_returns_masked_ones(
    client: Any, project: str
) -> None:
    api = raw_api(client)
    seed(api, project)
    got = query(api, project, ["addr.zip"])
    assert got == [("cid", {"addr": {"zip": "9008"}}), ("ann", {"addr": {"zip": "0150"}})]
    gql = api.run_query(
        request={
            "project_id": project,
            "gql_query": {
                "query_string": "SELECT * FROM User WHERE age < 20",
                "allow_literals": True,
            },
            "property_mask": {"paths": ["name"]},
        }
    )
    assert [shape(er.entity) for er in gql.batch.entity_results] == [{"name": "bob"}]
    # Inside a transaction too.
    txn = api.begin_transaction(request={"project_id": project}).transaction
    in_txn = query(api, project, ["age"], read_options={"transaction": txn})
    assert in_txn == [("cid", {"age": 45}), ("ann", {"age": 31})]
    api.rollback(request={"project_id": project, "transaction": txn})


def test_bad_masks_are_invalid_argument(client: Any, project: str) -> None:
    api = raw_api(client)
    seed(api, project)
    for paths, message in (
        (["addr..city"], "empty property name"),
        ([""], "must not be empty"),
        (["__secret__"], "reserved"),
        (["a\\"], "unfinished escape"),
    ):
        with pytest.raises(exceptions.InvalidArgument, match=message):
            lookup(api, project, ["ann"], paths)
        with pytest.raises(exceptions.InvalidArgument, match=message):
            query(api, project, paths)
    projection = {"kind": [{"name": "User"}], "projection": [{"property": {"name": "age"}}]}
    with pytest.raises(exceptions.InvalidArgument, match="projection"):
        api.run_query(
            request={
                "project_id": project,
                "query": projection,
                "property_mask": {"paths": ["age"]},
            }
        )


def test_a_write_mask_updates_one_embedded_property_and_keeps_the_rest(
    client: Any, project: str
) -> None:
    api = raw_api(client)
    seed(api, project)
    api.commit(
        request={
            "project_id": project,
            "mode": 2,
            "mutations": [
                {
                    "update": {
                        "key": key(project, "ann"),
                        "properties": {
                            "addr": {
                                "entity_value": {"properties": {"city": {"string_value": "Oslo S"}}}
                            },
                            "age": {"integer_value": 99},  # outside the mask: not written
                        },
                    },
                    "property_mask": {"paths": ["addr.city", "addr.geo"]},  # geo: deleted
                }
            ],
        }
    )
    entity = api.lookup(request={"project_id": project, "keys": [key(project, "ann")]})
    got = shape(entity.found[0].entity)
    assert got["addr"] == {"city": "Oslo S", "zip": "0150"}
    assert got["age"] == 31 and got["name"] == "ann"


def test_masks_read_the_same_on_every_replica(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, size=3)
    cluster.start()
    try:
        leader = cluster.leader()
        project = "masked"
        api = raw_api(datastore_client(leader.client_addr, project))
        seed(api, project)
        api.commit(
            request={
                "project_id": project,
                "mode": 2,
                "mutations": [
                    {
                        "upsert": {
                            "key": key(project, "bob"),
                            "properties": {
                                "addr": {
                                    "entity_value": {
                                        "properties": {"zip": {"string_value": "5004"}}
                                    }
                                }
                            },
                        },
                        "property_mask": {"paths": ["addr.zip"]},
                    }
                ],
            }
        )
        paths = ["name", "addr.zip", "addr.geo.lat"]
        want_lookup = [
            {"name": n, "addr": {"zip": z, "geo": {"lat": 1.5}}}
            for n, z in (("ann", "0150"), ("bob", "5004"), ("cid", "9008"))
        ]
        want_query = [
            ("cid", {"name": "cid", "addr": {"zip": "9008", "geo": {"lat": 1.5}}}),
            ("ann", {"name": "ann", "addr": {"zip": "0150", "geo": {"lat": 1.5}}}),
        ]
        for node in cluster.nodes:
            reader = raw_api(datastore_client(node.client_addr, project))
            deadline = time.monotonic() + REPLICATION_WAIT_S
            while True:
                found = lookup(
                    reader, project, ["ann", "bob", "cid"], paths, read_options=EVENTUAL
                ).found
                got = sorted((shape(er.entity) for er in found), key=lambda e: e["name"])
                rows = query(reader, project, paths, read_options=EVENTUAL)
                if (got, rows) == (want_lookup, want_query) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert got == want_lookup, node.node_id
            assert rows == want_query, node.node_id
            # A strong read through a follower (forwarded to the leader) masks alike.
            assert query(reader, project, paths) == want_query
    finally:
        cluster.stop()
