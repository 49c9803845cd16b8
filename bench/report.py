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
    # With --rounds N > 1: every round's ops/s, in the order run; this cell is the
    # round with the median throughput.
    round_ops: tuple[float, ...] = ()
    # zonestore: the part of server_cpu_us_per_op spent in the edge (Go); None elsewhere.
    edge_cpu_us_per_op: float | None = None


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
    pair = [t for t in run.targets if t != MAKERUN]
    a = pair[0] if pair else "zonestore"
    b = pair[1] if len(pair) > 1 else "emulator"
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
        if ca is None and cb is None:
            continue
        label = workloads.DESCRIPTIONS.get(workload, workload)
        if workload in (workloads.LOOKUP, workloads.QUERY):
            size = (ca or cb).entities if (ca or cb) else 0
            label += f" @ {size:,}"
        fig_b = _figures(cb) if b in run.targets else ["skipped", "-", "-"]
        lines.append(_row([label, str(clients), *_figures(ca), *fig_b, _ratio(ca, cb)]))
    return "\n".join(lines)


MAKERUN = "makerun3"


def makerun_table(run: Run) -> str:
    """make run's three replicas (client on the first port) beside the emulator."""
    lines = [
        _row(["workload", "clients", "3 replicas ops/s", "p50 ms", "p99 ms", "emulator ops/s",
              "p50", "p99", "ratio (3 replicas/emulator)", "server CPU µs/op (3 nodes + edges)"]),
        _row(["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]),
    ]  # fmt: skip
    for cell in run.cells:
        if cell.target != MAKERUN:
            continue
        em = run.find(cell.workload, cell.clients, "emulator")
        label = workloads.DESCRIPTIONS.get(cell.workload, cell.workload)
        if cell.workload == workloads.LOOKUP:
            label += f" @ {cell.entities:,}"
        lines.append(
            _row([label, str(cell.clients), *_figures(cell), *_figures(em), _ratio(cell, em),
                  _num(cell.server_cpu_us_per_op, 0)])
        )  # fmt: skip
    return "\n".join(lines)


def cpu_split_table(run: Run) -> str:
    """Server CPU per call, zonestore's split between the edge (Go) and the node (Python)."""
    lines = [
        _row(["workload", "clients", "target", "server CPU µs/call", "edge (Go)",
              "node (Python)", "emulator (Java)"]),
        _row(["---", "---:", "---", "---:", "---:", "---:", "---:"]),
    ]  # fmt: skip
    for cell in run.cells:
        if cell.edge_cpu_us_per_op is None or cell.server_cpu_us_per_op is None:
            continue
        em = run.find(cell.workload, cell.clients, "emulator")
        node = cell.server_cpu_us_per_op - cell.edge_cpu_us_per_op
        lines.append(
            _row([cell.workload, str(cell.clients), cell.target,
                  _num(cell.server_cpu_us_per_op, 0), _num(cell.edge_cpu_us_per_op, 0),
                  _num(node, 0), _num(em.server_cpu_us_per_op if em else None, 0)])
        )  # fmt: skip
    return "\n".join(lines)


def cost_table(run: Run) -> str:
    lines = [
        _row(["workload", "clients", "target", "server CPU µs/op", "server cores",
              "client CPU µs/op", "client cores", "others' cores", "load 1m", "notes"]),
        _row(["---", "---:", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---"]),
    ]  # fmt: skip
    for c in run.cells + run.scaling:
        notes = []
        if len(c.round_ops) > 1:
            notes.append(
                f"median of {len(c.round_ops)} rounds, ops/s "
                f"{min(c.round_ops):,.0f}-{max(c.round_ops):,.0f}"
            )
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
    if MAKERUN in run.targets:
        leader = s.get("makerun3_leader", "?")
        parts += [
            "",
            f"## make run's three replicas (clients on the first replica's port; {leader} "
            "led at the start) vs the emulator",
            "",
            makerun_table(run),
        ]
    if any(c.edge_cpu_us_per_op is not None for c in run.cells):
        parts += ["", "## Server CPU per call: the edge and the node", "", cpu_split_table(run)]
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


def write_json(run: Run | None, path: Path, replicated: ReplRun | None = None) -> None:
    """The emulator suite's run at the top level (as before); the replicated one under
    "replicated"."""
    data: dict[str, Any] = {}
    if run is not None:
        data = asdict(run)
        data["loads"] = [{**asdict(x), "per_s": x.per_s} for x in run.loads]
    if replicated is not None:
        data["replicated"] = asdict(replicated)
        data["replicated"]["failover_median_s"] = failover_medians(replicated)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


# The replicated suite: 3-replica zonestore against 3-member etcd --------------------------


@dataclass(frozen=True, slots=True)
class ReplCell:
    """Writes at one client count against one replica group, through one kind of client."""

    target: str  # "zonestore3" or "etcd"
    client: str  # "raw grpc" or "official client"
    clients: int
    ops: int = 0
    seconds: float = 0.0
    ops_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    error: str | None = None
    errors: dict[str, int] = field(default_factory=dict)
    leader: str = ""
    server_cpu_us_per_op: float | None = None  # summed over the members
    member_cpu_us_per_op: dict[str, float] = field(default_factory=dict)  # name -> µs/op
    member_sys_share: dict[str, float] = field(default_factory=dict)  # name -> stime share
    client_cpu_us_per_op: float | None = None
    server_cores: float = 0.0
    client_cores: float = 0.0
    other_cores: float = 0.0
    loadavg_1m: float = 0.0
    # zonestore: deltas of the members' /metrics over the window, name -> {metric: delta}
    batching: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Failover:
    """One SIGKILL of the leader: seconds until a write issued after the kill succeeded."""

    target: str
    killed: str
    seconds: float | None  # None: no write succeeded before the limit
    new_leader: str = ""
    writes_before_kill: int = 0  # successes in the second before the kill (the probe works)
    failed_writes: int = 0
    first_error: str = ""


@dataclass(slots=True)
class ReplRun:
    targets: list[str]
    skipped: dict[str, str]
    settings: dict[str, Any]
    cells: list[ReplCell] = field(default_factory=list)
    failovers: list[Failover] = field(default_factory=list)
    startup_s: dict[str, float] = field(default_factory=dict)
    loadavg: dict[str, list[float]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    idle_cores: dict[str, float] = field(default_factory=dict)  # the 3 members, no load

    def find(self, target: str, client: str, clients: int) -> ReplCell | None:
        for cell in self.cells:
            if (cell.target, cell.client, cell.clients) == (target, client, clients):
                return cell
        return None


def _repl_figures(cell: ReplCell | None) -> list[str]:
    if cell is None:
        return ["-", "-", "-"]
    if cell.error is not None:
        return [f"n/a (error: {cell.error})", "-", "-"]
    ops = cell.ops_per_s or 0.0
    return [_num(ops, 0 if ops >= 10 else 1), _num(cell.p50_ms), _num(cell.p99_ms)]


def _repl_ratio(a: ReplCell | None, b: ReplCell | None) -> str:
    if a is None or b is None or not a.ops_per_s or not b.ops_per_s:
        return "-"
    return f"{a.ops_per_s / b.ops_per_s:.2f}x"


def _cpu_ratio(a: ReplCell | None, b: ReplCell | None) -> str:
    if a is None or b is None or not a.server_cpu_us_per_op or not b.server_cpu_us_per_op:
        return "-"
    return f"{a.server_cpu_us_per_op / b.server_cpu_us_per_op:.2f}x"


def repl_table(run: ReplRun) -> str:
    lines = [
        _row(["clients", "zonestore3 via", "zonestore3 ops/s", "p50 ms", "p99 ms",
              "etcd ops/s", "p50 ms", "p99 ms", "ratio ops/s (zs/etcd)",
              "server CPU µs/op zs | etcd", "ratio CPU/op"]),
        _row(["---:", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:",
              "---:"]),
    ]  # fmt: skip
    counts: list[int] = []
    for cell in run.cells:
        if cell.clients not in counts:
            counts.append(cell.clients)
    for clients in counts:
        etcd = run.find("etcd", "raw grpc", clients)
        fig_etcd = _repl_figures(etcd) if "etcd" in run.targets else ["skipped", "-", "-"]
        for via in ("raw grpc", "official client"):
            zs = run.find("zonestore3", via, clients)
            if zs is None and "zonestore3" in run.targets:
                continue
            cpu = (
                f"{_num(zs.server_cpu_us_per_op if zs else None, 0)} | "
                f"{_num(etcd.server_cpu_us_per_op if etcd else None, 0)}"
            )
            lines.append(
                _row([str(clients), via, *_repl_figures(zs), *fig_etcd, _repl_ratio(zs, etcd),
                      cpu, _cpu_ratio(zs, etcd)])
            )  # fmt: skip
    return "\n".join(lines)


def repl_cost_table(run: ReplRun) -> str:
    lines = [
        _row(["target", "via", "clients", "leader", "server CPU µs/op (3 members)",
              "per member µs/op (leader* first; kernel share)", "server cores", "client CPU µs/op",
              "client cores", "others' cores", "load 1m", "notes"]),
        _row(["---", "---", "---:", "---", "---:", "---", "---:", "---:", "---:", "---:",
              "---:", "---"]),
    ]  # fmt: skip
    for c in run.cells:
        members = sorted(c.member_cpu_us_per_op.items(), key=lambda kv: kv[0] != c.leader)
        per_member = ", ".join(
            f"{name}{'*' if name == c.leader else ''} {us:,.0f} "
            f"(sys {c.member_sys_share.get(name, 0.0):.0%})"
            for name, us in members
        )
        failed = sum(c.errors.values())
        notes = f"{failed} failed ops: {next(iter(c.errors))}" if failed else ""
        lines.append(
            _row([c.target, c.client, str(c.clients), c.leader or "-",
                  _num(c.server_cpu_us_per_op, 0), per_member or "-", f"{c.server_cores:.2f}",
                  _num(c.client_cpu_us_per_op, 0), f"{c.client_cores:.2f}",
                  f"{c.other_cores:.2f}", f"{c.loadavg_1m:.2f}", notes])
        )  # fmt: skip
    return "\n".join(lines)


def batching_table(run: ReplRun) -> str:
    """From the zonestore members' /metrics: how many log entries each fsync carried."""
    lines = [
        _row(["via", "clients", "ops", "member", "fsync groups", "entries applied",
              "entries per group", "ops per leader group", "mean group size (histogram)",
              "groups of 1 / 2-4 / 5-16 / 17-64 / >64 entries", "fsync mean ms", "proposal mean ms",
              "forwarded"]),
        _row(["---", "---:", "---:", "---", "---:", "---:", "---:", "---:", "---:", "---",
              "---:", "---:", "---:"]),
    ]  # fmt: skip
    for c in run.cells:
        if not c.batching:
            continue
        for name in sorted(c.batching, key=lambda n: n != c.leader):
            d = c.batching[name]
            groups = d.get("groups", 0.0)
            applied = d.get("applied", 0.0)
            count = d.get("group_size_count", 0.0)
            le = [d.get(f"le_{b}", 0.0) for b in ("1.0", "4.0", "16.0", "64.0")]
            shape = " / ".join(
                f"{x:,.0f}" for x in (le[0], le[1] - le[0], le[2] - le[1], le[3] - le[2],
                                      count - le[3])
            ) if count else "-"  # fmt: skip
            fsyncs = d.get("fsync_count", 0.0)
            proposals = d.get("proposal_count", 0.0)
            lines.append(
                _row([c.client, str(c.clients), f"{c.ops:,}",
                      f"{name}{' (leader)' if name == c.leader else ''}",
                      f"{groups:,.0f}", f"{applied:,.0f}",
                      f"{applied / groups:.1f}" if groups else "-",
                      f"{c.ops / groups:.1f}" if groups and name == c.leader else "",
                      f"{d.get('group_size_sum', 0.0) / count:.1f}" if count else "-",
                      shape,
                      f"{d.get('fsync_sum', 0.0) / fsyncs * 1000:.2f}" if fsyncs else "-",
                      f"{d.get('proposal_sum', 0.0) / proposals * 1000:.2f}"
                      if proposals else "-",
                      f"{d.get('forwarded', 0.0):,.0f}"])
            )  # fmt: skip
    return "\n".join(lines)


def failover_table(run: ReplRun) -> str:
    lines = [
        _row(["target", "kill", "killed (leader)", "new leader", "first write after kill s",
              "writes in the second before", "failed writes", "first error"]),
        _row(["---", "---:", "---", "---", "---:", "---:", "---:", "---"]),
    ]  # fmt: skip
    counts: dict[str, int] = {}
    for f in run.failovers:
        counts[f.target] = counts.get(f.target, 0) + 1
        lines.append(
            _row([f.target, str(counts[f.target]), f.killed, f.new_leader or "-",
                  "none in time" if f.seconds is None else f"{f.seconds:.3f}",
                  str(f.writes_before_kill), str(f.failed_writes), f.first_error or "-"])
        )  # fmt: skip
    return "\n".join(lines)


def failover_medians(run: ReplRun) -> dict[str, float | None]:
    medians: dict[str, float | None] = {}
    for target in dict.fromkeys(f.target for f in run.failovers):
        times = sorted(f.seconds for f in run.failovers if f.target == target and f.seconds)
        medians[target] = times[len(times) // 2] if times else None
    return medians


def render_replicated(run: ReplRun) -> str:
    s = run.settings
    parts = [
        "# Replicated writes: zonestore (3 replicas) vs etcd (3 members)",
        "",
        f"{s['seconds']} s per cell after {s['cell_warmup']} s warm-up; writes to the "
        f"leader; raw grpc = {s['raw_procs']} worker process(es) at most, one grpc.aio "
        f"channel each, clients = calls in flight; official client = threads over at most "
        f"{s['procs']} processes; loopback; {s['cpus']} CPUs shared by servers and clients.",
        "zonestore3: Datastore Commit, NON_TRANSACTIONAL, one upsert of a ~500-byte entity "
        "(node defaults: 50 ms tick, election 10-20 ticks). etcd: KV Put of a 500-byte "
        "value over gRPC, hand-encoded PutRequest (etcd defaults: heartbeat 100 ms, "
        "election 1 s).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in run.versions.items()),
        "Load average (1m, 5m, 15m): "
        + "; ".join(f"{k}: {', '.join(f'{x:.2f}' for x in v)}" for k, v in run.loadavg.items()),
    ]
    for name, why in run.skipped.items():
        parts.append(f"{name} skipped: {why}")
    parts += ["", "## Throughput, latency and server CPU per write", "", repl_table(run)]
    if run.failovers:
        medians = failover_medians(run)
        parts += [
            "",
            "## Failover: SIGKILL the leader, first write issued after the kill that succeeds",
            "",
            "Writes every "
            f"{s['probe_interval'] * 1000:.0f} ms, round-robin to every member; "
            "median: "
            + ", ".join(f"{t} {'-' if m is None else f'{m:.3f} s'}" for t, m in medians.items()),
            "",
            failover_table(run),
        ]
    if run.startup_s:
        parts += [
            "",
            "Start-up to an agreed leader: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in run.startup_s.items()),
        ]
    if any(run.idle_cores.values()):
        parts += [
            "",
            "Idle CPU of the 3 members with no load (included in CPU/op below): "
            + ", ".join(f"{k} {v:.3f} cores" for k, v in run.idle_cores.items()),
        ]
    parts += ["", "## CPU per write and machine load per cell", "", repl_cost_table(run)]
    if any(c.batching for c in run.cells):
        parts += [
            "",
            "## zonestore batching (deltas of each replica's /metrics over the cell; "
            "entries include Raft no-ops)",
            "",
            batching_table(run),
        ]
    return "\n".join(parts) + "\n"


# Issue 14's goals, in one table from both suites ------------------------------------------

EMULATOR_GOAL = 1.0  # zonestore / emulator, every cell; make run's three at 16 clients
ETCD_GOAL = 0.5  # zonestore3 / etcd, raw writes at 64 clients
PUT_CPU_GOAL = 400.0  # µs of server CPU per single put at 16 clients


def _members(cell: ReplCell) -> str:
    followers = [
        us for name, us in sorted(cell.member_cpu_us_per_op.items()) if name != cell.leader
    ]
    leader = cell.member_cpu_us_per_op.get(cell.leader)
    return f"leader {_num(leader, 0)}, followers " + " / ".join(_num(us, 0) for us in followers)


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "no")


def goals_table(run: Run | None, repl: ReplRun | None) -> str:
    """Every figure issue 14 sets a goal for: measured, goal, met."""
    lines = [
        _row(["goal", "measured", "goal", "met"]),
        _row(["---", "---", "---:", "---"]),
    ]

    def ratio_row(label: str, a: CellResult | None, b: CellResult | None) -> None:
        if a is None or b is None or not a.ops_per_s or not b.ops_per_s:
            lines.append(_row([label, "not measured", f">= {EMULATOR_GOAL:.1f}x", "-"]))
            return
        r = a.ops_per_s / b.ops_per_s
        measured = f"{r:.2f}x ({a.ops_per_s:,.0f} vs {b.ops_per_s:,.0f} ops/s)"
        lines.append(_row([label, measured, f">= {EMULATOR_GOAL:.1f}x",
                           _verdict(r >= EMULATOR_GOAL)]))  # fmt: skip

    if run is not None:
        seen = list(dict.fromkeys((c.workload, c.clients) for c in run.cells))
        for workload, clients in seen:
            if run.find(workload, clients, "zonestore") is None:
                continue
            ratio_row(
                f"{workload} x{clients}, one replica / emulator",
                run.find(workload, clients, "zonestore"),
                run.find(workload, clients, "emulator"),
            )
        for workload, clients in seen:
            if clients == 16 and run.find(workload, clients, MAKERUN) is not None:
                ratio_row(
                    f"{workload} x{clients}, make run's three replicas / emulator",
                    run.find(workload, clients, MAKERUN),
                    run.find(workload, clients, "emulator"),
                )
        put = run.find(workloads.PUT, 16, "zonestore")
        if put is not None and put.server_cpu_us_per_op is not None:
            split = ""
            if put.edge_cpu_us_per_op is not None:
                node = put.server_cpu_us_per_op - put.edge_cpu_us_per_op
                split = f" (edge {put.edge_cpu_us_per_op:,.0f}, node {node:,.0f})"
            lines.append(
                _row(["single put x16, server CPU per call",
                      f"{put.server_cpu_us_per_op:,.0f} µs{split}", f"<= {PUT_CPU_GOAL:.0f} µs",
                      _verdict(put.server_cpu_us_per_op <= PUT_CPU_GOAL)])
            )  # fmt: skip
    if repl is not None:
        counts = [c.clients for c in repl.cells]
        top = 64 if 64 in counts else max(counts, default=0)
        zs, etcd = repl.find("zonestore3", "raw grpc", top), repl.find("etcd", "raw grpc", top)
        if zs is not None and etcd is not None and zs.ops_per_s and etcd.ops_per_s:
            r = zs.ops_per_s / etcd.ops_per_s
            measured = (
                f"{r:.2f}x ({zs.ops_per_s:,.0f} vs {etcd.ops_per_s:,.0f} writes/s); CPU µs/write "
                f"zonestore {_members(zs)}; etcd {_members(etcd)}"
            )
            lines.append(
                _row([f"replicated writes x{top}, zonestore3 / etcd", measured,
                      f">= {ETCD_GOAL:.1f}x", _verdict(r >= ETCD_GOAL)])
            )  # fmt: skip
        else:
            lines.append(_row([f"replicated writes x{top}, zonestore3 / etcd", "not measured",
                               f">= {ETCD_GOAL:.1f}x", "-"]))  # fmt: skip
    return "\n".join(lines)
