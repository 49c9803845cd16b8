"""The whole e2e cluster, up and down: network, PKI, control plane, cluster DNS, volume
provisioner and one process kubelet per Node, plus the fault levers the scenarios pull.

Every long-running piece is an OS process inside the host network namespace
(`network.host_argv`) with its own log under `<workdir>/logs/`, so a scenario that fails can
print what each one said, and a zone outage can be made of real signals: SIGKILL to the
zone's kubelets (heartbeats stop; the node-lifecycle controller notices), SIGSTOP to its
pods' processes, its bridge down.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from zonestore_e2e import network
from zonestore_e2e.controlplane import ControlPlane
from zonestore_e2e.pki import Pki

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = os.environ.get("K8S_VERSION", "v1.36.3")
DEFAULT_ZONES = ("zone-a", "zone-b", "zone-c")

T = TypeVar("T")


class Timeout(AssertionError):
    """A named wait ran out; the message says what was awaited and the last value seen."""


def wait_for(
    what: str, probe: Callable[[], T | None], timeout_s: float, interval_s: float = 0.5
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            value = probe()
            last = value
            if value:
                return value
        except Exception as exc:  # probing a cluster mid-fault fails in many ways
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise Timeout(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last})")
        time.sleep(interval_s)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    zone: str
    zone_index: int
    node_index: int


class HostProcess:
    """A program running in the host namespace, logging to a file."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        # nsenter (network.host_argv) execs the program: the Popen pid is the program's.
        self.proc = subprocess.Popen(
            network.host_argv(self.argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def stop(self, grace_s: float = 5.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(5)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class ApiAccess:
    """Admin access to a cluster's API: the generated client, and raw requests for what
    it does not expose (dry-run with strict field validation on any kind, discovery).
    Subclasses say where the API server is and with which credentials."""

    def __init__(self) -> None:
        self._plurals: dict[tuple[str, str], tuple[str, bool]] = {}

    @property
    def admin_kubeconfig(self) -> Path:
        raise NotImplementedError

    def endpoint(self) -> tuple[str, tuple[str, str], str]:
        """(server URL, (client cert file, key file), CA file)."""
        raise NotImplementedError

    def api(self) -> Any:
        """A `kubernetes.client.ApiClient` with the admin's credentials."""
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(self.admin_kubeconfig), client_configuration=cfg
        )
        return client.ApiClient(cfg)

    def _call(
        self,
        method: str,
        path: str,
        *,
        data: str | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        import requests

        server, cert, ca = self.endpoint()
        resp = requests.request(
            method,
            f"{server}{path}",
            data=data,
            params=params,
            headers={"Content-Type": content_type},
            cert=cert,
            verify=ca,
            timeout=30,
        )
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, resp.text

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """One raw API call as the admin: (HTTP status, decoded JSON body). A PATCH names
        its kind in `content_type` (application/merge-patch+json, ...)."""
        data = None if body is None else json.dumps(body)
        return self._call(method, path, data=data, params=params, content_type=content_type)

    def resource_path(
        self, api_version: str, kind: str, namespace: str | None, name: str | None = None
    ) -> str:
        """The REST path of `kind` in `api_version`, found by discovery (cached)."""
        key = (api_version, kind)
        base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        if key not in self._plurals:
            status, listing = self.request("GET", base)
            if status != 200:
                raise LookupError(f"discovery of {api_version} failed: {status} {listing}")
            for res in listing.get("resources", []):
                if "/" not in res["name"]:
                    self._plurals[(api_version, res["kind"])] = (res["name"], res["namespaced"])
        plural, namespaced = self._plurals[key]
        ns = f"/namespaces/{namespace}" if namespaced and namespace else ""
        return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")

    def apply(self, obj: dict[str, Any], *, dry_run: bool = False) -> tuple[int, Any]:
        """Server-side apply as the admin (field manager zse2e), strict field validation:
        an unknown field is an error, not silently pruned."""
        meta = obj["metadata"]
        path = self.resource_path(
            obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]
        )
        params = {"fieldManager": "zse2e", "force": "true", "fieldValidation": "Strict"}
        if dry_run:
            params["dryRun"] = "All"
        return self._call(
            "PATCH",
            path,
            data=json.dumps(obj),
            params=params,
            content_type="application/apply-patch+yaml",
        )


class Cluster(ApiAccess):
    def __init__(
        self,
        workdir: Path,
        bin_dir: Path,
        venv: Path,
        zones: tuple[str, ...] = DEFAULT_ZONES,
        nodes_per_zone: int = 2,
        lease_seconds: int = 8,
    ) -> None:
        super().__init__()
        self.workdir = workdir
        self.bin_dir = bin_dir
        self.venv = venv
        self.zones = zones
        self.lease_seconds = lease_seconds
        self.nodes = [
            NodeSpec(f"{zone}-{k}", zone, z, k)
            for z, zone in enumerate(zones)
            for k in range(nodes_per_zone)
        ]
        self.network = network.Network(len(zones))
        self.pki: Pki | None = None
        self.control_plane: ControlPlane | None = None
        self.kubelets: dict[str, HostProcess] = {}
        self.services: dict[str, HostProcess] = {}
        self.timings: dict[str, float] = {}

    # -- paths ----------------------------------------------------------------------

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def admin_kubeconfig(self) -> Path:
        assert self.pki is not None
        return self.pki.admin_kubeconfig

    def endpoint(self) -> tuple[str, tuple[str, str], str]:
        assert self.pki is not None
        creds = self.pki.admin
        return self.pki.server_url, (str(creds.cert), str(creds.key)), str(self.pki.ca_cert)

    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        t0 = time.monotonic()
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        self.network.up()
        self.pki = Pki.build(self.workdir / "pki")
        self.control_plane = ControlPlane(self.workdir / "control-plane", self.bin_dir, self.pki)
        self.control_plane.start()
        self.timings["control_plane_ready_s"] = time.monotonic() - t0
        admin = str(self.pki.admin_kubeconfig)
        self.services["dns"] = HostProcess(
            "dns",
            [
                self.python(),
                "-m",
                "zonestore_e2e.dns",
                "--listen",
                f"{network.DNS_IP}:53",
                "--kubeconfig",
                admin,
            ],
            self.logs / "dns.log",
        )
        self.services["provisioner"] = HostProcess(
            "provisioner",
            [
                self.python(),
                "-m",
                "zonestore_e2e.provisioner",
                "--kubeconfig",
                admin,
                "--root",
                str(self.workdir / "volumes"),
            ],
            self.logs / "provisioner.log",
        )
        for proc in self.services.values():
            proc.start()
        for node in self.nodes:
            self.kubelets[node.name] = self._kubelet(node)
            self.kubelets[node.name].start()
        wait_for("every Node Ready", self._all_nodes_ready, 120)
        self.timings["cluster_ready_s"] = time.monotonic() - t0

    def _kubelet(self, node: NodeSpec) -> HostProcess:
        assert self.pki is not None
        argv = [
            self.python(),
            "-m",
            "zonestore_e2e.kubelet",
            "--node",
            node.name,
            "--zone",
            node.zone,
            "--zone-index",
            str(node.zone_index),
            "--node-index",
            str(node.node_index),
            "--kubeconfig",
            str(self.pki.node_kubeconfig(node.name)),
            "--state-dir",
            str(self.workdir / "nodes" / node.name),
            "--venv",
            str(self.venv),
            "--lease-seconds",
            str(self.lease_seconds),
        ]
        return HostProcess(f"kubelet-{node.name}", argv, self.logs / f"kubelet-{node.name}.log")

    def stop(self) -> None:
        for proc in self.kubelets.values():
            proc.stop()
        for proc in self.services.values():
            proc.stop()
        if self.control_plane is not None:
            with contextlib.suppress(Exception):
                self.control_plane.stop()
        self.network.down()

    def _all_nodes_ready(self) -> bool:
        from kubernetes import client

        with self.api() as api:
            nodes: list[Any] = client.CoreV1Api(api).list_node().items
        ready = {
            n.metadata.name
            for n in nodes
            if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
        }
        return ready >= {n.name for n in self.nodes}

    # -- faults ---------------------------------------------------------------------

    def zone_index(self, zone: str) -> int:
        return self.zones.index(zone)

    def zone_nodes(self, zone: str) -> list[NodeSpec]:
        return [n for n in self.nodes if n.zone == zone]

    def signal_kubelets(self, zone: str, sig: int) -> None:
        for node in self.zone_nodes(zone):
            self.kubelets[node.name].signal(sig)

    def restart_kubelets(self, zone: str) -> None:
        for node in self.zone_nodes(zone):
            kubelet = self.kubelets[node.name]
            if kubelet.alive():
                kubelet.signal(signal.SIGCONT)
            else:
                self.kubelets[node.name] = self._kubelet(node)
                self.kubelets[node.name].start()

    def restore_all(self) -> None:
        """Undo every fault lever: bridges up, partitions healed, kubelets running,
        every process in a pod namespace continued."""
        for z in range(len(self.zones)):
            self.network.set_bridge(z, up=True)
            self.network.heal_zone(z)
        for zone in self.zones:
            self.restart_kubelets(zone)
        for netns in network.list_namespaces():
            if netns != network.HOST_NS:
                for pid in network.namespace_pids(netns):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)

    def pod_pids(self, pod_uid: str) -> list[int]:
        return network.namespace_pids(network.pod_netns_name(pod_uid))

    def signal_pods(self, pod_uids: list[str], sig: int) -> None:
        for uid in pod_uids:
            for pid in self.pod_pids(uid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    # -- diagnostics ----------------------------------------------------------------

    def describe_processes(self) -> str:
        parts = []
        procs = [*self.services.values(), *self.kubelets.values()]
        for proc in procs:
            state = "running" if proc.alive() else f"exited {proc.proc and proc.proc.returncode}"
            parts.append(f"--- {proc.name} ({state}) {proc.log}\n{proc.tail(15)}")
        return "\n".join(parts)


# Every process of a run carries RUN_MARKER=<run id> in its environment: the control
# plane, DNS, provisioner and kubelets inherit it from the harness, and the kubelets put
# it into every container's environment. After a run, no process may still carry it.
RUN_MARKER = "ZSE2E_RUN"


def run_processes(run_id: str) -> dict[int, str]:
    """Processes whose environment carries `RUN_MARKER=run_id` (this process excluded):
    pid -> command line. Reads /proc, so it needs root to see other users' processes."""
    needle = f"{RUN_MARKER}={run_id}".encode()
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            if needle not in environ:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                found[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or a kernel thread
            continue
    return found


def kill_survivors(run_id: str, grace_s: float = 5.0) -> dict[int, str]:
    """SIGKILL every process of the run that is still alive; returns what it found (an
    empty dict: the run ended cleanly)."""
    survivors = run_processes(run_id)
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while run_processes(run_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    return survivors


@contextlib.contextmanager
def running_cluster(workdir: Path | None = None) -> Iterator[Cluster]:
    """A started cluster, always torn down (network included) on the way out."""
    bin_dir = Path(os.environ.get("ZSE2E_BIN", ROOT / ".cache" / "k8s" / K8S_VERSION / "bin"))
    # The venv this interpreter runs in: its bin/ holds `zonestore` for the pods.
    venv = Path(os.environ.get("ZSE2E_VENV", sys.prefix))
    workdir = workdir or Path(os.environ.get("ZSE2E_WORKDIR", ROOT / ".cache" / "e2e" / "run"))
    cluster = Cluster(workdir, bin_dir, venv)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
