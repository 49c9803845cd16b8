"""Query explain through the official Python client (`explain_options` on queries and
aggregation queries) against a real node process."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from google.cloud import datastore
from google.cloud.datastore.query import PropertyFilter
from google.cloud.datastore.query_profile import ExplainOptions, QueryExplainError


def seed(client: Any, n: int = 40) -> None:
    entities = []
    for i in range(1, n + 1):
        e = datastore.Entity(client.key("Task", i))
        e.update({"done": i % 2 == 0, "priority": i % 10, "owner": "ann" if i <= 10 else "bo"})
        entities.append(e)
    client.put_multi(entities)


def test_explain_without_analyze_returns_the_plan_and_no_results(client: Any) -> None:
    seed(client)
    q = client.query(kind="Task", explain_options=ExplainOptions(analyze=False))
    q.add_filter(filter=PropertyFilter("priority", ">=", 7))
    it = q.fetch()
    assert list(it) == []
    metrics = it.explain_metrics
    assert metrics.plan_summary.indexes_used == [
        {"query_scope": "Collection", "properties": "(priority ASC, __name__ ASC)"}
    ]
    with pytest.raises(QueryExplainError):
        _ = metrics.execution_stats


def test_explain_with_analyze_returns_results_and_execution_stats(client: Any) -> None:
    seed(client)
    q = client.query(kind="Task", explain_options=ExplainOptions(analyze=True))
    q.add_filter(filter=PropertyFilter("priority", ">=", 7))
    it = q.fetch()
    found = list(it)
    assert len(found) == 12  # priorities 7, 8, 9: four of each
    stats = it.explain_metrics.execution_stats
    assert stats.results_returned == 12
    assert stats.read_operations == 12
    assert datetime.timedelta(0) < stats.execution_duration < datetime.timedelta(seconds=30)
    assert stats.debug_stats["index_entries_scanned"] == "12"
    assert stats.debug_stats["documents_scanned"] == "12"
    assert stats.debug_stats["billing_details"]["documents_billable"] == "12"
    assert it.explain_metrics.plan_summary.indexes_used == [
        {"query_scope": "Collection", "properties": "(priority ASC, __name__ ASC)"}
    ]


def test_explain_names_the_composite_index_a_query_uses(client: Any) -> None:
    seed(client)
    # Plan only: names the index the query needs (zonestore creates it on first run).
    q = client.query(
        kind="Task", order=["-priority"], explain_options=ExplainOptions(analyze=False)
    )
    q.add_filter(filter=PropertyFilter("owner", "=", "ann"))
    it = q.fetch()
    list(it)
    expected = [
        {"query_scope": "Collection", "properties": "(owner ASC, priority DESC, __name__ ASC)"}
    ]
    assert it.explain_metrics.plan_summary.indexes_used == expected
    q2 = client.query(kind="Task", order=["-priority"], explain_options=ExplainOptions(True))
    q2.add_filter(filter=PropertyFilter("owner", "=", "ann"))
    it2 = q2.fetch()
    rows = list(it2)
    assert [e["priority"] for e in rows] == sorted((i % 10 for i in range(1, 11)), reverse=True)
    assert it2.explain_metrics.plan_summary.indexes_used == expected
    assert it2.explain_metrics.execution_stats.debug_stats["zonestore_plans"] == "composite"


def test_explain_on_an_aggregation_query(client: Any) -> None:
    seed(client)
    q = client.query(kind="Task")
    q.add_filter(filter=PropertyFilter("done", "=", True))
    agg = client.aggregation_query(q, explain_options=ExplainOptions(analyze=True)).count(alias="n")
    it = agg.fetch()
    results = list(it)
    assert results[0][0].value == 20
    stats = it.explain_metrics.execution_stats
    assert stats.results_returned == 1
    assert stats.debug_stats["index_entries_scanned"] == "20"
    assert stats.read_operations == 1  # 20 index entries: one read per started 1,000
    assert it.explain_metrics.plan_summary.indexes_used == [
        {"query_scope": "Collection", "properties": "(done ASC, __name__ ASC)"}
    ]
    planned = client.aggregation_query(q, explain_options=ExplainOptions()).count(alias="n")
    pit = planned.fetch()
    assert list(pit) == []
    assert pit.explain_metrics.plan_summary.indexes_used == [
        {"query_scope": "Collection", "properties": "(done ASC, __name__ ASC)"}
    ]


def test_a_query_without_explain_options_has_no_metrics(client: Any) -> None:
    seed(client, 3)
    it = client.query(kind="Task").fetch()
    assert len(list(it)) == 3
    with pytest.raises(QueryExplainError):
        _ = it.explain_metrics
