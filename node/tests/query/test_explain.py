"""Query explain from the executor: the indexes each plan reports, plan-only without
reads or side effects, and the execution counts with analyze."""

from __future__ import annotations

from typing import Any

import pytest

from tests.query.world import PROJECT, AggregationQueryPb, World, and_, entity, key, or_, pf, query
from zonestore_node.model import indexing
from zonestore_node.model.errors import DatastoreError
from zonestore_node.query import executor, explain
from zonestore_node.query.planner import IndexPolicy


@pytest.fixture
def tasks(world: World) -> World:
    world.put(
        *(
            entity(key("Task", i), done=i % 2 == 0, priority=i % 5, owner="ann" if i < 10 else "bo")
            for i in range(1, 31)
        )
    )
    return world


def plan(world: World, q: Any, policy: IndexPolicy = IndexPolicy.FALLBACK) -> Any:
    return executor.run_query(
        world.store, PROJECT, "", "", q, world.commit_ts, policy, plan_only=True
    )


def used(outcome: Any) -> list[tuple[str, str]]:
    return [(e["query_scope"], e["properties"]) for e in outcome.indexes_used]


def test_a_kind_query_uses_the_built_in_kind_index(tasks: World) -> None:
    assert used(plan(tasks, query("Task"))) == [("Collection", "(__name__ ASC)")]
    assert used(plan(tasks, query("Task", order=("-__key__",)))) == [
        ("Collection", "(__name__ DESC)")
    ]
    assert used(plan(tasks, query(None))) == [("Collection Group", "(__name__ ASC)")]


def test_equalities_report_one_built_in_index_per_property(tasks: World) -> None:
    q = query("Task", and_(pf("done", "=", True), pf("owner", "=", "ann")))
    assert used(plan(tasks, q)) == [
        ("Collection", "(done ASC, __name__ ASC)"),
        ("Collection", "(owner ASC, __name__ ASC)"),
    ]


def test_an_inequality_or_sort_reports_that_property_s_index_and_direction(tasks: World) -> None:
    assert used(plan(tasks, query("Task", pf("priority", ">", 2)))) == [
        ("Collection", "(priority ASC, __name__ ASC)")
    ]
    assert used(plan(tasks, query("Task", order=("-priority",)))) == [
        ("Collection", "(priority DESC, __name__ ASC)")
    ]


def test_a_composite_plan_reports_the_composite_index(tasks: World) -> None:
    tasks.create_index(
        indexing.CompositeDefinition(
            "Task", False, (indexing.Column("done"), indexing.Column("priority", True))
        )
    )
    q = query("Task", pf("done", "=", True), order=("-priority",))
    out = plan(tasks, q, IndexPolicy.REQUIRE)
    assert out.plans == ["composite"]
    assert used(out) == [("Collection", "(done ASC, priority DESC, __name__ ASC)")]


def test_an_ancestor_composite_index_has_the_includes_ancestors_scope(world: World) -> None:
    world.create_index(indexing.CompositeDefinition("C", True, (indexing.Column("n", True),)))
    world.put(*(entity(key("P", 1, "C", i), n=i) for i in range(1, 4)))
    q = query("C", pf("__key__", "ancestor", key("P", 1)), order=("-n",))
    assert used(plan(world, q, IndexPolicy.REQUIRE)) == [
        ("Includes Ancestors", "(n DESC, __name__ ASC)")
    ]


def test_a_plan_only_explain_names_a_missing_index_without_creating_it(tasks: World) -> None:
    q = query("Task", pf("owner", "=", "ann"), order=("-priority",))
    out = plan(tasks, q, IndexPolicy.CREATE)
    assert used(out) == [("Collection", "(owner ASC, priority DESC, __name__ ASC)")]
    assert indexing.load_registry(tasks.store.engine).for_kind("Task") == ()
    with pytest.raises(DatastoreError) as info:
        plan(tasks, q, IndexPolicy.REQUIRE)
    assert info.value.code.name == "FAILED_PRECONDITION"
    # Without an index and with the in-memory fallback: the equality's built-in index.
    assert used(plan(tasks, q, IndexPolicy.FALLBACK)) == [
        ("Collection", "(owner ASC, __name__ ASC)")
    ]


def test_a_plan_only_explain_reads_nothing(tasks: World) -> None:
    out = plan(tasks, query("Task", pf("priority", ">", 2)))
    assert len(out.batch.entity_results) == 0
    assert out.read_ranges == [] and out.read_keys == []
    assert out.index_entries == 0 and out.documents == 0


def test_or_branches_report_each_index_once(tasks: World) -> None:
    q = query("Task", or_(pf("owner", "=", "ann"), pf("owner", "=", "bo"), pf("done", "=", True)))
    assert used(plan(tasks, q)) == [
        ("Collection", "(owner ASC, __name__ ASC)"),
        ("Collection", "(done ASC, __name__ ASC)"),
    ]


def test_analyze_counts_index_entries_documents_and_results(tasks: World) -> None:
    # priority > 2: entries with priority 3 or 4 (12 of 30), each entity fetched.
    out = tasks.run(query("Task", pf("priority", ">", 2)))
    assert out.results == 12
    assert out.index_entries == 12
    assert out.documents == 12
    metrics = explain.metrics(out, analyze=True, duration_seconds=0.25)
    stats = metrics.execution_stats
    assert stats.results_returned == 12
    assert stats.read_operations == 12  # one per entity returned
    assert stats.execution_duration.nanos == 250_000_000
    debug = dict(stats.debug_stats)
    assert debug["index_entries_scanned"] == "12"
    assert debug["documents_scanned"] == "12"
    assert debug["zonestore_plans"] == "ordered"


def test_a_keys_only_query_is_billed_by_index_entries_with_a_minimum_of_one(
    tasks: World,
) -> None:
    out = tasks.run(query("Task", pf("owner", "=", "bo"), projection=("__key__",)))
    assert out.results == 21
    assert out.documents == 0  # the join decides membership: no entity read
    reads, documents, entries, minimum = explain.read_operations(out)
    assert (reads, documents, entries, minimum) == (1, 0, out.index_entries, False)
    empty = tasks.run(query("Task", pf("owner", "=", "nobody"), projection=("__key__",)))
    assert explain.read_operations(empty) == (1, 0, empty.index_entries, True)


def test_without_analyze_the_metrics_hold_the_plan_only(tasks: World) -> None:
    metrics = explain.metrics(plan(tasks, query("Task")), analyze=False, duration_seconds=1.0)
    assert not metrics.HasField("execution_stats")
    assert [dict(s) for s in metrics.plan_summary.indexes_used] == [
        {"query_scope": "Collection", "properties": "(__name__ ASC)"}
    ]


def test_an_aggregation_explains_its_nested_query(tasks: World) -> None:
    a = AggregationQueryPb()
    a.nested_query.CopyFrom(query("Task", pf("done", "=", True)))
    a.aggregations.add().count.SetInParent()
    planned = executor.run_aggregation(
        tasks.store, PROJECT, "", "", a, tasks.commit_ts, plan_only=True
    )
    assert used(planned) == [("Collection", "(done ASC, __name__ ASC)")]
    assert len(planned.batch.aggregation_results) == 0
    ran = executor.run_aggregation(tasks.store, PROJECT, "", "", a, tasks.commit_ts)
    assert ran.results == 1
    assert ran.index_entries == 15
    assert ran.batch.aggregation_results[0].aggregate_properties["property_1"].integer_value == 15
