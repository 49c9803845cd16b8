"""Which event loop a node runs on (server.event_loop_factory)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvloop

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
