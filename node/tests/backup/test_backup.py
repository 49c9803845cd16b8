"""Online base backups of a running three-replica group to a real S3-compatible server
(versitygw) and restores from them, driven through the `zonestore` CLI as a user runs it;
checked by content and commit version, key by key."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backup import support
from tests.backup.support import ok, zs
from tests.harness import Cluster, NodeProcess
from tests.objstore_server import S3Server
from zonestore_node.backup import objstore


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "group", 3)
    c.start()
    yield c
    c.stop()


def checkpoint_dirs(cluster: Cluster) -> dict[str, list[Path]]:
    found = {}
    for node in cluster.nodes:
        root = node.data_dir / "data" / "backup-checkpoints"
        found[node.node_id] = list(root.iterdir()) if root.is_dir() else []
    return found


def transfer_leadership(cluster: Cluster, leader: NodeProcess, target: NodeProcess) -> None:
    request = urllib.request.Request(
        f"http://{leader.admin_addr}/admin/leader",
        data=json.dumps({"target": target.node_id}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        assert response.status == 200


def test_a_backup_under_writes_is_taken_on_a_follower_survives_a_leader_change_and_restores_exactly(
    cluster: Cluster, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    leader = cluster.leader()
    # Enough data that the upload takes a while (incompressible blobs): the leader
    # change below lands between the checkpoint and the manifest.
    support.load(leader, range(100_001, 100_301), blob_bytes=60_000)  # ~18 MB
    url = s3_server.url(s3_bucket, "zonestore/backups")
    env = s3_server.env()
    with support.Writer(cluster.nodes[0]) as writer:
        writer.wait_for(200)
        process = subprocess.Popen(
            [sys.executable, "-m", "zonestore_node.cli", "backup", "create",
             "--admin", leader.admin_addr, "--to", url, "--parallel", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env},
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not any(checkpoint_dirs(cluster).values()):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint was made"
            time.sleep(0.005)
        source = next(nid for nid, dirs in checkpoint_dirs(cluster).items() if dirs)
        assert source != leader.node_id, "the backup was taken on the leader"
        store = objstore.open_store(url, **s3_server.store_args())
        assert not [i for i in store.list("base/") if i.key.endswith("manifest.json")]
        new_leader = next(n for n in cluster.nodes if n is not leader)
        transfer_leadership(cluster, leader, new_leader)
        assert cluster.leader() is new_leader
        # Still uploading when leadership moved: the manifest comes later.
        assert not [i for i in store.list("base/") if i.key.endswith("manifest.json")]
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stdout + stderr
        writer.wait_for(len(writer.acked) + 50)  # writes went on through it all
    assert "complete" in stdout and f"from {source}" in stdout
    listing = support.backup_ids(url, env)
    [backup] = listing["backups"]
    assert backup["source_node"] == source
    assert ok(zs("backup", "verify", f"{url}/{backup['id']}", env=env)).startswith(
        f"backup {backup['id']} is intact"
    )
    # Ground truth: every key the writer tried, with the version it committed at.
    support.wait_caught_up(cluster)
    every_id = [*range(100_001, 100_301), *writer.attempted]
    source_state = support.versions(cluster.leader(), every_id)
    assert set(writer.acked) <= set(source_state), "an acknowledged write is missing"
    manifest = json.loads(store.get_bytes(f"base/{backup['id']}/manifest.json"))
    cut = int(manifest["commit_ts"])
    expected = support.expected_at(source_state, cut)
    later = set(source_state) - set(expected)
    assert later, "no write committed after the backup's timestamp: the test shows nothing"
    restored_dir = tmp_path / "restored"
    out = ok(
        zs(
            "restore", "--from", url, "--backup", backup["id"],
            "--data-dir", str(restored_dir / "data"), "--node-id", "restored-0", env=env,
        )
    )  # fmt: skip
    assert "new group g-" in out
    restored = support.serve_restored(restored_dir)
    try:
        got = support.versions(restored, every_id)
        assert got == expected  # same keys, same content, same commit versions
        assert support.count_all(restored) == len(expected)
        status = json.loads(restored.http_get("/admin/status")[1])
        assert status["group_id"].startswith("g-")
        assert [m["id"] for m in status["members"]] == ["restored-0"]
        # A group of its own: it takes writes.
        support.load(restored, range(900_001, 900_011))
        assert support.count_all(restored) == len(expected) + 10
    finally:
        restored.stop()


def test_list_verify_and_delete_through_the_cli_on_s3(
    cluster: Cluster, s3_server: S3Server, s3_bucket: str
) -> None:
    support.load(cluster.leader(), range(1, 101))
    url = s3_server.url(s3_bucket)
    env = s3_server.env()
    first = ok(zs("backup", "create", "--admin", cluster.nodes[2].admin_addr, "--to", url, env=env))
    second = ok(
        zs("backup", "create", "--admin", cluster.nodes[1].admin_addr, "--to", url, env=env)
    )
    listed = [b["id"] for b in support.backup_ids(url, env)["backups"]]
    assert listed == sorted(listed)
    # Ids start with the commit time to the second, then a random part: two backups of
    # the same state (no write between them) may list in either order.
    ids = [str(re.search(r"backup (\S+) complete", out)[1]) for out in (first, second)]  # type: ignore[index]
    assert sorted(ids) == listed, (ids, listed)
    table = ok(zs("backup", "list", url, env=env))
    assert table.splitlines()[0].split()[:2] == ["ID", "COMMIT"] and ids[1] in table
    ok(zs("backup", "delete", f"{url}/{ids[0]}", env=env))
    assert [b["id"] for b in support.backup_ids(url, env)["backups"]] == [ids[1]]
    assert objstore.open_store(url, **s3_server.store_args()).list(f"base/{ids[0]}/") == []
    missing = zs("backup", "verify", f"{url}/{ids[0]}", env=env)
    assert missing.returncode == 1 and f"no backup {ids[0]}" in missing.stderr
    bad = zs("backup", "verify", url, env=env)
    assert bad.returncode == 2 and "want URL/ID" in bad.stderr
    unreachable = zs("backup", "create", "--admin", "127.0.0.1:1", "--to", url, env=env)
    assert unreachable.returncode == 1 and "cannot reach the admin API" in unreachable.stderr
