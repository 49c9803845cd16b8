"""`make run`'s cluster: `zonestore run --replicas 3` starts three replicas on loopback
that serve the Datastore API through any of them, and Ctrl-C stops them all cleanly."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from google.cloud import datastore

from tests.jepsen.workloads import make_client

REPLICAS = 3


def _free_run(count: int) -> int:
    """A base port with `count` consecutive free ports (the local cluster numbers its
    replicas' ports from a base)."""
    for _ in range(200):
        base = random.randrange(20_000, 60_000)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free ports")


def _status(admin: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://{admin}/admin/status", timeout=5) as r:
        status: dict[str, object] = json.loads(r.read())
        return status


@pytest.mark.timeout(120)
def test_make_runs_cluster_serves_through_every_replica_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    client_port, admin_port, peer_port = (_free_run(REPLICAS) for _ in range(3))
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115 - the child's
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "zonestore_node.cli", "run", "--replicas", str(REPLICAS),
            "--client-port", str(client_port), "--admin-port", str(admin_port),
            "--peer-port", str(peer_port), "--data-dir", str(tmp_path / "data"),
        ],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    log.close()
    try:
        deadline = time.monotonic() + 60
        while "Press Ctrl-C to stop" not in (tmp_path / "run.log").read_text(errors="replace"):
            assert proc.poll() is None, (tmp_path / "run.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "the local cluster never said it was ready"
            time.sleep(0.2)
        out = (tmp_path / "run.log").read_text(errors="replace")
        assert f"export DATASTORE_EMULATOR_HOST=127.0.0.1:{client_port}" in out

        status = _status(f"127.0.0.1:{admin_port}")
        members = status["members"]
        assert isinstance(members, list) and len(members) == REPLICAS
        assert all(m["role"] == "voter" for m in members)
        assert status["leader"]

        # Any replica takes any request: write through the last, read through the first.
        writer = make_client(f"127.0.0.1:{client_port + REPLICAS - 1}", "demo")
        entity = datastore.Entity(writer.key("User", "John Doe"))
        entity.update({"name": "John Doe"})
        writer.put(entity)
        reader = make_client(f"127.0.0.1:{client_port}", "demo")
        assert reader.get(reader.key("User", "John Doe"))["name"] == "John Doe"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=40) == 0
        for i in range(REPLICAS):
            with pytest.raises(OSError):
                _status(f"127.0.0.1:{admin_port + i}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
