"""The two client snippets of the seed document (corrected) run unmodified against a node."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import NodeProcess

JS = Path(__file__).resolve().parents[1] / "js"

PYTHON_SNIPPET = """
from google.cloud import datastore
client = datastore.Client()          # GOOGLE_CLOUD_PROJECT or DATASTORE_DATASET names the project
user = datastore.Entity(client.key('User', 'John Doe'))
user.update({'name': 'John Doe', 'email': 'john.doe@example.com'})
client.put(user)
print(client.get(client.key('User', 'John Doe'))['name'])
"""


def _env(node: NodeProcess, project: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATASTORE_", "GOOGLE_CLOUD"))}
    env.update(DATASTORE_EMULATOR_HOST=node.client_addr)
    env.update(GOOGLE_CLOUD_PROJECT=project, DATASTORE_PROJECT_ID=project)
    return env


def test_python_seed_example_prints_the_user_name(node: NodeProcess, project: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PYTHON_SNIPPET],
        env=_env(node, project),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "John Doe"


def test_node_seed_example_prints_the_user_name(node: NodeProcess, project: str) -> None:
    if not (JS / "node_modules" / "@google-cloud" / "datastore").is_dir():
        pytest.fail("the Node client is not installed: run `make setup` (make test does)")
    node_bin = shutil.which("node")
    assert node_bin, "node is required for the Node client tests"
    out = subprocess.run(
        [node_bin, str(JS / "seed.js")],
        env=_env(node, project),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=JS,
    )
    assert "User name: John Doe" in out.stdout, out.stdout + out.stderr


def test_entity_written_by_node_reads_back_in_python(node: NodeProcess, project: str) -> None:
    script = (
        "const {Datastore} = require('@google-cloud/datastore');"
        "const ds = new Datastore({namespace: 'ns1'});"
        "ds.save({key: ds.key(['Task', 'a']), data: {done: false, n: 7}})"
        ".then(() => console.log('saved')).catch((e) => { console.error(e); process.exit(1); });"
    )
    subprocess.run(
        ["node", "-e", script], env=_env(node, project), cwd=JS, check=True, timeout=60,
        capture_output=True,
    )  # fmt: skip
    from google.cloud import datastore

    os.environ["DATASTORE_EMULATOR_HOST"] = node.client_addr
    client = datastore.Client(project=project, namespace="ns1")
    entity = client.get(client.key("Task", "a"))
    assert entity is not None
    assert entity["n"] == 7
    assert entity["done"] is False
    assert entity.key.project == project  # the server filled the empty partition Node sent
    assert entity.key.namespace == "ns1"
