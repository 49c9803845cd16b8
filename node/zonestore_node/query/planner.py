"""Planner: a validated, normalized query and the plan that serves each branch.

Orders. The effective order list is the explicit orders, then (Firestore's rule for
multiple inequality fields) every inequality property not already ordered, by name,
then the key ascending as the final tie-break. Orders after `__key__` are dropped.

Sort key. Every result has one byte string that sorts like the query's order
(`sort_key`): per order, the result's value (inverted for DESC: encodings are
prefix-free, so inversion reverses the order and concatenation stays unambiguous),
then the encoded key path. For an array property the entity's value is the smallest
(ASC) or largest (DESC) element that satisfies the branch's filters on it -- the index
entry a scan reaches first -- and an entity that lacks an ordered property has no
index entry and no sort key: it does not match. Across OR branches an entity's sort key
is the smallest of its branches' keys, and only the branch that produces that key
emits it, so each entity appears once even across pages.

Plans (per branch), all index scans; costs in index entries read (n = the scanned
range, k = results handed out):
    KEY        no property order: kind index (`K` prefix, bounded by the key/ancestor
               intervals), O(k) plus skipped offsets. Kindless: the entities family.
    JOIN       equality filters, no property order: zig-zag merge join of one equality
               scan per (property, value), each ordered by key. O(k * fan-out) seeks.
    ORDERED    the first order is property p (an inequality or a sort): scan p's index
               over p's intervals (reverse for DESC), fetch each entity for the
               residual filters; runs of equal p values are sorted by the remaining
               orders in memory. O(n) entries up to the k-th result.
    SORTED     equalities plus a property order no single index gives: when the
               equality scan holds at most `SORT_PROBE` keys, fetch them all and sort
               in memory (O(matches)); otherwise fall back to ORDERED with the
               equalities as residual filters. No composite indexes are kept.
Imports model/, storage.keycodec and query.filters.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from zonestore_node.model import keys
from zonestore_node.model.errors import invalid
from zonestore_node.query import cursor as cursor_mod
from zonestore_node.query import filters
from zonestore_node.storage import keycodec

ASCENDING = 1
DESCENDING = 2
SORT_PROBE = 2000


class ResultKind(enum.IntEnum):
    FULL = 1
    PROJECTION = 2
    KEY_ONLY = 3


class PlanKind(enum.Enum):
    KEY = "key"
    JOIN = "join"
    ORDERED = "ordered"
    SORTED = "sorted"


@dataclass(frozen=True, slots=True)
class Order:
    name: str
    descending: bool


@dataclass(slots=True)
class Spec:
    """A validated query, everything in encoded bytes."""

    partition: keys.Partition
    encoded_partition: bytes
    kind: str | None
    branches: list[filters.Branch]
    orders: list[Order]
    projection: list[str]  # property names, without __key__
    result_kind: ResultKind
    distinct_on: list[str]
    start: cursor_mod.Position
    end: cursor_mod.Position | None
    offset: int
    limit: int | None
    key_only_order: bool = field(init=False)

    def __post_init__(self) -> None:
        self.key_only_order = all(o.name == filters.KEY_PROPERTY for o in self.orders)


def parse(project: str, database: str, namespace: str, query: Any) -> Spec:
    partition = keys.Partition(project, database, namespace)
    if namespace:
        keys.check_name(namespace, "namespace")
    if query.HasField("find_nearest"):
        raise invalid("find_nearest (vector search) is not supported.")
    if len(query.kind) > 1:
        raise invalid("A query may name at most one kind.")
    kind = query.kind[0].name if query.kind else None
    if kind is not None and not kind:
        raise invalid("The query's kind is empty.")
    parser = filters.FilterParser(partition, kindless=kind is None)
    parsed = parser.parse(query.filter if query.HasField("filter") else None)

    projection: list[str] = []
    key_in_projection = False
    for p in query.projection:
        name = p.property.name
        if not name:
            raise invalid("A projection must name a property.")
        if name == filters.KEY_PROPERTY:
            key_in_projection = True
            continue
        if name in projection:
            raise invalid(f'Property "{name}" is projected more than once.')
        if name in parsed.equality_properties:
            raise invalid(f'Cannot project property "{name}": it is used in an equality filter.')
        projection.append(name)
    if projection:
        result_kind = ResultKind.PROJECTION
    elif key_in_projection:
        result_kind = ResultKind.KEY_ONLY
    else:
        result_kind = ResultKind.FULL

    distinct_on = [d.name for d in query.distinct_on]
    for name in distinct_on:
        if name not in projection:
            raise invalid(f'distinct_on property "{name}" must also be projected.')
    if len(set(distinct_on)) != len(distinct_on):
        raise invalid("distinct_on names a property twice.")

    orders = _orders(query, parsed, distinct_on, kindless=kind is None)
    if kind is None and projection:
        raise invalid("A kindless query cannot project properties.")

    if query.offset < 0:
        raise invalid("The query offset must not be negative.")
    limit: int | None = None
    if query.HasField("limit"):
        limit = query.limit.value
        if limit < 0:
            raise invalid("The query limit must not be negative.")
    start = cursor_mod.decode(query.start_cursor) if query.start_cursor else cursor_mod.START
    end = cursor_mod.decode(query.end_cursor) if query.end_cursor else None
    return Spec(
        partition=partition,
        encoded_partition=partition.encoded(),
        kind=kind,
        branches=parsed.branches,
        orders=orders,
        projection=projection,
        result_kind=result_kind,
        distinct_on=distinct_on,
        start=start,
        end=end,
        offset=query.offset,
        limit=limit,
    )


def _orders(
    query: Any, parsed: filters.ParsedFilter, distinct_on: list[str], *, kindless: bool
) -> list[Order]:
    orders: list[Order] = []
    seen: set[str] = set()
    for o in query.order:
        name = o.property.name
        if not name:
            raise invalid("A sort order must name a property.")
        if o.direction not in (0, ASCENDING, DESCENDING):
            raise invalid(f'Unknown sort direction on "{name}".')
        if name in seen:
            continue  # Datastore ignores a repeated order on the same property
        seen.add(name)
        orders.append(Order(name, o.direction == DESCENDING))
    if distinct_on:
        if not orders:
            orders = [Order(name, False) for name in distinct_on]
            seen = set(distinct_on)
        elif [o.name for o in orders[: len(distinct_on)]] != distinct_on[: len(orders)]:
            raise invalid("The sort orders must start with the distinct_on properties.")
        else:
            for name in distinct_on:
                if name not in seen:
                    orders.append(Order(name, False))
                    seen.add(name)
    for name in sorted(parsed.inequality_properties):
        if name not in seen:
            orders.append(Order(name, False))
            seen.add(name)
    if kindless and any(o.name != filters.KEY_PROPERTY or o.descending for o in orders):
        raise invalid("A kindless query can only be ordered by __key__ ascending.")
    for i, o in enumerate(orders):
        if o.name == filters.KEY_PROPERTY:
            return orders[: i + 1]
    return orders


# Sort keys ------------------------------------------------------------------


def order_value(order: Order, branch: filters.Branch, values: list[bytes]) -> bytes | None:
    """The entity's value standing for `order` in `branch` (None: not in that index)."""
    constraint = branch.properties.get(order.name)
    allowed = constraint.allowed(values) if constraint is not None else values
    if not allowed:
        return None
    return max(allowed) if order.descending else min(allowed)


def branch_sort_key(
    spec: Spec, branch: filters.Branch, values: dict[str, list[bytes]], path: bytes
) -> bytes | None:
    """The sort key of an entity in one branch, or None when it does not match."""
    if not branch.matches(values, path):
        return None
    parts: list[bytes] = []
    for order in spec.orders:
        if order.name == filters.KEY_PROPERTY:
            parts.append(keycodec.invert(path) if order.descending else path)
            return b"".join(parts)
        value = order_value(order, branch, values.get(order.name, []))
        if value is None:
            return None
        parts.append(keycodec.invert(value) if order.descending else value)
    parts.append(path)
    return b"".join(parts)


def canonical_sort_key(spec: Spec, values: dict[str, list[bytes]], path: bytes) -> bytes | None:
    best: bytes | None = None
    for branch in spec.branches:
        key = branch_sort_key(spec, branch, values, path)
        if key is not None and (best is None or key < best):
            best = key
    return best


def first_component(spec: Spec, sort_key: bytes) -> bytes:
    """The leading order's value (un-inverted) of a sort key; b"" if it has none."""
    if not sort_key or not spec.orders:
        return b""
    order = spec.orders[0]
    raw = keycodec.invert(sort_key) if order.descending else sort_key
    try:
        if order.name == filters.KEY_PROPERTY:
            end = keycodec.decode_path(raw, 0)[1]
        else:
            end = keycodec.skip_value(raw, 0)
    except (keycodec.DecodeError, IndexError, ValueError) as exc:
        raise invalid("Invalid cursor.") from exc
    return raw[:end]


def component_lengths(spec: Spec, sort_key: bytes, count: int) -> int:
    """Byte length of the first `count` order components of a sort key."""
    pos = 0
    for order in spec.orders[:count]:
        raw = keycodec.invert(sort_key[pos:]) if order.descending else sort_key[pos:]
        if order.name == filters.KEY_PROPERTY:
            pos += keycodec.decode_path(raw, 0)[1]
        else:
            pos += keycodec.skip_value(raw, 0)
    return pos


# Plan choice --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    kind: PlanKind
    order_property: str | None = None  # ORDERED: the scanned property
    equalities: tuple[tuple[str, bytes], ...] = ()  # JOIN / SORTED: (property, value)
    exact: bool = False  # the scan alone decides membership (no residual filters)


def leading_property(spec: Spec, branch: filters.Branch) -> str | None:
    """The first order this branch does not hold constant (equalities fix a value)."""
    for order in spec.orders:
        if order.name == filters.KEY_PROPERTY:
            return None
        constraint = branch.properties.get(order.name)
        if constraint is not None and constraint.eq:
            continue
        return order.name
    return None


def choose(spec: Spec, branch: filters.Branch, probe: Any) -> Plan:
    """`probe(equalities)` counts the join's keys up to SORT_PROBE + 1 (SORTED only)."""
    equalities = tuple(
        (name, value) for name, c in sorted(branch.properties.items()) for value in c.eq
    )
    residual_free = all(c.ranges is None for c in branch.properties.values())
    lead = leading_property(spec, branch)
    if lead is None and spec.kind is not None and equalities:
        return Plan(PlanKind.JOIN, equalities=equalities, exact=residual_free)
    if lead is None:
        return Plan(PlanKind.KEY, exact=not branch.properties)
    if equalities and probe(equalities) <= SORT_PROBE:
        return Plan(PlanKind.SORTED, equalities=equalities)
    return Plan(PlanKind.ORDERED, order_property=lead)
