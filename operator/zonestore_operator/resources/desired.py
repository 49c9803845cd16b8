"""All the objects a Datastore owns, in apply order (config and identity before the
workloads that reference them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import DatastoreSpec
from zonestore_operator.resources import config, policy, services, statefulset


def desired_objects(
    ref: DatastoreRef,
    spec: DatastoreSpec,
    zone_replicas: Mapping[str, int],
    bootstrapped: bool,
) -> list[dict[str, Any]]:
    """`zone_replicas` gives each zone's StatefulSet size (the planner's decision);
    zones missing from it get spec.replicasPerZone."""
    return [
        config.service_account(ref),
        config.configmap(ref, spec, bootstrapped),
        services.peers_service(ref, spec),
        services.client_service(ref, spec),
        services.leader_service(ref, spec),
        services.readonly_service(ref, spec),
        policy.pod_disruption_budget(ref, spec),
        *(
            statefulset.statefulset(
                ref, spec, zone, zone_replicas.get(zone, spec.replicas_per_zone)
            )
            for zone in spec.zones
        ),
    ]
