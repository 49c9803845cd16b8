"""Smoke test: a seconds-long `bench.run --quick` against zonestore (one node, and a
3-replica group for the replicated suite, 1 client, no kill), so the bench cannot rot.

Not under pytest's testpaths; run it explicitly:
    .venv/bin/python -m pytest -q bench/test_bench_smoke.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_quick_bench_prints_the_table_and_measures_every_working_workload(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--seconds", "0.5",
         "--targets", "zonestore,zonestore3", "--repl-clients", "1", "--kills", "0",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| workload | clients | zonestore ops/s |" in proc.stdout
    results = json.loads(out.read_text())
    cells = {(c["workload"], c["clients"]): c for c in results["cells"]}
    assert set(cells) == {(w, n) for w in ("put", "lookup", "put_multi", "query", "txn_counter")
                          for n in (1, 16)}  # fmt: skip
    for workload in ("put", "lookup", "put_multi"):
        assert cells[(workload, 1)]["ops_per_s"], cells[(workload, 1)]
    txn = cells[("txn_counter", 1)]
    assert txn["committed"] == txn["counter_value"], txn
    repl = results["replicated"]
    assert repl["targets"] == ["zonestore3"], repl
    assert {(c["client"], c["clients"]) for c in repl["cells"]} == {
        ("raw grpc", 1), ("official client", 1)}  # fmt: skip
    for cell in repl["cells"]:
        assert cell["ops_per_s"] and cell["server_cpu_us_per_op"], cell
        assert len(cell["member_cpu_us_per_op"]) == 3, cell
    assert "# Replicated writes: zonestore (3 replicas) vs etcd (3 members)" in proc.stdout


@pytest.mark.timeout(300)
def test_grpc_floor_prints_a_cpu_figure_for_every_server() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.grpc_floor", "--clients", "2", "--seconds", "0.5"],
        cwd=REPO, capture_output=True, text=True, timeout=290,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {
        cells[0]: cells
        for line in proc.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| server") and "---" not in line
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    for server in ("uvloop", "asyncio", "threaded"):
        assert float(rows[server][3].replace(",", "")) > 0, rows[server]
    go = rows["grpc-go"]  # measured where Go builds it, else the reason it was not
    assert go[2].startswith("not measured:") or float(go[3].replace(",", "")) > 0, go


def test_rounds_report_the_median_round_and_the_range() -> None:
    from bench import report
    from bench.run import median_round

    def cell(ops: float | None) -> report.CellResult:
        return report.CellResult("put", 16, "zonestore", ops_per_s=ops, p50_ms=ops)

    chosen = median_round([cell(300.0), cell(500.0), cell(None), cell(400.0)])
    assert chosen.ops_per_s == 300.0  # lower middle of 0, 300, 400, 500
    assert chosen.round_ops == (300.0, 500.0, 0.0, 400.0)
    assert median_round([cell(7.0)]).round_ops == ()  # one round: no range to show
    run = report.Run(targets=["zonestore"], skipped={}, settings={})
    run.cells.append(median_round([cell(300.0), cell(500.0), cell(400.0)]))
    assert "median of 3 rounds, ops/s 300-500" in report.cost_table(run)


@pytest.mark.timeout(120)
def test_handoff_floor_prints_a_cpu_figure_for_every_window() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.handoff_floor", "--seconds", "0.5"],
        cwd=REPO, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in proc.stdout.splitlines()
        if line.startswith("| ") and line[2].isdigit()
    ]
    assert [r[0] for r in rows] == ["1", "16", "64"]
    assert all(float(r[1].replace(",", "")) > 0 and float(r[2].replace(",", "")) > 0 for r in rows)


@pytest.mark.timeout(240)
def test_vector_bench_reports_find_nearest_p50_at_each_size(tmp_path: Path) -> None:
    out = tmp_path / "vectors.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.vectors", "--sizes", "300,700", "--dim", "8",
         "--queries", "5", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=230,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| vectors | dimension | p50 ms | p95 ms | loaded vectors/s |" in proc.stdout
    results = json.loads(out.read_text())
    assert [(r["vectors"], r["dimension"]) for r in results] == [(300, 8), (700, 8)]
    for r in results:
        assert 0 < r["p50_ms"] <= r["p95_ms"], r
