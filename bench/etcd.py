"""etcd as the replicated anchor: install Debian's etcd-server, run a 3-member group on loopback.

Owns installing etcd (idempotent: nothing happens when the binary is already there) and
the member command lines. Members keep etcd's defaults for durability and timing
(heartbeat 100 ms, election timeout 1 s, fsync on every batch) so the comparison is
with etcd as people run it. The leader is found through the HTTP/JSON gateway's
`POST /v3/maintenance/status` on each member (every member reports its own id and the
leader's), so the parent needs no grpc. Like targets.py, must not import grpc.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

from bench import replicas, targets

PACKAGE = "etcd-server"
CANDIDATES = ("/usr/bin/etcd", "/usr/local/bin/etcd")


def find() -> str | None:
    found = os.environ.get("ETCD") or shutil.which("etcd")
    if found:
        return found
    return next((c for c in CANDIDATES if os.access(c, os.X_OK)), None)


def _apt(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise PermissionError("not root and no sudo")
        prefix = ["sudo", "-n"]
    return subprocess.run(
        [*prefix, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def ensure_installed() -> tuple[str | None, str]:
    """(path to etcd, how) — or (None, why not) when it cannot be installed here."""
    found = find()
    if found:
        return found, "already installed"
    if shutil.which("apt-get") is None:
        return None, "no etcd binary and no apt-get to install etcd-server"
    try:
        policy = _apt("apt-cache", "policy", PACKAGE, timeout=60)
        if "Candidate:" not in policy.stdout or "Candidate: (none)" in policy.stdout:
            update = _apt("apt-get", "update", timeout=300)
            if update.returncode != 0:
                return None, f"apt-get update failed: {update.stderr.strip()[-200:]}"
        install = _apt("apt-get", "install", "-y", PACKAGE, timeout=600)
    except (OSError, PermissionError, subprocess.TimeoutExpired) as exc:
        return None, f"cannot install {PACKAGE}: {exc}"
    if install.returncode != 0:
        return None, f"apt-get install {PACKAGE} failed: {install.stderr.strip()[-200:]}"
    found = find()
    return (found, f"installed {PACKAGE}") if found else (None, f"{PACKAGE} has no etcd binary")


def version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    first = out.stdout.splitlines()[0] if out.stdout else "?"
    return first.replace("etcd Version:", "").strip()


class EtcdGroup(replicas.Group):
    """Three etcd members on loopback with fresh data folders and a fresh cluster token."""

    name = "etcd"

    def __init__(self, scratch: Path, binary: str) -> None:
        super().__init__(scratch)
        names = [f"e{i}" for i in range(self.size)]
        peer_ports = [targets.free_port() for _ in names]
        self.client_ports = {n: targets.free_port() for n in names}
        cluster = ",".join(
            f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peer_ports, strict=True)
        )
        token = f"bench-{uuid.uuid4().hex[:8]}"
        self.ids: dict[str, str] = {}  # etcd member id (decimal string) -> member name
        for name, peer in zip(names, peer_ports, strict=True):
            client = f"http://127.0.0.1:{self.client_ports[name]}"
            command = [
                binary, "--name", name,
                "--data-dir", str(self.dir / name / "data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", cluster, "--initial-cluster-token", token,
                "--initial-cluster-state", "new",
                "--logger", "zap", "--log-level", "warn",
            ]  # fmt: skip
            self.members.append(
                replicas.Member(name, command, self.dir / f"{name}.log", {**os.environ})
            )

    def client_addr(self, member: replicas.Member) -> str:
        return f"127.0.0.1:{self.client_ports[member.name]}"

    def status(self, member: replicas.Member) -> dict[str, object]:
        status = replicas.http_json(
            f"http://{self.client_addr(member)}/v3/maintenance/status", body=b"{}"
        )
        header = status.get("header")
        if isinstance(header, dict) and header.get("member_id"):
            self.ids[str(header["member_id"])] = member.name
        return status

    def is_ready(self, member: replicas.Member) -> bool:
        health = replicas.http_json(f"http://{self.client_addr(member)}/health")
        return str(health.get("health")) == "true"

    def leader_view(self, member: replicas.Member) -> str | None:
        leader = str(self.status(member).get("leader") or "")
        if leader in ("", "0"):
            return None
        if leader not in self.ids:
            for other in self.members:  # learn the other members' ids
                if other.alive() and other is not member:
                    self.status(other)
        return self.ids.get(leader)
