"""Kind, key, ancestor and single-property queries; limit, offset, cursors, batches."""

from __future__ import annotations

import pytest

from tests.query.world import World, and_, entity, key, pf, query
from zonestore_node.model import limits
from zonestore_node.model.errors import DatastoreError

NOT_FINISHED, AFTER_LIMIT, NO_MORE, AFTER_CURSOR = 1, 2, 3, 4


def people(world: World) -> None:
    rows = [
        (1, "ann", 31, "x"),
        (2, "bob", 25, "y"),
        (3, "cat", 40, "x"),
        (4, "dan", 25, "z"),
        (5, "eve", 19, "y"),
    ]
    for ident, name, age, team in rows:
        world.put(world_entity(ident, name, age, team))


def world_entity(ident: int, name: str, age: int, team: str) -> object:
    return entity(key("P", ident), name=name, age=age, team=team)


def test_kind_query_returns_every_entity_of_the_kind_in_key_order(world: World) -> None:
    people(world)
    world.put(entity(key("Other", 9), age=1))
    assert world.names(query("P")) == [1, 2, 3, 4, 5]


def test_kind_query_batch_reports_full_entities_versions_and_times(world: World) -> None:
    people(world)
    batch = world.run(query("P", limit=1)).batch
    er = batch.entity_results[0]
    assert batch.entity_result_type == 1
    assert er.entity.properties["name"].string_value == "ann"
    assert er.version == 1000
    assert er.create_time.seconds * 1_000_000 + er.create_time.nanos // 1000 == 1000
    assert er.cursor


def test_equality_filter_uses_the_property_index(world: World) -> None:
    people(world)
    assert world.names(query("P", pf("team", "=", "x"))) == [1, 3]
    assert world.names(query("P", pf("age", "=", 25))) == [2, 4]


def test_inequality_filter_orders_by_the_property_then_key(world: World) -> None:
    people(world)
    assert world.names(query("P", pf("age", ">", 20))) == [2, 4, 1, 3]
    assert world.names(query("P", pf("age", "<=", 25))) == [5, 2, 4]


def test_descending_order_keeps_ties_in_key_order(world: World) -> None:
    people(world)
    assert world.names(query("P", order=("-age",))) == [3, 1, 2, 4, 5]


def test_two_orders_sort_within_runs_of_equal_values(world: World) -> None:
    people(world)
    assert world.names(query("P", order=("team", "-age"))) == [3, 1, 2, 5, 4]


def test_limit_stops_with_more_results_after_limit(world: World) -> None:
    people(world)
    batch = world.run(query("P", limit=2)).batch
    assert [er.entity.key.path[0].id for er in batch.entity_results] == [1, 2]
    assert batch.more_results == AFTER_LIMIT


def test_exhausted_query_reports_no_more_results(world: World) -> None:
    people(world)
    assert world.run(query("P")).batch.more_results == NO_MORE


def test_offset_skips_results_and_reports_a_skipped_cursor(world: World) -> None:
    people(world)
    batch = world.run(query("P", offset=2, limit=2)).batch
    assert [er.entity.key.path[0].id for er in batch.entity_results] == [3, 4]
    assert batch.skipped_results == 2
    resumed = world.names(query("P", start=batch.skipped_cursor, limit=1))
    assert resumed == [3]


def test_cursor_resumes_after_the_last_result_of_a_page(world: World) -> None:
    people(world)
    for q in (query("P"), query("P", order=("-age",)), query("P", order=("team", "-age"))):
        full = world.names(q)
        pages: list[int | str] = []
        cursor = b""
        while True:
            q.limit.value = 2
            q.start_cursor = cursor
            batch = world.run(q).batch
            pages.extend(er.entity.key.path[0].id for er in batch.entity_results)
            if not batch.entity_results:
                break
            cursor = batch.end_cursor
        assert pages == full


def test_end_cursor_stops_before_later_results(world: World) -> None:
    people(world)
    batch = world.run(query("P", limit=2)).batch
    out = world.run(query("P", end=batch.end_cursor)).batch
    assert [er.entity.key.path[0].id for er in out.entity_results] == [1, 2]
    assert out.more_results == AFTER_CURSOR


def test_unlimited_query_is_cut_into_batches_the_client_follows(world: World) -> None:
    world.put(*(entity(key("N", i), n=i) for i in range(1, limits.MAX_QUERY_BATCH + 11)))
    batch = world.run(query("N")).batch
    assert len(batch.entity_results) == limits.MAX_QUERY_BATCH
    assert batch.more_results == NOT_FINISHED
    assert world.all_names(query("N")) == list(range(1, limits.MAX_QUERY_BATCH + 11))


def test_malformed_cursor_is_an_invalid_argument(world: World) -> None:
    people(world)
    with pytest.raises(DatastoreError, match="Invalid cursor"):
        world.run(query("P", start=b"\x93garbage"))


def test_key_filters_bound_the_kind_scan(world: World) -> None:
    people(world)
    assert world.names(query("P", pf("__key__", ">", key("P", 2)))) == [3, 4, 5]
    assert world.names(query("P", pf("__key__", "=", key("P", 4)))) == [4]
    assert world.names(
        query("P", and_(pf("__key__", ">=", key("P", 2)), pf("__key__", "<", key("P", 4))))
    ) == [2, 3]
    assert world.names(query("P", order=("-__key__",), limit=2)) == [5, 4]


def test_ancestor_query_returns_the_subtree_only(world: World) -> None:
    world.put(entity(key("A", 1), v=1))
    world.put(entity(key("A", 1, "C", 1), v=2))
    world.put(entity(key("A", 1, "C", 2), v=3))
    world.put(entity(key("A", 2, "C", 3), v=4))
    assert world.names(query("C", pf("__key__", "ancestor", key("A", 1)))) == [1, 2]
    kindless = world.run(query(None, pf("__key__", "ancestor", key("A", 1)))).batch
    assert [len(er.entity.key.path) for er in kindless.entity_results] == [1, 2, 2]


def test_missing_property_excludes_entity_from_filters_and_sorts(world: World) -> None:
    world.put(entity(key("M", 1), a=1), entity(key("M", 2)), entity(key("M", 3), a=None))
    assert world.names(query("M", order=("a",))) == [3, 1]
    assert world.names(query("M")) == [1, 2, 3]


def test_older_read_ts_sees_the_older_data(world: World) -> None:
    first = world.put(entity(key("V", 1), a=1))
    world.put(entity(key("V", 1), a=2))
    world.put(entity(key("V", 2), a=1))
    assert world.names(query("V", pf("a", "=", 1))) == [2]
    assert world.names(query("V", pf("a", "=", 1)), read_ts=first) == [1]
