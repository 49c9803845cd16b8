"""Jepsen-style runs against a real three-replica cluster: the register, bank and set
workloads through the official client while a seeded nemesis kills, pauses, stops,
partitions, transfers leadership and changes membership; then the histories are checked.

Bounded by default (seed 1 of each mix, JEPSEN_SECONDS=20 of operations each). For the
long form: JEPSEN_SEEDS=1,2,3,4,5 JEPSEN_MIXES=crash,partition,admin,all
JEPSEN_SECONDS=60. On failure the report names the seed, the schedule, what the nemesis
did and when, the minimal failing sub-history and where the node logs are.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.jepsen import runner

SECONDS = float(os.environ.get("JEPSEN_SECONDS", "20"))
SEEDS = [int(s) for s in os.environ.get("JEPSEN_SEEDS", "1").split(",") if s.strip()]
MIXES = [m for m in os.environ.get("JEPSEN_MIXES", "crash,partition,admin,all").split(",") if m]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(int(SECONDS * 4 + 180))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mix", MIXES)
def test_cluster_histories_are_linearizable_and_lose_nothing(
    tmp_path: Path, mix: str, seed: int
) -> None:
    report = runner.run(tmp_path, seed, mix, SECONDS)
    print(report.render())
    assert report.valid, report.render()
