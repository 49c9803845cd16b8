"""The admin CLI against a running group: status, members, transfer-leader, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Cluster


def zonestore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zonestore_node.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cli"), 3)
    c.start()
    yield c
    c.stop()


def test_status_names_the_leader_and_every_member(group: Cluster) -> None:
    leader = group.leader()
    out = zonestore("status", "--admin", group.nodes[0].admin_addr)
    assert out.returncode == 0, out.stderr
    assert f"leader {leader.node_id}" in out.stdout
    for node in group.nodes:
        assert node.node_id in out.stdout


def test_transfer_leader_through_a_follower_moves_leadership(group: Cluster) -> None:
    leader = group.leader()
    target = next(n for n in group.nodes if n is not leader)
    other = next(n for n in group.nodes if n not in (leader, target))
    out = zonestore("transfer-leader", target.node_id, "--admin", other.admin_addr)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["leader"] == target.node_id
    assert group.leader() is target


def test_removing_an_unknown_member_is_an_idempotent_no_op(group: Cluster) -> None:
    out = zonestore("members", "remove", "nobody", "--admin", group.nodes[1].admin_addr)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["changed"] is False


def test_promoting_a_non_member_fails_with_a_clear_message(group: Cluster) -> None:
    out = zonestore("members", "promote", "ghost", "--admin", group.nodes[2].admin_addr)
    assert out.returncode == 1
    assert "not a member" in out.stdout


def test_an_unreachable_admin_address_is_a_clear_error(tmp_path: Path) -> None:
    out = zonestore("status", "--admin", "127.0.0.1:1")
    assert out.returncode == 1
    assert "cannot reach the admin API" in out.stderr


def test_replication_metrics_count_fsyncs_batches_and_proposals(group: Cluster) -> None:
    import os

    from google.cloud import datastore

    leader = group.leader()
    os.environ["DATASTORE_EMULATOR_HOST"] = leader.client_addr
    client = datastore.Client(project="metrics")
    client.put_multi([datastore.Entity(client.key("M", i)) for i in range(1, 6)])
    code, body = leader.http_get("/metrics")
    assert code == 200
    metrics = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            metrics[name] = float(value)
    assert metrics["zonestore_fsync_duration_seconds_count"] > 0
    assert (
        metrics["zonestore_commit_group_size_sum"]
        >= metrics["zonestore_commit_group_size_count"]
        > 0
    )
    assert metrics["zonestore_proposal_duration_seconds_count"] >= 1
    assert metrics['zonestore_raft_role{role="leader"}'] == 1
    assert metrics['zonestore_raft_members{role="voter"}'] == 3
    assert metrics["zonestore_raft_voter"] == 1
    followers = [n.node_id for n in group.nodes if n is not leader]
    for follower in followers:
        assert f'zonestore_raft_follower_lag_entries{{member="{follower}"}}' in metrics
