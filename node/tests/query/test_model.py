"""Property test: the engine against a naive evaluation over random entities.

The model evaluates Datastore's semantics directly on Python values: an array property
matches if any element matches (the range filters of one conjunction must hold for one
element together), range filters compare across types in Datastore's value order (null < int < string), an entity
lacking an ordered property is left out, an array sorts by its smallest (ascending) or
largest (descending) qualifying element, ties go by key, OR branches keep an entity
once at its earliest position.
"""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.query.world import World, and_, entity, key, or_, pf, query
from zonestore_node.model.errors import Code, DatastoreError
from zonestore_node.query.filters import MAX_DISJUNCTIONS

SCALARS = st.one_of(st.integers(0, 4), st.sampled_from(["x", "y"]), st.none())
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3))
PROPS = ("a", "b")
RANGE_OPS = ("<", "<=", ">", ">=")
_kinds = itertools.count()


def rank(v: Any) -> tuple[int, Any]:
    if v is None:
        return (0, 0)
    if isinstance(v, int):
        return (1, v)
    return (2, v)


def elements(props: dict[str, Any], name: str) -> list[Any] | None:
    if name not in props:
        return None
    v = props[name]
    return list(v) if isinstance(v, list) else [v]


def in_range(atoms: list[tuple[str, Any]], v: Any) -> bool:
    for op, operand in atoms:
        if op in RANGE_OPS:
            a, b = rank(v), rank(operand)
            ok = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
            if not ok:
                return False
        elif (op == "!=" and rank(v) == rank(operand)) or (
            op == "not_in" and any(rank(v) == rank(x) for x in operand)
        ):
            return False
    return True


def allowed(conj: list[tuple[str, str, Any]], props: dict[str, Any], name: str) -> list[Any]:
    values = elements(props, name) or []
    eqs = [operand for p, op, operand in conj if p == name and op == "="]
    ranges = [(op, operand) for p, op, operand in conj if p == name and op not in ("=",)]
    if eqs:
        values = [v for v in values if any(rank(v) == rank(e) for e in eqs)]
    return [v for v in values if in_range(ranges, v)]


def matches(conj: list[tuple[str, str, Any]], props: dict[str, Any]) -> bool:
    for name in {p for p, _, _ in conj}:
        values = elements(props, name) or []
        for p, op, operand in conj:
            if p == name and op == "=" and not any(rank(v) == rank(operand) for v in values):
                return False
        ranges = [(op, operand) for p, op, operand in conj if p == name and op != "="]
        if ranges and not any(in_range(ranges, v) for v in values):
            return False
    return True


def expand(conj: list[tuple[str, str, Any]]) -> list[list[tuple[str, str, Any]]]:
    """IN becomes one conjunction per value."""
    out: list[list[tuple[str, str, Any]]] = [[]]
    for atom in conj:
        p, op, operand = atom
        if op == "in":
            out = [[*c, (p, "=", v)] for c in out for v in operand]
        else:
            out = [[*c, atom] for c in out]
    return out


def model(
    entities: dict[int, dict[str, Any]],
    dnf: list[list[tuple[str, str, Any]]],
    orders: list[tuple[str, bool]],
) -> list[int]:
    inequality = sorted({p for c in dnf for p, op, _ in c if op not in ("=", "in")})
    full = list(orders)
    for name in inequality:
        if name not in [o for o, _ in full]:
            full.append((name, False))
    branches = [c for conj in dnf for c in expand(conj)] if dnf else [[]]
    best: dict[int, list[tuple[bool, Any]]] = {}
    for ident, props in entities.items():
        for conj in branches:
            if not matches(conj, props):
                continue
            sort: list[tuple[bool, Any]] = []
            missing = False
            for name, desc in full:
                if name == "__key__":
                    sort.append((desc, (1, ident)))
                    break
                values = allowed(conj, props, name)
                if not values:
                    missing = True
                    break
                pick = max(values, key=rank) if desc else min(values, key=rank)
                sort.append((desc, rank(pick)))
            else:
                sort.append((False, (1, ident)))
            if missing:
                continue
            if ident not in best or compare(sort, best[ident]) < 0:
                best[ident] = sort

    def by_sort(x: int, y: int) -> int:
        return compare(best[x], best[y])

    return sorted(best, key=functools.cmp_to_key(by_sort))


def compare(x: list[tuple[bool, Any]], y: list[tuple[bool, Any]]) -> int:
    for (desc, a), (_, b) in zip(x, y, strict=False):
        if a != b:
            less = a < b
            return (1 if less else -1) if desc else (-1 if less else 1)
    return 0


ATOM = st.one_of(
    st.tuples(st.sampled_from(PROPS), st.sampled_from(("=", *RANGE_OPS)), SCALARS),
    st.tuples(st.sampled_from(PROPS), st.just("in"), st.lists(SCALARS, min_size=1, max_size=3)),
)
NEGATIVE = st.one_of(
    st.tuples(st.sampled_from(PROPS), st.just("!="), SCALARS),
    st.tuples(st.sampled_from(PROPS), st.just("not_in"), st.lists(SCALARS, min_size=1, max_size=3)),
)


@st.composite
def dnfs(draw: Any) -> list[list[tuple[str, str, Any]]]:
    conjunctions: list[list[tuple[str, str, Any]]] = draw(
        st.lists(st.lists(ATOM, min_size=1, max_size=3), min_size=0, max_size=2)
    )
    if draw(st.booleans()) and conjunctions:
        conjunctions[0].append(draw(NEGATIVE))
    return conjunctions


ORDERS = st.lists(st.tuples(st.sampled_from((*PROPS, "__key__")), st.booleans()), max_size=2).map(
    lambda os: list({name: (name, d) for name, d in os}.values())
)


def expansion(dnf: list[list[tuple[str, str, Any]]]) -> int:
    """How many disjunctions the engine expands `dnf` into: one per distinct value of
    each IN, multiplied within a conjunction, added over the conjunctions."""
    return sum(math.prod(len(set(v)) for _, op, v in conj if op == "in") for conj in dnf)


def to_filter(dnf: list[list[tuple[str, str, Any]]]) -> Any:
    if not dnf:
        return None
    ands = [and_(*(pf(p, op, v) for p, op, v in conj)) for conj in dnf]
    return ands[0] if len(ands) == 1 else or_(*ands)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    entities=st.dictionaries(
        st.integers(1, 30), st.dictionaries(st.sampled_from(PROPS), VALUES), max_size=10
    ),
    dnf=dnfs(),
    orders=ORDERS,
)
@example(  # expands to 2 x 3 x 3 + 2 x 3 x 3 = 36 disjunctions: refused
    entities={},
    dnf=[
        [("a", "in", [0, None]), ("a", "in", [0, None, 1]), ("a", "in", [None, 0, 1])],
        [("a", "in", [0, None]), ("a", "in", [None, 0, 1]), ("a", "in", [0, 1, "x"])],
    ],
    orders=[],
)
@example(  # a value twice counts once: 2 x 3 x 2 + 18 = 30, at the limit: served
    entities={1: {"a": 0}, 2: {"a": None}},
    dnf=[
        [("a", "in", [0, None]), ("a", "in", [0, None, 1]), ("a", "in", [None, 0, 0])],
        [("a", "in", [0, None]), ("a", "in", [None, 0, 1]), ("a", "in", [0, 1, "x"])],
    ],
    orders=[],
)
def test_engine_agrees_with_a_naive_model(
    tmp_path_factory: Any, entities: dict[int, dict[str, Any]], dnf: Any, orders: Any
) -> None:
    world = _world(tmp_path_factory)
    kind = f"K{next(_kinds)}"
    if entities:
        world.put(*(entity(key(kind, i), **props) for i, props in entities.items()))
    order_names = [o for o, _ in orders]
    if "__key__" in order_names:
        orders = orders[: order_names.index("__key__") + 1]
    q = query(kind, to_filter(dnf), order=tuple(("-" if d else "") + n for n, d in orders))
    if expansion(dnf) > MAX_DISJUNCTIONS:
        # Production refuses a filter that expands past the limit; so must the engine
        # (two conjunctions of three INs can reach 54).
        event("over the disjunction limit")
        with pytest.raises(DatastoreError, match="disjunctions") as refused:
            world.names(q)
        assert refused.value.code is Code.INVALID_ARGUMENT
        return
    expected = model(entities, dnf, orders)
    event(f"results={min(len(expected), 3)} branches={len(dnf)} orders={len(orders)}")
    assert world.names(q) == expected
    pages: list[int | str] = []
    q.limit.value = 2
    while True:
        batch = world.run(q).batch
        pages.extend(er.entity.key.path[0].id for er in batch.entity_results)
        if batch.more_results != 2:
            break
        q.start_cursor = batch.end_cursor
    assert pages == expected


_worlds: dict[str, World] = {}


def _world(factory: Any) -> World:
    if "w" not in _worlds:
        _worlds["w"] = World(Path(factory.mktemp("model")) / "db")
    return _worlds["w"]
