"""Result rows: from a branch's candidates to sort-keyed rows, in the query's order.

A `Row` is one result: its sort key (see planner), its key path, and what the batch
needs to render it (the stored version, the projected values). Each branch yields rows
in ascending sort-key order; the executor merges branches.

Entities are fetched from the entities family at `read_ts` only when needed: for full
results, residual filters, sort keys that involve property values, and projections.
A join or kind scan ordered by key whose scan alone decides membership hands out keys
without reading an entity (keys-only results and counts).

Imports storage/, model/ and query's planner, filters and scan.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from zonestore_node.model import indexing
from zonestore_node.model.errors import invalid
from zonestore_node.query import cursor as cursor_mod
from zonestore_node.query import filters, planner, scan
from zonestore_node.query.planner import IndexPolicy, PlanKind, ResultKind, Spec
from zonestore_node.storage import keycodec, mvcc
from zonestore_node.storage.engine import Family


@dataclass(slots=True)
class Row:
    sort_key: bytes
    path: bytes
    version: mvcc.Version | None = None
    entity: Any = None  # parsed Entity, when it was needed
    combo: tuple[bytes, ...] = ()  # projection: encoded values, in projection order
    group_len: int = 0  # distinct_on: bytes of the sort key naming the row's group


@dataclass(slots=True)
class Parsed:
    version: mvcc.Version
    entity: Any
    values: dict[str, list[bytes]]


class Context:
    """Per-query state: the snapshot, the read ranges and keys, an entity cache."""

    def __init__(
        self,
        store: mvcc.Store,
        spec: Spec,
        read_ts: int,
        policy: IndexPolicy = IndexPolicy.FALLBACK,
        *,
        plan_only: bool = False,
    ) -> None:
        """`plan_only` (query explain without analyze): a composite index that CREATE
        would create is reported in `chosen` instead of raising NeedsIndex, so a plan
        has no side effects."""
        self.store = store
        self.plan_only = plan_only
        self.spec = spec
        self.read_ts = read_ts
        self.policy = policy
        self.tracker = scan.Tracker()
        self.read_keys: list[bytes] = []
        self._cache: dict[bytes, Parsed | None] = {}
        self.fetches = 0
        self.plans: list[PlanKind] = []  # per branch, as chosen (metrics, tests)
        # Per branch: the plan and, for COMPOSITE, the index's definition (query explain).
        self.chosen: list[tuple[planner.Plan, indexing.CompositeDefinition | None]] = []
        self._registry: indexing.Registry | None = None

    def registry(self) -> indexing.Registry:
        if self._registry is None:
            self._registry = indexing.load_registry(self.store.engine)
        return self._registry

    def plan(self, branch: filters.Branch) -> planner.Plan:
        """A composite index when the branch needs one and one is ready at this snapshot;
        a missing one is the policy's business; otherwise the built-in plans."""
        spec = self.spec
        need = planner.needed_index(spec, branch)
        plan: planner.Plan | None = None
        if need is not None:
            index = planner.find_index(self.registry(), need)
            if index is not None and index.ready_ts <= self.read_ts:
                plan = planner.composite_plan(need, index, branch)
            elif index is None and self.policy is IndexPolicy.CREATE and self.plan_only:
                # The query would create this index, then scan it.
                plan = planner.Plan(PlanKind.COMPOSITE, columns=need.columns)
                self.plans.append(plan.kind)
                self.chosen.append((plan, need.definition))
                return plan
            elif index is None and self.policy is IndexPolicy.CREATE:
                raise planner.NeedsIndex(need.definition)
            elif index is None and self.policy is IndexPolicy.REQUIRE:
                raise planner.no_matching_index(need.definition)
            # else: an index newer than this snapshot, or FALLBACK: served in memory
        if plan is None:
            plan = planner.choose(spec, branch, self.probe)
        self.plans.append(plan.kind)
        self.chosen.append((plan, plan.index.definition if plan.index is not None else None))
        return plan

    def fetch(self, path: bytes) -> mvcc.Version | None:
        encoded = self.spec.encoded_partition + path
        self.read_keys.append(encoded)
        self.fetches += 1
        return self.store.get(Family.ENTITIES, encoded, self.read_ts)

    def parsed(self, path: bytes, version: mvcc.Version | None) -> Parsed | None:
        if path in self._cache:
            return self._cache[path]
        if version is None:
            version = self.fetch(path)
        result: Parsed | None = None
        if version is not None:
            entity = indexing.EntityPb.FromString(version.payload[8:])
            values: dict[str, list[bytes]] = {}
            for name, value in indexing.index_values(entity):
                values.setdefault(name, []).append(value)
            result = Parsed(version, entity, values)
        if len(self._cache) < 10_000:  # dedupe help only: array entries, OR branches
            self._cache[path] = result
        return result

    def kind_prefix(self) -> bytes:
        assert self.spec.kind is not None
        return indexing.kind_prefix(self.spec.encoded_partition, self.spec.kind)

    def property_prefix(self, name: str) -> bytes:
        assert self.spec.kind is not None
        return indexing.property_prefix(self.spec.encoded_partition, self.spec.kind, name)

    def probe(self, equalities: tuple[tuple[str, bytes], ...]) -> int:
        """How many keys the equality join holds, counted up to SORT_PROBE + 1."""
        prefixes = [self.property_prefix(n) + v for n, v in equalities]
        count = 0
        probe = scan.Tracker()  # not a read range: the plan's own scan records those
        for _ in scan.join_source(
            self.store, self.read_ts, probe, prefixes, filters.ALL, False, None
        ):
            count += 1
            if count > planner.SORT_PROBE:
                break
        self.tracker.index_entries += probe.index_entries
        return count


def branch_rows(ctx: Context, branch: filters.Branch) -> Iterator[Row]:
    spec = ctx.spec
    plan = ctx.plan(branch)
    lead_order = next((o for o in spec.orders if o.name == plan.order_property), None)
    reverse = _reverse(spec, plan, lead_order)
    resume = _resume(ctx, plan, lead_order, reverse)
    source = _source(ctx, branch, plan, reverse, resume)
    make = _RowMaker(ctx, branch, plan, lead_order)
    if plan.kind is PlanKind.SORTED:
        rows = [row for cand in source for row in make(cand)]
        rows.sort(key=lambda r: r.sort_key)
        yield from rows
        return
    if plan.kind is PlanKind.COMPOSITE and _key_descending(spec):
        # the index holds ties in key order ascending: sort each run of equal columns
        for _value, run in itertools.groupby(source, key=lambda c: c.value):
            rows = [row for cand in run for row in make(cand)]
            rows.sort(key=lambda r: r.sort_key)
            yield from rows
        return
    if plan.kind is PlanKind.ORDERED and _runs_need_sort(spec, branch, lead_order):
        for _value, run in itertools.groupby(source, key=lambda c: c.value):
            rows = [row for cand in run for row in make(cand)]
            rows.sort(key=lambda r: r.sort_key)
            yield from rows
        return
    for cand in source:
        yield from make(cand)


def _reverse(spec: Spec, plan: planner.Plan, lead: planner.Order | None) -> bool:
    if plan.kind is PlanKind.ORDERED:
        assert lead is not None
        return lead.descending
    if plan.kind in (PlanKind.KEY, PlanKind.JOIN):
        key_order = next((o for o in spec.orders if o.name == filters.KEY_PROPERTY), None)
        return key_order is not None and key_order.descending
    return False


def _key_descending(spec: Spec) -> bool:
    return (
        bool(spec.orders)
        and spec.orders[-1].name == filters.KEY_PROPERTY
        and (spec.orders[-1].descending)
    )


def _composite_prefix(ctx: Context, branch: filters.Branch, plan: planner.Plan) -> bytes:
    assert plan.index is not None
    ancestor = branch.ancestor if plan.index.definition.ancestor else None
    return (
        plan.index.prefix(ctx.spec.encoded_partition)
        + (ancestor or b"")
        + b"".join(value for _name, value in plan.equalities)
    )


def _composite_resume(ctx: Context, branch: filters.Branch, plan: planner.Plan) -> bytes | None:
    """The index key of the start cursor: its sort key without the components of
    equality-fixed orders (constant), with the path unless ties run key-descending."""
    spec = ctx.spec
    sort_key = spec.start.sort_key
    if not sort_key:
        return None
    scanned = {o.name for o in plan.columns}
    fixed = dict(plan.equalities)
    parts: list[bytes] = []
    pos = 0
    try:
        for count, order in enumerate(spec.orders, start=1):
            if order.name == filters.KEY_PROPERTY:
                break
            end = planner.component_lengths(spec, sort_key, count)
            component = sort_key[pos:end]
            if order.name in scanned:
                parts.append(component)
            elif order.name in fixed and component not in (
                fixed[order.name],
                keycodec.invert(fixed[order.name]),
            ):
                # The cursor lies in another branch of an OR/IN (another fixed value):
                # scan this branch from its start; the row filter makes the exact cut.
                return None
            pos = end
    except (keycodec.DecodeError, IndexError, ValueError) as exc:
        raise invalid("Invalid cursor.") from exc
    if not _key_descending(spec):
        parts.append(sort_key[pos:])
    return _composite_prefix(ctx, branch, plan) + b"".join(parts)


def _runs_need_sort(spec: Spec, branch: filters.Branch, lead: planner.Order | None) -> bool:
    """Whether rows sharing the scanned value need sorting (descending scans and later
    orders); an ascending scan already hands out a run in key order."""
    assert lead is not None
    if lead.descending or spec.result_kind is ResultKind.PROJECTION:
        return True
    after = spec.orders[spec.orders.index(lead) + 1 :]
    for order in after:
        if order.name == filters.KEY_PROPERTY:
            return order.descending
        constraint = branch.properties.get(order.name)
        if constraint is None or not constraint.eq:
            return True
    return False


def _resume(
    ctx: Context, plan: planner.Plan, lead: planner.Order | None, reverse: bool
) -> bytes | None:
    """Where the scan can start, from the start cursor (the exact cut is the row filter)."""
    spec = ctx.spec
    if not spec.start.sort_key or plan.kind is PlanKind.COMPOSITE:
        return None
    if not spec.orders:
        if plan.kind not in (PlanKind.KEY, PlanKind.JOIN):
            return None
        try:
            end = keycodec.decode_path(spec.start.sort_key, 0)[1]
        except (keycodec.DecodeError, IndexError) as exc:
            raise invalid("Invalid cursor.") from exc
        return spec.start.sort_key[:end]
    first = spec.orders[0]
    if plan.kind is PlanKind.ORDERED and lead is not None and first.name == lead.name:
        value = planner.first_component(spec, spec.start.sort_key)
        index_key = ctx.property_prefix(lead.name) + value
        return keycodec.prefix_end(index_key) if reverse else index_key
    if plan.kind in (PlanKind.KEY, PlanKind.JOIN) and first.name == filters.KEY_PROPERTY:
        return planner.first_component(spec, spec.start.sort_key)
    return None


def _source(
    ctx: Context,
    branch: filters.Branch,
    plan: planner.Plan,
    reverse: bool,
    resume: bytes | None,
) -> Iterator[scan.Candidate]:
    spec, store, ts, tracker = ctx.spec, ctx.store, ctx.read_ts, ctx.tracker
    if plan.kind is PlanKind.COMPOSITE:
        first = plan.columns[0]
        constraint = branch.properties.get(first.name)
        first_intervals = filters.ALL
        if constraint is not None and constraint.ranges is not None:
            first_intervals = constraint.ranges
        return scan.composite_source(
            store,
            ts,
            tracker,
            _composite_prefix(ctx, branch, plan),
            first_intervals,
            tuple(o.descending for o in plan.columns),
            _composite_resume(ctx, branch, plan),
        )
    if plan.kind is PlanKind.KEY:
        if spec.kind is None:
            partition = spec.encoded_partition
            start = _path_bound(partition, resume, reverse)
            return scan.entity_source(
                store, ts, tracker, partition, branch.key_ranges, reverse, start
            )
        prefix = ctx.kind_prefix()
        start = _path_bound(prefix, resume, reverse)
        return scan.kind_source(store, ts, tracker, prefix, branch.key_ranges, reverse, start)
    if plan.kind in (PlanKind.JOIN, PlanKind.SORTED):
        prefixes = [ctx.property_prefix(name) + value for name, value in plan.equalities]
        return scan.join_source(store, ts, tracker, prefixes, branch.key_ranges, reverse, resume)
    assert plan.order_property is not None
    constraint = branch.properties.get(plan.order_property)
    intervals = filters.ALL
    if constraint is not None and constraint.ranges is not None:
        intervals = constraint.ranges
    return scan.property_source(
        store, ts, tracker, ctx.property_prefix(plan.order_property), intervals, reverse, resume
    )


def _path_bound(prefix: bytes, path: bytes | None, reverse: bool) -> bytes | None:
    if path is None:
        return None
    return keycodec.prefix_end(prefix + path) if reverse else prefix + path


class _RowMaker:
    def __init__(
        self,
        ctx: Context,
        branch: filters.Branch,
        plan: planner.Plan,
        lead: planner.Order | None,
    ) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.branch = branch
        self.plan = plan
        self.lead = lead
        spec = ctx.spec
        self.fast = (
            plan.exact
            and plan.kind in (PlanKind.KEY, PlanKind.JOIN)
            and spec.key_only_order
            and spec.result_kind is not ResultKind.PROJECTION
        )
        self.key_descending = bool(spec.orders) and spec.orders[-1].descending
        self.need_version = spec.result_kind is ResultKind.FULL
        self.lead_projected = lead is not None and lead.name in spec.projection

    def __call__(self, cand: scan.Candidate) -> list[Row]:
        path = cand.path
        if self.fast:
            sort_key = keycodec.invert(path) if self.key_descending else path
            version = cand.version
            if version is None and self.need_version:
                version = self.ctx.fetch(path)
                if version is None:
                    return []
            return [Row(sort_key, path, version)]
        parsed = self.ctx.parsed(path, cand.version)
        if parsed is None:
            return []
        spec = self.spec
        key = planner.branch_sort_key(spec, self.branch, parsed.values, path)
        if key is None:
            return []
        if len(spec.branches) > 1 and planner.canonical_sort_key(spec, parsed.values, path) != key:
            return []
        if self.plan.kind is PlanKind.COMPOSITE and not self._at_own_entry(parsed, cand):
            return []  # the entity is handed out at another entry of this index
        lead = self.lead
        if lead is not None and not self.lead_projected:
            value = planner.order_value(lead, self.branch, parsed.values.get(lead.name, []))
            if value != cand.value:
                return []  # the entity is handed out at another entry of this index
        if spec.result_kind is not ResultKind.PROJECTION:
            return [Row(key, path, parsed.version, parsed.entity)]
        return self._projection_rows(parsed, path, cand)

    def _at_own_entry(self, parsed: Parsed, cand: scan.Candidate) -> bool:
        """Whether `cand` is the entry holding the entity's sort-key values."""
        expected: list[bytes] = []
        for order in self.plan.columns:
            value = planner.order_value(order, self.branch, parsed.values.get(order.name, []))
            if value is None:
                return False
            expected.append(indexing.invert(value) if order.descending else value)
        return b"".join(expected) == cand.value

    def _projection_rows(self, parsed: Parsed, path: bytes, cand: scan.Candidate) -> list[Row]:
        spec = self.spec
        choices: list[list[bytes]] = []
        for name in spec.projection:
            values = parsed.values.get(name, [])
            constraint = self.branch.properties.get(name)
            if constraint is not None:
                values = constraint.allowed(values)
            if self.lead_projected and self.lead is not None and name == self.lead.name:
                values = [v for v in values if v == cand.value]
            if not values:
                return []
            choices.append(sorted(set(values)))
        rows = []
        for combo in itertools.product(*choices):
            chosen = dict(zip(spec.projection, combo, strict=True))
            key = _projection_key(spec, self.branch, parsed.values, path, chosen)
            if key is None:
                continue
            rows.append(Row(key + b"".join(combo), path, parsed.version, parsed.entity, combo))
        rows.sort(key=lambda r: r.sort_key)
        return rows


def _projection_key(
    spec: Spec,
    branch: filters.Branch,
    values: dict[str, list[bytes]],
    path: bytes,
    chosen: dict[str, bytes],
) -> bytes | None:
    parts: list[bytes] = []
    for order in spec.orders:
        if order.name == filters.KEY_PROPERTY:
            parts.append(keycodec.invert(path) if order.descending else path)
            return b"".join(parts)
        value = chosen.get(order.name)
        if value is None:
            value = planner.order_value(order, branch, values.get(order.name, []))
        if value is None:
            return None
        parts.append(keycodec.invert(value) if order.descending else value)
    parts.append(path)
    return b"".join(parts)


def stream(ctx: Context) -> Iterator[Row]:
    """Every result after the start cursor, in order, each once (no offset or limit)."""
    spec = ctx.spec
    streams = [branch_rows(ctx, branch) for branch in spec.branches]
    if not streams:
        return
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_sort_key)
    previous: bytes | None = None
    group: bytes | None = None
    distinct = len(spec.distinct_on)
    for row in merged:
        if row.sort_key == previous:
            continue  # the same result from another branch
        previous = row.sort_key
        if distinct:
            row.group_len = planner.component_lengths(spec, row.sort_key, distinct)
            row_group = row.sort_key[: row.group_len]
            if row_group == group:
                continue
            group = row_group
        if spec.start.is_after(row.sort_key):
            continue
        yield row


def _sort_key(row: Row) -> bytes:
    return row.sort_key


def position(row: Row) -> cursor_mod.Position:
    return cursor_mod.Position(row.sort_key, row.group_len)
