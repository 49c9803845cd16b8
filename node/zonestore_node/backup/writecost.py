"""What a running base backup and continuous archiving cost the writes, for `make bench`:

    python -m zonestore_node.backup.writecost [--replicas 3] [--clients 16] [--window 5]
                                              [--rounds 5] [--entities 250000] [--pad 4000]
                                              [--backup-to elsewhere|same-disk]
                                              [--max-rate 64MB] [--json FILE]

Two groups of `make run`'s shape (3 replicas of `zonestore serve` on loopback, the same
command line `zonestore run` gives them, the edge as `--edge auto` finds it), each in a
scratch folder: group A plain, group B started with `--archive-to file://...` (and
`--archive-max-delay-seconds 1`, so that segments are uploaded inside every window
rather than once a minute; the bytes archived are the same). Both are first preloaded
with the same `--entities` entities of `--pad` random (incompressible) bytes through the
managed export importer (`zonestore import`'s path, ~30 MB/s here): by default ~1 GB
imported, ~1.4 GB of RocksDB files per replica, so that one backup streams for seconds
as a backup of a real database does, not a fraction of one. One worker process (raw
gRPC, grpc.aio, `--clients` closed-loop coroutines) sends non-transactional Commits
upserting one new ~200-byte entity each to the group's leader, and counts the writes
completed inside a `--window`-second window. Three phases per round:

  none     group A, no backup, no archiving;
  archive  group B, archiving (the cost compares it with `none`: same data, same load);
  backup   group A while `base.create` (as `zonestore backup create` runs it, in this
           process, with its --max-rate, 64 MB/s by default) runs one backup at a time,
           back to back, the first starting just after the window opens (so its
           checkpoint on a follower falls inside the window); each backup is deleted
           when done, and the one under way when the window closes runs to its end
           before the next phase. The report gives the database's size (each backup's
           bytes) and how long each backup took. `--backup-to elsewhere` (the default
           where /dev/shm exists) writes the copies to tmpfs, standing for an object
           store on another machine; `same-disk` writes them beside the replicas' data,
           where their writeback competes with the replicas' fsyncs.

The phase order rotates each round (none/archive/backup, archive/backup/none, ...) so a
drift of the shared machine's load does not favour one phase; the report gives every
window's writes/s, the median, and the median's drop against `none`'s median beside the
goal (at most 10% fewer writes/s). Both groups run throughout, so the idle one's
heartbeats weigh on every phase alike. With 2 cores the backup's own work (reading the
checkpoint from a follower over HTTP, hashing, writing the copy) competes with the
group for CPU: a backup run from another machine would cost the writes less; and a
folder on the same disk takes the copy at hundreds of MB/s, faster than an object
store over a network would, so the backup's work is packed into fewer seconds here.

Figures, 2026-12-06, this repository's 2-core machine, nothing else running (1-minute
load 1-2 before, 2-4 at the end, the bench's own); each backup copies 1.06-1.27 GB:
- unpaced, to the same disk (cd7b85f): 61-63% fewer writes/s (no backup ~2,320
  writes/s): the copy at ~650 MB/s took about half of the two cores;
- paced at 64 MB/s (the default since), same disk: 30.9% fewer (16.5-19.3 s per
  backup; round by round -6% to 44%): the copy's writeback delays the replicas' fsyncs
  on the one disk;
- paced at 64 MB/s, elsewhere (the default destination here): 1.6% more (round by round
  -38% to +33%; windows spread 43-52%): met, within the noise;
- archiving to a folder: 3.2% / 7.0% fewer, 3.1% / 11.8% more in four runs: met.
Before, backups of the load's own 3-11 MB database back to back (a checkpoint on a
follower every ~0.15 s, each holding its event loop ~34 ms) gave 34-39% fewer: a
checkpoint-rate stress figure, no longer measured.

Imports no test code; grpc only inside the worker process.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zonestore_node.backup import base, catalog, objstore
from zonestore_node.export import bench as export_bench
from zonestore_node.export import transfer

PROJECT = "bench-writecost"
KIND = "Row"
SHM = Path("/dev/shm")  # tmpfs: a backup destination off the replicas' disk
GOAL_DROP_PCT = 10.0
PHASES = ("none", "archive", "backup")
ARCHIVE_MAX_DELAY_S = 1.0
READY_TIMEOUT_S = 60.0
RPC_TIMEOUT_S = 30.0
RAMP_S = 0.5  # writes before a window opens: connections made, clients running
SETTLE_S = 2.0  # between windows: the archiver ships the last one's tail (delay + poll)
QUIET_CORES = 0.3  # the six replicas idle with their heartbeats use ~0.1
QUIESCE_PRELOAD_S = 60.0
QUIESCE_WINDOW_S = 15.0
PRELOAD_ENTITIES = 250_000  # ~1 GB imported into each group, 1.4 GB on disk per replica
PRELOAD_PAD_BYTES = 4_000
BACKUP_DELAY_S = RAMP_S + 0.3  # the first backup's checkpoint lands inside the window


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(slots=True)
class _Replica:
    node_id: str
    client: str
    admin: str
    proc: subprocess.Popen[bytes]


@dataclass(slots=True)
class Group:
    """`size` replicas of `zonestore serve` in `folder`, as `zonestore run` starts them."""

    folder: Path
    size: int
    extra: list[str] = field(default_factory=list)
    replicas: list[_Replica] = field(default_factory=list)

    def start(self) -> None:
        ids = [f"local-{i}" for i in range(self.size)]
        peers = [f"127.0.0.1:{_free_port()}" for _ in ids]
        cluster = ",".join(f"{n}={p}" for n, p in zip(ids, peers, strict=True))
        self.folder.mkdir(parents=True, exist_ok=True)
        for i, node_id in enumerate(ids):
            client, admin = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
            cmd = [
                sys.executable, "-m", "zonestore_node.cli", "serve",
                "--node-id", node_id, "--zone", f"zone-{chr(ord('a') + i % 3)}",
                "--data-dir", str(self.folder / node_id),
                "--client-addr", client, "--admin-addr", admin,
                *self.extra,
            ]  # fmt: skip
            if self.size > 1:
                cmd += ["--peer-addr", peers[i], "--initial-cluster", cluster]
            with open(self.folder / f"{node_id}.log", "ab") as log:
                proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            self.replicas.append(_Replica(node_id, client, admin, proc))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for replica in self.replicas:
            while not _get_ok(f"http://{replica.admin}/readyz"):
                if replica.proc.poll() is not None:
                    raise RuntimeError(f"{replica.node_id} exited: see {self.folder}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{replica.node_id} not ready: see {self.folder}")
                time.sleep(0.1)
        self.leader()

    def leader(self) -> _Replica:
        """The replica every replica names as leader (waits for one, bounded)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            views = set()
            for replica in self.replicas:
                try:
                    with urllib.request.urlopen(
                        f"http://{replica.admin}/admin/status", timeout=5
                    ) as r:
                        views.add(json.loads(r.read()).get("leader"))
                except (OSError, ValueError):
                    views.add(None)
            if len(views) == 1 and None not in views:
                leader_id = views.pop()
                for replica in self.replicas:
                    if replica.node_id == leader_id:
                        return replica
            time.sleep(0.1)
        raise RuntimeError(f"no agreed leader in {self.folder}")

    def stop(self) -> None:
        for replica in self.replicas:
            if replica.proc.poll() is None:
                replica.proc.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            try:
                replica.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                replica.proc.kill()
                replica.proc.wait()


def _get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


# --- the load (runs in the worker process) ---------------------------------------------


def load_window(addr: str, clients: int, seconds: float, tag: str) -> tuple[int, dict[str, int]]:
    """Writes completed in a `seconds` window by `clients` closed-loop writers to `addr`,
    and the errors by description. Runs in the worker process."""
    import asyncio

    return asyncio.run(_load(addr, clients, seconds, tag))


async def _load(addr: str, clients: int, seconds: float, tag: str) -> tuple[int, dict[str, int]]:
    import asyncio

    import grpc
    from google.cloud.datastore_v1.types import datastore, entity

    commit_pb, key_pb, value_pb = datastore.CommitRequest.pb(), entity.Key.pb(), entity.Value.pb()
    errors: dict[str, int] = {}
    counted = 0
    clock = time.monotonic

    def request(name: str, n: int) -> bytes:
        upsert = entity.Entity.pb()(
            key=key_pb(
                partition_id=entity.PartitionId.pb()(project_id=PROJECT),
                path=[key_pb.PathElement(kind=KIND, name=name)],
            ),
            properties={
                "n": value_pb(integer_value=n),
                "name": value_pb(string_value=f"row {name}"),
                "pad": value_pb(string_value="x" * 120, exclude_from_indexes=True),
            },
        )
        return bytes(
            commit_pb(
                project_id=PROJECT,
                mode=commit_pb.Mode.NON_TRANSACTIONAL,
                mutations=[datastore.Mutation.pb()(upsert=upsert)],
            ).SerializeToString()
        )

    async with grpc.aio.insecure_channel(addr, options=[("grpc.enable_retries", 0)]) as channel:
        await asyncio.wait_for(channel.channel_ready(), READY_TIMEOUT_S)
        call = channel.unary_unary("/google.datastore.v1.Datastore/Commit")
        opens = clock() + RAMP_S  # once connected
        closes = opens + seconds

        async def writer(c: int) -> None:
            nonlocal counted
            n = 0
            while clock() < closes:
                try:
                    await call(request(f"{tag}-c{c}-{n}", n), timeout=RPC_TIMEOUT_S)
                except grpc.aio.AioRpcError as exc:
                    what = f"{exc.code().name}: {exc.details()}"[:120]
                    errors[what] = errors.get(what, 0) + 1
                    await asyncio.sleep(0.01)
                    continue
                n += 1
                if opens <= clock() <= closes:
                    counted += 1

        async with asyncio.TaskGroup() as tg:
            for c in range(clients):
                tg.create_task(writer(c))
    return counted, errors


# --- backups back to back (in this process) ---------------------------------------------


class _BackupLoop:
    """`base.create` of a group into `store`, one at a time, again and again until
    stopped; each backup deleted once complete. The first starts `delay` seconds after
    entering, so that its checkpoint falls inside the load's window, not in its ramp."""

    def __init__(
        self, admin_addr: str, store: objstore.ObjectStore, delay: float, max_rate: int | None
    ) -> None:
        self.admin_addr = admin_addr
        self.store = store
        self.delay = delay
        self.max_rate = max_rate
        self.stop = threading.Event()
        self.completed = 0
        self.bytes: list[int] = []
        self.seconds: list[float] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="backup-loop", daemon=True)

    def _run(self) -> None:
        admin = base.AdminClient()
        try:
            self.stop.wait(self.delay)
            while not self.stop.is_set():
                made = base.create(admin, self.admin_addr, self.store, max_rate=self.max_rate)
                self.completed += 1
                self.bytes.append(made.manifest.total_bytes)
                self.seconds.append(made.seconds)
                catalog.delete(self.store, made.manifest.backup_id)
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def __enter__(self) -> _BackupLoop:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()  # the backup under way runs to its end (after the window)
        self.thread.join(timeout=600)


def write_export(root: Path, count: int, pad: int) -> Path:
    """An export (export/bench.py's writer) of `count` entities of kind Row, ids
    1..count, each with `pad` random bytes in an unindexed blob (random so that RocksDB's
    compression does not shrink the database the backup copies); returns its overall
    metadata file."""
    rng = random.Random(16)

    def fill(row: Any, i: int) -> None:
        row.properties["n"].integer_value = i
        row.properties["name"].string_value = f"row number {i}"
        row.properties["pad"].blob_value = rng.randbytes(pad)
        row.properties["pad"].exclude_from_indexes = True

    return export_bench.write_rows(root, "preload", count, fill, project=PROJECT)


def preload(group: Group, overall: Path, count: int) -> dict[str, Any]:
    """Import the export `overall` (write_export's, `count` entities) into `group` through
    its leader's client port, as `zonestore import` does (batched upserts, a few commits
    in flight); the load's keys are names, so it never overwrites these."""
    client = transfer.Node(group.leader().client)
    quiet = open(os.devnull, "w")  # noqa: SIM115 - closed below
    try:
        source, key = transfer.split_location(str(overall))
        imported = transfer.import_entities(
            client, source, key, project=PROJECT, progress=transfer.Progress("preload", quiet)
        )
    finally:
        client.close()
        quiet.close()
    if imported.entities != count:
        raise RuntimeError(f"preloaded {imported.entities} of {count} entities")
    return {"entities": imported.entities, "bytes": imported.bytes, "seconds": imported.seconds}


# --- CPU: what the replicas and the backup use, and waiting for them to go quiet ---------


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds so far of these processes (Linux /proc; 0 elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (proc(5))
    return total


def _quiesce(pids: list[int], most_s: float) -> float:
    """Wait until these processes use less than QUIET_CORES for a second (RocksDB's
    compactions after the preload, the archiver's backlog), at most `most_s`; returns
    the seconds waited."""
    started = time.monotonic()
    before = _cpu_seconds(pids)
    while time.monotonic() - started < most_s:
        time.sleep(1.0)
        now = _cpu_seconds(pids)
        if now - before < QUIET_CORES:
            break
        before = now
    return time.monotonic() - started


# --- the run ---------------------------------------------------------------------------


def _order(round_no: int) -> list[str]:
    k = round_no % len(PHASES)
    return list(PHASES[k:] + PHASES[:k])


def run(
    scratch: Path,
    replicas: int = 3,
    clients: int = 16,
    window: float = 5.0,
    rounds: int = 5,
    warmup: float = 2.0,
    settle: float = SETTLE_S,
    entities: int = PRELOAD_ENTITIES,
    pad: int = PRELOAD_PAD_BYTES,
    backup_dir: Path | None = None,
    max_rate: int | None = base.DEFAULT_MAX_RATE,
) -> dict[str, Any]:
    """`backup_dir`: where backups go (default: in `scratch`, on the replicas' disk);
    `max_rate`: backup create's --max-rate in bytes/s (None: unpaced)."""
    archive_url = (scratch / "archive").as_uri()
    plain = Group(scratch / "plain", replicas)
    archiving = Group(
        scratch / "archiving",
        replicas,
        ["--archive-to", archive_url, "--archive-max-delay-seconds", str(ARCHIVE_MAX_DELAY_S)],
    )
    backup_dir = backup_dir or scratch / "backups"
    backups = objstore.open_store(backup_dir.as_uri())
    windows: dict[str, list[float]] = {p: [] for p in PHASES}
    writes: dict[str, int] = dict.fromkeys(PHASES, 0)
    errors: dict[str, int] = {}
    backup_runs: list[dict[str, Any]] = []
    cores: dict[str, dict[str, list[float]]] = {p: {"replicas": [], "backup": []} for p in PHASES}
    waited: list[float] = []
    spawn = multiprocessing.get_context("spawn")
    load_before = os.getloadavg()
    try:
        plain.start()
        archiving.start()
        overall = write_export(scratch / "preload", entities, pad)
        preloaded = {  # the same data in both, so `archive` and `none` differ by archiving only
            name: preload(group, overall, entities)
            for group, name in ((plain, "plain"), (archiving, "archiving"))
        }
        shutil.rmtree(scratch / "preload")
        pids = [r.proc.pid for g in (plain, archiving) for r in g.replicas]
        waited.append(_quiesce(pids, QUIESCE_PRELOAD_S))
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as worker:
            for group, name in ((plain, "warm-a"), (archiving, "warm-b")):  # warm-up, unreported
                worker.submit(load_window, group.leader().client, clients, warmup, name).result()
            for r in range(rounds):
                for phase in _order(r):
                    time.sleep(settle)
                    waited.append(_quiesce(pids, QUIESCE_WINDOW_S))
                    group = archiving if phase == "archive" else plain
                    args = (group.leader().client, clients, window, f"r{r}-{phase}")
                    group_pids = [replica.proc.pid for replica in group.replicas]
                    cpu_before = (_cpu_seconds(group_pids), time.process_time(), time.monotonic())
                    if phase == "backup":
                        with _BackupLoop(
                            plain.leader().admin, backups, BACKUP_DELAY_S, max_rate
                        ) as loop:
                            count, errs = worker.submit(load_window, *args).result()
                            cpu_after = (
                                _cpu_seconds(group_pids),
                                time.process_time(),
                                time.monotonic(),
                            )
                        os.sync()  # the copy's dirty pages: written back now, not in the next window
                        if loop.error is not None:
                            raise RuntimeError(f"backup failed: {loop.error}") from loop.error
                        backup_runs.append(
                            {
                                "completed": loop.completed,
                                "bytes": loop.bytes,
                                "seconds": loop.seconds,
                            }
                        )
                    else:
                        count, errs = worker.submit(load_window, *args).result()
                        cpu_after = (
                            _cpu_seconds(group_pids),
                            time.process_time(),
                            time.monotonic(),
                        )
                    elapsed = cpu_after[2] - cpu_before[2]  # the window, not the wait after it
                    cores[phase]["replicas"].append((cpu_after[0] - cpu_before[0]) / elapsed)
                    cores[phase]["backup"].append((cpu_after[1] - cpu_before[1]) / elapsed)
                    windows[phase].append(count / window)
                    writes[phase] += count
                    for what, n in errs.items():
                        errors[what] = errors.get(what, 0) + n
        segments = [
            info.key
            for info in objstore.open_store(archive_url).list(catalog.ARCHIVE)
            if info.key.endswith(".seg")
        ]
    finally:
        plain.stop()
        archiving.stop()
        backups.close()
    medians = {p: statistics.median(windows[p]) for p in PHASES}
    spread = {
        p: 100.0 * (max(windows[p]) - min(windows[p])) / max(medians[p], 1e-9) for p in PHASES
    }
    drops = {
        p: 100.0 * (medians["none"] - medians[p]) / max(medians["none"], 1e-9)
        for p in ("archive", "backup")
    }
    paired = {  # each round's drop against that round's own `none` window
        p: [
            100.0 * (n - x) / max(n, 1e-9) for n, x in zip(windows["none"], windows[p], strict=True)
        ]
        for p in ("archive", "backup")
    }
    return {
        "replicas": replicas,
        "clients": clients,
        "window_seconds": window,
        "rounds": rounds,
        "preload": preloaded,
        "writes_per_s": windows,
        "median_writes_per_s": medians,
        "writes": writes,
        "spread_pct": spread,
        "round_drops_pct": paired,
        "drop_pct": drops,
        "goal_drop_pct": GOAL_DROP_PCT,
        "met": {p: drops[p] <= GOAL_DROP_PCT for p in drops},
        "cores": cores,  # per window (with its ramp): the group's replicas, this process
        "quiesce_seconds": waited,  # after the preload, then before each window
        "archive_segments": len(segments),
        "backups": backup_runs,
        "backup_destination": str(backup_dir),
        "backup_max_rate": max_rate,
        "errors": errors,
        "load_average_before": load_before,
        "load_average": os.getloadavg(),
    }


def report(result: dict[str, Any]) -> str:
    medians, drops = result["median_writes_per_s"], result["drop_pct"]
    done = sum(b["completed"] for b in result["backups"])
    took = [s for b in result["backups"] for s in b["seconds"]]
    sizes = [n / 1e6 for b in result["backups"] for n in b["bytes"]]
    each_s = statistics.median(took) if took else 0.0
    label = {
        "none": "no backup, no archiving",
        "archive": f"archiving to a folder ({result['archive_segments']} segments)",
        "backup": f"one base backup at a time ({done}, {each_s:.1f} s each)",
    }
    rate = result.get("backup_max_rate")
    paced = f"paced at {rate / 1e6:g} MB/s" if rate else "unpaced"
    loaded = result["preload"]["plain"]
    lines = [
        f"write cost of backup and archiving: {result['replicas']} replica(s) on loopback, "
        f"{result['clients']} clients putting one ~200-byte entity per commit, "
        f"{result['rounds']} windows of {result['window_seconds']:g} s per phase "
        f"(1-minute load average {result['load_average_before'][0]:.1f} before, "
        f"{result['load_average'][0]:.1f} at the end)",
        f"  each group preloaded with {loaded['entities']:,} entities "
        f"({loaded['bytes'] / 1e6:,.0f} MB imported in {loaded['seconds']:.0f} s); "
        + (
            f"the database a backup copies: {min(sizes):,.0f}-{max(sizes):,.0f} MB; "
            f"each backup took {min(took):.1f}-{max(took):.1f} s "
            f"({', '.join(f'{t:.1f}' for t in took)}), {paced}, "
            f"to {result.get('backup_destination', '?')}"
            if took
            else "no backup completed"
        ),
    ]
    for phase in PHASES:
        each = ", ".join(f"{w:,.0f}" for w in result["writes_per_s"][phase])
        line = f"  {label[phase]:<44} {medians[phase]:>7,.0f} writes/s (median of {each})"
        if phase in drops:
            verdict = "met" if result["met"][phase] else "not met"
            drop = drops[phase]
            change = f"{drop:.1f}% fewer" if drop >= 0 else f"{-drop:.1f}% more"
            rounds = ", ".join(f"{d:.0f}" for d in result["round_drops_pct"][phase])
            line += (
                f"  {change}; goal <= {GOAL_DROP_PCT:g}% fewer: {verdict}"
                f" (round by round: {rounds}%)"
            )
        lines.append(line)
    cores = result["cores"]
    lines.append(
        "  CPU in the windows (cores of the machine's "
        f"{os.cpu_count()}, medians): the group's replicas "
        + ", ".join(f"{p} {statistics.median(cores[p]['replicas']):.2f}" for p in PHASES)
        + f"; the backup client (this process) {statistics.median(cores['backup']['backup']):.2f}"
        f"; waited for quiet {result['quiesce_seconds'][0]:.0f} s after the preload, "
        f"{sum(result['quiesce_seconds'][1:]):.0f} s before the windows in all"
    )
    spread = result["spread_pct"]
    lines.append(
        "  spread of each phase's windows (max - min over median): "
        + ", ".join(f"{p} {spread[p]:.0f}%" for p in PHASES)
        + "; a drop inside that is not told apart from noise"
    )
    if result["errors"]:
        lines.append(f"  errors: {result['errors']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="zonestore_node.backup.writecost", description=__doc__)
    p.add_argument("--replicas", type=int, default=3, help="per group (odd)")
    p.add_argument("--clients", type=int, default=16, help="concurrent writers")
    p.add_argument("--window", type=float, default=5.0, help="seconds per window")
    p.add_argument("--rounds", type=int, default=5, help="windows per phase")
    p.add_argument(
        "--entities", type=int, default=PRELOAD_ENTITIES, help="preloaded into each group"
    )
    p.add_argument(
        "--pad", type=int, default=PRELOAD_PAD_BYTES, help="random bytes per preloaded entity"
    )
    p.add_argument(
        "--backup-to",
        choices=("elsewhere", "same-disk"),
        default="elsewhere" if SHM.is_dir() else "same-disk",
        help="elsewhere: a folder on tmpfs (/dev/shm), standing for an object store on "
        "another machine; same-disk: a folder beside the replicas' data (its writes compete "
        "with their fsyncs)",
    )
    p.add_argument(
        "--max-rate",
        default="64MB",
        metavar="SIZE",
        help="backup create's --max-rate (0: unpaced)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    from zonestore_node.backup import cli

    max_rate = cli._rate(args.max_rate)
    scratch = Path(tempfile.mkdtemp(prefix="zs-writecost-"))
    elsewhere = (
        Path(tempfile.mkdtemp(prefix="zs-writecost-", dir=SHM))
        if args.backup_to == "elsewhere"
        else None
    )
    try:
        result = run(
            scratch,
            args.replicas,
            args.clients,
            args.window,
            args.rounds,
            entities=args.entities,
            pad=args.pad,
            backup_dir=elsewhere,
            max_rate=max_rate,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if elsewhere is not None:
            shutil.rmtree(elsewhere, ignore_errors=True)
    print(report(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
