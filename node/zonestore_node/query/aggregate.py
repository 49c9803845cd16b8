"""Aggregation queries: count, sum and avg over the rows of a nested query.

The nested query's cursors, offset and limit apply as for RunQuery; the aggregations
see every row it would return (never cut into batches). A count needs no entity when
the nested query's plan decides membership from the index alone (keys come from the
scan); sum and avg read each entity's property.

Production's rules kept here: at most 5 aggregations, unique aliases, a default alias
`property_<n>` (n counts the aggregations without one, from 1), `up_to` positive; sum
of integers stays an integer unless it overflows int64 or a double is present (then a
double); avg is a double, null when no row has a numeric value; non-numeric values are
ignored.
"""

from __future__ import annotations

from typing import Any

from google.cloud.datastore_v1.types import aggregation_result as result_types

from zonestore_node.model import keys
from zonestore_node.model.errors import invalid
from zonestore_node.query import explain, metadata, planner, rows, vectors
from zonestore_node.query.outcome import QueryOutcome
from zonestore_node.query.planner import ResultKind
from zonestore_node.storage import mvcc

AggregationResultBatch: Any = result_types.AggregationResultBatch.pb()
MAX_AGGREGATIONS = 5
NO_MORE_RESULTS = 3
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


class _Accumulator:
    def __init__(self, which: str, prop: str, up_to: int | None) -> None:
        self.which = which
        self.prop = prop.split(".") if prop else []
        self.up_to = up_to
        self.count = 0
        self.int_sum = 0
        self.float_sum = 0.0
        self.saw_double = False

    def add(self, entity: Any) -> None:
        if self.which == "count":
            self.count += 1
            return
        value = _lookup(entity, self.prop)
        if value is None:
            return
        which = value.WhichOneof("value_type")
        if which == "integer_value":
            self.int_sum += value.integer_value
        elif which == "double_value":
            self.float_sum += value.double_value
            self.saw_double = True
        else:
            return
        self.count += 1

    def full(self) -> bool:
        return self.which == "count" and self.up_to is not None and self.count >= self.up_to

    def fill(self, target: Any) -> None:
        if self.which == "count":
            target.integer_value = self.count
        elif self.which == "sum":
            if self.saw_double or not _INT64_MIN <= self.int_sum <= _INT64_MAX:
                target.double_value = float(self.int_sum) + self.float_sum
            else:
                target.integer_value = self.int_sum
        elif self.count == 0:
            target.null_value = 0
        else:
            target.double_value = (float(self.int_sum) + self.float_sum) / self.count


def _lookup(entity: Any, path: list[str]) -> Any:
    value = None
    current = entity
    for i, part in enumerate(path):
        if part not in current.properties:
            return None
        value = current.properties[part]
        if i < len(path) - 1:
            if value.WhichOneof("value_type") != "entity_value":
                return None
            current = value.entity_value
    return value


def _accumulators(aggregation: Any) -> list[tuple[str, _Accumulator]]:
    if not aggregation.aggregations:
        raise invalid("An aggregation query needs at least one aggregation.")
    if len(aggregation.aggregations) > MAX_AGGREGATIONS:
        raise invalid(f"An aggregation query may have at most {MAX_AGGREGATIONS} aggregations.")
    out: list[tuple[str, _Accumulator]] = []
    aliases: set[str] = set()
    unnamed = 0
    for agg in aggregation.aggregations:
        alias = agg.alias
        if not alias:
            unnamed += 1
            alias = f"property_{unnamed}"
        else:
            keys.check_name(alias, "aggregation alias")
        if alias in aliases:
            raise invalid(f'The aggregation alias "{alias}" is used twice.')
        aliases.add(alias)
        which = agg.WhichOneof("operator")
        if which == "count":
            up_to = agg.count.up_to.value if agg.count.HasField("up_to") else None
            if up_to is not None and up_to <= 0:
                raise invalid("count up_to must be positive.")
            out.append((alias, _Accumulator("count", "", up_to)))
        elif which in ("sum", "avg"):
            prop = getattr(agg, which).property.name
            if not prop:
                raise invalid(f"A {which} aggregation must name a property.")
            out.append((alias, _Accumulator(which, prop, None)))
        else:
            raise invalid("An aggregation must be a count, sum or avg.")
    return out


def run(
    store: mvcc.Store,
    project: str,
    database: str,
    namespace: str,
    aggregation: Any,
    read_ts: int,
    policy: planner.IndexPolicy = planner.IndexPolicy.FALLBACK,
    *,
    plan_only: bool = False,
) -> QueryOutcome:
    """`plan_only` (query explain without analyze): validate and plan, read nothing."""
    if not aggregation.HasField("nested_query"):
        raise invalid("An aggregation query needs a nested query.")
    accumulators = _accumulators(aggregation)
    spec = planner.parse(project, database, namespace, aggregation.nested_query)
    needs_entity = any(acc.which != "count" for _, acc in accumulators)
    batch = AggregationResultBatch()
    result = batch.aggregation_results.add()
    if spec.kind in metadata.KINDS:
        raise invalid("Aggregations over metadata queries are not supported.")
    if spec.nearest is not None:
        raise vectors.unimplemented(
            "An aggregation over a find_nearest query is not served (see the README)."
        )
    if spec.result_kind is not ResultKind.PROJECTION:
        spec.result_kind = ResultKind.FULL if needs_entity else ResultKind.KEY_ONLY
    ctx = rows.Context(store, spec, read_ts, policy, plan_only=plan_only)
    if plan_only:
        for branch in spec.branches:
            ctx.plan(branch)
        return QueryOutcome(
            AggregationResultBatch(),
            plans=[p.value for p in ctx.plans],
            indexes_used=explain.indexes_used(spec, ctx.chosen),
        )
    skipped = taken = 0
    if spec.limit != 0:
        for row in rows.stream(ctx):
            if spec.end is not None and row.sort_key > spec.end.sort_key:
                break
            if skipped < spec.offset:
                skipped += 1
                continue
            entity = None
            if needs_entity:
                entity = row.entity
                if entity is None:
                    parsed = ctx.parsed(row.path, row.version)
                    if parsed is None:
                        continue
                    entity = parsed.entity
            for _, acc in accumulators:
                if not acc.full():
                    acc.add(entity)
            taken += 1
            if spec.limit is not None and taken >= spec.limit:
                break
            if all(acc.full() for _, acc in accumulators):
                break
    for alias, acc in accumulators:
        acc.fill(result.aggregate_properties[alias])
    batch.more_results = NO_MORE_RESULTS
    return QueryOutcome(
        batch,
        ctx.tracker.ranges(),
        ctx.read_keys,
        [p.value for p in ctx.plans],
        indexes_used=explain.indexes_used(spec, ctx.chosen),
        index_entries=ctx.tracker.index_entries,
        documents=ctx.tracker.documents + ctx.fetches,
        results=1,
    )
