"""Disk full under a real node: its data directory on a 16 MiB tmpfs, filled through the
official client until writes fail.

Crash-only (storage/engine.py): the first failed write or fsync ends the process with
exit code 75 and one `storage.failed` line, so nothing is acknowledged that is not
fsynced, and a restart recovers from what is durable. While the disk stays full the node
is not ready and writes fail (UNAVAILABLE), a restart fails the same way (the database
cannot even open: recovering its WAL needs room); once space exists it comes up with
every acknowledged write.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import datastore

from tests.harness import NodeProcess, can_mount, small_disk
from tests.jepsen.workloads import ERRORS, NO_RETRY, describe, make_client
from zonestore_node.storage.engine import EXIT_STORAGE

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(can_mount() is not None, reason=str(can_mount())),
]

KIND = "Blob"
BLOB_BYTES = 60_000  # random: RocksDB cannot compress it
LEAVE_FREE = 2 << 20  # what the ballast leaves for the node to fill


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", "16m") as path:
        yield path


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _ready(node: NodeProcess) -> bool:
    try:
        return node.http_get("/readyz")[0] == 200
    except OSError:
        return False


def _put(client: datastore.Client, i: int) -> None:
    entity = datastore.Entity(client.key(KIND, f"b{i}"), exclude_from_indexes=("data",))
    entity["data"] = os.urandom(BLOB_BYTES)
    entity["i"] = i
    client.put(entity, retry=NO_RETRY, timeout=5.0)


@pytest.mark.timeout(180)
def test_a_full_disk_stops_the_node_cleanly_and_it_recovers_with_every_acked_write(
    tmp_path: Path, disk: Path
) -> None:
    node = NodeProcess(disk, node_id="full-0")
    node.log_path = tmp_path / "full-0.log"  # the log must not need the full disk
    try:
        node.start()
        ballast = disk / "ballast"
        with open(ballast, "wb") as f:
            f.write(b"\0" * max(0, _free(disk) - LEAVE_FREE))
        client = make_client(node.client_addr, "diskfull")
        acked: list[int] = []
        errors: list[str] = []
        for i in range(400):
            try:
                _put(client, i)
            except ERRORS as exc:
                errors.append(describe(exc))
                if len(errors) >= 5:
                    break
                continue
            acked.append(i)
        assert errors, f"the disk never filled: {len(acked)} writes acknowledged"
        assert len(acked) >= 5, f"too few writes before the disk filled: {errors}"
        assert node.proc is not None
        assert node.proc.wait(timeout=20) == EXIT_STORAGE, node.log_tail()
        log = node.log_path.read_text(errors="replace")
        assert "storage.failed" in log
        assert "no_space=True" in log
        assert not _ready(node)
        with pytest.raises(ERRORS) as refused:
            _put(client, 10_000)
        assert "UNAVAILABLE" in describe(refused.value) or "503" in describe(refused.value)

        # Still full: a restart fails the same way, and is not ready meanwhile.
        node.spawn()
        assert node.proc.wait(timeout=30) == EXIT_STORAGE, node.log_tail()
        assert "storage.failed op=open" in node.log_path.read_text(errors="replace")

        # Space returns: the restarted node comes up with every acknowledged write.
        ballast.unlink()
        started = time.monotonic()
        node.start()
        print(
            f"disk full: {len(acked)} writes acknowledged, failures {errors[:2]}; "
            f"ready {time.monotonic() - started:.1f}s after the restart with space"
        )
        client = make_client(node.client_addr, "diskfull")
        keys = [client.key(KIND, f"b{i}") for i in acked]
        found = {e.key.name for e in client.get_multi(keys, timeout=30)}
        missing = [i for i in acked if f"b{i}" not in found]
        assert not missing, f"acknowledged writes lost: {missing}"
        _put(client, 20_000)
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()
