"""Faults on a schedule drawn from a seed, applied to a live cluster.

`schedule(seed, mix, seconds)` is pure: the same seed and mix give the same list of
faults (kind, start, duration, which replica by role). Roles are resolved against the
cluster when a fault starts ("the leader" is whoever leads then), and the `Nemesis`
logs what it really did with times, for the failure report.

The network is either a namespace per replica with nftables rules in a host namespace
(`netns.Network`: a cut drops every packet between two addresses, so it cuts Raft
links, followers' relays to the leader and, where said, the test's clients) or, where
namespaces are unavailable, loopback with a cuttable proxy per Raft link
(`netproxy.ProxyHub`: a cut affects Raft links only; `loss` is then skipped). Both
delay through a proxy on the Raft links.

Faults (one at a time, each healed before the next):
  kill      kill -9 a replica, restart it after the duration
  stop      SIGTERM (what Kubernetes sends on every rolling restart), then restart
  pause     SIGSTOP, SIGCONT after the duration
  isolate   cut every link to and from a replica (the leader, usually); in namespaces
            the test's clients lose it too
  oneway    cut what one replica sends to each of the others; theirs still reach it
  bridge    cut the two links between two replicas; the others still reach both
  majority  split the replicas into a minority (n//2, with the target) and a majority;
            in namespaces the clients sit on one side (the minority when pick % 3 == 0)
  loss      drop 10/30/60 % (by pick) of the packets to and from one replica, at
            random (nftables `numgen random mod 100 < N drop`; namespaces only)
  delay     hold every chunk on one replica's Raft links back 50/200/500 ms (by pick),
            both ways (the proxy's per-connection delay)
  transfer  leadership transfer to a follower through the admin API
  member    remove a follower, wipe it, start it with --join, add it back as a
            learner, wait for it to catch up, promote it (admin API)
  clock     skew one replica's wall clock and jump it around: every replica runs
            under libfaketime (faketime.py builds 0.9.12; LD_PRELOAD) whose timestamp
            file the nemesis rewrites: -2h, +2h, strobes of ±30 min, ±90 s; halfway
            through, leadership moves onto the skewed replica (or off it, if it leads),
            so commit timestamps are assigned by skewed and unskewed leaders in turn.
            Only CLOCK_REALTIME (the hybrid commit clock, the retention horizon, logs,
            the C libraries' wall clock); the monotonic clock that raft ticks,
            transaction expiry and timeouts use stays real. Without the library (no
            `make faketime`), clockshim/sitecustomize.py skews Python's time.time only,
            and the report says so.

  power     kill -9 a replica and cut its disk's power: its data directory is on powerfs
            (powerfs.py, a FUSE file system), which then drops every byte not fsynced
            (each file back to its last fsync/fdatasync); restart it after the duration.
            The checkers must still find every acknowledged write (acks follow fsync).
  full      one replica's disk (powerfs) is full for the duration: writes fail with
            ENOSPC, the replica stops with code 75 (it acknowledges nothing it could not
            write); then space returns and it is restarted.
  eio       one replica's disk fails every fsync with EIO for the duration: the replica
            stops with code 75 rather than acknowledge; then the device "loses power"
            (every byte no fsync made durable is dropped) and the replica restarts.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import Cluster, NodeProcess
from tests.jepsen import faketime
from tests.jepsen.netns import Network
from tests.jepsen.powerfs import PowerDisk
from tests.netproxy import ProxyHub

MIXES: dict[str, list[str]] = {
    "crash": ["kill", "pause", "stop", "kill"],
    "partition": ["isolate", "oneway", "bridge", "majority", "loss", "delay"],
    "split": ["majority", "majority", "isolate"],  # the five-replica run's
    "admin": ["transfer", "member", "transfer", "kill"],
    "clock": ["clock", "clock", "clock", "transfer", "kill"],
    "disk": ["power", "full", "eio", "power", "kill", "isolate"],
    "all": [
        "kill", "pause", "stop", "isolate", "oneway", "bridge", "majority", "loss", "delay",
        "transfer", "member", "clock",
    ],
}  # fmt: skip
LOSS_PERCENT = [10, 30, 60]
DELAY_S = [0.05, 0.2, 0.5]

# Clock patterns (offsets applied in turn over the fault's duration).
CLOCK_PATTERNS: list[list[str]] = [
    ["-2h"],  # far behind: its commit clock must still move past what others stamped
    ["+2h"],  # far ahead: every later timestamp follows it (hybrid clock), never back
    ["+30m", "-30m", "+5s"],  # strobe
    ["-90s", "+90s", "-1s"],
]
CLOCK_SHIM = Path(__file__).parent / "clockshim"


def clock_mechanism() -> str:
    lib = faketime.library()
    if lib is not None:
        return f"libfaketime {faketime.VERSION} ({lib})"
    return "the Python shim (clockshim/: time.time only; run `make faketime` for libfaketime)"


def clock_env(clock_file: Path) -> dict[str, str]:
    """The environment of a replica whose wall clock follows `clock_file` ("+0" = real
    time): libfaketime preloaded, or else clockshim/sitecustomize.py first on its
    PYTHONPATH."""
    clock_file.parent.mkdir(parents=True, exist_ok=True)
    clock_file.write_text("+0\n")
    lib = faketime.library()
    if lib is not None:
        return faketime.env(clock_file, lib)
    path = os.pathsep.join(p for p in (str(CLOCK_SHIM), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "JEPSEN_CLOCK_FILE": str(clock_file)}


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    start_s: float
    duration_s: float
    target: str  # "leader", "follower" or "any"
    pick: int  # which follower / replica, modulo how many there are

    def __str__(self) -> str:
        return f"t={self.start_s:5.1f}s {self.kind:<8} {self.target}#{self.pick} for {self.duration_s:.1f}s"


def schedule(seed: int, mix: str, seconds: float) -> list[Fault]:
    rng = random.Random(f"{seed}-{mix}")
    faults = []
    t = rng.uniform(1.0, 2.5)
    while t < seconds:
        kind = rng.choice(MIXES[mix])
        duration = 0.0 if kind == "transfer" else rng.uniform(1.5, 4.0)
        target = {
            "member": "follower",
            "transfer": "follower",
            "oneway": "leader",
        }.get(kind, rng.choice(["leader", "leader", "follower", "any"]))
        faults.append(Fault(kind, round(t, 2), round(duration, 2), target, rng.randrange(6)))
        t += duration + rng.uniform(1.0, 3.0)
    return faults


class Nemesis:
    """Runs a schedule in a thread; `heal()` undoes everything still in effect."""

    def __init__(
        self,
        cluster: Cluster,
        net: ProxyHub | Network,
        faults: list[Fault],
        clock_files: dict[str, Path] | None = None,
        disks: dict[str, PowerDisk] | None = None,
    ) -> None:
        self.cluster = cluster
        self.net = net
        self.faults = faults
        self.clock_files = clock_files or {}
        self.disks = disks or {}  # node id -> its power-loss disk (`power` faults)
        self.log: list[str] = []
        self.events: list[dict[str, Any]] = []  # the fault timeline: {"t": s, "event": ...}
        self.counts: dict[str, int] = {}  # faults injected, by kind
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._t0 = 0.0
        self._paused: set[str] = set()

    def note(self, text: str) -> None:
        t = time.monotonic() - self._t0
        self.log.append(f"{t:6.2f}s {text}")
        self.events.append({"t": round(t, 3), "event": text})

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        for fault in self.faults:
            delay = self._t0 + fault.start_s - time.monotonic()
            if self._stop.wait(max(0.0, delay)):
                return
            try:
                self._apply(fault)
            except Exception as exc:  # keep going; the report shows it
                self.errors.append(f"{fault}: {exc!r}")
                self.note(f"error in {fault.kind}: {exc!r}")
                self.heal()

    # Targets ---------------------------------------------------------------------

    def _leader(self, timeout: float = 10.0) -> NodeProcess | None:
        """The live replica that says it leads, in the highest term. Not
        `Cluster.leader()`: that wants every live replica to agree, and a replica
        waiting to join (or cut off) has no leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            best: tuple[int, NodeProcess] | None = None
            for node in self.cluster.nodes:
                if not node.alive() or node.node_id in self._paused:
                    continue
                try:
                    status = self.cluster.status(node)
                except (AssertionError, OSError, ValueError):
                    continue
                term = int(status.get("term") or 0)
                if status.get("role") == "leader" and (best is None or term > best[0]):
                    best = (term, node)
            if best is not None:
                return best[1]
            time.sleep(0.05)
        return None

    def _resolve(self, fault: Fault) -> NodeProcess:
        nodes = self.cluster.nodes
        leader = self._leader() if fault.target != "any" else None
        if fault.target == "leader" and leader is not None:
            return leader
        if fault.target == "follower" and leader is not None:
            followers = [n for n in nodes if n is not leader]
            return followers[fault.pick % len(followers)]
        return nodes[fault.pick % len(nodes)]

    # Faults ----------------------------------------------------------------------

    def _apply(self, fault: Fault) -> None:
        node = self._resolve(fault)
        nid = node.node_id
        self.counts[fault.kind] = self.counts.get(fault.kind, 0) + 1
        others = [n.node_id for n in self.cluster.nodes if n is not node]
        if fault.kind in ("kill", "stop"):
            self.note(f"{fault.kind} {nid}")
            if fault.kind == "kill":
                node.kill()
            else:
                node.stop()
            self._stop.wait(fault.duration_s)
            self.note(f"restart {nid}")
            node.start()
        elif fault.kind == "power":
            disk = self.disks.get(nid)
            if disk is None:
                raise RuntimeError(f"{nid} does not run on a power-loss disk")
            self.note(f"power off {nid}")
            node.kill()
            loss = disk.power_cycle()
            self.note(f"power on {nid}: unsynced data dropped {loss}")
            self._stop.wait(fault.duration_s)
            self.note(f"restart {nid}")
            node.start()
        elif fault.kind in ("full", "eio"):
            self._disk_fault(node, fault)
        elif fault.kind == "pause":
            assert node.proc is not None
            self.note(f"pause {nid}")
            node.proc.send_signal(signal.SIGSTOP)
            self._paused.add(nid)
            self._stop.wait(fault.duration_s)
            self.note(f"resume {nid}")
            node.proc.send_signal(signal.SIGCONT)
            self._paused.discard(nid)
        elif fault.kind in ("isolate", "oneway", "bridge", "majority", "loss", "delay"):
            if fault.kind == "loss" and not isinstance(self.net, Network):
                self.counts["loss"] -= 1
                self.note(f"loss {nid} skipped: loopback proxies drop no packets")
                return
            if fault.kind == "isolate":
                self.net.isolate(nid)
            elif fault.kind == "oneway":
                for other in others:
                    self.net.cut(nid, other)
            elif fault.kind == "bridge":
                self.net.cut_pair(nid, others[fault.pick % len(others)])
            elif fault.kind == "majority":
                self._split(node, fault.pick)
            elif fault.kind == "loss":
                assert isinstance(self.net, Network)
                self.net.loss(nid, LOSS_PERCENT[fault.pick % len(LOSS_PERCENT)])
            else:
                self.net.delay(nid, DELAY_S[fault.pick % len(DELAY_S)])
            self.note(f"{fault.kind} {nid}: {self.net.cut_links()}")
            self._stop.wait(fault.duration_s)
            self.note("heal network")
            self.net.heal()
        elif fault.kind == "transfer":
            leader = self._leader()
            if leader is None or leader is node:
                self.note("transfer skipped: no leader")
                return
            code, body = leader.admin("POST", "/admin/leader", {"target": nid})
            self.note(f"transfer {leader.node_id} -> {nid}: {code} {body}")
        elif fault.kind == "member":
            self._member_cycle(node, fault.duration_s)
        elif fault.kind == "clock":
            self._clock(node, fault)
        else:
            raise ValueError(fault.kind)

    def _split(self, node: NodeProcess, pick: int) -> None:
        """`node` and the next n//2 - 1 replicas (by pick) against the rest."""
        ids = [n.node_id for n in self.cluster.nodes]
        rest = [i for i in ids if i != node.node_id]
        start = pick % len(rest)
        minority = {node.node_id, *(rest[start:] + rest[:start])[: len(ids) // 2 - 1]}
        majority = set(ids) - minority
        if isinstance(self.net, Network):
            self.net.partition([minority, majority], clients_with=0 if pick % 3 == 0 else 1)
        else:
            self.net.partition([minority, majority])

    def _set_clock(self, nid: str, offset: str) -> None:
        path = self.clock_files.get(nid)
        if path is None:
            raise RuntimeError(f"{nid} does not run with a skewable clock (no clock file)")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(offset + "\n")
        os.replace(tmp, path)  # the replica never reads half a file

    def _clock(self, node: NodeProcess, fault: Fault) -> None:
        nid = node.node_id
        pattern = CLOCK_PATTERNS[fault.pick % len(CLOCK_PATTERNS)]
        step = fault.duration_s / (len(pattern) + 1)
        for i, offset in enumerate(pattern):
            self._set_clock(nid, offset)
            self.note(f"clock {nid} {offset}")
            if i == 0:
                self._stop.wait(step)
                self._move_leadership(node)
            self._stop.wait(step)
        self._set_clock(nid, "+0")
        self.note(f"clock {nid} +0 (real time)")

    def _move_leadership(self, skewed: NodeProcess) -> None:
        """Onto the skewed replica, or off it if it leads already."""
        leader = self._leader()
        if leader is None:
            self.note("clock: leadership not moved, no leader")
            return
        if leader is skewed:
            target = next(n for n in self.cluster.nodes if n is not skewed and n.alive())
        else:
            target = skewed
        code, body = leader.admin("POST", "/admin/leader", {"target": target.node_id})
        self.note(f"clock: transfer {leader.node_id} -> {target.node_id}: {code} {body}")

    def _admin_on_leader(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """An admin call on whoever leads, retried across leader changes for up to 20 s."""
        deadline = time.monotonic() + 20
        code: int = 0
        answer: Any = {}
        while time.monotonic() < deadline:
            leader = self._leader()
            if leader is not None:
                code, answer = leader.admin(method, path, body)
                if code == 200:
                    return code, answer
            time.sleep(0.2)
        return code, answer

    def _member_cycle(self, node: NodeProcess, duration_s: float) -> None:
        nid = node.node_id
        code, body = self._admin_on_leader("DELETE", f"/admin/members/{nid}")
        self.note(f"remove {nid}: {code} {body}")
        if code != 200:
            raise RuntimeError(f"remove {nid} failed: {code} {body}")
        node.kill()
        shutil.rmtree(node.data_dir / "data", ignore_errors=True)
        self._stop.wait(duration_s)
        if "--join" not in node.extra:
            node.extra.append("--join")
        node.spawn()
        code, body = self._admin_on_leader(
            "POST",
            "/admin/members",
            {"id": nid, "peer_address": node.peer_addr,
             "zone": f"zone-{nid}", "role": "learner"},
        )  # fmt: skip
        self.note(f"add {nid} as learner: {code} {body}")
        if code != 200:
            raise RuntimeError(f"add {nid} failed: {code} {body}")
        node.wait_ready()
        self._wait_learner_caught_up(nid)
        code, body = self._admin_on_leader("POST", f"/admin/members/{nid}/promote")
        self.note(f"promote {nid}: {code} {body}")
        if code != 200:
            raise RuntimeError(f"promote {nid} failed: {code} {body}")

    def _wait_learner_caught_up(self, nid: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self._leader()
            if leader is not None:
                members = self.cluster.status(leader).get("members") or []
                for member in members:
                    if member.get("id") == nid and member.get("lag") in (0, None):
                        return
            time.sleep(0.1)
        self.note(f"learner {nid} not caught up in {timeout}s; promoting anyway")

    def _disk_fault(self, node: NodeProcess, fault: Fault) -> None:
        nid = node.node_id
        disk = self.disks.get(nid)
        if disk is None:
            raise RuntimeError(f"{nid} does not run on a powerfs disk")
        disk.set_faults(fault.kind)
        self.note(
            f"{fault.kind} {nid}: {'ENOSPC on writes' if fault.kind == 'full' else 'EIO on fsync'}"
        )
        self._stop.wait(fault.duration_s)
        code = node.proc.poll() if node.proc is not None else None
        self.note(
            f"{fault.kind} {nid}: replica {'exited with ' + str(code) if code is not None else 'still running'}"
        )
        if fault.kind == "full":
            disk.set_faults()
            self.note(f"space again on {nid}")
        else:
            if node.alive():
                node.kill()
            loss = disk.power_cycle()  # clears the fault too
            self.note(f"power cycle {nid}: unsynced data dropped {loss}")
        if not node.alive():
            self.note(f"restart {nid}")
            node.start()

    def heal(self) -> None:
        """Undo whatever is in effect: network, clocks, paused and dead replicas,
        membership."""
        self.net.heal()
        for disk in self.disks.values():
            with contextlib.suppress(OSError):  # not mounted: a power cycle clears them
                disk.set_faults()
        for nid in self.clock_files:
            self._set_clock(nid, "+0")
        for node in self.cluster.nodes:
            if node.node_id in self._paused and node.proc is not None:
                node.proc.send_signal(signal.SIGCONT)
        self._paused.clear()
        for node in self.cluster.nodes:
            if not node.alive():
                self.note(f"heal: restart {node.node_id}")
                node.start()
        leader = self._leader()
        if leader is None:
            return
        members = {m["id"]: m["role"] for m in self.cluster.status(leader).get("members") or []}
        for node in self.cluster.nodes:
            nid = node.node_id
            if nid not in members:
                self.note(f"heal: re-add {nid}")
                self._admin_on_leader("POST", "/admin/members", {
                    "id": nid, "peer_address": node.peer_addr,
                    "zone": f"zone-{nid}", "role": "learner"})  # fmt: skip
                members[nid] = "learner"
            if members[nid] == "learner":
                self._wait_learner_caught_up(nid)
                code, body = self._admin_on_leader("POST", f"/admin/members/{nid}/promote")
                self.note(f"heal: promote {nid}: {code} {body}")
