"""`zonestore run`'s process supervisor: it keeps a local group's replicas running.

Each replica is a `zonestore serve` child in a process group of its own (so Ctrl-C in
the terminal reaches only the supervisor, which stops the replicas with SIGTERM, and
whatever a dead replica left behind — its zonestore-edge child — is killed with it),
and it dies with the supervisor (PR_SET_PDEATHSIG) if the supervisor is killed.

A replica that exits for any reason (a crash, `kill -9`, exit status 75 on a failing
disk) is reported on the console with its exit status, and started again on the same
data folder and ports after a backoff (`Backoff`: 1 s doubling to 30 s, back to 1 s
once a run has lasted a minute), while the others keep serving. The console says, one
line each, when a replica stopped, restarted and caught up — caught up: its applied
index reached the leader's commit index (both read from `/admin/status`, the leader's
first). A replica that exits before it ever became ready is reported with the reason
(a port another process holds, the exception it died of: a locked data folder); the
supervisor gives up, exit status 1, only when every replica has failed to start
`GIVE_UP_AFTER` times in a row. `--restart never` (`Restart.NEVER`) stops every replica
as soon as one exits, with exit status 1, for scripts that want that.

Each replica's pid is printed when it starts and kept in `<pid_dir>/<id>.pid` while it
runs, so `kill -9 $(cat .zonestore-data/local-1.pid)` is a failover drill.

This module imports nothing of the node: it talks to replicas only as a user does,
through processes, ports and the admin HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import errno
import json
import os
import re
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
RESET_AFTER_S = 60.0  # a run this long resets the backoff
GIVE_UP_AFTER = 3  # failed starts in a row, of every replica at once
STOP_GRACE_S = 20.0  # SIGTERM, then SIGKILL
READY_WAIT_S = 30.0  # before the banner says which replicas are not ready
POLL_S = 0.2
OUTPUT_TAIL = 8192  # bytes of a replica's last output kept to find why it exited
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill, a closed terminal
EXIT_STORAGE = 75  # engine.EXIT_STORAGE (sysexits EX_TEMPFAIL): the disk failed


class Restart(enum.Enum):
    ALWAYS = "always"
    NEVER = "never"


class Backoff:
    """The delay before a replica's next start: `initial`, doubling up to `maximum`
    after each exit, and back to `initial` when the run that ended lasted
    `reset_after` or longer. The clock is injected (seconds, monotonic)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        initial: float = INITIAL_BACKOFF_S,
        maximum: float = MAX_BACKOFF_S,
        reset_after: float = RESET_AFTER_S,
    ) -> None:
        self.clock = clock
        self.initial = initial
        self.maximum = maximum
        self.reset_after = reset_after
        self._next = initial  # initial <= _next <= maximum
        self._started_at: float | None = None

    def started(self) -> None:
        self._started_at = self.clock()

    def exited(self) -> float:
        """The delay before the next start; call once per exit."""
        if self._started_at is not None and self.clock() - self._started_at >= self.reset_after:
            self._next = self.initial
        self._started_at = None
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """How to start one replica; every start uses the same folder and ports."""

    node_id: str
    command: tuple[str, ...]
    data_dir: Path
    client_addr: str
    admin_addr: str
    peer_addr: str  # empty for a group of one


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == EXIT_STORAGE:
        return f"exit status {code} (its storage failed)"
    return f"exit status {code}"


_GROUP_MARGIN = re.compile(r"^[\s|]+")  # an ExceptionGroup's traceback is drawn in "| "
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b")


def failure_reason(output: Sequence[str]) -> str:
    """What a replica's last output lines say it died of: the exception line that ends
    a traceback, else the last line that mentions an error, else its last line."""
    lines = [_GROUP_MARGIN.sub("", line).strip() for line in output]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line
    for line in reversed(lines):
        if "error" in line.lower() or "failed" in line.lower():
            return line
    return lines[-1] if lines else ""


def taken_ports(spec: ReplicaSpec) -> list[str]:
    """The replica's listening addresses that another process holds now (probed with
    SO_REUSEADDR, as the servers bind, so connections in TIME_WAIT do not count)."""
    taken = []
    for name, addr in (("client", spec.client_addr), ("admin", spec.admin_addr)) + (
        (("peer", spec.peer_addr),) if spec.peer_addr else ()
    ):
        host, _, port = addr.rpartition(":")
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, int(port)))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    taken.append(f"{name} port {addr} is taken by another process")
    return taken


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=1) as response:
        payload: dict[str, Any] = json.loads(response.read())
        return payload


def _is_ready(admin: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{admin}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:  # preexec_fn: runs in the child between fork and exec
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Replica:
    def __init__(self, spec: ReplicaSpec, backoff: Backoff) -> None:
        self.spec = spec
        self.backoff = backoff
        self.proc: asyncio.subprocess.Process | None = None
        self.running = False
        self.ready_once = asyncio.Event()  # ready at least once since `zonestore run` began
        self.ready_now = False  # ready during the current run of the process
        self.failed_starts = 0  # exits before becoming ready, in a row
        self.output_tail = b""  # the end of the current run's output (OUTPUT_TAIL bytes)


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ReplicaSpec],
        restart: Restart = Restart.ALWAYS,
        pid_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        give_up_after: int = GIVE_UP_AFTER,
    ) -> None:
        self.replicas = [_Replica(spec, Backoff(clock)) for spec in specs]
        self.by_id = {r.spec.node_id: r for r in self.replicas}
        self.restart = restart
        self.pid_dir = pid_dir
        self.clock = clock
        self.give_up_after = give_up_after
        self.code = 0
        self._stop = asyncio.Event()

    def say(self, line: str) -> None:
        with contextlib.suppress(OSError):  # a closed terminal: keep supervising
            print(f"zonestore run: {line}", flush=True)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.stop)
        try:
            async with asyncio.TaskGroup() as tg:
                announce = tg.create_task(self._announce())
                for replica in self.replicas:
                    tg.create_task(self._keep(replica))
                await self._stop.wait()
                announce.cancel()
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
        return self.code

    # One replica's life: start, watch, stop or restart.

    async def _keep(self, replica: _Replica) -> None:
        starts = 0
        while not self._stop.is_set():
            code = await self._run_once(replica, restarted=starts > 0)
            starts += 1
            if code is None:  # stopped by us
                return
            await self._after_exit(replica, code)

    async def _run_once(self, replica: _Replica, restarted: bool) -> int | None:
        spec = replica.spec
        replica.output_tail = b""
        replica.ready_now = False
        proc = await asyncio.create_subprocess_exec(
            *spec.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        replica.proc, replica.running, started_at = proc, True, self.clock()
        replica.backoff.started()
        self._write_pid(spec.node_id, proc.pid)
        if restarted:
            self.say(f"{spec.node_id} restarted (pid {proc.pid})")
        else:
            self.say(
                f"{spec.node_id} started (pid {proc.pid}): client {spec.client_addr}, "
                f"admin {spec.admin_addr}"
                + (f", peer {spec.peer_addr}" if spec.peer_addr else "")
                + f", data {spec.data_dir}"
            )
        async with asyncio.TaskGroup() as tg:
            forward = tg.create_task(self._forward(replica, proc))
            watch = tg.create_task(self._watch(replica, restarted, started_at))
            exited = tg.create_task(proc.wait())
            stopping = tg.create_task(self._stop.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            watch.cancel()
            by_us = not exited.done()
            if by_us:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(STOP_GRACE_S):
                        await asyncio.shield(exited)
                except TimeoutError:
                    self.say(f"{spec.node_id} (pid {proc.pid}) did not stop in {STOP_GRACE_S:g} s")
            stopping.cancel()
            # Whatever the replica left in its process group (its edge) goes with it, and
            # its output pipe then reaches end of file.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            code = await exited
            try:  # a grandchild in a session of its own could keep the pipe open
                async with asyncio.timeout(STOP_GRACE_S):
                    await asyncio.shield(forward)
            except TimeoutError:
                forward.cancel()
        replica.running = False
        if by_us or self._stop.is_set():
            self._remove_pid(spec.node_id)
            return None
        return code

    async def _after_exit(self, replica: _Replica, code: int) -> None:
        spec, pid = replica.spec, replica.proc.pid if replica.proc else 0
        what = describe_exit(code)
        if code > 0:
            reasons = [
                *taken_ports(spec),
                failure_reason(replica.output_tail.decode(errors="replace").splitlines()),
            ]
            what += ": " + "; ".join(r for r in reasons if r)[:400]
        before = "" if replica.ready_now else " before it was ready"
        replica.failed_starts = 0 if replica.ready_now else replica.failed_starts + 1
        if self.restart is Restart.NEVER:
            self.say(f"{spec.node_id} (pid {pid}) stopped{before}: {what}")
            self.say("a replica exited; stopping the others (--restart never)")
            self.code = 1
            self.stop()
            return
        if all(r.failed_starts >= self.give_up_after and not r.running for r in self.replicas):
            self.say(f"{spec.node_id} (pid {pid}) stopped{before}: {what}")
            self.say(
                f"no replica can be kept running (each failed to start {self.give_up_after} "
                "times in a row); giving up"
            )
            self.code = 1
            self.stop()
            return
        delay = replica.backoff.exited()
        self.say(f"{spec.node_id} (pid {pid}) stopped{before}: {what}; restarting in {delay:g} s")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stop.wait()

    async def _forward(self, replica: _Replica, proc: asyncio.subprocess.Process) -> None:
        """The replica's output to our stderr, keeping its end for a reason. Read in
        chunks: a line longer than the stream's limit must not stop the supervisor."""
        assert proc.stdout is not None
        out = sys.stderr.buffer
        while chunk := await proc.stdout.read(1 << 16):
            replica.output_tail = (replica.output_tail + chunk)[-OUTPUT_TAIL:]
            with contextlib.suppress(OSError):  # a closed terminal: keep supervising
                out.write(chunk)
                out.flush()

    async def _watch(self, replica: _Replica, restarted: bool, started_at: float) -> None:
        """Readiness, then (after a restart) when it has caught up with the leader."""
        admin = replica.spec.admin_addr
        while not await asyncio.to_thread(_is_ready, admin):  # noqa: ASYNC110 - HTTP polling
            await asyncio.sleep(POLL_S)
        replica.ready_now = True
        replica.ready_once.set()
        if not restarted:
            return
        while True:
            caught = await asyncio.to_thread(self._caught_up, replica)
            if caught is not None:
                applied, leader, commit = caught
                self.say(
                    f"{replica.spec.node_id} caught up {self.clock() - started_at:.1f} s after "
                    f"restarting: applied index {applied} reached leader {leader}'s commit "
                    f"index {commit}"
                )
                return
            await asyncio.sleep(POLL_S)

    def _caught_up(self, replica: _Replica) -> tuple[int, str, int] | None:
        """(applied index, leader, leader's commit index) once the replica's applied
        index, read after the leader's commit index, has reached it."""
        try:
            own = _get_json(f"http://{replica.spec.admin_addr}/admin/status")
            leader_id = own.get("leader")
            leader = self.by_id.get(str(leader_id)) if leader_id else None
            if leader is None:
                return None
            commit = int(_get_json(f"http://{leader.spec.admin_addr}/admin/status")["commit_index"])
            applied = int(
                _get_json(f"http://{replica.spec.admin_addr}/admin/status")["applied_index"]
            )
        except (OSError, ValueError, KeyError):
            return None
        return (applied, str(leader_id), commit) if applied >= commit else None

    # The group as a whole.

    async def _announce(self) -> None:
        """The banner, once every replica is ready (or, after READY_WAIT_S, once any is)."""
        waits = [asyncio.ensure_future(r.ready_once.wait()) for r in self.replicas]
        try:
            _, pending = await asyncio.wait(waits, timeout=READY_WAIT_S)
            if pending:
                late = [r.spec.node_id for r in self.replicas if not r.ready_once.is_set()]
                self.say(
                    f"{', '.join(late)} not ready after {READY_WAIT_S:g} s (see above); "
                    "the others serve as long as a majority is up"
                )
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        first = next(r for r in self.replicas if r.ready_once.is_set()).spec
        ready = [r.spec for r in self.replicas if r.ready_once.is_set()]
        pids = f"{self.pid_dir}/<id>.pid" if self.pid_dir else "the lines above"
        print(
            f"\nzonestore is serving the Datastore API ({len(self.replicas)} replica(s), "
            f"data in {first.data_dir.parent}).\n"
            "Any replica takes any request (client addresses "
            f"{', '.join(s.client_addr for s in ready)}).\n"
            f"  export DATASTORE_EMULATOR_HOST={first.client_addr}\n"
            "  export DATASTORE_DATASET=demo GOOGLE_CLOUD_PROJECT=demo DATASTORE_PROJECT_ID=demo\n"
            f"Metrics and status: http://{first.admin_addr}/metrics , /admin/status "
            f"(or: zonestore status --admin {first.admin_addr})\n"
            + (
                "A replica that exits is restarted and catches up"
                if self.restart is Restart.ALWAYS
                else "A replica that exits stops them all (--restart never)"
            )
            + f"; pids in {pids}.\n"
            f"Press Ctrl-C to stop.\n",
            flush=True,
        )

    def _write_pid(self, node_id: str, pid: int) -> None:
        if self.pid_dir is not None:
            self.pid_dir.mkdir(parents=True, exist_ok=True)
            (self.pid_dir / f"{node_id}.pid").write_text(f"{pid}\n")

    def _remove_pid(self, node_id: str) -> None:
        if self.pid_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.pid_dir / f"{node_id}.pid").unlink()


def run(specs: Sequence[ReplicaSpec], restart: Restart, pid_dir: Path | None) -> int:
    """Supervise the replicas until Ctrl-C/SIGTERM (exit status 0), or until they
    cannot be kept running (1)."""
    return asyncio.run(Supervisor(specs, restart, pid_dir).run())
