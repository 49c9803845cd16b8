"""find_nearest over raw gRPC (the official Python client has no Vector type: its own
GAPIC client with google.datastore.v1's message types, as the clients write a vector:
an array value with meaning 31) against real node processes: one node, and a group of
three whose replicas must each answer the same nearest neighbours from their own copy
of the vector index (eventual reads served locally), across updates and deletes."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud.datastore_v1.types import datastore as ds
from google.cloud.datastore_v1.types import entity as et
from google.cloud.datastore_v1.types import query as qt

from tests.harness import Cluster, NodeProcess
from tests.integration.support import datastore_client, raw_api

REPLICATION_WAIT_S = 15.0
EUCLIDEAN, COSINE, DOT_PRODUCT = 1, 2, 3


def vector(values: list[float]) -> et.Value:
    return et.Value(
        array_value=et.ArrayValue(values=[et.Value(double_value=v) for v in values]),
        meaning=31,
        exclude_from_indexes=True,
    )


def key(project: str, ident: int) -> et.Key:
    return et.Key(
        partition_id=et.PartitionId(project_id=project), path=[{"kind": "Doc", "id": ident}]
    )


def upsert(api: Any, project: str, docs: Mapping[int, list[float] | None]) -> None:
    mutations = []
    for ident, values in docs.items():
        if values is None:
            mutations.append(ds.Mutation(delete=key(project, ident)))
            continue
        props = {
            "emb": vector(values),
            "tag": et.Value(string_value="even" if ident % 2 == 0 else "odd"),
        }
        mutations.append(ds.Mutation(upsert=et.Entity(key=key(project, ident), properties=props)))
    api.commit(
        request={
            "project_id": project,
            "mode": ds.CommitRequest.Mode.NON_TRANSACTIONAL,
            "mutations": mutations,
        }
    )


def nearest(
    api: Any,
    project: str,
    q_vec: list[float],
    measure: int,
    limit: int,
    *,
    eventual: bool = False,
    tag: str | None = None,
    result_property: str = "",
    threshold: float | None = None,
) -> list[tuple[int, float]]:
    q = qt.Query(kind=[qt.KindExpression(name="Doc")])
    q.find_nearest = qt.FindNearest(
        vector_property=qt.PropertyReference(name="emb"),
        query_vector=vector(q_vec),
        distance_measure=measure,
        limit={"value": limit},
        distance_result_property=result_property or "dist",
    )
    if threshold is not None:
        q.find_nearest.distance_threshold = {"value": threshold}
    if tag is not None:
        q.filter = qt.Filter(
            property_filter=qt.PropertyFilter(
                property=qt.PropertyReference(name="tag"), op=5, value=et.Value(string_value=tag)
            )
        )
    request: dict[str, Any] = {"project_id": project, "query": q}
    if eventual:
        request["read_options"] = ds.ReadOptions(
            read_consistency=ds.ReadOptions.ReadConsistency.EVENTUAL
        )
    response = api.run_query(request=request)
    return [
        (er.entity.key.path[0].id, er.entity.properties[result_property or "dist"].double_value)
        for er in response.batch.entity_results
    ]


def oracle(docs: dict[int, list[float]], q_vec: list[float], measure: int, limit: int) -> list[int]:
    def dist(v: list[float]) -> float:
        dot = sum(a * b for a, b in zip(v, q_vec, strict=True))
        if measure == DOT_PRODUCT:
            return -dot
        if measure == EUCLIDEAN:
            return math.sqrt(sum((a - b) ** 2 for a, b in zip(v, q_vec, strict=True)))
        return 1 - dot / (math.sqrt(sum(a * a for a in v)) * math.sqrt(sum(b * b for b in q_vec)))

    return [i for _, i in sorted((dist(v), i) for i, v in docs.items())[:limit]]


def random_docs(rng: random.Random, ids: range, dim: int) -> dict[int, list[float]]:
    return {i: [rng.uniform(-1, 1) for _ in range(dim)] for i in ids}


def test_find_nearest_through_grpc_on_one_node(node: NodeProcess, project: str) -> None:
    api = raw_api(datastore_client(node.client_addr, project))
    rng = random.Random(11)
    docs = random_docs(rng, range(1, 301), 16)
    upsert(api, project, dict(docs))
    for measure in (EUCLIDEAN, COSINE, DOT_PRODUCT):
        q_vec = [rng.uniform(-1, 1) for _ in range(16)]
        got = nearest(api, project, q_vec, measure, 10)
        assert [i for i, _ in got] == oracle(docs, q_vec, measure, 10)
    q_vec = [0.0] * 16
    even = {i: v for i, v in docs.items() if i % 2 == 0}
    got = nearest(api, project, q_vec, EUCLIDEAN, 5, tag="even")
    assert [i for i, _ in got] == oracle(even, q_vec, EUCLIDEAN, 5)
    far = nearest(api, project, q_vec, EUCLIDEAN, 100, threshold=1.5)
    assert far and all(d <= 1.5 for _, d in far)


def test_bad_find_nearest_requests_get_clear_errors(node: NodeProcess, project: str) -> None:
    api = raw_api(datastore_client(node.client_addr, project))
    with pytest.raises(exceptions.InvalidArgument, match="limit"):
        nearest(api, project, [1.0, 2.0], EUCLIDEAN, 101)
    q = qt.Query(kind=[qt.KindExpression(name="Doc")], offset=1)
    q.find_nearest = qt.FindNearest(
        vector_property=qt.PropertyReference(name="emb"),
        query_vector=vector([1.0]),
        distance_measure=EUCLIDEAN,
        limit={"value": 1},
    )
    with pytest.raises(exceptions.MethodNotImplemented, match="not served"):
        api.run_query(request={"project_id": project, "query": q})
    assert grpc.StatusCode.UNIMPLEMENTED  # the status the edge maps it to


def test_every_replica_answers_the_same_nearest_neighbours(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, size=3)
    cluster.start()
    try:
        leader = cluster.leader()
        project = "vectors"
        api = raw_api(datastore_client(leader.client_addr, project))
        rng = random.Random(5)
        docs: dict[int, list[float]] = random_docs(rng, range(1, 401), 32)
        upsert(api, project, dict(docs))
        queries = [[rng.uniform(-1, 1) for _ in range(32)] for _ in range(3)]

        def check_everywhere() -> None:
            want = {
                (m, i): oracle(docs, q, m, 10)
                for i, q in enumerate(queries)
                for m in (EUCLIDEAN, COSINE, DOT_PRODUCT)
            }
            on_leader = {
                (m, i): nearest(api, project, q, m, 10)
                for i, q in enumerate(queries)
                for m in (EUCLIDEAN, COSINE, DOT_PRODUCT)
            }
            assert {k: [i for i, _ in v] for k, v in on_leader.items()} == want
            for replica in cluster.nodes:
                reader = raw_api(datastore_client(replica.client_addr, project))
                deadline = time.monotonic() + REPLICATION_WAIT_S
                got: dict[tuple[int, int], list[tuple[int, float]]] = {}
                while time.monotonic() < deadline:
                    got = {
                        (m, i): nearest(reader, project, q, m, 10, eventual=True)
                        for i, q in enumerate(queries)
                        for m in (EUCLIDEAN, COSINE, DOT_PRODUCT)
                    }
                    if got == on_leader:
                        break
                    time.sleep(0.2)
                # Same entities, same order, bit-identical distances on every replica.
                assert got == on_leader, replica.node_id

        check_everywhere()  # each replica builds its matrix from its own RocksDB
        changes: dict[int, list[float] | None] = {}
        for i in range(1, 401, 7):
            changes[i] = [rng.uniform(-1, 1) for _ in range(32)]
        for i in range(2, 401, 11):
            changes[i] = None
        upsert(api, project, changes)
        for i, v in changes.items():
            if v is None:
                docs.pop(i, None)
            else:
                docs[i] = v
        check_everywhere()  # kept current by apply on every replica
    finally:
        cluster.stop()


def test_vector_indexes_are_declared_in_index_yaml_on_every_replica(tmp_path: Path) -> None:
    """--auto-index false: a declared vector index serves the same neighbours on every
    replica; one of another dimension is refused naming the index.yaml entry to add."""
    index_yaml = tmp_path / "index.yaml"
    index_yaml.write_text(
        "indexes:\n- kind: Doc\n  properties:\n  - name: emb\n"
        "    vectorConfig:\n      dimension: 8\n      flat: {}\n"
    )
    cluster = Cluster(
        tmp_path, size=3, extra=["--auto-index", "false", "--index-yaml", str(index_yaml)]
    )
    cluster.start()
    try:
        leader = cluster.leader()
        project = "declared"
        api = raw_api(datastore_client(leader.client_addr, project))
        rng = random.Random(8)
        docs = random_docs(rng, range(1, 121), 8)
        upsert(api, project, dict(docs))
        upsert(api, project, random_docs(rng, range(500, 510), 4))  # another dimension
        q_vec = [rng.uniform(-1, 1) for _ in range(8)]
        deadline = time.monotonic() + REPLICATION_WAIT_S
        on_leader: list[tuple[int, float]] = []
        while time.monotonic() < deadline:  # the leader creates index.yaml's at start
            try:
                on_leader = nearest(api, project, q_vec, EUCLIDEAN, 10)
                break
            except exceptions.FailedPrecondition:
                time.sleep(0.2)
        assert [i for i, _ in on_leader] == oracle(docs, q_vec, EUCLIDEAN, 10)
        for replica in cluster.nodes:
            reader = raw_api(datastore_client(replica.client_addr, project))
            got: list[tuple[int, float]] = []
            deadline = time.monotonic() + REPLICATION_WAIT_S
            while time.monotonic() < deadline:
                got = nearest(reader, project, q_vec, EUCLIDEAN, 10, eventual=True)
                if got == on_leader:
                    break
                time.sleep(0.2)
            assert got == on_leader, replica.node_id
            with pytest.raises(exceptions.FailedPrecondition, match="dimension: 4"):
                nearest(reader, project, [0.5] * 4, EUCLIDEAN, 3)
    finally:
        cluster.stop()
