"""What a failed scenario prints: the namespace's objects in brief, its events, and the
last lines of each of its pods' container logs (kept by the process kubelets)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zonestore_e2e.cluster import Cluster

GROUP, VERSION, PLURAL = "zonestore.io", "v1alpha1", "datastores"


def _section(title: str, body: str) -> str:
    return f"\n===== {title} =====\n{body}"


def dump_namespace(cluster: Cluster, namespace: str, log_lines: int = 40) -> str:
    from kubernetes import client

    out: list[str] = []
    try:
        with cluster.api() as api:
            core = client.CoreV1Api(api)
            apps = client.AppsV1Api(api)
            custom = client.CustomObjectsApi(api)
            try:
                ds: Any = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
                for item in ds.get("items", []):
                    out.append(
                        _section(
                            f"Datastore {item['metadata']['name']}",
                            json.dumps(
                                {"spec": item.get("spec"), "status": item.get("status")},
                                indent=1,
                                default=str,
                            )[:6000],
                        )
                    )
            except client.ApiException as exc:
                out.append(_section("Datastores", f"(list failed: {exc.status})"))
            sts: list[Any] = apps.list_namespaced_stateful_set(namespace).items
            out.append(
                _section(
                    "StatefulSets",
                    "\n".join(
                        f"{s.metadata.name} replicas={s.spec.replicas} ready={s.status.ready_replicas}"
                        for s in sts
                    ),
                )
            )
            pods: list[Any] = core.list_namespaced_pod(namespace).items
            lines = []
            for p in pods:
                conds = ",".join(f"{c.type}={c.status}" for c in p.status.conditions or [])
                lines.append(
                    f"{p.metadata.name} node={p.spec.node_name} phase={p.status.phase} "
                    f"ip={p.status.pod_ip} deleting={p.metadata.deletion_timestamp is not None} "
                    f"{conds} reason={p.status.reason}"
                )
            out.append(_section("Pods", "\n".join(lines)))
            pvcs: list[Any] = core.list_namespaced_persistent_volume_claim(namespace).items
            out.append(
                _section(
                    "PVCs",
                    "\n".join(
                        f"{c.metadata.name} {c.status.phase} {c.spec.volume_name}" for c in pvcs
                    ),
                )
            )
            events: list[Any] = core.list_namespaced_event(namespace).items
            events.sort(key=lambda e: str(e.last_timestamp or e.event_time or ""))
            out.append(
                _section(
                    "Events",
                    "\n".join(
                        f"{e.last_timestamp or e.event_time} {e.type} {e.reason} "
                        f"{e.involved_object.kind}/{e.involved_object.name}: {e.message}"
                        for e in events[-60:]
                    ),
                )
            )
            for p in pods:
                out.append(_pod_logs(cluster, p.metadata.name, log_lines))
    except Exception as exc:  # diagnostics must never hide the real failure
        out.append(_section("dump failed", f"{type(exc).__name__}: {exc}"))
    return "\n".join(out)


def _pod_logs(cluster: Cluster, pod: str, lines: int) -> str:
    found: list[Any] = []
    nodes = cluster.workdir / "nodes"
    if nodes.exists():
        found = sorted(p for p in nodes.rglob("*.log") if pod in str(p))
    parts = []
    for path in found[-3:]:
        try:
            tail = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            tail = "(unreadable)"
        parts.append(_section(f"log {path}", tail))
    return "\n".join(parts) or _section(f"log {pod}", "(none found)")
