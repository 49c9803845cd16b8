"""GQL (placeholder)."""

from __future__ import annotations

from typing import Any

from zonestore_node.model.errors import Code, DatastoreError


def parse_query(gql_query: Any) -> Any:
    raise DatastoreError(Code.UNIMPLEMENTED, "GQL is not supported yet.")


def parse_aggregation(gql_query: Any) -> Any:
    raise DatastoreError(Code.UNIMPLEMENTED, "GQL is not supported yet.")
