"""Operating a node: health and readiness, Prometheus metrics, status, graceful stop."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import datastore

from tests.harness import NodeProcess
from tests.integration.support import datastore_client, metric_samples


def test_healthz_and_readyz_answer_200(node: NodeProcess) -> None:
    assert node.http_get("/healthz") == (200, b"ok\n")
    assert node.http_get("/readyz") == (200, b"ready\n")


def test_admin_status_describes_the_node(node: NodeProcess) -> None:
    status, body = node.http_get("/admin/status")
    assert status == 200
    doc = json.loads(body)
    assert doc["node_id"] == node.node_id
    assert doc["ready"] is True
    assert doc["role"] == "leader"


def count(node: NodeProcess, method: str, code: str) -> float:
    samples = metric_samples(node, "zonestore_requests_total")
    return samples.get((("code", code), ("method", method)), 0.0)


def test_request_counters_increase_by_method_and_code(node: NodeProcess, client: Any) -> None:
    lookups, commits = count(node, "Lookup", "OK"), count(node, "Commit", "OK")
    exists = count(node, "Commit", "ALREADY_EXISTS")
    key = client.key("M", "x")
    client.put(datastore.Entity(key))
    client.get(key)
    client.get(key)
    with pytest.raises(exceptions.AlreadyExists):
        client._datastore_api.commit(
            request={
                "project_id": client.project,
                "mode": 2,
                "mutations": [{"insert": {"key": key.to_protobuf()}}],
            }
        )
    assert count(node, "Lookup", "OK") >= lookups + 2
    assert count(node, "Commit", "OK") >= commits + 1
    assert count(node, "Commit", "ALREADY_EXISTS") == exists + 1  # no other test inserts "M"


def test_request_latency_histogram_is_exported_per_method(node: NodeProcess, client: Any) -> None:
    client.get(client.key("M", "latency"))
    buckets = metric_samples(node, "zonestore_request_duration_seconds_bucket")
    lookup_buckets = {
        dict(labels)["le"]: v for labels, v in buckets.items() if ("method", "Lookup") in labels
    }
    assert lookup_buckets["+Inf"] >= 1
    counts = list(lookup_buckets.values())
    assert counts == sorted(counts)  # cumulative
    total = metric_samples(node, "zonestore_request_duration_seconds_count")
    assert total[(("method", "Lookup"),)] == lookup_buckets["+Inf"]
    sums = metric_samples(node, "zonestore_request_duration_seconds_sum")
    assert sums[(("method", "Lookup"),)] > 0


def test_sigterm_exits_0_within_the_grace_period(fresh_node: NodeProcess) -> None:
    client = datastore_client(fresh_node.client_addr, "term")
    client.put(datastore.Entity(client.key("K", 1)))  # an open channel, a used node
    started = time.monotonic()
    assert fresh_node.stop(timeout=15) == 0, fresh_node.log_tail()
    assert time.monotonic() - started < 5 + 3  # grace (5 s) plus slack for a loaded machine
    assert "node.stopped" in fresh_node.log_tail()
