"""The leader's commit-timestamp clock: microseconds since the epoch, never going back.

A hybrid of wall time and a counter: `now()` is max(wall clock, last + 1), so commit
timestamps are unique and increase in the order they are handed out, even when the
wall clock steps backwards. `observe(ts)` moves it past timestamps seen elsewhere (the
stored data on restart; the log of a previous leader after a leader change).

`ClockGuard` supplies that wall clock on a replica of a group: its own, unless a majority
of its peers' clocks says it is off by more than the maximum offset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("zonestore.clock")
LOG_EVERY_US = 10_000_000


class HybridClock:
    def __init__(self, wall_micros: Callable[[], int] | None = None) -> None:
        self._wall = wall_micros or (lambda: time.time_ns() // 1000)
        self.last = 0

    def now(self) -> int:
        wall = self._wall()
        self.last = wall if wall > self.last else self.last + 1
        return self.last

    def observe(self, ts: int) -> None:
        if ts > self.last:
            self.last = ts

    def wall(self) -> int:
        """The wall clock this clock follows (µs), for other wall-time decisions (the
        retention horizon), so that they agree with the commit timestamps."""
        return self._wall()


def _median(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


class ClockGuard:
    """A replica's wall clock, checked against its peers' so that one bad clock cannot
    push commit timestamps away from real time, nor make garbage collection eat into
    the retention window (`earliest_us`).

    The hybrid clock never goes back, so a single timestamp from a leader whose clock
    jumped two hours ahead would leave every later commit two hours ahead (update_time,
    read_time and garbage collection all follow). So every peer reports its wall clock
    (the transport's ACK frames, ~10 a second), and the guard keeps, per peer, that clock
    minus this replica's *monotonic* clock: a jump of this replica's own wall clock does
    not move those. `now_us()` is the local wall clock, unless it is more than
    `max_offset_us` away from the median of every fresh clock (its own included) — then
    the median: a majority of clocks decides, as in CockroachDB's max-offset check, but
    the replica keeps serving on the corrected clock instead of stopping. With fewer than
    three fresh clocks there is no majority to follow and the local clock is used.
    """

    def __init__(
        self,
        max_offset_us: int = 500_000,
        stale_after_us: int = 10_000_000,
        wall_us: Callable[[], int] | None = None,
        mono_us: Callable[[], int] | None = None,
    ) -> None:
        self.max_offset_us = max_offset_us
        self.stale_after_us = stale_after_us
        self._wall = wall_us or (lambda: time.time_ns() // 1000)
        self._mono = mono_us or (lambda: time.monotonic_ns() // 1000)
        self._bases: dict[str, tuple[int, int]] = {}  # peer -> (its wall - our mono, when)
        self.corrections = 0  # timestamps taken from the median instead of the local clock
        self._logged_at: int | None = None

    def observe(self, peer: str, peer_wall_us: int) -> None:
        mono = self._mono()
        self._bases[peer] = (peer_wall_us - mono, mono)

    def _fresh(self, mono: int) -> list[int]:
        return [b for b, at in self._bases.values() if mono - at <= self.stale_after_us]

    def _offset(self, wall: int, mono: int) -> int:
        fresh = self._fresh(mono)
        if len(fresh) < 2:
            return 0
        own = wall - mono
        return _median([own, *fresh]) - own

    def offset_us(self) -> int:
        """The median clock minus the local clock (positive: this replica is behind);
        0 without a majority of fresh clocks."""
        return self._offset(self._wall(), self._mono())

    def earliest_us(self) -> int:
        """The earliest of this replica's clock and every fresh peer clock: what garbage
        collection measures retention by, so that no replica collects a version that
        another (one that may lead next) still counts inside the window. A follower
        hears only its leader's clock, too few for a majority; the minimum is safe with
        any number (a clock behind only delays collection)."""
        mono = self._mono()
        return min([self._wall(), *(mono + b for b in self._fresh(mono))])

    def now_us(self) -> int:
        wall, mono = self._wall(), self._mono()
        offset = self._offset(wall, mono)
        if abs(offset) <= self.max_offset_us:
            return wall
        self.corrections += 1
        if self._logged_at is None or mono - self._logged_at >= LOG_EVERY_US:
            self._logged_at = mono
            log.warning(
                "clock.offset_exceeded offset_ms=%.1f max_offset_ms=%.1f corrections=%d "
                "action=stamping with the median of the group's clocks",
                offset / 1000,
                self.max_offset_us / 1000,
                self.corrections,
            )
        return wall + offset
