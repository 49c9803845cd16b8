"""Query execution: the entry points the gRPC edge calls, and the result batch.

`run_query` validates and plans a query (planner), streams rows from every filter
branch (rows, scan), merges the branches by sort key, applies the start/end cursors,
offset, limit and batch size, and renders a raw `QueryResultBatch`. It also returns the
index ranges it read (`read_ranges`) and the entity keys it fetched (`read_keys`) so a
read-write transaction can be validated at commit.

more_results, as production and the official clients use it:
    MORE_RESULTS_AFTER_LIMIT   the limit was reached (even if nothing follows)
    MORE_RESULTS_AFTER_CURSOR  the next result lies past the end cursor
    NOT_FINISHED               the batch is full (MAX_QUERY_BATCH rows or the byte
                               budget); the client re-issues the query from end_cursor
    NO_MORE_RESULTS            the scans are exhausted

Must not import api/ (the edge imports this module); GQL lives in query/gql.py.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

from google.cloud.datastore_v1.types import query as query_types

from zonestore_node.model import indexing, keys, limits
from zonestore_node.model.errors import invalid
from zonestore_node.query import aggregate, explain, gql, metadata, planner, rows, values, vectors
from zonestore_node.query.outcome import QueryOutcome
from zonestore_node.query.planner import IndexPolicy, ResultKind, Spec
from zonestore_node.storage import keycodec, mvcc
from zonestore_node.storage.engine import Family
from zonestore_node.txn.command import ReadRange

QueryResultBatch: Any = query_types.QueryResultBatch.pb()

NOT_FINISHED = 1
MORE_RESULTS_AFTER_LIMIT = 2
NO_MORE_RESULTS = 3
MORE_RESULTS_AFTER_CURSOR = 4

_U64 = struct.Struct(">Q")
# Stop adding rows once this many bytes are in the batch: one more entity (at most
# MAX_ENTITY_BYTES) still keeps the response under MAX_RESPONSE_BYTES.
_BATCH_BYTES = limits.MAX_RESPONSE_BYTES - limits.MAX_ENTITY_BYTES


def run_query(
    store: mvcc.Store,
    project: str,
    database: str,
    namespace: str,
    query: Any,
    read_ts: int,
    policy: IndexPolicy = IndexPolicy.FALLBACK,
    *,
    plan_only: bool = False,
) -> QueryOutcome:
    """`policy`: what a query needing a missing composite index does (planner): with
    CREATE it raises `NeedsIndex`, which the caller resolves and then runs it again.
    `plan_only` (query explain without analyze): plan every branch, read nothing, and
    return an empty batch with the indexes the query would use."""
    spec = planner.parse(project, database, namespace, query)
    if spec.nearest is not None:
        return run_nearest(store, spec, query, read_ts, policy, plan_only=plan_only)
    if plan_only:
        return plan(store, spec, read_ts, policy)
    ctx = rows.Context(store, spec, read_ts, policy)
    produced = metadata.rows(ctx) if spec.kind in metadata.KINDS else rows.stream(ctx)
    batch = QueryResultBatch()
    batch.entity_result_type = int(spec.result_kind)
    more = NO_MORE_RESULTS
    skipped = 0
    last_skipped: rows.Row | None = None
    last: rows.Row | None = None
    count = size = 0
    if spec.limit == 0:
        more = MORE_RESULTS_AFTER_LIMIT
    else:
        for row in produced:
            if spec.end is not None and row.sort_key > spec.end.sort_key:
                more = MORE_RESULTS_AFTER_CURSOR
                break
            if skipped < spec.offset:
                skipped += 1
                last_skipped = row
                continue
            size += render(spec, batch.entity_results.add(), row)
            last = row
            count += 1
            if spec.limit is not None and count >= spec.limit:
                more = MORE_RESULTS_AFTER_LIMIT
                break
            if count >= limits.MAX_QUERY_BATCH or size >= _BATCH_BYTES:
                more = NOT_FINISHED
                break
    batch.skipped_results = skipped
    if last_skipped is not None:
        batch.skipped_cursor = rows.position(last_skipped).encode()
    if last is not None:
        batch.end_cursor = batch.entity_results[-1].cursor
    elif last_skipped is not None:
        batch.end_cursor = batch.skipped_cursor
    else:
        batch.end_cursor = spec.start.encode()
    batch.more_results = more
    return QueryOutcome(
        batch,
        ctx.tracker.ranges(),
        ctx.read_keys,
        [p.value for p in ctx.plans],
        indexes_used=explain.indexes_used(spec, ctx.chosen),
        index_entries=ctx.tracker.index_entries,
        documents=ctx.tracker.documents + ctx.fetches,
        results=count,
        full_results=explain.full_results(spec),
    )


def plan(store: mvcc.Store, spec: Spec, read_ts: int, policy: IndexPolicy) -> QueryOutcome:
    """Choose every branch's plan without running it (metadata queries have none)."""
    ctx = rows.Context(store, spec, read_ts, policy, plan_only=True)
    if spec.kind not in metadata.KINDS:
        for branch in spec.branches:
            ctx.plan(branch)
    return QueryOutcome(
        QueryResultBatch(),
        plans=[p.value for p in ctx.plans],
        indexes_used=explain.indexes_used(spec, ctx.chosen),
        full_results=explain.full_results(spec),
    )


def run_nearest(
    store: mvcc.Store,
    spec: Spec,
    query: Any,
    read_ts: int,
    policy: IndexPolicy,
    *,
    plan_only: bool = False,
) -> QueryOutcome:
    """find_nearest (query/vectors.py): the query's filters run first as a keys-only
    query through the ordinary plans and name the admitted entities; the nearest of
    those come from the vector index; each result is read at read_ts."""
    nearest = spec.nearest
    assert nearest is not None
    if spec.kind is None or spec.kind in metadata.KINDS:
        raise invalid("find_nearest needs a kind.")
    if spec.result_kind is ResultKind.PROJECTION:
        raise vectors.unimplemented(
            "A projection (other than __key__) with find_nearest is not served (see the README)."
        )
    if query.order or query.start_cursor or query.end_cursor or query.offset:
        raise vectors.unimplemented(
            "Sort orders, cursors and offsets with find_nearest are not served (see the README)."
        )
    if query.HasField("limit") and query.limit.value < nearest.limit:
        nearest = dataclasses.replace(nearest, limit=max(query.limit.value, 0))
    # The vector index must be declared (index.yaml, or created now under --auto-index);
    # a plan without analyze creates nothing, like a missing composite index.
    if not plan_only or policy is IndexPolicy.REQUIRE:
        planner.check_vector_index(
            indexing.load_registry(store.engine),
            planner.vector_definition(spec.kind, nearest),
            policy,
        )
    prefix = vectors.index_prefix(spec.encoded_partition, spec.kind, nearest)
    index_used = {
        "query_scope": "Collection",
        "properties": f"({nearest.name} VECTOR<{nearest.dimension}>)",
    }
    ranges = [ReadRange(prefix, keycodec.prefix_end(prefix))]
    allowed: set[bytes] | None = None
    ctx: rows.Context | None = None
    if query.HasField("filter"):
        keys_query = type(query)()
        keys_query.kind.add().name = spec.kind
        keys_query.filter.CopyFrom(query.filter)
        keys_query.projection.add().property.name = "__key__"
        p = spec.partition
        key_spec = planner.parse(p.project, p.database, p.namespace, keys_query)
        ctx = rows.Context(store, key_spec, read_ts, policy, plan_only=plan_only)
        if plan_only:
            for branch in key_spec.branches:
                ctx.plan(branch)
        else:
            allowed = {row.path for row in rows.stream(ctx)}
            ranges.extend(ctx.tracker.ranges())
    used = [index_used] + (explain.indexes_used(key_spec, ctx.chosen) if ctx is not None else [])
    plans = ["vector"] + ([p.value for p in ctx.plans] if ctx is not None else [])
    batch = QueryResultBatch()
    batch.entity_result_type = int(spec.result_kind)
    batch.more_results = NO_MORE_RESULTS
    if plan_only:
        return QueryOutcome(batch, plans=plans, indexes_used=used)
    hits = vectors.Hits()
    if nearest.limit > 0:
        hits = vectors.search(store, prefix, nearest, read_ts, allowed)
    read_keys: list[bytes] = []
    for path, distance in zip(hits.paths, hits.distances, strict=True):
        encoded = spec.encoded_partition + path
        version = store.get(Family.ENTITIES, encoded, read_ts)
        read_keys.append(encoded)
        if version is None:  # cannot happen: index and entity share the snapshot
            continue
        er = batch.entity_results.add()
        render(spec, er, rows.Row(b"", path, version))
        er.ClearField("cursor")
        if nearest.result_property:
            er.entity.properties[nearest.result_property].double_value = distance
    return QueryOutcome(
        batch,
        ranges,
        read_keys + (ctx.read_keys if ctx is not None else []),
        plans,
        indexes_used=used,
        index_entries=hits.scanned + (ctx.tracker.index_entries if ctx is not None else 0),
        documents=len(read_keys) + (ctx.fetches if ctx is not None else 0),
        results=len(batch.entity_results),
        full_results=explain.full_results(spec),
    )


def render(spec: Spec, er: Any, row: rows.Row) -> int:
    """Fill one EntityResult; returns its approximate size in bytes."""
    size = 64 + len(row.sort_key)
    if spec.result_kind is ResultKind.FULL and row.version is not None:
        raw = row.version.payload[8:]
        er.entity.MergeFromString(raw)
        size += len(raw)
    elif spec.result_kind is ResultKind.FULL:
        er.entity.CopyFrom(row.entity)  # metadata results are built, not stored
        size += er.entity.ByteSize()
    else:
        if row.entity is not None:
            er.entity.key.CopyFrom(row.entity.key)
        else:
            path = keycodec.decode_path(row.path, 0)[0]
            p = spec.partition
            er.entity.key.CopyFrom(keys.build(p.project, p.database, p.namespace, path))
        size += len(row.path) * 2
        if spec.result_kind is ResultKind.PROJECTION:
            props = er.entity.properties
            for name, encoded in zip(spec.projection, row.combo, strict=True):
                values.fill(props[name], encoded)
                size += len(encoded) + len(name)
    if row.version is not None:
        commit_ts = row.version.commit_ts
        create_ts = int(_U64.unpack_from(row.version.payload)[0])
        er.version = commit_ts
        er.create_time.seconds, rem = divmod(create_ts, 1_000_000)
        er.create_time.nanos = rem * 1000
        er.update_time.seconds, rem = divmod(commit_ts, 1_000_000)
        er.update_time.nanos = rem * 1000
    er.cursor = rows.position(row).encode()
    return size


def run_aggregation(
    store: mvcc.Store,
    project: str,
    database: str,
    namespace: str,
    aggregation: Any,
    read_ts: int,
    policy: IndexPolicy = IndexPolicy.FALLBACK,
    *,
    plan_only: bool = False,
) -> QueryOutcome:
    return aggregate.run(
        store, project, database, namespace, aggregation, read_ts, policy, plan_only=plan_only
    )


def parse_gql(gql_query: Any) -> Any:
    return gql.parse_query(gql_query)


def parse_gql_aggregation(gql_query: Any) -> Any:
    return gql.parse_aggregation(gql_query)
