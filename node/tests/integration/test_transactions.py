"""Transactions through the official Python client: commit, rollback, begin_later,
read-only, snapshot reads, contention, conflicts and invalid transaction ids."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import datastore

from tests.harness import NodeProcess
from tests.integration.support import datastore_client, raw_api


def put(client: Any, key: Any, **props: Any) -> None:
    entity = datastore.Entity(key)
    entity.update(props)
    client.put(entity)


def test_a_committed_transaction_writes_all_its_mutations(client: Any) -> None:
    with client.transaction() as txn:
        for i in range(1, 4):
            entity = datastore.Entity(client.key("T", i))
            entity["i"] = i
            txn.put(entity)
        txn.delete(client.key("T", 99))
    got = client.get_multi([client.key("T", i) for i in (1, 2, 3)])
    assert sorted(e["i"] for e in got) == [1, 2, 3]


def test_a_transaction_may_allocate_ids_for_incomplete_keys(client: Any) -> None:
    entity = datastore.Entity(client.key("T"))
    entity["auto"] = True
    with client.transaction() as txn:
        txn.put(entity)
    assert entity.key.id is not None
    assert client.get(entity.key)["auto"] is True


def test_a_rolled_back_transaction_writes_nothing(client: Any) -> None:
    txn = client.transaction()
    txn.begin()
    put_key = client.key("T", "rolled")
    txn.put(datastore.Entity(put_key))
    txn.rollback()
    assert client.get(put_key) is None


def test_an_exception_inside_the_with_block_rolls_back(client: Any) -> None:
    key = client.key("T", "boom")
    with pytest.raises(RuntimeError, match="boom"), client.transaction() as txn:
        txn.put(datastore.Entity(key))
        raise RuntimeError("boom")
    assert client.get(key) is None


def test_begin_later_starts_the_transaction_inline_in_the_first_lookup(client: Any) -> None:
    key = client.key("T", "later")
    put(client, key, n=1)
    with client.transaction(begin_later=True) as txn:
        assert txn.id is None
        entity = client.get(key)
        assert txn.id  # the Lookup response carried the new transaction
        entity["n"] += 1
        txn.put(entity)
    assert client.get(key)["n"] == 2


def test_begin_later_without_reads_commits_its_writes(client: Any) -> None:
    key = client.key("T", "later-blind")
    with client.transaction(begin_later=True) as txn:
        txn.put(datastore.Entity(key))
    assert client.get(key) is not None


def test_a_read_only_transaction_reads_but_cannot_write(client: Any) -> None:
    key = client.key("T", "ro")
    put(client, key, n=1)
    with client.transaction(read_only=True):
        assert client.get(key)["n"] == 1
    api = raw_api(client)
    txn_id = api.begin_transaction(
        request={"project_id": client.project, "transaction_options": {"read_only": {}}}
    ).transaction
    with pytest.raises(exceptions.InvalidArgument, match="read-only"):
        api.commit(
            request={
                "project_id": client.project,
                "mode": 1,
                "transaction": txn_id,
                "mutations": [{"upsert": {"key": key.to_protobuf()}}],
            }
        )
    assert client.get(key)["n"] == 1


def test_reads_in_a_transaction_see_its_snapshot_not_later_commits(
    node: NodeProcess, project: str
) -> None:
    client = datastore_client(node.client_addr, project)
    other = datastore_client(node.client_addr, project)
    a, b = client.key("T", "snap-a"), client.key("T", "snap-b")
    put(client, a, n=1)
    put(client, b, n=1)
    with client.transaction(read_only=True):
        assert client.get(a)["n"] == 1
        put(other, a, n=2)
        put(other, b, n=2)
        assert client.get(a)["n"] == 1
        assert client.get(b)["n"] == 1  # not read before the concurrent commit either
    assert client.get(a)["n"] == 2


def test_reads_in_a_transaction_do_not_see_its_own_buffered_writes(client: Any) -> None:
    key = client.key("T", "own")
    put(client, key, n=1)
    with client.transaction() as txn:
        entity = client.get(key)
        entity["n"] = 5
        txn.put(entity)
        assert client.get(key)["n"] == 1
        assert client.get(client.key("T", "own-new")) is None
        txn.put(datastore.Entity(client.key("T", "own-new")))
        assert client.get(client.key("T", "own-new")) is None
    assert client.get(key)["n"] == 5


def test_the_second_of_two_conflicting_transactions_is_aborted(
    node: NodeProcess, project: str
) -> None:
    first = datastore_client(node.client_addr, project)
    second = datastore_client(node.client_addr, project)
    key = first.key("T", "pair")
    put(first, key, n=0)
    t1 = first.transaction()
    t2 = second.transaction()
    t1.begin()
    t2.begin()
    e1 = first.get(key, transaction=t1)
    e2 = second.get(key, transaction=t2)
    e1["n"] = 1
    e2["n"] = 2
    t1.put(e1)
    t2.put(e2)
    t1.commit()
    with pytest.raises(exceptions.Aborted, match="aborted"):
        t2.commit()
    assert first.get(key)["n"] == 1


def test_a_transaction_that_read_a_missing_entity_aborts_if_it_was_created(
    node: NodeProcess, project: str
) -> None:
    client = datastore_client(node.client_addr, project)
    other = datastore_client(node.client_addr, project)
    key = client.key("T", "phantom")
    with pytest.raises(exceptions.Aborted), client.transaction() as txn:
        assert client.get(key) is None
        put(other, key, by="other")
        entity = datastore.Entity(key)
        entity["by"] = "txn"
        txn.put(entity)
    assert client.get(key)["by"] == "other"


def increment_with_retries(
    addr: str, project: str, key_name: str, times: int, begin_later: bool = False
) -> int:
    """Increment a counter `times` times, retrying each transaction on Aborted (the
    client does not retry Commit by itself). Returns the number of aborts seen."""
    client = datastore_client(addr, project)
    key = client.key("Counter", key_name)
    aborts = 0
    for _ in range(times):
        deadline = time.monotonic() + 60
        while True:
            try:
                with client.transaction(begin_later=begin_later):
                    entity = client.get(key) or datastore.Entity(key)
                    entity["n"] = entity.get("n", 0) + 1
                    client.put(entity)  # inside the with: buffered in the transaction
                break
            except exceptions.Aborted:
                aborts += 1
                assert time.monotonic() < deadline, "could not commit in 60 s"
    return aborts


@pytest.mark.parametrize(("threads_n", "per_thread", "begin_later"), [(8, 6, False), (4, 5, True)])
def test_concurrent_transactional_increments_reach_exactly_the_right_total(
    node: NodeProcess, project: str, threads_n: int, per_thread: int, begin_later: bool
) -> None:
    errors: list[BaseException] = []
    aborts: list[int] = []

    start = threading.Barrier(threads_n)

    def worker() -> None:
        try:
            start.wait(timeout=30)  # all at once, so that they do collide
            aborts.append(
                increment_with_retries(node.client_addr, project, "c", per_thread, begin_later)
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    client = datastore_client(node.client_addr, project)
    assert client.get(client.key("Counter", "c"))["n"] == threads_n * per_thread
    assert sum(aborts) > 0, "threads on one entity should have collided at least once"


def test_a_committed_transaction_id_cannot_be_reused(client: Any) -> None:
    api = raw_api(client)
    txn_id = api.begin_transaction(request={"project_id": client.project}).transaction
    api.commit(request={"project_id": client.project, "mode": 1, "transaction": txn_id})
    with pytest.raises(exceptions.InvalidArgument, match="expired or is invalid"):
        api.commit(request={"project_id": client.project, "mode": 1, "transaction": txn_id})
    with pytest.raises(exceptions.InvalidArgument):
        api.lookup(
            request={
                "project_id": client.project,
                "keys": [client.key("T", 1).to_protobuf()],
                "read_options": {"transaction": txn_id},
            }
        )


def test_an_unknown_transaction_id_is_invalid_argument(client: Any) -> None:
    api = raw_api(client)
    bogus = b"not-a-transaction"
    with pytest.raises(exceptions.InvalidArgument, match="transaction"):
        api.commit(request={"project_id": client.project, "mode": 1, "transaction": bogus})
    with pytest.raises(exceptions.InvalidArgument, match="transaction"):
        api.rollback(request={"project_id": client.project, "transaction": bogus})
    with pytest.raises(exceptions.InvalidArgument, match="transaction"):
        api.lookup(
            request={
                "project_id": client.project,
                "keys": [client.key("T", 1).to_protobuf()],
                "read_options": {"transaction": bogus},
            }
        )


def test_a_transaction_of_another_project_is_rejected(node: NodeProcess, project: str) -> None:
    mine = datastore_client(node.client_addr, project)
    txn_id = raw_api(mine).begin_transaction(request={"project_id": project}).transaction
    with pytest.raises(exceptions.InvalidArgument, match="another project"):
        raw_api(mine).commit(
            request={"project_id": project + "-x", "mode": 1, "transaction": txn_id}
        )


def test_a_single_use_transaction_commits_atomically(client: Any) -> None:
    key = client.key("T", "single")
    raw_api(client).commit(
        request={
            "project_id": client.project,
            "single_use_transaction": {"read_write": {}},
            "mutations": [{"upsert": {"key": key.to_protobuf()}}],
        }
    )
    assert client.get(key) is not None
