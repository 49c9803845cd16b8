"""The README's API section, its "not served" table, row by row, through the official
client's GAPIC layer (raw requests: these fields are below the high-level client):
what is accepted and ignored is accepted, what is refused gets the status the table
names."""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core import exceptions

from tests.integration.support import raw_api

TAGS = {"request_tags": ["team:search", "feature:ranking"]}


def key(project: str, ident: int) -> dict[str, Any]:
    return {"partition_id": {"project_id": project}, "path": [{"kind": "Doc", "id": ident}]}


def vector(values: list[float]) -> dict[str, Any]:
    return {
        "array_value": {"values": [{"double_value": v} for v in values]},
        "meaning": 31,
        "exclude_from_indexes": True,
    }


def nearest_query(**extra: Any) -> dict[str, Any]:
    return {
        "kind": [{"name": "Doc"}],
        "find_nearest": {
            "vector_property": {"name": "emb"},
            "query_vector": vector([1.0, 0.0]),
            "distance_measure": 1,
            "limit": {"value": 2},
        },
        **extra,
    }


def test_request_options_are_accepted_on_every_rpc(client: Any, project: str) -> None:
    api = raw_api(client)
    base = {"project_id": project, "request_options": TAGS}
    api.commit(
        request={
            **base,
            "mode": 2,
            "mutations": [
                {"upsert": {"key": key(project, 1), "properties": {"emb": vector([1, 0])}}}
            ],
        }
    )
    assert len(api.lookup(request={**base, "keys": [key(project, 1)]}).found) == 1
    query = {"kind": [{"name": "Doc"}]}
    assert len(api.run_query(request={**base, "query": query}).batch.entity_results) == 1
    count = api.run_aggregation_query(
        request={
            **base,
            "aggregation_query": {"nested_query": query, "aggregations": [{"count": {}}]},
        }
    )
    assert count.batch.aggregation_results[0].aggregate_properties["property_1"].integer_value == 1
    txn = api.begin_transaction(request=base).transaction
    api.rollback(request={**base, "transaction": txn})
    allocated = api.allocate_ids(
        request={
            **base,
            "keys": [{"partition_id": {"project_id": project}, "path": [{"kind": "Doc"}]}],
        }
    )
    assert allocated.keys[0].path[0].id > 0
    api.reserve_ids(request={**base, "keys": [key(project, 77)]})


def test_previous_transaction_is_accepted_and_the_retry_commits(client: Any, project: str) -> None:
    api = raw_api(client)
    first = api.begin_transaction(request={"project_id": project}).transaction
    api.rollback(request={"project_id": project, "transaction": first})
    retry = api.begin_transaction(
        request={
            "project_id": project,
            "transaction_options": {"read_write": {"previous_transaction": first}},
        }
    ).transaction
    assert retry and retry != first
    api.commit(
        request={
            "project_id": project,
            "mode": 1,
            "transaction": retry,
            "mutations": [{"upsert": {"key": key(project, 2), "properties": {}}}],
        }
    )
    assert len(api.lookup(request={"project_id": project, "keys": [key(project, 2)]}).found) == 1


def test_a_gql_cursor_binding_is_invalid_argument(client: Any, project: str) -> None:
    api = raw_api(client)
    with pytest.raises(exceptions.InvalidArgument, match="must be a value"):
        api.run_query(
            request={
                "project_id": project,
                "gql_query": {
                    "query_string": "SELECT * FROM Doc LIMIT @1",
                    "positional_bindings": [{"cursor": b"\x01"}],
                },
            }
        )


@pytest.mark.parametrize("extra", ["order", "offset", "start_cursor", "end_cursor", "projection"])
def test_find_nearest_with_paging_or_sorting_is_unimplemented(
    client: Any, project: str, extra: str
) -> None:
    api = raw_api(client)
    api.commit(
        request={
            "project_id": project,
            "mode": 2,
            "mutations": [{"upsert": {"key": key(project, 3), "properties": {}}}],
        }
    )
    cursor = api.run_query(
        request={"project_id": project, "query": {"kind": [{"name": "Doc"}]}}
    ).batch.end_cursor
    assert cursor
    fields: dict[str, Any] = {
        "order": [{"property": {"name": "emb"}}],
        "offset": 1,
        "start_cursor": cursor,
        "end_cursor": cursor,
        "projection": [{"property": {"name": "emb"}}],
    }
    query = nearest_query(**{extra: fields[extra]})
    with pytest.raises(exceptions.MethodNotImplemented, match="not served"):
        api.run_query(request={"project_id": project, "query": query})


def test_find_nearest_on_an_embedded_vector_or_under_an_aggregation_is_unimplemented(
    client: Any, project: str
) -> None:
    api = raw_api(client)
    embedded = nearest_query()
    embedded["find_nearest"]["vector_property"] = {"name": "doc.emb"}
    with pytest.raises(exceptions.MethodNotImplemented, match="embedded entity"):
        api.run_query(request={"project_id": project, "query": embedded})
    with pytest.raises(exceptions.MethodNotImplemented, match="aggregation"):
        api.run_aggregation_query(
            request={
                "project_id": project,
                "aggregation_query": {
                    "nested_query": nearest_query(),
                    "aggregations": [{"count": {}}],
                },
            }
        )
