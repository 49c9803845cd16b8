"""The list-append checker on hand-made histories: the classic anomalies (G0, G1a, G1b,
G1c, G-single, G2 / write skew, lost append, stale read, invented data) are named, and
serializable or strict serializable histories, including stale but consistent eventual
reads, are accepted. Plus generated histories of a serial execution, always accepted."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.jepsen import elle
from tests.jepsen.history import INFINITY, Op, Status

OK, FAIL, INFO = Status.OK, Status.FAIL, Status.INFO


def txn(
    *mops: tuple[str, Any, Any],
    t0: int,
    t1: int,
    status: Status = OK,
    eventual: bool = False,
    p: int = 0,
) -> Op:
    asked = tuple((f, k, None if f == "r" else v) for f, k, v in mops)
    return Op(
        p,
        "txn",
        "eventual" if eventual else "strong",
        asked,
        status,
        t0,
        INFINITY if status is INFO else t1,
        result=mops if status is OK else None,
    )


def r(k: str, v: list[int] | None) -> tuple[str, Any, Any]:
    return ("r", k, v)


def a(k: str, v: int) -> tuple[str, Any, Any]:
    return ("append", k, v)


def kinds(*ops: Op, final: dict[Any, list[Any]] | None = None, realtime: bool = True) -> set[str]:
    return elle.check(list(ops), final=final, realtime=realtime).kinds


# Accepted ---------------------------------------------------------------------------


def test_an_empty_history_is_valid() -> None:
    assert elle.check([]).valid


def test_sequential_appends_and_reads_are_valid() -> None:
    verdict = elle.check(
        [
            txn(a("x", 1), t0=0, t1=1),
            txn(r("x", [1]), a("x", 2), t0=2, t1=3),
            txn(r("x", [1, 2]), r("y", []), t0=4, t1=5),
        ],
        final={"x": [1, 2], "y": []},
    )
    assert verdict.valid, verdict.explain()
    assert verdict.stats["txns"] == 3


def test_concurrent_transactions_may_serialize_either_way() -> None:
    assert not kinds(
        txn(r("x", []), a("y", 1), t0=0, t1=3),
        txn(r("y", [1]), a("x", 2), t0=1, t1=4),
    )


def test_an_info_append_may_have_happened() -> None:
    assert not kinds(
        txn(a("x", 1), t0=0, t1=0, status=INFO),
        txn(r("x", [1]), t0=2, t1=3),
    )


def test_an_info_append_may_not_have_happened() -> None:
    assert not kinds(txn(a("x", 1), t0=0, t1=0, status=INFO), txn(r("x", []), t0=2, t1=3))


def test_a_stale_eventual_read_of_a_consistent_prefix_is_valid() -> None:
    assert not kinds(
        txn(a("x", 1), a("y", 1), t0=0, t1=1),
        txn(a("x", 2), a("y", 2), t0=2, t1=3),
        txn(r("x", [1]), r("y", [1]), t0=10, t1=11, eventual=True),
    )


def test_without_realtime_a_stale_strong_read_is_only_serializable() -> None:
    history = [txn(a("x", 1), t0=0, t1=1), txn(r("x", []), t0=2, t1=3)]
    assert not kinds(*history, final={"x": [1]}, realtime=False)


# Rejected ---------------------------------------------------------------------------


def test_a_g0_write_cycle_is_found() -> None:
    # x's order says T0 before T1, y's order says T1 before T0.
    verdict = elle.check(
        [
            txn(a("x", 1), a("y", 1), t0=0, t1=5),
            txn(a("x", 2), a("y", 2), t0=0, t1=5),
            txn(r("x", [1, 2]), r("y", [2, 1]), t0=6, t1=7),
        ]
    )
    assert "G0" in verdict.kinds, verdict.explain()


def test_a_g1c_circular_information_flow_is_found() -> None:
    # each saw the other's append, and neither saw it before its own
    verdict = elle.check(
        [
            txn(a("x", 1), r("y", [1]), t0=0, t1=5),
            txn(a("y", 1), r("x", [1]), t0=0, t1=5),
        ]
    )
    assert "G1c" in verdict.kinds, verdict.explain()
    smallest = verdict.smallest()
    assert smallest is not None and len(smallest.ops) == 2


def test_write_skew_is_g2() -> None:
    # each read the other's key empty, then appended to its own: no serial order
    verdict = elle.check(
        [
            txn(r("x", []), a("y", 1), t0=0, t1=5),
            txn(r("y", []), a("x", 1), t0=0, t1=5),
            txn(r("x", [1]), r("y", [1]), t0=6, t1=7),
        ]
    )
    assert verdict.kinds == {"G2"}, verdict.explain()


def test_a_lost_update_is_g_single() -> None:
    # both read x empty and appended; the later one's list overwrote the first's element
    verdict = elle.check(
        [
            txn(r("x", []), a("x", 1), t0=0, t1=5),
            txn(r("x", []), a("x", 2), t0=0, t1=5),
            txn(r("x", [1, 2]), t0=6, t1=7),
        ]
    )
    assert "G-single" in verdict.kinds, verdict.explain()


def test_read_skew_is_g_single() -> None:
    verdict = elle.check(
        [
            txn(a("x", 1), a("y", 1), t0=0, t1=1),
            txn(r("x", []), r("y", [1]), t0=0, t1=5),
        ],
        final={"x": [1], "y": [1]},  # orders x: no read in the history saw its element
        realtime=False,
    )
    assert verdict.kinds == {"G-single"}, verdict.explain()


def test_an_aborted_read_is_g1a() -> None:
    verdict = elle.check(
        [
            txn(a("x", 1), t0=0, t1=1, status=FAIL),
            txn(r("x", [1]), t0=2, t1=3),
        ]
    )
    assert "G1a" in verdict.kinds, verdict.explain()


def test_an_intermediate_read_is_g1b() -> None:
    verdict = elle.check(
        [
            txn(a("x", 1), a("x", 2), t0=0, t1=5),
            txn(r("x", [1]), t0=1, t1=4),
        ]
    )
    assert "G1b" in verdict.kinds, verdict.explain()


def test_a_lost_acknowledged_append_is_found() -> None:
    verdict = elle.check(
        [txn(a("x", 1), t0=0, t1=1), txn(a("x", 2), t0=2, t1=3)],
        final={"x": [2]},
    )
    assert "lost-append" in verdict.kinds, verdict.explain()


def test_reads_that_disagree_on_the_order_are_found() -> None:
    verdict = elle.check(
        [
            txn(a("x", 1), t0=0, t1=1),
            txn(a("x", 2), t0=0, t1=1),
            txn(r("x", [1, 2]), t0=2, t1=3),
            txn(r("x", [2, 1]), t0=2, t1=3),
        ]
    )
    assert "incompatible-order" in verdict.kinds, verdict.explain()


def test_a_stale_strong_read_is_a_realtime_anomaly() -> None:
    verdict = elle.check(
        [txn(a("x", 1), t0=0, t1=1), txn(r("x", []), t0=2, t1=3)], final={"x": [1]}
    )
    assert verdict.kinds == {"G-single-realtime"}, verdict.explain()


def test_an_eventual_read_may_be_stale_but_not_inconsistent() -> None:
    verdict = elle.check(
        [
            txn(a("x", 1), t0=0, t1=1),
            txn(r("x", [1]), a("y", 1), t0=2, t1=3),
            # saw y's append but not the x append that causally preceded it
            txn(r("x", []), r("y", [1]), t0=10, t1=11, eventual=True),
        ]
    )
    assert "G-single" in verdict.kinds, verdict.explain()


def test_an_eventual_read_cannot_see_the_future() -> None:
    verdict = elle.check(
        [
            txn(r("x", [1]), t0=0, t1=1, eventual=True),
            txn(a("x", 1), t0=2, t1=3),
        ]
    )
    assert "future-read" in verdict.kinds, verdict.explain()


def test_an_element_never_appended_is_garbage() -> None:
    assert "garbage" in kinds(txn(a("x", 1), t0=0, t1=1), txn(r("x", [1, 7]), t0=2, t1=3))


def test_a_duplicated_element_is_found() -> None:
    assert "duplicate" in kinds(txn(a("x", 1), t0=0, t1=1), txn(r("x", [1, 1]), t0=2, t1=3))


# Generated ----------------------------------------------------------------------------


@st.composite
def serial_histories(draw: st.DrawFn) -> tuple[list[Op], dict[str, list[int]]]:
    """Run transactions one after another against a dict of lists, then give each a
    real-time interval that overlaps its neighbours without reordering them."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    state: dict[str, list[int]] = {k: [] for k in "xyz"}
    ops = []
    t = 0
    element = 0
    for p in range(draw(st.integers(1, 25))):
        mops: list[tuple[str, Any, Any]] = []
        eventual = rng.random() < 0.2
        for k in rng.sample("xyz", rng.randint(1, 3)):
            if eventual or rng.random() < 0.5:
                mops.append(("r", k, list(state[k])))
            else:
                element += 1
                mops.append(("append", k, element))
        # a failed or info transaction, decided before it takes effect
        status = rng.choice([OK, OK, OK, FAIL, INFO]) if not eventual else OK
        if status is not FAIL and not (status is INFO and rng.random() < 0.5):
            for f, k, v in mops:
                if f == "append":
                    state[k].append(v)
        ops.append(txn(*mops, t0=t, t1=t + 2, status=status, eventual=eventual, p=p))
        t += 2
    return ops, {k: list(v) for k, v in state.items()}


@settings(max_examples=200)
@given(serial_histories())
def test_histories_of_a_serial_execution_are_valid(
    case: tuple[list[Op], dict[str, list[int]]],
) -> None:
    ops, final = case
    verdict = elle.check(ops, final=final)
    assert verdict.valid, verdict.explain()


def test_a_long_history_is_checked_quickly() -> None:
    import time

    ops: list[Op] = []
    state: dict[str, list[int]] = {f"k{i}": [] for i in range(20)}
    rng = random.Random(7)
    for i in range(2000):
        mops: list[tuple[str, Any, Any]] = []
        for k in rng.sample(sorted(state), 3):
            if rng.random() < 0.5:
                mops.append(("r", k, list(state[k])))
            else:
                state[k].append(i * 10 + len(mops))
                mops.append(("append", k, state[k][-1]))
        ops.append(txn(*mops, t0=2 * i, t1=2 * i + 3))
    started = time.monotonic()
    verdict = elle.check(ops, final=state)
    assert verdict.valid, verdict.explain()
    assert time.monotonic() - started < 10
