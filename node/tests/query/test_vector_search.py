"""find_nearest through the executor over a real RocksDB: exact results against a
brute-force oracle for every distance measure, thresholds, limits, pre-filters, the
in-memory matrix kept current by apply, snapshots older than it, rebuilds."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from tests.query.world import PROJECT, AggregationQueryPb, World, and_, key, pf, query
from zonestore_node.model import vectors as vector_model
from zonestore_node.model.errors import DatastoreError
from zonestore_node.model.indexing import EntityPb
from zonestore_node.query import executor, vectors

EUCLIDEAN, COSINE, DOT_PRODUCT = 1, 2, 3


def vector_value(target: Any, vector: list[float], *, meaning: int = 31) -> None:
    target.array_value.SetInParent()
    for x in vector:
        target.array_value.values.add().double_value = x
    target.meaning = meaning
    target.exclude_from_indexes = True


def doc(ident: int, vector: list[float] | None, **props: Any) -> Any:
    e = EntityPb()
    e.key.CopyFrom(key("Doc", ident))
    if vector is not None:
        vector_value(e.properties["emb"], vector)
    for name, v in props.items():
        if isinstance(v, str):
            e.properties[name].string_value = v
        else:
            e.properties[name].integer_value = v
    return e


def nearest_query(
    q_vec: list[float],
    measure: int,
    limit: int,
    *,
    where: Any = None,
    threshold: float | None = None,
    result_property: str = "",
    keys_only: bool = False,
) -> Any:
    q = query("Doc", where)
    fn = q.find_nearest
    fn.vector_property.name = "emb"
    vector_value(fn.query_vector, q_vec)
    fn.distance_measure = measure
    fn.limit.value = limit
    if threshold is not None:
        fn.distance_threshold.value = threshold
    if result_property:
        fn.distance_result_property = result_property
    if keys_only:
        q.projection.add().property.name = "__key__"
    return q


def distance(a: list[float], b: list[float], measure: int) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    if measure == DOT_PRODUCT:
        return dot
    if measure == EUCLIDEAN:
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    return 1 - dot / (na * nb)


def oracle(
    docs: dict[int, list[float]],
    q_vec: list[float],
    measure: int,
    limit: int,
    threshold: float | None = None,
) -> list[int]:
    scored = []
    for ident, v in docs.items():
        if measure == COSINE and not any(v):
            continue
        d = distance(v, q_vec, measure)
        if threshold is not None and (d < threshold if measure == DOT_PRODUCT else d > threshold):
            continue
        scored.append((-d if measure == DOT_PRODUCT else d, ident))
    return [ident for _, ident in sorted(scored)[:limit]]


def ids(outcome: Any) -> list[int]:
    return [er.entity.key.path[0].id for er in outcome.batch.entity_results]


@pytest.fixture
def corpus(world: World) -> tuple[World, dict[int, list[float]]]:
    rng = random.Random(7)
    docs = {i: [rng.uniform(-1, 1) for _ in range(8)] for i in range(1, 201)}
    docs[201] = [0.0] * 8  # no angle: never a COSINE result
    world.put(*(doc(i, v, color="red" if i % 3 else "blue") for i, v in docs.items()))
    return world, docs


@pytest.mark.parametrize("measure", [EUCLIDEAN, COSINE, DOT_PRODUCT])
def test_find_nearest_is_exact_for_every_measure(
    corpus: tuple[World, dict[int, list[float]]], measure: int
) -> None:
    world, docs = corpus
    rng = random.Random(measure)
    for _ in range(5):
        q_vec = [rng.uniform(-1, 1) for _ in range(8)]
        out = world.run(nearest_query(q_vec, measure, 10, result_property="dist"))
        assert ids(out) == oracle(docs, q_vec, measure, 10)
        for er in out.batch.entity_results:
            expected = distance(docs[er.entity.key.path[0].id], q_vec, measure)
            assert er.entity.properties["dist"].double_value == pytest.approx(expected, abs=1e-12)
            assert er.entity.properties["color"].string_value  # whole entities


@pytest.mark.parametrize(
    ("measure", "threshold"), [(EUCLIDEAN, 1.6), (COSINE, 0.5), (DOT_PRODUCT, 0.4)]
)
def test_a_distance_threshold_keeps_closer_results_only(
    corpus: tuple[World, dict[int, list[float]]], measure: int, threshold: float
) -> None:
    world, docs = corpus
    q_vec = [0.5] * 8
    out = world.run(nearest_query(q_vec, measure, 100, threshold=threshold))
    expected = oracle(docs, q_vec, measure, 100, threshold)
    assert ids(out) == expected
    assert 0 < len(expected) < 100


def test_equality_pre_filters_restrict_the_candidates(
    corpus: tuple[World, dict[int, list[float]]],
) -> None:
    world, docs = corpus
    q_vec = [0.1] * 8
    out = world.run(nearest_query(q_vec, EUCLIDEAN, 5, where=pf("color", "=", "blue")))
    blue = {i: v for i, v in docs.items() if i % 3 == 0}
    assert ids(out) == oracle(blue, q_vec, EUCLIDEAN, 5)
    assert out.plans == ["vector", "join"]
    both = and_(pf("color", "=", "blue"), pf("__key__", ">", key("Doc", 100)))
    out = world.run(nearest_query(q_vec, EUCLIDEAN, 5, where=both))
    assert ids(out) == oracle({i: v for i, v in blue.items() if i > 100}, q_vec, EUCLIDEAN, 5)


def test_a_vector_of_another_dimension_is_not_in_the_index(world: World) -> None:
    world.put(doc(1, [1.0, 0.0]), doc(2, [1.0, 0.0, 0.0]), doc(3, [0.0, 1.0]))
    assert ids(world.run(nearest_query([1.0, 0.0], EUCLIDEAN, 10))) == [1, 3]
    assert ids(world.run(nearest_query([1.0, 0.0, 0.0], EUCLIDEAN, 10))) == [2]


def test_values_that_are_not_vectors_are_not_indexed(world: World) -> None:
    plain = doc(1, None)
    vector_value(plain.properties["emb"], [1.0, 2.0], meaning=0)  # a plain array
    ints = doc(2, None)
    ints.properties["emb"].array_value.values.add().integer_value = 1
    ints.properties["emb"].array_value.values.add().integer_value = 2
    ints.properties["emb"].meaning = 31
    world.put(plain, ints, doc(3, [1.0, 2.0]))
    assert ids(world.run(nearest_query([1.0, 2.0], EUCLIDEAN, 10))) == [3]


def test_writes_update_and_delete_vectors_and_old_snapshots_see_old_vectors(
    world: World,
) -> None:
    world.put(doc(1, [0.0, 0.0]), doc(2, [5.0, 5.0]))
    before = world.commit_ts
    assert ids(world.run(nearest_query([0.0, 0.0], EUCLIDEAN, 1))) == [1]
    builds = vectors.cache_for(world.store).builds
    world.put(doc(1, [9.0, 9.0]))  # moved away
    world.put(doc(3, [0.1, 0.1]))
    assert ids(world.run(nearest_query([0.0, 0.0], EUCLIDEAN, 3))) == [3, 2, 1]
    world.delete(key("Doc", 3))
    world.put(doc(2, None, color="red"))  # the vector property removed
    assert ids(world.run(nearest_query([0.0, 0.0], EUCLIDEAN, 3))) == [1]
    assert vectors.cache_for(world.store).builds == builds  # kept current, not rebuilt
    old = world.run(nearest_query([0.0, 0.0], EUCLIDEAN, 3), read_ts=before)
    assert ids(old) == [1, 2]


def test_the_matrix_is_rebuilt_from_rocksdb_after_a_reset(world: World) -> None:
    world.put(doc(1, [0.0, 0.0]), doc(2, [5.0, 5.0]))
    assert ids(world.run(nearest_query([5.0, 5.0], EUCLIDEAN, 1))) == [2]
    builds = vectors.cache_for(world.store).builds
    vector_model.reset(world.engine)
    world.put(doc(3, [5.0, 5.1]))
    assert ids(world.run(nearest_query([5.0, 5.0], EUCLIDEAN, 2))) == [2, 3]
    assert vectors.cache_for(world.store).builds == builds + 1


def test_keys_only_and_the_query_limit(corpus: tuple[World, dict[int, list[float]]]) -> None:
    world, docs = corpus
    q_vec = [0.2] * 8
    q = nearest_query(q_vec, DOT_PRODUCT, 10, keys_only=True)
    out = world.run(q)
    assert ids(out) == oracle(docs, q_vec, DOT_PRODUCT, 10)
    assert not out.batch.entity_results[0].entity.properties
    q.limit.value = 3
    assert ids(world.run(q)) == oracle(docs, q_vec, DOT_PRODUCT, 3)


def test_ties_are_broken_by_key(world: World) -> None:
    world.put(*(doc(i, [1.0, 1.0]) for i in (5, 3, 9, 1)))
    assert ids(world.run(nearest_query([0.0, 0.0], EUCLIDEAN, 3))) == [1, 3, 5]


def test_explain_names_the_vector_index_and_counts_the_vectors_scanned(
    corpus: tuple[World, dict[int, list[float]]],
) -> None:
    world, _ = corpus
    q = nearest_query([0.0] * 8, EUCLIDEAN, 4, where=pf("color", "=", "blue"))
    planned = executor.run_query(world.store, PROJECT, "", "", q, world.commit_ts, plan_only=True)
    assert planned.indexes_used == [
        {"query_scope": "Collection", "properties": "(emb VECTOR<8>)"},
        {"query_scope": "Collection", "properties": "(color ASC, __name__ ASC)"},
    ]
    assert len(planned.batch.entity_results) == 0
    out = world.run(q)
    assert out.results == 4
    assert out.index_entries == 67 + 67  # blue keys from the join, then their vectors


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda q: setattr(q.find_nearest.limit, "value", 101), "INVALID_ARGUMENT"),
        (lambda q: setattr(q.find_nearest.limit, "value", 0), "INVALID_ARGUMENT"),
        (lambda q: q.find_nearest.ClearField("limit"), "INVALID_ARGUMENT"),
        (lambda q: setattr(q.find_nearest, "distance_measure", 0), "INVALID_ARGUMENT"),
        (lambda q: setattr(q.find_nearest.query_vector, "meaning", 0), "INVALID_ARGUMENT"),
        (lambda q: q.find_nearest.vector_property.ClearField("name"), "INVALID_ARGUMENT"),
        (lambda q: setattr(q.find_nearest.vector_property, "name", "a.b"), "UNIMPLEMENTED"),
        (
            lambda q: setattr(q.find_nearest, "distance_result_property", "__x__"),
            "INVALID_ARGUMENT",
        ),
        (lambda q: q.projection.add().property.__setattr__("name", "color"), "UNIMPLEMENTED"),
        (lambda q: q.order.add().property.__setattr__("name", "color"), "UNIMPLEMENTED"),
        (lambda q: setattr(q, "offset", 1), "UNIMPLEMENTED"),
    ],
)
def test_bad_find_nearest_requests_are_refused(world: World, change: Any, code: str) -> None:
    q = nearest_query([1.0, 2.0], EUCLIDEAN, 5)
    change(q)
    with pytest.raises(DatastoreError) as info:
        world.run(q)
    assert info.value.code.name == code


def test_a_zero_query_vector_has_no_cosine_distance(world: World) -> None:
    with pytest.raises(DatastoreError) as info:
        world.run(nearest_query([0.0, 0.0], COSINE, 5))
    assert info.value.code.name == "INVALID_ARGUMENT"


def test_an_aggregation_over_find_nearest_is_not_served(world: World) -> None:
    a = AggregationQueryPb()
    a.nested_query.CopyFrom(nearest_query([1.0], EUCLIDEAN, 5))
    a.aggregations.add().count.SetInParent()
    with pytest.raises(DatastoreError) as info:
        executor.run_aggregation(world.store, PROJECT, "", "", a, world.commit_ts)
    assert info.value.code.name == "UNIMPLEMENTED"


def test_a_vector_excluded_as_a_whole_is_accepted_and_indexed_alike_on_leader_and_follower(
    world: World,
) -> None:
    from zonestore_node.model import indexing

    e = doc(1, [1.0, 2.0])  # exclude_from_indexes on the array value, as clients write it
    collected: list[tuple[str, bytes]] = []
    indexing.check_entity(e, PROJECT, "", out=collected)  # the leader's walk
    assert collected == indexing.index_values(e)  # a follower's, from the bytes
    assert all(name != "emb" for name, _ in collected)  # elements not in the built-ins
    world.put(e)
    assert ids(world.run(nearest_query([1.0, 2.0], EUCLIDEAN, 1))) == [1]
