"""One Jepsen-style run: a cluster of three (or five) replicas, each in a network namespace
of its own with nftables partitions (`netns`), or, where namespaces are unavailable
(not root, no `ip`/`nft`) or JEPSEN_NET=proxy, on loopback behind cuttable proxies; the register,
bank, set and list-append workloads running together (each with its own history and
checker; strong and eventual reads) while the nemesis works through its schedule; then
heal, let the cluster settle, read the final state strongly and on every replica
eventually, and check.

Every run leaves a folder (`out`): history.jsonl (every operation of every workload,
`history.to_record`), timeline.jsonl (the schedule, then what the nemesis did and
when), verdict.json (valid, problems, counts, the smallest anomaly) and report.txt.

The run order, written down once: start cluster → set up accounts → start workers →
start nemesis → (seconds) → stop nemesis, heal → workers go on for `recovery_s` on a
healed cluster (a cluster that takes no write then is stuck) → stop workers → wait
until every replica has applied the commit index → final reads → checks.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.cloud import datastore

from tests.harness import Cluster, NodeProcess
from tests.jepsen import checkers, elle, linearizability, nemesis, netns
from tests.jepsen.history import Op, Recorder, Status, to_record
from tests.jepsen.powerfs import PowerDisk
from tests.jepsen.workloads import Bank, ListAppend, Registers, Sets, Worker, make_client
from tests.netproxy import ProxyHub

PROJECT = "jepsen"
# How far a commit timestamp may stray from the test's clock: the guard's maximum offset
# (0.5 s) plus the skew that a clock report up to 0.1 s old and scheduling can add.
CLOCK_TOLERANCE_US = 2_000_000


@dataclass
class Report:
    seed: int
    mix: str
    seconds: float
    root: Path
    replicas: int = 3
    network: str = "proxy"  # "netns" or "proxy" (loopback)
    faults: list[nemesis.Fault] = field(default_factory=list)
    nemesis_log: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    registers: list[Op] = field(default_factory=list)
    bank: list[Op] = field(default_factory=list)
    sets: list[Op] = field(default_factory=list)
    lists: list[Op] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    fault_counts: dict[str, int] = field(default_factory=dict)
    smallest: str = ""  # the smallest anomaly found, readable
    acked_lost: int = 0  # acknowledged writes missing afterwards (sets + list appends)
    started_us: int = 0  # the test's wall clock when the workers started
    out: Path | None = None

    @property
    def valid(self) -> bool:
        return not self.problems

    def _anomaly(self, text: str) -> None:
        """Record a problem; the first, or a shorter one, becomes `smallest`."""
        self.problems.append(text)
        if not self.smallest or text.count("\n") < self.smallest.count("\n"):
            self.smallest = text

    def operations(self) -> dict[str, int]:
        return {
            "registers": len(self.registers),
            "bank": len(self.bank),
            "set": len(self.sets),
            "list-append": len(self.lists),
        }

    def render(self) -> str:
        lines = [
            f"jepsen run seed={self.seed} mix={self.mix} seconds={self.seconds} "
            f"replicas={self.replicas} network={self.network}",
            f"  rerun: make chaos SEED={self.seed} MIX={self.mix} TIME={self.seconds:g} "
            f"REPLICAS={self.replicas}",
            f"  artifacts: {self.out or self.root} (history.jsonl, timeline.jsonl, verdict.json)",
            f"  node logs: {self.root}/n*/n*.log",
            f"  operations: {self.operations()}; faults: {self.fault_counts}; "
            f"acknowledged writes lost: {self.acked_lost}",
            "schedule:",
            *(f"  {f}" for f in self.faults),
            "nemesis log:",
            *(f"  {line}" for line in self.nemesis_log),
            "summary:",
            *(f"  {line}" for line in self.summary),
        ]
        if self.problems:
            self.smallest = self.smallest or self.problems[0]
            lines += ["PROBLEMS:", *(f"  {p}" for p in self.problems)]
            lines += ["SMALLEST ANOMALY:", *(f"  {x}" for x in self.smallest.splitlines())]
        return "\n".join(lines)

    def write(self, out: Path) -> None:
        """The run's folder: history, fault timeline, verdict, the rendered report."""
        if self.problems:
            self.smallest = self.smallest or self.problems[0]
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        with open(out / "history.jsonl", "w") as f:
            for name, ops in (
                ("registers", self.registers),
                ("bank", self.bank),
                ("set", self.sets),
                ("list-append", self.lists),
            ):
                for op in ops:
                    f.write(json.dumps(to_record(op, name), default=repr) + "\n")
        with open(out / "timeline.jsonl", "w") as f:
            for fault in self.faults:
                f.write(json.dumps({"scheduled": str(fault)}) + "\n")
            for event in self.timeline:
                f.write(json.dumps(event) + "\n")
        verdict = {
            "valid": self.valid,
            "seed": self.seed,
            "mix": self.mix,
            "seconds": self.seconds,
            "replicas": self.replicas,
            "network": self.network,
            "operations": self.operations(),
            "faults": self.fault_counts,
            "acknowledged_writes_lost": self.acked_lost,
            "problems": self.problems,
            "smallest_anomaly": self.smallest,
            "summary": self.summary,
            "node_logs": str(self.root),
        }
        (out / "verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
        (out / "report.txt").write_text(self.render() + "\n")


def wait_converged(cluster: Cluster, timeout: float = 30.0) -> None:
    """Every replica has applied the highest commit index any of them knows."""
    deadline = time.monotonic() + timeout
    last: list[Any] = []
    while time.monotonic() < deadline:
        try:
            last = [cluster.status(n) for n in cluster.nodes]
        except (AssertionError, OSError, ValueError) as exc:
            last = [f"a replica gives no status: {exc}"]
            time.sleep(0.1)
            continue
        applied = {int(s["applied_index"]) for s in last}
        commits = {int(s["commit_index"]) for s in last}
        if len(applied) == 1 and applied == {max(commits)}:
            return
        time.sleep(0.1)
    raise TimeoutError(f"replicas did not converge: {last}")


def _eventual_registers(client: datastore.Client, names: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for start in range(0, len(names), 500):
        keys = [client.key(Registers.KIND, n) for n in names[start : start + 500]]
        for entity in client.get_multi(keys, eventual=True, timeout=30):
            found[entity.key.name] = entity["v"]
    return found


def _elements(client: datastore.Client, eventual: bool) -> set[str]:
    query = client.query(kind=Sets.KIND)
    query.keys_only()
    return {e.key.name for e in query.fetch(eventual=eventual, timeout=30)}


def network_mode() -> str:
    """JEPSEN_NET=netns|proxy, or (unset, "auto") namespaces where they work."""
    wanted = os.environ.get("JEPSEN_NET", "auto")
    if wanted == "auto":
        return "netns" if netns.available() is None else "proxy"
    if wanted == "netns" and netns.available() is not None:
        raise RuntimeError(f"JEPSEN_NET=netns: {netns.available()}")
    return wanted


def run(
    root: Path,
    seed: int,
    mix: str,
    seconds: float,
    recovery_s: float = 3.0,
    out: Path | None = None,
    replicas: int = 3,
) -> Report:
    """One run; its artifacts go to `out` (default: `root`), written even when the run
    itself breaks."""
    report = Report(seed, mix, seconds, root, replicas, network_mode())
    try:
        _run(report, root, seed, mix, seconds, recovery_s)
    except Exception as exc:
        report.problems.append(f"the run itself failed: {exc!r}")
        raise
    finally:
        report.write(out or root)
    return report


def _run(
    report: Report, root: Path, seed: int, mix: str, seconds: float, recovery_s: float
) -> None:
    report.faults = nemesis.schedule(seed, mix, max(1.0, seconds - 2.0))
    ids = [f"n{i}" for i in range(report.replicas)]
    hub: ProxyHub | None = None
    net: netns.Network | None = None
    if report.network == "netns":
        net = netns.Network(ids, root / "net")
        net.up()
    else:
        hub = ProxyHub()
    # Replicas get a skewable wall clock only when the schedule skews clocks.
    clock_files: dict[str, Path] = {}
    if any(f.kind == "clock" for f in report.faults):
        clock_files = {nid: root / nid / "clock-offset" for nid in ids}
        report.summary.append(f"clock skew through {nemesis.clock_mechanism()}")
    try:
        cluster = Cluster(
            root,
            report.replicas,
            proxies=hub,
            network=net,
            extra=["--snapshot-every", "400", "--snapshot-keep", "100"],
            env=(lambda nid: nemesis.clock_env(clock_files[nid])) if clock_files else None,
        )
    except BaseException:
        if net is not None:
            net.down()
        raise
    # Every replica's data directory on a power-loss disk when the schedule cuts power.
    disks: dict[str, PowerDisk] = {}
    if any(f.kind in ("power", "full", "eio") for f in report.faults):
        for node in cluster.nodes:
            nid = node.node_id
            disks[nid] = PowerDisk(root / nid / "backing", node.data_dir / "data",
                                   root / nid / "powerfs.log")  # fmt: skip
    nem: nemesis.Nemesis | None = None
    workers: list[Worker] = []
    stop = threading.Event()
    try:
        for disk in disks.values():
            disk.mount()
        cluster.start()
        leader = cluster.leader(timeout=30)
        reg_rec, bank_rec, set_rec, list_rec = Recorder(), Recorder(), Recorder(), Recorder()
        registers, bank, sets = Registers(reg_rec), Bank(bank_rec), Sets(set_rec)
        lists = ListAppend(list_rec)
        bank.setup(make_client(leader.client_addr, PROJECT))
        rng = random.Random(seed)
        plan = (
            [("reg", registers.step)] * 4
            + [("bank", bank.step)] * 2
            + [("set", sets.step)] * 2
            + [("list", lists.step)] * 3
        )
        for i, (name, body) in enumerate(plan):
            node = cluster.nodes[i % len(cluster.nodes)]
            client = make_client(node.client_addr, PROJECT)
            workers.append(
                Worker(f"{name}-{i}", body, client, i, random.Random(rng.random()), stop)
            )
        links = net if net is not None else hub
        assert links is not None
        nem = nemesis.Nemesis(cluster, links, report.faults, clock_files, disks)
        report.started_us = time.time_ns() // 1000
        for w in workers:
            w.start()
        nem.start()
        time.sleep(seconds)
        nem.stop()
        nem.heal()
        report.nemesis_log = nem.log
        healed_at = reg_rec.invoke()
        time.sleep(recovery_s)
        stop.set()
        for w in workers:
            w.join()
        # Kept now so that a run stuck after healing still leaves its history.
        report.registers, report.bank, report.sets, report.lists = (
            reg_rec.snapshot(),
            bank_rec.snapshot(),
            set_rec.snapshot(),
            list_rec.snapshot(),
        )
        report.nemesis_log = nem.log
        report.timeline = nem.events
        report.fault_counts = dict(nem.counts)
        for nid, disk in disks.items():
            if disk.losses:
                report.summary.append(f"power loss on {nid}: unsynced data dropped {disk.losses}")
        for w in workers:
            if w.crashes:
                report.problems.append(f"worker {w.name} crashed: {w.crashes}")
        if nem.errors:
            report.summary.append(f"nemesis errors (not a verdict): {nem.errors}")
        after_heal = [op for op in reg_rec.snapshot() if op.invoke > healed_at]
        if not any(op.status is Status.OK and op.f != "read" for op in after_heal):
            report.problems.append(
                f"stuck: no register write succeeded in {recovery_s}s after healing "
                f"({len(after_heal)} attempts: {[op.error for op in after_heal[:5]]})"
            )
        try:
            wait_converged(cluster)
            _final_checks(
                report, cluster, reg_rec, registers, bank_rec, bank, set_rec, list_rec, lists
            )
        except TimeoutError as exc:
            report.problems.append(f"stuck after healing: {exc}")
            report.summary += _statuses(cluster)
            report.summary += _post_mortem(cluster)
    finally:
        stop.set()
        if nem is not None:
            nem.stop()
        for node in cluster.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)
        cluster.stop()
        for disk in disks.values():
            disk.unmount()
        if hub is not None:
            hub.close()
        if net is not None:
            net.down()
        os.environ.pop("DATASTORE_EMULATOR_HOST", None)


def _final_checks(
    report: Report,
    cluster: Cluster,
    reg_rec: Recorder,
    registers: Registers,
    bank_rec: Recorder,
    bank: Bank,
    set_rec: Recorder,
    list_rec: Recorder,
    lists: ListAppend,
) -> None:
    leader = cluster.leader(timeout=30)
    strong = make_client(leader.client_addr, PROJECT)
    names = registers.keys()
    # Final strong reads join the register history: they too must linearize.
    for name in names:
        t0 = reg_rec.invoke()
        entity = strong.get(strong.key(Registers.KIND, name), timeout=30)
        value = None if entity is None else entity["v"]
        reg_rec.complete(-1, "read", name, None, Status.OK, t0, result=value)
    final_regs = {op.key: op.result for op in reg_rec.snapshot() if op.process == -1}
    t0 = bank_rec.invoke()
    accounts = strong.get_multi([strong.key(Bank.KIND, n) for n in bank.names], timeout=30)
    bank_rec.complete(-1, "read", "bank", None, Status.OK, t0,
                      result={e.key.name: e["balance"] for e in accounts})  # fmt: skip
    final_set = _elements(strong, eventual=False)
    list_names = lists.keys()
    final_lists = _lists(strong, list_names, eventual=False)

    report.registers, report.bank, report.sets, report.lists = (
        reg_rec.snapshot(),
        bank_rec.snapshot(),
        set_rec.snapshot(),
        list_rec.snapshot(),
    )
    _count(report, "registers", report.registers)
    _count(report, "bank", report.bank)
    _count(report, "set", report.sets)
    _count(report, "list-append", report.lists)

    started = time.monotonic()
    strong_regs = [op for op in report.registers if op.f != "eread"]
    lin = linearizability.check(strong_regs, budget=2_000_000)
    report.summary.append(f"registers: {lin.explain()} in {time.monotonic() - started:.2f}s")
    if not lin.valid:
        report._anomaly(f"registers: {lin.explain()}")
        if lin.unknown_keys:
            report.problems.append(f"registers: search budget exceeded on {lin.unknown_keys}")
    verdict = checkers.check_eventual_registers(report.registers)
    report.summary.append(f"registers, eventual reads: {verdict.explain()}")
    if not verdict.valid:
        report._anomaly(f"registers, eventual reads: {verdict.explain()}")
    verdict = checkers.check_bank(report.bank, bank.names, bank.total)
    report.summary.append(f"bank: {verdict.explain()}")
    if not verdict.valid:
        report._anomaly(f"bank: {verdict.explain()}")
    verdict = checkers.check_set(report.sets, final_set)
    report.summary.append(f"set: {verdict.explain()}")
    report.acked_lost += verdict.stats.get("lost", 0)
    if not verdict.valid:
        report._anomaly(f"set: {verdict.explain()}")
    started = time.monotonic()
    cycles = elle.check(report.lists, final=final_lists)
    report.summary.append(f"list-append: {cycles.explain()} in {time.monotonic() - started:.2f}s")
    report.acked_lost += sum(a.kind == "lost-append" for a in cycles.anomalies)
    verdict = checkers.check_commit_timestamps(report.lists, final_lists)
    report.summary.append(f"commit timestamps: {verdict.explain()}")
    if not verdict.valid:
        report._anomaly(f"commit timestamps: {verdict.explain()}")
    verdict = checkers.check_commit_times_follow_real_time(
        report.lists, report.started_us, time.time_ns() // 1000, CLOCK_TOLERANCE_US
    )
    report.summary.append(f"commit timestamps vs real time: {verdict.explain()}")
    if not verdict.valid:
        report._anomaly(f"commit timestamps vs real time: {verdict.explain()}")
    if not cycles.valid:
        smallest = cycles.smallest()
        report.problems.append(f"list-append: {cycles.explain()}")
        if smallest is not None:
            report._anomaly(f"list-append: {smallest.explain()}")

    # No acknowledged write lost on any replica: eventual (local) reads after convergence.
    for node in cluster.nodes:
        _replica_checks(report, node, names, final_regs, bank, set_rec, final_set)
        local = _lists(make_client(node.client_addr, PROJECT), list_names, eventual=True)
        if local != final_lists:
            differ = {k: (local.get(k), final_lists.get(k)) for k in list_names
                      if local.get(k) != final_lists.get(k)}  # fmt: skip
            report._anomaly(
                f"{node.node_id}: lists differ from the strong read (local, strong): "
                f"{dict(list(differ.items())[:5])}"
            )


def _lists(client: datastore.Client, names: list[str], eventual: bool) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {n: [] for n in names}
    for start in range(0, len(names), 500):
        keys = [client.key(ListAppend.KIND, n) for n in names[start : start + 500]]
        for entity in client.get_multi(keys, eventual=eventual, timeout=30):
            found[entity.key.name] = list(entity["vals"])
    return found


def _replica_checks(
    report: Report,
    node: NodeProcess,
    names: list[str],
    final_regs: dict[str, Any],
    bank: Bank,
    set_rec: Recorder,
    final_set: set[str],
) -> None:
    local = make_client(node.client_addr, PROJECT)
    regs = _eventual_registers(local, names)
    diverged = {
        n: (regs.get(n), final_regs.get(n)) for n in names if regs.get(n) != final_regs.get(n)
    }
    if diverged:
        report._anomaly(
            f"{node.node_id}: registers differ from the final strong read "
            f"(local, strong): {dict(list(diverged.items())[:10])}"
        )
    found = local.get_multi(
        [local.key(Bank.KIND, n) for n in bank.names], eventual=True, timeout=30
    )
    total = sum(e["balance"] for e in found)
    if total != bank.total or len(found) != len(bank.names):
        report._anomaly(f"{node.node_id}: bank total {total} over {len(found)} accounts")
    elements = _elements(local, eventual=True)
    verdict = checkers.check_set(set_rec.snapshot(), elements, where=f"{node.node_id} local read")
    if not verdict.valid:
        report._anomaly(f"set: {verdict.explain()}")
    if elements != final_set:
        report._anomaly(
            f"{node.node_id}: elements differ from the strong read: "
            f"{sorted(elements ^ final_set)[:10]}"
        )


def _post_mortem(cluster: Cluster) -> list[str]:
    """Why a replica is stuck: an exit code and its log's last lines, or, for a live one,
    its threads' stacks and asyncio tasks (SIGUSR1, written to its log)."""
    lines = []
    for node in cluster.nodes:
        if node.proc is None:
            continue
        if node.proc.poll() is not None:
            tail = node.log_tail().strip().splitlines()[-12:]
            lines.append(f"{node.node_id} exited with {node.proc.returncode}:")
            lines += [f"    {line}" for line in tail]
        else:
            node.proc.send_signal(signal.SIGUSR1)
            lines.append(f"{node.node_id}: stacks and tasks dumped into its log (SIGUSR1)")
    time.sleep(0.5)  # let the dumps reach the logs before the cluster stops
    return lines


def _statuses(cluster: Cluster) -> list[str]:
    lines = []
    for node in cluster.nodes:
        try:
            status = cluster.status(node)
        except (AssertionError, OSError, ValueError) as exc:
            lines.append(f"{node.node_id}: no status ({exc})")
            continue
        members = [
            (m.get("id"), m.get("role"), m.get("match_index"), m.get("last_contact_ms"))
            for m in status.get("members") or []
        ]
        brief = {
            k: status.get(k) for k in ("role", "term", "leader", "commit_index", "applied_index")
        }
        lines.append(f"{node.node_id}: {brief} members={members}")
    return lines


def _count(report: Report, name: str, ops: list[Op]) -> None:
    by: dict[str, int] = {}
    for op in ops:
        k = f"{op.f}:{op.status.value}"
        by[k] = by.get(k, 0) + 1
    report.summary.append(f"{name}: {len(ops)} ops {dict(sorted(by.items()))}")
