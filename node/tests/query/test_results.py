"""Projection, distinct_on, keys-only, aggregations and read ranges."""

from __future__ import annotations

import pytest

from tests.query.world import World, and_, entity, key, pf, python, query
from zonestore_node.storage.engine import Family


@pytest.fixture
def pets(world: World) -> World:
    world.put(
        entity(key("Pet", 1), kind="cat", age=3, tags=["x", "y"], weight=4.5),
        entity(key("Pet", 2), kind="dog", age=5, tags=["y"], weight=20.0),
        entity(key("Pet", 3), kind="cat", age=1, tags=[], weight=3),
        entity(key("Pet", 4), kind="dog", age=5, tags=["z"]),
    )
    return world


def rows(world: World, q: object) -> list[tuple[object, ...]]:
    batch = world.run(q).batch
    out = []
    for er in batch.entity_results:
        props = er.entity.properties
        out.append((er.entity.key.path[0].id, *(python(props[p]) for p in sorted(props))))
    return out


def test_projection_returns_index_values_one_result_per_array_element(pets: World) -> None:
    batch = pets.run(query("Pet", projection=("tags",))).batch
    assert batch.entity_result_type == 2
    assert rows(pets, query("Pet", projection=("tags",))) == [
        (1, "x"),
        (1, "y"),
        (2, "y"),
        (4, "z"),
    ]
    assert rows(pets, query("Pet", projection=("age", "kind"), order=("-age",))) == [
        (2, 5, "dog"),
        (4, 5, "dog"),
        (1, 3, "cat"),
        (3, 1, "cat"),
    ]


def test_distinct_on_keeps_the_first_result_of_each_group(pets: World) -> None:
    q = query("Pet", projection=("kind",), distinct_on=("kind",))
    assert rows(pets, q) == [(1, "cat"), (2, "dog")]
    first = pets.run(query("Pet", projection=("kind",), distinct_on=("kind",), limit=1)).batch
    rest = rows(
        pets, query("Pet", projection=("kind",), distinct_on=("kind",), start=first.end_cursor)
    )
    assert rest == [(2, "dog")]


def test_keys_only_query_returns_keys_without_properties(pets: World) -> None:
    batch = pets.run(query("Pet", pf("kind", "=", "dog"), projection=("__key__",))).batch
    assert batch.entity_result_type == 3
    assert [
        (er.entity.key.path[0].id, len(er.entity.properties)) for er in batch.entity_results
    ] == [
        (2, 0),
        (4, 0),
    ]


def test_projecting_an_equality_filtered_property_is_refused(pets: World) -> None:
    from zonestore_node.model.errors import DatastoreError

    with pytest.raises(DatastoreError):
        pets.run(query("Pet", pf("kind", "=", "dog"), projection=("kind",)))


def test_count_sum_and_avg_aggregate_over_the_nested_query(pets: World) -> None:
    got = pets.aggregate(
        query("Pet"), ("count", "", ""), ("sum", "age", "s"), ("avg", "weight", "w")
    )
    assert got == {"property_1": 4, "s": 14, "w": pytest.approx((4.5 + 20.0 + 3) / 3)}
    assert pets.aggregate(query("Pet"), ("sum", "weight", "s"))["s"] == pytest.approx(27.5)
    assert pets.aggregate(query("Pet", pf("kind", "=", "cat")), ("count", "", "n"))["n"] == 2
    assert pets.aggregate(query("Pet", limit=3), ("count", "", "n"))["n"] == 3
    assert pets.aggregate(query("Pet"), ("count", "2", "n"))["n"] == 2
    assert pets.aggregate(query("Nothing"), ("avg", "age", "a"), ("sum", "age", "s")) == {
        "a": None,
        "s": 0,
    }


def test_read_ranges_cover_what_a_limited_scan_read(pets: World) -> None:
    q = query("Pet", pf("kind", "=", "dog"), limit=1)
    outcome = pets.run(q)
    read_ts = pets.commit_ts
    assert outcome.read_ranges

    def touched() -> bool:
        return any(
            pets.store.written_after(Family.INDEXES, r.lo, r.hi, read_ts)
            for r in outcome.read_ranges
        )

    pets.put(entity(key("Pet", 9), kind="cat", age=1))
    assert not touched()  # outside the scanned equality range
    pets.put(entity(key("Pet", 1), kind="dog", age=3))
    assert touched()  # a new dog before the last examined key


def test_read_ranges_of_a_limited_scan_stop_at_the_last_key_examined(world: World) -> None:
    world.put(*(entity(key("R", i), n=i) for i in range(1, 21)))
    outcome = world.run(query("R", pf("n", ">", 0), limit=3))
    read_ts = world.commit_ts
    world.put(entity(key("R", 50), n=100))  # beyond what a 3-row scan read
    assert not any(
        world.store.written_after(Family.INDEXES, r.lo, r.hi, read_ts) for r in outcome.read_ranges
    )
    world.put(entity(key("R", 51), n=2))
    assert any(
        world.store.written_after(Family.INDEXES, r.lo, r.hi, read_ts) for r in outcome.read_ranges
    )


def test_entities_examined_by_residual_filters_are_reported_as_read_keys(pets: World) -> None:
    outcome = pets.run(query("Pet", and_(pf("age", ">", 2), pf("kind", "=", "cat"))))
    examined = {k[-9:-1] for k in outcome.read_keys}
    assert examined == {(1).to_bytes(8, "big"), (3).to_bytes(8, "big")}
