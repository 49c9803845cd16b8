"""The leader's commit-timestamp clock: microseconds since the epoch, never going back.

A hybrid of wall time and a counter: `now()` is max(wall clock, last + 1), so commit
timestamps are unique and increase in the order they are handed out, even when the
wall clock steps backwards. `observe(ts)` moves it past timestamps seen elsewhere (the
stored data on restart; the log of a previous leader after a leader change).
"""

from __future__ import annotations

import time
from collections.abc import Callable


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
