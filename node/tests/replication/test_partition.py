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


@pytest.mark.parametrize("unsafe", [False, True], ids=["readindex", "unsafe-local-reads"])
def test_strong_reads_through_a_partitioned_follower_are_never_stale(
    tmp_path: Path, unsafe: bool
) -> None:
    """The safe build refuses (or forwards) a strong read it cannot confirm; the
    deliberately broken build (--unsafe-local-reads) returns stale data, which is what
    this test must be able to see."""
    hub = ProxyHub()
    extra = ["--unsafe-local-reads"] if unsafe else []
    cluster = Cluster(tmp_path, 3, extra=extra, proxies=hub)
    cluster.start()
    try:
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes if n is not leader)
        writer = client_for(leader)
        key = writer.key("Acked", "register")
        entity = datastore.Entity(key)
        entity["v"] = 1
        writer.put(entity)
        wait_caught_up(cluster, cluster.nodes)
        hub.isolate(follower.node_id)
        entity["v"] = 2
        writer.put(entity)  # the majority commits v=2 without the follower
        reader = client_for(follower)
        try:
            seen = reader.get(key, timeout=15)
            value = seen["v"] if seen is not None else None
        except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError):
            value = None  # refused: fine, never stale
        if unsafe:
            assert value == 1, "the broken build should have served the stale value"
        else:
            assert value in (2, None), f"stale strong read: {value}"
    finally:
        cluster.stop()
        hub.close()
