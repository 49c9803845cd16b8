"""Version garbage collection on a node with a 1 s retention: old versions go, live data,
deletions, indexes and the snapshots of open transactions stay right."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import datastore
from google.cloud.datastore.query import PropertyFilter

from tests.harness import NodeProcess
from tests.integration.support import datastore_client, metric_samples

GC_WAIT_S = 20.0


@pytest.fixture
def gc_node(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path, extra=["--retention-seconds", "1", "--gc-interval-seconds", "1"])
    proc.start()
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.kill()


def gc_total(node: NodeProcess, name: str) -> float:
    return sum(metric_samples(node, name).values())


def put(client: Any, key: Any, **props: Any) -> None:
    entity = datastore.Entity(key)
    entity.update(props)
    client.put(entity)


def test_gc_drops_old_versions_but_not_live_data_deletions_indexes_or_open_snapshots(
    gc_node: NodeProcess,
) -> None:
    client = datastore_client(gc_node.client_addr, "gc")
    k1, k2, k3 = client.key("G", 1), client.key("G", 2), client.key("G", 3)
    for n in range(3):
        put(client, k1, n=n)
    put(client, k2, n=0)
    client.delete(k2)
    put(client, k3, x=1)
    put(client, k3, x=2)
    snapshot = client.transaction(read_only=True)
    snapshot.begin()
    assert client.get(k1, transaction=snapshot)["n"] == 2
    put(client, k1, n=3)
    written = datetime.datetime.now(datetime.UTC)

    deadline = time.monotonic() + GC_WAIT_S  # GC runs every ~1 s; the window is 1 s
    while gc_total(gc_node, "zonestore_gc_deleted_versions_total") == 0:
        assert time.monotonic() < deadline, "GC collected nothing: " + gc_node.log_tail()
        time.sleep(0.2)
    runs = gc_total(gc_node, "zonestore_gc_runs_total")
    while gc_total(gc_node, "zonestore_gc_runs_total") < runs + 1:  # and one more pass
        assert time.monotonic() < deadline, "GC stopped running: " + gc_node.log_tail()
        time.sleep(0.2)

    assert client.get(k1)["n"] == 3
    assert client.get(k2) is None  # a collected deletion does not bring the entity back
    assert client.get(k3)["x"] == 2

    def xs(value: int) -> list[Any]:
        q = client.query(kind="G")
        q.add_filter(filter=PropertyFilter("x", "=", value))
        return [e.key for e in q.fetch()]

    assert xs(1) == []
    assert xs(2) == [k3]
    # The open transaction's snapshot was held back from collection.
    assert client.get(k1, transaction=snapshot)["n"] == 2
    snapshot.rollback()
    with pytest.raises(exceptions.InvalidArgument, match="retention"):
        client.get(k1, read_time=written - datetime.timedelta(seconds=5))
