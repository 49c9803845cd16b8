"""The facts one reconcile pass observes, as frozen values; produced by `observe`,
consumed by the pure `plan`. Nothing here does I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from zonestore_operator.model.node import NodeStatus


@dataclass(frozen=True, slots=True)
class PodObservation:
    name: str
    zone: str
    ordinal: int
    phase: str = "Running"  # Pending, Running, Succeeded, Failed, Unknown
    ready: bool = True  # the Ready condition (readiness probe on /readyz)
    deleting: bool = False  # metadata.deletionTimestamp is set
    uid: str | None = None  # metadata.uid: a forced delete is conditional on it
    node_name: str | None = None
    ip: str | None = None
    role_label: str | None = None  # current zonestore.io/role label
    revision: str | None = None  # controller-revision-hash label
    peer_tls: bool | None = None  # started with --peer-tls-*; None: unknown

    @property
    def running(self) -> bool:
        return self.phase == "Running" and not self.deleting


@dataclass(frozen=True, slots=True)
class StatefulSetObservation:
    zone: str
    replicas: int
    update_revision: str | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    pods: Mapping[str, PodObservation] = field(default_factory=dict)
    # Kubernetes node name -> Ready condition; nodes not listed are unknown.
    node_ready: Mapping[str, bool] = field(default_factory=dict)
    # Node name -> when its Ready condition last left True (lastTransitionTime), for the
    # nodes whose Ready is not True; the API server's record, not the operator's clock.
    node_not_ready_since: Mapping[str, datetime] = field(default_factory=dict)
    # Zone -> names of the Kubernetes nodes labelled with it.
    zone_nodes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    statefulsets: Mapping[str, StatefulSetObservation] = field(default_factory=dict)
    # Pod name -> its /admin/status; pods whose admin API did not answer are absent.
    statuses: Mapping[str, NodeStatus] = field(default_factory=dict)
    # Secret name -> decoded data, for the Secrets spec.security uses; absent: not found.
    secrets: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)
    # Where the operator runs (for the NetworkPolicy); None when it does not know.
    operator_namespace: str | None = None
