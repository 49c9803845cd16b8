"""Many seeds of the chaos simulator; safety is checked after every step.

RAFT_SIM_SEEDS=N runs N seeds (default 400); RAFT_SIM_SEED=K runs only seed K;
RAFT_SIM_TICKS=T sets chaos ticks per seed (default 250).
"""

from __future__ import annotations

import os

import pytest

from tests.raft.sim import Cluster

SEEDS = int(os.environ.get("RAFT_SIM_SEEDS", "400"))
TICKS = int(os.environ.get("RAFT_SIM_TICKS", "250"))
BATCHES = 8
SETTLE_BOUND = 400  # ticks (election_tick=10): leader + fresh commit + every member applied


def _seeds(batch: int) -> list[int]:
    one = os.environ.get("RAFT_SIM_SEED")
    if one is not None:
        return [int(one)] if batch == 0 else []
    return list(range(batch, SEEDS, BATCHES))


def run_seed(seed: int) -> None:
    cluster = Cluster(seed)
    cluster.run_chaos(TICKS)
    cluster.settle(SETTLE_BOUND)


@pytest.mark.parametrize("batch", range(BATCHES))
def test_cluster_stays_safe_and_recovers_under_chaos(batch: int) -> None:
    for seed in _seeds(batch):
        run_seed(seed)  # SafetyViolation messages start with "seed=<n>"


def test_same_seed_replays_the_same_history() -> None:
    a, b = Cluster(7), Cluster(7)
    a.run_chaos(120)
    b.run_chaos(120)
    assert list(a.trace) == list(b.trace)
    assert a.committed == b.committed
