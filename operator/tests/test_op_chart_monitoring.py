"""Alert rules (monitoring/alerts.yaml), the Grafana dashboard
(monitoring/dashboards/zonestore.json) and the runbooks (docs/runbooks.md): every metric
they name is one zonestore defines (parsed from node/zonestore_node/api/metrics.py and
operator/zonestore_operator/metrics.py) *and updates somewhere*, or a known external one;
every alert links to a runbook section that exists; the chart carries the same files.
promtool checks and unit-tests the rules (monitoring/tests/alerts_test.yaml).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import chartkit
import pytest
import yaml
from chartkit import (
    CHART,
    EXTERNAL_METRICS,
    MONITORING,
    NODE_METRICS,
    OPERATOR_METRICS,
    REPO,
    promql_metric_names,
    zonestore_metrics,
)

ALERTS = MONITORING / "alerts.yaml"
DASHBOARD = MONITORING / "dashboards" / "zonestore.json"
RUNBOOKS = REPO / "docs" / "runbooks.md"
RULE_TESTS = MONITORING / "tests" / "alerts_test.yaml"

# The situations issue 7 asks alerts for, each by the alert that covers it.
REQUIRED_ALERTS = {
    "no leader": "ZonestoreNoLeader",
    "quorum at risk": "ZonestoreQuorumAtRisk",
    "replica lagging": "ZonestoreReplicaLagging",
    "zone degraded": "ZonestoreZoneDegraded",
    "disk almost full": "ZonestoreDiskAlmostFull",
    "abort rate high": "ZonestoreAbortRateHigh",
    "operator reconcile failing": "ZonestoreOperatorReconcileFailing",
    "operator metrics absent": "ZonestoreOperatorMetricsAbsent",
    "datastore metrics absent": "ZonestoreDatastoreMetricsAbsent",
}


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _dashboard_exprs() -> list[str]:
    return [t["expr"] for p in _panels(_dashboard()) for t in p.get("targets", [])]


def _github_slug(heading: str) -> str:
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def _runbook_anchors() -> set[str]:
    return {
        _github_slug(m.group(1))
        for m in re.finditer(r"^#{1,6} (.+)$", RUNBOOKS.read_text(), re.MULTILINE)
    }


def _updated_metric_bases() -> set[str]:
    """Base names of the metrics that some code outside their constructor touches: node
    metrics through `<x>.<attribute>` anywhere but Metrics.__init__, operator metrics
    through `metrics.<NAME>` in the operator package."""
    bases: set[str] = set()
    tree = ast.parse(NODE_METRICS.read_text())
    attribute_base: dict[str, str] = {}
    init_nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            init_nodes = {id(n) for n in ast.walk(node)}
            for stmt in ast.walk(node):
                if (
                    isinstance(stmt, ast.Assign)
                    and isinstance(stmt.targets[0], ast.Attribute)
                    and isinstance(stmt.value, ast.Call)
                    and stmt.value.args
                    and isinstance(stmt.value.args[0], ast.Constant)
                ):
                    attribute_base[stmt.targets[0].attr] = str(stmt.value.args[0].value)
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in init_nodes:
            used.add(node.attr)
    for path in (REPO / "node" / "zonestore_node").rglob("*.py"):
        if path != NODE_METRICS:
            used |= set(re.findall(r"\.(\w+)\b", path.read_text()))
    # `info` is set once in the constructor, by design.
    bases |= {base for attr, base in attribute_base.items() if attr in used or attr == "info"}
    operator_source = "".join(
        p.read_text()
        for p in (REPO / "operator" / "zonestore_operator").rglob("*.py")
        if p != OPERATOR_METRICS
    )
    for node in ast.walk(ast.parse(OPERATOR_METRICS.read_text())):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Call)
            and re.search(rf"metrics\.{node.targets[0].id}\b", operator_source)
        ):
            name = str(node.value.args[0].value)  # type: ignore[attr-defined]
            counter = isinstance(node.value.func, ast.Name) and node.value.func.id == "Counter"
            bases.add(name.removesuffix("_total") if counter else name)
    return bases


# The metric-name parser itself ---------------------------------------------------


def test_promql_metric_names_skips_functions_keywords_labels_and_strings() -> None:
    expr = (
        'sum by (namespace, datastore) (rate(zonestore_requests_total{job="x", code="A"}[5m]))'
        " / on (namespace) group_left (pod) "
        'label_replace(max(zonestore_node_info), "pvc", "data-$1", "pod", "(.+)") > 0.2'
        " and up == 0 unless absent(foo_bar offset 5m)"
    )
    assert promql_metric_names(expr) == {
        "zonestore_requests_total",
        "zonestore_node_info",
        "up",
        "foo_bar",
    }


def test_defined_metrics_include_counter_and_histogram_series() -> None:
    names = zonestore_metrics()
    for name in (
        "zonestore_requests_total",
        "zonestore_request_duration_seconds_bucket",
        "zonestore_raft_role",
        "zonestore_raft_follower_lag_entries",
        "zonestore_operator_reconciles_total",
        "zonestore_operator_members",
    ):
        assert name in names


# Alert rules ---------------------------------------------------------------------


def test_alert_file_in_the_chart_is_byte_identical_to_monitoring_alerts() -> None:
    assert (CHART / "files" / "alerts.yaml").read_bytes() == ALERTS.read_bytes(), (
        "cp monitoring/alerts.yaml charts/zonestore-operator/files/alerts.yaml"
    )


def test_every_required_situation_has_an_alert() -> None:
    names = {r["alert"] for r in _rules()}
    missing = {what: alert for what, alert in REQUIRED_ALERTS.items() if alert not in names}
    assert not missing


def test_every_alert_is_complete_and_links_to_an_existing_runbook_section() -> None:
    anchors = _runbook_anchors()
    seen = set()
    for rule in _rules():
        name = rule["alert"]
        assert re.fullmatch(r"Zonestore[A-Z][A-Za-z]+", name), name
        assert name not in seen, f"duplicate alert {name}"
        seen.add(name)
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        url, _, anchor = annotations["runbook_url"].partition("#")
        assert url.endswith("/docs/runbooks.md"), name
        assert anchor in anchors, f"{name}: no section #{anchor} in docs/runbooks.md"


def test_every_runbook_section_for_an_alert_names_what_to_do() -> None:
    text = RUNBOOKS.read_text()
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        title = section.splitlines()[0]
        if title.startswith("Zonestore"):
            assert "**Meaning.**" in section and "**What to do.**" in section, title


def test_alerts_name_only_metrics_that_exist() -> None:
    defined = zonestore_metrics()
    for rule in _rules():
        for name in promql_metric_names(rule["expr"]):
            assert name in defined or name in EXTERNAL_METRICS, (
                f"{rule['alert']}: {name} is neither defined in the node/operator metrics"
                " nor a known external metric"
            )


def test_alerts_only_use_metrics_the_code_updates() -> None:
    """A metric that is declared but never set reads 0 forever: an alert on it never
    fires (zonestore_transaction_aborts_total is such a metric today, so aborts are
    counted from zonestore_requests_total{code="ABORTED"})."""
    defined, updated = zonestore_metrics(), _updated_metric_bases()
    for rule in _rules():
        for name in promql_metric_names(rule["expr"]) & defined.keys():
            assert defined[name] in updated, f"{rule['alert']}: {name} is never updated"


def test_alert_expressions_select_the_jobs_the_chart_monitors_set() -> None:
    for rule in _rules():
        jobs = set(re.findall(r'job="([^"]+)"', rule["expr"]))
        assert jobs <= {"zonestore", "zonestore-operator"}, rule["alert"]
        for name in promql_metric_names(rule["expr"]):
            if name.startswith("zonestore_operator_"):
                assert 'job="zonestore-operator"' in rule["expr"], rule["alert"]
            elif name.startswith("zonestore_"):
                assert 'job="zonestore"' in rule["expr"], rule["alert"]


def test_promtool_accepts_the_rules() -> None:
    promtool = chartkit.tool("promtool")
    result = chartkit.run([promtool, "check", "rules", ALERTS])
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    promtool = chartkit.tool("promtool")
    chartkit.run([promtool, "test", "rules", RULE_TESTS])


def test_rule_unit_tests_cover_every_alert() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == ["../alerts.yaml"]
    fired = {
        alert["alertname"]
        for case in tests["tests"]
        for alert in case.get("alert_rule_test", [])
        if alert["exp_alerts"]
    }
    assert {r["alert"] for r in _rules()} <= fired


# Dashboard -----------------------------------------------------------------------


def test_dashboard_in_the_chart_is_byte_identical_to_monitoring_dashboards() -> None:
    for path in (MONITORING / "dashboards").glob("*.json"):
        copy = CHART / "files" / "dashboards" / path.name
        assert copy.read_bytes() == path.read_bytes(), f"cp {path} {copy}"
    assert sorted(p.name for p in (CHART / "files" / "dashboards").glob("*")) == sorted(
        p.name for p in (MONITORING / "dashboards").glob("*.json")
    )


def test_dashboard_has_datasource_namespace_and_datastore_variables() -> None:
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "datastore" in variables["datastore"]["definition"]
    assert "$namespace" in variables["datastore"]["definition"]
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40


def test_every_node_panel_query_is_scoped_to_the_selected_datastore() -> None:
    for expr in _dashboard_exprs():
        names = promql_metric_names(expr)
        if any(
            n.startswith("zonestore_") and not n.startswith("zonestore_operator_") for n in names
        ):
            assert 'datastore="$datastore"' in expr and 'namespace="$namespace"' in expr, expr


def test_dashboard_names_only_metrics_that_exist_and_are_updated() -> None:
    defined, updated = zonestore_metrics(), _updated_metric_bases()
    for expr in _dashboard_exprs():
        for name in promql_metric_names(expr):
            assert name in defined or name in EXTERNAL_METRICS, expr
            if name in defined:
                assert defined[name] in updated, f"{name} is never updated: {expr}"


def test_dashboard_covers_the_issue_7_overview() -> None:
    titles = " | ".join(p["title"].lower() for p in _panels(_dashboard()))
    for word in ("leader", "zone", "requests", "latency", "lag", "leader changes", "size", "abort"):
        assert word in titles, word


def test_dashboard_panels_have_unique_ids_and_a_datasource() -> None:
    ids = [p["id"] for p in _panels(_dashboard())]
    assert len(ids) == len(set(ids))
    for panel in _panels(_dashboard()):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]


@pytest.mark.parametrize("path", sorted((MONITORING / "dashboards").glob("*.json")), ids=str)
def test_dashboard_json_is_formatted_for_review(path: Path) -> None:
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=2) + "\n"


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Grafana is not here to load the dashboard; promtool parses each query as a
    recording rule, with the dashboard variables filled in."""
    promtool = chartkit.tool("promtool")
    substitutions = {
        "$__rate_interval": "5m",
        "$namespace": "shop",
        "$datastore": "orders",
    }
    rules = []
    for i, expr in enumerate(_dashboard_exprs()):
        for var, value in substitutions.items():
            expr = expr.replace(var, value)
        assert "$" not in expr.replace("$1", ""), expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = chartkit.run([promtool, "check", "rules", path])
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_accepts_the_rules_the_chart_renders(tmp_path: Path) -> None:
    promtool = chartkit.tool("promtool")
    values = {"monitoring": {"prometheusRule": {"enabled": True}}}
    [rule] = chartkit.by_kind(chartkit.render(values), "PrometheusRule")
    path = tmp_path / "rendered-rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    result = chartkit.run([promtool, "check", "rules", path])
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout
