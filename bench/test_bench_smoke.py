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


@pytest.mark.timeout(240)
def test_quick_bench_prints_the_table_and_measures_every_working_workload(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--seconds", "0.5",
         "--targets", "zonestore,makerun3,zonestore3", "--repl-clients", "1", "--kills", "0",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=230,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| workload | clients | zonestore ops/s |" in proc.stdout
    results = json.loads(out.read_text())
    cells = {(c["workload"], c["clients"]): c for c in results["cells"]
             if c["target"] == "zonestore"}  # fmt: skip
    assert set(cells) == {(w, n) for w in ("put", "lookup", "put_multi", "query", "txn_counter")
                          for n in (1, 16)}  # fmt: skip
    for workload in ("put", "lookup", "put_multi"):
        assert cells[(workload, 1)]["ops_per_s"], cells[(workload, 1)]
    txn = cells[("txn_counter", 1)]
    assert txn["committed"] == txn["counter_value"], txn
    # the edge's share of the node's CPU is measured apart
    assert 0 < cells[("put", 16)]["edge_cpu_us_per_op"] < cells[("put", 16)]["server_cpu_us_per_op"]
    three = {(c["workload"], c["clients"]): c for c in results["cells"]
             if c["target"] == "makerun3"}  # fmt: skip
    assert set(three) == {(w, n) for w in ("put", "lookup") for n in (1, 16)}, three
    assert all(c["ops_per_s"] for c in three.values()), three
    assert "## make run's three replicas" in proc.stdout
    assert "## Server CPU per call: the edge and the node" in proc.stdout
    assert "| single put x16, server CPU per call |" in proc.stdout
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


def test_goals_table_compares_every_cell_with_its_goal() -> None:
    from bench import report

    def cell(target: str, workload: str, clients: int, ops: float) -> report.CellResult:
        return report.CellResult(workload, clients, target, ops_per_s=ops,
                                 server_cpu_us_per_op=500.0, edge_cpu_us_per_op=100.0)  # fmt: skip

    run = report.Run(targets=["zonestore", "emulator", "makerun3"], skipped={}, settings={})
    run.cells += [
        cell("zonestore", "put", 16, 900.0),
        cell("emulator", "put", 16, 1000.0),
        cell("makerun3", "put", 16, 1100.0),
        cell("zonestore", "lookup", 1, 50.0),
    ]
    repl = report.ReplRun(targets=["zonestore3", "etcd"], skipped={}, settings={})
    repl.cells += [
        report.ReplCell("zonestore3", "raw grpc", 64, ops_per_s=600.0, leader="r1",
                        member_cpu_us_per_op={"r0": 300.0, "r1": 900.0, "r2": 310.0}),
        report.ReplCell("etcd", "raw grpc", 64, ops_per_s=1000.0, leader="e0",
                        member_cpu_us_per_op={"e0": 250.0, "e1": 120.0, "e2": 130.0}),
    ]  # fmt: skip
    rows = {line.split(" | ")[0][2:]: line for line in
            report.goals_table(run, repl).splitlines()[2:]}  # fmt: skip
    assert "0.90x (900 vs 1,000 ops/s) | >= 1.0x | no" in rows["put x16, one replica / emulator"]
    assert "1.10x" in rows["put x16, make run's three replicas / emulator"]
    assert rows["put x16, make run's three replicas / emulator"].endswith("| yes |")
    assert "not measured" in rows["lookup x1, one replica / emulator"]  # no emulator cell
    assert (
        "500 µs (edge 100, node 400) | <= 400 µs | no"
        in rows["single put x16, server CPU per call"]
    )
    etcd = rows["replicated writes x64, zonestore3 / etcd"]
    assert "0.60x" in etcd and etcd.endswith("| yes |")
    assert "zonestore leader 900, followers 300 / 310; etcd leader 250, followers 120 / 130" in etcd


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
