"""Live disk faults under a real node (powerfs.CONTROL): a device whose fsync fails with
EIO, and a disk that is suddenly full. Either way the node acknowledges nothing it could
not make durable, stops with EXIT_STORAGE (75) instead of carrying on, and, restarted once
the disk is healthy again (after a power cut, for EIO: whatever the failed fsyncs did not
make durable is gone), serves every write it acknowledged."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from google.cloud import datastore

from tests.harness import NodeProcess
from tests.jepsen import powerfs
from tests.jepsen.workloads import ERRORS, NO_RETRY, make_client
from zonestore_node.storage.engine import EXIT_STORAGE

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(powerfs.available() is not None, reason=str(powerfs.available())),
]

KIND = "Disk"


def _put(client: datastore.Client, name: str) -> None:
    entity = datastore.Entity(client.key(KIND, name))
    entity["v"] = name
    client.put(entity, retry=NO_RETRY, timeout=10.0)


def _writes_until_refused(client: datastore.Client, prefix: str, limit: int = 200) -> list[str]:
    """Acknowledged writes, stopping at the first refusal."""
    acked: list[str] = []
    for i in range(limit):
        try:
            _put(client, f"{prefix}{i}")
        except ERRORS:
            return acked
        acked.append(f"{prefix}{i}")
    raise AssertionError(f"{limit} writes acknowledged: the fault never bit")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", ["eio", "full"])
def test_a_disk_fault_stops_the_node_and_every_acknowledged_write_survives(
    tmp_path: Path, fault: str
) -> None:
    node = NodeProcess(tmp_path / "node", node_id=f"{fault}-0")
    disk = powerfs.PowerDisk(tmp_path / "backing", node.data_dir / "data", tmp_path / "fs.log")
    disk.mount()
    try:
        node.start()
        client = make_client(node.client_addr, "disk")
        before = [f"before{i}" for i in range(20)]
        for name in before:
            _put(client, name)

        disk.set_faults(fault)
        during = _writes_until_refused(client, "during")
        assert node.proc is not None
        assert node.proc.wait(timeout=20) == EXIT_STORAGE, node.log_tail()
        log = node.log_path.read_text(errors="replace")
        assert "storage.failed" in log
        assert ("no_space=True" in log) == (fault == "full")

        if fault == "eio":
            dropped = disk.power_cycle()  # the failing device loses what it never synced
        else:
            disk.set_faults()  # space again
            dropped = {}
        node.start()
        client = make_client(node.client_addr, "disk")
        acked = before + during
        found = {e.key.name for e in client.get_multi([client.key(KIND, n) for n in acked])}
        assert not set(acked) - found, f"acknowledged writes lost ({dropped})"
        _put(client, "after")  # and it takes writes again
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()
        disk.unmount()


def test_the_control_file_sets_and_clears_the_faults(tmp_path: Path) -> None:
    disk = powerfs.PowerDisk(tmp_path / "backing", tmp_path / "mnt", tmp_path / "fs.log")
    disk.mount()
    try:
        path = tmp_path / "mnt" / "f"
        path.write_bytes(b"x")
        disk.set_faults("full")
        with pytest.raises(OSError) as full:
            path.write_bytes(b"more")
        assert full.value.errno == errno.ENOSPC
        disk.set_faults("eio")
        with open(path, "wb") as f:
            f.write(b"y")
            f.flush()
            with pytest.raises(OSError) as eio:
                os.fsync(f.fileno())
            assert eio.value.errno == errno.EIO
        disk.set_faults()
        path.write_bytes(b"z")
        assert path.read_bytes() == b"z"
        with pytest.raises(ValueError):
            disk.set_faults("melt")
    finally:
        disk.unmount()
