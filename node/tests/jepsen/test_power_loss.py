"""Power loss under a real node: its data directory on powerfs (a FUSE file system that
drops everything not fsynced when the power goes). Acknowledged writes survive, because
a Commit is acknowledged only after the WAL fsync that covers it; the same node built to
acknowledge before fsync (ZONESTORE_UNSAFE_NO_FSYNC=1, test only) loses them, which shows
that the fault sees what it claims to.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from google.cloud import datastore

from tests.harness import NodeProcess
from tests.jepsen import powerfs
from tests.jepsen.workloads import ERRORS, NO_RETRY, make_client
from zonestore_node.storage.engine import UNSAFE_NO_FSYNC_ENV

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(powerfs.available() is not None, reason=str(powerfs.available())),
]

KIND = "Acked"
WRITERS = 4
WRITES_EACH = 40


def _write_then_lose_power(tmp_path: Path, env: dict[str, str]) -> tuple[int, int, dict[str, int]]:
    """(acknowledged, lost after the power cut, what powerfs dropped)."""
    node = NodeProcess(tmp_path / "node", node_id="power-0", env=env)
    disk = powerfs.PowerDisk(tmp_path / "backing", node.data_dir / "data", tmp_path / "fs.log")
    disk.mount()
    try:
        node.start()
        acked: list[str] = []
        lock = threading.Lock()
        clients = [make_client(node.client_addr, "power") for _ in range(WRITERS)]

        def writer(w: int, client: datastore.Client) -> None:
            for i in range(WRITES_EACH):
                entity = datastore.Entity(client.key(KIND, f"w{w}-{i}"))
                entity["i"] = i
                try:
                    client.put(entity, retry=NO_RETRY, timeout=10.0)
                except ERRORS:
                    continue
                with lock:
                    acked.append(f"w{w}-{i}")

        threads = [threading.Thread(target=writer, args=(w, c)) for w, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        node.kill()
        dropped = disk.power_cycle()
        node.start()
        client = make_client(node.client_addr, "power")
        found = {e.key.name for e in client.get_multi([client.key(KIND, n) for n in acked])}
        return len(acked), len(set(acked) - found), dropped
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()
        disk.unmount()


@pytest.mark.timeout(120)
def test_power_loss_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    acked, lost, dropped = _write_then_lose_power(tmp_path, {})
    print(f"power loss: {acked} acknowledged, {lost} lost; powerfs dropped {dropped}")
    assert acked == WRITERS * WRITES_EACH
    assert lost == 0


@pytest.mark.timeout(120)
def test_power_loss_catches_a_node_that_acknowledges_before_fsync(tmp_path: Path) -> None:
    acked, lost, dropped = _write_then_lose_power(tmp_path, {UNSAFE_NO_FSYNC_ENV: "1"})
    print(f"power loss, no fsync: {acked} acknowledged, {lost} lost; powerfs dropped {dropped}")
    assert dropped.get("bytes_dropped", 0) > 0
    assert lost > 0
