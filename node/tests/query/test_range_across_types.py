"""Range filters over values of every type compare in Datastore's cross-type order.

The legacy service (and the emulator in Datastore mode) orders mixed values null <
integers and timestamps < booleans < strings and blobs < doubles < geopoints < keys,
and an inequality runs over that whole order: `v > None` is ndb's "is set" idiom,
`v < 3` includes nulls. The oracle here ranks plain Python values by that rule (no
encodings involved) and every operator (`<`, `<=`, `>`, `>=`, `!=`, NOT_IN) is checked
against it for an operand of every type, through each plan that bounds an index by the
filter: the property's built-in index (ORDERED), a composite index with the range column
ascending and descending (COMPOSITE), the in-memory sort of an equality scan (SORTED),
and an OR of two ranges.
"""

from __future__ import annotations

import datetime
import itertools
from dataclasses import dataclass
from typing import Any

import pytest

from tests.query.world import FilterPb, World, and_, key, or_, query
from zonestore_node.model.indexing import EntityPb
from zonestore_node.query.planner import IndexPolicy


@dataclass(frozen=True)
class Geo:
    lat: float
    lng: float


@dataclass(frozen=True)
class Ref:
    ident: int


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
TS = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
TS_MICROS = (TS - EPOCH) // datetime.timedelta(microseconds=1)

# One entity per value (ids 1..N); None means the property is set to null.
VALUES: list[Any] = [
    None,
    -7,
    3,
    TS,
    False,
    True,
    "a",
    "zz",
    b"b",
    2.5,
    -1e300,
    Geo(1.0, 2.0),
    Geo(-5.0, 9.0),
    Ref(4),
    Ref(9),
]
# Operands: every type, including values no entity holds.
OPERANDS: list[Any] = [None, 3, 0, TS, True, False, "a", "m", b"b", 2.5, Geo(0.0, 0.0), Ref(5)]


def rank(v: Any) -> tuple[Any, ...]:
    """Datastore's total order over mixed types (the legacy service's)."""
    if v is None:
        return (0,)
    if isinstance(v, bool):
        return (2, v)
    if isinstance(v, int):
        return (1, v, 0)
    if isinstance(v, datetime.datetime):
        return (1, (v - EPOCH) // datetime.timedelta(microseconds=1), 1)
    if isinstance(v, str):
        return (3, v.encode(), 1)
    if isinstance(v, bytes):
        return (3, v, 0)
    if isinstance(v, float):
        return (4, v)
    if isinstance(v, Geo):
        return (5, v.lat, v.lng)
    assert isinstance(v, Ref)
    return (6, v.ident)


def fill(target: Any, v: Any) -> None:
    if v is None:
        target.null_value = 0
    elif isinstance(v, bool):
        target.boolean_value = v
    elif isinstance(v, int):
        target.integer_value = v
    elif isinstance(v, datetime.datetime):
        micros = (v - EPOCH) // datetime.timedelta(microseconds=1)
        target.timestamp_value.seconds, rem = divmod(micros, 1_000_000)
        target.timestamp_value.nanos = rem * 1000
    elif isinstance(v, str):
        target.string_value = v
    elif isinstance(v, bytes):
        target.blob_value = v
    elif isinstance(v, float):
        target.double_value = v
    elif isinstance(v, Geo):
        target.geo_point_value.latitude = v.lat
        target.geo_point_value.longitude = v.lng
    else:
        target.key_value.CopyFrom(key("Other", v.ident))


def filter_on(name: str, op: str, operand: Any) -> Any:
    ops = {"<": 1, "<=": 2, ">": 3, ">=": 4, "=": 5, "!=": 9, "not_in": 13}
    f = FilterPb()
    f.property_filter.property.name = name
    f.property_filter.op = ops[op]
    if op == "not_in":
        f.property_filter.value.array_value.SetInParent()
        for element in operand:
            fill(f.property_filter.value.array_value.values.add(), element)
    else:
        fill(f.property_filter.value, operand)
    return f


COMPARE = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "!=": lambda a, b: a != b,
}


def admitted(op: str, operand: Any, v: Any) -> bool:
    if op == "not_in":
        return all(rank(v) != rank(x) for x in operand)
    return bool(COMPARE[op](rank(v), rank(operand)))


@pytest.fixture
def mixed(world: World) -> World:
    entities = []
    for ident, v in enumerate(VALUES, start=1):
        e = EntityPb()
        e.key.CopyFrom(key("M", ident))
        fill(e.properties["v"], v)
        e.properties["g"].string_value = "x" if ident % 3 else "y"
        entities.append(e)
    # Entities that must never match a range on v: v missing, v unindexed.
    absent = EntityPb()
    absent.key.CopyFrom(key("M", 100))
    absent.properties["g"].string_value = "x"
    unindexed = EntityPb()
    unindexed.key.CopyFrom(key("M", 101))
    unindexed.properties["g"].string_value = "x"
    unindexed.properties["v"].integer_value = 1
    unindexed.properties["v"].exclude_from_indexes = True
    world.put(*entities, absent, unindexed)
    return world


def expected(op: str, operand: Any, *, group: str | None = None, desc: bool = False) -> list[int]:
    hits = [
        (rank(v), ident)
        for ident, v in enumerate(VALUES, start=1)
        if admitted(op, operand, v) and (group is None or ("x" if ident % 3 else "y") == group)
    ]
    if desc:
        # Descending by value, ties by key ascending.
        hits.sort(key=lambda h: h[1])
        hits.sort(key=lambda h: h[0], reverse=True)
    else:
        hits.sort()
    return [ident for _, ident in hits]


CASES = [(op, operand) for op in COMPARE for operand in OPERANDS] + [
    ("not_in", [None, 3, "a"]),
    ("not_in", [TS, Geo(1.0, 2.0), Ref(4), 2.5]),
]


def case_id(case: tuple[str, Any]) -> str:
    op, operand = case
    return f"{op} {operand!r}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_a_range_on_the_built_in_index_follows_the_cross_type_order(
    mixed: World, case: tuple[str, Any]
) -> None:
    op, operand = case
    out = mixed.run(query("M", filter_on("v", op, operand)))
    assert out.plans == ["ordered"]
    assert [er.entity.key.path[0].id for er in out.batch.entity_results] == expected(op, operand)
    desc = mixed.names(query("M", filter_on("v", op, operand), order=("-v",)))
    assert desc == expected(op, operand, desc=True)


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_a_range_on_a_composite_index_column_follows_the_cross_type_order(
    mixed: World, case: tuple[str, Any]
) -> None:
    op, operand = case
    where = and_(filter_on("g", "=", "x"), filter_on("v", op, operand))
    for desc in (False, True):
        out = mixed.run(
            query("M", where, order=("-v" if desc else "v",)), policy=IndexPolicy.CREATE
        )
        assert out.plans == ["composite"]
        names = [er.entity.key.path[0].id for er in out.batch.entity_results]
        assert names == expected(op, operand, group="x", desc=desc)


def test_an_equality_with_a_range_sorted_in_memory_follows_the_same_order(mixed: World) -> None:
    for (op, operand), desc in itertools.product(CASES, (False, True)):
        where = and_(filter_on("g", "=", "x"), filter_on("v", op, operand))
        out = mixed.run(query("M", where, order=("-v" if desc else "v",)))
        assert out.plans == ["sorted"]
        names = [er.entity.key.path[0].id for er in out.batch.entity_results]
        assert names == expected(op, operand, group="x", desc=desc), (op, operand, desc)


def test_greater_than_null_is_the_is_set_idiom_and_less_than_includes_null(mixed: World) -> None:
    set_ = mixed.names(query("M", filter_on("v", ">", None)))
    assert sorted(set_) == [i for i, v in enumerate(VALUES, start=1) if v is not None]
    below = mixed.names(query("M", filter_on("v", "<", 3)))
    assert below == [1, 2]  # null, then -7
    assert 100 not in set_ and 101 not in set_  # missing and unindexed never match


def test_an_or_of_ranges_on_both_ends_of_the_order(mixed: World) -> None:
    where = or_(filter_on("v", "<", 0), filter_on("v", ">=", Geo(-5.0, 9.0)))
    names = mixed.names(query("M", where))
    hits = [
        (rank(v), i)
        for i, v in enumerate(VALUES, start=1)
        if rank(v) < rank(0) or rank(v) >= rank(Geo(-5.0, 9.0))
    ]
    assert names == [i for _, i in sorted(hits)]


def test_a_range_on_an_array_matches_when_any_element_is_in_range(world: World) -> None:
    e = EntityPb()
    e.key.CopyFrom(key("A", 1))
    arr = e.properties["v"].array_value
    fill(arr.values.add(), "s")
    fill(arr.values.add(), Geo(1.0, 1.0))
    world.put(e)
    assert world.names(query("A", filter_on("v", ">", 2.5))) == [1]  # the geopoint
    assert world.names(query("A", filter_on("v", "<", 0))) == []
    assert world.names(query("A", filter_on("v", "<", True))) == []
    assert world.names(query("A", filter_on("v", "<", 1.0))) == [1]  # the string


def test_timestamps_and_integers_share_one_numeric_range(mixed: World) -> None:
    # A timestamp compares with integers by its microseconds since the epoch.
    names = mixed.names(query("M", filter_on("v", ">", TS_MICROS - 1)))
    assert names[0] == VALUES.index(TS) + 1
    names = mixed.names(query("M", filter_on("v", "<", TS)))
    assert names == [1, 2, 3]  # null, -7, 3
