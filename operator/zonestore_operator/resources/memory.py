"""The node's RocksDB memory budget (`zonestore serve --memory-budget`), derived from the
pod's memory limit so that a pod is never OOM-killed by its own caches.

RocksDB's block cache and memtables get BUDGET_SHARE of `spec.resources.limits.memory`;
the rest is the Python process (objects, gRPC buffers, query results, a snapshot being
sent) and the zonestore-edge child. Without a memory limit the node keeps its own
default (256MiB, zonestore_node.storage.memory). A pure builder: no Kubernetes calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from zonestore_operator.model.spec import DatastoreSpec

MiB = 1 << 20
BUDGET_SHARE = Decimal("0.5")
MIN_BUDGET = 32 * MiB  # the node refuses less; a pod this small will not run anyway

# Kubernetes resource quantities (k8s.io/apimachinery resource.Quantity): a decimal
# number, then a binary suffix, a decimal suffix or a decimal exponent.
_QUANTITY = re.compile(r"^([+]?[0-9]+(?:\.[0-9]*)?|[+]?\.[0-9]+)([a-zA-Z]*|[eE][+-]?[0-9]+)$")
_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(1000),
    "M": Decimal(1000) ** 2,
    "G": Decimal(1000) ** 3,
    "T": Decimal(1000) ** 4,
    "P": Decimal(1000) ** 5,
    "E": Decimal(1000) ** 6,
    "Ki": Decimal(1024),
    "Mi": Decimal(1024) ** 2,
    "Gi": Decimal(1024) ** 3,
    "Ti": Decimal(1024) ** 4,
    "Pi": Decimal(1024) ** 5,
    "Ei": Decimal(1024) ** 6,
}


def quantity_bytes(value: str | int) -> int | None:
    """Bytes of a memory quantity (`1Gi`, `512M`, `1e9`, `268435456`); None if it is not
    one (the API server validates quantities, so only a hand-made object gets here)."""
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        return None
    number, suffix = match.groups()
    try:
        if suffix[:1] in ("e", "E") and suffix[1:].lstrip("+-").isdigit():
            amount = Decimal(number) * (Decimal(10) ** int(suffix[1:]))
        elif suffix in _SUFFIX:
            amount = Decimal(number) * _SUFFIX[suffix]
        else:
            return None
    except InvalidOperation:
        return None
    return int(amount)


def budget_bytes(resources: Mapping[str, Mapping[str, str | int]]) -> int | None:
    """BUDGET_SHARE of the memory limit, in whole MiB, at least MIN_BUDGET; None
    without a limit."""
    limit = (resources.get("limits") or {}).get("memory")
    if limit is None:
        return None
    size = quantity_bytes(limit)
    if size is None:
        return None
    budget = int(Decimal(size) * BUDGET_SHARE) // MiB * MiB
    return max(budget, MIN_BUDGET)


def budget_args(spec: DatastoreSpec) -> list[str]:
    """`--memory-budget NMiB` for the node's command line, or nothing (node default)."""
    budget = budget_bytes(spec.resources)
    return [] if budget is None else ["--memory-budget", f"{budget // MiB}MiB"]
