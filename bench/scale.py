"""`bench.run --suite scale`: one zonestore replica grown to 1,000,000 entities.

    python -m bench.run --suite scale [--scale-sizes 10000,100000,1000000]
                        [--memory-budget 256MiB] [--zonestore-rev REV] [--procs 4]

A fresh single node is loaded in steps (put_multi of 500 from parallel worker
processes through the official Python client, timed) to each size; at each step two
queries an application typically runs are measured with one client (p50 and p99):
an equality filter returning a page of 20 (`tag = x`, 20 to 2,000 matches) and a
keys-only page of 20 from a random point of a range (`n >= x`). Then the node's memory:
the RSS of the Python process (where RocksDB lives) and of its zonestore-edge child,
and the Python process's peak.

The goals (issue 14): query p50 flat across sizes and at most 10 ms; the node's RSS at
most 300 MiB plus RocksDB's block cache (--memory-budget; default 256 MiB).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import pool, report, targets, workloads

PROJECT = "bench"
SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 3_000)
QUERIES = (workloads.SCALE_FILTER, workloads.SCALE_KEYS)
BATCH = 500
# Every preloaded entity gets tag i % SCALE_TAGS (workloads.preload_entity's rule).
TAG_SPAN = workloads.SCALE_TAGS * workloads.QUERY_MATCHES
MiB = 1 << 20


class Node(targets.Zonestore):
    """A zonestore node, with --memory-budget when one is given."""

    def __init__(self, scratch: Path, rev: str | None, memory_budget: str) -> None:
        super().__init__(scratch, rev)
        self.memory_budget = memory_budget

    def command(self) -> list[str]:
        extra = ["--memory-budget", self.memory_budget] if self.memory_budget else []
        return [*super().command(), *extra]


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of one process, in KiB, from /proc/<pid>/status."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
    return found


@dataclass(frozen=True, slots=True)
class Step:
    entities: int
    loaded: int  # entities put in this step
    load_seconds: float
    node_rss_mib: float
    node_peak_mib: float
    edge_rss_mib: float | None
    queries: dict[str, report.CellResult]
    load_error: str | None = None

    @property
    def load_per_s(self) -> float:
        return self.loaded / self.load_seconds if self.load_seconds > 0 else 0.0


@dataclass(slots=True)
class ScaleRun:
    settings: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    startup_s: float = 0.0
    loadavg: dict[str, list[float]] = field(default_factory=dict)


def load(workers: pool.Pool, node: Node, start: int, stop: int) -> tuple[float, str | None]:
    """Put entities [start, stop) in batches of BATCH from every worker; seconds taken."""
    procs = max(1, min(workers.size, (stop - start) // BATCH))
    bounds = [start + (stop - start) * i // procs for i in range(procs + 1)]
    commands = [
        pool.Preload(
            node.addr, PROJECT, workloads.SCALE_KIND, bounds[i], bounds[i + 1], TAG_SPAN, BATCH
        )
        for i in range(procs)
    ]
    began = time.monotonic()
    replies = workers.call(commands, timeout=3600)
    elapsed = time.monotonic() - began
    failed = [r.message for r in replies if isinstance(r, pool.Failed)]
    return elapsed, failed[0] if failed else None


def run_suite(args: argparse.Namespace, workers: pool.Pool, scratch: Path) -> ScaleRun:
    from bench.run import Bench  # the cell machinery; run.py imports this module

    sizes: list[int] = args.scale_size_list
    run = ScaleRun(
        settings={
            "sizes": sizes, "seconds": args.seconds, "cell_warmup": args.cell_warmup,
            "procs": workers.size, "batch": BATCH, "cpus": os.cpu_count(),
            "memory_budget": args.memory_budget or "node default",
            "zonestore_rev": args.zonestore_rev or "work tree",
        },
    )  # fmt: skip
    run.loadavg["start"] = list(os.getloadavg())
    node = Node(scratch, args.zonestore_rev, args.memory_budget)
    try:
        run.startup_s = node.start()
        print(f"zonestore ready at {node.addr} (pid {node.pid})", flush=True)
        bench = Bench(args, workers)
        have = 0
        for size in sizes:
            seconds, error = load(workers, node, have, size)
            loaded, have = size - have, size
            state = error or f"{seconds:.1f} s ({loaded / seconds:,.0f}/s)"
            print(f"loaded {loaded:,} to {size:,} entities in {state}", flush=True)
            params = workloads.Params(lookup_entities=0, query_entities=size)
            queries = {}
            for workload in QUERIES:
                cell = bench.cell(node, workload, 1, params, args.cell_warmup, args.seconds)
                queries[workload] = cell
                print(_progress(size, cell), flush=True)
            node_mem = memory_kib(node.pid)
            edges = targets.children_of(node.pid)
            edge_rss = sum(memory_kib(pid).get("VmRSS", 0) for pid in edges) if edges else None
            step = Step(
                entities=size, loaded=loaded, load_seconds=seconds,
                node_rss_mib=node_mem["VmRSS"] / 1024, node_peak_mib=node_mem["VmHWM"] / 1024,
                edge_rss_mib=edge_rss / 1024 if edge_rss is not None else None,
                queries=queries, load_error=error,
            )  # fmt: skip
            run.steps.append(step)
            print(
                f"  node RSS {step.node_rss_mib:.0f} MiB (peak {step.node_peak_mib:.0f})",
                flush=True,
            )
            run.loadavg[f"at {size:,}"] = list(os.getloadavg())
            if error is not None:
                break
    finally:
        node.stop()
    return run


def _progress(size: int, cell: report.CellResult) -> str:
    if cell.error is not None:
        return f"  {size:>9,} {cell.workload:13} n/a ({cell.error})"
    return (
        f"  {size:>9,} {cell.workload:13} p50 {cell.p50_ms:6.2f} ms  p99 {cell.p99_ms:6.2f} ms"
        f"  {cell.ops_per_s:6.0f} ops/s  load {cell.loadavg_1m:.2f}"
    )


def _ms(cell: report.CellResult | None) -> list[str]:
    if cell is None or cell.error is not None:
        return ["n/a", "n/a"]
    return [f"{cell.p50_ms:.2f}", f"{cell.p99_ms:.2f}"]


def render(run: ScaleRun) -> str:
    s = run.settings
    lines = [
        "# Scale: one replica grown to "
        f"{s['sizes'][-1]:,} entities (memory budget: {s['memory_budget']})",
        "",
        f"Loaded with put_multi of {s['batch']} from {s['procs']} worker processes (official "
        f"Python client); queries by 1 client, {s['seconds']} s each after "
        f"{s['cell_warmup']} s warm-up; {s['cpus']} CPUs; node: {s['zonestore_rev']}.",
        "Load average (1m, 5m, 15m): "
        + "; ".join(f"{k}: {', '.join(f'{x:.2f}' for x in v)}" for k, v in run.loadavg.items()),
        "",
        "| entities | load entities/s | filter p50 ms | filter p99 ms | keys-only p50 ms "
        "| keys-only p99 ms | node RSS MiB | node peak MiB | edge RSS MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for step in run.steps:
        rate = step.load_error or f"{step.load_per_s:,.0f}"
        edge = f"{step.edge_rss_mib:.0f}" if step.edge_rss_mib is not None else "-"
        lines.append(
            "| " + " | ".join([
                f"{step.entities:,}", rate,
                *_ms(step.queries.get(workloads.SCALE_FILTER)),
                *_ms(step.queries.get(workloads.SCALE_KEYS)),
                f"{step.node_rss_mib:.0f}", f"{step.node_peak_mib:.0f}", edge,
            ]) + " |"
        )  # fmt: skip
    lines += [
        "",
        f"filter: {workloads.DESCRIPTIONS[workloads.SCALE_FILTER]} (tag = x, "
        f"{workloads.SCALE_TAGS} tags); keys-only: "
        f"{workloads.DESCRIPTIONS[workloads.SCALE_KEYS]}. Goals: p50 flat and <= 10 ms; "
        "node RSS <= 300 MiB + RocksDB's block cache.",
    ]
    return "\n".join(lines) + "\n"


def write_json(run: ScaleRun, path: Path) -> None:
    data = {
        "scale": {
            **asdict(run),
            "steps": [{**asdict(step), "load_per_s": step.load_per_s} for step in run.steps],
        }
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def parse_sizes(text: str) -> list[int]:
    sizes = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    if not sizes or any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 1:
        raise ValueError(f"--scale-sizes must grow, e.g. 10000,100000,1000000; got {text!r}")
    return sizes


if __name__ == "__main__":
    sys.exit("run it as: python -m bench.run --suite scale")
