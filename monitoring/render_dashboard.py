"""Render a few panels of the Grafana dashboard (monitoring/dashboards/zonestore.json) to
PNG from a running Prometheus, with matplotlib: a picture of what the dashboard shows,
made from real scraped data and the dashboard's own queries.

    python monitoring/render_dashboard.py http://127.0.0.1:9090 docs/images \\
        --namespace zonestore-local --datastore local

node/tests/monitoring/test_prometheus_scrape.py calls `render` against the Prometheus it
runs over a local three-replica cluster (ZONESTORE_RENDER_DASHBOARD=docs/images writes the
pictures in docs/images, as committed; otherwise they go to the test's tmp folder).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parent / "dashboards" / "zonestore.json"

# Panel title -> file name (docs/images/dashboard-<name>.png).
PANELS = {
    "Requests/s by method": "requests",
    "Latency p99 by method": "latency-p99",
    "Forwarded to the leader/s": "forwarded",
    "WAL fsync latency p99": "fsync-p99",
}


def panels(dashboard: Path = DASHBOARD) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    def walk(items: list[dict[str, Any]]) -> None:
        for panel in items:
            walk(panel.get("panels", []))
            if "targets" in panel:
                found[panel["title"]] = panel

    walk(json.loads(dashboard.read_text())["panels"])
    return found


def substitute(expr: str, variables: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)",
        lambda m: variables.get(m.group(1) or m.group(2), m.group(0)),
        expr,
    )


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> Any:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=10) as r:
        body = json.loads(r.read())
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt or "")
    return text or ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"


def render(
    prometheus: str,
    out_dir: Path,
    namespace: str,
    datastore: str,
    window: float = 60.0,
    rate_interval: str = "30s",
) -> list[Path]:
    """One PNG per panel of PANELS over the last `window` seconds; the paths written."""
    from matplotlib.figure import Figure

    variables = {"namespace": namespace, "datastore": datastore, "__rate_interval": rate_interval}
    end = time.time()
    start = end - window
    out_dir.mkdir(parents=True, exist_ok=True)
    by_title = panels()
    written = []
    for title, name in PANELS.items():
        panel = by_title[title]
        fig = Figure(figsize=(8, 3.2), dpi=100)
        ax = fig.add_subplot()
        for target in panel["targets"]:
            expr = substitute(target["expr"], variables)
            for series in query_range(prometheus, expr, start, end, 1.0):
                points = [
                    (float(t) - end, float(v))
                    for t, v in series["values"]
                    if math.isfinite(float(v))
                ]
                if points:
                    xs, ys = zip(*points, strict=True)
                    label = legend(target.get("legendFormat", ""), series["metric"])
                    ax.plot(xs, ys, label=label, linewidth=1.5)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_title(f"{title} — {namespace}/{datastore}", fontsize=10)
        ax.set_xlabel("seconds before now")
        if unit:
            ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        path = out_dir / f"dashboard-{name}.png"
        fig.savefig(path)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prometheus", help="base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--datastore", required=True)
    parser.add_argument("--window", type=float, default=300.0, help="seconds of history")
    args = parser.parse_args()
    for path in render(args.prometheus, args.out_dir, args.namespace, args.datastore, args.window):
        print(path)


if __name__ == "__main__":
    main()
