"""The hybrid commit clock and the guard that checks a replica's wall clock against its
peers' (txn/clock.py)."""

from __future__ import annotations

from zonestore_node.txn.clock import ClockGuard, HybridClock

HOUR = 3600 * 10**6


class FakeClocks:
    """This replica's wall and monotonic clocks, moved by the test."""

    def __init__(self) -> None:
        self.real = 1_800_000_000 * 10**6
        self.skew = 0
        self.mono = 5 * 10**6

    def wall(self) -> int:
        return self.real + self.skew

    def monotonic(self) -> int:
        return self.mono

    def advance(self, us: int) -> None:
        self.real += us
        self.mono += us


def _guard(clocks: FakeClocks) -> ClockGuard:
    return ClockGuard(500_000, 10 * 10**6, clocks.wall, clocks.monotonic)


def test_the_hybrid_clock_never_goes_back_and_observes_what_it_sees() -> None:
    wall = [1000]
    clock = HybridClock(lambda: wall[0])
    assert clock.now() == 1000
    wall[0] = 900  # the wall clock steps back
    assert clock.now() == 1001
    clock.observe(5000)
    assert clock.now() == 5001
    assert clock.wall() == 900


def test_a_replica_whose_clock_jumps_ahead_stamps_with_the_majoritys_time() -> None:
    clocks = FakeClocks()
    guard = _guard(clocks)
    guard.observe("b", clocks.real + 2_000)  # peers' clocks: real time, give or take
    guard.observe("c", clocks.real - 3_000)
    assert guard.now_us() == clocks.wall()  # agreed: the local clock
    clocks.skew = 2 * HOUR  # this replica's clock jumps; its peers' reports do not move
    clocks.advance(1_000_000)
    now = guard.now_us()
    assert abs(now - clocks.real) < 10_000
    assert guard.corrections == 1
    assert abs(guard.offset_us() + 2 * HOUR) < 10_000
    clocks.skew = -2 * HOUR  # and behind: the median again, not the local clock
    assert abs(guard.now_us() - clocks.real) < 10_000


def test_an_outlier_peer_does_not_move_the_clock() -> None:
    clocks = FakeClocks()
    guard = _guard(clocks)
    guard.observe("b", clocks.real + 2 * HOUR)  # b's clock is wrong
    guard.observe("c", clocks.real + 1_000)
    assert guard.now_us() == clocks.wall()
    assert guard.corrections == 0


def test_offsets_within_the_limit_keep_the_local_clock() -> None:
    clocks = FakeClocks()
    guard = _guard(clocks)
    guard.observe("b", clocks.real + 400_000)
    guard.observe("c", clocks.real + 450_000)
    assert guard.now_us() == clocks.wall()  # 0.45 s behind: within 0.5 s


def test_without_a_majority_of_fresh_clocks_the_local_clock_decides() -> None:
    clocks = FakeClocks()
    guard = _guard(clocks)
    guard.observe("b", clocks.real)
    clocks.skew = 2 * HOUR
    assert guard.now_us() == clocks.wall()  # one peer against one: no majority
    guard.observe("c", clocks.real)
    assert abs(guard.now_us() - clocks.real) < 10_000
    clocks.advance(11 * 10**6)  # both reports are stale now
    assert guard.now_us() == clocks.wall()


def test_retention_is_measured_by_the_earliest_fresh_clock() -> None:
    """A follower hears only its leader's clock: no majority, but the earliest clock
    keeps garbage collection from eating into another replica's retention window."""
    clocks = FakeClocks()
    guard = _guard(clocks)
    assert guard.earliest_us() == clocks.wall()  # alone: its own clock
    guard.observe("leader", clocks.real)
    clocks.skew = 2 * HOUR  # this follower's clock runs two hours ahead
    assert abs(guard.earliest_us() - clocks.real) < 10_000
    clocks.skew = -60 * 10**6  # behind: its own clock is the earliest
    assert guard.earliest_us() == clocks.wall()
    clocks.skew = 2 * HOUR
    clocks.advance(11 * 10**6)  # the leader's report went stale
    assert guard.earliest_us() == clocks.wall()
