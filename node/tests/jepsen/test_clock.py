"""The clock nemesis's tool: libfaketime as the harness builds it (faketime.py) moves a
replica's wall clock, jumps included, and leaves the node working."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import datastore

from tests.harness import Cluster, NodeProcess
from tests.jepsen import faketime, nemesis

HOUR_US = 3600 * 10**6


@pytest.fixture(scope="module")
def library() -> Path:
    return faketime.build()  # make faketime has normally built it already


@pytest.fixture
def skewed(tmp_path: Path, library: Path) -> Iterator[tuple[NodeProcess, Path]]:
    clock_file = tmp_path / "clock-offset"
    env = nemesis.clock_env(clock_file)
    assert env["LD_PRELOAD"] == str(library)
    node = NodeProcess(tmp_path / "n", env=env)
    node.start()
    try:
        yield node, clock_file
    finally:
        node.stop()


def _commit_ts(node: NodeProcess, name: str) -> int:
    os.environ["DATASTORE_EMULATOR_HOST"] = node.client_addr
    client = datastore.Client(project="clock")
    entity = datastore.Entity(client.key("K", name))
    entity["v"] = name
    client.put(entity)
    return int(_status(node)["applied_ts"])


def _status(node: NodeProcess) -> dict[str, Any]:
    code, body = node.http_get("/admin/status")
    assert code == 200
    status: dict[str, Any] = json.loads(body)
    return status


def _until(check: Callable[[], bool], seconds: float = 15.0) -> None:
    """Until `check()` holds: the preload re-reads its timestamp file once its copy is
    over CACHE_S old, at the next clock read after that (within ~2 s)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the clock change never showed"
        time.sleep(0.2)


def test_a_replica_under_libfaketime_commits_on_its_skewed_clock_and_never_goes_back(
    skewed: tuple[NodeProcess, Path],
) -> None:
    node, clock_file = skewed
    real_us = time.time_ns() // 1000
    assert abs(_commit_ts(node, "real") - real_us) < 60 * 10**6

    clock_file.write_text("+2h\n")
    _until(lambda: _commit_ts(node, "ahead") > time.time_ns() // 1000 + HOUR_US)
    ahead = _commit_ts(node, "ahead")
    assert abs(ahead - (time.time_ns() // 1000 + 2 * HOUR_US)) < 60 * 10**6

    clock_file.write_text("-2h\n")  # a jump back: commit timestamps still increase
    time.sleep(2 * faketime.CACHE_S + 0.5)  # the node surely reads -2h by now
    behind = _commit_ts(node, "behind")
    assert behind > ahead
    assert behind - ahead < 60 * 10**6  # the hybrid clock's counter, not the wall clock


@pytest.mark.timeout(120)
@pytest.mark.parametrize("guarded", [True, False])
def test_a_leader_whose_clock_jumps_two_hours_ahead_stamps_commits_in_real_time(
    tmp_path: Path, library: Path, guarded: bool
) -> None:
    """The clock guard (txn/clock.ClockGuard): the leader's peers report their clocks,
    and a majority overrules its own. Switched off (a maximum offset of a million
    seconds), the same jump stamps commits two hours in the future: the check sees it."""
    files = {nid: tmp_path / nid / "clock-offset" for nid in ("n0", "n1", "n2")}
    extra = [] if guarded else ["--max-clock-offset-seconds", "1000000"]
    cluster = Cluster(tmp_path, 3, extra=extra, env=lambda nid: nemesis.clock_env(files[nid]))
    cluster.start()
    try:
        leader = cluster.leader(timeout=30)
        _commit_ts(leader, "before")
        files[leader.node_id].write_text("+2h\n")
        # The leader sees its own clock 2 h ahead of its peers' (in both modes).
        _until(lambda: _status(leader)["clock_offset_ms"] < -3_500_000)
        stamped = _commit_ts(leader, "skewed")
        off_by = stamped - time.time_ns() // 1000
        if guarded:
            assert abs(off_by) < 2 * 10**6, f"commit stamped {off_by / 1e6:.1f}s off real time"
        else:
            assert off_by > HOUR_US, "without the guard the jump should show"
    finally:
        cluster.stop()
