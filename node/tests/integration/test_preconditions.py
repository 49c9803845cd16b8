"""Update-time preconditions (`Mutation.update_time`) and `conflict_resolution_strategy`,
through raw GAPIC requests (the official client's put hides both): a mismatch keeps the
server's entity and says conflict_detected (SERVER_VALUE, the default), or fails the
whole commit with FAILED_PRECONDITION (FAIL, as the Firestore emulator in Datastore mode
answers)."""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud.datastore_v1.types import entity as entity_pb

from tests.integration.support import raw_api

SERVER_VALUE, FAIL = 1, 3


def commit(client: Any, *mutations: dict[str, Any]) -> Any:
    return raw_api(client).commit(
        request={"project_id": client.project, "mode": 2, "mutations": list(mutations)}
    )


def entity(client: Any, name: str, n: int) -> Any:
    e = entity_pb.Entity(key=client.key("Pre", name).to_protobuf())
    e.properties["n"] = entity_pb.Value(integer_value=n)
    return e


def stored_update_time(client: Any, name: str) -> Any:
    response = raw_api(client).lookup(
        request={"project_id": client.project, "keys": [client.key("Pre", name).to_protobuf()]}
    )
    return response.found[0].update_time


def test_a_matching_update_time_writes_and_a_stale_one_keeps_the_server_entity(
    client: Any,
) -> None:
    commit(client, {"upsert": entity(client, "a", 1)})
    first = stored_update_time(client, "a")
    result = commit(client, {"upsert": entity(client, "a", 2), "update_time": first})
    assert result.mutation_results[0].conflict_detected is False
    assert client.get(client.key("Pre", "a"))["n"] == 2
    second = stored_update_time(client, "a")
    stale = commit(client, {"upsert": entity(client, "a", 3), "update_time": first})
    outcome = stale.mutation_results[0]
    assert outcome.conflict_detected is True
    assert outcome.update_time == second  # the server's entity, untouched
    assert client.get(client.key("Pre", "a"))["n"] == 2
    again = commit(
        client,
        {
            "upsert": entity(client, "a", 4),
            "update_time": second,
            "conflict_resolution_strategy": 1,
        },
    )
    assert again.mutation_results[0].conflict_detected is False
    assert client.get(client.key("Pre", "a"))["n"] == 4


def test_an_update_time_on_a_missing_entity_is_a_conflict(client: Any) -> None:
    result = commit(
        client, {"upsert": entity(client, "missing", 1), "update_time": {"seconds": 1700000000}}
    )
    assert result.mutation_results[0].conflict_detected is True
    assert client.get(client.key("Pre", "missing")) is None


@pytest.mark.parametrize("detection", ["update_time", "base_version"])
def test_fail_on_conflict_fails_the_whole_commit(client: Any, detection: str) -> None:
    commit(client, {"upsert": entity(client, "f", 1)})
    stale: dict[str, Any] = (
        {"update_time": {"seconds": 5}} if detection == "update_time" else {"base_version": 5}
    )
    with pytest.raises(exceptions.FailedPrecondition, match="does not match"):
        commit(
            client,
            {"upsert": entity(client, "other", 9)},
            {"upsert": entity(client, "f", 2), "conflict_resolution_strategy": FAIL, **stale},
        )
    assert client.get(client.key("Pre", "f"))["n"] == 1
    assert client.get(client.key("Pre", "other")) is None


def test_fail_inside_a_transaction_fails_the_commit(client: Any) -> None:
    commit(client, {"upsert": entity(client, "t", 1)})
    api = raw_api(client)
    txn = api.begin_transaction(request={"project_id": client.project}).transaction
    with pytest.raises(exceptions.FailedPrecondition):
        api.commit(
            request={
                "project_id": client.project,
                "mode": 1,
                "transaction": txn,
                "mutations": [
                    {"upsert": entity(client, "t2", 1)},
                    {"upsert": entity(client, "t", 2), "base_version": 5,
                     "conflict_resolution_strategy": FAIL},
                ],
            }
        )  # fmt: skip
    assert client.get(client.key("Pre", "t"))["n"] == 1
    assert client.get(client.key("Pre", "t2")) is None


def test_a_resolution_strategy_without_a_detection_strategy_is_invalid(client: Any) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="conflict detection"):
        commit(client, {"upsert": entity(client, "x", 1), "conflict_resolution_strategy": FAIL})
