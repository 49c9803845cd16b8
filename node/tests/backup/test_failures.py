"""Backups the way they fail: the uploader or the replica it reads from killed with
kill -9 mid-upload (the partial backup is never listed as complete, the next backup
succeeds), a corrupted or missing object in a backup or the archive (verify and restore
refuse, naming the object), and bad destinations or credentials (one clear line from the
CLI, non-zero exit)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backup import history, support
from tests.backup.support import ok, zs
from tests.harness import Cluster, NodeProcess
from tests.objstore_server import S3Server
from zonestore_node.backup import archive, objstore


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "group", 3)
    c.start()
    yield c
    c.stop()


def start_backup(admin: str, url: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "zonestore_node.cli", "backup", "create",
         "--admin", admin, "--to", url, "--parallel", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env},
    )  # fmt: skip


def wait_partial(store: objstore.ObjectStore, process: subprocess.Popen[str]) -> None:
    """Until some of a backup's files are uploaded and its manifest is not."""
    deadline = time.monotonic() + 120
    while not store.list("base/"):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "nothing was uploaded"
        time.sleep(0.01)


def no_manifest(store: objstore.ObjectStore) -> bool:
    return not [i for i in store.list("base/") if i.key.endswith("/manifest.json")]


def test_an_uploader_killed_mid_upload_leaves_no_complete_backup_and_the_next_one_succeeds(
    cluster: Cluster, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    support.load(cluster.leader(), range(1, 301), blob_bytes=60_000)  # ~18 MB
    url, env = s3_server.url(s3_bucket, "b"), s3_server.env()
    store = objstore.open_store(url, **s3_server.store_args())
    process = start_backup(cluster.nodes[0].admin_addr, url, env)
    wait_partial(store, process)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)  # reaps it and closes its pipes
    assert no_manifest(store), "the upload finished before the kill: the test shows nothing"
    listing = support.backup_ids(url, env, everything=True)
    assert listing["backups"] == [] and len(listing["incomplete"]) == 1
    [partial] = listing["incomplete"]
    assert "incomplete" in ok(zs("backup", "list", url, "--all", env=env))
    refused = zs("backup", "verify", f"{url}/{partial}", env=env)
    assert refused.returncode == 1 and f"backup {partial} in {url}" in refused.stderr
    assert "is incomplete" in refused.stderr
    nothing = zs("restore", "--from", url, "--data-dir", str(tmp_path / "r" / "data"), env=env)
    assert nothing.returncode == 1 and "no complete base backup" in nothing.stderr
    # The next backup succeeds and restores; the partial one can be deleted.
    ok(zs("backup", "create", "--admin", cluster.nodes[0].admin_addr, "--to", url, env=env))
    [done] = support.backup_ids(url, env)["backups"]
    assert done["id"] != partial
    ok(zs("backup", "verify", f"{url}/{done['id']}", env=env))
    ok(zs("backup", "delete", f"{url}/{partial}", env=env))
    assert support.backup_ids(url, env, everything=True)["incomplete"] == []
    ok(zs("restore", "--from", url, "--data-dir", str(tmp_path / "r" / "data"),
          "--node-id", "restored-0", env=env))  # fmt: skip
    node = support.serve_restored(tmp_path / "r")
    try:
        assert support.count_all(node) == 300
    finally:
        node.stop()


def test_the_replica_killed_mid_upload_fails_the_backup_clearly_and_the_next_one_succeeds(
    cluster: Cluster, tmp_path: Path
) -> None:
    support.load(cluster.leader(), range(1, 301), blob_bytes=60_000)
    url = (tmp_path / "backups").as_uri()
    store = objstore.open_store(url)
    process = start_backup(cluster.nodes[0].admin_addr, url, {})
    wait_partial(store, process)
    source = next(
        n for n in cluster.nodes if any((n.data_dir / "data" / "backup-checkpoints").glob("*"))
    )
    source.kill()
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stdout + stderr
    assert "Traceback" not in stderr, stderr
    # Killed between two files (the next one cannot be asked for) or in the middle of
    # one (its body ends short): either way one line naming the file's URL.
    last = stderr.splitlines()[-1]
    assert re.match(r"zonestore backup: (cannot read|reading) http://\S+/files/", last), stderr
    assert support.backup_ids(url, everything=True) == {"backups": [], "incomplete": []}
    survivor = next(n for n in cluster.nodes if n.alive())
    out = ok(zs("backup", "create", "--admin", survivor.admin_addr, "--to", url))
    assert "complete" in out and f"from {source.node_id}" not in out
    [done] = support.backup_ids(url)["backups"]
    ok(zs("backup", "verify", f"{url}/{done['id']}"))


@pytest.fixture
def archived(tmp_path: Path) -> Iterator[tuple[str, NodeProcess, history.History]]:
    """A group of one archiving to a folder, with a base backup and writes after it."""
    url = (tmp_path / "backups").as_uri()
    node = NodeProcess(
        tmp_path / "solo",
        node_id="solo-0",
        extra=["--archive-to", url, "--archive-max-delay-seconds", "0.3"],
    )
    node.start()
    try:
        writes = history.History()
        writes.write(node, range(1, 21), 20, delete_share=0)
        ok(zs("backup", "create", "--admin", node.admin_addr, "--to", url))
        writes.write(node, range(1, 21), 30)
        history.wait_archived(objstore.open_store(url), "", writes.events[-1][0])
        yield url, node, writes
    finally:
        node.stop()


def test_a_corrupted_or_missing_object_is_refused_by_verify_and_restore_naming_it(
    archived: tuple[str, NodeProcess, history.History], tmp_path: Path
) -> None:
    url, _, _ = archived
    folder = Path(url.removeprefix("file://"))
    [backup] = support.backup_ids(url)["backups"]
    files = sorted(p for p in (folder / "base" / backup["id"] / "files").rglob("*") if p.is_file())
    victim = max(files, key=lambda p: (p.suffix == ".sst", p.stat().st_size))  # data
    name = victim.relative_to(folder).as_posix()
    original = victim.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    victim.write_bytes(bytes(flipped))
    for args in (
        ["backup", "verify", f"{url}/{backup['id']}"],
        ["restore", "--from", url, "--data-dir", str(tmp_path / "c" / "data")],
    ):
        refused = zs(*args)
        assert refused.returncode == 1, refused.stdout
        assert f"object {url}/{name} fails its SHA-256 check" in refused.stderr, refused.stderr
        assert "corrupted" in refused.stderr
    assert not (tmp_path / "c" / "data" / "db").exists()
    assert [p.name for p in (tmp_path / "c" / "data").iterdir()] == []  # staging removed

    victim.unlink()
    for args in (
        ["backup", "verify", f"{url}/{backup['id']}"],
        ["restore", "--from", url, "--data-dir", str(tmp_path / "m" / "data")],
    ):
        refused = zs(*args)
        assert refused.returncode == 1, refused.stdout
        assert f"object {url}/{name} is missing" in refused.stderr, refused.stderr
    victim.write_bytes(original)
    ok(zs("backup", "verify", f"{url}/{backup['id']}"))


def test_a_corrupted_archive_segment_is_refused_by_restore_naming_it(
    archived: tuple[str, NodeProcess, history.History], tmp_path: Path
) -> None:
    url, _, _ = archived
    store = objstore.open_store(url)
    segments = archive.list_segments(store, "")
    folder = Path(url.removeprefix("file://"))
    victim = folder / segments[-1].key
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    refused = zs("restore", "--from", url, "--to-latest", "--data-dir", str(tmp_path / "x"))
    assert refused.returncode == 1, refused.stdout
    assert f"archive segment {url}/{segments[-1].key} fails its SHA-256 check" in refused.stderr
    assert not (tmp_path / "x" / "db").exists()


def test_bad_destinations_and_credentials_get_one_clear_line_and_a_non_zero_exit(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    env = s3_server.env()
    cases = [
        (["backup", "list", "ftp://host/x"], env, 2, "unsupported destination"),
        (["backup", "list", "file://relative/x"], env, 2, "a file URL names a local folder"),
        (["backup", "list", "s3://"], env, 2, "an S3 URL names a bucket"),
        (
            ["backup", "list", s3_server.url(s3_bucket)],
            {**env, "AWS_SECRET_ACCESS_KEY": "wrong"},
            1,
            "SignatureDoesNotMatch",
        ),
        (
            ["backup", "list", s3_server.url(s3_bucket)],
            {**env, "AWS_ACCESS_KEY_ID": "nobody"},
            1,
            "No user exists with the provided access key ID",
        ),
        (["backup", "list", s3_server.url("no-such-bucket")], env, 1, "NoSuchBucket"),
        (
            ["restore", "--from", (tmp_path / "empty").as_uri(), "--data-dir", str(tmp_path)],
            env,
            1,
            "no complete base backup",
        ),
        (
            [
                "restore",
                "--from",
                s3_server.url(s3_bucket),
                "--to-time",
                "yesterday",
                "--data-dir",
                str(tmp_path / "r"),
            ],
            env,
            2,
            "is not an RFC 3339 time",
        ),
    ]
    for args, case_env, code, words in cases:
        result = zs(*args, env=case_env, timeout=120)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    # A node asked to archive to a URL that names no destination refuses to start.
    refused = zs(
        "serve", "--data-dir", str(tmp_path / "n"), "--archive-to", "gs://bucket", timeout=60
    )
    assert refused.returncode != 0 and "--archive-to" in refused.stderr, refused.stderr
