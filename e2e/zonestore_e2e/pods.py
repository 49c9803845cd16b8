"""The pure half of the process kubelet: pod spec in, decisions and status dicts out.

Owns: environment resolution (`env`, `valueFrom`, `envFrom`) and `$(VAR)` expansion,
the probe state machine, restart decisions and back-off, the pod phase and conditions,
container status dicts, the pod's /etc/hosts, the mount plan and the shell wrapper that
applies it, and the per-node pod IP allocator (the one piece that touches a file).

Must not import aiohttp or the kubelet: everything here is tested without a cluster.
Times are passed in (`now`: seconds, monotonic or wall as the caller documents); nothing
here reads a clock.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# ---------------------------------------------------------------- env and $(VAR)


class ConfigError(ValueError):
    """A container cannot be configured (missing ConfigMap key, bad fieldPath, ...);
    the container waits with reason CreateContainerConfigError."""

    reason = "CreateContainerConfigError"


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion (the kubelet's `expansion.Expand`): `$(NAME)` is
    replaced when NAME is defined and left verbatim when not; `$$` is an escaped `$`;
    any other `$` is literal."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "$" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:
                out.append(text[i:])
                break
            name = text[i + 2 : close]
            out.append(env.get(name, f"$({name})"))
            i = close + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


# A lookup returns an object's decoded data (str values), or None when it does not exist.
Lookup = Callable[[str], Mapping[str, str] | None]


@dataclasses.dataclass(frozen=True, slots=True)
class PodFacts:
    """What `fieldRef`s may read: the pod's metadata plus what the kubelet knows."""

    name: str
    namespace: str
    uid: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    node_name: str
    service_account: str
    pod_ip: str
    host_ip: str

    @classmethod
    def of(cls, pod: Mapping[str, Any], pod_ip: str, host_ip: str) -> PodFacts:
        meta = pod.get("metadata", {})
        spec = pod.get("spec", {})
        return cls(
            name=meta.get("name", ""),
            namespace=meta.get("namespace", "default"),
            uid=meta.get("uid", ""),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            node_name=spec.get("nodeName", ""),
            service_account=spec.get("serviceAccountName") or "default",
            pod_ip=pod_ip,
            host_ip=host_ip,
        )


_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['([^']*)'\]$")


def _format_map(m: Mapping[str, str]) -> str:
    return "\n".join(f'{k}="{v}"' for k, v in sorted(m.items()))


def field_ref(facts: PodFacts, path: str) -> str:
    """The downward API's `fieldRef.fieldPath` (env and volume forms)."""
    simple = {
        "metadata.name": facts.name,
        "metadata.namespace": facts.namespace,
        "metadata.uid": facts.uid,
        "spec.nodeName": facts.node_name,
        "spec.serviceAccountName": facts.service_account,
        "status.podIP": facts.pod_ip,
        "status.podIPs": facts.pod_ip,
        "status.hostIP": facts.host_ip,
        "status.hostIPs": facts.host_ip,
        "metadata.labels": _format_map(facts.labels),
        "metadata.annotations": _format_map(facts.annotations),
    }
    if path in simple:
        return simple[path]
    m = _SUBSCRIPT.match(path)
    if m:
        source = facts.labels if m.group(1) == "labels" else facts.annotations
        return source.get(m.group(2), "")
    raise ConfigError(f"unsupported fieldPath {path!r}")


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1,
    "m": 0.001,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(text: str) -> float:
    m = _QUANTITY.match(str(text).strip())
    if not m or m.group(2) not in _SUFFIX:
        raise ConfigError(f"unsupported quantity {text!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def resource_field_ref(
    container: Mapping[str, Any], ref: Mapping[str, Any], node_allocatable: Mapping[str, str]
) -> str:
    """`resourceFieldRef`: a limit falls back to the node's allocatable, as in Kubernetes;
    the result is rounded up to whole `divisor` units."""
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None:
        value = node_allocatable.get(name, "0") if kind == "limits" else "0"
    divisor = quantity(str(ref.get("divisor") or "1"))
    amount = quantity(str(value)) / divisor
    whole = int(amount)
    return str(whole if whole == amount else whole + 1)


def resolve_env(
    container: Mapping[str, Any],
    facts: PodFacts,
    base: Mapping[str, str],
    configmaps: Lookup,
    secrets: Lookup,
    node_allocatable: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment: `base` (image and kubelet variables), then `envFrom`
    in order, then `env` in order, each `value` expanded against what is defined so far."""
    env: dict[str, str] = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        ref = source.get("configMapRef") or source.get("secretRef")
        if ref is None:
            continue
        lookup = configmaps if "configMapRef" in source else secrets
        kind = "configmap" if "configMapRef" in source else "secret"
        data = lookup(ref.get("name", ""))
        if data is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{kind} "{ref.get("name")}" not found')
        for key, value in data.items():
            env[prefix + key] = value
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        vf = item["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_ref(facts, vf["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in vf:
            env[name] = resource_field_ref(
                container, vf["resourceFieldRef"], node_allocatable or {}
            )
        elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
            is_cm = "configMapKeyRef" in vf
            ref = vf["configMapKeyRef"] if is_cm else vf["secretKeyRef"]
            kind = "configmap" if is_cm else "secret"
            data = (configmaps if is_cm else secrets)(ref.get("name", ""))
            key = ref.get("key", "")
            if data is None or key not in data:
                if ref.get("optional"):
                    continue
                what = f'{kind} "{ref.get("name")}"'
                raise ConfigError(
                    f"{what} not found" if data is None else f"couldn't find key {key} in {what}"
                )
            env[name] = data[key]
        else:
            raise ConfigError(f"env {name}: unsupported valueFrom {sorted(vf)}")
    return env


def container_argv(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    return [expand(a, env) for a in argv]


# ---------------------------------------------------------------- probes


class ProbeKind(enum.Enum):
    STARTUP = "startupProbe"
    LIVENESS = "livenessProbe"
    READINESS = "readinessProbe"


@dataclasses.dataclass(frozen=True, slots=True)
class ProbeSpec:
    handler: Mapping[str, Any]  # the probe dict itself (httpGet/tcpSocket/exec/grpc)
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def of(cls, probe: Mapping[str, Any]) -> ProbeSpec:
        return cls(
            handler=probe,
            initial_delay=float(probe.get("initialDelaySeconds", 0)),
            period=float(probe.get("periodSeconds", 10)),
            timeout=float(probe.get("timeoutSeconds", 1)),
            success_threshold=int(probe.get("successThreshold", 1)),
            failure_threshold=int(probe.get("failureThreshold", 3)),
        )


@dataclasses.dataclass(slots=True)
class ProbeTracker:
    """One probe of one container run. `result` flips to True after `success_threshold`
    consecutive successes and to False after `failure_threshold` consecutive failures.
    Initial results are the kubelet's: readiness and startup start failed, liveness
    starts succeeded (a container is alive until proven otherwise)."""

    kind: ProbeKind
    spec: ProbeSpec
    next_at: float
    result: bool
    successes: int = 0
    failures: int = 0

    @classmethod
    def start(cls, kind: ProbeKind, spec: ProbeSpec, now: float) -> ProbeTracker:
        return cls(kind, spec, now + spec.initial_delay, kind is ProbeKind.LIVENESS)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, ok: bool, now: float) -> bool:
        """Fold one probe outcome in; returns True when `result` changed."""
        self.next_at = now + self.spec.period
        before = self.result
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= self.spec.success_threshold:
                self.result = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= self.spec.failure_threshold:
                self.result = False
        return self.result != before


# ---------------------------------------------------------------- restarts


class RestartPolicy(enum.Enum):
    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


def should_restart(policy: RestartPolicy, exit_code: int) -> bool:
    if policy is RestartPolicy.ALWAYS:
        return True
    if policy is RestartPolicy.ON_FAILURE:
        return exit_code != 0
    return False


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """CrashLoopBackOff: `base * 2**n` capped at `cap`; a run that lasted `reset` seconds
    forgets earlier crashes. (The kubelet's figures are 10 s / 300 s / 10 min; the e2e
    defaults are shorter so a scenario does not wait minutes for a restart.)"""

    base: float = 1.0
    cap: float = 30.0
    reset: float = 60.0

    def delay(self, crashes: int) -> float:
        if crashes <= 0:
            return 0.0
        return float(min(self.cap, self.base * 2 ** (crashes - 1)))


# ---------------------------------------------------------------- container status


class State(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    TERMINATED = "terminated"


@dataclasses.dataclass(slots=True)
class Terminated:
    exit_code: int
    reason: str
    started_at: str
    finished_at: str
    container_id: str
    message: str = ""
    signal: int = 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "containerID": self.container_id,
        }
        if self.message:
            d["message"] = self.message
        if self.signal:
            d["signal"] = self.signal
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Terminated:
        return cls(
            exit_code=int(d.get("exitCode", 0)),
            reason=str(d.get("reason", "")),
            started_at=str(d.get("startedAt", "")),
            finished_at=str(d.get("finishedAt", "")),
            container_id=str(d.get("containerID", "")),
            message=str(d.get("message", "")),
            signal=int(d.get("signal", 0)),
        )


def exit_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


@dataclasses.dataclass(slots=True)
class ContainerView:
    """The status-relevant facts about one container, as the kubelet tracks them."""

    name: str
    image: str
    image_id: str = ""
    state: State = State.WAITING
    reason: str = "ContainerCreating"
    message: str = ""
    pid: int = 0
    started_at: str = ""
    terminated: Terminated | None = None  # set when state is TERMINATED
    last: Terminated | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False

    @property
    def container_id(self) -> str:
        return f"proc://{self.pid}" if self.pid else ""

    def status(self) -> dict[str, Any]:
        state: dict[str, Any]
        if self.state is State.RUNNING:
            state = {"running": {"startedAt": self.started_at}}
        elif self.state is State.TERMINATED and self.terminated is not None:
            state = {"terminated": self.terminated.to_dict()}
        else:
            waiting: dict[str, Any] = {"reason": self.reason}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last.to_dict()} if self.last else {},
        }
        cid = self.container_id or (self.terminated.container_id if self.terminated else "")
        if cid:
            out["containerID"] = cid
        return out


def pod_phase(
    policy: RestartPolicy,
    initialized: bool,
    init_failed: bool,
    containers: Sequence[ContainerView],
) -> str:
    """The kubelet's phase rule, for the states this kubelet produces."""
    if init_failed:
        return "Failed"
    if not initialized:
        return "Pending"
    if any(c.state is State.RUNNING for c in containers):
        return "Running"
    if containers and all(c.state is State.TERMINATED for c in containers):
        codes = [c.terminated.exit_code if c.terminated else 0 for c in containers]
        if policy is RestartPolicy.ALWAYS:
            return "Running"
        if all(code == 0 for code in codes):
            return "Succeeded"
        return "Failed" if policy is RestartPolicy.NEVER else "Running"
    # Some container waits: Pending until anything has ever run, Running after.
    if any(c.restart_count > 0 or c.last is not None or c.terminated for c in containers):
        return "Running"
    return "Pending"


def rfc3339(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(
    previous: Sequence[Mapping[str, Any]],
    wanted: Mapping[str, bool],
    now: str,
    reasons: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Condition dicts for `wanted` (type -> status). `lastTransitionTime` changes only
    when the status does; conditions in `previous` that are not in `wanted` (PodScheduled,
    DisruptionTarget, readiness gates) are left alone by not being sent: the status
    patch is a strategic merge keyed on `type`."""
    prev = {c.get("type"): c for c in previous}
    out = []
    for ctype, ok in wanted.items():
        status = "True" if ok else "False"
        old = prev.get(ctype)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else None
        cond: dict[str, Any] = {
            "type": ctype,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": since or now,
        }
        reason = (reasons or {}).get(ctype)
        if reason and not ok:
            cond["reason"] = reason
        out.append(cond)
    return out


def readiness_gates_ok(pod: Mapping[str, Any]) -> bool:
    gates = [g.get("conditionType") for g in pod.get("spec", {}).get("readinessGates") or []]
    current = {
        c.get("type"): c.get("status") for c in pod.get("status", {}).get("conditions") or []
    }
    return all(current.get(g) == "True" for g in gates)


def pod_conditions(
    pod: Mapping[str, Any],
    *,
    sandbox_ready: bool,
    initialized: bool,
    containers: Sequence[ContainerView],
    now: str,
) -> list[dict[str, Any]]:
    containers_ready = bool(containers) and all(c.ready for c in containers)
    wanted = {
        "PodReadyToStartContainers": sandbox_ready,
        "Initialized": initialized,
        "ContainersReady": containers_ready,
        "Ready": containers_ready and readiness_gates_ok(pod),
    }
    reasons = {
        "Initialized": "ContainersNotInitialized",
        "ContainersReady": "ContainersNotReady",
        "Ready": "ContainersNotReady" if not containers_ready else "ReadinessGatesNotReady",
    }
    return conditions(pod.get("status", {}).get("conditions") or [], wanted, now, reasons)


# ---------------------------------------------------------------- /etc/hosts, mounts


def pod_hostname(pod: Mapping[str, Any]) -> str:
    spec = pod.get("spec", {})
    return str(spec.get("hostname") or pod["metadata"]["name"])[:63]


def hosts_file(pod: Mapping[str, Any], pod_ip: str, cluster_domain: str = "cluster.local") -> str:
    """The kubelet's managed /etc/hosts: localhost, the pod's own name (FQDN first when
    `subdomain` is set, as for StatefulSet pods), then `hostAliases`."""
    spec = pod.get("spec", {})
    hostname = pod_hostname(pod)
    lines = [
        "# Kubernetes-managed hosts file (zonestore e2e process kubelet).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    sub = spec.get("subdomain")
    if sub:
        ns = pod["metadata"].get("namespace", "default")
        lines.append(f"{pod_ip}\t{hostname}.{sub}.{ns}.svc.{cluster_domain}\t{hostname}")
    else:
        lines.append(f"{pod_ip}\t{hostname}")
    for alias in spec.get("hostAliases") or []:
        lines.append(f"{alias.get('ip')}\t" + "\t".join(alias.get("hostnames") or []))
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True, slots=True)
class Mount:
    source: str
    target: str
    read_only: bool = False
    is_file: bool = False


def under(path: str, parent: str) -> bool:
    parent = parent.rstrip("/") or "/"
    return path == parent or path.startswith(parent + "/") or parent == "/"


def mount_plan(mounts: Sequence[Mount], stages: Sequence[str]) -> list[Mount]:
    """Order the bind mounts so nothing is shadowed: parents before children, and when a
    target would hide a later mount's source (a volume at /tmp while the kubelet's state
    lives under /tmp), every source is first bound under a staging directory - the first
    of `stages` that lies under no target - and mounted from there."""
    ordered = sorted(mounts, key=lambda m: (m.target.rstrip("/").count("/"), m.target))
    shadowed = any(
        under(later.source, earlier.target)
        for i, earlier in enumerate(ordered)
        for later in ordered[i + 1 :]
    )
    if not shadowed:
        return ordered
    usable = [st for st in stages if not any(under(st, m.target) for m in ordered)]
    if not usable:
        raise ConfigError(f"the volume mounts hide every staging directory ({', '.join(stages)})")
    stage = usable[0]
    staged = [
        Mount(m.source, os.path.join(stage, str(i)), False, m.is_file)
        for i, m in enumerate(ordered)
    ]
    final = [
        Mount(os.path.join(stage, str(i)), m.target, m.read_only, m.is_file)
        for i, m in enumerate(ordered)
    ]
    return staged + final


def wrapper_script(plan: Sequence[Mount], hostname: str, workdir: str = "") -> str:
    """The `sh -c` run inside the pod's fresh mount and UTS namespaces: create mount
    points, bind the volumes (read-only where asked), set the hostname, then `exec "$@"`
    so the container's process keeps the wrapper's pid."""
    q = shlex.quote
    lines = ["set -e"]
    for m in plan:
        if m.is_file:
            lines.append(
                f"[ -e {q(m.target)} ] || {{ mkdir -p $(dirname {q(m.target)}); : > {q(m.target)}; }}"
            )
        else:
            lines.append(f"mkdir -p {q(m.target)}")
        lines.append(f"mount --bind {q(m.source)} {q(m.target)}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {q(m.target)}")
    lines.append(f"hostname {q(hostname)}")
    if workdir:
        lines.append(f"cd {q(workdir)}")
    lines.append('exec "$@"')
    return "\n".join(lines)


# ---------------------------------------------------------------- pod IPs


class IpAllocator:
    """Hands out this node's pod IPs (`pool`, from network.pod_ip_range) and remembers
    them in a JSON file, so a restarted kubelet keeps every running pod's address and
    never hands it to a second pod. One file per node; written atomically.

    Round-robin, like the host-local IPAM plugin: the next free address after the last
    one handed out, so a just-released address is not reused at once. Reusing it at once
    gives the new pod a new MAC behind an IP that neighbours still map to the old one;
    traffic to it vanishes until their ARP entries expire (~30 s, seen in an e2e run)."""

    def __init__(self, path: str, pool: Sequence[str]) -> None:
        self.path = path
        self.pool = list(pool)
        self.by_uid: dict[str, str] = {}
        self.last: str | None = None
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            if isinstance(saved.get("pods"), dict):
                self.by_uid = {str(k): str(v) for k, v in saved["pods"].items()}
                self.last = saved.get("last")
            else:  # the first format: uid -> ip only
                self.by_uid = {str(k): str(v) for k, v in saved.items()}

    def _save(self) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"pods": self.by_uid, "last": self.last}, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def get(self, uid: str) -> str | None:
        return self.by_uid.get(uid)

    def allocate(self, uid: str) -> str:
        if uid in self.by_uid:
            return self.by_uid[uid]
        used = set(self.by_uid.values())
        start = self.pool.index(self.last) + 1 if self.last in self.pool else 0
        for i in range(len(self.pool)):
            ip = self.pool[(start + i) % len(self.pool)]
            if ip not in used:
                self.by_uid[uid] = ip
                self.last = ip
                self._save()
                return ip
        raise ConfigError(f"no free pod IP on this node ({len(self.pool)} in use)")

    def release(self, uid: str) -> None:
        if self.by_uid.pop(uid, None) is not None:
            self._save()
