"""Query explain: `ExplainMetrics` for RunQuery and RunAggregationQuery.

`explain_options` without `analyze` plans the query and reads nothing (production:
"no index or read operations are performed"): `plan_summary.indexes_used` only, and no
result batch. With `analyze` the query runs as usual and the response carries the
results plus `execution_stats`.

`indexes_used`, in the shape production reports (a Struct per index, `query_scope` and
`properties`, e.g. `{"query_scope": "Collection", "properties": "(age ASC, __name__
ASC)"}`), one entry per distinct index the query's branches scan:
    KEY        the built-in kind index, "(__name__ ASC)" (DESC under a key-descending
               order); a kindless query's scope is "Collection Group"
    JOIN       one built-in single-property index per equality property,
               "(p ASC, __name__ ASC)" (the zig-zag merge join scans each)
    ORDERED    the first order's built-in index, "(p ASC|DESC, __name__ ASC)"
    SORTED     the equality properties' built-in indexes, like JOIN (the sort is in
               memory: zonestore had no composite index, `--auto-index fallback`)
    COMPOSITE  the composite index's columns then "__name__ ASC"; the scope is
               "Includes Ancestors" for an ancestor index. Under `--auto-index true` a
               plan-only explain names the index the query would create and use,
               without creating it.
Metadata queries (`__kind__`, ...) scan no user index: an empty list.

`execution_stats`: `results_returned` (entities, projections or keys; 1 for an
aggregation), `execution_duration` (measured by the edge around the run),
`read_operations`, and `debug_stats` as production names them (string values):
`index_entries_scanned`, `documents_scanned` (entities read, whether fetched after an
index entry or scanned by a kindless query), `billing_details` (`documents_billable`,
`index_entries_billable`, `min_query_cost`), plus `zonestore_plans`, the plan kind of
every branch. Production's pricing is not written down to the entry; zonestore bills
as its pricing page reads: a query returning entities costs one read per entity
returned; keys-only, projection and aggregation queries one read per started 1,000
index entries scanned; at least one read per query (`min_query_cost` "1" when that
minimum applied).

Imports query/ (planner, rows, outcome) and google's message types only.
"""

from __future__ import annotations

import math
from typing import Any

from google.cloud.datastore_v1.types import query_profile

from zonestore_node.model import indexing
from zonestore_node.query import filters, planner
from zonestore_node.query.outcome import QueryOutcome
from zonestore_node.query.planner import PlanKind, ResultKind, Spec

ExplainMetricsPb: Any = query_profile.ExplainMetrics.pb()

COLLECTION = "Collection"
COLLECTION_GROUP = "Collection Group"
INCLUDES_ANCESTORS = "Includes Ancestors"
KEY_COLUMN = "__name__"


def _column(name: str, descending: bool) -> str:
    return (
        f"{KEY_COLUMN if name == filters.KEY_PROPERTY else name} {'DESC' if descending else 'ASC'}"
    )


def _entry(scope: str, columns: list[str]) -> dict[str, str]:
    return {"query_scope": scope, "properties": "(" + ", ".join(columns) + ")"}


def indexes_used(
    spec: Spec, chosen: list[tuple[planner.Plan, indexing.CompositeDefinition | None]]
) -> list[dict[str, str]]:
    """The indexes the branches' plans scan, each once, in the order first used."""
    out: list[dict[str, str]] = []
    key_order = next((o for o in spec.orders if o.name == filters.KEY_PROPERTY), None)
    key_desc = key_order is not None and key_order.descending
    for plan, definition in chosen:
        entries: list[dict[str, str]] = []
        if plan.kind is PlanKind.KEY:
            scope = COLLECTION if spec.kind is not None else COLLECTION_GROUP
            entries.append(_entry(scope, [_column(KEY_COLUMN, key_desc)]))
        elif plan.kind in (PlanKind.JOIN, PlanKind.SORTED):
            for name in dict.fromkeys(name for name, _ in plan.equalities):
                entries.append(
                    _entry(COLLECTION, [_column(name, False), _column(KEY_COLUMN, False)])
                )
        elif plan.kind is PlanKind.ORDERED:
            assert plan.order_property is not None
            lead = next(o for o in spec.orders if o.name == plan.order_property)
            entries.append(
                _entry(
                    COLLECTION,
                    [_column(lead.name, lead.descending), _column(KEY_COLUMN, False)],
                )
            )
        else:
            assert definition is not None
            scope = INCLUDES_ANCESTORS if definition.ancestor else COLLECTION
            columns = [_column(c.name, c.descending) for c in definition.columns]
            entries.append(_entry(scope, [*columns, _column(KEY_COLUMN, False)]))
        for entry in entries:
            if entry not in out:
                out.append(entry)
    return out


def read_operations(outcome: QueryOutcome) -> tuple[int, int, int, bool]:
    """(read_operations, documents_billable, index_entries_billable, minimum applied)."""
    if outcome.full_results:
        documents, entries = outcome.results, 0
    else:
        documents, entries = 0, outcome.index_entries
    cost = documents + math.ceil(entries / 1000)
    return max(1, cost), documents, entries, cost < 1


def metrics(outcome: QueryOutcome, *, analyze: bool, duration_seconds: float) -> Any:
    """The raw `ExplainMetrics` for a response (execution stats only with analyze)."""
    out = ExplainMetricsPb()
    out.plan_summary.SetInParent()
    for entry in outcome.indexes_used:
        struct = out.plan_summary.indexes_used.add()
        struct.update(entry)
    if not analyze:
        return out
    stats = out.execution_stats
    stats.results_returned = outcome.results
    whole = int(duration_seconds)
    stats.execution_duration.seconds = whole
    stats.execution_duration.nanos = int((duration_seconds - whole) * 1e9)
    reads, documents, entries, minimum = read_operations(outcome)
    stats.read_operations = reads
    stats.debug_stats.update(
        {
            "index_entries_scanned": str(outcome.index_entries),
            "documents_scanned": str(outcome.documents),
            "billing_details": {
                "documents_billable": str(documents),
                "index_entries_billable": str(entries),
                "min_query_cost": "1" if minimum else "0",
            },
            "zonestore_plans": ",".join(outcome.plans),
        }
    )
    return out


def full_results(spec: Spec) -> bool:
    return spec.result_kind is ResultKind.FULL
