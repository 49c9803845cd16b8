"""Which event loop a node runs on (server.event_loop_factory)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
import uvloop

from tests.harness import NodeProcess
from zonestore_node import server


def test_a_node_runs_on_uvloop_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZONESTORE_LOOP", raising=False)
    config = server.NodeConfig("n0", "z", tmp_path)
    assert server.event_loop_factory(config) is uvloop.new_event_loop


def test_peer_tls_keeps_the_standard_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZONESTORE_LOOP", raising=False)
    config = server.NodeConfig(
        "n0", "z", tmp_path, peer_tls_cert="c", peer_tls_key="k", peer_tls_ca="a"
    )
    assert server.event_loop_factory(config) is asyncio.new_event_loop


def test_zonestore_loop_asyncio_asks_for_the_standard_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZONESTORE_LOOP", "asyncio")
    config = server.NodeConfig("n0", "z", tmp_path)
    assert server.event_loop_factory(config) is asyncio.new_event_loop


def test_sigusr1_dumps_threads_and_tasks_into_the_log_and_the_node_serves_on(
    tmp_path: Path,
) -> None:
    """The post-mortem of a replica that is alive but stuck (the Jepsen runner sends it
    when replicas do not converge)."""
    node = NodeProcess(tmp_path / "n")
    node.start()
    try:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while "task commit-group:" not in node.log_tail(400) and time.monotonic() < deadline:
            time.sleep(0.1)
        log = node.log_tail(400)
        assert "task commit-group:" in log
        # faulthandler's thread stacks ("Current thread 0x..." alone when the WAL sync
        # thread has not started: a quiet replica syncs on its loop, replica/walsync.py)
        assert "Current thread 0x" in log or "Thread 0x" in log
        assert node.http_get("/admin/status")[0] == 200
    finally:
        node.stop()
