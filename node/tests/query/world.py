"""A small world for query tests: a real RocksDB, entities committed through apply().

`World.put` commits one entity at the next commit timestamp (1000, 1010, ...) through
`txn.apply.apply`, exactly the path a replica applies commits by, so indexes are the
real ones. Query protobufs are built from plain Python values with the helpers below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.cloud.datastore_v1.types import query as query_types

from zonestore_node.model import indexing, keys
from zonestore_node.model.indexing import EntityPb, ValuePb
from zonestore_node.model.keys import KeyPb
from zonestore_node.query import executor, planner
from zonestore_node.query.outcome import QueryOutcome
from zonestore_node.storage import mvcc
from zonestore_node.storage.engine import Engine
from zonestore_node.txn import apply
from zonestore_node.txn.command import CommitCommand, CreateIndexCommand, Op, Write

QueryPb: Any = query_types.Query.pb()
FilterPb: Any = query_types.Filter.pb()
AggregationQueryPb: Any = query_types.AggregationQuery.pb()

PROJECT = "proj"
OPS = {"<": 1, "<=": 2, ">": 3, ">=": 4, "=": 5, "in": 6, "!=": 9, "ancestor": 11, "not_in": 13}

Path_ = tuple[tuple[str, int | str], ...]


def key(*flat: str | int, namespace: str = "") -> Any:
    """key("A", 1, "B", "x") -> Key A:1/B:x in the test project."""
    k = KeyPb()
    k.partition_id.project_id = PROJECT
    if namespace:
        k.partition_id.namespace_id = namespace
    for kind, ident in zip(flat[::2], flat[1::2], strict=True):
        element = k.path.add()
        element.kind = str(kind)
        if isinstance(ident, int):
            element.id = ident
        else:
            element.name = ident
    return k


def set_value(target: Any, value: Any, *, indexed: bool = True) -> None:
    if value is None:
        target.null_value = 0
    elif isinstance(value, bool):
        target.boolean_value = value
    elif isinstance(value, int):
        target.integer_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bytes):
        target.blob_value = value
    elif isinstance(value, list):
        target.array_value.SetInParent()
        for element in value:
            set_value(target.array_value.values.add(), element, indexed=indexed)
        return
    elif isinstance(value, type(KeyPb())):
        target.key_value.CopyFrom(value)
    else:
        raise TypeError(value)
    if not indexed:
        target.exclude_from_indexes = True


def entity(k: Any, unindexed: tuple[str, ...] = (), **props: Any) -> Any:
    e = EntityPb()
    e.key.CopyFrom(k)
    for name, value in props.items():
        set_value(e.properties[name], value, indexed=name not in unindexed)
    return e


def value(v: Any) -> Any:
    out = ValuePb()
    set_value(out, v)
    return out


def pf(name: str, op: str, v: Any) -> Any:
    f = FilterPb()
    f.property_filter.property.name = name
    f.property_filter.op = OPS[op]
    set_value(f.property_filter.value, v)
    return f


def composite(op: int, *children: Any) -> Any:
    f = FilterPb()
    f.composite_filter.op = op
    f.composite_filter.SetInParent()
    for child in children:
        f.composite_filter.filters.add().CopyFrom(child)
    return f


def and_(*children: Any) -> Any:
    return composite(1, *children)


def or_(*children: Any) -> Any:
    return composite(2, *children)


def query(
    kind: str | None = None,
    where: Any = None,
    order: tuple[str, ...] = (),
    limit: int | None = None,
    offset: int = 0,
    projection: tuple[str, ...] = (),
    distinct_on: tuple[str, ...] = (),
    start: bytes = b"",
    end: bytes = b"",
) -> Any:
    """order: "a" ascending, "-a" descending."""
    q = QueryPb()
    if kind is not None:
        q.kind.add().name = kind
    if where is not None:
        q.filter.CopyFrom(where)
    for o in order:
        po = q.order.add()
        po.property.name = o.lstrip("-")
        po.direction = 2 if o.startswith("-") else 1
    if limit is not None:
        q.limit.value = limit
    q.offset = offset
    for name in projection:
        q.projection.add().property.name = name
    for name in distinct_on:
        q.distinct_on.add().name = name
    if start:
        q.start_cursor = start
    if end:
        q.end_cursor = end
    return q


class World:
    def __init__(self, path: Path) -> None:
        self.engine = Engine(path)
        self.store = mvcc.Store(self.engine)
        self.commit_ts = 990

    def close(self) -> None:
        self.engine.close()

    def commit(self, writes: list[Write]) -> int:
        self.commit_ts += 10
        command = CommitCommand(self.commit_ts, tuple(writes))
        batch = self.engine.batch()
        result = apply.apply(self.store, command, batch)
        assert result.error is None, result.message
        self.engine.write(batch)
        return self.commit_ts

    def put(self, *entities: Any) -> int:
        writes = []
        for e in entities:
            keys.normalize(e.key, PROJECT, "")
            writes.append(Write(Op.UPSERT, keys.encode(e.key), e.SerializeToString()))
        return self.commit(writes)

    def delete(self, k: Any) -> int:
        keys.normalize(k, PROJECT, "")
        return self.commit([Write(Op.DELETE, keys.encode(k), b"")])

    def create_index(self, definition: indexing.CompositeDefinition) -> apply.ApplyResult:
        """Apply a CreateIndexCommand at the next commit timestamp (register + backfill)."""
        self.commit_ts += 10
        batch = self.engine.batch()
        result = apply.create_index(
            self.store, CreateIndexCommand(self.commit_ts, definition), batch
        )
        self.engine.write(batch)
        return result

    def run(
        self,
        q: Any,
        *,
        namespace: str = "",
        read_ts: int | None = None,
        policy: planner.IndexPolicy = planner.IndexPolicy.FALLBACK,
    ) -> QueryOutcome:
        """With IndexPolicy.CREATE, missing composite indexes are created (as the edge
        does), and the query runs again at the newest commit."""
        for _ in range(32):
            ts = self.commit_ts if read_ts is None else read_ts
            try:
                return executor.run_query(self.store, PROJECT, "", namespace, q, ts, policy)
            except planner.NeedsIndex as exc:
                self.create_index(exc.definition)
        raise AssertionError("the query kept asking for indexes")

    def names(self, q: Any, **kw: Any) -> list[int | str]:
        """The last path element id/name of each result of one batch."""
        batch = self.run(q, **kw).batch
        return [ident(er.entity.key) for er in batch.entity_results]

    def all_names(self, q: Any, **kw: Any) -> list[int | str]:
        """Follow NOT_FINISHED batches like the official client does."""
        out: list[int | str] = []
        while True:
            batch = self.run(q, **kw).batch
            out.extend(ident(er.entity.key) for er in batch.entity_results)
            if batch.more_results != 1:
                return out
            q.start_cursor = batch.end_cursor
            if q.HasField("limit"):
                q.limit.value -= len(batch.entity_results)
            q.offset = max(0, q.offset - batch.skipped_results)

    def aggregate(
        self, nested: Any, *aggs: tuple[str, str, str], read_ts: int | None = None
    ) -> dict[str, Any]:
        """aggs: (operator, property, alias); returns alias -> python value."""
        a = AggregationQueryPb()
        a.nested_query.CopyFrom(nested)
        for op, prop, alias in aggs:
            agg = a.aggregations.add()
            if op == "count":
                agg.count.SetInParent()
                if prop:
                    agg.count.up_to.value = int(prop)
            else:
                getattr(agg, op).property.name = prop
            if alias:
                agg.alias = alias
        ts = self.commit_ts if read_ts is None else read_ts
        out = executor.run_aggregation(self.store, PROJECT, "", "", a, ts)
        props = out.batch.aggregation_results[0].aggregate_properties
        return {name: python(v) for name, v in props.items()}


def ident(k: Any) -> int | str:
    last = k.path[-1]
    found: int | str = last.id if last.WhichOneof("id_type") == "id" else last.name
    return found


def python(v: Any) -> Any:
    which = v.WhichOneof("value_type")
    if which == "null_value":
        return None
    if which == "array_value":
        return [python(x) for x in v.array_value.values]
    if which == "key_value":
        return tuple((e.kind, ident_of(e)) for e in v.key_value.path)
    return getattr(v, which)


def ident_of(element: Any) -> int | str:
    found: int | str = element.id if element.WhichOneof("id_type") == "id" else element.name
    return found
