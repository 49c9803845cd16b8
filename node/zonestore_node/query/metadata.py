"""Metadata queries: __kind__, __namespace__ and __property__ (placeholder)."""

from __future__ import annotations

from typing import Any

from zonestore_node.model.errors import Code, DatastoreError
from zonestore_node.query.outcome import QueryOutcome
from zonestore_node.query.planner import Spec
from zonestore_node.storage import mvcc

KINDS = frozenset({"__kind__", "__namespace__", "__property__"})


def run(store: mvcc.Store, spec: Spec, read_ts: int) -> QueryOutcome:
    raise DatastoreError(Code.UNIMPLEMENTED, "metadata queries are not served yet")


_ = Any
