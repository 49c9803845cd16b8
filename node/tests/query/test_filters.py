"""Composite filters, joins, OR/IN/NOT_IN/!=, arrays, several inequalities."""

from __future__ import annotations

import pytest

from tests.query.world import World, and_, entity, key, or_, pf, query
from zonestore_node.model.errors import DatastoreError


@pytest.fixture
def shop(world: World) -> World:
    world.put(
        entity(key("S", 1), color="red", size=1, tags=["a", "b"]),
        entity(key("S", 2), color="blue", size=2, tags=["b"]),
        entity(key("S", 3), color="red", size=3, tags=["c", "a"]),
        entity(key("S", 4), color="green", size=2, tags=[]),
        entity(key("S", 5), color="red", size=2, tags=["b", "c"]),
    )
    return world


def test_and_of_equalities_is_a_zig_zag_join(shop: World) -> None:
    assert shop.names(query("S", and_(pf("color", "=", "red"), pf("size", "=", 2)))) == [5]
    assert shop.names(query("S", and_(pf("tags", "=", "a"), pf("tags", "=", "b")))) == [1]


def test_array_property_matches_when_any_element_matches_and_appears_once(shop: World) -> None:
    assert shop.names(query("S", pf("tags", "=", "b"))) == [1, 2, 5]
    assert shop.names(query("S", pf("tags", ">=", "a"))) == [1, 3, 2, 5]
    assert shop.names(query("S", pf("tags", "in", ["a", "b"]))) == [1, 2, 3, 5]


def test_descending_array_order_uses_the_largest_element(shop: World) -> None:
    assert shop.names(query("S", order=("-tags",))) == [3, 5, 1, 2]


def test_or_merges_branches_in_order_without_duplicates(shop: World) -> None:
    where = or_(pf("color", "=", "blue"), pf("size", "=", 3), pf("tags", "=", "c"))
    assert shop.names(query("S", where)) == [2, 3, 5]
    assert shop.names(query("S", where, order=("-size",))) == [3, 2, 5]


def test_in_and_not_in_and_not_equal(shop: World) -> None:
    assert shop.names(query("S", pf("color", "in", ["green", "blue"]))) == [2, 4]
    assert shop.names(query("S", pf("color", "not_in", ["red"]))) == [2, 4]
    assert shop.names(query("S", pf("size", "!=", 2))) == [1, 3]
    assert shop.names(query("S", pf("color", "in", ["red", "blue"]), order=("color",))) == [
        2,
        1,
        3,
        5,
    ]


def test_equality_with_a_sort_on_another_property_sorts_the_matches(shop: World) -> None:
    assert shop.names(query("S", pf("color", "=", "red"), order=("-size",))) == [3, 5, 1]


def test_residual_filters_apply_to_an_ordered_scan(shop: World) -> None:
    where = and_(pf("size", ">=", 2), pf("color", "=", "red"))
    assert shop.names(query("S", where)) == [5, 3]


def test_inequalities_on_two_properties_order_by_both(shop: World) -> None:
    where = and_(pf("size", ">", 1), pf("color", "<", "red"))
    assert shop.names(query("S", where)) == [2, 4]
    assert shop.names(query("S", where, order=("-size",))) == [2, 4]


def test_range_filters_run_over_the_cross_type_value_order(world: World) -> None:
    world.put(entity(key("T", 1), v=5), entity(key("T", 2), v="text"), entity(key("T", 3), v=7.5))
    assert world.names(query("T", pf("v", ">", 1))) == [1, 2, 3]
    assert world.names(query("T", pf("v", "<", "text"))) == [1]
    assert world.names(query("T", order=("v",))) == [1, 2, 3]


def test_invalid_filters_are_invalid_arguments(shop: World) -> None:
    bad = [
        query("S", pf("__key__", ">", 3)),
        query("S", pf("color", "in", list(range(31)))),
        query("S", pf("color", "not_in", list(range(11)))),
        query("S", and_(pf("a", "!=", 1), pf("b", "!=", 2))),
        query("S", pf("color", "in", "red")),
        query(None, pf("color", "=", "red")),
    ]
    for q in bad:
        with pytest.raises(DatastoreError) as info:
            shop.run(q)
        assert info.value.code.name == "INVALID_ARGUMENT"
