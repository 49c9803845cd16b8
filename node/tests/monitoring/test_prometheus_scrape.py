"""A real Prometheus server scrapes a running three-replica cluster: every dashboard query
and every metric selector of the alert rules returns data from the metrics the nodes really
export, and the rules file loads and evaluates without errors (issue 7).

The scrape config attaches, as static labels, the target labels the chart's PodMonitor
gives node pods (job="zonestore", namespace, pod, datastore, zone: see
charts/zonestore-operator/templates/podmonitor.yaml), so the queries select the local
cluster exactly as they select a Datastore in Kubernetes. Only data that a local cluster
cannot produce (kubelet volume stats, kube-state-metrics, the operator's own metrics) is
allow-listed below, each with its reason; those queries must still run without error.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import Cluster, NodeProcess, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "monitoring" / "dashboards" / "zonestore.json"
ALERTS = REPO / "monitoring" / "alerts.yaml"
PROMETHEUS = (
    os.environ.get("ZONESTORE_PROMETHEUS") or shutil.which("prometheus") or "/usr/bin/prometheus"
)

PROJECT = "scrape"
# What the dashboard's template variables resolve to for the local cluster: the static
# labels of the scrape job below.
NAMESPACE = "zonestore-local"
DATASTORE = "local"
VARIABLES = {
    "namespace": NAMESPACE,
    "datastore": DATASTORE,
    "__rate_interval": "30s",
    "__interval": "5s",
    "__range": "5m",
}

# Metrics (and one target) the local cluster cannot produce, and why. A selector of a
# dashboard query or an alert expression that names one of these only has to evaluate
# without error; every other selector must return data.
NO_LOCAL_DATA = {
    "kubelet_volume_stats_available_bytes": "kubelet: volume stats of each pod's PVC",
    "kubelet_volume_stats_capacity_bytes": "kubelet: volume stats of each pod's PVC",
    "kube_poddisruptionbudget_status_pod_disruptions_allowed": "kube-state-metrics: the voters' PDB",
    "kube_poddisruptionbudget_status_expected_pods": "kube-state-metrics: the voters' PDB",
    "zonestore_operator_members": "the operator's own metrics (no operator runs here)",
    "zonestore_operator_reconciles_total": "the operator's own metrics (no operator runs here)",
    "zonestore_operator_failovers_total": "the operator's own metrics (no operator runs here)",
    "zonestore_operator_member_actions_total": "the operator's own metrics (no operator runs here)",
    'up{job="zonestore-operator"}': "the operator's scrape target (no operator runs here)",
    "zonestore_operator_backup_last_success_timestamp_seconds": (
        "the operator's own metrics (no operator runs here)"
    ),
}
# Dashboard panels with a query that needs one of the metrics above, and why.
PANELS_WITHOUT_LOCAL_DATA = {
    "Voters / learners (operator)": "zonestore_operator_members comes from the operator",
    "Operator failovers and membership changes": "zonestore_operator_* counters come from the operator",
    "Volume free": "kubelet_volume_stats_* come from the kubelet (its zonestore_node_info join is checked)",
}
# The one alert a healthy local cluster is expected to have pending or firing.
EXPECTED_ACTIVE_ALERTS = {"ZonestoreOperatorMetricsAbsent"}

_SELECTOR = re.compile(r"(?<![\w\"$-])((?:zonestore_|kubelet_|kube_)\w+|up)\b\s*(\{[^}]*\})?")


def substitute(expr: str) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(__\w+|namespace|datastore)\b", repl, expr)


def selectors(expr: str) -> list[str]:
    """The metric selectors of a PromQL expression: name plus its label matchers."""
    return sorted({m.group(1) + (m.group(2) or "") for m in _SELECTOR.finditer(expr)})


def allow_key(selector: str) -> str:
    name = selector.split("{", 1)[0]
    if name == "up" and 'job="zonestore-operator"' in selector:
        return 'up{job="zonestore-operator"}'
    return name


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title / refId, expression with the template variables substituted)."""
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append(
                        (
                            f"{panel['title']} / {target.get('refId', '?')}",
                            substitute(target["expr"]),
                        )
                    )

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return found


def alert_rules() -> list[tuple[str, str]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"] if "alert" in r]


DASHBOARD_QUERIES = dashboard_queries()
ALERT_RULES = alert_rules()
DASHBOARD_SELECTORS = sorted({s for _, e in DASHBOARD_QUERIES for s in selectors(e)})
ALERT_SELECTORS = sorted({s for _, e in ALERT_RULES for s in selectors(e)})


class Prometheus:
    """/usr/bin/prometheus on a free loopback port with a config and a TSDB in tmp."""

    def __init__(self, root: Path, nodes: list[NodeProcess]) -> None:
        self.root = root
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": "zonestore",
                    "metrics_path": "/metrics",
                    "static_configs": [
                        {
                            "targets": [n.admin_addr],
                            "labels": {
                                "namespace": NAMESPACE,
                                "datastore": DATASTORE,
                                "pod": f"{DATASTORE}-{n.node_id}",
                                "zone": f"zone-{n.node_id}",
                            },
                        }
                        for n in nodes
                    ],
                }
            ],
        }
        self.config_path = root / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = root / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.root / 'tsdb'}",
                    f"--web.listen-address={self.addr}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait(lambda: self._get_raw("/-/ready") == 200, 30, "Prometheus not ready")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    def _get_raw(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.addr}{path}", timeout=2) as r:
                return int(r.status)
        except (urllib.error.HTTPError, OSError):
            return 0

    def api(self, path: str, **params: str) -> Any:
        url = f"http://{self.addr}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait(self, ok: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_tail()}")
            if ok():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{what}: {self.log_tail()}")


class Workload:
    """Traffic through the official client while Prometheus scrapes: writes, reads and a
    query on the leader and on a follower (which forwards), transactions, and once a
    transaction conflict (Commit ends ABORTED on the leader)."""

    def __init__(self, leader: NodeProcess, follower: NodeProcess, monkeypatch: Any) -> None:
        from google.cloud import datastore

        monkeypatch.setenv("DATASTORE_EMULATOR_HOST", leader.client_addr)
        self.on_leader = datastore.Client(project=PROJECT)
        monkeypatch.setenv("DATASTORE_EMULATOR_HOST", follower.client_addr)
        self.on_follower = datastore.Client(project=PROJECT)
        self.rounds = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def conflict(self) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud import datastore

        client = self.on_leader
        key = client.key("Counter", "contended")
        client.put(datastore.Entity(key))
        first = client.transaction()
        first.begin()
        client.get(key, transaction=first)
        second = client.transaction()
        second.begin()
        client.get(key, transaction=second)
        entity = datastore.Entity(key)
        entity["by"] = "second"
        second.put(entity)
        second.commit()
        entity = datastore.Entity(key)
        entity["by"] = "first"
        first.put(entity)
        with pytest.raises(gexc.Conflict):
            first.commit()

    def one_round(self) -> None:
        from google.cloud import datastore

        i = self.rounds
        for side, client in (("leader", self.on_leader), ("follower", self.on_follower)):
            key = client.key("Item", f"{side}-{i}")
            entity = datastore.Entity(key)
            entity.update({"side": side, "n": i})
            client.put(entity)
            assert client.get(key) is not None
            query = client.query(kind="Item")
            query.add_filter(filter=datastore.query.PropertyFilter("side", "=", side))
            assert list(query.fetch(limit=5))
            with client.transaction():
                got = client.get(key)
                assert got is not None
                got["n"] = i + 1
                client.put(got)
        self.rounds += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.one_round()
                if self.rounds % 10 == 0:
                    self.conflict()
            except Exception as exc:  # reported by stop()
                self.errors.append(exc)
                return
            self._stop.wait(0.1)

    def start(self) -> None:
        self.one_round()
        self.conflict()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        assert not self.errors, self.errors


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    if not os.path.exists(PROMETHEUS):
        pytest.skip("no prometheus binary (make tools installs Debian's prometheus package)")
    root = tmp_path_factory.mktemp("scrape")
    monkeypatch = pytest.MonkeyPatch()
    cluster = Cluster(root / "cluster", 3)
    server = Prometheus(root, cluster.nodes)
    workload: Workload | None = None
    try:
        cluster.start()
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes if n is not leader)
        server.start()

        def all_up() -> bool:
            targets = server.api("targets", state="active")["activeTargets"]
            return len(targets) == 3 and all(t["health"] == "up" for t in targets)

        server.wait(all_up, 30, "scrape targets not all up")
        workload = Workload(leader, follower, monkeypatch)
        workload.start()

        # A few scrapes of the traffic: every counter has moved between two samples.
        def scraped() -> bool:
            # (rate() sees a conflict only once the ABORTED series existed at an earlier
            # scrape: the workload conflicts again every few rounds.)
            result = server.query(
                'min(count_over_time(zonestore_node_info{job="zonestore"}[30s])) >= 4'
                ' and on () sum(rate(zonestore_forwarded_requests_total{job="zonestore"}[30s])) > 0'
                ' and on () sum(rate(zonestore_requests_total{job="zonestore", method="Commit",'
                ' code="ABORTED"}[30s])) > 0'
            )
            return bool(result)

        server.wait(scraped, 30, "no scrapes of the workload")
        yield server
    finally:
        try:
            if workload is not None:
                workload.stop()
        finally:
            server.stop()
            cluster.stop()
            monkeypatch.undo()


def has_finite_value(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(s["value"][1])) for s in result)


def test_the_selectors_cover_every_query() -> None:
    """The extraction finds the metrics of every expression, and the allow-lists name
    exactly the metrics and panels that need data from outside the nodes."""
    for what, expr in DASHBOARD_QUERIES + ALERT_RULES:
        assert selectors(expr), what
        assert "$" not in re.sub(r'"[^"]*"', "", expr), f"unsubstituted variable in {what}"
    used = {allow_key(s) for s in DASHBOARD_SELECTORS + ALERT_SELECTORS}
    assert set(NO_LOCAL_DATA) <= used, set(NO_LOCAL_DATA) - used
    panels = {
        what.rsplit(" / ", 1)[0]
        for what, expr in DASHBOARD_QUERIES
        if any(allow_key(s) in NO_LOCAL_DATA for s in selectors(expr))
    }
    assert panels == set(PANELS_WITHOUT_LOCAL_DATA)


def test_every_target_carries_the_labels_the_queries_select_on(prom: Prometheus) -> None:
    # What the dashboard's template variables (label_values over zonestore_node_info) list.
    info = prom.query('zonestore_node_info{job="zonestore"}')
    assert {s["metric"]["namespace"] for s in info} == {NAMESPACE}
    assert {s["metric"]["datastore"] for s in info} == {DATASTORE}
    assert len({s["metric"]["pod"] for s in info}) == 3
    assert len({s["metric"]["zone"] for s in info}) == 3


@pytest.mark.parametrize(
    ("panel", "expr"), DASHBOARD_QUERIES, ids=[q[0] for q in DASHBOARD_QUERIES]
)
def test_dashboard_query_returns_data(prom: Prometheus, panel: str, expr: str) -> None:
    result = prom.query(expr)  # runs without error in any case
    if panel.rsplit(" / ", 1)[0] in PANELS_WITHOUT_LOCAL_DATA:
        return
    assert result, f"{panel}: no series for {expr}"
    assert has_finite_value(result), f"{panel}: only NaN/Inf for {expr}: {result}"


@pytest.mark.parametrize("selector", sorted(set(DASHBOARD_SELECTORS + ALERT_SELECTORS)))
def test_metric_selector_returns_data(prom: Prometheus, selector: str) -> None:
    expr = substitute(selector)
    result = prom.query(expr)
    if allow_key(selector) in NO_LOCAL_DATA:
        return
    assert result, f"no series for {expr}"


def test_alert_rules_load_and_evaluate_without_errors(prom: Prometheus) -> None:
    expected = {g["name"]: g for g in yaml.safe_load(ALERTS.read_text())["groups"]}

    def evaluated() -> bool:
        groups = prom.api("rules")["groups"]
        return {g["name"] for g in groups} == set(expected) and all(
            r["health"] != "unknown" for g in groups for r in g["rules"]
        )

    prom.wait(evaluated, 15, "rules not all evaluated")
    groups = prom.api("rules")["groups"]
    for group in groups:
        names = [r["name"] for r in group["rules"]]
        assert names == [r["alert"] for r in expected[group["name"]]["rules"]]
        for rule in group["rules"]:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
            assert not rule.get("lastError"), rule
    # A healthy local cluster triggers nothing but the alert about the missing operator.
    active = {r["name"] for g in groups for r in g["rules"] if r.get("state") != "inactive"}
    assert active == EXPECTED_ACTIVE_ALERTS


def test_key_dashboard_panels_render_from_the_scraped_data(
    prom: Prometheus, tmp_path: Path
) -> None:
    """monitoring/render_dashboard.py draws a few panels with the dashboard's own queries
    (ZONESTORE_RENDER_DASHBOARD=docs/images refreshes the pictures in docs/monitoring.md)."""
    pytest.importorskip("matplotlib")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "render_dashboard", REPO / "monitoring" / "render_dashboard.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    target = os.environ.get("ZONESTORE_RENDER_DASHBOARD")
    out_dir = REPO / target if target else tmp_path
    if target:  # pictures for the docs: half a minute of history (the workload keeps running)
        time.sleep(30)
    written = module.render(f"http://{prom.addr}", out_dir, NAMESPACE, DATASTORE, window=30.0)
    assert len(written) == len(module.PANELS)
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        assert path.stat().st_size > 15_000, (path, path.stat().st_size)
