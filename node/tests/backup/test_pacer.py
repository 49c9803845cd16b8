"""backup create's pacing: the bytes read from the source replica, over every upload
thread together, stay at --max-rate per second."""

from __future__ import annotations

import threading
import time

import pytest

from zonestore_node.backup import base, cli


def test_threads_reading_together_are_held_to_the_rate_in_all() -> None:
    pacer = base.Pacer(2_000_000)  # 2 MB/s

    def read() -> None:
        for _ in range(4):
            pacer.take(250_000)

    threads = [threading.Thread(target=read) for _ in range(3)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    # 3 MB at 2 MB/s: 1.5 s, less at most the burst credit a fresh pacer starts with.
    assert took >= 1.5 - 0.25 - 0.05, took
    assert took < 10, took


def test_no_rate_does_not_wait_and_a_saved_up_burst_is_bounded() -> None:
    unpaced = base.Pacer(None)
    started = time.monotonic()
    for _ in range(1000):
        unpaced.take(1 << 20)
    assert time.monotonic() - started < 1
    paced = base.Pacer(1_000_000)
    time.sleep(1.0)  # idle for a second: at most 0.25 s of credit is kept
    started = time.monotonic()
    paced.take(1_000_000)
    assert time.monotonic() - started >= 0.7


def test_the_flag_reads_sizes_and_zero_means_no_limit() -> None:
    assert cli._rate("64MB") == 64_000_000
    assert cli._rate("100MiB") == 100 << 20
    assert cli._rate("0") is None
    with pytest.raises(ValueError, match="--max-rate must be a size"):
        cli._rate("fast")
    with pytest.raises(ValueError, match="above 0"):
        base.Pacer(-1)


def test_a_follower_heard_from_within_a_second_is_a_source_even_between_quorum_checks() -> None:
    # Each Raft quorum check clears every follower's `healthy` for a moment.
    assert base._recently_heard({"healthy": False, "last_contact_ms": 40})
    assert base._recently_heard({"healthy": True, "last_contact_ms": None})
    assert not base._recently_heard({"healthy": False, "last_contact_ms": 5000})
    assert not base._recently_heard({"healthy": None, "last_contact_ms": None})
