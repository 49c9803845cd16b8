"""The serving process's garbage collector (server.tune_gc), in a process of its own:
tuning the test process's collector would change every test after it."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
from zonestore_node import server
before = len(gc.get_objects())
server.tune_gc()
print(gc.get_threshold()[0], gc.get_freeze_count(), before, len(gc.get_objects()))
"""


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    threshold, frozen, before, after = (int(x) for x in out)
    assert threshold == 7_000  # from Python's 700
    # What importing the node built is out of the collector's reach: a full collection
    # walks what is left, a small part of it.
    assert frozen > 20_000
    assert after < before // 10
