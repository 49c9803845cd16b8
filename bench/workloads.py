"""What one benchmark operation is, per workload, written against the official client.

Runs inside the worker processes only (it imports google-cloud-datastore). Each
workload turns a client, a per-thread tag and a random generator into a zero-argument
operation; the operation raises on any failure, including a wrong answer (a lookup
that finds nothing, a query that does not return its 20 rows), so a target that fails
a workload shows up as an error rather than as a fast empty reply.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RPC_TIMEOUT = 30.0
PAYLOAD = "x" * 200
QUERY_MATCHES = 20  # every tag value matches exactly this many entities, at any size
TXN_ATTEMPTS = 50

# The workloads, in the order the report lists them.
PUT = "put"
LOOKUP = "lookup"
PUT_MULTI = "put_multi"
QUERY = "query"
TXN_COUNTER = "txn_counter"
ALL = (PUT, LOOKUP, PUT_MULTI, QUERY, TXN_COUNTER)
# The replicated suite's write through the official client (not in ALL: that suite
# picks it itself). The same entity as bench/loadgen.py's raw CommitRequest.
PUT_500 = "put_500"
# The scale suite's queries (bench/scale.py; not in ALL), over SCALE_KIND grown in steps.
SCALE_FILTER = "scale_filter"
SCALE_KEYS = "scale_keys"
SCALE_KIND = "BenchScale"
SCALE_TAGS = 500  # entity i has tag i % SCALE_TAGS: 20 per tag at 10k entities
DESCRIPTIONS = {
    PUT: "single put (1 entity, new key)",
    LOOKUP: "lookup by key",
    PUT_MULTI: "put_multi of 100",
    QUERY: "equality query, limit 20",
    TXN_COUNTER: "txn counter increment (1 hot key)",
    PUT_500: "single upsert of a ~500-byte entity",
    SCALE_FILTER: "equality filter, limit 20",
    SCALE_KEYS: "keys-only range n >= x, limit 20",
}

LOOKUP_KIND = "BenchLookup"


def query_kind(entities: int) -> str:
    return f"BenchQuery{entities}"


@dataclass(frozen=True, slots=True)
class Params:
    """What a workload needs to know about the preloaded data and this cell."""

    lookup_entities: int = 10_000
    query_entities: int = 100_000
    cell_id: str = "c0"


class Retried(Exception):
    """Raised by a transaction that was aborted TXN_ATTEMPTS times in a row."""


class CellOver(Exception):
    """A retry loop gave up because the cell's time is over: not a failure of the target."""


def make_entity(client: Any, kind: str, name: str, tag: int, n: int) -> Any:
    from google.cloud import datastore

    entity = datastore.Entity(client.key(kind, name), exclude_from_indexes=("payload",))
    entity["tag"] = tag
    entity["n"] = n
    entity["payload"] = PAYLOAD
    return entity


def preload_entity(client: Any, kind: str, i: int, entities: int) -> Any:
    """Entity number i of a preloaded kind; tag = i mod (entities / 20)."""
    tags = max(1, entities // QUERY_MATCHES)
    return make_entity(client, kind, f"k{i}", i % tags, i)


def put_range(client: Any, kind: str, start: int, stop: int, entities: int, batch: int) -> int:
    for lo in range(start, stop, batch):
        hi = min(stop, lo + batch)
        client.put_multi(
            [preload_entity(client, kind, i, entities) for i in range(lo, hi)],
            timeout=RPC_TIMEOUT * 4,
        )
    return stop - start


class Stats:
    """Per-thread counters that the operation bumps besides its latency."""

    __slots__ = ("committed", "retries")

    def __init__(self) -> None:
        self.retries = 0
        self.committed = 0


def make_op(
    workload: str,
    client: Any,
    params: Params,
    tag: str,
    rng: random.Random,
    stats: Stats,
    stop_at: float,
) -> Callable[[], None]:
    from google.api_core import exceptions
    from google.cloud import datastore
    from google.cloud.datastore.query import PropertyFilter

    counter = 0

    if workload == PUT:

        def put() -> None:
            nonlocal counter
            counter += 1
            entity = make_entity(client, "BenchPut", f"{tag}-{counter}", counter % 100, counter)
            client.put(entity, timeout=RPC_TIMEOUT)

        return put

    if workload == PUT_500:
        from bench import loadgen

        def put_500() -> None:
            nonlocal counter
            counter += 1
            name = f"{tag}-{counter % loadgen.KEYS_PER_CLIENT}"
            entity = datastore.Entity(
                client.key(loadgen.KIND, name), exclude_from_indexes=("payload",)
            )
            entity["payload"] = loadgen.ENTITY_PAYLOAD
            entity["n"] = counter
            client.put(entity, timeout=RPC_TIMEOUT)

        return put_500

    if workload == PUT_MULTI:

        def put_multi() -> None:
            nonlocal counter
            counter += 1
            client.put_multi(
                [
                    make_entity(client, "BenchPutMulti", f"{tag}-{counter}-{j}", j, counter)
                    for j in range(100)
                ],
                timeout=RPC_TIMEOUT,
            )

        return put_multi

    if workload == LOOKUP:
        entities = params.lookup_entities

        def lookup() -> None:
            key = client.key(LOOKUP_KIND, f"k{rng.randrange(entities)}")
            if client.get(key, timeout=RPC_TIMEOUT) is None:
                raise LookupError(f"{key.flat_path} not found")

        return lookup

    if workload == QUERY:
        kind = query_kind(params.query_entities)
        tags = max(1, params.query_entities // QUERY_MATCHES)
        want = min(QUERY_MATCHES, params.query_entities)

        def query() -> None:
            q = client.query(kind=kind)
            q.add_filter(filter=PropertyFilter("tag", "=", rng.randrange(tags)))
            rows = list(q.fetch(limit=20, timeout=RPC_TIMEOUT))
            if len(rows) != want:
                raise AssertionError(f"query returned {len(rows)} rows, expected {want}")

        return query

    if workload in (SCALE_FILTER, SCALE_KEYS):
        return scale_query(workload, client, params.query_entities, rng)

    if workload == TXN_COUNTER:
        key = client.key("BenchCounter", params.cell_id)
        aborted = (exceptions.Aborted, exceptions.Conflict)

        def increment() -> None:
            backoff = 0.001
            for _ in range(TXN_ATTEMPTS):
                if time.monotonic() >= stop_at:
                    raise CellOver
                try:
                    with client.transaction():
                        entity = client.get(key, timeout=RPC_TIMEOUT)
                        if entity is None:
                            entity = datastore.Entity(key)
                            entity["n"] = 0
                        entity["n"] = int(entity["n"]) + 1
                        client.put(entity)
                except aborted:
                    stats.retries += 1
                    time.sleep(rng.uniform(0, backoff))
                    backoff = min(backoff * 2, 0.05)
                    continue
                stats.committed += 1
                return
            raise Retried(f"aborted {TXN_ATTEMPTS} times in a row")

        return increment

    raise ValueError(f"unknown workload {workload!r}")


def scale_query(
    workload: str, client: Any, entities: int, rng: random.Random
) -> Callable[[], None]:
    """A query of an app over SCALE_KIND's first `entities` (preloaded with
    preload_entity(..., SCALE_TAGS * QUERY_MATCHES)): a page of 20 matching an equality
    filter, or a page of 20 keys from a random point of a range."""
    from google.cloud.datastore.query import PropertyFilter

    def expect(rows: list[Any], want: int) -> None:
        if len(rows) != want:
            raise AssertionError(f"{workload} returned {len(rows)} rows, expected {want}")

    if workload == SCALE_FILTER:
        tags = min(SCALE_TAGS, entities)

        def by_tag() -> None:
            tag = rng.randrange(tags)
            q = client.query(kind=SCALE_KIND)
            q.add_filter(filter=PropertyFilter("tag", "=", tag))
            matches = entities // SCALE_TAGS + (1 if tag < entities % SCALE_TAGS else 0)
            expect(list(q.fetch(limit=QUERY_MATCHES, timeout=RPC_TIMEOUT)), min(20, matches))

        return by_tag

    def keys_from() -> None:
        start = rng.randrange(max(1, entities - QUERY_MATCHES))
        q = client.query(kind=SCALE_KIND)
        q.keys_only()
        q.add_filter(filter=PropertyFilter("n", ">=", start))
        rows = list(q.fetch(limit=QUERY_MATCHES, timeout=RPC_TIMEOUT))
        expect(rows, min(QUERY_MATCHES, entities - start))
        if rows[0].key.name != f"k{start}":
            raise AssertionError(f"{workload} began at {rows[0].key.name}, expected k{start}")

    return keys_from


def read_counter(client: Any, cell_id: str) -> int:
    entity = client.get(client.key("BenchCounter", cell_id), timeout=RPC_TIMEOUT)
    return 0 if entity is None else int(entity["n"])
