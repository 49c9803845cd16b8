"""Composite indexes: entry layout (arrays explode, DESC columns, ancestors), the
registry, backfill against incremental maintenance, planner matching, and the query
results with composite plans against the naive model of test_model."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.query.test_model import ORDERS, VALUES, dnfs, model, to_filter
from tests.query.world import PROJECT, World, and_, entity, key, pf, query
from zonestore_node.model import indexing
from zonestore_node.model.errors import Code, DatastoreError
from zonestore_node.query import executor, planner
from zonestore_node.query.planner import IndexPolicy, PlanKind
from zonestore_node.storage import keycodec
from zonestore_node.storage.engine import Family
from zonestore_node.txn import apply

CREATE = IndexPolicy.CREATE
Col = indexing.Column


def definition(kind: str, *cols: str, ancestor: bool = False) -> indexing.CompositeDefinition:
    """cols: "a" ascending, "-a" descending."""
    return indexing.CompositeDefinition(
        kind, ancestor, tuple(Col(c.lstrip("-"), c.startswith("-")) for c in cols)
    )


def composite_entries(world: World) -> set[bytes]:
    prefix = indexing.COMPOSITE_INDEX
    return {
        v.encoded
        for v in world.store.scan(Family.INDEXES, prefix, keycodec.prefix_end(prefix), apply.LATEST)
    }


def test_array_values_explode_into_one_entry_per_combination(world: World) -> None:
    world.create_index(definition("T", "a", "-b"))
    world.put(entity(key("T", 1), a=[1, 2, 3], b=["x", "y"]), entity(key("T", 2), a=1))
    entries = composite_entries(world)
    assert len(entries) == 6  # T:2 lacks b: no entry
    assert all(e.endswith(keycodec.encode_path((("T", 1),))) for e in entries)


def test_a_descending_column_holds_the_inverted_encoding(world: World) -> None:
    world.create_index(definition("T", "-b"))
    world.put(entity(key("T", 1), b=5))
    (entry,) = composite_entries(world)
    body = keycodec.invert(keycodec.value_int(5))
    assert body in entry


def test_an_ancestor_index_has_one_entry_per_ancestor_and_serves_ancestor_queries(
    world: World,
) -> None:
    world.create_index(definition("C", "a", "-n", ancestor=True))
    world.put(
        *(entity(key("P", 1, "C", i), a=1, n=i) for i in range(1, 6)),
        *(entity(key("P", 2, "C", i), a=1, n=i) for i in range(1, 6)),
    )
    assert len(composite_entries(world)) == 20  # depth 2: P/x and P/x/C/i
    q = query("C", and_(pf("a", "=", 1), pf("__key__", "ancestor", key("P", 1))), order=("-n",))
    out = world.run(q, policy=IndexPolicy.REQUIRE)
    assert out.plans == ["composite"]
    assert [er.entity.key.path[1].id for er in out.batch.entity_results] == [5, 4, 3, 2, 1]


def test_an_entity_with_too_many_composite_entries_is_refused(world: World) -> None:
    world.create_index(definition("T", "a", "b", "c"))
    big = list(range(30))
    e = entity(key("T", 1), a=big, b=big, c=big)  # 27,000 combinations
    with pytest.raises(AssertionError, match="Too many indexed properties"):
        world.put(e)
    world.put(entity(key("T", 2), a=big, b=big, c=[1]))  # 900 is fine


def test_creating_an_index_twice_is_a_no_op(world: World) -> None:
    world.put(entity(key("T", 1), a=1, b=2))
    first = world.create_index(definition("T", "a", "b"))
    second = world.create_index(definition("T", "a", "b"))
    assert first.index_updates == 1 and second.index_updates == 0
    assert len(indexing.load_registry(world.engine).indexes) == 1


def test_matching_takes_equalities_in_any_order_then_the_orders_exactly() -> None:
    need = planner.Need(
        frozenset({"a", "b"}),
        (planner.Order("c", True), planner.Order("d", False)),
        False,
        definition("T", "a", "b", "-c", "d"),
    )
    assert planner.matches(definition("T", "b", "-a", "-c", "d"), need)
    assert not planner.matches(definition("T", "a", "b", "c", "d"), need)
    assert not planner.matches(definition("T", "a", "-c", "b", "d"), need)
    assert not planner.matches(definition("T", "a", "b", "-c", "d", ancestor=True), need)
    assert not planner.matches(definition("U", "a", "b", "-c", "d"), need)


def test_a_missing_index_is_refused_with_the_index_yaml_to_add(world: World) -> None:
    world.put(entity(key("Task", 1), done=False, priority=1))
    q = query("Task", pf("done", "=", False), order=("-priority",))
    with pytest.raises(DatastoreError) as caught:
        world.run(q, policy=IndexPolicy.REQUIRE)
    assert caught.value.code is Code.FAILED_PRECONDITION
    assert caught.value.message == (
        "no matching index found. recommended index is:\n"
        "- kind: Task\n  properties:\n  - name: done\n  - name: priority\n"
        "    direction: desc\n"
    )
    with pytest.raises(planner.NeedsIndex) as needs:
        executor.run_query(world.store, PROJECT, "", "", q, world.commit_ts, CREATE)
    assert needs.value.definition == definition("Task", "done", "-priority")


def test_a_snapshot_older_than_the_index_is_served_without_it(world: World) -> None:
    world.put(*(entity(key("Task", i), done=i % 2 == 0, priority=i) for i in range(1, 9)))
    before = world.commit_ts
    world.create_index(definition("Task", "done", "-priority"))
    q = query("Task", pf("done", "=", False), order=("-priority",))
    old = world.run(q, read_ts=before, policy=IndexPolicy.REQUIRE)
    new = world.run(q, policy=IndexPolicy.REQUIRE)
    assert old.plans == ["sorted"] and new.plans == ["composite"]
    assert [er.entity.key for er in old.batch.entity_results] == [
        er.entity.key for er in new.batch.entity_results
    ]


def test_cursors_page_through_a_composite_scan(world: World) -> None:
    world.put(*(entity(key("Task", i), done=False, priority=i % 5, tag=i) for i in range(1, 41)))
    q = query("Task", pf("done", "=", False), order=("-priority", "tag"), limit=7)
    expected = sorted(range(1, 41), key=lambda i: (-(i % 5), i))
    seen: list[int] = []
    while True:
        out = world.run(q, policy=CREATE)
        assert out.plans == ["composite"]
        seen.extend(er.entity.key.path[0].id for er in out.batch.entity_results)
        if out.batch.more_results != 2 or not out.batch.entity_results:
            break
        q.start_cursor = out.batch.end_cursor
    assert seen == expected


# Backfill equals incremental maintenance ------------------------------------------

OPS = st.lists(
    st.tuples(
        st.integers(1, 8),
        st.one_of(st.none(), st.dictionaries(st.sampled_from(("a", "b")), VALUES)),
    ),
    max_size=25,
)
_counter = itertools.count()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS, split=st.integers(0, 25), cols=st.sampled_from([("a", "-b"), ("-a",), ("b", "a")]))
def test_backfill_equals_incremental_maintenance(
    tmp_path_factory: Any, ops: list[tuple[int, Any]], split: int, cols: tuple[str, ...]
) -> None:
    root = Path(tmp_path_factory.mktemp(f"bf{next(_counter)}"))
    early, late = World(root / "early"), World(root / "late")
    try:
        d = definition("T", *cols)
        early.create_index(d)
        for world in (early, late):
            for i, (ident, props) in enumerate(ops):
                if i == split and world is late:
                    world.create_index(d)
                if props is None:
                    world.delete(key("T", ident))
                else:
                    world.put(entity(key("T", ident), **props))
            if split >= len(ops) and world is late:
                world.create_index(d)
        assert composite_entries(early) == composite_entries(late)
    finally:
        early.close()
        late.close()


# Query results with composite plans against the model ------------------------------

_kinds = itertools.count()
_worlds: dict[str, World] = {}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    entities=st.dictionaries(
        st.integers(1, 30), st.dictionaries(st.sampled_from(("a", "b")), VALUES), max_size=10
    ),
    dnf=dnfs(),
    orders=ORDERS,
    index_first=st.booleans(),
)
def test_composite_plans_agree_with_the_naive_model(
    tmp_path_factory: Any,
    entities: dict[int, dict[str, Any]],
    dnf: Any,
    orders: Any,
    index_first: bool,
) -> None:
    if "w" not in _worlds:
        _worlds["w"] = World(Path(tmp_path_factory.mktemp("cmodel")) / "db")
    world = _worlds["w"]
    kind = f"K{next(_kinds)}"
    order_names = [o for o, _ in orders]
    if "__key__" in order_names:
        orders = orders[: order_names.index("__key__") + 1]
    q = query(kind, to_filter(dnf), order=tuple(("-" if d else "") + n for n, d in orders))
    items = list(entities.items())
    half = len(items) // 2
    if index_first:  # indexes created on an empty kind, maintained by every put
        world.run(q, policy=CREATE)
    if items[:half]:
        world.put(*(entity(key(kind, i), **props) for i, props in items[:half]))
    world.run(q, policy=CREATE)  # backfilled from the first half
    if items[half:]:
        world.put(*(entity(key(kind, i), **props) for i, props in items[half:]))
    expected = model(entities, dnf, orders)
    out = world.run(q, policy=IndexPolicy.REQUIRE)
    event(f"plans={','.join(sorted(set(out.plans)))}")
    assert [er.entity.key.path[0].id for er in out.batch.entity_results] == expected
    pages: list[int] = []
    q.limit.value = 2
    while True:
        batch = world.run(q, policy=IndexPolicy.REQUIRE).batch
        pages.extend(er.entity.key.path[0].id for er in batch.entity_results)
        if batch.more_results != 2:
            break
        q.start_cursor = batch.end_cursor
    assert pages == expected


def test_plan_kinds_are_reported(world: World) -> None:
    world.put(entity(key("T", 1), a=1, b=2))
    assert world.run(query("T"), policy=CREATE).plans == [PlanKind.KEY.value]
    q = query("T", pf("a", "=", 1), order=("b",))
    assert world.run(q, policy=CREATE).plans == [PlanKind.COMPOSITE.value]


def test_paging_an_in_query_continues_into_the_next_values_branch(world: World) -> None:
    """Found by the model test: an OR whose inequality branch orders everything by `a`,
    and an IN served per value from a composite index; a cursor from the a=None branch
    must not skip keys below it in the a=0 branch."""
    dnf: list[list[tuple[str, str, Any]]] = [
        [("a", "=", 0), ("a", "<", 0), ("b", "!=", 0)],
        [("a", "in", [None, 0])],
    ]
    q = query("Paged", to_filter(dnf))
    world.put(
        entity(key("Paged", 1), a=None, b=0),
        entity(key("Paged", 3), a=None, b=0),
        entity(key("Paged", 2), a=0, b=0),
    )
    q.limit.value = 2
    first = world.run(q, policy=CREATE).batch
    assert [er.entity.key.path[0].id for er in first.entity_results] == [1, 3]
    q.start_cursor = first.end_cursor
    second = world.run(q, policy=IndexPolicy.REQUIRE).batch
    assert [er.entity.key.path[0].id for er in second.entity_results] == [2]
