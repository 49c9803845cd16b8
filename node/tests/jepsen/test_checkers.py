"""The bank, set, eventual-read and commit-timestamp checkers on hand-made histories:
stale eventual reads accepted, invented or refused data and torn snapshots rejected,
commit timestamps that go back in real time or against a key's order rejected; and the
clock shim's offsets parsed as the nemesis writes them."""

from __future__ import annotations

from typing import Any

from tests.jepsen import checkers
from tests.jepsen.clockshim import sitecustomize as shim
from tests.jepsen.history import Op, Status

OK, FAIL = Status.OK, Status.FAIL


def op(f: str, key: Any, value: Any, t0: int, t1: int, result: Any = None,
       status: Status = OK, commit_ts: int | None = None) -> Op:  # fmt: skip
    return Op(0, f, key, value, status, t0, t1, result, "", commit_ts)


def test_a_stale_eventual_register_read_is_accepted() -> None:
    history = [
        op("write", "k", 1, 0, 1),
        op("write", "k", 2, 2, 3),
        op("eread", "k", None, 4, 5, 1),
    ]
    assert checkers.check_eventual_registers(history).valid


def test_an_eventual_read_of_a_value_never_written_is_rejected() -> None:
    history = [op("write", "k", 1, 0, 1), op("eread", "k", None, 4, 5, 9)]
    assert not checkers.check_eventual_registers(history).valid


def test_an_eventual_read_of_a_refused_write_is_rejected() -> None:
    history = [op("write", "k", 1, 0, 1, status=FAIL), op("eread", "k", None, 4, 5, 1)]
    assert not checkers.check_eventual_registers(history).valid


def test_an_eventual_read_of_a_later_write_is_rejected() -> None:
    history = [op("eread", "k", None, 0, 1, 7), op("cas", "k", (None, 7), 2, 3)]
    assert not checkers.check_eventual_registers(history).valid


def test_an_eventual_bank_read_is_empty_or_whole() -> None:
    accounts = ["a", "b"]
    empty = op("eread", "bank", None, 0, 1, {})
    whole = op("eread", "bank", None, 2, 3, {"a": 150, "b": 50})
    torn = op("eread", "bank", None, 4, 5, {"a": 150, "b": 100})
    assert checkers.check_bank([empty, whole], accounts, 200).valid
    assert not checkers.check_bank([empty, whole, torn], accounts, 200).valid


def test_an_eventual_set_read_may_miss_but_not_invent() -> None:
    adds = [op("add", "set", "e1", 0, 1), op("add", "set", "e2", 2, 3, status=FAIL)]
    assert checkers.check_set([*adds, op("eread", "set", None, 4, 5, [])], {"e1"}).valid
    invented = op("eread", "set", None, 4, 5, ["e1", "e9"])
    assert not checkers.check_set([*adds, invented], {"e1"}).valid
    refused = op("eread", "set", None, 4, 5, ["e2"])
    assert not checkers.check_set([*adds, refused], {"e1"}).valid
    early = op("eread", "set", None, 0, 1, ["e3"])
    late = op("add", "set", "e3", 5, 6)
    assert not checkers.check_set([*adds, early, late], {"e1", "e3"}).valid


def txn(t0: int, t1: int, ts: int, *appends: tuple[str, int]) -> Op:
    mops = tuple(("append", k, v) for k, v in appends)
    return op("txn", "strong", mops, t0, t1, list(mops), commit_ts=ts)


def test_commit_timestamps_in_real_time_order_are_accepted() -> None:
    history = [txn(0, 1, 100, ("x", 1)), txn(2, 3, 101, ("x", 2)), txn(0, 5, 99, ("y", 1))]
    assert checkers.check_commit_timestamps(history, {"x": [1, 2], "y": [1]}).valid


def test_a_commit_timestamp_going_back_in_real_time_is_rejected() -> None:
    history = [txn(0, 1, 100, ("x", 1)), txn(2, 3, 90, ("y", 1))]
    verdict = checkers.check_commit_timestamps(history, {"x": [1], "y": [1]})
    assert not verdict.valid, verdict.explain()


def test_commit_timestamps_against_a_keys_order_are_rejected() -> None:
    history = [txn(0, 5, 100, ("x", 1)), txn(0, 5, 90, ("x", 2))]  # concurrent in real time
    verdict = checkers.check_commit_timestamps(history, {"x": [1, 2]})
    assert not verdict.valid, verdict.explain()


def test_the_clock_shim_parses_the_offsets_the_nemesis_writes() -> None:
    assert shim.parse_offset_ns("+0\n") == 0
    assert shim.parse_offset_ns("+2h") == 7200 * 10**9
    assert shim.parse_offset_ns("-30m") == -1800 * 10**9
    assert shim.parse_offset_ns("-90s") == -90 * 10**9
    assert shim.parse_offset_ns("garbage") == 0


def test_commit_times_must_follow_real_time() -> None:
    start, end = 1_800_000_000_000_000, 1_800_000_030_000_000
    ok = Op(0, "txn", None, [], Status.OK, 1, 2, commit_ts=start + 5_000_000)
    ahead = Op(1, "txn", None, [], Status.OK, 3, 4, commit_ts=end + 7200 * 10**6)
    behind = Op(2, "txn", None, [], Status.OK, 5, 6, commit_ts=start - 7200 * 10**6)
    failed = Op(3, "txn", None, [], Status.FAIL, 7, 8, commit_ts=end + 7200 * 10**6)
    good = checkers.check_commit_times_follow_real_time([ok, failed], start, end, 2_000_000)
    assert good.valid, good.explain()
    bad = checkers.check_commit_times_follow_real_time([ok, ahead, behind], start, end, 2_000_000)
    assert not bad.valid
    assert "after the run ended" in bad.explain()
    assert "before the run began" in bad.explain()
