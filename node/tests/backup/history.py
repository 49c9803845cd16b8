"""A recorded history of writes for point-in-time tests: every upsert and delete goes
through the official client's own API client one at a time, and its commit timestamp
(the mutation's version) is kept, so what a group held at any instant is known key by
key, content included."""

from __future__ import annotations

import random
import re
import time
import urllib.request
from dataclasses import dataclass, field

from google.cloud import datastore
from google.cloud.datastore import helpers

from tests.backup import support
from tests.harness import NodeProcess
from zonestore_node.backup import archive, objstore

NON_TRANSACTIONAL = 2


@dataclass(slots=True)
class History:
    """(commit ts, id, content or None for a delete), in commit order."""

    events: list[tuple[int, int, tuple[int, str] | None]] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(16))
    generation: int = 0

    def write(self, node: NodeProcess, ids: range, count: int, delete_share: float = 0.1) -> None:
        """`count` single-mutation commits on random ids: upserts of a new generation of
        content, some deletes."""
        client = support.client_for(node)
        api = client._datastore_api
        for _ in range(count):
            i = self.rng.choice(ids)
            key = client.key(support.KIND, i)
            if self.rng.random() < delete_share:
                mutation = {"delete": key.to_protobuf()}
                after: tuple[int, str] | None = None
            else:
                self.generation += 1
                entity = datastore.Entity(key)
                entity.update({"n": self.generation, "text": f"gen-{self.generation}-of-{i}"})
                mutation = {"upsert": helpers.entity_to_protobuf(entity)}
                after = (self.generation, f"gen-{self.generation}-of-{i}")
            response = api.commit(
                request={
                    "project_id": support.PROJECT,
                    "mode": NON_TRANSACTIONAL,
                    "mutations": [mutation],
                },
                timeout=30,
            )
            version = int(response.mutation_results[0].version)
            assert not self.events or version > self.events[-1][0], "versions must grow"
            self.events.append((version, i, after))

    def state_at(self, target_ts: int) -> dict[int, tuple[int, str]]:
        """{id: (n, text)} of what a group held once every commit <= target_ts applied."""
        state: dict[int, tuple[int, str]] = {}
        for version, i, after in self.events:
            if version > target_ts:
                break
            if after is None:
                state.pop(i, None)
            else:
                state[i] = after
        return state

    @property
    def ids(self) -> list[int]:
        return sorted({i for _, i, _ in self.events})


def read_state(node: NodeProcess, ids: list[int]) -> dict[int, tuple[int, str]]:
    return {i: (n, text) for i, (_, n, text) in support.versions(node, ids).items()}


def wait_archived(
    store: objstore.ObjectStore, group_id: str, upto_ts: int, timeout: float = 120
) -> list[archive.SegmentInfo]:
    """The archive's segments, once one holds a commit stamped at or after `upto_ts`."""
    deadline = time.monotonic() + timeout
    while True:
        segments = archive.list_segments(store, group_id)
        if segments and max(s.last_ts for s in segments) >= upto_ts:
            return segments
        assert time.monotonic() < deadline, f"nothing archived up to {upto_ts}: {segments}"
        time.sleep(0.2)


def metric(node: NodeProcess, name: str) -> float:
    with urllib.request.urlopen(f"http://{node.admin_addr}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} is not in {node.node_id}'s /metrics"
    return float(found[1])
