"""Entity versions, create/update times and reads as of a past read_time, as seen in the
raw Lookup and Commit responses (the high-level client hides them)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import datastore

from tests.integration.support import raw_api


def lookup(client: Any, key: Any, **read_options: Any) -> Any:
    request: dict[str, Any] = {"project_id": client.project, "keys": [key.to_protobuf()]}
    if read_options:
        request["read_options"] = read_options
    return raw_api(client).lookup(request=request)


def put(client: Any, key: Any, **props: Any) -> Any:
    entity = datastore.Entity(key)
    entity.update(props)
    client.put(entity)


def test_found_entities_carry_version_create_time_and_update_time(client: Any) -> None:
    key = client.key("V", "a")
    put(client, key, n=1)
    found = lookup(client, key).found[0]
    assert found.version > 0
    assert found.create_time is not None and found.update_time is not None
    assert found.create_time == found.update_time
    assert abs(found.update_time.timestamp() - datetime.datetime.now(datetime.UTC).timestamp()) < 60


def test_versions_increase_with_updates_and_create_time_stays(client: Any) -> None:
    key = client.key("V", "b")
    seen = []
    for n in range(5):
        put(client, key, n=n)
        seen.append(lookup(client, key).found[0])
    versions = [f.version for f in seen]
    assert versions == sorted(versions) and len(set(versions)) == 5
    assert {f.create_time for f in seen} == {seen[0].create_time}
    assert [f.update_time for f in seen] == sorted(f.update_time for f in seen)
    assert seen[-1].update_time > seen[-1].create_time


def test_recreating_a_deleted_entity_gives_a_new_create_time(client: Any) -> None:
    key = client.key("V", "c")
    put(client, key, n=1)
    first = lookup(client, key).found[0]
    client.delete(key)
    put(client, key, n=2)
    second = lookup(client, key).found[0]
    assert second.create_time > first.create_time
    assert second.version > first.version


def test_commit_results_report_the_version_the_lookup_then_sees(client: Any) -> None:
    key = client.key("V", "d")
    response = raw_api(client).commit(
        request={
            "project_id": client.project,
            "mode": 2,
            "mutations": [{"upsert": {"key": key.to_protobuf()}}],
        }
    )
    result = response.mutation_results[0]
    found = lookup(client, key).found[0]
    assert result.version == found.version
    assert response.commit_time == found.update_time


def test_missing_results_carry_a_version_and_the_response_a_read_time(client: Any) -> None:
    response = lookup(client, client.key("V", "never"))
    assert len(response.missing) == 1
    assert response.missing[0].version > 0
    assert response.read_time is not None


def test_lookup_at_a_past_read_time_returns_the_data_as_of_then(client: Any) -> None:
    key = client.key("V", "history")
    put(client, key, n=1)
    t1 = lookup(client, key).read_time
    put(client, key, n=2)
    t2 = lookup(client, key).read_time
    client.delete(key)
    t3 = lookup(client, key).read_time

    def at(read_time: Any) -> Any:
        return lookup(client, key, read_time=read_time)

    assert at(t1).found[0].entity.properties["n"].integer_value == 1
    assert at(t2).found[0].entity.properties["n"].integer_value == 2
    assert len(at(t3).missing) == 1
    before_all = t1 - datetime.timedelta(seconds=5)
    assert len(at(before_all).missing) == 1
    # The high-level client passes read_time through as well.
    assert client.get(key, read_time=t1)["n"] == 1


def test_a_read_only_transaction_at_a_read_time_sees_that_snapshot(client: Any) -> None:
    key = client.key("V", "ro")
    put(client, key, n=1)
    t1 = lookup(client, key).read_time
    put(client, key, n=2)
    with client.transaction(read_only=True, read_time=t1):
        assert client.get(key)["n"] == 1
    assert client.get(key)["n"] == 2


def test_read_time_older_than_retention_is_rejected(client: Any) -> None:
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2)
    with pytest.raises(exceptions.InvalidArgument, match="read_time"):
        lookup(client, client.key("V", "x"), read_time=old)
