"""The checker on hand-made histories (linearizable ones accepted, the classic anomalies
rejected) and on generated ones: histories produced by running the sequential model with
random overlaps are always accepted; mutated small histories get the same verdict as a
brute-force search over every ordering."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.jepsen import linearizability as lin
from tests.jepsen.history import INFINITY, Op, Status

OK, FAIL, INFO = Status.OK, Status.FAIL, Status.INFO


def w(v: Any, t0: int, t1: int, status: Status = OK, key: str = "k", p: int = 0) -> Op:
    return Op(p, "write", key, v, status, t0, INFINITY if status is INFO else t1)


def r(v: Any, t0: int, t1: int, key: str = "k", status: Status = OK, p: int = 0) -> Op:
    return Op(p, "read", key, None, status, t0, INFINITY if status is INFO else t1, result=v)


def cas(old: Any, new: Any, t0: int, t1: int, status: Status = OK, key: str = "k") -> Op:
    return Op(0, "cas", key, (old, new), status, t0, INFINITY if status is INFO else t1)


def valid(*ops: Op) -> bool:
    return lin.check(list(ops)).valid


def brute_force(ops: list[Op], model: lin.Model | None = None) -> bool:
    """Every subset of the info operations, every ordering that respects real time."""
    model = model or lin.Register()
    ops = lin.relevant(ops)
    oks = [op for op in ops if op.status is OK]
    infos = [op for op in ops if op.status is INFO]
    for n in range(len(infos) + 1):
        for chosen in itertools.combinations(infos, n):
            for order in itertools.permutations(oks + list(chosen)):
                if any(
                    order[j].complete < order[i].invoke
                    for i in range(len(order))
                    for j in range(i + 1, len(order))
                ):
                    continue
                state: Any = model.init()
                for op in order:
                    legal, state = model.step(state, op)
                    if not legal:
                        break
                else:
                    return True
    return False


# Hand-made histories: accepted -------------------------------------------------------


def test_an_empty_history_is_linearizable() -> None:
    assert valid()


def test_a_read_of_the_initial_absent_value_is_linearizable() -> None:
    assert valid(r(None, 0, 1))


def test_sequential_writes_and_reads_are_linearizable() -> None:
    assert valid(w(1, 0, 1), r(1, 2, 3), w(2, 4, 5), r(2, 6, 7))


def test_a_read_concurrent_with_a_write_may_see_either_value() -> None:
    assert valid(w(1, 0, 1), w(2, 2, 10), r(1, 3, 4), r(2, 5, 6))


def test_concurrent_reads_may_see_old_then_new_but_not_new_then_old_in_sequence() -> None:
    assert valid(w(1, 0, 1), w(2, 2, 20), r(2, 3, 4), r(2, 5, 6))
    assert not valid(w(1, 0, 1), w(2, 2, 20), r(2, 3, 4), r(1, 5, 6))


def test_a_successful_cas_after_its_expected_value_is_linearizable() -> None:
    assert valid(w(1, 0, 1), cas(1, 2, 2, 3), r(2, 4, 5))


def test_failed_operations_are_ignored() -> None:
    assert valid(w(1, 0, 1), w(9, 2, 3, FAIL), cas(5, 6, 4, 5, FAIL), r(1, 6, 7))


def test_an_info_write_may_take_effect_later_than_its_invocation() -> None:
    assert valid(w(1, 0, 1), w(2, 2, 0, INFO), r(1, 5, 6), r(2, 7, 8))


def test_an_info_write_may_never_take_effect() -> None:
    assert valid(w(1, 0, 1), w(2, 2, 0, INFO), r(1, 5, 6), r(1, 7, 8))


def test_an_info_cas_may_take_effect_or_not() -> None:
    assert valid(w(1, 0, 1), cas(1, 2, 2, 0, INFO), r(1, 3, 4), r(2, 5, 6))
    assert valid(w(1, 0, 1), cas(1, 2, 2, 0, INFO), r(1, 3, 4), r(1, 5, 6))


def test_keys_are_independent() -> None:
    assert valid(w(1, 0, 1, key="a"), w(2, 2, 3, key="b"), r(1, 4, 5, key="a"))


def test_operations_ending_on_the_tick_another_starts_count_as_concurrent() -> None:
    assert valid(w(1, 0, 5), r(None, 5, 6))


# Hand-made histories: the classic anomalies ------------------------------------------


def test_a_stale_read_after_a_completed_write_is_rejected() -> None:
    result = lin.check([w(1, 0, 1), w(2, 2, 3), r(1, 4, 5)])
    assert not result.valid
    assert result.failed_key == "k"
    assert "read" in result.explain()


def test_a_lost_write_is_rejected() -> None:
    assert not valid(w(1, 0, 1), w(2, 2, 3), r(None, 4, 5))
    assert not valid(w(1, 0, 1), r(None, 2, 3))


def test_reading_a_value_never_written_is_rejected() -> None:
    assert not valid(w(1, 0, 1), r(7, 2, 3))


def test_reading_a_failed_write_is_rejected() -> None:
    assert not valid(w(1, 0, 1), w(2, 2, 3, FAIL), r(2, 4, 5))


def test_a_read_before_the_write_was_invoked_is_rejected() -> None:
    assert not valid(r(1, 0, 1), w(1, 2, 3))
    assert not valid(r(1, 0, 1), w(1, 2, 0, INFO))


def test_two_cas_from_the_same_value_cannot_both_succeed() -> None:
    assert not valid(w(0, 0, 1), cas(0, 1, 2, 10), cas(0, 2, 3, 11))


def test_a_cas_succeeding_against_the_wrong_value_is_rejected() -> None:
    assert not valid(w(1, 0, 1), cas(3, 4, 2, 3))


def test_a_cas_effect_missing_from_a_later_read_is_rejected() -> None:
    assert not valid(w(1, 0, 1), cas(1, 2, 2, 3), r(1, 4, 5))


def test_a_read_cannot_see_an_info_write_before_the_write_was_invoked() -> None:
    assert not valid(w(1, 0, 1), r(2, 2, 3), w(2, 4, 0, INFO))


def test_an_info_write_cannot_take_effect_twice() -> None:
    assert not valid(w(1, 0, 1), w(2, 2, 0, INFO), r(2, 3, 4), w(3, 5, 6), r(2, 7, 8))


def test_a_failing_history_is_reduced_to_a_small_witness() -> None:
    ops = [w(i, 10 * i, 10 * i + 1) for i in range(30)]
    ops += [r(i, 10 * i + 2, 10 * i + 3) for i in range(30)]
    ops.append(r(3, 400, 401))  # stale: 29 was written at 290
    result = lin.check(ops)
    assert not result.valid
    assert len(result.witness) < 40
    assert any(op.f == "read" and op.result == 3 and op.invoke == 400 for op in result.witness)
    assert lin.search(result.witness, lin.Register()) is None


def test_the_budget_makes_the_result_unknown_rather_than_hanging() -> None:
    ops = [w(i, 0, 0, INFO) for i in range(40)] + [r(39, 1, 2), r(0, 3, 4)]
    result = lin.check(ops, budget=50)
    assert not result.valid and result.unknown_keys == ["k"]


# Generated histories ---------------------------------------------------------------


@st.composite
def model_histories(draw: st.DrawFn, max_ops: int = 40, keys: int = 2) -> list[Op]:
    """Run the sequential register: op i takes effect at time 100*i; its invocation and
    completion are drawn around that point, so operations overlap at random. CAS whose
    comparison fails are `fail`; an info operation took effect or not at random."""
    n = draw(st.integers(0, max_ops))
    state: dict[str, Any] = {}
    ops = []
    for i in range(n):
        point = 100 * i + 50
        key = f"k{draw(st.integers(0, keys - 1))}"
        t0 = point - draw(st.integers(1, 250))
        t1 = point + draw(st.integers(1, 250))
        kind = draw(st.sampled_from(["read", "write", "cas"]))
        info = draw(st.integers(0, 9)) == 0
        happened = not info or draw(st.booleans())
        status = INFO if info else OK
        end = INFINITY if info else t1
        if kind == "read":
            ops.append(Op(i, "read", key, None, status, t0, end, result=state.get(key)))
        elif kind == "write":
            value = draw(st.integers(0, 4))
            if happened:
                state[key] = value
            ops.append(Op(i, "write", key, value, status, t0, end))
        else:
            old = state.get(key) if draw(st.booleans()) else draw(st.integers(0, 4))
            new = draw(st.integers(0, 4))
            if old != state.get(key):
                ops.append(Op(i, "cas", key, (old, new), FAIL, t0, t1))
                continue
            if happened:
                state[key] = new
            ops.append(Op(i, "cas", key, (old, new), status, t0, end))
    return ops


@settings(max_examples=200, deadline=None)
@given(model_histories())
def test_histories_of_the_sequential_model_are_linearizable(ops: list[Op]) -> None:
    result = lin.check(ops)
    assert result.valid, result.explain()


@settings(max_examples=10, deadline=None)
@given(model_histories(max_ops=300, keys=1))
def test_long_single_key_histories_are_checked_quickly(ops: list[Op]) -> None:
    assert lin.check(ops, budget=200_000).valid


@st.composite
def mutated(draw: st.DrawFn) -> list[Op]:
    ops = list(draw(model_histories(max_ops=7, keys=1)))
    if not ops:
        return ops
    i = draw(st.integers(0, len(ops) - 1))
    op = ops[i]
    choice = draw(st.integers(0, 3))
    if choice == 0 and op.f == "read":
        ops[i] = Op(op.process, "read", op.key, None, op.status, op.invoke, op.complete,
                    result=draw(st.sampled_from([None, 0, 1, 2, 3, 4])))  # fmt: skip
    elif choice == 1 and op.f == "write":
        ops[i] = Op(op.process, "write", op.key, draw(st.integers(0, 4)), op.status,
                    op.invoke, op.complete)  # fmt: skip
    elif choice == 2:
        status = draw(st.sampled_from([OK, FAIL, INFO]))
        end = INFINITY if status is INFO else op.invoke + draw(st.integers(1, 300))
        ops[i] = Op(op.process, op.f, op.key, op.value, status, op.invoke, end, op.result)
    else:  # move it in time
        t0 = draw(st.integers(0, 800))
        end = INFINITY if op.status is INFO else t0 + draw(st.integers(1, 300))
        ops[i] = Op(op.process, op.f, op.key, op.value, op.status, t0, end, op.result)
    return ops


@settings(max_examples=400, deadline=None)
@given(mutated())
def test_the_search_agrees_with_brute_force_on_small_mutated_histories(ops: list[Op]) -> None:
    assert lin.check(ops).valid == brute_force(ops)


def test_brute_force_itself_rejects_a_stale_read() -> None:
    assert not brute_force([w(1, 0, 1), w(2, 2, 3), r(1, 4, 5)])
    assert brute_force([w(1, 0, 1), w(2, 2, 10), r(1, 4, 5)])
