"""Helpers for the backup tests: the CLI as a subprocess, writers through the official
client, and reading back what a group holds (content and commit version per key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import datastore

from tests.harness import Cluster, NodeProcess

PROJECT = "backups"
KIND = "Item"


def zs(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`zonestore ARGS` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "zonestore_node.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def client_for(node: NodeProcess) -> datastore.Client:
    os.environ["DATASTORE_EMULATOR_HOST"] = node.client_addr
    return datastore.Client(project=PROJECT)


def content(i: int, blob_bytes: int = 0) -> dict[str, Any]:
    """What entity i holds: derived from i, so a restored copy is checked by content."""
    body: dict[str, Any] = {"n": i, "text": f"item-{i}-{i * 7919 % 1000003}"}
    if blob_bytes:
        body["blob"] = os.urandom(blob_bytes)
    return body


class Writer:
    """A thread writing entities 1, 2, 3... (one per put, or `batch` per put_multi)
    through one replica with the official client, until stopped."""

    def __init__(self, node: NodeProcess, batch: int = 10, start: int = 1) -> None:
        self.node = node
        self.batch = batch
        self.next_id = start
        self.acked: list[int] = []
        self.attempted: list[int] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = client_for(self.node)
        while not self._stop.is_set():
            ids = list(range(self.next_id, self.next_id + self.batch))
            self.next_id += self.batch
            self.attempted += ids
            entities = []
            for i in ids:
                entity = datastore.Entity(client.key(KIND, i))
                entity.update(content(i))
                entities.append(entity)
            try:
                client.put_multi(entities, timeout=15)
            except (gexc.GoogleAPICallError, gexc.RetryError):
                self.failures += 1
                time.sleep(0.05)
                continue
            self.acked += ids

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"only {len(self.acked)} writes acknowledged"
            time.sleep(0.02)


def load(node: NodeProcess, ids: range, blob_bytes: int = 0) -> None:
    client = client_for(node)
    batch: list[datastore.Entity] = []

    def put(entities: list[datastore.Entity]) -> None:
        # Upserts: safe to retry when an election (a loaded machine) refused them.
        for attempt in range(10):
            try:
                client.put_multi(entities, timeout=60)
                return
            except (gexc.ServiceUnavailable, gexc.Aborted, gexc.DeadlineExceeded):
                if attempt == 9:
                    raise
                time.sleep(0.5)

    for i in ids:
        entity = datastore.Entity(client.key(KIND, i), exclude_from_indexes=("blob",))
        entity.update(content(i, blob_bytes))
        batch.append(entity)
        if len(batch) * max(blob_bytes, 1) >= 4_000_000 or len(batch) >= 200:
            put(batch)
            batch = []
    if batch:
        put(batch)


def versions(node: NodeProcess, ids: list[int]) -> dict[int, tuple[int, int, str]]:
    """{id: (commit version, n, text)} of the entities present, by strong lookups of the
    raw API (the official client's own GAPIC client: it returns each version)."""
    client = client_for(node)
    api = client._datastore_api
    found: dict[int, tuple[int, int, str]] = {}
    for start in range(0, len(ids), 500):
        keys = [client.key(KIND, i).to_protobuf() for i in ids[start : start + 500]]
        while keys:
            response = api.lookup(request={"project_id": PROJECT, "keys": keys})
            for result in response.found:
                entity = result.entity
                props = entity.properties
                found[entity.key.path[-1].id] = (
                    int(result.version),
                    int(props["n"].integer_value),
                    str(props["text"].string_value),
                )
            keys = list(response.deferred)
    return found


def count_all(node: NodeProcess) -> int:
    client = client_for(node)
    query = client.query(kind=KIND)
    query.keys_only()
    return len(list(query.fetch()))


def wait_caught_up(cluster: Cluster, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = [cluster.status(n) for n in cluster.nodes if n.alive()]
        applied = {int(s["applied_index"]) for s in statuses}
        commits = {int(s["commit_index"]) for s in statuses}
        if len(applied) == 1 and applied == {max(commits)}:
            return
        time.sleep(0.05)
    raise TimeoutError("replicas did not converge")


def backup_ids(
    url: str, env: dict[str, str] | None = None, everything: bool = False
) -> dict[str, Any]:
    out = ok(zs("backup", "list", url, "--json", *(["--all"] if everything else []), env=env))
    return dict(json.loads(out))


def serve_restored(data_root: Path, node_id: str = "restored-0") -> NodeProcess:
    """`zonestore serve` on a restored folder (<data_root>/data), no peer flags."""
    node = NodeProcess(data_root, node_id=node_id)
    node.start()
    return node


def expected_at(
    source: dict[int, tuple[int, int, str]], target_ts: int
) -> dict[int, tuple[int, int, str]]:
    return {i: v for i, v in source.items() if v[0] <= target_ts}
