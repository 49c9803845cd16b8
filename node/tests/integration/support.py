"""Helpers shared by the integration tests: raw GAPIC access, Node scripts, metrics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_client
from tests.harness import NodeProcess

JS = Path(__file__).resolve().parents[1] / "js"


def datastore_client(addr: str, project: str, **kwargs: Any) -> Any:
    """A `google.cloud.datastore.Client` of the official library pointed at `addr`."""
    return make_client(addr, project, **kwargs)


def raw_api(client: Any) -> Any:
    """The client's own GAPIC `DatastoreClient` (insecure channel): raw requests and
    responses, for fields the high-level client hides (versions, times, deferred)."""
    return client._datastore_api


def node_env(node: NodeProcess, project: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATASTORE_", "GOOGLE_CLOUD"))}
    env.update(DATASTORE_EMULATOR_HOST=node.client_addr)
    env.update(GOOGLE_CLOUD_PROJECT=project, DATASTORE_PROJECT_ID=project)
    # No GCE metadata probe from google-auth-library (a MetadataLookupWarning otherwise).
    env.update(METADATA_SERVER_DETECTION="none")
    return env


def run_js(node: NodeProcess, project: str, script: str, *args: str) -> Any:
    """Run node/tests/js/<script> with the Node client against `node`; the script prints
    one JSON document on its last stdout line, which is returned."""
    if not (JS / "node_modules" / "@google-cloud" / "datastore").is_dir():
        pytest.fail("the Node client is not installed: run `make setup` (make test does)")
    node_bin = shutil.which("node")
    assert node_bin, "node is required for the Node client tests"
    out = subprocess.run(
        [node_bin, str(JS / script), *args],
        env=node_env(node, project),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=JS,
    )
    assert out.returncode == 0, f"{script} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    lines = out.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing:\n{out.stderr}"
    return json.loads(lines[-1])


def metric_samples(node: NodeProcess, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one metric from /metrics, keyed by their sorted labels."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = node.http_get("/metrics")
    assert status == 200
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out
