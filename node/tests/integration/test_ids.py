"""Ids: auto-allocation in commits (the MutationResult layout both clients rely on),
AllocateIds, ReserveIds, and ids never handed out twice, not even across restarts."""

from __future__ import annotations

from typing import Any

from google.cloud import datastore

from tests.harness import NodeProcess
from tests.integration.support import datastore_client, raw_api


def test_put_multi_mixing_incomplete_and_complete_keys_gives_ids_to_the_right_entities(
    client: Any,
) -> None:
    entities = []
    for i in range(12):
        key = client.key("Mixed", f"named-{i}") if i % 3 == 0 else client.key("Mixed")
        entity = datastore.Entity(key)
        entity["i"] = i
        entities.append(entity)
    client.put_multi(entities)
    for i, entity in enumerate(entities):
        assert not entity.key.is_partial, i
        if i % 3 == 0:
            assert entity.key.name == f"named-{i}"
        stored = client.get(entity.key)
        assert stored is not None, entity.key
        assert stored["i"] == i  # the id the client recorded is the id this entity got
    ids = [e.key.id for e in entities if e.key.id is not None]
    assert len(set(ids)) == len(ids) == 8


def test_commit_sets_mutation_result_keys_only_for_allocated_ids(client: Any) -> None:
    mutations = [
        {"upsert": {"key": client.key("Layout", "c").to_protobuf()}},
        {"insert": {"key": client.key("Layout").to_protobuf()}},
        {"delete": client.key("Layout", "zzz").to_protobuf()},
        {"upsert": {"key": client.key("Layout", "p", "Layout").to_protobuf()}},
    ]
    response = raw_api(client).commit(
        request={"project_id": client.project, "mode": 2, "mutations": mutations}
    )
    results = response.mutation_results
    assert len(results) == 4  # one per mutation, in order (the Node client zips by position)
    assert "key" not in results[0]
    assert "key" in results[1] and results[1].key.path[0].id > 0
    assert results[1].key.partition_id.project_id == client.project
    assert "key" not in results[2]
    assert [e.kind for e in results[3].key.path] == ["Layout", "Layout"]
    assert results[3].key.path[0].name == "p" and results[3].key.path[1].id > 0


def test_allocate_ids_returns_distinct_ids_that_commits_never_reuse(client: Any) -> None:
    allocated = client.allocate_ids(client.key("Alloc"), 200)
    ids = {k.id for k in allocated}
    assert len(ids) == 200
    assert all(k.project == client.project and k.kind == "Alloc" for k in allocated)
    auto = [datastore.Entity(client.key("Alloc")) for _ in range(50)]
    client.put_multi(auto)
    assert not ids & {e.key.id for e in auto}


def test_allocate_ids_keeps_the_ancestor_path_and_namespace(
    node: NodeProcess, project: str
) -> None:
    client = datastore_client(node.client_addr, project, namespace="n1")
    keys = client.allocate_ids(client.key("Parent", "p", "Child"), 3)
    assert [k.flat_path[:3] for k in keys] == [("Parent", "p", "Child")] * 3
    assert all(k.namespace == "n1" for k in keys)


def test_reserved_ids_are_never_auto_allocated(client: Any) -> None:
    probe = client.allocate_ids(client.key("Res"), 1)[0].id
    reserved = [client.key("Res", probe + n) for n in range(1, 200)]
    client.reserve_ids_multi(reserved)
    fresh = client.allocate_ids(client.key("Res"), 100)
    assert not {k.id for k in fresh} & {k.id for k in reserved}
    entity = datastore.Entity(client.key("Res"))
    client.put(entity)
    assert entity.key.id not in {k.id for k in reserved}


def test_reserve_ids_accepts_named_keys_and_ids_in_other_kinds(client: Any) -> None:
    client.reserve_ids_multi([client.key("Res", "name"), client.key("Other", 10**12)])
    assert client.allocate_ids(client.key("Other"), 1)[0].id != 10**12


def test_ids_are_never_reused_across_a_restart(fresh_node: NodeProcess) -> None:
    client = datastore_client(fresh_node.client_addr, "restart-ids")
    before = {k.id for k in client.allocate_ids(client.key("R"), 100)}
    entities = [datastore.Entity(client.key("R")) for _ in range(20)]
    client.put_multi(entities)
    before |= {e.key.id for e in entities}
    assert fresh_node.stop() == 0
    fresh_node.restart()
    client = datastore_client(fresh_node.client_addr, "restart-ids")
    after = {k.id for k in client.allocate_ids(client.key("R"), 100)}
    more = [datastore.Entity(client.key("R")) for _ in range(20)]
    client.put_multi(more)
    after |= {e.key.id for e in more}
    assert len(after) == 120
    assert not before & after
    fresh_node.kill()  # and after a crash too
    fresh_node.restart()
    client = datastore_client(fresh_node.client_addr, "restart-ids")
    last = {k.id for k in client.allocate_ids(client.key("R"), 100)}
    assert not last & (before | after)
