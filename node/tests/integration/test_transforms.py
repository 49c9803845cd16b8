"""Property transforms through the API (raw GAPIC requests: the official Python client
does not expose them): results in order, atomic increments under concurrency, inside
transactions without aborts, the documented errors; and on a three-replica group, the
same transformed entities on every replica."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions

from tests.harness import Cluster
from tests.integration.support import datastore_client, raw_api

REQUEST_TIME = 1


def key(client: Any, name: str, kind: str = "Counter") -> Any:
    return client.key(kind, name).to_protobuf()


def commit(client: Any, *mutations: dict[str, Any], transaction: bytes = b"") -> Any:
    request: dict[str, Any] = {"project_id": client.project, "mutations": list(mutations)}
    if transaction:
        request.update(mode=1, transaction=transaction)
    else:
        request.update(mode=2)
    return raw_api(client).commit(request=request)


def upsert(client: Any, name: str, *transforms: dict[str, Any], **props: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {"key": key(client, name), "properties": props}
    return {"upsert": entity, "property_transforms": list(transforms)}


def inc(prop: str, value: int | float) -> dict[str, Any]:
    field = "integer_value" if isinstance(value, int) else "double_value"
    return {"property": prop, "increment": {field: value}}


def test_transforms_apply_after_the_write_and_report_results_in_order(client: Any) -> None:
    response = commit(
        client,
        upsert(
            client,
            "a",
            inc("n", 5),
            inc("n", 2.5),
            {"property": "hi", "maximum": {"integer_value": 9}},
            {"property": "at", "set_to_server_value": REQUEST_TIME},
            {"property": "tags", "append_missing_elements": {"values": [{"string_value": "x"}]}},
            n={"integer_value": 10},
        ),
    )
    results = response.mutation_results[0].transform_results
    assert [results[0].integer_value, results[1].double_value, results[2].integer_value] == [
        15,
        17.5,
        9,
    ]
    commit_ms = response.commit_time.timestamp_pb().ToMilliseconds()
    assert results[3].timestamp_value.timestamp_pb().ToMilliseconds() == commit_ms
    assert results[4]._pb.WhichOneof("value_type") == "null_value"
    got = client.get(client.key("Counter", "a"))
    assert got["n"] == 17.5 and got["hi"] == 9 and got["tags"] == ["x"]
    assert int(got["at"].timestamp() * 1000) == commit_ms


def test_concurrent_increments_never_lose_an_update(client: Any) -> None:
    commit(client, upsert(client, "hot", n={"integer_value": 0}))
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                mutation: dict[str, Any] = {"update": {"key": key(client, "hot")}}
                mutation["property_mask"] = {"paths": []}  # write nothing but the transform
                mutation["property_transforms"] = [inc("n", 1)]
                commit(client, mutation)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert client.get(client.key("Counter", "hot"))["n"] == 80


def test_two_transactions_incrementing_one_counter_both_commit(client: Any) -> None:
    """A transform never reads the transaction's snapshot: evaluated at commit, in log
    order, so it adds no read and conflicts with nothing."""
    commit(client, upsert(client, "txn", n={"integer_value": 1}))
    api = raw_api(client)
    first = api.begin_transaction(request={"project_id": client.project}).transaction
    second = api.begin_transaction(request={"project_id": client.project}).transaction
    masked: dict[str, list[str]] = {"paths": []}
    for txn, amount in ((first, 10), (second, 100)):
        commit(
            client,
            {
                "update": {"key": key(client, "txn")},
                "property_mask": masked,
                "property_transforms": [inc("n", amount)],
            },
            transaction=txn,
        )
    assert client.get(client.key("Counter", "txn"))["n"] == 111


def test_a_transaction_sees_its_own_writes_then_transforms_in_mutation_order(
    client: Any,
) -> None:
    txn = raw_api(client).begin_transaction(request={"project_id": client.project}).transaction
    response = commit(
        client,
        upsert(client, "order", inc("n", 1), n={"integer_value": 40}),
        upsert(client, "order", inc("n", 1)),  # a whole new entity, then +1
        {
            "update": {"key": key(client, "order")},
            "property_mask": {"paths": []},
            "property_transforms": [{"property": "n", "minimum": {"double_value": 0.5}}],
        },
        transaction=txn,
    )
    results = [r.transform_results[0] for r in response.mutation_results]
    assert [results[0].integer_value, results[1].integer_value, results[2].double_value] == [
        41,
        1,
        0.5,
    ]
    assert client.get(client.key("Counter", "order"))["n"] == 0.5


def test_a_transform_on_a_missing_entity_creates_it_or_is_not_found(client: Any) -> None:
    response = commit(client, upsert(client, "fresh", inc("n", 3)))
    assert response.mutation_results[0].transform_results[0].integer_value == 3
    assert client.get(client.key("Counter", "fresh"))["n"] == 3
    with pytest.raises(exceptions.NotFound):
        commit(
            client,
            {"update": {"key": key(client, "nobody")}, "property_transforms": [inc("n", 1)]},
        )


def test_transform_errors_are_invalid_argument(client: Any) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="delete"):
        commit(client, {"delete": key(client, "x"), "property_transforms": [inc("n", 1)]})
    with pytest.raises(exceptions.InvalidArgument, match="integer or double"):
        commit(
            client,
            upsert(client, "x", {"property": "n", "increment": {"string_value": "1"}}),
        )
    with pytest.raises(exceptions.InvalidArgument, match="at most 500"):
        commit(client, upsert(client, "x", *[inc(f"p{i}", 1) for i in range(501)]))
    response = commit(client, upsert(client, "x", *[inc(f"p{i}", 1) for i in range(500)]))
    assert len(response.mutation_results[0].transform_results) == 500
    # The outcome is validated too: an array union past the indexed-value limit fails
    # the commit and writes nothing.
    big = {"values": [{"string_value": "y" * 1501}]}
    with pytest.raises(exceptions.InvalidArgument, match="1500"):
        commit(client, upsert(client, "x", {"property": "tags", "append_missing_elements": big}))


# Replicated -------------------------------------------------------------------------------

REPLICATION_WAIT_S = 20.0


def eventual_get(client: Any, name: str, kind: str = "Counter") -> Any:
    response = raw_api(client).lookup(
        request={
            "project_id": client.project,
            "keys": [key(client, name, kind)],
            "read_options": {"read_consistency": 2},  # EVENTUAL: this replica's own copy
        }
    )
    return response.found[0].entity if response.found else None


def test_transforms_and_masks_give_the_same_entity_on_every_replica(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, size=3)
    cluster.start()
    try:
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes if n is not leader)
        writers = [datastore_client(n.client_addr, "replicated") for n in (leader, follower)]
        writes = 0
        for round_ in range(10):
            client = writers[round_ % 2]  # through a follower too (forwarded)
            commit(
                client,
                {
                    "upsert": {
                        "key": key(client, "c"),
                        "properties": {"note": {"string_value": f"r{round_}"}},
                    },
                    "property_mask": {"paths": ["note", "gone"]},
                    "property_transforms": [
                        inc("n", 1),
                        inc("f", 0.1),
                        {"property": "at", "set_to_server_value": REQUEST_TIME},
                        {
                            "property": "seen",
                            "append_missing_elements": {"values": [{"integer_value": round_ % 3}]},
                        },
                        {"property": "emb.max", "maximum": {"integer_value": round_}},
                    ],
                },
            )
            writes += 1
        want = eventual_get(writers[0], "c")
        assert want is not None and want.properties["n"].integer_value == writes
        assert [v.integer_value for v in want.properties["seen"].array_value.values] == [0, 1, 2]
        for node in cluster.nodes:
            reader = datastore_client(node.client_addr, "replicated")
            deadline = time.monotonic() + REPLICATION_WAIT_S
            got = eventual_get(reader, "c")
            while got != want and time.monotonic() < deadline:
                time.sleep(0.1)
                got = eventual_get(reader, "c")
            assert got == want, node.node_id
    finally:
        cluster.stop()
