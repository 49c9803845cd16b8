"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler as local processes.

Owns the four processes and their logs (`<workdir>/logs/<component>.log`); the binaries
come from e2e/build-control-plane.sh, the certificates from `pki.Pki`, the network
namespace from `network`. Everything runs inside the host namespace (`network.HOST_NS`):
the apiserver listens on 10.244.0.1:6443 (reachable from pods and, through the root
veth, from the tests); etcd, KCM and the scheduler listen on that namespace's loopback,
which nothing outside it can reach.

Readiness is probed from a thread that has joined the host namespace (setns), because
127.0.0.1 there is not the test process's loopback. Every wait has a named timeout and a
failure carries the tail of the component's log, so a broken start explains itself.

Timing flags are shortened for tests, not for realism of defaults: a dead node is
noticed in ~10 s (`--node-monitor-grace-period`) and its pods' default tolerations run
out after `TOLERATION_SECONDS`, so a zone-outage scenario fits in a CI budget.

Must not import the kubelet, the harness or the Kubernetes client: it is the bottom
layer the others start from.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import http.client
import logging
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from zonestore_e2e import network
from zonestore_e2e.pki import FRONT_PROXY_USER, Pki

log = logging.getLogger(__name__)

ETCD_READY_TIMEOUT_S = 30.0
APISERVER_READY_TIMEOUT_S = 120.0
CONTROLLER_MANAGER_READY_TIMEOUT_S = 60.0
SCHEDULER_READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
PROBE_INTERVAL_S = 0.2
PROBE_REQUEST_TIMEOUT_S = 2.0
LOG_TAIL_LINES = 40

ETCD_CLIENT_URL = "http://127.0.0.1:2379"
ETCD_PEER_URL = "http://127.0.0.1:2380"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
KCM_PORT = 10257
SCHEDULER_PORT = 10259
# DefaultTolerationSeconds admission gives every pod these for the not-ready/unreachable
# NoExecute taints (upstream 300 s): after this long on a dead node a pod is evicted.
TOLERATION_SECONDS = 20
NODE_MONITOR_GRACE_PERIOD = "10s"
HEALTH_PATHS = "/healthz,/readyz,/livez,/metrics"

_CLONE_NEWNET = 0x40000000


class ControlPlaneError(RuntimeError):
    """A component died or missed its readiness deadline; the message has its log tail."""


@dataclass(frozen=True, slots=True)
class StartupTimings:
    """Seconds from `ControlPlane.start()` until each component answered ready."""

    etcd_s: float
    apiserver_s: float
    controller_manager_s: float
    scheduler_s: float

    @property
    def total_s(self) -> float:
        return max(self.controller_manager_s, self.scheduler_s)


@dataclass(slots=True)
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path


def _enter_netns(netns: str) -> None:
    """Move the calling thread (only it: network namespaces are per thread) into `netns`."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_bytes()[-64 * 1024 :].decode("utf-8", "replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(line[:400] for line in text.splitlines()[-lines:])


class ControlPlane:
    """The four control-plane processes; `start()` returns when all four are ready.

    `start()` wipes the etcd data directory: every start is a new, empty cluster, so a
    crashed earlier run cannot resurrect its objects into this one.
    """

    def __init__(
        self, workdir: Path, bin_dir: Path, pki: Pki, *, netns: str = network.HOST_NS
    ) -> None:
        self.workdir = workdir
        self.bin_dir = bin_dir
        self.pki = pki
        self.netns = netns
        self.logs_dir = workdir / "logs"
        self.timings: StartupTimings | None = None
        self._procs: list[_Process] = []
        self._probe_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._admin_tls = ssl.create_default_context(cafile=str(pki.ca_cert))
        self._admin_tls.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
        # KCM and the scheduler serve self-signed certificates; only liveness is asked.
        self._insecure_tls = ssl.create_default_context()
        self._insecure_tls.check_hostname = False
        self._insecure_tls.verify_mode = ssl.CERT_NONE

    # --- public ------------------------------------------------------------------------

    @property
    def admin_kubeconfig(self) -> Path:
        return self.pki.admin_kubeconfig

    def log_files(self) -> dict[str, Path]:
        """Component name -> log file, for dumping on a test failure."""
        return {p.name: p.log_path for p in self._procs}

    def start(self) -> StartupTimings:
        """Start etcd, then the apiserver, then KCM and the scheduler together; wait for
        each to be ready. On any failure everything started is stopped again."""
        missing = [b for b in self._binaries() if not os.access(self.bin_dir / b, os.X_OK)]
        if missing:
            raise ControlPlaneError(
                f"missing binaries in {self.bin_dir}: {', '.join(missing)} "
                "(run e2e/build-control-plane.sh)"
            )
        if not Path(f"/run/netns/{self.netns}").exists():
            raise ControlPlaneError(f"network namespace {self.netns} does not exist (Network.up())")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        etcd_dir = self.workdir / "etcd"
        shutil.rmtree(etcd_dir, ignore_errors=True)
        self._probe_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, initializer=_enter_netns, initargs=(self.netns,)
        )
        t0 = time.monotonic()
        try:
            etcd = self._spawn("etcd", self._etcd_argv(etcd_dir))
            self._wait_ready(
                etcd,
                "ETCD_READY_TIMEOUT_S",
                ETCD_READY_TIMEOUT_S,
                lambda: self._http_ok("http://127.0.0.1:2379/health", None),
            )
            etcd_s = time.monotonic() - t0
            apiserver = self._spawn("kube-apiserver", self._apiserver_argv())
            self._wait_ready(
                apiserver,
                "APISERVER_READY_TIMEOUT_S",
                APISERVER_READY_TIMEOUT_S,
                lambda: self._http_ok(
                    f"https://{network.APISERVER_IP}:6443/readyz", self._admin_tls
                ),
            )
            apiserver_s = time.monotonic() - t0
            kcm = self._spawn("kube-controller-manager", self._controller_manager_argv())
            sched = self._spawn("kube-scheduler", self._scheduler_argv())
            self._wait_ready(
                kcm,
                "CONTROLLER_MANAGER_READY_TIMEOUT_S",
                CONTROLLER_MANAGER_READY_TIMEOUT_S,
                lambda: self._http_ok(f"https://127.0.0.1:{KCM_PORT}/healthz", self._insecure_tls),
            )
            kcm_s = time.monotonic() - t0
            self._wait_ready(
                sched,
                "SCHEDULER_READY_TIMEOUT_S",
                SCHEDULER_READY_TIMEOUT_S,
                lambda: self._http_ok(
                    f"https://127.0.0.1:{SCHEDULER_PORT}/healthz", self._insecure_tls
                ),
            )
            sched_s = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        self.timings = StartupTimings(etcd_s, apiserver_s, kcm_s, sched_s)
        log.info(
            "controlplane.ready etcd_s=%.1f apiserver_s=%.1f controller_manager_s=%.1f "
            "scheduler_s=%.1f",
            etcd_s,
            apiserver_s,
            kcm_s,
            sched_s,
        )
        return self.timings

    def stop(self) -> None:
        """SIGTERM each process group (newest first, so clients go before their servers),
        wait `STOP_GRACE_S`, then SIGKILL. Idempotent."""
        for proc in reversed(self._procs):
            self._terminate(proc)
        self._procs.clear()
        if self._probe_pool is not None:
            self._probe_pool.shutdown(wait=True, cancel_futures=True)
            self._probe_pool = None

    def check_alive(self) -> None:
        """Raise `ControlPlaneError` if a component has exited since `start()`."""
        for proc in self._procs:
            if proc.popen.poll() is not None:
                raise self._died(proc)

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- command lines -----------------------------------------------------------------

    @staticmethod
    def _binaries() -> Sequence[str]:
        return ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

    def _etcd_argv(self, data_dir: Path) -> list[str]:
        return [
            str(self.bin_dir / "etcd"),
            "--name=zse2e",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={ETCD_CLIENT_URL}",
            f"--advertise-client-urls={ETCD_CLIENT_URL}",
            f"--listen-peer-urls={ETCD_PEER_URL}",
            f"--initial-advertise-peer-urls={ETCD_PEER_URL}",
            f"--initial-cluster=zse2e={ETCD_PEER_URL}",
            "--initial-cluster-state=new",
            # Throw-away test data: durability is not what is being tested, speed is.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_argv(self) -> list[str]:
        p = self.pki
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={ETCD_CLIENT_URL}",
            "--bind-address=0.0.0.0",
            "--secure-port=6443",
            # Not loopback: the apiserver writes this into the `kubernetes` Service's
            # endpoints, and EndpointSlice validation rejects 127/8.
            f"--advertise-address={network.APISERVER_IP}",
            f"--tls-cert-file={p.apiserver.cert}",
            f"--tls-private-key-file={p.apiserver.key}",
            f"--client-ca-file={p.ca_cert}",
            # Request-header authentication (aggregation layer) trusts only the CN below,
            # so sharing the one CA does not let other client certificates assert users.
            f"--requestheader-client-ca-file={p.ca_cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_USER}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p.front_proxy_client.cert}",
            f"--proxy-client-key-file={p.front_proxy_client.key}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={p.sa_public_key}",
            f"--service-account-signing-key-file={p.sa_private_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=Node,RBAC",
            # On top of the default set (which already has PodSecurity, ServiceAccount,
            # DefaultTolerationSeconds...): kubelets may only touch their own Node/pods.
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--default-not-ready-toleration-seconds={TOLERATION_SECONDS}",
            f"--default-unreachable-toleration-seconds={TOLERATION_SECONDS}",
        ]

    def _controller_manager_argv(self) -> list[str]:
        p = self.pki
        kubeconfig = p.controller_manager_kubeconfig
        return [
            str(self.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--authorization-always-allow-paths={HEALTH_PATHS}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={KCM_PORT}",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
            "--controllers=*",
            # Each controller talks to the API as its own ServiceAccount, so RBAC for
            # controllers is the real bootstrap policy, not one all-powerful identity.
            "--use-service-account-credentials=true",
            f"--root-ca-file={p.ca_cert}",
            f"--service-account-private-key-file={p.sa_private_key}",
            f"--cluster-signing-cert-file={p.ca_cert}",
            f"--cluster-signing-key-file={p.ca_key}",
            "--node-monitor-period=1s",
            f"--node-monitor-grace-period={NODE_MONITOR_GRACE_PERIOD}",
            "--node-startup-grace-period=20s",
            # Taint one node a second instead of one per 10 s, so both nodes of a dead
            # zone are tainted (and their pods evicted) within one scenario budget.
            "--node-eviction-rate=1",
        ]

    def _scheduler_argv(self) -> list[str]:
        kubeconfig = self.pki.scheduler_kubeconfig
        return [
            str(self.bin_dir / "kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--authorization-always-allow-paths={HEALTH_PATHS}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={SCHEDULER_PORT}",
            f"--cert-dir={self.workdir / 'scheduler-certs'}",
        ]

    # --- processes ---------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        log_path = self.logs_dir / f"{name}.log"
        with open(log_path, "wb") as log_file:
            # nsenter (network.host_argv) execs the program, so the pid (and process group) is the
            # component's own; a new session keeps Ctrl-C of the tests away from it.
            popen = subprocess.Popen(
                network.host_argv(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = _Process(name, popen, log_path)
        self._procs.append(proc)
        log.info("controlplane.spawned component=%s pid=%d", name, popen.pid)
        return proc

    def _terminate(self, proc: _Process) -> None:
        if proc.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGTERM)
        try:
            proc.popen.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log.warning("controlplane.kill component=%s after_s=%.0f", proc.name, STOP_GRACE_S)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait()

    def _died(self, proc: _Process) -> ControlPlaneError:
        return ControlPlaneError(
            f"{proc.name} exited with {proc.popen.returncode}; last lines of "
            f"{proc.log_path}:\n{_log_tail(proc.log_path)}"
        )

    def _wait_ready(
        self,
        proc: _Process,
        timeout_name: str,
        timeout_s: float,
        probe: Callable[[], tuple[bool, str]],
    ) -> None:
        assert self._probe_pool is not None
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            if proc.popen.poll() is not None:
                raise self._died(proc)
            ok, last = self._probe_pool.submit(probe).result()
            if ok:
                return
            if time.monotonic() >= deadline:
                raise ControlPlaneError(
                    f"{proc.name} not ready within {timeout_name}={timeout_s:.0f}s "
                    f"(last probe: {last}); last lines of {proc.log_path}:\n"
                    f"{_log_tail(proc.log_path)}"
                )
            time.sleep(PROBE_INTERVAL_S)

    @staticmethod
    def _http_ok(url: str, tls: ssl.SSLContext | None) -> tuple[bool, str]:
        """GET `url` (from the probe thread, i.e. inside the netns): (2xx?, what we got)."""
        scheme, rest = url.split("://", 1)
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.partition(":")
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                host, int(port), timeout=PROBE_REQUEST_TIMEOUT_S, context=tls
            )
        else:
            conn = http.client.HTTPConnection(host, int(port), timeout=PROBE_REQUEST_TIMEOUT_S)
        try:
            conn.request("GET", "/" + path)
            resp = conn.getresponse()
            body = resp.read(300).decode("utf-8", "replace")
            return 200 <= resp.status < 300, f"HTTP {resp.status} {body.strip()[:200]}"
        except (OSError, http.client.HTTPException) as e:
            return False, f"{type(e).__name__}: {e}"
        finally:
            conn.close()
