"""Real node processes on loopback for integration tests: start, stop, kill -9, restart."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.jepsen.netns import Network
    from tests.netproxy import ProxyHub


# The client port's server for every node the tests start: `zonestore serve`'s default
# (--edge auto: zonestore-edge when `make edge` has built it) unless ZONESTORE_TEST_EDGE
# says otherwise ("off": Python's grpc.aio server, "on": the edge or fail).
TEST_EDGE = os.environ.get("ZONESTORE_TEST_EDGE", "")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


_EPHEMERAL_LOW = _ephemeral_low()
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now, from below the kernel's ephemeral range where there is
    room: a port from inside it can be taken by any outgoing connection (a replica's
    peer link, a client) between this check and the server's bind, and a server that
    starts late (zonestore-edge, after its node) then never gets it. Each port is handed
    out once per process."""
    low = _EPHEMERAL_LOW
    if low > 12000:
        rng = random.Random()
        for _ in range(200):
            port = rng.randrange(low - 10000, low)
            if port in _handed_out:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    _handed_out.add(port)
    return port


def can_mount() -> str | None:
    """Why a test cannot mount file systems here (not root), or None when it can."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    return None


@contextlib.contextmanager
def small_disk(path: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of `size` mounted on `path` (a small disk to fill), always unmounted after
    (lazily if something still holds it open)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "zonestore-small-disk", str(path)],
        check=True,
    )
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def resize_disk(path: Path, size: str) -> None:
    """Grow (or shrink) a `small_disk` in place: the operator's "expand the volume"."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


class NodeProcess:
    """One `zonestore serve` process with its own data folder and ports."""

    def __init__(
        self,
        data_dir: Path,
        node_id: str = "test-0",
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        netns: str | None = None,
        ports: tuple[int, int] | None = None,
        edge: str | None = None,
    ) -> None:
        """`edge`: the --edge mode (default: TEST_EDGE, else serve's own default).
        `env`: added to the process environment (e.g. libfaketime's LD_PRELOAD).
        `netns`: run inside that network namespace (`ip netns exec`, which execs, so
        `proc` is the node itself), listening on `host` at `ports` (client, admin)."""
        self.data_dir = data_dir
        self.node_id = node_id
        self.extra = extra or []
        edge = edge or TEST_EDGE
        if edge:
            self.extra = ["--edge", edge, *self.extra]
        self.env = env or {}
        self.host = host
        self.netns = netns
        self.client_port, self.admin_port = ports or (free_port(), free_port())
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"{node_id}.log"
        self.peer_port = 0

    @property
    def client_addr(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def admin_addr(self) -> str:
        return f"{self.host}:{self.admin_port}"

    @property
    def peer_addr(self) -> str:
        """Where the other replicas reach this one directly (not through a proxy)."""
        return f"{self.host}:{self.peer_port}"

    def start(self, timeout: float = 30.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            [
                *(["ip", "netns", "exec", self.netns] if self.netns else []),
                sys.executable,
                "-m",
                "zonestore_node.cli",
                "serve",
                "--node-id",
                self.node_id,
                "--data-dir",
                str(self.data_dir / "data"),
                "--client-addr",
                self.client_addr,
                "--admin-addr",
                self.admin_addr,
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        log.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.admin_addr}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"node not ready in {timeout}s: {self.log_tail()}")

    def edge_pid(self) -> int | None:
        """The pid of the newest zonestore-edge this node started (its log says), if any."""
        pid = None
        try:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if "edge.started pid=" in line:
                    pid = int(line.split("edge.started pid=")[1].split()[0])
        except OSError:
            return None
        return pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the graceful path."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """kill -9: no chance to flush anything."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.start()

    def admin(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        """One admin API call: (HTTP status, decoded JSON); (0, error) if unreachable."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.admin_addr}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError as exc:
            return 0, {"error": str(exc)}

    def http_get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://{self.admin_addr}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


class Cluster:
    """N replicas on loopback as separate processes, with their own data folders."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        extra: list[str] | None = None,
        proxies: ProxyHub | None = None,
        env: Callable[[str], dict[str, str]] | None = None,
        network: Network | None = None,
    ) -> None:
        """With `proxies`, every replica reaches every other through a link of its own
        that the test can cut (tests/netproxy.py). With `network` instead (its namespaces
        up), each replica runs in a network namespace of its own, on its own address,
        and reaches the others through `network.peer_route` (tests/jepsen/netns.py).
        `env(node_id)`: extra environment for that replica's process."""
        assert proxies is None or network is None, "proxies or namespaces, not both"
        self.root = root
        self.nodes: list[NodeProcess] = []
        self.ids = [f"n{i}" for i in range(size)]
        if network is not None:
            from tests.jepsen import netns

            peer_ports = [netns.PEER_PORT] * size
            hosts = [network.address(nid) for nid in self.ids]
        else:
            peer_ports = [free_port() for _ in range(size)]
            hosts = ["127.0.0.1"] * size
        for nid, host, port in zip(self.ids, hosts, peer_ports, strict=True):
            addrs = {}
            for other, other_host, other_port in zip(self.ids, hosts, peer_ports, strict=True):
                if other == nid:
                    addrs[other] = f"{host}:{port}"
                elif network is not None:
                    addrs[other] = network.peer_route(nid, other)
                elif proxies is not None:
                    addrs[other] = f"127.0.0.1:{proxies.link(nid, other, other_port)}"
                else:
                    addrs[other] = f"{other_host}:{other_port}"
            spec = ",".join(f"{k}={v}" for k, v in addrs.items())
            args = [
                "--peer-addr", f"{host}:{port}",
                "--initial-cluster", spec,
                "--zone", f"zone-{nid}",
                "--tick-ms", "20",
                # Off loopback the admin API wants a token; the namespaces are private.
                *(["--admin-insecure"] if network is not None else []),
                *(extra or []),
            ]  # fmt: skip
            placed: dict[str, Any] = {}
            if network is not None:
                placed = {"host": host, "netns": network.netns(nid),
                          "ports": (netns.CLIENT_PORT, netns.ADMIN_PORT)}  # fmt: skip
            node = NodeProcess(
                root / nid, node_id=nid, extra=args, env=env(nid) if env else None, **placed
            )
            node.peer_port = port
            self.nodes.append(node)

    def start(self) -> None:
        procs = []
        for node in self.nodes:
            node.spawn()
            procs.append(node)
        for node in procs:
            node.wait_ready()

    def by_id(self, node_id: str) -> NodeProcess:
        return next(n for n in self.nodes if n.node_id == node_id)

    def status(self, node: NodeProcess) -> dict[str, Any]:
        """The replica's /admin/status, decoded JSON (values as the node wrote them)."""
        import json

        code, body = node.http_get("/admin/status")
        assert code == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    def leader(self, timeout: float = 15.0, among: list[NodeProcess] | None = None) -> NodeProcess:
        """The replica that every live replica agrees leads, once one is ready."""
        deadline = time.monotonic() + timeout
        candidates = among or self.nodes
        while time.monotonic() < deadline:
            live = [n for n in candidates if n.alive()]
            views = set()
            for node in live:
                try:
                    views.add(self.status(node).get("leader"))
                except (AssertionError, OSError, ValueError):
                    views.add(None)
            if len(views) == 1 and None not in views:
                leader = self.by_id(str(views.pop()))
                try:
                    if leader in live and leader.http_get("/readyz")[0] == 200:
                        return leader
                except OSError:
                    pass
            time.sleep(0.05)
        raise TimeoutError("no agreed leader")

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.kill()
