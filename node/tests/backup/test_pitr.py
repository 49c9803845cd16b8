"""Point-in-time recovery end to end: a three-replica group archiving with --archive-to
(to a folder and to a real S3 server), a recorded history of upserts and deletes with
their commit timestamps, a leader change in the middle, and restores through the CLI to
times between two commits and to the latest, checked key by key by content. Then an
archive destination that goes away: the lag metric grows, writes go on, and the archive
catches up without a gap once it is back."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backup import history, support
from tests.backup.support import ok, zs
from tests.backup.test_backup import transfer_leadership
from tests.harness import Cluster, NodeProcess
from tests.objstore_server import S3Server
from zonestore_node.backup import archive, catalog, objstore, restore

IDS = range(1, 41)


@pytest.fixture(params=["file", "s3"])
def destination(
    request: pytest.FixtureRequest, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> tuple[str, dict[str, str], objstore.ObjectStore]:
    if request.param == "file":
        url = (tmp_path / "backups").as_uri()
        return url, {}, objstore.open_store(url)
    url = s3_server.url(s3_bucket, "pitr")
    return url, s3_server.env(), objstore.open_store(url, **s3_server.store_args())


@pytest.fixture
def archiving_cluster(
    tmp_path: Path, destination: tuple[str, dict[str, str], objstore.ObjectStore]
) -> Iterator[Cluster]:
    url, env, _ = destination
    extra = ["--archive-to", url, "--archive-max-delay-seconds", "0.5"]
    c = Cluster(tmp_path / "group", 3, extra=extra, env=lambda _: env)
    c.start()
    yield c
    c.stop()


def restore_and_read(
    url: str, env: dict[str, str], root: Path, when: list[str], ids: list[int]
) -> tuple[dict[int, tuple[int, str]], int, int]:
    """`zonestore restore` then `zonestore serve` on the folder: (state, archived commits
    replayed, restored index)."""
    out = ok(zs("restore", "--from", url, *when, "--data-dir", str(root / "data"),
                "--node-id", "restored-0", env=env))  # fmt: skip
    found = re.search(r"\+ (\d+) archived commits .* \(index (\d+)\)", out)
    assert found, out
    node = support.serve_restored(root)
    try:
        return history.read_state(node, ids), int(found[1]), int(found[2])
    finally:
        node.stop()


def test_restore_to_a_time_between_two_commits_holds_exactly_the_commits_at_or_before_it(
    archiving_cluster: Cluster,
    destination: tuple[str, dict[str, str], objstore.ObjectStore],
    tmp_path: Path,
) -> None:
    url, env, store = destination
    cluster = archiving_cluster
    leader = cluster.leader()
    writes = history.History()
    writes.write(leader, IDS, 40, delete_share=0)
    ok(zs("backup", "create", "--admin", cluster.nodes[0].admin_addr, "--to", url, env=env))
    [backup] = support.backup_ids(url, env)["backups"]
    manifest = catalog.read_manifest(store, backup["id"])
    cut = manifest.commit_ts
    assert cut >= writes.events[39][0]
    writes.write(leader, IDS, 60)
    before_change = len(writes.events)
    # Archiving goes on across a leader change: the new leader resumes after the highest
    # archived index (once the old leader has shipped its writes; a successor listing the
    # archive before that ships them again, which restore tolerates).
    history.wait_archived(store, "", writes.events[-1][0])
    successor = next(n for n in cluster.nodes if n is not leader)
    transfer_leadership(cluster, leader, successor)
    assert cluster.leader() is successor
    writes.write(successor, IDS, 60)
    last_ts = writes.events[-1][0]
    segments = history.wait_archived(store, "", last_ts)
    support.wait_caught_up(cluster)
    applied = int(cluster.status(successor)["applied_index"])
    covered, next_index = restore.chain(segments, 0)
    assert next_index > applied - 2, "the archive has a gap or stops short"  # a no-op may trail
    assert {s.key for s in covered} <= {s.key for s in segments}
    log_text = successor.log_path.read_text()
    assert "archive.resume next_index=" in log_text, "the new leader did not resume archiving"
    resumed = int(re.findall(r"archive\.resume next_index=(\d+)", log_text)[-1])
    assert resumed > 1, "the new leader started the archive over"

    ids = writes.ids
    # Two targets: between commits before the leader change, and after it.
    for k in (before_change - 20, len(writes.events) - 15):
        lo, hi = writes.events[k][0], writes.events[k + 1][0]
        target = (lo + hi) // 2
        assert lo <= target < hi
        expected = writes.state_at(target)
        assert expected != writes.state_at(lo - 1) or writes.events[k][2] is None
        got, replayed, _ = restore_and_read(
            url, env, tmp_path / f"at-{k}", ["--to-time", catalog.rfc3339(target)], ids
        )
        assert got == expected, f"restored to between commit {k} and {k + 1}"
        # Each archived commit after the backup and at or before the target, once.
        assert replayed == sum(1 for v, _, _ in writes.events if cut < v <= target)

    got, replayed, index = restore_and_read(url, env, tmp_path / "latest", ["--to-latest"], ids)
    assert got == writes.state_at(last_ts), "an acknowledged write is missing or wrong"
    assert replayed == sum(1 for v, _, _ in writes.events if v > cut)
    assert index >= applied - 1, "the restore stopped short of the archive's end"


def test_an_unreachable_archive_shows_as_lag_while_writes_go_on_and_catches_up_without_a_gap(
    tmp_path: Path,
) -> None:
    with S3Server(tmp_path / "s3") as server:
        server.create_bucket("archive")
        url = server.url("archive", "lag")
        node = NodeProcess(
            tmp_path / "solo",
            node_id="solo-0",
            extra=["--archive-to", url, "--archive-max-delay-seconds", "0.5"],
            env=server.env(),
        )
        node.start()
        store = objstore.open_store(url, **server.store_args())
        try:
            writes = history.History()
            writes.write(node, IDS, 20)
            history.wait_archived(store, "", writes.events[-1][0])
            assert history.metric(node, "zonestore_archive_lag_seconds") < 5
            server.stop()  # the destination goes away
            started = time.monotonic()
            lags = []
            while time.monotonic() - started < 8:
                before = len(writes.events)
                t0 = time.monotonic()
                writes.write(node, IDS, 10)
                assert len(writes.events) == before + 10
                assert time.monotonic() - t0 < 10, "writes stalled behind the archive"
                lags.append(history.metric(node, "zonestore_archive_lag_seconds"))
            assert lags[-1] > 4, f"the lag does not show: {lags}"
            assert lags[-1] > lags[len(lags) // 2] >= 0, f"the lag does not grow: {lags}"
            assert history.metric(node, "zonestore_archive_upload_failures_total") > 0
            server.start()  # back, same port and buckets
            segments = history.wait_archived(store, "", writes.events[-1][0], timeout=90)
            _, next_index = restore.chain(segments, 0)
            applied = int(json.loads(node.http_get("/admin/status")[1])["applied_index"])
            assert next_index > applied - 1, "the archive has a gap"
            assert history.metric(node, "zonestore_archive_gaps_total") == 0
            deadline = time.monotonic() + 30
            while history.metric(node, "zonestore_archive_lag_seconds") > 2:
                assert time.monotonic() < deadline, "the lag did not come back down"
                time.sleep(0.2)
            # Every commit is in the archive, each once.
            archived = [
                index
                for s in segments
                for index, _, _, data in archive.decode_segment(store.get_bytes(s.key), s.key)[1]
                if data.startswith(b"C")
            ]
            assert len(set(archived)) >= len(writes.events)
        finally:
            node.stop()
