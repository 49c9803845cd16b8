"""The replicated suite: 3-replica zonestore against a 3-member etcd, side by side.

    python -m bench.run --suite replicated [--targets zonestore3,etcd]
                        [--repl-clients 1,16,64] [--kills 3] [--raw-procs 2]

Measures, for each client count, writes sent to the leader: zonestore through raw gRPC
(bench/loadgen.py: serialized CommitRequest bytes) and through the official client
(bench/workloads.py `put_500`), etcd through raw gRPC (a hand-encoded PutRequest), with
server CPU per write summed over the three members from /proc, the machine's load and
the other processes' CPU. Cells alternate targets within each client count so a
change in the shared box's background load hits both. Then, per target, `--kills`
times: SIGKILL the leader while a probe writes to every member, and report the time
to the first write issued after the kill that succeeds; the killed member is
restarted on its data folder before the next kill.

Runs in the parent process: must not import grpc (the workers do the load).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from array import array
from pathlib import Path
from typing import Any

from bench import etcd, loadgen, pool, replicas, report, targets, workloads

RAW = "raw grpc"
OFFICIAL = "official client"
DISPATCH_SLACK = 0.15  # seconds for commands to reach every worker
PROBE_LEAD = 1.0  # seconds of writes before the kill (shows the probe works)
FAILOVER_LIMIT = 15.0  # seconds after the kill before a failover counts as failed
PROBE_INTERVAL = 0.005
PROBE_RPC_TIMEOUT = 2.0
SETTLE = 1.0  # seconds after a restart before the next kill
IDLE_SECONDS = 2.0  # how long the idle CPU of a group is measured, with no load


def idle_cores(group: replicas.Group, seconds: float) -> float:
    """CPU the members burn with no load (ticks, heartbeats): the floor under CPU/op."""
    if seconds <= 0:
        return 0.0
    before = sum(group.cpu_seconds().values())
    time.sleep(seconds)
    return (sum(group.cpu_seconds().values()) - before) / seconds


def percentile(sorted_values: array[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def spread(clients: int, procs: int) -> list[int]:
    """Clients per worker process: as even as possible over min(clients, procs) workers."""
    procs = max(1, min(clients, procs))
    return [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]


def _metric_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What one member did over a cell, from two scrapes of its /metrics."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    forwarded = sum(
        after[k] - before.get(k, 0.0)
        for k in after
        if k.startswith("zonestore_forwarded_requests_total")
    )
    deltas = {
        "groups": delta("zonestore_commit_groups_total"),
        "applied": delta("zonestore_raft_applied_index"),
        "group_size_count": delta("zonestore_commit_group_size_count"),
        "group_size_sum": delta("zonestore_commit_group_size_sum"),
        "fsync_count": delta("zonestore_fsync_duration_seconds_count"),
        "fsync_sum": delta("zonestore_fsync_duration_seconds_sum"),
        "proposal_count": delta("zonestore_proposal_duration_seconds_count"),
        "proposal_sum": delta("zonestore_proposal_duration_seconds_sum"),
        "forwarded": forwarded,
    }
    prefix = 'zonestore_commit_group_size_bucket{le="'
    for k in after:  # cumulative buckets: groups of at most `le` entries
        if k.startswith(prefix):
            deltas["le_" + k[len(prefix) :].rstrip('"}')] = delta(k)
    return deltas


class Suite:
    def __init__(self, args: argparse.Namespace, workers: pool.Pool) -> None:
        self.args = args
        self.pool = workers
        self.cell_count = 0

    def _scrape(self, group: replicas.Group) -> dict[str, dict[str, float]]:
        if not isinstance(group, replicas.ZonestoreGroup):
            return {}
        scraped = {}
        for member in group.members:
            try:
                scraped[member.name] = group.metrics(member)
            except OSError:
                scraped[member.name] = {}
        return scraped

    def cell(
        self, group: replicas.Group, via: str, clients: int, warmup: float, seconds: float
    ) -> report.ReplCell:
        self.cell_count += 1
        tag = f"r{self.cell_count}"
        leader = group.leader()
        if isinstance(group, replicas.ZonestoreGroup):
            addr = group.leader_client_addr(leader)
            system = loadgen.ZONESTORE
        else:
            addr = group.client_addr(leader)
            system = loadgen.ETCD
        start_at = time.monotonic() + DISPATCH_SLACK + warmup
        end_at = start_at + seconds
        commands: list[Any]
        if via == RAW:
            commands = [
                loadgen.RawCell(system, addr, n, start_at, end_at, f"{tag}-p{i}")
                for i, n in enumerate(spread(clients, min(self.args.raw_procs, self.pool.size)))
            ]
        else:
            params = workloads.Params(cell_id=tag)
            commands = [
                pool.RunCell(addr, loadgen.PROJECT, workloads.PUT_500, params, n, start_at,
                             end_at, tag)
                for n in spread(clients, self.pool.size)
            ]  # fmt: skip
        for conn, command in zip(self.pool.conns, commands, strict=False):
            conn.send(command)
        time.sleep(max(0.0, start_at - time.monotonic()))
        cpu0 = group.cpu_split()
        busy0, _ = targets.machine_busy_seconds()
        metrics0 = self._scrape(group)
        time.sleep(max(0.0, end_at - time.monotonic()))
        cpu1 = group.cpu_split()
        busy1, _ = targets.machine_busy_seconds()
        load1 = os.getloadavg()[0]
        metrics1 = self._scrape(group)
        replies = []
        deadline = end_at + workloads.RPC_TIMEOUT + 30
        for conn in self.pool.conns[: len(commands)]:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"{group.name} {via} x{clients}: a worker did not finish")
            replies.append(conn.recv())
        lat = array("d")
        errors: dict[str, int] = {}
        client_cpu = 0.0
        for reply in replies:
            if isinstance(reply, pool.Failed):
                errors[reply.message] = errors.get(reply.message, 0) + 1
                continue
            chunk = array("d")
            chunk.frombytes(reply.latencies)
            lat.extend(chunk)
            for k, v in reply.errors.items():
                errors[k] = errors.get(k, 0) + v
            client_cpu += reply.cpu_seconds
        ops = len(lat)
        zero = (0.0, 0.0)
        member_user = {name: cpu1[name][0] - cpu0.get(name, zero)[0] for name in cpu1}
        member_sys = {name: cpu1[name][1] - cpu0.get(name, zero)[1] for name in cpu1}
        member_cpu = {name: member_user[name] + member_sys[name] for name in cpu1}
        server_cpu = sum(member_cpu.values())
        batching = {
            name: _metric_deltas(metrics0.get(name, {}), after) for name, after in metrics1.items()
        }
        common: dict[str, Any] = {
            "target": group.name, "client": via, "clients": clients, "ops": ops,
            "seconds": seconds, "errors": errors, "leader": leader.name,
            "server_cores": server_cpu / seconds, "client_cores": client_cpu / seconds,
            "other_cores": max(0.0, (busy1 - busy0 - server_cpu - client_cpu) / seconds),
            "loadavg_1m": load1, "batching": batching,
            "member_sys_share": {
                name: member_sys[name] / total if total > 0 else 0.0
                for name, total in member_cpu.items()
            },
        }  # fmt: skip
        if ops == 0:
            return report.ReplCell(**common, error=next(iter(errors), "no write completed"))
        lat = array("d", sorted(lat))
        return report.ReplCell(
            **common,
            ops_per_s=ops / seconds,
            p50_ms=percentile(lat, 0.50) * 1000,
            p99_ms=percentile(lat, 0.99) * 1000,
            server_cpu_us_per_op=server_cpu / ops * 1e6,
            member_cpu_us_per_op={k: v / ops * 1e6 for k, v in member_cpu.items()},
            client_cpu_us_per_op=client_cpu / ops * 1e6,
        )

    def failover(self, group: replicas.Group) -> report.Failover:
        self.cell_count += 1
        system = loadgen.ZONESTORE if isinstance(group, replicas.ZonestoreGroup) else loadgen.ETCD
        leader = group.leader(timeout=30)
        addrs = tuple(group.client_addr(m) for m in group.members)
        kill_at = time.monotonic() + DISPATCH_SLACK + PROBE_LEAD
        probe = loadgen.Probe(
            system, addrs, kill_at, kill_at + FAILOVER_LIMIT, PROBE_INTERVAL,
            PROBE_RPC_TIMEOUT, f"f{self.cell_count}",
        )  # fmt: skip
        conn = self.pool.conns[0]
        conn.send(probe)
        time.sleep(max(0.0, kill_at - time.monotonic()))
        killed_at = time.monotonic()
        leader.kill()
        limit = kill_at + FAILOVER_LIMIT + PROBE_RPC_TIMEOUT + 30
        if not conn.poll(max(0.0, limit - time.monotonic())):
            raise TimeoutError(f"{group.name}: the failover probe did not finish")
        reply = conn.recv()
        try:
            new_leader = group.leader(timeout=FAILOVER_LIMIT).name
        except TimeoutError:
            new_leader = ""
        group.restart(leader)
        group.leader(timeout=30)
        time.sleep(SETTLE)
        if isinstance(reply, pool.Failed):
            return report.Failover(group.name, leader.name, None, new_leader,
                                   first_error=reply.message)  # fmt: skip
        started, done = array("d"), array("d")
        started.frombytes(reply.started)
        done.frombytes(reply.done)
        after = [d for s, d in zip(started, done, strict=True) if s >= killed_at]
        before = sum(1 for s in started if killed_at - PROBE_LEAD <= s < killed_at)
        return report.Failover(
            target=group.name,
            killed=leader.name,
            seconds=(min(after) - killed_at) if after else None,
            new_leader=new_leader,
            writes_before_kill=before,
            failed_writes=sum(reply.errors.values()),
            first_error=max(reply.errors, key=reply.errors.get) if reply.errors else "",
        )


def build_groups(
    args: argparse.Namespace, scratch: Path, run: report.ReplRun
) -> list[replicas.Group]:
    groups: list[replicas.Group] = []
    for name in args.repl_targets:
        if name == "zonestore3":
            src = targets.export_node(args.zonestore_rev, scratch / "zonestore3-src")
            groups.append(replicas.ZonestoreGroup(scratch, src))
            continue
        if args.no_install:
            binary, how = etcd.find(), "not installed (--no-install)"
        else:
            binary, how = etcd.ensure_installed()
        if binary is None:
            print(f"etcd skipped: {how}", flush=True)
            run.skipped["etcd"] = how
            continue
        print(f"etcd: {how} ({binary})", flush=True)
        run.versions["etcd"] = etcd.version(binary)
        groups.append(etcd.EtcdGroup(scratch, binary))
    return groups


def run_suite(args: argparse.Namespace, workers: pool.Pool, scratch: Path) -> report.ReplRun:
    run = report.ReplRun(
        targets=[],
        skipped={},
        settings={
            "seconds": args.seconds, "cell_warmup": args.cell_warmup,
            "target_warmup": args.warmup, "procs": workers.size,
            "raw_procs": min(args.raw_procs, workers.size), "clients": args.repl_clients,
            "kills": args.kills, "quick": args.quick, "cpus": os.cpu_count(),
            "probe_interval": PROBE_INTERVAL,
        },
    )  # fmt: skip
    run.versions["python"] = ".".join(str(x) for x in sys.version_info[:3])
    run.loadavg["start"] = list(os.getloadavg())
    groups = build_groups(args, scratch, run)
    suite = Suite(args, workers)
    try:
        for group in list(groups):
            try:
                run.startup_s[group.name] = group.start()
                leader = group.leader()
            except (OSError, RuntimeError, TimeoutError) as exc:
                group.stop()
                groups.remove(group)
                run.skipped[group.name] = f"did not start: {str(exc)[:300]}"
                print(f"{group.name} skipped: did not start: {exc}", flush=True)
                continue
            run.targets.append(group.name)
            run.idle_cores[group.name] = idle_cores(group, 0.0 if args.quick else IDLE_SECONDS)
            print(f"{group.name} ready, leader {leader.name} at {group.client_addr(leader)}",
                  flush=True)  # fmt: skip
        plan: list[tuple[replicas.Group, str]] = []
        for group in groups:
            vias = [RAW, OFFICIAL] if isinstance(group, replicas.ZonestoreGroup) else [RAW]
            plan += [(group, via) for via in vias]
        for group, via in plan if not args.quick else []:  # quick: the cell warm-up will do
            suite.cell(group, via, 16, 0.0, args.warmup / len(plan))
        if plan and not args.quick:
            print(f"replica groups warmed up for {args.warmup:.1f} s", flush=True)
        run.loadavg["after warm-up"] = list(os.getloadavg())
        for clients in args.repl_clients:
            for group, via in plan:
                result = suite.cell(group, via, clients, args.cell_warmup, args.seconds)
                run.cells.append(result)
                print(_progress(result), flush=True)
        for group in groups:
            for _ in range(args.kills):
                try:
                    fo = suite.failover(group)
                except (OSError, RuntimeError, TimeoutError) as exc:
                    # A member that does not come back spoils the later kills: stop here.
                    print(f"  {group.name:10} failover aborted: {exc}", flush=True)
                    run.skipped[f"{group.name} failover"] = f"aborted: {str(exc)[:300]}"
                    break
                run.failovers.append(fo)
                took = "none in time" if fo.seconds is None else f"{fo.seconds:.3f} s"
                print(f"  {group.name:10} kill {fo.killed}: first write after {took} "
                      f"(new leader {fo.new_leader or '?'})", flush=True)  # fmt: skip
        run.loadavg["end"] = list(os.getloadavg())
    finally:
        for group in groups:
            group.stop()
    return run


def _progress(cell: report.ReplCell) -> str:
    name = f"{cell.target} {cell.client}"
    if cell.error is not None:
        return f"  {name:26} x{cell.clients:<3} n/a ({cell.error})"
    return (
        f"  {name:26} x{cell.clients:<3} {cell.ops_per_s:8.0f} ops/s"
        f"  p50 {cell.p50_ms:7.2f} ms  p99 {cell.p99_ms:7.2f} ms"
        f"  CPU {cell.server_cpu_us_per_op:5.0f} µs/op  load {cell.loadavg_1m:.2f}"
    )
