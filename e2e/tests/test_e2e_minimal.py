"""The README's first Datastore, as a newcomer meets it: `crds/examples/minimal.yaml`
(a name, three zones, a volume size) applied as is, then the seed document's two client
snippets (../shared/docs/seed-cloud-datastore-ha.md: write a `User`, read it back) run
unmodified by the official Python and Node clients from pods in the same namespace. The
pods get DATASTORE_EMULATOR_HOST naming the Datastore's Service and the project
variables Google's emulator has applications set (`gcloud beta emulators datastore
env-init`); no token, no TLS, no endpoint."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml

from zonestore_e2e import apppods
from zonestore_e2e.cluster import ROOT, Cluster
from zonestore_e2e.datastores import CLIENT_PORT, DatastoreHandle

MINIMAL = ROOT / "crds" / "examples" / "minimal.yaml"
READY_BUDGET = 240  # apply -> Ready with a leader
CLIENT_BUDGET = 120  # a client pod from create to finished
PROJECT = "seed-app"

# The seed document's Python snippet, corrected as node/tests/integration/
# test_seed_examples.py has it (a named key, so the read finds the write; `['name']`).
PYTHON_SEED = """
from google.cloud import datastore
client = datastore.Client()
user = datastore.Entity(client.key('User', 'John Doe'))
user.update({'name': 'John Doe', 'email': 'john.doe@example.com'})
client.put(user)
print(client.get(client.key('User', 'John Doe'))['name'])
"""
NODE_SEED_DIR = ROOT / "node" / "tests" / "js"  # seed.js, the seed's Node snippet


def _report(**figures: Any) -> None:
    print("\n[e2e figures] minimal: " + " ".join(f"{k}={v:.1f}" for k, v in figures.items()))


@pytest.mark.process_cluster
def test_minimal_datastore_serves_unmodified_clients(
    cluster: Cluster, namespace: str, api: Any
) -> None:
    body = yaml.safe_load(MINIMAL.read_text())
    body["metadata"]["namespace"] = namespace  # what `kubectl apply -n <namespace>` does
    t0 = time.monotonic()
    status, answer = cluster.apply(body)
    assert status in (200, 201), answer
    name = body["metadata"]["name"]
    ds = DatastoreHandle(cluster, namespace, name)
    ds.wait_ready(READY_BUDGET)
    ready_s = time.monotonic() - t0
    stored = (ds.get() or {})["spec"]
    assert stored["security"]["clientAuth"]["mode"] == "None", stored
    assert ds.condition("ClientAuthUsable") == "True"
    # The gate is the NetworkPolicy: the client port admits this namespace's pods only.
    code, policy = cluster.request(
        "GET", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}-nodes"
    )
    assert code == 200, policy
    client_from = [
        r["from"]
        for r in policy["spec"]["ingress"]
        if any(p["port"] == CLIENT_PORT for p in r["ports"])
    ]
    assert client_from == [[{"podSelector": {}}]], policy["spec"]

    env = {
        "DATASTORE_EMULATOR_HOST": f"{name}:{CLIENT_PORT}",  # the Service, by its name
        "DATASTORE_DATASET": PROJECT,  # read by the Python client
        "DATASTORE_PROJECT_ID": PROJECT,  # read by the Node client
    }
    t1 = time.monotonic()
    python = apppods.run_to_completion(
        cluster,
        apppods.pod_manifest(
            "seed-python",
            namespace,
            "zonestore/zonestore:0.1.0",
            ["python", "-c", PYTHON_SEED],
            env,
        ),
        CLIENT_BUDGET,
    )
    python_s = time.monotonic() - t1
    assert (python.phase, python.exit_code) == ("Succeeded", 0), python.log
    assert python.log.rstrip().endswith("John Doe"), python.log
    t2 = time.monotonic()
    node = apppods.run_to_completion(
        cluster,
        apppods.pod_manifest(
            "seed-node", namespace, "node:20", ["node", "seed.js"], env, str(NODE_SEED_DIR)
        ),
        CLIENT_BUDGET,
    )
    node_s = time.monotonic() - t2
    assert (node.phase, node.exit_code) == ("Succeeded", 0), node.log
    assert "User name: John Doe" in node.log, node.log
    _report(ready_s=ready_s, python_pod_s=python_s, node_pod_s=node_s)
