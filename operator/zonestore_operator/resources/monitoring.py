"""The PodMonitor a Datastore asks for with spec.monitoring.podMonitor (Prometheus
Operator, monitoring.coreos.com/v1): its own node pods, the admin port's /metrics, and
the labels the alert rules and the dashboard group by — job="zonestore", datastore =
the Datastore's name, zone = the pod's zone — the same as the chart's cluster-wide
PodMonitor (templates/podmonitor.yaml), so either way the series look alike.

The operator may create it only where the chart granted podmonitors
(monitoring.datastorePodMonitors.enabled), and the Prometheus Operator's CRDs must exist.
"""

from __future__ import annotations

from typing import Any

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import DatastoreSpec
from zonestore_operator.resources import meta

API_VERSION = "monitoring.coreos.com/v1"
JOB = "zonestore"


def pod_monitor(ref: DatastoreRef, spec: DatastoreSpec) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "PodMonitor",
        "metadata": meta.object_meta(ref, ref.name, meta.COMPONENT_NODE),
        "spec": {
            "selector": {"matchLabels": meta.selector_labels(ref)},
            "podMetricsEndpoints": [
                {
                    "port": "admin",
                    "path": "/metrics",
                    "relabelings": [
                        {"action": "replace", "targetLabel": "job", "replacement": JOB},
                        {
                            "action": "replace",
                            "sourceLabels": [
                                "__meta_kubernetes_pod_label_app_kubernetes_io_instance"
                            ],
                            "targetLabel": "datastore",
                        },
                        {
                            "action": "replace",
                            "sourceLabels": ["__meta_kubernetes_pod_label_zonestore_io_zone"],
                            "targetLabel": "zone",
                        },
                    ],
                }
            ],
        },
    }
