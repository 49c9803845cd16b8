"""Test-only wall-clock skew for a replica process (the `clock` nemesis): put this
folder first on the replica's PYTHONPATH and name a file in JEPSEN_CLOCK_FILE holding
an offset ("+0", "+2h", "-30m", "-90s"); `time.time()` and `time.time_ns()` then read
real time plus that offset, re-read at most every 50 ms, so rewriting the file jumps the
clock while the replica runs. Those are the clocks the node's logic reads for wall time
(the hybrid commit clock, the retention horizon, logs); the monotonic clock (raft ticks,
timeouts, transaction expiry) stays real.

The fallback only: the clock nemesis preloads libfaketime (../faketime.py builds 0.9.12,
`make faketime`) and uses this shim when that library is missing (no network for the
build). Debian's own 0.9.10 cannot serve: with DONT_FAKE_MONOTONIC=1 every
`time.sleep()` in Python 3.11 fails with EINVAL. Nothing here is imported by the node's
code.
"""

from __future__ import annotations

import os
import re
import time

_PATH = os.environ.get("JEPSEN_CLOCK_FILE")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_offset_ns(text: str) -> int:
    match = re.fullmatch(r"\s*([+-]?\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        return 0
    return int(float(match.group(1)) * _UNITS[match.group(2)] * 1_000_000_000)


if _PATH:
    _clock_file = _PATH  # a str here; the closure below cannot see the narrowing of _PATH
    _real_time_ns = time.time_ns
    _state = {"offset": 0, "next": 0.0}

    def _offset() -> int:
        now = time.monotonic()
        if now >= _state["next"]:
            _state["next"] = now + 0.05
            try:
                with open(_clock_file) as f:
                    _state["offset"] = parse_offset_ns(f.read())
            except OSError:
                pass
        return int(_state["offset"])

    def _time_ns() -> int:
        return _real_time_ns() + _offset()

    def _time() -> float:
        return _time_ns() / 1e9

    time.time_ns = _time_ns
    time.time = _time
