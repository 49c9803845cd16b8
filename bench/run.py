"""`make bench`: zonestore side by side with Google's emulator, and replicated with etcd.

    python -m bench.run [--suite all|emulator|replicated|scale] [--seconds 5] [--quick]
                        [--targets zonestore,emulator,zonestore3,etcd] [--json PATH]
                        [--threads 1,16] [--workloads put,lookup,...] [--procs 4]
                        [--repl-clients 1,16,64] [--kills 3] [--raw-procs 2]
                        [--profile DIR] [--no-install] [--rounds 1]
                        [--scale-sizes 10000,100000,1000000] [--memory-budget SIZE]

Two suites, both run by default. `make bench` took 8.3 minutes on the shared 2-core box
with a 1-minute load average of 5-13 from other work: about 6 for the emulator suite
(its preloads of 111k entities per target about 3 of those) and 2 for the replicated
suite (`--suite replicated` alone: 1.8-2.2 minutes, about 30 s of it the leader kills).

The emulator suite (targets zonestore, emulator): each target is a fresh server (a new
zonestore data folder, a new in-memory emulator) on loopback. Both are started,
preloaded with put_multi of 500 from parallel worker processes (timed), warmed up, and
then measured cell by cell, alternating targets within each (workload, clients) pair
so a change in the shared box's background load hits both sides alike. A target that
fails a workload gets "n/a (error: ...)" in its column instead of stopping the run; a
target that is not installed is skipped (exit 0).

The replicated suite (targets zonestore3, etcd; bench/replicated.py): a 3-replica
zonestore group against a 3-member etcd on loopback, writes to the leader at
1/16/64 clients, server CPU per write, and the time from SIGKILLing the leader to the
first successful write. etcd comes from Debian's etcd-server package, which the suite
installs when missing (apt-get; skipped with a message when that is impossible).

The scale suite (bench/scale.py), run only when asked for (`--suite scale`, about 20
minutes at 1M entities): one node grown to 1,000,000 entities, query latency and the
node's RSS at 10k, 100k and 1M.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, replace
from pathlib import Path

from bench import hotspots, pool, replicas, replicated, report, scale, targets, workloads

PROJECT = "bench"
EMULATOR_SUITE = ("zonestore", "emulator", "makerun3")
# make run's three replicas are measured on what a client of `make run` does most.
MAKERUN_WORKLOADS = ("put", "lookup")
REPLICATED_SUITE = ("zonestore3", "etcd")
DISPATCH_SLACK = 0.15  # seconds for commands to reach every worker before warm-up counts


@dataclass(frozen=True, slots=True)
class Sizes:
    lookup: int
    query: int
    query_small: int
    preload_batch: int = 500


FULL = Sizes(lookup=10_000, query=100_000, query_small=1_000)
QUICK = Sizes(lookup=1_000, query=2_000, query_small=200)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=None, help="measured seconds per cell (5)")
    p.add_argument("--threads", default="1,16", help="client counts, comma-separated")
    p.add_argument("--workloads", default=",".join(workloads.ALL))
    p.add_argument(
        "--suite",
        choices=["all", "emulator", "replicated", "scale"],
        default="all",
        help="which comparison to run (all: emulator and replicated; scale: alone)",
    )
    p.add_argument(
        "--scale-sizes",
        default=None,
        help="scale suite: entity counts to measure at (10000,100000,1000000; quick: 1000,3000)",
    )
    p.add_argument(
        "--memory-budget", default="", help="scale suite: the node's --memory-budget (its default)"
    )
    p.add_argument(
        "--targets",
        default=",".join(EMULATOR_SUITE + REPLICATED_SUITE),
        help="emulator suite: zonestore, emulator, makerun3 (make run's three replicas, "
        "put and lookup through the first port); replicated suite: zonestore3, etcd",
    )
    p.add_argument("--repl-clients", default="1,16,64", help="replicated suite client counts")
    p.add_argument("--kills", type=int, default=None, help="leader kills per group (3; quick: 1)")
    p.add_argument(
        "--raw-procs", type=int, default=2, help="worker processes for raw-gRPC load (2)"
    )
    p.add_argument("--no-install", action="store_true", help="do not apt-get install etcd-server")
    p.add_argument("--quick", action="store_true", help="small data and short cells (smoke run)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument(
        "--procs", type=int, default=None, help="max load-generator processes (4; quick: 2)"
    )
    p.add_argument("--warmup", type=float, default=None, help="per-target warm-up seconds (8)")
    p.add_argument("--cell-warmup", type=float, default=None, help="per-cell warm-up (1)")
    p.add_argument(
        "--profile", type=Path, default=None, help="py-spy the zonestore server in every cell"
    )
    p.add_argument(
        "--zonestore-rev",
        default=None,
        help="benchmark this git revision's node/ (e.g. HEAD) instead of the work tree",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (server logs)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="emulator suite: run every cell this many times, targets alternating, and "
        "report the median-throughput round with the range (1)",
    )
    args = p.parse_args(argv)
    q = args.quick
    args.seconds = args.seconds if args.seconds is not None else (1.0 if q else 5.0)
    args.procs = args.procs or (2 if q else 4)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if q else 8.0)
    args.cell_warmup = args.cell_warmup if args.cell_warmup is not None else (0.1 if q else 1.0)
    args.sizes = QUICK if q else FULL
    args.clients = [int(x) for x in args.threads.split(",") if x.strip()]
    args.workload_list = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in args.workload_list:
        if w not in workloads.ALL:
            p.error(f"unknown workload {w!r} (choose from {', '.join(workloads.ALL)})")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    args.repl_clients = [int(x) for x in args.repl_clients.split(",") if x.strip()]
    try:
        default_sizes = scale.QUICK_SIZES if q else scale.SIZES
        args.scale_size_list = (
            scale.parse_sizes(args.scale_sizes) if args.scale_sizes else list(default_sizes)
        )
    except ValueError as exc:
        p.error(str(exc))
    args.kills = args.kills if args.kills is not None else (1 if q else 3)
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in wanted:
        if t not in EMULATOR_SUITE + REPLICATED_SUITE:
            p.error(f"unknown target {t!r}")
    suites = ("emulator", "replicated") if args.suite == "all" else (args.suite,)
    args.target_list = [t for t in wanted if t in EMULATOR_SUITE and "emulator" in suites]
    args.repl_targets = [t for t in wanted if t in REPLICATED_SUITE and "replicated" in suites]
    if args.profile is not None and hotspots.py_spy() is None:
        p.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    return args


def percentile(sorted_values: array[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


Server = targets.Target | replicas.FirstPort


class Bench:
    def __init__(self, args: argparse.Namespace, workers: pool.Pool) -> None:
        self.args = args
        self.pool = workers
        self.cell_count = 0
        self.profiles: list[tuple[str, Path]] = []

    def spread(self, clients: int) -> list[int]:
        """Threads per worker process for `clients` clients: as even as possible."""
        procs = min(clients, self.pool.size)
        return [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]

    def preload(self, target: Server, kind: str, entities: int) -> report.LoadResult:
        procs = min(self.pool.size, 4, max(1, entities // self.args.sizes.preload_batch))
        bounds = [entities * i // procs for i in range(procs + 1)]
        commands = [
            pool.Preload(
                target.addr, PROJECT, kind, bounds[i], bounds[i + 1], entities,
                self.args.sizes.preload_batch,
            )
            for i in range(procs)
        ]  # fmt: skip
        began = time.monotonic()
        replies = self.pool.call(commands, timeout=600)
        elapsed = time.monotonic() - began
        failed = [r.message for r in replies if isinstance(r, pool.Failed)]
        return report.LoadResult(
            target.name, kind, entities, elapsed, error=failed[0] if failed else None
        )

    def cell(
        self,
        target: Server,
        workload: str,
        clients: int,
        params: workloads.Params,
        warmup: float,
        seconds: float,
        record: bool = True,
    ) -> report.CellResult:
        self.cell_count += 1
        cell_id = f"c{self.cell_count}"
        params = workloads.Params(params.lookup_entities, params.query_entities, cell_id)
        start_at = time.monotonic() + DISPATCH_SLACK + warmup
        end_at = start_at + seconds
        commands = [
            pool.RunCell(target.addr, PROJECT, workload, params, n, start_at, end_at, cell_id)
            for n in self.spread(clients)
        ]
        for conn, command in zip(self.pool.conns, commands, strict=False):
            conn.send(command)
        time.sleep(max(0.0, start_at - time.monotonic()))
        server0 = target.cpu_seconds()
        edge0 = target.edge_cpu_seconds()
        busy0, _ = targets.machine_busy_seconds()
        spy = None
        if record and self.args.profile is not None and target.name == "zonestore":
            self.args.profile.mkdir(parents=True, exist_ok=True)
            raw = self.args.profile / f"{workload}-{clients}-{params.query_entities}.txt"
            spy = (hotspots.start(target.pid, seconds, raw), raw)
        time.sleep(max(0.0, end_at - time.monotonic()))
        server1 = target.cpu_seconds()
        edge1 = target.edge_cpu_seconds()
        busy1, _ = targets.machine_busy_seconds()
        load1 = os.getloadavg()[0]
        replies = []
        deadline = end_at + workloads.RPC_TIMEOUT + 30
        for conn in self.pool.conns[: len(commands)]:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"{workload} on {target.name}: a worker did not finish")
            replies.append(conn.recv())
        if spy is not None:
            spy[0].wait(timeout=60)
            self.profiles.append((f"{target.name} {workload} x{clients}", spy[1]))
        lat = array("d")
        errors: dict[str, int] = {}
        client_cpu = 0.0
        retries = committed = 0
        for reply in replies:
            if isinstance(reply, pool.Failed):
                errors[reply.message] = errors.get(reply.message, 0) + 1
                continue
            part: pool.CellPart = reply
            chunk = array("d")
            chunk.frombytes(part.latencies)
            lat.extend(chunk)
            for k, v in part.errors.items():
                errors[k] = errors.get(k, 0) + v
            client_cpu += part.cpu_seconds
            retries += part.retries
            committed += part.committed
        counter_value = None
        if workload == workloads.TXN_COUNTER:
            value = self.pool.call([pool.ReadCounter(target.addr, PROJECT, cell_id)], timeout=60)
            if isinstance(value[0], int):
                counter_value = value[0]
        ops = len(lat)
        server_cpu = server1 - server0
        entities = {
            workloads.LOOKUP: params.lookup_entities,
            workloads.QUERY: params.query_entities,
        }.get(workload, 0)
        common = {
            "workload": workload, "clients": clients, "target": target.name,
            "entities": entities, "ops": ops, "seconds": seconds, "errors": errors,
            "server_cores": server_cpu / seconds, "client_cores": client_cpu / seconds,
            "other_cores": max(0.0, (busy1 - busy0 - server_cpu - client_cpu) / seconds),
            "loadavg_1m": load1, "retries": retries,
            "committed": committed if workload == workloads.TXN_COUNTER else None,
            "counter_value": counter_value,
        }  # fmt: skip
        if ops == 0:
            message = next(iter(errors), "no operation completed")
            return report.CellResult(**common, error=message)  # type: ignore[arg-type]
        lat = array("d", sorted(lat))
        return report.CellResult(
            **common,  # type: ignore[arg-type]
            ops_per_s=ops / seconds,
            p50_ms=percentile(lat, 0.50) * 1000,
            p99_ms=percentile(lat, 0.99) * 1000,
            server_cpu_us_per_op=server_cpu / ops * 1e6,
            client_cpu_us_per_op=client_cpu / ops * 1e6,
            edge_cpu_us_per_op=(
                (edge1 - edge0) / ops * 1e6 if edge0 is not None and edge1 is not None else None
            ),
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (a CI timeout, say) unwinds like Ctrl-C, so every server we started stops.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    scratch = Path(tempfile.mkdtemp(prefix="zonestore-bench-"))
    emulator_run: report.Run | None = None
    replicated_run: report.ReplRun | None = None
    workers: pool.Pool | None = None
    if args.suite == "scale":
        return scale_suite(args, scratch)
    try:
        if not args.target_list and not args.repl_targets:
            print("no target to run", flush=True)
            return 0
        workers = pool.Pool(max(args.procs, 1))
        if args.target_list:
            emulator_run = emulator_suite(args, workers, scratch)
        if args.repl_targets:
            replicated_run = replicated.run_suite(args, workers, scratch)
    finally:
        if workers is not None:
            workers.close()
        if args.keep:
            print(f"scratch kept at {scratch}", flush=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    if emulator_run is not None:
        print()
        print(report.render(emulator_run), flush=True)
    if replicated_run is not None:
        print()
        print(report.render_replicated(replicated_run), flush=True)
    if emulator_run is not None or replicated_run is not None:
        print()
        print(
            "# Issue 14's goals (medians of the rounds above)"
            if args.rounds > 1
            else "# Issue 14's goals (one round; the goals are medians of three: --rounds 3)"
        )
        print()
        print(report.goals_table(emulator_run, replicated_run), flush=True)
    if args.json is not None:
        report.write_json(emulator_run, args.json, replicated_run)
        print(f"results written to {args.json}")
    return 0


def scale_suite(args: argparse.Namespace, scratch: Path) -> int:
    workers = pool.Pool(max(args.procs, 1))
    try:
        run = scale.run_suite(args, workers, scratch)
    finally:
        workers.close()
        if args.keep:
            print(f"scratch kept at {scratch}", flush=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(scale.render(run), flush=True)
    if args.json is not None:
        scale.write_json(run, args.json)
        print(f"results written to {args.json}")
    return 0


def emulator_suite(args: argparse.Namespace, workers: pool.Pool, scratch: Path) -> report.Run:
    sizes: Sizes = args.sizes
    run = report.Run(
        targets=[],
        skipped={},
        settings={
            "seconds": args.seconds, "cell_warmup": args.cell_warmup,
            "target_warmup": args.warmup, "procs": args.procs, "quick": args.quick,
            "clients": args.clients, "workloads": args.workload_list,
            "sizes": {"lookup": sizes.lookup, "query": sizes.query,
                      "query_small": sizes.query_small},
            "cpus": os.cpu_count(), "zonestore_rev": args.zonestore_rev or "work tree",
        },
    )  # fmt: skip
    run.loadavg["start"] = list(os.getloadavg())
    servers: list[Server] = []
    for name in args.target_list:
        if name == "zonestore":
            servers.append(targets.Zonestore(scratch, args.zonestore_rev))
        elif name == "makerun3":
            src = targets.export_node(args.zonestore_rev, scratch / "makerun3-src")
            servers.append(replicas.FirstPort(scratch, src))
        else:
            found = targets.find_emulator()
            if found is None:
                print("emulator not installed: skipped", flush=True)
                run.skipped["emulator"] = "not installed"
            else:
                servers.append(targets.Emulator(scratch, *found))
    try:
        if not servers:
            print("no target to run", flush=True)
            return run
        bench = Bench(args, workers)
        for server in servers:
            run.startup_s[server.name] = server.start()
            run.targets.append(server.name)
            print(f"{server.name} ready at {server.addr} (pid {server.pid})", flush=True)
            if isinstance(server, replicas.FirstPort):
                run.settings["makerun3_leader"] = server.leader_name()
        wanted = set(args.workload_list)
        query_sizes = [sizes.query_small, sizes.query] if workloads.QUERY in wanted else []
        for server in servers:
            kinds = [(workloads.LOOKUP_KIND, sizes.lookup)]
            if server.name != "makerun3":
                kinds += [(workloads.query_kind(n), n) for n in query_sizes]
            for kind, n in kinds:
                load = bench.preload(server, kind, n)
                run.loads.append(load)
                state = load.error or f"{load.seconds:.1f} s ({load.per_s:,.0f}/s)"
                print(f"{server.name}: preloaded {n:,} {kind} in {state}", flush=True)
        params = workloads.Params(sizes.lookup, sizes.query)
        warm = [workloads.PUT, workloads.LOOKUP, workloads.PUT_MULTI]
        warm += [w for w in (workloads.QUERY, workloads.TXN_COUNTER) if w in wanted]
        for server in servers:
            mine = [w for w in warm if _runs(server, w)]
            for w in mine:
                bench.cell(server, w, 4, params, 0.0, args.warmup / len(mine), record=False)
            print(f"{server.name}: warmed up for {args.warmup:.1f} s", flush=True)
        run.loadavg["after preload"] = list(os.getloadavg())
        for workload in args.workload_list:
            for clients in args.clients:
                rounds: dict[str, list[report.CellResult]] = {s.name: [] for s in servers}
                here = [s for s in servers if _runs(s, workload)]
                for r in range(args.rounds):
                    # Alternate who goes first: machine load drifts within a cell pair.
                    for server in here if r % 2 == 0 else here[::-1]:
                        result = bench.cell(
                            server, workload, clients, params, args.cell_warmup, args.seconds
                        )
                        rounds[server.name].append(result)
                        print(_progress(result), flush=True)
                run.cells.extend(median_round(rounds[s.name]) for s in here)
        if query_sizes:
            for server in [s for s in servers if _runs(s, workloads.QUERY)]:
                small = workloads.Params(sizes.lookup, sizes.query_small)
                result = bench.cell(
                    server, workloads.QUERY, 1, small, args.cell_warmup, args.seconds
                )
                run.scaling.append(result)
                print(_progress(result), flush=True)
                big = run.find(workloads.QUERY, 1, server.name)
                if big is None:
                    big = bench.cell(
                        server, workloads.QUERY, 1, params, args.cell_warmup, args.seconds
                    )
                run.scaling.append(big)
        run.loadavg["end"] = list(os.getloadavg())
        for label, raw in bench.profiles:
            run.hotspots[label] = hotspots.summarise(raw)
    finally:
        for server in servers:
            server.stop()
    return run


def _runs(server: Server, workload: str) -> bool:
    return server.name != "makerun3" or workload in MAKERUN_WORKLOADS


def median_round(results: list[report.CellResult]) -> report.CellResult:
    """The round with the median throughput (the lower middle one of an even count),
    carrying every round's ops/s; a failed round counts as 0 ops/s."""
    if len(results) == 1:
        return results[0]
    ranked = sorted(results, key=lambda c: c.ops_per_s or 0.0)
    chosen = ranked[(len(ranked) - 1) // 2]
    return replace(chosen, round_ops=tuple(c.ops_per_s or 0.0 for c in results))


def _progress(cell: report.CellResult) -> str:
    if cell.error is not None:
        return f"  {cell.target:9} {cell.workload:11} x{cell.clients:<3} n/a ({cell.error})"
    return (
        f"  {cell.target:9} {cell.workload:11} x{cell.clients:<3} {cell.ops_per_s:8.0f} ops/s"
        f"  p50 {cell.p50_ms:7.2f} ms  p99 {cell.p99_ms:7.2f} ms  load {cell.loadavg_1m:.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
