"""The process kubelet: one OS process per Node, running pods as local processes.

    python -m zonestore_e2e.kubelet --node NAME --zone ZONE --zone-index Z --node-index K \
        --kubeconfig PATH --state-dir DIR --venv PATH [--lease-seconds 10]

Runs inside the cluster's host network namespace (zse2e-host) with the node's own client
certificate (system:node:NAME), so the Node authorizer and NodeRestriction judge every
call as they would a real kubelet's. It registers the Node, renews its Lease, reports
NodeStatus, watches the pods bound to it (fieldSelector spec.nodeName) and runs each one:
a network namespace with an address from the node's range (network.attach_pod), volumes
as directories (volumes.py), each container as `ip netns exec <pod-ns> unshare -m -u sh
-c <bind mounts; exec "$@"> <argv>` in its own process group, probes, restarts with
back-off, status patches, graceful deletion ending in the final DELETE.

State directory (survives a restart; a restarted kubelet re-adopts what still runs):
    ipam.json                         pod uid -> pod IP (pods.IpAllocator)
    pods/<uid>/pod.json               namespace, name, ip, netns, per-container pid and
                                      start time, restart counts, last terminations
    pods/<uid>/volumes/<volume>/      emptyDir, secret, configMap, projected, downwardAPI
    pods/<uid>/etc/{hosts,resolv.conf}
    logs/<namespace>_<pod>_<uid>/<container>.log   stdout+stderr, kept after deletion

The decisions (env, probes, phase, conditions, mount order) are pure functions in
pods.py; this module does the I/O: the API, processes, files, the network.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from zonestore_e2e import images, network, pods, volumes
from zonestore_e2e.kubelet_api import STRATEGIC, Api, ApiError, retrying

log = logging.getLogger("kubelet")

KUBELET_VERSION = "v1.36.3"
TICK = 0.5  # seconds between a pod worker's checks of its processes and probes
VOLUME_SYNC = 3.0  # seconds between refreshes of Secret/ConfigMap/token volumes
# Set by the harness in every process it starts (cluster.RUN_MARKER; kept equal by a test).
RUN_MARKER = "ZSE2E_RUN"
UNKNOWN_EXIT = 255  # an adopted process's exit code died with the kubelet that spawned it
STAGE_ROOT = "/run/zse2e-stage"  # empty mount points only; see PodWorker.stage_dirs


def now_iso() -> str:
    return pods.rfc3339(time.time())


def micro_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def proc_start_time(pid: int) -> str:
    """The process's start time in clock ticks (field 22 of /proc/<pid>/stat): with the
    pid, it tells a live adopted process from an unrelated one that reused the pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def alive(pid: int, start: str) -> bool:
    return bool(pid) and proc_start_time(pid) == start and start != ""


def kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


# The checkout this package runs from (its sources are what the venv has installed).
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    zone: str
    zone_index: int
    node_index: int
    state_dir: str
    venv: str
    lease_seconds: int
    status_seconds: float
    kill_pods_on_exit: bool
    backoff: pods.Backoff
    capacity: Mapping[str, str]

    @property
    def ip(self) -> str:
        return network.node_ip(self.zone_index, self.node_index)


# ---------------------------------------------------------------- containers


@dataclasses.dataclass(slots=True)
class ContainerRun:
    """One container of a pod: its spec, status view, live process and probes."""

    spec: dict[str, Any]
    view: pods.ContainerView
    init: bool = False
    proc: subprocess.Popen[bytes] | None = None
    pid_start: str = ""
    started_mono: float = 0.0
    crashes: int = 0
    next_start: float = 0.0  # monotonic; back-off gate
    exit_signal: int = 0  # the signal that ended the process, when known
    start_failed: bool = False  # the last start attempt failed before a process ran
    done: bool = False  # init container finished successfully / won't restart
    probes: dict[pods.ProbeKind, pods.ProbeTracker] = dataclasses.field(default_factory=dict)
    probing: set[pods.ProbeKind] = dataclasses.field(default_factory=set)
    env: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def running(self) -> bool:
        return self.view.state is pods.State.RUNNING

    def exit_code(self) -> int | None:
        """The exit code once the process has ended (None while it runs); an adopted
        process's real code is lost with the old kubelet, so it reads as 255."""
        if self.proc is not None:
            rc = self.proc.poll()
            if rc is None:
                return None
            self.exit_signal = -rc if rc < 0 else 0
            return 128 - rc if rc < 0 else rc
        if alive(self.view.pid, self.pid_start):
            return None
        self.exit_signal = 0
        return UNKNOWN_EXIT

    def to_state(self) -> dict[str, Any]:
        v = self.view
        return {
            "pid": v.pid if self.running() else 0,
            "start": self.pid_start if self.running() else "",
            "startedAt": v.started_at,
            "restartCount": v.restart_count,
            "last": v.last.to_dict() if v.last else None,
            "terminated": v.terminated.to_dict() if v.terminated else None,
            "done": self.done,
        }


class PodWorker:
    """Runs one pod from sandbox to final DELETE. `update()` feeds newer pod objects;
    `gone()` says the pod object no longer exists (force-deleted)."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        self.k = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.dir = os.path.join(kubelet.cfg.state_dir, "pods", self.uid)
        self.log_dir = os.path.join(
            kubelet.cfg.state_dir, "logs", f"{self.namespace}_{self.name}_{self.uid}"
        )
        spec = pod["spec"]
        self.host_network = bool(spec.get("hostNetwork"))
        self.netns = "" if self.host_network else network.pod_netns_name(self.uid)
        self.policy = pods.RestartPolicy(spec.get("restartPolicy", "Always"))
        self.ip = ""
        self.sandbox_ready = False
        self.init_failed = False
        self.message = ""
        self.inits = [self._run_of(c, True) for c in spec.get("initContainers") or []]
        self.mains = [self._run_of(c, False) for c in spec.get("containers") or []]
        self.last_status: dict[str, Any] | None = None
        self.wake = asyncio.Event()
        self.force_gone = False
        self.tokens: dict[str, tuple[str, float]] = {}  # path key -> (token, refresh at)
        self.start_time = now_iso()
        self.probe_tasks: set[asyncio.Task[None]] = set()
        self.volume_paths: dict[str, str] = {}
        self.file_volumes: set[str] = set()
        self.last_volume_sync = 0.0

    def _run_of(self, c: dict[str, Any], init: bool) -> ContainerRun:
        return ContainerRun(c, pods.ContainerView(c["name"], c.get("image", "")), init=init)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        self.wake.set()

    def gone(self) -> None:
        self.force_gone = True
        self.wake.set()

    def deleting(self) -> bool:
        return self.force_gone or bool(self.pod["metadata"].get("deletionTimestamp"))

    # ---- persistence

    def save(self) -> None:
        state = {
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "ip": self.ip,
            "netns": self.netns,
            "containers": {r.name: r.to_state() for r in self.inits + self.mains},
        }
        tmp = os.path.join(self.dir, "pod.json.tmp")
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, os.path.join(self.dir, "pod.json"))

    def adopt(self, state: Mapping[str, Any]) -> None:
        """Take over what a previous kubelet process left: live processes keep running
        (their pid and start time must match), dead ones count as exits."""
        saved = state.get("containers") or {}
        for r in self.inits + self.mains:
            s = saved.get(r.name)
            if not s:
                continue
            r.view.restart_count = int(s.get("restartCount", 0))
            r.view.last = pods.Terminated.from_dict(s["last"]) if s.get("last") else None
            r.done = bool(s.get("done"))
            if s.get("terminated"):
                r.view.terminated = pods.Terminated.from_dict(s["terminated"])
                r.view.state = pods.State.TERMINATED
            pid, start = int(s.get("pid", 0)), str(s.get("start", ""))
            if pid and alive(pid, start):
                r.view.pid, r.pid_start = pid, start
                r.view.state = pods.State.RUNNING
                r.view.started_at = str(s.get("startedAt", ""))
                r.started_mono = time.monotonic()
                r.env = self._adopted_env(r)
                with contextlib.suppress(images.ImageError):
                    r.view.image_id = images.resolve(
                        r.spec.get("image", ""), self.k.cfg.venv
                    ).image_id
                self._arm_probes(r)
                log.info("pod.adopted pod=%s container=%s pid=%d", self.key, r.name, pid)
            elif pid:
                r.view.pid, r.pid_start = pid, start
                r.view.state = pods.State.RUNNING  # the next tick records the exit
                r.view.started_at = str(s.get("startedAt", ""))

    def _adopted_env(self, r: ContainerRun) -> dict[str, str]:
        with contextlib.suppress(OSError):
            with open(f"/proc/{r.view.pid}/environ", "rb") as f:
                pairs = [p.split(b"=", 1) for p in f.read().split(b"\0") if b"=" in p]
            return {k.decode(): v.decode() for k, v in pairs}
        return {}

    # ---- main loop

    async def run(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pod.worker_failed pod=%s", self.key)
            raise

    async def _run(self) -> None:
        phase = self.pod.get("status", {}).get("phase")
        fresh = not any(r.view.pid or r.view.terminated for r in self.inits + self.mains)
        if phase in ("Succeeded", "Failed") and fresh:
            # Finished before this kubelet knew it: never start it again.
            await self._wait_for_deletion()
            return
        await self._setup_sandbox()
        while not self.deleting():
            if not await self._setup_volumes():
                await self._pause()
                continue
            break
        while not self.deleting():
            t = time.monotonic()
            if t - self.last_volume_sync >= VOLUME_SYNC:
                await self._setup_volumes()
            if not self._initialized():
                await self._step_inits()
            if self._initialized() and not self.init_failed:
                await self._step_mains()
            await self._report()
            if self._terminal():
                await self._teardown_network()
            await self._pause()
        await self._terminate()

    async def _pause(self) -> None:
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TICK):
                await self.wake.wait()

    async def _wait_for_deletion(self) -> None:
        while not self.deleting():
            await self._pause()
        await self._final_delete()

    def _initialized(self) -> bool:
        return all(r.done for r in self.inits)

    def _terminal(self) -> bool:
        phase = self._phase()
        return phase in ("Succeeded", "Failed")

    def _phase(self) -> str:
        views = [r.view for r in self.mains]
        return pods.pod_phase(self.policy, self._initialized(), self.init_failed, views)

    # ---- sandbox

    async def _setup_sandbox(self) -> None:
        cfg = self.k.cfg
        if self.host_network:
            self.ip = cfg.ip
        else:
            self.ip = self.k.ipam.allocate(self.uid)
            if self.netns not in await asyncio.to_thread(network.list_namespaces):
                veth = network.veth_name(self.uid)
                await asyncio.to_thread(
                    network.attach_pod, self.netns, cfg.zone_index, self.ip, veth
                )
                log.info("pod.sandbox pod=%s ip=%s netns=%s", self.key, self.ip, self.netns)
        self._write_etc()
        self.sandbox_ready = True
        self.save()

    def _write_etc(self) -> None:
        """The pod's /etc/hosts and /etc/resolv.conf, bind-mounted over the host's."""
        etc = os.path.join(self.dir, "etc")
        os.makedirs(etc, exist_ok=True)
        if self.host_network:
            hosts = f"127.0.0.1\tlocalhost\n{self.ip}\t{self.k.cfg.name}\n"
        else:
            hosts = pods.hosts_file(self.pod, self.ip)
        with open(os.path.join(etc, "hosts"), "w") as f:
            f.write(hosts)
        with open(os.path.join(etc, "resolv.conf"), "w") as f:
            f.write(self._resolv_conf())

    def _resolv_conf(self) -> str:
        policy = self.pod["spec"].get("dnsPolicy", "ClusterFirst")
        if policy == "Default" or (self.host_network and policy != "ClusterFirstWithHostNet"):
            with open("/etc/resolv.conf") as f:
                return f.read()
        try:
            from zonestore_e2e import dns  # type: ignore[attr-defined,unused-ignore]

            return str(dns.resolv_conf(self.namespace))
        except (ImportError, AttributeError):
            return (
                f"nameserver {network.DNS_IP}\n"
                f"search {self.namespace}.svc.cluster.local svc.cluster.local cluster.local\n"
                "options ndots:5\n"
            )

    async def _teardown_network(self) -> None:
        if self.netns and self.sandbox_ready and self._all_stopped():
            await asyncio.to_thread(network.detach_pod, self.netns)
            self.sandbox_ready = False

    def _all_stopped(self) -> bool:
        return all(r.exit_code() is not None or not r.view.pid for r in self.inits + self.mains)

    # ---- volumes

    async def _fetch_data(self, kind: str, name: str) -> dict[str, bytes] | None:
        path = f"/api/v1/namespaces/{self.namespace}/{kind}/{name}"
        obj = await self.k.api.get_or_none(path)
        return None if obj is None else volumes.decoded(obj, secret=kind == "secrets")

    async def _token(self, sat: Mapping[str, Any]) -> str:
        key = f"{sat.get('audience', '')}|{sat.get('expirationSeconds', 3607)}"
        cached = self.tokens.get(key)
        if cached and time.time() < cached[1]:
            return cached[0]
        seconds = int(sat.get("expirationSeconds", 3607))
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [sat["audience"]] if sat.get("audience") else [],
                "expirationSeconds": seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.name,
                    "uid": self.uid,
                },
            },
        }
        path = f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token"
        resp = await self.k.api.create(path, body)
        token = str(resp["status"]["token"])
        self.tokens[key] = (token, time.time() + 0.8 * seconds)  # the kubelet's 80% rule
        return token

    async def _setup_volumes(self) -> bool:
        """Materialise every volume (again): directories once, file contents refreshed
        atomically when their source changed. False (with a message) while one is not
        available yet."""
        self.last_volume_sync = time.monotonic()
        facts = pods.PodFacts.of(self.pod, self.ip, self.k.cfg.ip)
        try:
            for vol in self.pod["spec"].get("volumes") or []:
                await self._setup_volume(vol, facts)
        except (volumes.VolumeError, pods.ConfigError, ApiError) as e:
            self.message = f"MountVolume.SetUp failed: {e}"
            log.warning("pod.volume_failed pod=%s error=%s", self.key, e)
            return False
        except (aiohttp.ClientError, TimeoutError) as e:
            self.message = f"MountVolume.SetUp failed: {e!r}"
            return False
        self.message = ""
        return True

    async def _setup_volume(self, vol: Mapping[str, Any], facts: pods.PodFacts) -> None:
        name = vol["name"]
        target = os.path.join(self.dir, "volumes", name)
        if "emptyDir" in vol:
            os.makedirs(target, exist_ok=True)
            self.volume_paths[name] = target
            return
        if "hostPath" in vol:
            hp = vol["hostPath"]
            if hp.get("type") in ("DirectoryOrCreate",):
                os.makedirs(hp["path"], exist_ok=True)
            self.volume_paths[name] = hp["path"]
            return
        if "persistentVolumeClaim" in vol:
            if name not in self.volume_paths:
                claim = vol["persistentVolumeClaim"]["claimName"]
                pvc = await self.k.api.get(
                    f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim}"
                )
                pv_name = pvc.get("spec", {}).get("volumeName")
                if not pv_name or pvc.get("status", {}).get("phase") != "Bound":
                    raise volumes.VolumeError(f'persistentvolumeclaim "{claim}" is not bound')
                pv = await self.k.api.get(f"/api/v1/persistentvolumes/{pv_name}")
                path = volumes.pvc_path(pv)
                os.makedirs(path, exist_ok=True)
                self.volume_paths[name] = path
            return
        # File-backed: fetch every referenced object and token first, then build.
        cms: dict[str, dict[str, bytes] | None] = {}
        secs: dict[str, dict[str, bytes] | None] = {}
        toks: dict[int, str] = {}
        for kind, ref_name in _references(vol):
            store = secs if kind == "secrets" else cms
            if ref_name not in store:
                store[ref_name] = await self._fetch_data(kind, ref_name)
        for src in (vol.get("projected") or {}).get("sources") or []:
            if "serviceAccountToken" in src:
                sat = src["serviceAccountToken"]
                toks[id(sat)] = await self._token(sat)
        payload = volumes.source_payload(vol, facts, cms.get, secs.get, lambda sat: toks[id(sat)])
        if payload is None:
            raise volumes.VolumeError(f"volume {name}: unsupported type {sorted(vol)}")
        if await asyncio.to_thread(volumes.write_atomic, target, payload):
            log.info("pod.volume_written pod=%s volume=%s", self.key, name)
        self.volume_paths[name] = target
        self.file_volumes.add(name)

    # ---- containers

    async def _step_inits(self) -> None:
        for r in self.inits:
            if r.done:
                continue
            code = r.exit_code() if r.view.pid else None
            if r.running() and code is not None:
                self._record_exit(r, code)
                if code == 0:
                    r.done = True
                    self.save()
                    continue
                if self.policy is pods.RestartPolicy.NEVER:
                    self.init_failed = True
                    self.save()
                    return
                r.crashes += 1
                r.next_start = time.monotonic() + self.k.cfg.backoff.delay(r.crashes)
            if not r.running():
                await self._maybe_start(r)
            return  # one init container at a time, in order

    async def _step_mains(self) -> None:
        t = time.monotonic()
        for r in self.mains:
            if r.running():
                code = r.exit_code()
                if code is not None:
                    self._record_exit(r, code)
                    if pods.should_restart(self.policy, code):
                        if t - r.started_mono >= self.k.cfg.backoff.reset:
                            r.crashes = 0
                        r.crashes += 1
                        r.next_start = t + self.k.cfg.backoff.delay(r.crashes)
                    else:
                        r.done = True
                    self.save()
                else:
                    self._schedule_probes(r)
                    continue
            if not r.done and not r.running():
                await self._maybe_start(r)

    def _record_exit(self, r: ContainerRun, code: int) -> None:
        adopted = r.proc is None and code == UNKNOWN_EXIT
        term = pods.Terminated(
            exit_code=code,
            reason=r.view.reason if r.view.reason == "OOMKilled" else pods.exit_reason(code),
            started_at=r.view.started_at,
            finished_at=now_iso(),
            container_id=r.view.container_id,
            message="exit code unknown: the process outlived a kubelet restart" if adopted else "",
            signal=r.exit_signal,
        )
        log.info("container.exited pod=%s container=%s code=%d", self.key, r.name, code)
        r.view.state = pods.State.TERMINATED
        r.view.terminated = term
        r.view.ready = False
        r.view.started = False
        r.view.pid = 0
        r.proc = None
        r.probes.clear()

    async def _maybe_start(self, r: ContainerRun) -> None:
        if r.start_failed and time.monotonic() < r.next_start:
            return  # keep the failure's waiting reason (ErrImagePull, ...) until the retry
        if time.monotonic() < r.next_start:
            if r.view.terminated is not None:
                r.view.last = r.view.terminated
                r.view.terminated = None
            r.view.state = pods.State.WAITING
            r.view.reason = "CrashLoopBackOff"
            r.view.message = f"back-off restarting failed container {r.name} in pod {self.name}"
            return
        r.start_failed = True
        try:
            await self._start(r)
            r.start_failed = False
        except (images.ImageError, pods.ConfigError, volumes.VolumeError) as e:
            r.view.state = pods.State.WAITING
            r.view.reason = getattr(e, "reason", "CreateContainerError")
            r.view.message = str(e)
            r.next_start = time.monotonic() + 5.0
            log.warning("container.start_failed pod=%s container=%s error=%s", self.key, r.name, e)
            await self.k.event(self.pod, "Warning", "Failed", f"{r.name}: {e}")
        except OSError as e:
            log.warning("container.start_failed pod=%s container=%s error=%s", self.key, r.name, e)
            r.view.state = pods.State.WAITING
            r.view.reason = "RunContainerError"
            r.view.message = str(e)
            r.next_start = time.monotonic() + 5.0

    async def _env_lookups(
        self, c: Mapping[str, Any]
    ) -> tuple[dict[str, Mapping[str, str] | None], dict[str, Mapping[str, str] | None]]:
        cms: dict[str, Mapping[str, str] | None] = {}
        secs: dict[str, Mapping[str, str] | None] = {}
        refs: list[tuple[str, str]] = []
        for src in c.get("envFrom") or []:
            if "configMapRef" in src:
                refs.append(("configmaps", src["configMapRef"].get("name", "")))
            if "secretRef" in src:
                refs.append(("secrets", src["secretRef"].get("name", "")))
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            if "configMapKeyRef" in vf:
                refs.append(("configmaps", vf["configMapKeyRef"].get("name", "")))
            if "secretKeyRef" in vf:
                refs.append(("secrets", vf["secretKeyRef"].get("name", "")))
        for kind, name in refs:
            store = secs if kind == "secrets" else cms
            if name in store:
                continue
            data = await self._fetch_data(kind, name)
            store[name] = (
                None if data is None else {k: v.decode("utf-8", "replace") for k, v in data.items()}
            )
        return cms, secs

    async def _start(self, r: ContainerRun) -> None:
        c = r.spec
        image = images.resolve(c.get("image", ""), self.k.cfg.venv)
        r.view.image_id = image.image_id
        facts = pods.PodFacts.of(self.pod, self.ip, self.k.cfg.ip)
        base = {
            **image.env(),
            "HOSTNAME": self.k.cfg.name if self.host_network else pods.pod_hostname(self.pod),
            "KUBERNETES_SERVICE_HOST": network.APISERVER_IP,
            "KUBERNETES_SERVICE_PORT": "6443",
            "KUBERNETES_SERVICE_PORT_HTTPS": "6443",
            "KUBERNETES_PORT": f"tcp://{network.APISERVER_IP}:6443",
            "KUBERNETES_PORT_6443_TCP": f"tcp://{network.APISERVER_IP}:6443",
            "KUBERNETES_PORT_6443_TCP_ADDR": network.APISERVER_IP,
            "KUBERNETES_PORT_6443_TCP_PORT": "6443",
            "KUBERNETES_PORT_6443_TCP_PROTO": "tcp",
        }
        # The run's marker (cluster.RUN_MARKER), inherited from the harness: it is how
        # the session's end finds any container process that outlived the run.
        if os.environ.get(RUN_MARKER):
            base[RUN_MARKER] = os.environ[RUN_MARKER]
        cms, secs = await self._env_lookups(c)
        env = pods.resolve_env(c, facts, base, cms.get, secs.get, self.k.cfg.capacity)
        argv = pods.container_argv(image.argv(c.get("command"), c.get("args")), env)
        mounts = [
            pods.Mount(os.path.join(self.dir, "etc", "hosts"), "/etc/hosts", False, True),
        ]
        if not (self.host_network and "ClusterFirst" not in self.pod["spec"].get("dnsPolicy", "")):
            resolv = os.path.join(self.dir, "etc", "resolv.conf")
            mounts.append(pods.Mount(resolv, "/etc/resolv.conf", False, True))
        for vm in c.get("volumeMounts") or []:
            vname = vm["name"]
            if vname not in self.volume_paths:
                raise volumes.VolumeError(f"volume {vname} is not set up")
            src = self.volume_paths[vname]
            if vm.get("subPath"):
                src = os.path.join(src, vm["subPath"])
                os.makedirs(src, exist_ok=True)
            ro = bool(vm.get("readOnly")) or vname in self.file_volumes
            mounts.append(pods.Mount(src, vm["mountPath"], ro))
        # The programs (the venv and the checkout installed into it) must stay visible
        # when a volume lands on a directory that holds them - an emptyDir at /tmp while
        # the checkout lives under /tmp - so they are bound back over the volume.
        for program_dir in (self.k.cfg.venv, str(PROJECT_ROOT)):
            if any(pods.under(program_dir, m.target) for m in mounts if not m.is_file):
                mounts.append(pods.Mount(program_dir, program_dir, True))
        stages = [os.path.join(d, r.name) for d in self.stage_dirs()]
        plan = pods.mount_plan(mounts, stages)
        hostname = self.k.cfg.name if self.host_network else pods.pod_hostname(self.pod)
        script = pods.wrapper_script(plan, hostname, c.get("workingDir") or image.spec.workdir)
        wrapper = ["unshare", "-m", "-u", "--propagation", "private", "sh", "-c", script]
        full = [*wrapper, f"zse2e-{r.name}", *argv]
        if self.netns:
            full = ["ip", "netns", "exec", self.netns, *full]
        proc = self._popen(r, full, argv, env)
        if r.view.terminated is not None:
            r.view.last = r.view.terminated
            r.view.terminated = None
        if r.view.last is not None or r.view.restart_count or r.started_mono:
            r.view.restart_count += 1
        r.proc = proc
        r.env = env
        r.view.pid = proc.pid
        r.pid_start = proc_start_time(proc.pid)
        r.view.state = pods.State.RUNNING
        r.view.reason, r.view.message = "", ""
        r.view.started_at = now_iso()
        r.started_mono = time.monotonic()
        self._arm_probes(r)
        self.save()
        log.info("container.started pod=%s container=%s pid=%d", self.key, r.name, proc.pid)
        await self.k.event(self.pod, "Normal", "Started", f"Started container {r.name}")

    def _popen(
        self, r: ContainerRun, full: list[str], argv: list[str], env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        """Spawn in a new session (own process group; survives the kubelet), output
        appended to the container's log file. Popen, not asyncio: an asyncio transport
        kills its child when the loop closes, and pods must outlive the kubelet."""
        logpath = os.path.join(self.log_dir, f"{r.name}.log")
        with open(logpath, "ab") as out:
            out.write(f"==== {now_iso()} start {r.name}: {argv!r}\n".encode())
            out.flush()
            return subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd="/",
            )

    def _arm_probes(self, r: ContainerRun) -> None:
        """Fresh probe trackers for a container run (a start, or an adoption: a restarted
        kubelet, like the real one, proves readiness again before reporting Ready)."""
        r.probes = {}
        if not r.init:
            for kind in pods.ProbeKind:
                if r.spec.get(kind.value):
                    spec = pods.ProbeSpec.of(r.spec[kind.value])
                    r.probes[kind] = pods.ProbeTracker.start(kind, spec, r.started_mono)
        self._update_started_ready(r)

    def _update_started_ready(self, r: ContainerRun) -> None:
        startup = r.probes.get(pods.ProbeKind.STARTUP)
        r.view.started = r.running() and (startup is None or startup.result)
        readiness = r.probes.get(pods.ProbeKind.READINESS)
        r.view.ready = r.view.started and (readiness is None or readiness.result)

    # ---- probes

    def _schedule_probes(self, r: ContainerRun) -> None:
        t = time.monotonic()
        # A startup probe gates the others until it has succeeded.
        startup = r.probes.get(pods.ProbeKind.STARTUP)
        gated = startup is not None and not startup.result
        for kind, tracker in r.probes.items():
            if gated and kind is not pods.ProbeKind.STARTUP:
                tracker.next_at = max(tracker.next_at, t + tracker.spec.initial_delay)
                continue
            if kind is pods.ProbeKind.STARTUP and startup is not None and startup.result:
                continue
            if kind in r.probing or not tracker.due(t):
                continue
            r.probing.add(kind)
            task = asyncio.create_task(self._probe(r, kind, tracker, r.view.pid))
            self.probe_tasks.add(task)
            task.add_done_callback(self.probe_tasks.discard)

    async def _probe(
        self, r: ContainerRun, kind: pods.ProbeKind, tracker: pods.ProbeTracker, pid: int
    ) -> None:
        try:
            ok, detail = await probe_once(tracker.spec, r, self.ip, pid, self.netns)
        finally:
            r.probing.discard(kind)
        if r.view.pid != pid or r.probes.get(kind) is not tracker:
            return  # the container restarted meanwhile
        changed = tracker.record(ok, time.monotonic())
        if not ok:
            log.info(
                "probe.failed pod=%s container=%s kind=%s %s", self.key, r.name, kind.name, detail
            )
        if changed and not tracker.result and kind is not pods.ProbeKind.READINESS:
            what = "Startup" if kind is pods.ProbeKind.STARTUP else "Liveness"
            await self.k.event(self.pod, "Warning", "Unhealthy", f"{what} probe failed: {detail}")
            await self.k.event(
                self.pod,
                "Normal",
                "Killing",
                f"Container {r.name} failed {what.lower()} probe, will be restarted",
            )
            grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
            await self._stop_container(r, grace)
        elif changed and kind is pods.ProbeKind.READINESS and not tracker.result:
            await self.k.event(
                self.pod, "Warning", "Unhealthy", f"Readiness probe failed: {detail}"
            )
        self._update_started_ready(r)
        self.wake.set()

    # ---- stopping

    async def _stop_container(self, r: ContainerRun, grace: float) -> None:
        pid = r.view.pid
        if not pid or r.exit_code() is not None:
            return
        kill_group(pid, signal.SIGTERM)
        for _ in range(int(max(grace, 0.0) * 10)):
            if r.exit_code() is not None:
                return
            await asyncio.sleep(0.1)
        kill_group(pid, signal.SIGKILL)
        for _ in range(200):
            if r.exit_code() is not None:
                return
            await asyncio.sleep(0.05)
        log.warning("container.unkillable pod=%s container=%s pid=%d", self.key, r.name, pid)

    async def _terminate(self) -> None:
        """Graceful deletion: SIGTERM every container's process group, SIGKILL after the
        grace period, tear down the network, report, and send the final DELETE."""
        meta = self.pod["metadata"]
        grace = 2.0 if self.force_gone else float(meta.get("deletionGracePeriodSeconds", 30))
        for task in list(self.probe_tasks):
            task.cancel()
        running = [r for r in self.inits + self.mains if r.running()]
        if running:
            names = ",".join(r.name for r in running)
            log.info("pod.killing pod=%s containers=%s grace=%s", self.key, names, grace)
            if not self.force_gone:
                await self.k.event(self.pod, "Normal", "Killing", f"Stopping container {names}")
        await asyncio.gather(*(self._stop_container(r, grace) for r in running))
        for r in running:
            code = r.exit_code()
            self._record_exit(r, 137 if code is None else code)
            r.done = True
        self.save()
        await self.cleanup()
        if not self.force_gone:
            await self._report()
            await self._final_delete()

    async def _final_delete(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"
        try:
            await retrying(lambda: self.k.api.delete(path, body))
            log.info("pod.deleted pod=%s", self.key)
        except ApiError as e:
            if e.status not in (404, 409):
                log.warning("pod.delete_failed pod=%s error=%s", self.key, e)

    def stage_dirs(self) -> list[str]:
        """Where sources are staged when a mount would hide them: the pod's own dir, or
        outside it when the pod mounts over the state dir (emptyDir on /tmp)."""
        return [
            os.path.join(self.dir, "stage"),
            os.path.join(STAGE_ROOT, self.uid),
            os.path.join("/var/tmp/zse2e-stage", self.uid),
        ]

    async def cleanup(self) -> None:
        """Release everything the pod held on this node (its logs stay)."""
        for d in self.stage_dirs()[1:]:
            await asyncio.to_thread(shutil.rmtree, d, True)
        if self.netns:
            await asyncio.to_thread(network.detach_pod, self.netns)
        self.k.ipam.release(self.uid)
        await asyncio.to_thread(shutil.rmtree, self.dir, True)

    async def kill_now(self) -> None:
        for r in self.inits + self.mains:
            if r.view.pid and r.exit_code() is None:
                kill_group(r.view.pid, signal.SIGKILL)
        await self.cleanup()

    # ---- status

    def status(self) -> dict[str, Any]:
        now = now_iso()
        containers = [r.view for r in self.mains]
        if self.message:
            for v in containers:
                if v.state is pods.State.WAITING and v.reason == "ContainerCreating":
                    v.message = self.message
        out: dict[str, Any] = {
            "phase": self._phase(),
            "hostIP": self.k.cfg.ip,
            "hostIPs": [{"ip": self.k.cfg.ip}],
            "startTime": self.start_time,
            "conditions": pods.pod_conditions(
                self.pod,
                sandbox_ready=self.sandbox_ready,
                initialized=self._initialized(),
                containers=containers,
                now=now,
            ),
            "containerStatuses": [v.status() for v in containers],
        }
        if self.inits:
            out["initContainerStatuses"] = [r.view.status() for r in self.inits]
        if self.ip:
            out["podIP"] = self.ip
            out["podIPs"] = [{"ip": self.ip}]
        return out

    async def _report(self) -> None:
        status = self.status()
        if status == self.last_status:
            return
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        try:
            updated = await self.k.api.patch(path, {"status": status}, STRATEGIC)
            self.last_status = status
            self.pod["status"] = updated.get("status", status)
        except ApiError as e:
            if e.status == 404:
                return
            log.warning("pod.status_failed pod=%s error=%s", self.key, e)
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("pod.status_failed pod=%s error=%r", self.key, e)


def _references(vol: Mapping[str, Any]) -> list[tuple[str, str]]:
    refs: list[tuple[str, str]] = []
    if "secret" in vol:
        refs.append(("secrets", vol["secret"].get("secretName", "")))
    if "configMap" in vol:
        refs.append(("configmaps", vol["configMap"].get("name", "")))
    for src in (vol.get("projected") or {}).get("sources") or []:
        if "secret" in src:
            refs.append(("secrets", src["secret"].get("name", "")))
        if "configMap" in src:
            refs.append(("configmaps", src["configMap"].get("name", "")))
    return refs


def _port(handler: Mapping[str, Any], container: Mapping[str, Any]) -> int:
    port = handler.get("port")
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise pods.ConfigError(f"port {port!r} not found in the container's ports")


async def probe_once(
    spec: pods.ProbeSpec, r: ContainerRun, pod_ip: str, pid: int, netns: str
) -> tuple[bool, str]:
    """Run one probe; (success, detail). httpGet/tcpSocket go to the pod IP from the
    kubelet's own namespace, exec runs inside the container's namespaces (nsenter)."""
    h = spec.handler
    try:
        async with asyncio.timeout(spec.timeout):
            if "httpGet" in h:
                g = h["httpGet"]
                scheme = str(g.get("scheme", "HTTP")).lower()
                host = g.get("host") or pod_ip
                url = f"{scheme}://{host}:{_port(g, r.spec)}{g.get('path', '/')}"
                headers = {x["name"]: x["value"] for x in g.get("httpHeaders") or []}
                headers.setdefault("User-Agent", f"kube-probe/{KUBELET_VERSION[1:5]}")
                conn = aiohttp.TCPConnector(ssl=False, force_close=True)
                async with (
                    aiohttp.ClientSession(connector=conn) as s,
                    s.get(url, headers=headers, allow_redirects=False) as resp,
                ):
                    await resp.read()
                    return (
                        200 <= resp.status < 400,
                        f"HTTP probe failed with statuscode: {resp.status}",
                    )
            if "tcpSocket" in h:
                t = h["tcpSocket"]
                _reader, writer = await asyncio.open_connection(
                    t.get("host") or pod_ip, _port(t, r.spec)
                )
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return True, ""
            if "exec" in h:
                argv = ["nsenter", "-t", str(pid), "-n", "-m", "-u", "--", *h["exec"]["command"]]
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    env=r.env or None,
                )
                try:
                    out, _ = await proc.communicate()
                except asyncio.CancelledError:
                    proc.kill()
                    await proc.wait()
                    raise
                return proc.returncode == 0, out.decode(errors="replace")[-200:]
            return False, f"unsupported probe handler {sorted(h)}"
    except TimeoutError:
        return False, f"timeout after {spec.timeout}s"
    except (OSError, aiohttp.ClientError, pods.ConfigError) as e:
        return False, repr(e)
    return False, "unreachable"


# ---------------------------------------------------------------- the node


class Kubelet:
    def __init__(self, cfg: NodeConfig, api: Api) -> None:
        self.cfg = cfg
        self.api = api
        os.makedirs(os.path.join(cfg.state_dir, "pods"), exist_ok=True)
        self.ipam = pods.IpAllocator(
            os.path.join(cfg.state_dir, "ipam.json"),
            network.pod_ip_range(cfg.zone_index, cfg.node_index),
        )
        self.workers: dict[str, PodWorker] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        self.node_uid = ""
        self.finished: set[str] = set()  # pods whose worker is done: never restarted

    # ---- node object

    def labels(self) -> dict[str, str]:
        return {
            "kubernetes.io/hostname": self.cfg.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": self.cfg.zone,
            "topology.kubernetes.io/region": "e2e",
        }

    def node_status(self) -> dict[str, Any]:
        now = now_iso()
        conds = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        ]
        return {
            "capacity": dict(self.cfg.capacity),
            "allocatable": dict(self.cfg.capacity),
            "addresses": [
                {"type": "InternalIP", "address": self.cfg.ip},
                {"type": "Hostname", "address": self.cfg.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": self.cfg.name,
                "systemUUID": self.cfg.name,
                "bootID": BOOT_ID,
                "kernelVersion": os.uname().release,
                "osImage": "zonestore e2e process kubelet",
                "containerRuntimeVersion": "proc://0.1",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": reason,
                    "message": f"process kubelet: {reason}",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": self._transition.setdefault(t, now),
                }
                for t, s, reason in conds
            ],
        }

    _transition: dict[str, str] = {}

    async def register(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.cfg.name, "labels": self.labels()},
            "spec": {},
        }
        try:
            node = await self.api.create("/api/v1/nodes", body)
            log.info("node.registered node=%s", self.cfg.name)
        except ApiError as e:
            if e.status != 409:
                raise
            node = await self.api.patch(
                f"/api/v1/nodes/{self.cfg.name}", {"metadata": {"labels": self.labels()}}
            )
        self.node_uid = node["metadata"]["uid"]
        await self.report_node()

    async def report_node(self) -> None:
        path = f"/api/v1/nodes/{self.cfg.name}/status"
        try:
            await self.api.patch(path, {"status": self.node_status()}, STRATEGIC)
        except ApiError as e:
            if e.status == 404:
                log.warning("node.missing node=%s: registering again", self.cfg.name)
                await self.register()
            else:
                raise

    async def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.cfg.name}"
        spec = {
            "holderIdentity": self.cfg.name,
            "leaseDurationSeconds": self.cfg.lease_seconds,
            "renewTime": micro_now(),
        }
        try:
            await self.api.patch(path, {"spec": spec})
        except ApiError as e:
            if e.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.cfg.name,
                    "namespace": "kube-node-lease",
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": self.cfg.name,
                            "uid": self.node_uid,
                        }
                    ],
                },
                "spec": spec,
            }
            await self.api.create(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body
            )

    async def _every(self, period: float, what: str, fn: Any) -> None:
        while True:
            try:
                await fn()
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as e:
                log.warning("%s.failed node=%s error=%s", what, self.cfg.name, e)
            await asyncio.sleep(period)

    async def event(self, pod: Mapping[str, Any], etype: str, reason: str, message: str) -> None:
        """Best effort: events help the scenario dumps, never block a pod."""
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": etype,
            "reason": reason,
            "message": message[:1000],
            "source": {"component": "kubelet", "host": self.cfg.name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.cfg.name,
            "firstTimestamp": now_iso(),
            "lastTimestamp": now_iso(),
            "count": 1,
        }
        try:
            async with asyncio.timeout(5):
                await self.api.create(f"/api/v1/namespaces/{meta['namespace']}/events", body)
        except (ApiError, aiohttp.ClientError, TimeoutError) as e:
            log.debug("event.failed error=%s", e)

    # ---- pods

    def _spawn(self, pod: dict[str, Any], state: Mapping[str, Any] | None = None) -> None:
        w = PodWorker(self, pod)
        if state is not None:
            w.adopt(state)
        self.workers[w.uid] = w
        self.tasks[w.uid] = asyncio.create_task(w.run(), name=f"pod-{w.key}")
        self.tasks[w.uid].add_done_callback(functools.partial(self._finished, w.uid))

    def _finished(self, uid: str, _task: object = None) -> None:
        self.workers.pop(uid, None)
        self.finished.add(uid)
        task = self.tasks.pop(uid, None)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("pod.worker_crashed uid=%s error=%r", uid, task.exception())

    def local_state(self) -> dict[str, dict[str, Any]]:
        out = {}
        root = os.path.join(self.cfg.state_dir, "pods")
        for uid in os.listdir(root):
            path = os.path.join(root, uid, "pod.json")
            if os.path.exists(path):
                with open(path) as f, contextlib.suppress(ValueError):
                    out[uid] = json.load(f)
            else:
                out[uid] = {"uid": uid}
        return out

    async def reconcile(self, listed: list[dict[str, Any]]) -> None:
        """After each (re)list: start workers for new pods, stop workers for pods that
        are gone; on the first list, also adopt or clean up what the state dir holds."""
        by_uid = {p["metadata"]["uid"]: p for p in listed}
        if self._first_list:
            self._first_list = False
            for uid, state in self.local_state().items():
                if uid in by_uid:
                    continue
                log.info("pod.orphan uid=%s name=%s: killing", uid, state.get("name"))
                await self._kill_orphan(uid, state)
            states = self.local_state()
            for uid, pod in by_uid.items():
                self._spawn(pod, states.get(uid))
            return
        for uid, w in list(self.workers.items()):
            if uid not in by_uid:
                w.gone()
        for uid, pod in by_uid.items():
            if uid in self.workers:
                self.workers[uid].update(pod)
            elif uid not in self.finished:
                self._spawn(pod)

    _first_list = True

    async def _kill_orphan(self, uid: str, state: Mapping[str, Any]) -> None:
        for c in (state.get("containers") or {}).values():
            pid, start = int(c.get("pid", 0)), str(c.get("start", ""))
            if alive(pid, start):
                kill_group(pid, signal.SIGKILL)
        netns = state.get("netns") or network.pod_netns_name(uid)
        await asyncio.to_thread(network.detach_pod, netns)
        self.ipam.release(uid)
        await asyncio.to_thread(shutil.rmtree, os.path.join(self.cfg.state_dir, "pods", uid), True)

    async def watch_pods(self) -> None:
        params = {"fieldSelector": f"spec.nodeName={self.cfg.name}"}
        async for etype, obj in self.api.watch("/api/v1/pods", params):
            if etype == "SYNC":
                await self.reconcile(list(obj.get("items") or []))
                continue
            uid = obj["metadata"]["uid"]
            if etype == "DELETED":
                if uid in self.workers:
                    self.workers[uid].gone()
            elif uid in self.workers:
                self.workers[uid].update(obj)
            elif uid not in self.finished:
                self._spawn(obj)

    async def run(self) -> None:
        await retrying(self.register, attempts=30, delay=0.5)
        period = max(self.cfg.lease_seconds / 4.0, 0.5)
        loops = [
            self._every(period, "lease", self.renew_lease),
            self._every(self.cfg.status_seconds, "node_status", self.report_node),
            self.watch_pods(),
        ]
        tasks = [asyncio.create_task(c) for c in loops]
        stop = asyncio.create_task(self.stopping.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in [*tasks, stop]:
                t.cancel()
            await asyncio.gather(*tasks, stop, return_exceptions=True)
            workers = list(self.workers.values())
            for task in self.tasks.values():
                task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            if self.cfg.kill_pods_on_exit:
                for w in workers:
                    await w.kill_now()
            log.info(
                "kubelet.stopped node=%s pods_left_running=%s",
                self.cfg.name,
                not self.cfg.kill_pods_on_exit,
            )


BOOT_ID = f"{os.getpid()}-{int(time.time())}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m zonestore_e2e.kubelet", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--node", required=True)
    p.add_argument("--zone", required=True)
    p.add_argument("--zone-index", type=int, required=True)
    p.add_argument("--node-index", type=int, required=True)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--venv", required=True)
    p.add_argument("--lease-seconds", type=int, default=10)
    p.add_argument("--status-seconds", type=float, default=10.0)
    p.add_argument("--kill-pods-on-exit", action="store_true")
    p.add_argument("--backoff-base", type=float, default=1.0)
    p.add_argument("--backoff-max", type=float, default=30.0)
    p.add_argument("--cpu", default="8")
    p.add_argument("--memory", default="32Gi")
    p.add_argument("--max-pods", default="110")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def config(args: argparse.Namespace) -> NodeConfig:
    return NodeConfig(
        name=args.node,
        zone=args.zone,
        zone_index=args.zone_index,
        node_index=args.node_index,
        state_dir=os.path.abspath(args.state_dir),
        venv=os.path.abspath(args.venv),
        lease_seconds=args.lease_seconds,
        status_seconds=args.status_seconds,
        kill_pods_on_exit=args.kill_pods_on_exit,
        backoff=pods.Backoff(base=args.backoff_base, cap=args.backoff_max),
        capacity={
            "cpu": args.cpu,
            "memory": args.memory,
            "pods": args.max_pods,
            "ephemeral-storage": "100Gi",
        },
    )


async def amain(args: argparse.Namespace) -> None:
    cfg = config(args)
    os.makedirs(cfg.state_dir, exist_ok=True)
    api = Api(args.kubeconfig, os.path.join(cfg.state_dir, "auth"))
    kubelet = Kubelet(cfg, api)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, kubelet.stopping.set)
    try:
        await kubelet.run()
    finally:
        await api.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"%(asctime)s {args.node} %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
