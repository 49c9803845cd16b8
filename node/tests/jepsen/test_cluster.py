"""Jepsen-style runs against a real three-replica cluster: the register, bank and set
workloads through the official client while a seeded nemesis kills, pauses, stops,
partitions, drops and delays packets, transfers leadership, changes membership, skews
clocks, cuts a disk's power, fills it and fails its fsyncs; then the histories are
checked. One short five-replica run splits majority from minority (in
network namespaces; skipped where they are unavailable: `make chaos REPLICAS=5`).

Bounded by default: one fresh random seed per run for every mix (printed in the summary
at the end of the pytest run and in each test's id), JEPSEN_SECONDS=15 of operations
each. JEPSEN_SEEDS=1,2,3 replays seeds; for the long form JEPSEN_SEEDS=1,2,3,4,5
JEPSEN_MIXES=crash,partition,admin,all JEPSEN_SECONDS=60, or `make chaos`. Each run
writes history.jsonl, timeline.jsonl and verdict.json to its folder (JEPSEN_OUT, or the
test's tmp_path). On failure the report names the seed, the schedule, what the nemesis
did and when, the smallest anomaly and where the node logs are.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.jepsen import netns, powerfs, runner

SECONDS = float(os.environ.get("JEPSEN_SECONDS", "15"))
SEEDS = [int(s) for s in os.environ.get("JEPSEN_SEEDS", "").split(",") if s.strip()] or [
    random.SystemRandom().randrange(1, 1 << 31)
]
RUNS: list[str] = []  # one line per run, for the terminal summary (conftest.py)
# `disk` (power cuts, a full disk, failing fsyncs on FUSE disks) where FUSE mounts work.
DEFAULT_MIXES = "crash,partition,clock,all" + (",disk" if powerfs.available() is None else "")
MIXES = [m for m in os.environ.get("JEPSEN_MIXES", DEFAULT_MIXES).split(",") if m]

FIVE_SECONDS = float(os.environ.get("JEPSEN_FIVE_SECONDS", "10"))

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(int(SECONDS * 4 + 180))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mix", MIXES)
def test_cluster_histories_are_linearizable_and_lose_nothing(
    tmp_path: Path, mix: str, seed: int
) -> None:
    out = (
        Path(os.environ["JEPSEN_OUT"]) / f"{mix}-seed{seed}"
        if "JEPSEN_OUT" in os.environ
        else tmp_path
    )
    _run(tmp_path, out, seed, mix, SECONDS, 3)


@pytest.mark.timeout(int(FIVE_SECONDS * 4 + 180))
@pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))
@pytest.mark.parametrize("seed", SEEDS)
def test_five_replicas_keep_every_acknowledged_write_across_majority_minority_splits(
    tmp_path: Path, seed: int
) -> None:
    out = (
        Path(os.environ["JEPSEN_OUT"]) / f"split-r5-seed{seed}"
        if "JEPSEN_OUT" in os.environ
        else tmp_path
    )
    _run(tmp_path, out, seed, "split", FIVE_SECONDS, 5)


def _run(tmp_path: Path, out: Path, seed: int, mix: str, seconds: float, replicas: int) -> None:
    started = time.monotonic()
    report = runner.run(tmp_path, seed, mix, seconds, out=out, replicas=replicas)
    RUNS.append(
        f"jepsen {mix} x{replicas} ({report.network}) seed={seed}: "
        f"{'ok' if report.valid else 'INVALID'} in "
        f"{time.monotonic() - started:.0f}s, {sum(report.operations().values())} ops, "
        f"faults {report.fault_counts}; artifacts {out}"
    )
    print(report.render())
    assert report.valid, report.render()
