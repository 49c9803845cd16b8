"""All the objects a Datastore owns, in apply order (config and identity before the
workloads that reference them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import DatastoreSpec
from zonestore_operator.resources import config, monitoring, policy, security, services, statefulset


def desired_objects(
    ref: DatastoreRef,
    spec: DatastoreSpec,
    zone_replicas: Mapping[str, int],
    bootstrapped: bool,
    operator_namespace: str | None = None,
) -> list[dict[str, Any]]:
    """`zone_replicas` gives each zone's StatefulSet size (the planner's decision);
    zones missing from it get spec.replicasPerZone. The NetworkPolicy comes before the
    workloads so that no node pod starts unprotected. (Secrets and cert-manager
    Certificates are planned by reconcile.credentials: they depend on what exists.)"""
    network = (
        [security.network_policy(ref, spec, operator_namespace)]
        if spec.security.network_policy.enabled
        else []
    )
    monitors = [monitoring.pod_monitor(ref, spec)] if spec.monitoring.pod_monitor else []
    return [
        config.service_account(ref),
        config.configmap(ref, spec, bootstrapped),
        services.peers_service(ref, spec),
        services.client_service(ref, spec),
        services.leader_service(ref, spec),
        services.readonly_service(ref, spec),
        policy.pod_disruption_budget(ref, spec),
        *network,
        *(
            statefulset.statefulset(
                ref, spec, zone, zone_replicas.get(zone, spec.replicas_per_zone)
            )
            for zone in spec.zones
        ),
        *monitors,
    ]
