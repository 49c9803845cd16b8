"""Three-member replica groups under test: processes, readiness, the leader, kill and restart.

Owns the member processes of a replicated target (zonestore's Raft group here, etcd's in
bench/etcd.py): each member runs in a process group of its own (start_new_session), so
stopping or SIGKILLing a member signals that group by its id and nothing else. Reads
CPU from /proc per member. Like targets.py, must not import grpc or the Datastore
client: the parent process stays light. Every wait is bounded by a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench import targets

POLL = 0.05  # seconds between readiness / leader polls


class Member:
    """One server process with its own data folder, log and process group."""

    def __init__(self, name: str, command: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) CPU seconds; (0, 0) once the member is gone."""
        if not self.alive():
            return (0.0, 0.0)
        user, system = targets.process_cpu_split(self.pid)
        for child in targets.children_of(self.pid):  # the node's zonestore-edge
            try:
                child_user, child_system = targets.process_cpu_split(child)
            except OSError:
                continue
            user, system = user + child_user, system + child_system
        return user, system

    def _signal_group(self, signum: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)  # the group we created: its id is the pid

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything (the failover test)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM, without waiting (Group.stop signals every member, then waits)."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)
        if self.proc.poll() is None:  # never signal a group id that may have been reused
            self._signal_group(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def http_json(url: str, body: bytes | None = None, timeout: float = 1.0) -> dict[str, object]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=timeout) as r:
        result: dict[str, object] = json.loads(r.read())
        return result


class Group:
    """N members on loopback; subclasses know the commands, readiness and leader lookup."""

    name = "group"
    size = 3

    def __init__(self, scratch: Path) -> None:
        self.dir = scratch / self.name
        self.members: list[Member] = []

    def client_addr(self, member: Member) -> str:
        raise NotImplementedError

    def is_ready(self, member: Member) -> bool:
        raise NotImplementedError

    def leader_view(self, member: Member) -> str | None:
        """The name of the member that `member` believes leads, or None."""
        raise NotImplementedError

    def by_name(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def start(self, timeout: float = 60.0) -> float:
        """Start every member and wait for an agreed leader; returns the seconds it took."""
        began = time.monotonic()
        for member in self.members:
            member.spawn()
        deadline = began + timeout
        for member in self.members:
            self.wait_ready(member, deadline)
        self.leader(max(1.0, deadline - time.monotonic()))
        return time.monotonic() - began

    def wait_ready(self, member: Member, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not member.alive():
                raise RuntimeError(f"{self.name} {member.name} exited: {member.log_tail()}")
            try:
                if self.is_ready(member):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(POLL)
        raise TimeoutError(f"{self.name} {member.name} not ready: {member.log_tail()}")

    def leader(self, timeout: float = 15.0) -> Member:
        """The member that every live member agrees leads (and that answers as ready)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            views: set[str | None] = set()
            for member in self.members:
                if not member.alive():
                    continue
                try:
                    views.add(self.leader_view(member))
                except (OSError, ValueError, KeyError):
                    views.add(None)
            if len(views) == 1 and None not in views:
                name = views.pop()
                found = [m for m in self.members if m.name == name and m.alive()]
                try:
                    if found and self.is_ready(found[0]):
                        return found[0]
                except (OSError, ValueError):
                    pass
            time.sleep(POLL)
        raise TimeoutError(f"{self.name}: no agreed leader in {timeout:.0f} s")

    def restart(self, member: Member, timeout: float = 30.0) -> None:
        member.spawn()
        self.wait_ready(member, time.monotonic() + timeout)

    def cpu_seconds(self) -> dict[str, float]:
        return {m.name: m.cpu_seconds() for m in self.members}

    def cpu_split(self) -> dict[str, tuple[float, float]]:
        return {m.name: m.cpu_split() for m in self.members}

    def stop(self) -> None:
        for member in self.members:  # all at once: they flush in parallel
            member.terminate()
        for member in self.members:
            try:
                member.stop()
            except (OSError, subprocess.TimeoutExpired) as exc:
                print(f"{self.name} {member.name}: stop failed: {exc}", flush=True)


class ZonestoreGroup(Group):
    """Three `zonestore serve` replicas with fresh data folders, flags as `zonestore run` passes.

    Tick and election timeout are the node's defaults (what `make run` gets), not the
    faster 20 ms tick the integration tests use.
    """

    name = "zonestore3"

    def __init__(self, scratch: Path, rev_src: Path | None = None) -> None:
        super().__init__(scratch)
        ids = [f"r{i}" for i in range(self.size)]
        peer_ports = [targets.free_port() for _ in ids]
        self.client_ports = {i: targets.free_port() for i in ids}
        self.admin_ports = {i: targets.free_port() for i in ids}
        spec = ",".join(f"{i}=127.0.0.1:{p}" for i, p in zip(ids, peer_ports, strict=True))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if rev_src is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(rev_src), os.environ.get("PYTHONPATH", "")) if p
            )
            env["PATH"] = targets.edge_path()
        for n, (node_id, peer_port) in enumerate(zip(ids, peer_ports, strict=True)):
            command = [
                sys.executable, "-m", "zonestore_node.cli", "serve",
                "--node-id", node_id, "--zone", f"zone-{chr(ord('a') + n % 3)}",
                "--data-dir", str(self.dir / node_id / "data"),
                "--client-addr", f"127.0.0.1:{self.client_ports[node_id]}",
                "--admin-addr", f"127.0.0.1:{self.admin_ports[node_id]}",
                "--peer-addr", f"127.0.0.1:{peer_port}",
                "--initial-cluster", spec,
            ]  # fmt: skip
            self.members.append(Member(node_id, command, self.dir / f"{node_id}.log", env))

    def admin(self, member: Member) -> str:
        return f"127.0.0.1:{self.admin_ports[member.name]}"

    def client_addr(self, member: Member) -> str:
        return f"127.0.0.1:{self.client_ports[member.name]}"

    def is_ready(self, member: Member) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.admin(member)}/readyz", timeout=1) as r:
                return bool(r.status == 200)
        except urllib.error.HTTPError:
            return False

    def status(self, member: Member) -> dict[str, object]:
        return http_json(f"http://{self.admin(member)}/admin/status")

    def leader_view(self, member: Member) -> str | None:
        leader = self.status(member).get("leader")
        return str(leader) if leader else None

    def leader_client_addr(self, leader: Member) -> str:
        """The leader's client address as the group reports it (GET /admin/status)."""
        status = self.status(leader)
        members = status.get("members")
        if isinstance(members, list):
            for m in members:
                if m.get("id") == leader.name and m.get("client_address"):
                    return str(m["client_address"])
        return self.client_addr(leader)

    def metrics(self, member: Member) -> dict[str, float]:
        """The member's Prometheus text, as {'name{labels}': value}."""
        with urllib.request.urlopen(f"http://{self.admin(member)}/metrics", timeout=2) as r:
            text = r.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if not line.startswith("zonestore_"):
                continue
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                continue
        return values


class FirstPort:
    """`make run`'s three replicas as one emulator-suite target ("makerun3").

    Clients use the first replica's client port, as a user of `make run` does, whichever
    replica leads (a follower's edge relays writes and strong reads to the leader's).
    Server CPU is summed over the three nodes and their edges. Quacks like
    targets.Target for bench.run's cells.
    """

    name = "makerun3"

    def __init__(self, scratch: Path, rev_src: Path | None = None) -> None:
        self.group = ZonestoreGroup(scratch / self.name, rev_src)
        self.first = self.group.members[0]

    @property
    def addr(self) -> str:
        return self.group.client_addr(self.first)

    @property
    def pid(self) -> int:
        return self.first.pid

    def start(self, timeout: float = 60.0) -> float:
        return self.group.start(timeout)

    def leader_name(self) -> str:
        return self.group.leader().name

    def cpu_seconds(self) -> float:
        return sum(self.group.cpu_seconds().values())

    def edge_cpu_seconds(self) -> float | None:
        total = 0.0
        for member in self.group.members:
            if not member.alive():
                continue
            for child in targets.children_of(member.pid):
                with contextlib.suppress(OSError):
                    total += targets.tree_cpu_seconds(child)
        return total

    def stop(self) -> None:
        self.group.stop()
