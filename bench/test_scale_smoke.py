"""Smoke test of `bench.run --suite scale` with a few thousand entities, so the suite
cannot rot. Not under pytest's testpaths; run it explicitly:
    .venv/bin/python -m pytest -q bench/test_scale_smoke.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import scale

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_scale_suite_loads_in_steps_and_reports_latency_and_memory_at_each(
    tmp_path: Path,
) -> None:
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--suite", "scale", "--scale-sizes", "600,1500",
         "--seconds", "0.5", "--cell-warmup", "0.1", "--procs", "2",
         "--memory-budget", "64MiB", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "# Scale: one replica grown to 1,500 entities (memory budget: 64MiB)" in proc.stdout
    steps = json.loads(out.read_text())["scale"]["steps"]
    assert [(s["entities"], s["loaded"]) for s in steps] == [(600, 600), (1500, 900)]
    for step in steps:
        assert step["load_error"] is None and step["load_per_s"] > 0, step
        assert 20 < step["node_rss_mib"] <= step["node_peak_mib"], step
        for workload in ("scale_filter", "scale_keys"):
            cell = step["queries"][workload]
            # every query was checked (rows, first key): any wrong answer is an error
            assert cell["error"] is None and not cell["errors"], cell
            assert cell["ops"] > 0 and 0 < cell["p50_ms"] <= cell["p99_ms"], cell


def test_scale_sizes_must_grow() -> None:
    assert scale.parse_sizes("10_000,100000") == [10_000, 100_000]
    for bad in ("", "100,100", "1000,10", "0,5"):
        with pytest.raises(ValueError, match="must grow"):
            scale.parse_sizes(bad)
