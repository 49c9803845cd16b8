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
    COMPOSITE  an order no built-in index gives (equalities or an ancestor plus a
               property order, several property orders, an inequality and a different
               first sort): a matching composite index (`needed_index`, `matches`),
               scanned under the prefix the equalities (and ancestor) fix, its first
               column bounded by that property's intervals; each entity is handed out
               at the entry holding its sort-key values. O(k) entries plus residuals.
    SORTED     only without a ready composite index (IndexPolicy.FALLBACK, or a
               snapshot older than the index): when the equality scan holds at most
               `SORT_PROBE` keys, fetch them all and sort in memory (O(matches));
               otherwise fall back to ORDERED with the equalities as residual filters.

Missing composite indexes (`IndexPolicy`; the same for find_nearest's vector indexes,
`check_vector_index`): CREATE raises `NeedsIndex(definition)`, the
edge has the index created through the log and runs the query again; REQUIRE refuses
like production (FAILED_PRECONDITION "no matching index found" with the index.yaml
entry to add); FALLBACK serves the query with the in-memory plans above. Projection
queries never need one here (their rows come from ORDERED/SORTED as before).

Matching (Datastore's rules): same kind, same ancestor flag, the equality properties
first in any order (any direction), then exactly the query's remaining property orders,
names and directions, the inequality properties among them; `__key__` ascending is the
implicit last column (a `__key__` descending tie-break sorts runs of equal columns).
Imports model/, storage.keycodec and query.filters.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from zonestore_node.model import indexing, keys
from zonestore_node.model.errors import Code, DatastoreError, invalid
from zonestore_node.query import cursor as cursor_mod
from zonestore_node.query import filters, vectors
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
    COMPOSITE = "composite"


class IndexPolicy(enum.Enum):
    """What a query that needs a missing composite index does (see module docstring)."""

    CREATE = "true"
    REQUIRE = "false"
    FALLBACK = "fallback"


class NeedsIndex(Exception):
    """The query needs this composite index; the edge creates it and runs it again."""

    def __init__(self, definition: indexing.CompositeDefinition) -> None:
        super().__init__(definition.yaml())
        self.definition = definition


def no_matching_index(definition: indexing.CompositeDefinition) -> DatastoreError:
    return DatastoreError(
        Code.FAILED_PRECONDITION,
        "no matching index found. recommended index is:\n" + definition.yaml(),
    )


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
    nearest: vectors.Nearest | None = None  # find_nearest (query/vectors.py)
    key_only_order: bool = field(init=False)

    def __post_init__(self) -> None:
        self.key_only_order = all(o.name == filters.KEY_PROPERTY for o in self.orders)


def parse(project: str, database: str, namespace: str, query: Any) -> Spec:
    partition = keys.Partition(project, database, namespace)
    if namespace:
        keys.check_name(namespace, "namespace")
    nearest = vectors.parse(query.find_nearest) if query.HasField("find_nearest") else None
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
        nearest=nearest,
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
    index: indexing.CompositeIndex | None = None  # COMPOSITE
    columns: tuple[Order, ...] = ()  # COMPOSITE: the scanned columns, after the prefix


@dataclass(frozen=True, slots=True)
class Need:
    """What a branch asks of a composite index."""

    equal: frozenset[str]  # properties fixed by equality filters (a prefix, any order)
    columns: tuple[Order, ...]  # then these, in this order and direction
    ancestor: bool
    definition: indexing.CompositeDefinition  # the one to create when none matches


def needed_index(spec: Spec, branch: filters.Branch) -> Need | None:
    """The composite index this branch needs, or None when a built-in index serves it:
    the equality properties (by name, ascending), then the property orders they do not
    fix. Kindless and projection queries never need one."""
    if spec.kind is None or spec.result_kind is ResultKind.PROJECTION:
        return None
    equal = sorted(name for name, c in branch.properties.items() if c.eq)
    columns: list[Order] = []
    for order in spec.orders:
        if order.name == filters.KEY_PROPERTY:
            break
        if order.name not in equal:
            columns.append(order)
    if not columns:
        return None  # KEY / JOIN
    ancestor = branch.ancestor is not None
    if not equal and not ancestor and len(columns) == 1:
        return None  # one property's built-in index (ORDERED)
    definition = indexing.CompositeDefinition(
        spec.kind,
        ancestor,
        tuple(indexing.Column(n) for n in equal)
        + tuple(indexing.Column(o.name, o.descending) for o in columns),
    )
    return Need(frozenset(equal), tuple(columns), ancestor, definition)


def matches(index: indexing.CompositeDefinition, need: Need) -> bool:
    """Whether `index` serves a branch that needs `need` (see the module docstring)."""
    if index.kind != need.definition.kind or index.ancestor != need.ancestor or index.vector:
        return False
    k = len(need.equal)
    if len(index.columns) != k + len(need.columns):
        return False
    if {c.name for c in index.columns[:k]} != need.equal:
        return False
    return all(
        c.name == o.name and c.descending == o.descending
        for c, o in zip(index.columns[k:], need.columns, strict=True)
    )


def find_index(registry: indexing.Registry, need: Need) -> indexing.CompositeIndex | None:
    """The matching index created first (lowest id), or None."""
    found = [i for i in registry.for_kind(need.definition.kind) if matches(i.definition, need)]
    return min(found, key=lambda i: i.index_id, default=None)


def vector_definition(kind: str, nearest: vectors.Nearest) -> indexing.CompositeDefinition:
    """The vector index a find_nearest searches: its kind, property and query dimension."""
    return indexing.CompositeDefinition(
        kind, False, (indexing.Column(nearest.name, vector_dimension=nearest.dimension),)
    )


def check_vector_index(
    registry: indexing.Registry, definition: indexing.CompositeDefinition, policy: IndexPolicy
) -> bool:
    """Whether a find_nearest may search the vector index `definition`: True when it is
    declared. Missing, CREATE raises NeedsIndex (the edge creates it through the log: no
    backfill, the entries are always kept), REQUIRE refuses it like a missing composite
    index, FALLBACK serves it anyway (returns False: served undeclared)."""
    if registry.find(definition) is not None:
        return True
    if policy is IndexPolicy.CREATE:
        raise NeedsIndex(definition)
    if policy is IndexPolicy.REQUIRE:
        raise no_matching_index(definition)
    return False


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


def composite_plan(need: Need, index: indexing.CompositeIndex, branch: filters.Branch) -> Plan:
    """Scan `index` under the prefix the branch's equalities fix (the first of several
    values on one property: the others stay residual), in the index's column order."""
    k = len(need.equal)
    prefix: list[tuple[str, bytes]] = []
    for column in index.definition.columns[:k]:
        value = branch.properties[column.name].eq[0]
        prefix.append((column.name, indexing.invert(value) if column.descending else value))
    return Plan(PlanKind.COMPOSITE, equalities=tuple(prefix), index=index, columns=need.columns)


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
