"""Queries through the official Python client: kinds, filters, orders, limits, cursors,
projections, ancestors, aggregations, big result sets, transactions and read_time."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import datastore
from google.cloud.datastore import aggregation
from google.cloud.datastore.query import And, Or, PropertyFilter

from tests.harness import NodeProcess
from tests.integration.support import datastore_client, raw_api


def seed(client: Any, kind: str = "Task", n: int = 10) -> list[Any]:
    entities = []
    for i in range(1, n + 1):
        entity = datastore.Entity(client.key(kind, i))
        entity.update(
            {
                "i": i,
                "even": i % 2 == 0,
                "tag": ["a", "b"][i % 2],
                "tags": [f"t{i % 3}", "all"],
                "score": 10.0 - i,
                "name": f"n{i:02d}",
            }
        )
        entities.append(entity)
    client.put_multi(entities)
    return entities


def ids(results: Any) -> list[int]:
    return [e.key.id for e in results]


def query(client: Any, kind: str = "Task", *filters: Any, **kwargs: Any) -> Any:
    q = client.query(kind=kind, **kwargs)
    for f in filters:
        q.add_filter(filter=f)
    return q


def test_a_kind_query_returns_every_entity_of_the_kind_in_key_order(client: Any) -> None:
    seed(client)
    other = datastore.Entity(client.key("Other", 1))
    client.put(other)
    assert ids(query(client).fetch()) == list(range(1, 11))


def test_kindless_and_namespaced_queries_stay_in_their_partition(
    node: NodeProcess, project: str
) -> None:
    a = datastore_client(node.client_addr, project, namespace="a")
    b = datastore_client(node.client_addr, project, namespace="b")
    seed(a, n=3)
    seed(b, n=5)
    assert len(list(query(a).fetch())) == 3
    assert len(list(b.query().fetch())) == 5


def test_equality_and_range_filters_select_the_right_entities(client: Any) -> None:
    seed(client)
    assert ids(query(client, "Task", PropertyFilter("even", "=", True)).fetch()) == [2, 4, 6, 8, 10]
    assert ids(query(client, "Task", PropertyFilter("i", ">", 7)).fetch()) == [8, 9, 10]
    assert ids(query(client, "Task", PropertyFilter("i", "<=", 2)).fetch()) == [1, 2]
    ranged = query(client, "Task", PropertyFilter("i", ">=", 3), PropertyFilter("i", "<", 6))
    assert ids(ranged.fetch()) == [3, 4, 5]
    assert ids(query(client, "Task", PropertyFilter("name", "=", "n07")).fetch()) == [7]


def test_in_not_equal_and_not_in_filters(client: Any) -> None:
    seed(client)
    assert ids(query(client, "Task", PropertyFilter("i", "IN", [3, 5, 99])).fetch()) == [3, 5]
    not_equal = query(client, "Task", PropertyFilter("i", "!=", 4)).fetch()
    assert sorted(ids(not_equal)) == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    not_in = query(client, "Task", PropertyFilter("i", "NOT_IN", [1, 2, 3])).fetch()
    assert sorted(ids(not_in)) == [4, 5, 6, 7, 8, 9, 10]


def test_composite_and_or_filters(client: Any) -> None:
    seed(client)
    both = And([PropertyFilter("even", "=", True), PropertyFilter("i", ">", 5)])
    assert ids(query(client, "Task", both).fetch()) == [6, 8, 10]
    either = Or([PropertyFilter("i", "=", 1), PropertyFilter("name", "=", "n09")])
    assert sorted(ids(query(client, "Task", either).fetch())) == [1, 9]


def test_array_properties_match_on_any_element(client: Any) -> None:
    seed(client)
    assert ids(query(client, "Task", PropertyFilter("tags", "=", "t0")).fetch()) == [3, 6, 9]
    assert len(list(query(client, "Task", PropertyFilter("tags", "=", "all")).fetch())) == 10


def test_orders_ascending_descending_and_on_two_properties(client: Any) -> None:
    seed(client)
    assert ids(query(client, order=["-i"]).fetch()) == list(range(10, 0, -1))
    assert ids(query(client, order=["score"]).fetch()) == list(range(10, 0, -1))
    two = query(client, order=["tag", "-i"]).fetch()
    assert ids(two) == [10, 8, 6, 4, 2, 9, 7, 5, 3, 1]
    filtered = query(client, "Task", PropertyFilter("i", ">", 6), order=["-i"])
    assert ids(filtered.fetch()) == [10, 9, 8, 7]


def test_limit_offset_and_cursors_page_through_results(client: Any) -> None:
    seed(client, n=25)
    assert ids(query(client).fetch(limit=3, offset=4)) == [5, 6, 7]
    seen: list[int] = []
    cursor = None
    while True:
        it = query(client, order=["-i"]).fetch(limit=7, start_cursor=cursor)
        page = next(it.pages)
        seen += ids(page)
        cursor = it.next_page_token
        if cursor is None or not seen or len(seen) >= 25:
            break
    assert seen == list(range(25, 0, -1))


def test_keys_only_and_projection_queries(client: Any) -> None:
    seed(client)
    q = query(client)
    q.keys_only()
    results = list(q.fetch())
    assert ids(results) == list(range(1, 11))
    assert all(dict(e) == {} for e in results)
    projected = list(query(client, projection=["i", "name"], order=["i"]).fetch(limit=2))
    assert [dict(e) for e in projected] == [{"i": 1, "name": "n01"}, {"i": 2, "name": "n02"}]


def test_distinct_on_returns_one_entity_per_value(client: Any) -> None:
    seed(client)
    q = query(client, projection=["tag"], distinct_on=["tag"], order=["tag"])
    assert [e["tag"] for e in q.fetch()] == ["a", "b"]


def test_ancestor_queries_return_the_entity_group(client: Any) -> None:
    parent = client.key("List", "l1")
    items = []
    for i in range(1, 4):
        item = datastore.Entity(client.key("Item", i, parent=parent))
        item["i"] = i
        items.append(item)
    stray = datastore.Entity(client.key("Item", 99))
    stray["i"] = 99
    client.put_multi([*items, stray])
    got = list(client.query(kind="Item", ancestor=parent).fetch())
    assert sorted(e["i"] for e in got) == [1, 2, 3]


def test_deleted_and_updated_entities_leave_the_index(client: Any) -> None:
    entities = seed(client)
    client.delete(entities[0].key)
    entities[1]["even"] = False
    client.put(entities[1])
    assert 1 not in ids(query(client).fetch())
    assert ids(query(client, "Task", PropertyFilter("even", "=", True)).fetch()) == [4, 6, 8, 10]


def test_count_sum_and_avg_aggregations(client: Any) -> None:
    seed(client)
    base = query(client, "Task", PropertyFilter("i", ">", 5))
    agg = client.aggregation_query(base)
    agg.count(alias="n")
    agg.sum("i", alias="total")
    agg.avg("score", alias="mean")
    results = {r.alias: r.value for batch in agg.fetch() for r in batch}
    assert results == {"n": 5, "total": 40, "mean": pytest.approx(2.0)}
    count_all = client.aggregation_query(query(client))
    count_all.add_aggregation(aggregation.CountAggregation(alias="all"))
    assert [r.value for batch in count_all.fetch() for r in batch] == [10]


def test_more_results_than_one_batch_are_all_returned(client: Any) -> None:
    entities = [datastore.Entity(client.key("Bulk", i + 1)) for i in range(700)]
    for start in range(0, 700, 500):
        client.put_multi(entities[start : start + 500])
    assert ids(query(client, "Bulk").fetch()) == list(range(1, 701))


def test_a_query_over_large_entities_stays_under_the_clients_4_mib_limit(client: Any) -> None:
    big = []
    for i in range(6):
        entity = datastore.Entity(client.key("Large", i + 1), exclude_from_indexes=("blob",))
        entity["blob"] = b"z" * 1_000_000
        big.append(entity)
    client.put_multi(big[:3])
    client.put_multi(big[3:])
    assert ids(query(client, "Large").fetch()) == list(range(1, 7))


def test_a_query_in_a_named_database_sees_only_that_database(
    node: NodeProcess, project: str
) -> None:
    db2 = datastore_client(node.client_addr, project, database="db2")
    default = datastore_client(node.client_addr, project)
    seed(db2, n=2)
    seed(default, n=4)
    results = list(query(db2).fetch())
    assert ids(results) == [1, 2]
    assert all(e.key.database == "db2" for e in results)


def test_a_query_at_a_read_time_sees_the_data_as_of_then(client: Any) -> None:
    seed(client, n=3)
    response = raw_api(client).lookup(
        request={"project_id": client.project, "keys": [client.key("Task", 1).to_protobuf()]}
    )
    then = response.read_time
    seed(client, n=6)
    assert ids(query(client).fetch(read_time=then)) == [1, 2, 3]
    assert ids(query(client).fetch()) == list(range(1, 7))


def test_a_transaction_whose_query_result_changed_is_aborted(
    node: NodeProcess, project: str
) -> None:
    client = datastore_client(node.client_addr, project)
    other = datastore_client(node.client_addr, project)
    seed(client, n=3)
    with pytest.raises(exceptions.Aborted), client.transaction() as txn:
        assert len(list(query(client, "Task", PropertyFilter("even", "=", True)).fetch())) == 1
        late = datastore.Entity(other.key("Task", 4))
        late.update({"i": 4, "even": True})
        other.put(late)
        summary = datastore.Entity(client.key("Summary", 1))
        summary["evens"] = 1
        txn.put(summary)
    assert client.get(client.key("Summary", 1)) is None


def test_a_transaction_query_unaffected_by_other_writes_commits(
    node: NodeProcess, project: str
) -> None:
    client = datastore_client(node.client_addr, project)
    other = datastore_client(node.client_addr, project)
    seed(client, n=3)
    with client.transaction() as txn:
        assert len(list(query(client, "Task", PropertyFilter("even", "=", True)).fetch())) == 1
        other.put(datastore.Entity(other.key("Unrelated", 1)))
        txn.put(datastore.Entity(client.key("Summary", 2)))
    assert client.get(client.key("Summary", 2)) is not None


def test_a_gql_query_runs(client: Any) -> None:
    seed(client)
    response = raw_api(client).run_query(
        request={
            "project_id": client.project,
            "gql_query": {
                "query_string": "SELECT * FROM Task WHERE i > @min ORDER BY i DESC LIMIT 2",
                "named_bindings": {"min": {"value": {"integer_value": 3}}},
            },
        }
    )
    got = [r.entity.properties["i"].integer_value for r in response.batch.entity_results]
    assert got == [10, 9]


def test_query_timestamps_compare_by_instant(client: Any) -> None:
    base = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    for i in range(1, 5):
        entity = datastore.Entity(client.key("Event", i))
        entity["at"] = base + datetime.timedelta(microseconds=i)
        client.put(entity)
    since = base + datetime.timedelta(microseconds=2)
    assert ids(query(client, "Event", PropertyFilter("at", ">=", since)).fetch()) == [2, 3, 4]


def test_a_transaction_that_read_an_entity_through_a_query_aborts_if_it_changed(
    node: NodeProcess, project: str
) -> None:
    """A query returns whole entities: a transaction updating what it read must not
    overwrite a concurrent change to a property the query did not filter on."""
    client = datastore_client(node.client_addr, project)
    other = datastore_client(node.client_addr, project)
    seed(client, n=3)
    with pytest.raises(exceptions.Aborted), client.transaction() as txn:
        [found] = list(query(client, "Task", PropertyFilter("i", "=", 2)).fetch())
        changed = other.get(other.key("Task", 2))
        changed["score"] = 100.0  # not what the query filtered on
        other.put(changed)
        found["name"] = "renamed"
        txn.put(found)
    assert client.get(client.key("Task", 2))["score"] == 100.0  # the other write survived


@pytest.mark.parametrize("method", ["run_query", "run_aggregation_query"])
def test_a_query_can_begin_a_transaction_that_then_guards_what_it_read(
    node: NodeProcess, project: str, method: str
) -> None:
    """read_options.new_transaction on RunQuery/RunAggregationQuery (begin_later). The
    Python client sends it but ignores the returned id (query.py never reads
    response.transaction), so this drives the raw API."""
    client = datastore_client(node.client_addr, project)
    seed(client, n=3)
    api = raw_api(client)
    kind_query = {"kind": [{"name": "Task"}]}
    request: dict[str, Any] = {
        "project_id": project,
        "read_options": {"new_transaction": {"read_write": {}}},
    }
    if method == "run_query":
        request["query"] = kind_query
    else:
        request["aggregation_query"] = {
            "nested_query": kind_query,
            "aggregations": [{"count": {}, "alias": "n"}],
        }
    response = getattr(api, method)(request=request)
    txn = response.transaction
    assert txn
    other = datastore_client(node.client_addr, project)
    other.put(datastore.Entity(other.key("Task", 99)))
    summary = {"upsert": {"key": client.key("Summary", method).to_protobuf()}}
    with pytest.raises(exceptions.Aborted):
        api.commit(
            request={"project_id": project, "mode": 1, "transaction": txn, "mutations": [summary]}
        )
    # Without the concurrent write, the same flow commits.
    response = getattr(api, method)(request=request)
    api.commit(
        request={
            "project_id": project,
            "mode": 1,
            "transaction": response.transaction,
            "mutations": [summary],
        }
    )
    assert client.get(client.key("Summary", method)) is not None


def test_keys_with_zero_bytes_and_unicode_round_trip_and_sort_by_utf8_bytes(
    client: Any,
) -> None:
    names = ["ab", "a", "a\x00b", "a\x00", "é", "z", "\U0001f600", "\uffff"]
    client.put_multi([datastore.Entity(client.key("Odd", n)) for n in names])
    client.put(datastore.Entity(client.key("Odd", 5)))
    for name in names:
        assert client.get(client.key("Odd", name)) is not None, repr(name)
    q = client.query(kind="Odd")
    q.keys_only()
    got = [e.key.id_or_name for e in q.fetch()]
    assert got == [5, *sorted(names, key=lambda n: n.encode())]  # ids before names


def test_aggregations_respect_limits_and_empty_inputs(client: Any) -> None:
    seed(client)
    capped = client.aggregation_query(query(client))
    capped.count(alias="n")
    assert [r.value for batch in capped.fetch(limit=4) for r in batch] == [4]
    # Over no rows: count 0, sum the integer 0, avg null. (The Python client reads a
    # null avg as 0.0, `integer_value or double_value`; the raw response shows it.)
    response = raw_api(client).run_aggregation_query(
        request={
            "project_id": client.project,
            "aggregation_query": {
                "nested_query": {
                    "kind": [{"name": "Task"}],
                    "filter": {
                        "property_filter": {
                            "property": {"name": "i"},
                            "op": "GREATER_THAN",
                            "value": {"integer_value": 100},
                        }
                    },
                },
                "aggregations": [
                    {"count": {}, "alias": "n"},
                    {"sum": {"property": {"name": "i"}}, "alias": "total"},
                    {"avg": {"property": {"name": "i"}}, "alias": "mean"},
                ],
            },
        }
    )
    values = response.batch.aggregation_results[0].aggregate_properties
    kinds = {alias: values[alias]._pb.WhichOneof("value_type") for alias in ("n", "total", "mean")}
    assert kinds == {"n": "integer_value", "total": "integer_value", "mean": "null_value"}
    assert values["n"].integer_value == 0 and values["total"].integer_value == 0
