"""A leader cut off from its followers (every link through a proxy that drops it) stops
taking writes, the majority elects a new leader and goes on, and after healing the old
leader rejoins with nothing acknowledged lost."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc
from google.cloud import datastore

from tests.harness import Cluster
from tests.netproxy import ProxyHub
from tests.replication.test_failover import client_for, present_on, wait_caught_up


@pytest.fixture
def partitioned(tmp_path: Path) -> Iterator[tuple[Cluster, ProxyHub]]:
    hub = ProxyHub()
    cluster = Cluster(tmp_path, 3, proxies=hub)
    cluster.start()
    yield cluster, hub
    cluster.stop()
    hub.close()


def test_a_minority_partitioned_leader_stops_accepting_writes(
    partitioned: tuple[Cluster, ProxyHub],
) -> None:
    cluster, hub = partitioned
    old = cluster.leader()
    majority = [n for n in cluster.nodes if n is not old]
    client_for(old).put(datastore.Entity(client_for(old).key("Acked", "before")))

    hub.isolate(old.node_id)
    new = cluster.leader(among=majority, timeout=20)
    assert new is not old

    majority_client = client_for(new)
    majority_client.put(datastore.Entity(majority_client.key("Acked", "during")))

    isolated = client_for(old)
    started = time.monotonic()
    with pytest.raises((gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError)):
        isolated.put(datastore.Entity(isolated.key("Acked", "lost")), timeout=40)
    assert time.monotonic() - started < 40
    # The isolated replica has stepped down (check-quorum) and names no leader it can reach.
    assert cluster.status(old)["role"] != "leader"

    hub.heal()
    wait_caught_up(cluster, cluster.nodes)
    assert cluster.leader() is not None
    for node in cluster.nodes:
        assert present_on(node, ["before", "during"]) == {"before", "during"}
        assert present_on(node, ["lost"]) == set()
    os.environ.pop("DATASTORE_EMULATOR_HOST", None)
