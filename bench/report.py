"""Results of a benchmark run and how they are printed: Markdown tables and JSON.

Owns the result values (frozen dataclasses) and their formatting only; knows nothing
of processes or servers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import workloads


@dataclass(frozen=True, slots=True)
class CellResult:
    """One workload at one client count against one target."""

    workload: str
    clients: int
    target: str
    entities: int = 0  # the data size the workload ran over (lookup, query), else 0
    ops: int = 0
    seconds: float = 0.0
    ops_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    error: str | None = None  # set when the target failed the workload: no figures
    errors: dict[str, int] = field(default_factory=dict)
    server_cpu_us_per_op: float | None = None
    client_cpu_us_per_op: float | None = None
    server_cores: float = 0.0
    client_cores: float = 0.0
    other_cores: float = 0.0  # CPU used by everything else on the box during the window
    loadavg_1m: float = 0.0
    retries: int = 0
    # txn_counter: increments the clients saw commit (warm-up included) and the counter's
    # final value; they differ when updates are lost (value < committed) or when an
    # attempt reported as failed did commit (value > committed).
    committed: int | None = None
    counter_value: int | None = None


@dataclass(frozen=True, slots=True)
class LoadResult:
    target: str
    kind: str
    entities: int
    seconds: float
    error: str | None = None

    @property
    def per_s(self) -> float:
        return self.entities / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class Run:
    targets: list[str]
    skipped: dict[str, str]
    settings: dict[str, Any]
    cells: list[CellResult] = field(default_factory=list)
    loads: list[LoadResult] = field(default_factory=list)
    scaling: list[CellResult] = field(default_factory=list)
    startup_s: dict[str, float] = field(default_factory=dict)
    loadavg: dict[str, list[float]] = field(default_factory=dict)
    hotspots: dict[str, list[str]] = field(default_factory=dict)

    def find(self, workload: str, clients: int, target: str) -> CellResult | None:
        for cell in self.cells:
            if (cell.workload, cell.clients, cell.target) == (workload, clients, target):
                return cell
        return None


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ratio(a: CellResult | None, b: CellResult | None) -> str:
    if a is None or b is None or not a.ops_per_s or not b.ops_per_s:
        return "-"
    return f"{a.ops_per_s / b.ops_per_s:.2f}x"


def _figures(cell: CellResult | None) -> list[str]:
    if cell is None:
        return ["-", "-", "-"]
    if cell.error is not None:
        return [f"n/a (error: {cell.error})", "-", "-"]
    ops = cell.ops_per_s or 0.0
    return [_num(ops, 0 if ops >= 10 else 1), _num(cell.p50_ms), _num(cell.p99_ms)]


def _row(values: list[str]) -> str:
    return "| " + " | ".join(values) + " |"


def main_table(run: Run) -> str:
    a = run.targets[0] if run.targets else "zonestore"
    b = run.targets[1] if len(run.targets) > 1 else "emulator"
    lines = [
        _row(["workload", "clients", f"{a} ops/s", "p50 ms", "p99 ms",
              f"{b} ops/s", "p50", "p99", f"ratio ({a}/{b})"]),
        _row(["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]),
    ]  # fmt: skip
    seen: list[tuple[str, int]] = []
    for cell in run.cells:
        if (cell.workload, cell.clients) not in seen:
            seen.append((cell.workload, cell.clients))
    for workload, clients in seen:
        ca, cb = run.find(workload, clients, a), run.find(workload, clients, b)
        label = workloads.DESCRIPTIONS.get(workload, workload)
        if workload in (workloads.LOOKUP, workloads.QUERY):
            size = (ca or cb).entities if (ca or cb) else 0
            label += f" @ {size:,}"
        fig_b = _figures(cb) if b in run.targets else ["skipped", "-", "-"]
        lines.append(_row([label, str(clients), *_figures(ca), *fig_b, _ratio(ca, cb)]))
    return "\n".join(lines)


def cost_table(run: Run) -> str:
    lines = [
        _row(["workload", "clients", "target", "server CPU µs/op", "server cores",
              "client CPU µs/op", "client cores", "others' cores", "load 1m", "notes"]),
        _row(["---", "---:", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---"]),
    ]  # fmt: skip
    for c in run.cells + run.scaling:
        notes = []
        if c.retries:
            notes.append(f"{c.retries} aborted attempts retried")
        if c.committed is not None and c.counter_value is not None:
            if c.committed == c.counter_value:
                notes.append(f"counter = {c.counter_value} = committed: ok")
            else:
                notes.append(f"counter {c.counter_value} != committed {c.committed}")
        failed = sum(c.errors.values())
        if failed and c.error is None:
            notes.append(f"{failed} failed ops: {next(iter(c.errors))}")
        lines.append(
            _row([
                f"{c.workload} @ {c.entities:,}" if c.entities else c.workload,
                str(c.clients), c.target,
                _num(c.server_cpu_us_per_op, 0), f"{c.server_cores:.2f}",
                _num(c.client_cpu_us_per_op, 0), f"{c.client_cores:.2f}",
                f"{c.other_cores:.2f}", f"{c.loadavg_1m:.2f}", "; ".join(notes),
            ])
        )  # fmt: skip
    return "\n".join(lines)


def load_table(run: Run) -> str:
    lines = [
        _row(["target", "kind", "entities", "seconds", "entities/s"]),
        _row(["---", "---", "---:", "---:", "---:"]),
    ]
    for load in run.loads:
        if load.error is not None:
            lines.append(_row([load.target, load.kind, f"{load.entities:,}", "-", load.error]))
        else:
            lines.append(
                _row([
                    load.target, load.kind, f"{load.entities:,}",
                    f"{load.seconds:.2f}", f"{load.per_s:,.0f}",
                ])
            )  # fmt: skip
    return "\n".join(lines)


def scaling_table(run: Run) -> str:
    lines = [
        _row(["target", "entities", "ops/s", "p50 ms", "p99 ms", "server CPU µs/op"]),
        _row(["---", "---:", "---:", "---:", "---:", "---:"]),
    ]
    for cell in sorted(run.scaling, key=lambda c: (c.target, c.entities)):
        lines.append(
            _row([cell.target, f"{cell.entities:,}", *_figures(cell),
                  _num(cell.server_cpu_us_per_op, 0)])
        )  # fmt: skip
    return "\n".join(lines)


def render(run: Run) -> str:
    s = run.settings
    parts = [
        "# zonestore vs Google's Datastore emulator",
        "",
        f"{s['seconds']} s per cell after {s['cell_warmup']} s warm-up; target warm-up "
        f"{s['target_warmup']} s; clients = threads spread over at most {s['procs']} worker "
        f"processes (official Python client, one Client per thread); loopback; "
        f"{s['cpus']} CPUs.",
        "Load average (1m, 5m, 15m): "
        + "; ".join(f"{k}: {', '.join(f'{x:.2f}' for x in v)}" for k, v in run.loadavg.items()),
    ]
    for name, why in run.skipped.items():
        parts.append(f"{name} {why}: skipped")
    parts += ["", "## Throughput and latency", "", main_table(run)]
    if run.scaling:
        parts += [
            "",
            "## Query latency by data size (1 client, equality filter, limit 20, "
            f"{workloads.QUERY_MATCHES} matches per value)",
            "",
            scaling_table(run),
        ]
    if run.loads:
        parts += ["", "## Preload (put_multi of 500, parallel processes)", "", load_table(run)]
    if run.startup_s:
        parts += [
            "",
            "Start-up to ready: " + ", ".join(f"{k} {v:.1f} s" for k, v in run.startup_s.items()),
        ]
    parts += ["", "## CPU cost and machine load per cell", "", cost_table(run)]
    for name, lines in run.hotspots.items():
        parts += ["", f"## py-spy hotspots: {name}", "", "```", *lines, "```"]
    return "\n".join(parts) + "\n"


def write_json(run: Run, path: Path) -> None:
    data = asdict(run)
    data["loads"] = [{**asdict(x), "per_s": x.per_s} for x in run.loads]
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
