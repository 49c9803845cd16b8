"""A three-replica group of real processes on loopback, driven by the official client:
failover without losing acknowledged writes, catch-up by log and by snapshot, learners,
leadership transfer, a paused leader."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc
from google.cloud import datastore

from tests.harness import Cluster, NodeProcess

PROJECT = "repl"


def client_for(node: NodeProcess) -> datastore.Client:
    os.environ["DATASTORE_EMULATOR_HOST"] = node.client_addr
    return datastore.Client(project=PROJECT)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, 3, extra=["--snapshot-every", "100", "--snapshot-keep", "20"])
    c.start()
    yield c
    c.stop()


class Writers:
    """Threads writing unique entities through the official client to given replicas,
    recording which writes were acknowledged."""

    def __init__(self, nodes: list[NodeProcess], threads: int = 4) -> None:
        self.acked: list[str] = []
        self.failed = 0
        self.errors: list[str] = []
        self.first_ok_after: dict[float, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(nodes[i % len(nodes)], i), daemon=True)
            for i in range(threads)
        ]
        self.last_ok = 0.0

    def _run(self, node: NodeProcess, n: int) -> None:
        client = client_for(node)
        i = 0
        while not self._stop.is_set():
            name = f"w{n}-{i}"
            i += 1
            entity = datastore.Entity(client.key("Acked", name))
            entity["n"] = i
            try:
                client.put(entity, timeout=10)
            except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
                with self._lock:
                    self.failed += 1
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)
                continue
            with self._lock:
                self.acked.append(name)
                self.last_ok = time.monotonic()

    def __enter__(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def wait_caught_up(cluster: Cluster, nodes: list[NodeProcess], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = [cluster.status(n) for n in nodes]
        applied = {int(s["applied_index"]) for s in statuses}
        commits = {int(s["commit_index"]) for s in statuses}
        if len(applied) == 1 and applied == {max(commits)}:
            return
        time.sleep(0.1)
    raise TimeoutError(f"replicas did not converge: {[cluster.status(n) for n in nodes]}")


def present_on(node: NodeProcess, names: list[str]) -> set[str]:
    """Names found by an eventual (local) read on this very replica."""
    client = client_for(node)
    found: set[str] = set()
    for start in range(0, len(names), 500):
        keys = [client.key("Acked", n) for n in names[start : start + 500]]
        for entity in client.get_multi(keys, eventual=True):
            found.add(entity.key.name)
    return found


def test_killing_the_leader_under_load_loses_no_acknowledged_write(cluster: Cluster) -> None:
    leader = cluster.leader()
    followers = [n for n in cluster.nodes if n is not leader]
    with Writers(cluster.nodes, threads=6) as writers:
        time.sleep(2.0)
        before_kill = len(writers.acked)
        killed_at = time.monotonic()
        leader.kill()
        new_leader = cluster.leader(among=followers, timeout=20)
        deadline = time.monotonic() + 20
        while writers.last_ok <= killed_at and time.monotonic() < deadline:
            time.sleep(0.02)
        failover_s = writers.last_ok - killed_at
        time.sleep(1.5)
    assert before_kill > 0, "no write was acknowledged before the kill"
    assert new_leader is not leader
    assert writers.last_ok > killed_at, "writes never resumed after the leader was killed"
    assert failover_s < 10.0, f"first write after the kill took {failover_s:.2f}s"
    leader.start()
    wait_caught_up(cluster, cluster.nodes)
    for node in cluster.nodes:
        missing = set(writers.acked) - present_on(node, writers.acked)
        assert not missing, f"{node.node_id} lost {len(missing)} acknowledged writes"


def test_a_restarted_follower_catches_up_by_log(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    follower.stop()
    client = client_for(leader)
    names = [f"log-{i}" for i in range(40)]
    client.put_multi([datastore.Entity(client.key("Acked", n)) for n in names])
    follower.start()
    wait_caught_up(cluster, cluster.nodes)
    assert present_on(follower, names) == set(names)


def test_a_wiped_replica_rejoins_as_a_learner_by_snapshot_and_is_promoted(cluster: Cluster) -> None:
    leader = cluster.leader()
    victim = next(n for n in cluster.nodes if n is not leader)
    victim.stop()
    code, body = leader.admin("DELETE", f"/admin/members/{victim.node_id}")
    assert code == 200, body
    client = client_for(leader)
    names = [f"snap-{i}" for i in range(300)]
    for start in range(0, len(names), 3):  # many log entries: snapshots and compaction
        client.put_multi(
            [datastore.Entity(client.key("Acked", n)) for n in names[start : start + 3]]
        )
    shutil.rmtree(victim.data_dir / "data")
    victim.extra = [a for a in victim.extra if a != "--join"] + ["--join"]
    victim.spawn()
    code, body = leader.admin(
        "POST",
        "/admin/members",
        {
            "id": victim.node_id,
            "peer_address": f"127.0.0.1:{victim.peer_port}",
            "zone": "z",
            "role": "learner",
        },
    )
    assert code == 200, body
    victim.wait_ready()
    wait_caught_up(cluster, cluster.nodes)
    assert present_on(victim, names) == set(names)
    status = cluster.status(victim)
    assert status["role"] == "learner"
    code, body = leader.admin("POST", f"/admin/members/{victim.node_id}/promote")
    assert code == 200, body
    members = {m["id"]: m["role"] for m in cluster.status(leader)["members"]}
    assert members[victim.node_id] == "voter"
    # Idempotent: promoting again changes nothing.
    code, body = leader.admin("POST", f"/admin/members/{victim.node_id}/promote")
    assert (code, body["changed"]) == (200, False)


def test_leadership_transfer_under_load_fails_no_request(cluster: Cluster) -> None:
    leader = cluster.leader()
    target = next(n for n in cluster.nodes if n is not leader)
    with Writers(cluster.nodes, threads=4) as writers:
        time.sleep(1.0)
        code, body = leader.admin("POST", "/admin/leader", {"target": target.node_id})
        time.sleep(1.0)
    assert code == 200, body
    assert cluster.leader() is target
    assert writers.failed == 0, writers.errors[:5]
    assert len(writers.acked) > 0


def test_a_leader_stopped_gracefully_hands_over_and_no_relayed_write_fails(
    cluster: Cluster,
) -> None:
    """SIGTERM (a pod deleted, a node drained): the leader passes leadership to a caught-up
    follower before it closes its connections, so the group elects nobody by timeout and
    the followers' relays go on to the successor."""
    leader = cluster.leader()
    followers = [n for n in cluster.nodes if n is not leader]
    with Writers(followers, threads=4) as writers:
        time.sleep(1.0)
        assert leader.stop() == 0
        successor = cluster.leader(among=followers, timeout=10)
        time.sleep(1.0)
    log = leader.log_path.read_text(errors="replace")
    assert f"node.handed_off leader={successor.node_id}" in log, leader.log_tail()
    assert writers.failed == 0, writers.errors[:5]
    assert len(writers.acked) > 0
    leader.start()
    wait_caught_up(cluster, cluster.nodes)


def test_a_leader_that_handed_off_keeps_its_client_port_open_and_relays_on(
    cluster: Cluster,
) -> None:
    """After the hand-off the stopping replica drains: the other replicas' views name it
    for a few ms more, so a call reaching its client port then is relayed on to the
    successor instead of being refused because the port already closed."""
    leader = cluster.leader()
    followers = [n for n in cluster.nodes if n is not leader]
    client = client_for(leader)
    key = client.key("Acked", "after-hand-off")
    assert leader.proc is not None
    leader.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while "node.handed_off" not in leader.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, leader.log_tail()
        time.sleep(0.002)
    client.put(datastore.Entity(key), retry=None, timeout=5)  # no retry: refused fails
    assert leader.proc.wait(timeout=20) == 0
    successor = cluster.leader(among=followers, timeout=10)
    assert client_for(successor).get(key) is not None
    leader.start()
    wait_caught_up(cluster, cluster.nodes)


def test_a_paused_leader_is_replaced_and_steps_down_when_resumed(cluster: Cluster) -> None:
    leader = cluster.leader()
    followers = [n for n in cluster.nodes if n is not leader]
    assert leader.proc is not None
    leader.proc.send_signal(signal.SIGSTOP)
    try:
        new_leader = cluster.leader(among=followers, timeout=20)
        client = client_for(new_leader)
        client.put(datastore.Entity(client.key("Acked", "during-pause")))
    finally:
        leader.proc.send_signal(signal.SIGCONT)
    assert new_leader is not leader
    assert cluster.leader() is new_leader
    wait_caught_up(cluster, cluster.nodes)
    assert present_on(leader, ["during-pause"]) == {"during-pause"}


def test_followers_forward_writes_and_strong_reads_to_the_leader(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    client = client_for(follower)
    key = client.key("Acked", "via-follower")
    client.put(datastore.Entity(key))
    assert client.get(key) is not None  # strong read: the write is visible at once
    with client.transaction():
        entity = client.get(key)
        assert entity is not None
        entity["touched"] = True
        client.put(entity)
    assert client.get(key)["touched"] is True
