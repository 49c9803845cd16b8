"""Gather one Observation: the Datastore's pods, the cluster's nodes, its StatefulSets
and the Secrets spec.security uses (through the Kubernetes gateway), then every running
pod's /admin/status (through the admin client carrying the admin token from those
Secrets; concurrently, each with its own timeout). A node that does not answer is
simply absent from `statuses`: the planner decides what that means. A Secret that
cannot be read (other than not found) fails the pass: taking it for missing would
replace the admin token or the CA."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol, Self

from zonestore_operator.model.node import NodeStatus
from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import DatastoreSpec
from zonestore_operator.model.status import parse_time
from zonestore_operator.reconcile import credentials
from zonestore_operator.reconcile.kube import KubeGateway
from zonestore_operator.reconcile.observation import (
    Observation,
    PodObservation,
    StatefulSetObservation,
)
from zonestore_operator.resources import meta, security, statefulset


class StatusSource(Protocol):
    async def status(self, address: str) -> NodeStatus: ...

    def authorized(self, token: str | None) -> Self:
        """The same client, sending `Authorization: Bearer <token>`."""
        ...


def _ready(conditions: Any, kind: str) -> bool:
    for c in conditions or []:
        if isinstance(c, Mapping) and c.get("type") == kind:
            return c.get("status") == "True"
    return False


def _not_ready_since(conditions: Any) -> datetime | None:
    """When the Ready condition left True, for a node that is not Ready."""
    for c in conditions or []:
        if isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") != "True":
            return parse_time(c.get("lastTransitionTime"))
    return None


def pod_observation(ref: DatastoreRef, raw: Mapping[str, Any]) -> PodObservation | None:
    md = raw.get("metadata", {})
    labels = md.get("labels", {}) or {}
    zone = labels.get(meta.L_ZONE)
    name = md.get("name", "")
    if not zone:
        return None
    index = labels.get(meta.L_POD_INDEX) or name.rsplit("-", 1)[-1]
    status = raw.get("status", {}) or {}
    return PodObservation(
        name=name,
        zone=zone,
        ordinal=int(index) if str(index).isdigit() else 10_000,
        phase=str(status.get("phase", "Unknown")),
        ready=_ready(status.get("conditions"), "Ready"),
        deleting=bool(md.get("deletionTimestamp")),
        uid=md.get("uid"),
        node_name=(raw.get("spec", {}) or {}).get("nodeName"),
        ip=status.get("podIP"),
        role_label=labels.get(meta.L_ROLE),
        revision=labels.get("controller-revision-hash"),
        peer_tls=statefulset.runs_peer_tls(raw),
    )


async def read_secrets(
    kube: KubeGateway, ref: DatastoreRef, spec: DatastoreSpec
) -> dict[str, dict[str, bytes]]:
    names = credentials.secret_names(ref, spec)
    found = await asyncio.gather(*(kube.get_secret(ref.namespace, n) for n in names))
    return {
        name: security.decode_data(raw.get("data"))
        for name, raw in zip(names, found, strict=True)
        if raw is not None
    }


async def observe(
    kube: KubeGateway,
    admin: StatusSource,
    ref: DatastoreRef,
    spec: DatastoreSpec,
    operator_namespace: str | None = None,
) -> Observation:
    selector = meta.selector_string(ref)
    raw_pods, raw_nodes, raw_sets, secrets = await asyncio.gather(
        kube.list_pods(ref.namespace, selector),
        kube.list_nodes(),
        kube.list_statefulsets(ref.namespace, selector),
        read_secrets(kube, ref, spec),
    )
    admin = admin.authorized(credentials.admin_token(ref, secrets))
    pods = {p.name: p for p in (pod_observation(ref, r) for r in raw_pods) if p is not None}
    node_ready: dict[str, bool] = {}
    not_ready_since: dict[str, datetime] = {}
    zone_nodes: dict[str, list[str]] = {}
    for node in raw_nodes:
        name = node.get("metadata", {}).get("name", "")
        node_ready[name] = _ready(node.get("status", {}).get("conditions"), "Ready")
        if (since := _not_ready_since(node.get("status", {}).get("conditions"))) is not None:
            not_ready_since[name] = since
        zone = (node.get("metadata", {}).get("labels") or {}).get(spec.topology_key)
        if zone:
            zone_nodes.setdefault(zone, []).append(name)
    sets = {}
    for sts in raw_sets:
        zone = (sts.get("metadata", {}).get("labels") or {}).get(meta.L_ZONE)
        if zone:
            sets[zone] = StatefulSetObservation(
                zone=zone,
                replicas=int(sts.get("spec", {}).get("replicas", 0) or 0),
                update_revision=(sts.get("status") or {}).get("updateRevision"),
            )

    async def fetch(pod: PodObservation) -> tuple[str, NodeStatus | None]:
        try:
            return pod.name, await admin.status(f"{pod.ip}:{spec.ports.admin}")
        except Exception:  # unreachable, timed out, or malformed: absent
            return pod.name, None

    answers = await asyncio.gather(*(fetch(p) for p in pods.values() if p.running and p.ip))
    return Observation(
        pods=pods,
        node_ready=node_ready,
        node_not_ready_since=not_ready_since,
        zone_nodes={z: tuple(sorted(n)) for z, n in zone_nodes.items()},
        statefulsets=sets,
        statuses={name: s for name, s in answers if s is not None},
        secrets=secrets,
        operator_namespace=operator_namespace,
    )
