"""Helpers for the chart and monitoring tests (test_op_chart_*.py): finding the Go-built
tools, rendering the chart, and reading metric names out of the code that defines them.

Tools come from the Makefile's `tools` target, which `make test` runs: helm built into
.cache/bin/helm-<version>, promtool from Debian's prometheus package (/usr/bin/promtool).
`make test` passes their paths in ZONESTORE_HELM / ZONESTORE_PROMTOOL: a tool named there
must exist. Run by hand without them, a tool not found skips the tests that need it.
"""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO

CHART = REPO / "charts" / "zonestore-operator"
MONITORING = REPO / "monitoring"
NODE_METRICS = REPO / "node" / "zonestore_node" / "api" / "metrics.py"
OPERATOR_METRICS = REPO / "operator" / "zonestore_operator" / "metrics.py"
# The chart's template fails on helm's compiled-in default (1.20) because of kubeVersion.
KUBE_VERSION = "1.30.0"
VALUES_DIR = REPO / ".cache" / "chart-test-values"

# Metrics the rules and the dashboard use that zonestore does not define.
EXTERNAL_METRICS = {
    "up": "Prometheus, one per scrape target",
    "kubelet_volume_stats_available_bytes": "kubelet",
    "kubelet_volume_stats_capacity_bytes": "kubelet",
    "kube_poddisruptionbudget_status_pod_disruptions_allowed": "kube-state-metrics",
    "kube_poddisruptionbudget_status_expected_pods": "kube-state-metrics",
}


def tool(name: str) -> Path:
    """The tool's path; skip when it is not built, fail when the Makefile named it."""
    env = os.environ.get(f"ZONESTORE_{name.upper()}")
    candidates = [Path(env)] if env else sorted((REPO / ".cache" / "bin").glob(f"{name}-v*"))
    for path in reversed(candidates):
        if path.is_file() and os.access(path, os.X_OK):
            return path
    if env:
        pytest.fail(f"{name} not found at ZONESTORE_{name.upper()}={env}")
    pytest.skip(f"{name} is not built: run `make {'promtool' if name == 'promtool' else 'tools'}`")


def run(args: Sequence[str | Path], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def helm_args(values: dict[str, Any] | None = None) -> list[str]:
    """--kube-version, and the values as a file (kept for the session, in the cache)."""
    args = ["--kube-version", KUBE_VERSION]
    if values:
        text = yaml.safe_dump(values, sort_keys=True)
        VALUES_DIR.mkdir(parents=True, exist_ok=True)
        path = VALUES_DIR / f"values-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
        path.write_text(text)
        args += ["-f", str(path)]
    return args


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """`helm template zs CHART --namespace ops --include-crds` parsed into documents
    (cached per value set: the tests only read them)."""
    return copy.deepcopy(_render(json.dumps(values or {}, sort_keys=True)))


@functools.cache
def _render(values_json: str) -> list[dict[str, Any]]:
    values = json.loads(values_json)
    out = run(
        [
            tool("helm"),
            "template",
            "zs",
            CHART,
            "--namespace",
            "ops",
            "--include-crds",
            *helm_args(values),
        ]
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: Iterable[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = by_kind(docs, kind)
    return doc


# Metric names ----------------------------------------------------------------------

_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_count", "_sum", "_created"),
    "Summary": ("_count", "_sum", "_created"),
}


def defined_metrics(path: Path) -> dict[str, str]:
    """Exposed series name -> the metric's base name, for every prometheus_client
    Counter/Gauge/Histogram/Summary constructed in `path` with a literal name."""
    names: dict[str, str] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        kind = node.func.id
        if kind not in _SUFFIXES or not node.args:
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            base = first.value.removesuffix("_total") if kind == "Counter" else first.value
            for suffix in _SUFFIXES[kind]:
                names[base + suffix] = base
    return names


def zonestore_metrics() -> dict[str, str]:
    return {**defined_metrics(NODE_METRICS), **defined_metrics(OPERATOR_METRICS)}


_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    # aggregation operators, which may be followed by `by (...)` instead of `(`
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions,
    aggregation operators, keywords, label names or durations. Good enough for the
    expressions we write (a test below checks it on known ones)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery selectors
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text
    )  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names
