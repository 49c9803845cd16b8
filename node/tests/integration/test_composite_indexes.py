"""Composite indexes through the official client against real node processes: created
as a query needs them, declared by index.yaml, refused without --auto-index, and
maintained on every replica."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import datastore
from google.cloud.datastore.query import PropertyFilter

from tests.harness import Cluster, NodeProcess
from tests.integration.support import datastore_client, metric_samples

INDEX_YAML = """\
indexes:
- kind: Declared
  properties:
  - name: a
  - name: b
    direction: desc
"""
REPLICATION_WAIT_S = 15.0


def composite_plans(node: NodeProcess) -> float:
    return metric_samples(node, "zonestore_query_plans_total").get((("plan", "composite"),), 0.0)


def created(node: NodeProcess) -> list[tuple[str, int, float]]:
    """(kind, entries, seconds) of every `index.created` log line."""
    text = node.log_path.read_text(errors="replace")
    return [
        (m[1], int(m[2]), float(m[3]))
        for m in re.finditer(r"index\.created kind=(\S+) .* entries=(\d+) seconds=([\d.]+)", text)
    ]


def put_tasks(client: Any, n: int, start: int = 1) -> list[dict[str, Any]]:
    rows = []
    batch = []
    for i in range(start, start + n):
        e = datastore.Entity(client.key("Task", i))
        e.update({"done": i % 3 == 0, "priority": (i * 7919) % 1000, "title": f"t{i}"})
        batch.append(e)
        rows.append({"id": i, "done": i % 3 == 0, "priority": (i * 7919) % 1000})
        if len(batch) == 500:
            client.put_multi(batch)
            batch = []
    if batch:
        client.put_multi(batch)
    return rows


def expected_top(rows: list[dict[str, Any]], limit: int = 10) -> list[int]:
    todo = [r for r in rows if not r["done"]]
    todo.sort(key=lambda r: (-r["priority"], r["id"]))
    return [r["id"] for r in todo[:limit]]


def top_query(client: Any) -> Any:
    q = client.query(kind="Task")
    q.add_filter(filter=PropertyFilter("done", "=", False))
    q.order = ["-priority"]
    return q


@pytest.fixture
def yaml_node(tmp_path: Path) -> Iterator[NodeProcess]:
    path = tmp_path / "index.yaml"
    path.write_text(INDEX_YAML)
    proc = NodeProcess(tmp_path, extra=["--index-yaml", str(path)])
    proc.start()
    yield proc
    if proc.alive():
        proc.stop()


def test_a_query_creates_its_index_once_and_is_then_served_by_it(yaml_node: NodeProcess) -> None:
    deadline = time.monotonic() + 10
    while not created(yaml_node) and time.monotonic() < deadline:
        time.sleep(0.05)  # index.yaml is applied once the node leads
    assert [c[0] for c in created(yaml_node)] == ["Declared"]

    client = datastore_client(yaml_node.client_addr, "composite")
    rows = put_tasks(client, 5000)
    before = composite_plans(yaml_node)
    assert [e.key.id for e in top_query(client).fetch(limit=10)] == expected_top(rows)
    kinds = [c[0] for c in created(yaml_node)]
    assert kinds == ["Declared", "Task"]
    _, entries, seconds = created(yaml_node)[-1]
    assert entries == 5000
    print(f"backfill: {entries} entities in {seconds:.3f}s = {entries / seconds:.0f}/s")

    second = composite_plans(yaml_node)
    assert second > before
    assert [e.key.id for e in top_query(client).fetch(limit=10)] == expected_top(rows)
    assert composite_plans(yaml_node) > second
    # New writes are maintained in the index, cursors page through it.
    rows += put_tasks(client, 20, start=6000)
    pages: list[int] = []
    it = top_query(client).fetch(limit=25)
    for page in it.pages:
        pages.extend(e.key.id for e in page)
    assert pages == expected_top(rows, 25)
    assert len(created(yaml_node)) == 2

    # The declared index serves its query without being created again.
    for i in range(1, 6):
        e = datastore.Entity(client.key("Declared", i))
        e.update({"a": i % 2, "b": i})
        client.put(e)
    q = client.query(kind="Declared")
    q.add_filter(filter=PropertyFilter("a", "=", 1))
    q.order = ["-b"]
    third = composite_plans(yaml_node)
    assert [e.key.id for e in q.fetch()] == [5, 3, 1]
    assert composite_plans(yaml_node) > third
    assert len(created(yaml_node)) == 2


def test_without_auto_index_a_query_needing_one_fails_with_the_index_to_add(
    tmp_path: Path,
) -> None:
    proc = NodeProcess(tmp_path, extra=["--auto-index=false"])
    proc.start()
    try:
        client = datastore_client(proc.client_addr, "strict")
        put_tasks(client, 10)
        with pytest.raises(exceptions.FailedPrecondition) as caught:
            list(top_query(client).fetch(limit=10))
        message = caught.value.message
        assert "no matching index found. recommended index is:" in message
        assert "- kind: Task" in message and "direction: desc" in message
    finally:
        proc.stop()


def test_an_index_created_on_the_leader_is_maintained_on_followers(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, size=3)
    cluster.start()
    try:
        leader = cluster.leader()
        client = datastore_client(leader.client_addr, "replicated")
        rows = put_tasks(client, 300)
        assert [e.key.id for e in top_query(client).fetch(limit=10)] == expected_top(rows)
        rows += put_tasks(client, 30, start=1000)  # maintained after creation
        want = expected_top(rows)
        for follower in (n for n in cluster.nodes if n is not leader):
            reader = datastore_client(follower.client_addr, "replicated")
            deadline = time.monotonic() + REPLICATION_WAIT_S
            got: list[int] = []
            while time.monotonic() < deadline:
                got = [e.key.id for e in top_query(reader).fetch(limit=10, eventual=True)]
                if got == want:
                    break
                time.sleep(0.1)
            assert got == want
            assert composite_plans(follower) > 0  # served by its own copy of the index
    finally:
        cluster.stop()
