"""Query planning and execution (being written: see the query helper's work)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zonestore_node.api.errors import unimplemented
from zonestore_node.storage import mvcc
from zonestore_node.txn.command import ReadRange


@dataclass(slots=True)
class QueryOutcome:
    batch: Any
    read_ranges: list[ReadRange] = field(default_factory=list)


def run_query(
    store: mvcc.Store, project: str, database: str, namespace: str, query: Any, read_ts: int
) -> QueryOutcome:
    raise unimplemented("queries are not served yet")


def run_aggregation(
    store: mvcc.Store, project: str, database: str, namespace: str, aggregation: Any, read_ts: int
) -> QueryOutcome:
    raise unimplemented("aggregation queries are not served yet")


def parse_gql(gql: Any) -> Any:
    raise unimplemented("GQL is not supported yet")


def parse_gql_aggregation(gql: Any) -> Any:
    raise unimplemented("GQL is not supported yet")
