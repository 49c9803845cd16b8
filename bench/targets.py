"""The servers under test: a fresh zonestore node and a fresh Google Datastore emulator.

Owns starting, readiness and stopping of each server process, and reading its CPU time
from /proc. Every target gets its own fresh data folder (or in-memory emulator project
folder) under one scratch directory, listens on loopback only, and is stopped by the
pid we started, never by name. Must not import grpc or the Datastore client: the
parent process of the benchmark stays light so it does not compete with the workers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")

EMULATOR_LAUNCHERS = (
    "/usr/lib/google-cloud-sdk/platform/cloud-datastore-emulator/cloud_datastore_emulator",
    "/usr/share/google-cloud-sdk/platform/cloud-datastore-emulator/cloud_datastore_emulator",
    "/google-cloud-sdk/platform/cloud-datastore-emulator/cloud_datastore_emulator",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), from /proc/<pid>/stat."""
    return sum(process_cpu_split(pid))


def children_of(pid: int) -> list[int]:
    """The live child processes of `pid` (e.g. a node's zonestore-edge)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its live descendants: a node and the edge it started."""
    total = 0.0
    for child in children_of(pid):
        with contextlib.suppress(OSError):  # exited meanwhile
            total += tree_cpu_seconds(child)
    return total + process_cpu_seconds(pid)


def process_cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of one process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the ")" field 3 is state, so utime (14) and stime (15) are at 11 and 12
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds summed over all cores since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def find_emulator() -> tuple[str, str] | None:
    """(java, CloudDatastore.jar) when Google's emulator and a JVM are installed."""
    java = shutil.which(os.environ.get("JAVA", "java"))
    candidates = [os.environ.get("CLOUD_DATASTORE_EMULATOR", ""), *EMULATOR_LAUNCHERS]
    gcloud = shutil.which("gcloud")
    if gcloud:
        sdk = Path(os.path.realpath(gcloud)).parent.parent
        candidates.append(str(sdk / "platform/cloud-datastore-emulator/cloud_datastore_emulator"))
    for launcher in candidates:
        if not launcher:
            continue
        jar = Path(launcher).parent / "CloudDatastore.jar"
        if jar.is_file() and java:
            return java, str(jar)
    return None


def edge_path() -> str:
    """$PATH with the repository's .cache/bin first: a node run from an exported
    revision (--zonestore-rev) finds `make edge`'s zonestore-edge there, as the work
    tree's node does beside it, rather than falling back to grpc.aio."""
    tools = Path(__file__).resolve().parent.parent / ".cache" / "bin"
    return os.pathsep.join(p for p in (str(tools), os.environ.get("PATH", "")) if p)


def export_node(rev: str | None, out: Path) -> Path | None:
    """That commit's node/ (from `git archive`) under `out`; None for the work tree."""
    if rev is None:
        return None
    repo = Path(__file__).resolve().parent.parent
    out.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", rev, "node"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True, timeout=60)
    return out / "node"


class Target:
    """A server process on loopback; subclasses know how to start one and when it is ready."""

    name = "target"

    def __init__(self, scratch: Path) -> None:
        self.dir = scratch / self.name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "server.log"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready_url(self) -> str:
        raise NotImplementedError

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 60.0) -> float:
        """Start the server and wait until it answers; returns the seconds it took."""
        self.prepare()
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env(),
            )
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.ready_url(), timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - began
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.name} not ready in {timeout}s: {self.log_tail()}")

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def cpu_seconds(self) -> float:
        # With the edge (zonestore serve --edge auto) the client port is a child process.
        return tree_cpu_seconds(self.pid)

    def edge_cpu_seconds(self) -> float | None:
        """The part of cpu_seconds spent in child processes (zonestore's edge); None for
        a server without any (the emulator)."""
        children = children_of(self.pid)
        if not children:
            return None
        total = 0.0
        for child in children:
            with contextlib.suppress(OSError):
                total += tree_cpu_seconds(child)
        return total

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Zonestore(Target):
    """One `zonestore serve` node with a fresh data folder (the harness's approach)."""

    name = "zonestore"

    def __init__(self, scratch: Path, rev: str | None = None) -> None:
        super().__init__(scratch)
        self.admin_port = free_port()
        self.rev = rev
        self.src: Path | None = None

    def prepare(self) -> None:
        """With a revision, run that commit's node/ (from `git archive`), not the work tree.

        The work tree is shared and may be mid-edit; PYTHONPATH puts the exported copy
        ahead of the editable install's finder.
        """
        super().prepare()
        if self.rev is None or self.src is not None:
            return
        self.src = export_node(self.rev, self.dir / "src")

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.src is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.src), os.environ.get("PYTHONPATH", "")) if p
            )
            env["PATH"] = edge_path()
        return env

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "zonestore_node.cli", "serve",
            "--node-id", "bench-0",
            "--data-dir", str(self.dir / "data"),
            "--client-addr", self.addr,
            "--admin-addr", f"127.0.0.1:{self.admin_port}",
        ]  # fmt: skip

    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}/readyz"


class Emulator(Target):
    """Google's Cloud Datastore emulator, in memory, strongly consistent.

    Started as `java -cp CloudDatastore.jar ...` rather than through the bash launcher or
    gcloud, so the pid we hold is the JVM itself (for CPU accounting and a clean stop),
    and with a private project folder rather than gcloud's shared one.
    """

    name = "emulator"

    def __init__(self, scratch: Path, java: str, jar: str) -> None:
        super().__init__(scratch)
        self.java = java
        self.jar = jar

    def _cli(self, *args: str) -> list[str]:
        return [
            self.java,
            "-cp",
            self.jar,
            "com.google.cloud.datastore.emulator.CloudDatastore",
            *args,
        ]

    def prepare(self) -> None:
        super().prepare()
        project = self.dir / "project"
        if not project.exists():
            subprocess.run(
                self._cli("create", str(project)),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            )

    def command(self) -> list[str]:
        return self._cli(
            "start",
            "--host=127.0.0.1",
            f"--port={self.port}",
            "--store_on_disk=false",
            "--consistency=1.0",
            str(self.dir / "project"),
        )

    def ready_url(self) -> str:
        return f"http://{self.addr}/"
