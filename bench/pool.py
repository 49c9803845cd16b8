"""Load-generator worker processes: N processes x T threads of the official client.

Why processes: google-cloud-datastore spends ~0.3-0.5 ms of Python CPU per call, so one
process (one GIL) caps out near 2-3k calls/s whatever the server does. The pool
starts its workers once (spawn, so no grpc state is forked) and keeps them for the
whole run; each cell sends every worker a command and collects one result each.

Timing: all processes share CLOCK_MONOTONIC (`time.monotonic`), so the parent hands out
absolute instants: threads run from when they get the command (warm-up) until
`end_at`, and the operations that complete inside [start_at, end_at] count (a closed
loop in steady state: an operation begun during warm-up still counts when it ends
inside the window, so slow operations are not lost at the window's edge). Loops stop
by themselves at `end_at` (retry loops too) or after MAX_FAILURES errors in a row (a
target that does not implement a workload), and every RPC has a deadline.

The parent imports this module but only uses `Pool`; nothing here imports grpc at
module level.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import random
import threading
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_FAILURES = 20


@dataclass(frozen=True, slots=True)
class RunCell:
    addr: str
    project: str
    workload: str
    params: Any  # workloads.Params
    threads: int
    start_at: float
    end_at: float
    tag: str


@dataclass(frozen=True, slots=True)
class Preload:
    addr: str
    project: str
    kind: str
    start: int
    stop: int
    entities: int
    batch: int


@dataclass(frozen=True, slots=True)
class ReadCounter:
    addr: str
    project: str
    cell_id: str


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


@dataclass(slots=True)
class CellPart:
    latencies: bytes = b""  # array('d') of seconds, successful ops inside the window
    errors: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # this worker process, during the window
    retries: int = 0
    committed: int = 0  # txn_counter: increments committed, warm-up included


@dataclass(frozen=True, slots=True)
class Failed:
    message: str


def describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    text = f"{type(exc).__name__}: {message}".replace("\n", " ")
    return text[:160]


class Worker:
    """The body of one worker process: clients cached per (target, project, thread)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.clients: dict[tuple[str, str, int], Any] = {}

    def client(self, addr: str, project: str, slot: int) -> Any:
        from google.cloud import datastore

        key = (addr, project, slot)
        if key not in self.clients:
            # The client reads the emulator address when it is built; only this thread builds.
            os.environ["DATASTORE_EMULATOR_HOST"] = addr
            self.clients[key] = datastore.Client(project=project)
        return self.clients[key]

    def handle(self, command: Any) -> Any:
        from bench import loadgen, workloads

        if isinstance(command, loadgen.RawCell):
            return loadgen.run_cell(command)
        if isinstance(command, loadgen.Probe):
            return loadgen.run_probe(command)
        if isinstance(command, RunCell):
            return self.run_cell(command)
        if isinstance(command, Preload):
            c = self.client(command.addr, command.project, 0)
            return workloads.put_range(
                c, command.kind, command.start, command.stop, command.entities, command.batch
            )
        if isinstance(command, ReadCounter):
            c = self.client(command.addr, command.project, 0)
            return workloads.read_counter(c, command.cell_id)
        raise TypeError(f"unknown command {command!r}")

    def run_cell(self, cell: RunCell) -> CellPart:
        from bench import workloads

        lats = [array("d") for _ in range(cell.threads)]
        errors: list[Counter[str]] = [Counter() for _ in range(cell.threads)]
        stats = [workloads.Stats() for _ in range(cell.threads)]
        ops = []
        for t in range(cell.threads):
            rng = random.Random(hash((cell.tag, self.index, t)))
            c = self.client(cell.addr, cell.project, t)
            tag = f"{cell.tag}-w{self.index}-t{t}"
            ops.append(
                workloads.make_op(cell.workload, c, cell.params, tag, rng, stats[t], cell.end_at)
            )

        def loop(t: int) -> None:
            op, lat, err = ops[t], lats[t], errors[t]
            start_at, end_at = cell.start_at, cell.end_at
            failures = 0
            clock = time.monotonic
            while True:
                began = clock()
                if began >= end_at:
                    return
                try:
                    op()
                except workloads.CellOver:
                    return
                except Exception as exc:
                    err[describe(exc)] += 1
                    failures += 1
                    if failures >= MAX_FAILURES:
                        return
                    time.sleep(0.001)
                    continue
                failures = 0
                done = clock()
                if start_at <= done <= end_at:
                    lat.append(done - began)

        threads = [
            threading.Thread(target=loop, args=(t,), daemon=True) for t in range(cell.threads)
        ]
        for th in threads:
            th.start()
        time.sleep(max(0.0, cell.start_at - time.monotonic()))
        cpu0 = time.process_time()
        time.sleep(max(0.0, cell.end_at - time.monotonic()))
        cpu1 = time.process_time()
        for th in threads:
            th.join(timeout=workloads.RPC_TIMEOUT + 5)
        merged = array("d")
        for lat in lats:
            merged.extend(lat)
        all_errors: Counter[str] = Counter()
        for err in errors:
            all_errors.update(err)
        return CellPart(
            latencies=merged.tobytes(),
            errors=dict(all_errors),
            cpu_seconds=cpu1 - cpu0,
            retries=sum(s.retries for s in stats),
            committed=sum(s.committed for s in stats),
        )


def worker_main(index: int, conn: multiprocessing.connection.Connection) -> None:
    import google.cloud.datastore  # noqa: F401 - pay the import before the first cell

    worker = Worker(index)
    conn.send("ready")
    while True:
        command = conn.recv()
        if isinstance(command, Shutdown):
            conn.close()
            return
        try:
            conn.send(worker.handle(command))
        except Exception as exc:
            conn.send(Failed(describe(exc)))


class Pool:
    """`size` worker processes, started once; `call` fans commands out and gathers replies."""

    def __init__(self, size: int, start_timeout: float = 120.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[multiprocessing.connection.Connection] = []
        self.procs: list[Any] = []
        for i in range(size):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(i, child), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        deadline = time.monotonic() + start_timeout
        for conn in self.conns:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                self.close()
                raise TimeoutError("bench workers did not start")
            conn.recv()

    @property
    def size(self) -> int:
        return len(self.conns)

    def call(self, commands: list[Any], timeout: float) -> list[Any]:
        """Send commands[i] to worker i (len(commands) <= size); replies in the same order."""
        for conn, command in zip(self.conns, commands, strict=False):
            conn.send(command)
        deadline = time.monotonic() + timeout
        replies: list[Any] = []
        for conn in self.conns[: len(commands)]:
            if conn.poll(max(0.0, deadline - time.monotonic())):
                replies.append(conn.recv())
            else:
                # A worker that overruns its bounded loop is broken: do not wait forever.
                self.close()
                raise TimeoutError("a bench worker did not answer in time")
        return replies

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(Shutdown())
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        self.conns = []
        self.procs = []

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]
