"""The chart, rendered with default and non-default values, judged by the real API server:
every object passes server-side apply in dry-run with strict field validation, including
the optional ServiceMonitor, PodMonitor and PrometheusRule (against the Prometheus
Operator's own CRDs, generated from its Go API types by e2e/build-monitoring-crds.sh).
The release installed for the session (conftest) is the default values applied for real."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from zonestore_e2e.cluster import ROOT, Cluster, wait_for
from zonestore_e2e.datastores import DatastoreHandle, manifest
from zonestore_e2e.install import CHART, HELM, OPERATOR_NS, RELEASE, helm

MONITORING_CRDS = Path(
    os.environ.get("ZSE2E_MONITORING_CRDS", ROOT / ".cache" / "k8s" / "monitoring-crds")
)
NAMESPACE = "chart-dry-run"

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "monitoring": {
        "monitoring": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
            "podMonitor": {"enabled": True, "interval": "30s"},
            "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
            "dashboards": {"enabled": True, "namespace": "monitoring"},
        }
    },
    "namespaced": {"watchNamespace": "shop", "rbac": {"create": True}},
    "custom": {
        "replicaCount": 2,
        "reconcileIntervalSeconds": 30,
        "verbose": True,
        "certManager": {"enabled": True},
        "serviceAccount": {"name": "zs-op", "annotations": {"example.com/role": "op"}},
        "podLabels": {"team": "platform"},
        "podAnnotations": {"example.com/owner": "platform"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "",
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
    },
}


@pytest.fixture(scope="module")
def monitoring_crds(cluster: Cluster) -> list[str]:
    files = sorted(MONITORING_CRDS.glob("*.yaml"))
    if not files:
        pytest.fail(f"no CRDs in {MONITORING_CRDS}: run `make control-plane`", pytrace=False)
    names = []
    for path in files:
        crd = yaml.safe_load(path.read_text())
        status, body = cluster.apply(crd)
        assert status in (200, 201), f"{path.name}: {status} {body}"
        names.append(crd["metadata"]["name"])

    def established() -> bool:
        for name in names:
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            _, crd = cluster.request("GET", path)
            conds = {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}
            if conds.get("Established") != "True":
                return False
        return True

    wait_for("Prometheus Operator CRDs established", established, 60)
    for ns in (NAMESPACE, "monitoring", "shop"):
        cluster.request(
            "POST", "/api/v1/namespaces", {"kind": "Namespace", "metadata": {"name": ns}}
        )
    return names


def _render(values: dict[str, Any], tmp: Path, cluster_version: str) -> list[dict[str, Any]]:
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    argv = [HELM, "template", "zs", str(CHART), "--namespace", NAMESPACE, "-f", str(path)]
    proc = subprocess.run(
        [*argv, "--kube-version", cluster_version],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_chart_passes_strict_server_side_dry_run(
    cluster: Cluster, monitoring_crds: list[str], name: str, tmp_path: Path
) -> None:
    _, version = cluster.request("GET", "/version")
    docs = _render(VALUE_SETS[name], tmp_path, version["gitVersion"])
    kinds = sorted({d["kind"] for d in docs})
    assert {"Deployment", "ServiceAccount", "Service"} <= set(kinds), kinds
    if name == "monitoring":
        assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} <= set(kinds)
    refused = []
    for doc in docs:
        doc.setdefault("metadata", {})
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
            doc["metadata"].setdefault("namespace", NAMESPACE)
        status, body = cluster.apply(doc, dry_run=True)
        if status not in (200, 201):
            message = body.get("message") if isinstance(body, dict) else body
            refused.append(f"{doc['kind']}/{doc['metadata']['name']}: {status} {message}")
    assert not refused, "\n".join(refused)


def test_datastore_pod_monitor_switch(
    cluster: Cluster, monitoring_crds: list[str], namespace: str
) -> None:
    """spec.monitoring.podMonitor: the operator, granted podmonitors by the chart's
    monitoring.datastorePodMonitors, creates a PodMonitor owned by the Datastore. The
    Datastore names zones no Node has: only its objects matter here, not its pods."""
    proc = helm(
        cluster,
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        OPERATOR_NS,
        "--reuse-values",
        "--set",
        "monitoring.datastorePodMonitors.enabled=true",
        "--wait",
        "--timeout",
        "120s",
    )
    assert proc.returncode == 0, proc.stderr
    ds = DatastoreHandle(cluster, namespace, "watched")
    ds.create(
        manifest(
            "watched",
            namespace,
            zones=["nowhere-1", "nowhere-2", "nowhere-3"],
            monitoring={"podMonitor": True},
        )
    )
    path = f"/apis/monitoring.coreos.com/v1/namespaces/{namespace}/podmonitors/watched"

    def created() -> dict[str, Any] | None:
        status, body = cluster.request("GET", path)
        return body if status == 200 else None

    monitor = wait_for("the Datastore's PodMonitor", created, 60)
    owner = monitor["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Datastore", "watched")
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "admin"
