"""What a query hands back to the edge: the raw result batch and what it read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zonestore_node.txn.command import ReadRange


@dataclass(slots=True)
class QueryOutcome:
    batch: Any  # raw QueryResultBatch or AggregationResultBatch
    read_ranges: list[ReadRange] = field(default_factory=list)
    # Encoded entity keys whose contents decided the result: a transaction should
    # validate them like looked-up keys (a change to a residual-filtered property of an
    # examined entity touches no scanned index range).
    read_keys: list[bytes] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)  # PlanKind values, one per branch run
    # Query explain (query.explain): the indexes the plans scan, in production's shape,
    # and what the run read and returned.
    indexes_used: list[dict[str, str]] = field(default_factory=list)
    index_entries: int = 0
    documents: int = 0
    results: int = 0
    full_results: bool = False  # entities returned (billed per entity), not keys/projections
