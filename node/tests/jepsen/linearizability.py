"""A linearizability checker for single-object histories: Wing & Gong's search with
Lowe's memoization (the algorithm of Knossos's `wgl` and of Porcupine), split per key.

Linearizability is P-compositional (Herlihy & Wing): a history is linearizable iff each
key's sub-history is, so every key is searched on its own and a failure names its key.

The search walks a doubly linked list of call and return entries in time order. At a
call it tries to linearize that operation now (the model says whether it is legal in
the current state); if the pair (set of linearized operations, model state) was seen
before, that branch is already known to fail (Lowe's cache). At a return entry whose
operation is not yet linearized, the current prefix cannot be extended: undo the last
choice and try the next call. Linearized operations are lifted out of the list
(dancing links) and put back when undone.

Indeterminate operations (`info`) may take effect at any point after their invocation,
or never: their return entries sit at the end of time, and the search succeeds as soon
as every `ok` operation is linearized (whatever info operations are still pending are
the ones that never happened). `fail` operations certainly did not happen and are
dropped; so are reads that did not complete, since a read changes nothing.

At equal times, calls sort before returns: an operation that completed at the very tick
another was invoked counts as concurrent with it (the permissive reading). Recorded
histories never tie (one shared counter), hand-made ones may.

This module must not import the workloads or the cluster harness: it is pure, so the
unit tests can drive it with hand-made and generated histories.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tests.jepsen.history import INFINITY, Op, Status


class Model(Protocol):
    """A sequential specification: `step` says whether `op` is legal in `state` and the
    state after it. States must be hashable (they key the cache)."""

    def init(self) -> Hashable: ...

    def step(self, state: Any, op: Op) -> tuple[bool, Hashable]: ...


class Register:
    """A register per key, initially absent (None). `read` returns the value
    (`op.result`), `write` sets `op.value`, `cas` with `op.value == (old, new)` sets
    `new` only if the register holds `old`."""

    def init(self) -> Hashable:
        return None

    def step(self, state: Any, op: Op) -> tuple[bool, Hashable]:
        if op.f == "read":
            return op.result == state, state
        if op.f == "write":
            return True, op.value
        if op.f == "cas":
            old, new = op.value
            return state == old, new
        raise ValueError(f"the register has no operation {op.f!r}")


def relevant(ops: Iterable[Op]) -> list[Op]:
    """What the search needs: no failed operation, no read that did not complete."""
    return [
        op
        for op in ops
        if op.status is not Status.FAIL and not (op.status is Status.INFO and op.f == "read")
    ]


@dataclass(slots=True, eq=False)
class _Entry:
    op: Op | None  # None for the sentinels
    bit: int
    is_call: bool
    match: _Entry | None = None  # a call's return entry
    prev: _Entry | None = None
    next: _Entry | None = None


def _entries(ops: list[Op]) -> _Entry:
    """The time-ordered list with a head and a tail sentinel; returns the head."""
    events: list[tuple[int, int, int, _Entry]] = []
    for i, op in enumerate(ops):
        call = _Entry(op, 1 << i, True)
        ret = _Entry(op, 1 << i, False)
        call.match = ret
        complete = INFINITY if op.status is Status.INFO else op.complete
        events.append((op.invoke, 0, i, call))
        events.append((complete, 1, i, ret))
    events.sort(key=lambda e: e[:3])
    head = _Entry(None, 0, False)
    tail = _Entry(None, 0, False)
    prev = head
    for *_, entry in events:
        prev.next = entry
        entry.prev = prev
        prev = entry
    prev.next = tail
    tail.prev = prev
    return head


def _lift(call: _Entry) -> None:
    ret = call.match
    assert ret is not None and call.prev and call.next
    call.prev.next = call.next
    call.next.prev = call.prev
    assert ret.prev and ret.next
    ret.prev.next = ret.next
    ret.next.prev = ret.prev


def _unlift(call: _Entry) -> None:
    ret = call.match
    assert ret is not None and ret.prev and ret.next and call.prev and call.next
    ret.prev.next = ret
    ret.next.prev = ret
    call.prev.next = call
    call.next.prev = call


class BudgetExceeded(Exception):
    """The search took more steps than allowed: the answer is unknown."""


def search(ops: list[Op], model: Model, budget: int = 5_000_000) -> list[Op] | None:
    """One object's history: a linearization of its `ok` operations (and of the info
    operations that took effect), or None if there is none."""
    ops = relevant(ops)
    head = _entries(ops)
    remaining = sum(1 for op in ops if op.status is Status.OK)
    state: Hashable = model.init()
    linearized = 0
    cache: set[tuple[int, Hashable]] = set()
    stack: list[tuple[_Entry, Hashable]] = []
    entry = head.next
    steps = 0
    while remaining > 0:
        steps += 1
        if steps > budget:
            raise BudgetExceeded(f"more than {budget} search steps")
        assert entry is not None and entry.op is not None
        if entry.is_call:
            legal, after = model.step(state, entry.op)
            if legal:
                key = (linearized | entry.bit, after)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state, linearized = after, linearized | entry.bit
                    _lift(entry)
                    if entry.op.status is Status.OK:
                        remaining -= 1
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                return None
            call, state = stack.pop()
            assert call.op is not None
            linearized &= ~call.bit
            _unlift(call)
            if call.op.status is Status.OK:
                remaining += 1
            entry = call.next
    return [call.op for call, _ in stack if call.op is not None]


@dataclass(frozen=True, slots=True)
class Result:
    valid: bool
    keys_checked: int
    failed_key: Any = None
    witness: list[Op] = field(default_factory=list)  # a small failing sub-history
    unknown_keys: list[Any] = field(default_factory=list)

    def explain(self) -> str:
        if self.valid:
            return f"linearizable ({self.keys_checked} keys)"
        lines = [f"NOT linearizable: key {self.failed_key!r}; minimal failing sub-history:"]
        lines += [f"  {op}" for op in self.witness]
        return "\n".join(lines)


def by_key(ops: Iterable[Op]) -> dict[Any, list[Op]]:
    keyed: dict[Any, list[Op]] = defaultdict(list)
    for op in ops:
        keyed[op.key].append(op)
    return keyed


def check(ops: Iterable[Op], model: Model | None = None, budget: int = 5_000_000) -> Result:
    """Per-key linearizability of a whole history. A key whose search exceeds the budget
    is reported in `unknown_keys` and makes the result invalid (unproven)."""
    model = model or Register()
    keyed = by_key(ops)
    unknown = []
    for key in sorted(keyed, key=repr):
        try:
            ok = search(keyed[key], model, budget) is not None
        except BudgetExceeded:
            unknown.append(key)
            continue
        if not ok:
            return Result(False, len(keyed), key, minimize(keyed[key], model, budget))
    return Result(not unknown, len(keyed), unknown_keys=unknown)


def _fails(ops: list[Op], model: Model, budget: int) -> bool:
    try:
        return search(ops, model, budget) is None
    except BudgetExceeded:
        return False


def prefix_at(ops: list[Op], cut: int) -> list[Op]:
    """The history as it stood at logical time `cut`: operations invoked by then, those
    still running counted as pending (info). Only weaker than the full history, so a
    prefix that fails shows the full history fails."""
    out = []
    for op in ops:
        if op.invoke > cut:
            continue
        out.append(op.as_info() if op.complete > cut else op)
    return out


def minimize(ops: list[Op], model: Model, budget: int = 5_000_000) -> list[Op]:
    """A small sub-history that still fails: the shortest failing prefix (binary search
    over invocation times), then without every read that is not needed. Both steps only
    weaken constraints (a prefix turns running operations into info ones; dropping a
    read removes an observation), so what remains is a genuine witness."""
    ops = sorted(relevant(ops), key=lambda op: op.invoke)
    times = [op.invoke for op in ops]
    lo, hi = 0, len(times) - 1
    while lo < hi:  # smallest i whose prefix fails; the whole history does
        mid = (lo + hi) // 2
        if _fails(prefix_at(ops, times[mid]), model, budget):
            hi = mid
        else:
            lo = mid + 1
    current = prefix_at(ops, times[lo]) if times else ops
    if not _fails(current, model, budget):
        current = ops  # the prefix search is a heuristic; fall back to the whole
    if len(current) <= 400:
        for op in [o for o in current if o.f == "read"]:
            trial = [o for o in current if o is not op]
            if _fails(trial, model, budget):
                current = trial
    return current
