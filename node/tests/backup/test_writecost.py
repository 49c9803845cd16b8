"""Smoke test of `make bench`'s write cost of backup and archiving
(zonestore_node.backup.writecost) with one replica per group, a tiny preload and tiny
windows: both groups hold the preloaded entities, every phase took writes, the archiving
group wrote segments, backups of the preloaded database completed during the backup
windows with their sizes and durations reported, and the report sets each drop beside
the goal."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from zonestore_node.backup import writecost


def test_the_write_cost_bench_takes_writes_in_every_phase_while_archiving_and_backups_run(
    tmp_path: Path,
) -> None:
    result = writecost.run(
        tmp_path / "scratch",
        replicas=1,
        clients=4,
        window=1.0,
        rounds=2,
        warmup=0.5,
        settle=1.0,
        entities=2_000,
        pad=8_000,
    )
    assert set(result["preload"]) == {"plain", "archiving"}
    for loaded in result["preload"].values():
        assert loaded["entities"] == 2_000
        assert loaded["bytes"] > 2_000 * 8_000
        assert loaded["seconds"] > 0
    assert set(result["writes_per_s"]) == set(writecost.PHASES)
    for phase in writecost.PHASES:
        assert len(result["writes_per_s"][phase]) == 2
        assert result["writes"][phase] > 0, f"no writes in {phase}"
        assert all(w > 0 for w in result["writes_per_s"][phase])
        assert result["median_writes_per_s"][phase] == statistics.median(
            result["writes_per_s"][phase]
        )
    assert result["errors"] == {}
    assert result["archive_segments"] > 0, "archiving wrote no segment"
    assert len(result["backups"]) == 2
    assert all(run["completed"] >= 1 for run in result["backups"]), result["backups"]
    for run in result["backups"]:
        assert len(run["seconds"]) == len(run["bytes"]) == run["completed"]
        assert all(s > 0 for s in run["seconds"])
        assert all(n > 2_000 * 8_000 for n in run["bytes"]), "the backup missed the preload"
    none = result["median_writes_per_s"]["none"]
    for phase in ("archive", "backup"):
        drop = 100 * (none - result["median_writes_per_s"][phase]) / none
        assert result["drop_pct"][phase] == pytest.approx(drop)
        assert result["met"][phase] is (drop <= writecost.GOAL_DROP_PCT)
    assert set(result["spread_pct"]) == set(writecost.PHASES)
    assert all(spread >= 0 for spread in result["spread_pct"].values())
    assert all(len(result["round_drops_pct"][p]) == 2 for p in ("archive", "backup"))
    assert len(result["quiesce_seconds"]) == 1 + 2 * len(writecost.PHASES)
    for phase in writecost.PHASES:
        assert len(result["cores"][phase]["replicas"]) == 2
        assert all(c > 0 for c in result["cores"][phase]["replicas"]), "replicas used no CPU"
    assert all(c > 0 for c in result["cores"]["backup"]["backup"]), "backups used no CPU"
    text = writecost.report(result)
    assert text.count("goal <= 10% fewer: ") == 2
    assert "preloaded with 2,000 entities" in text
    assert "the backup client (this process) " in text
    took = [s for run in result["backups"] for s in run["seconds"]]
    assert f"each backup took {min(took):.1f}-{max(took):.1f} s" in text
    json.dumps(result)  # what --json writes


def test_the_phase_order_rotates_so_each_phase_goes_first_once_in_three_rounds() -> None:
    orders = [writecost._order(r) for r in range(3)]
    assert [o[0] for o in orders] == ["none", "archive", "backup"]
    assert all(sorted(o) == sorted(writecost.PHASES) for o in orders)
