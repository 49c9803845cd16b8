"""The Helm chart (charts/zonestore-operator): it lints, renders with default and
non-default values, and what it renders agrees with the operator's code — the RBAC rules
are exactly the API calls the operator makes, the monitors select the labels the
builders put on pods, the environment is what the operator reads, and the CRD is the
repository's crds/datastore.yaml byte for byte.

No Kubernetes schema validator is installed (kubeconform needs schemas from the network),
so `test_rendered_manifests_are_structurally_sound` checks the shape that matters here.
"""

from __future__ import annotations

import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import chartkit
import pytest
import yaml
from chartkit import CHART, REPO, by_kind, one, render

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import parse_spec
from zonestore_operator.model.status import CertificatesStatus
from zonestore_operator.reconcile import kube
from zonestore_operator.resources import meta, statefulset
from zonestore_operator.resources.desired import desired_objects

MONITORING_ON = {
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "podMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "prom"},
            "runbookUrl": "https://docs.example.com/zonestore/runbooks.md",
        },
        "dashboards": {"enabled": True, "namespace": "grafana"},
    }
}
NAMESPACED = {"watchNamespace": "dbs", "replicaCount": 2}
CUSTOM = {
    "image": {"repository": "registry.example.com/zs", "tag": "9.9.9", "pullPolicy": "Always"},
    "resources": {
        "requests": {"cpu": "250m", "memory": "200Mi"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    },
    "metrics": {"port": 9400},
    "health": {"port": 8400},
    "reconcileIntervalSeconds": 30,
    "verbose": True,
    "peering": {"enabled": False},
    "serviceAccount": {"name": "zs-op", "annotations": {"team": "db"}},
    "podLabels": {"team": "db"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
}
VALUE_SETS = {
    "default": {},
    "monitoring": MONITORING_ON,
    "namespaced": NAMESPACED,
    "custom": CUSTOM,
}

REF = DatastoreRef(name="orders", namespace="shop", uid="uid-1")
SPEC = parse_spec({"zones": ["zone-a", "zone-b", "zone-c"]})
T0 = datetime(2030, 1, 1, tzinfo=UTC)

# (apiGroup, resource) -> verbs, for the namespaced part of the operator's rules.
NAMESPACED_RULES = {
    ("zonestore.io", "datastores"): {"get", "list", "watch", "patch"},
    ("zonestore.io", "datastores/status"): {"patch"},
    ("zonestore.io", "datastores/finalizers"): {"update"},
    ("zonestore.io", "datastorebackups"): {"get", "list", "watch", "patch", "create", "delete"},
    ("zonestore.io", "datastorebackups/status"): {"patch"},
    ("zonestore.io", "scheduleddatastorebackups"): {"get", "list", "watch", "patch"},
    ("zonestore.io", "scheduleddatastorebackups/status"): {"patch"},
    ("", "pods"): {"list", "watch", "patch", "delete"},
    ("apps", "statefulsets"): {"list", "create", "patch"},
    ("", "services"): {"create", "patch"},
    ("", "configmaps"): {"create", "patch"},
    ("", "serviceaccounts"): {"create", "patch"},
    ("policy", "poddisruptionbudgets"): {"create", "patch"},
    ("", "events"): {"create"},
    ("", "secrets"): {"get", "create", "patch"},
    ("networking.k8s.io", "networkpolicies"): {"create", "patch"},
}
CERT_MANAGER_RULES = {("cert-manager.io", "certificates"): {"create", "patch"}}
CLUSTER_RULES = {
    ("", "nodes"): {"list"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}


def _rules(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def _granted(docs: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        for key, verbs in _rules(role).items():
            out.setdefault(key, set()).update(verbs)
    return out


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [container] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


# Lint and render --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_chart_lints_cleanly_with_each_value_set(name: str) -> None:
    helm = chartkit.tool("helm")
    result = chartkit.run([helm, "lint", CHART, "--strict", *chartkit.helm_args(VALUE_SETS[name])])
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_manifests_are_structurally_sound(name: str) -> None:
    dns_label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    docs = render(VALUE_SETS[name])
    cluster_scoped = {
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterKopfPeering",
    }
    seen = set()
    for doc in docs:
        assert (isinstance(doc.get("apiVersion"), str) and "/" in doc["apiVersion"]) or doc[
            "apiVersion"
        ] == "v1", doc
        md = doc["metadata"]
        name_ = md["name"]
        assert len(name_) <= 63 and re.match(r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$", name_), name_
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in md, name_
        else:
            assert dns_label.match(md["namespace"]), name_
        key = (doc["kind"], md.get("namespace"), name_)
        assert key not in seen, f"rendered twice: {key}"
        seen.add(key)
        for k, v in (md.get("labels") or {}).items():
            assert isinstance(v, str) and len(v) <= 63, (name_, k, v)


def test_default_render_has_the_operator_and_no_monitoring_objects() -> None:
    kinds = sorted(d["kind"] for d in render())
    assert kinds == sorted(
        [
            "CustomResourceDefinition",  # datastores.zonestore.io
            "CustomResourceDefinition",  # datastorebackups.zonestore.io
            "CustomResourceDefinition",  # scheduleddatastorebackups.zonestore.io
            "CustomResourceDefinition",  # clusterkopfpeerings.kopf.dev
            "CustomResourceDefinition",  # kopfpeerings.kopf.dev
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
            "ClusterKopfPeering",
            "Pod",  # helm test hook
        ]
    )


def test_monitoring_values_add_monitors_rules_and_dashboard() -> None:
    docs = render(MONITORING_ON)
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert one(docs, kind)["metadata"]["labels"]["release"] == "prom"
    dashboards = one(docs, "ConfigMap")
    assert dashboards["metadata"]["namespace"] == "grafana"
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_unknown_values_are_rejected_by_the_schema() -> None:
    helm = chartkit.tool("helm")
    for bad in (
        {"replicas": 2},
        {"monitoring": {"podMonitor": {"enable": True}}},
        {"image": {"tag": 1.0}},
        {"metrics": {"port": 0}},
        {"monitoring": {"serviceMonitor": {"interval": "often"}}},
    ):
        result = chartkit.run(
            [helm, "template", "zs", CHART, *chartkit.helm_args(bad)], check=False
        )
        assert result.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in result.stderr, bad


def test_several_replicas_without_peering_are_refused() -> None:
    values = {"replicaCount": 2, "peering": {"enabled": False}}
    result = chartkit.run(
        [chartkit.tool("helm"), "template", "zs", CHART, *chartkit.helm_args(values)],
        check=False,
    )
    assert result.returncode != 0
    assert "needs peering.enabled" in result.stderr


# CRDs ----------------------------------------------------------------------------


def test_chart_crd_is_byte_identical_to_the_repository_crd() -> None:
    assert (CHART / "crds" / "datastore.yaml").read_bytes() == (
        REPO / "crds" / "datastore.yaml"
    ).read_bytes(), "copy crds/datastore.yaml to charts/zonestore-operator/crds/"


def test_chart_backup_crds_are_byte_identical_to_the_repository_ones() -> None:
    assert (CHART / "crds" / "backups.yaml").read_bytes() == (
        REPO / "crds" / "backups.yaml"
    ).read_bytes(), "copy crds/backups.yaml to charts/zonestore-operator/crds/"


def test_kopf_peering_crds_match_the_peering_the_chart_creates() -> None:
    crds = {
        d["spec"]["names"]["kind"]: d
        for d in yaml.safe_load_all((CHART / "crds" / "kopf-peerings.yaml").read_text())
    }
    assert crds["ClusterKopfPeering"]["spec"]["scope"] == "Cluster"
    assert crds["KopfPeering"]["spec"]["scope"] == "Namespaced"
    for crd in crds.values():
        assert crd["spec"]["group"] == "kopf.dev"
        [version] = crd["spec"]["versions"]
        assert version["name"] == "v1"
        assert "subresources" not in version  # kopf patches status on the main resource
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True
    assert one(render(), "ClusterKopfPeering")["apiVersion"] == "kopf.dev/v1"
    peering = one(render(NAMESPACED), "KopfPeering")
    assert peering["metadata"]["namespace"] == "dbs"


def test_peering_name_is_the_one_the_operator_joins() -> None:
    source = (REPO / "operator" / "zonestore_operator" / "__main__.py").read_text()
    [name] = re.findall(r'peering_name="([^"]+)"', source)
    assert one(render(), "ClusterKopfPeering")["metadata"]["name"] == name


def test_example_datastore_fits_the_crd(crd_schema: dict) -> None:
    import crdschema

    manifest = yaml.safe_load((CHART / "examples" / "datastore.yaml").read_text())
    assert manifest["kind"] == "Datastore"
    defaulted = crdschema.apply_defaults(crd_schema, manifest)
    assert crdschema.validate(crd_schema, defaulted) == []
    parse_spec(defaulted["spec"], manifest["metadata"]["name"])


# The operator Deployment ---------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_operator_pod_runs_locked_down(name: str) -> None:
    docs = render(VALUE_SETS[name])
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = _container(docs)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    resources = _container(docs)["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    # The only writable path is an emptyDir at /tmp.
    [mount] = _container(docs)["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    [volume] = pod["volumes"]
    assert "emptyDir" in volume


@pytest.mark.parametrize("name", ["default", "custom"])
def test_probes_hit_kopfs_liveness_endpoint_where_the_operator_serves_it(
    name: str,
) -> None:
    values = VALUE_SETS[name]
    container = _container(render(values))
    env = _env(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    health_port = values.get("health", {}).get("port", 8080)
    assert env["ZONESTORE_OPERATOR_LIVENESS"] == f"http://0.0.0.0:{health_port}/healthz"
    assert ports["health"] == health_port
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert int(env["ZONESTORE_OPERATOR_METRICS_PORT"]) == ports["metrics"]


def test_every_environment_variable_the_chart_sets_is_read_by_the_operator() -> None:
    sources = "".join(
        p.read_text() for p in (REPO / "operator" / "zonestore_operator").rglob("*.py")
    )
    read = set(re.findall(r'os\.environ\.get\(\s*"(ZONESTORE_OPERATOR_[A-Z_]+)"', sources))
    values = {**CUSTOM, "peering": {"enabled": False}, "watchNamespace": "dbs"}
    env = _env(_container(render(values)))
    ours = {k for k in env if k.startswith("ZONESTORE_")}
    assert ours <= read, ours - read
    assert ours == {
        "ZONESTORE_OPERATOR_LIVENESS",
        "ZONESTORE_OPERATOR_METRICS_PORT",
        "ZONESTORE_OPERATOR_INTERVAL",
        "ZONESTORE_OPERATOR_NAMESPACE",
        "ZONESTORE_OPERATOR_POD_NAMESPACE",
        "ZONESTORE_OPERATOR_STANDALONE",
        "ZONESTORE_OPERATOR_VERBOSE",
    }
    assert env["ZONESTORE_OPERATOR_NAMESPACE"] == "dbs"
    assert env["ZONESTORE_OPERATOR_STANDALONE"] == "1"


def test_custom_values_reach_the_deployment() -> None:
    docs = render(CUSTOM)
    deployment = one(docs, "Deployment")
    container = _container(docs)
    assert container["image"] == "registry.example.com/zs:9.9.9"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == CUSTOM["resources"]
    assert container["command"] == ["python", "-m", "zonestore_operator"]
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "db"
    assert pod["spec"]["serviceAccountName"] == "zs-op"
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # standalone
    assert _env(container)["ZONESTORE_OPERATOR_INTERVAL"] == "30"
    assert not by_kind(docs, "ClusterKopfPeering")
    service = one(docs, "Service")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "metrics": 9400,
        "health": 8400,
    }


def test_default_image_is_the_chart_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert _container(render())["image"] == f"zonestore/zonestore:{chart['appVersion']}"


# RBAC ----------------------------------------------------------------------------


def test_cluster_wide_rbac_grants_exactly_the_calls_the_operator_makes() -> None:
    docs = render()
    assert not by_kind(docs, "Role")
    expected = {
        **NAMESPACED_RULES,
        **CLUSTER_RULES,
        ("kopf.dev", "clusterkopfpeerings"): {"list", "watch", "patch"},
    }
    assert _granted(docs) == expected
    sa = one(docs, "ServiceAccount")["metadata"]
    for binding in by_kind(docs, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["name"], "namespace": "ops"}
        ]


def test_namespaced_rbac_puts_datastore_rules_in_a_role_of_the_watched_namespace() -> None:
    docs = render(NAMESPACED)
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == "dbs"
    assert _rules(role) == {
        **NAMESPACED_RULES,
        ("kopf.dev", "kopfpeerings"): {"list", "watch", "patch"},
    }
    [cluster_role] = by_kind(docs, "ClusterRole")
    assert _rules(cluster_role) == CLUSTER_RULES
    binding = one(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "dbs"
    assert binding["subjects"][0]["namespace"] == "ops"


def test_nothing_grants_wildcards_secret_listing_or_escalation() -> None:
    for values in VALUE_SETS.values():
        for (group, resource), verbs in _granted(render(values)).items():
            assert "*" not in verbs and "*" not in (group, resource)
            assert resource not in ("roles", "clusterroles", "rolebindings")
            assert not verbs & {"escalate", "bind", "impersonate", "deletecollection"}
            if resource == "secrets":  # read by name only: no list, no watch, no delete
                assert verbs == {"get", "create", "patch"}


def test_cert_manager_certificates_are_granted_only_when_enabled() -> None:
    assert ("cert-manager.io", "certificates") not in _granted(render())
    granted = _granted(render({"certManager": {"enabled": True}}))
    assert granted[("cert-manager.io", "certificates")] == {"create", "patch"}
    role = one(render({**NAMESPACED, "certManager": {"enabled": True}}), "Role")
    assert _rules(role) == {
        **NAMESPACED_RULES,
        **CERT_MANAGER_RULES,
        ("kopf.dev", "kopfpeerings"): {"list", "watch", "patch"},
    }


def test_datastore_pod_monitors_are_granted_only_when_enabled() -> None:
    assert ("monitoring.coreos.com", "podmonitors") not in _granted(render())
    values = {"monitoring": {"datastorePodMonitors": {"enabled": True}}}
    granted = _granted(render(values))
    assert granted[("monitoring.coreos.com", "podmonitors")] == {"create", "patch"}
    role = one(render({**NAMESPACED, **values}), "Role")
    assert _rules(role) == {
        **NAMESPACED_RULES,
        ("monitoring.coreos.com", "podmonitors"): {"create", "patch"},
        ("kopf.dev", "kopfpeerings"): {"list", "watch", "patch"},
    }


def test_operator_learns_its_namespace_from_the_downward_api() -> None:
    [env] = [
        e for e in _container(render())["env"] if e["name"] == "ZONESTORE_OPERATOR_POD_NAMESPACE"
    ]
    assert env["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_rbac_covers_every_kind_the_builders_produce() -> None:
    """Server-side apply that creates an object is authorized as create and patch: every
    kind in the desired objects needs both; a new builder kind fails here first."""
    granted = _granted(
        render(
            {
                "certManager": {"enabled": True},
                "monitoring": {"datastorePodMonitors": {"enabled": True}},
            }
        )
    )
    from zonestore_operator.reconcile import credentials

    monitored = parse_spec(
        {"zones": ["zone-a", "zone-b", "zone-c"], "monitoring": {"podMonitor": True}}
    )

    cert_manager = parse_spec(
        {
            "zones": ["zone-a", "zone-b", "zone-c"],
            "security": {
                "clientTLS": {"enabled": True},
                "certificates": {"issuer": "certManager", "certManagerIssuerRef": {"name": "x"}},
            },
        }
    )
    creds = credentials.plan_credentials(REF, SPEC, {}, CertificatesStatus(), T0, os.urandom)
    issued = credentials.plan_credentials(
        REF, cert_manager, {}, CertificatesStatus(), T0, os.urandom
    )
    written = [w.secret for w in creds.writes] + list(issued.objects)
    assert {o["kind"] for o in written} == {"Secret", "Certificate"}
    desired = desired_objects(REF, monitored, {}, bootstrapped=False)
    assert "PodMonitor" in {o["kind"] for o in desired}
    for obj in [*desired, *written]:
        api_version = obj["apiVersion"]
        group = api_version.split("/")[0] if "/" in api_version else ""
        path = kube.object_path(api_version, obj["kind"], "ns")
        plural = path.rsplit("/", 1)[-1]
        assert {"create", "patch"} <= granted.get((group, plural), set()), obj["kind"]


def test_rbac_can_be_left_to_someone_else() -> None:
    docs = render({"rbac": {"create": False}})
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not by_kind(docs, kind)


# Monitors ------------------------------------------------------------------------


def _prometheus_meta_label(label: str) -> str:
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label)


def test_pod_monitor_selects_the_labels_the_builders_put_on_node_pods() -> None:
    monitor = one(render(MONITORING_ON), "PodMonitor")
    template = statefulset.statefulset(REF, SPEC, "zone-a", 1)["spec"]["template"]
    pod_labels = template["metadata"]["labels"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    # It selects node pods only: the role label changes with leadership; leave it out.
    assert meta.L_ROLE not in selector
    assert selector[meta.L_COMPONENT] == meta.COMPONENT_NODE
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    ports = {p["name"]: p for p in template["spec"]["containers"][0]["ports"]}
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert ports[endpoint["port"]]["containerPort"] == SPEC.ports.admin
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert relabel["job"]["replacement"] == "zonestore"
    assert relabel["datastore"]["sourceLabels"] == [_prometheus_meta_label(meta.L_INSTANCE)]
    assert relabel["zone"]["sourceLabels"] == [_prometheus_meta_label(meta.L_ZONE)]
    assert pod_labels[meta.L_INSTANCE] == REF.name


def test_pod_monitor_follows_the_watched_namespace() -> None:
    monitor = one(render({**NAMESPACED, **MONITORING_ON}), "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["dbs"]}


def test_service_monitor_scrapes_the_operator_service_metrics_port() -> None:
    docs = render(MONITORING_ON)
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    deployment = one(docs, "Deployment")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True
    assert {r["targetLabel"]: r["replacement"] for r in endpoint["relabelings"]} == {
        "job": "zonestore-operator"
    }


def test_prometheus_rule_carries_the_alert_file_with_the_configured_runbook_url() -> None:
    rule = one(render(MONITORING_ON), "PrometheusRule")
    source = yaml.safe_load((chartkit.MONITORING / "alerts.yaml").read_text())
    rendered = rule["spec"]["groups"]
    assert [g["name"] for g in rendered] == [g["name"] for g in source["groups"]]
    for got, want in zip(rendered, source["groups"], strict=True):
        for r_got, r_want in zip(got["rules"], want["rules"], strict=True):
            assert r_got["expr"] == r_want["expr"]
            url = r_got["annotations"]["runbook_url"]
            assert url.startswith("https://docs.example.com/zonestore/runbooks.md#"), url
            assert url.split("#")[1] == r_want["annotations"]["runbook_url"].split("#")[1]


def test_dashboard_config_map_carries_the_dashboard_json() -> None:
    config_map = one(render(MONITORING_ON), "ConfigMap")
    source = (chartkit.MONITORING / "dashboards" / "zonestore.json").read_text()
    assert config_map["data"]["zonestore.json"] == source.rstrip("\n")


def test_helm_test_hook_asks_the_operator_health_endpoint() -> None:
    docs = render()
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    service = one(docs, "Service")["metadata"]["name"]
    assert f"http://{service}.ops.svc:8080/healthz" in script
    sc = pod["spec"]["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("name", ["default", "monitoring", "namespaced"])
def test_notes_render_and_tell_what_to_do_next(name: str, tmp_path: Path) -> None:
    """`helm template` does not render NOTES.txt: render it through a ConfigMap in a copy
    of the chart (tpl over the same text with the same values)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "files" / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ tpl (.Files.Get "files/notes.txt") . | toJson }}\n'
    )
    out = chartkit.run(
        [
            chartkit.tool("helm"),
            "template",
            "zs",
            chart,
            "--namespace",
            "ops",
            "--show-only",
            "templates/zz-notes.yaml",
            *chartkit.helm_args(VALUE_SETS[name]),
        ]
    ).stdout
    notes = yaml.safe_load(out)["data"]["notes"]
    assert "kubectl -n ops rollout status deployment/zs-zonestore-operator" in notes
    assert "helm test zs -n ops" in notes
    assert "kubectl apply --server-side --force-conflicts -f" in notes
    assert "kubectl apply -f examples/minimal.yaml" in notes
    assert ("PodMonitor" in notes) == (name == "monitoring")
    assert ("namespace dbs" in notes) == (name == "namespaced")


def test_user_ids_can_be_left_to_the_platform_without_loosening_the_rest() -> None:
    values = {"podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}}
    docs = render(values)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert _container(docs)["securityContext"]["readOnlyRootFilesystem"] is True
