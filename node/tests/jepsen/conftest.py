"""Prints each cluster run's seed and verdict at the end of the pytest run, pass or fail,
so a bounded run with a fresh seed can be replayed (`make chaos SEED=...`)."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.jepsen import test_cluster

    if test_cluster.RUNS:
        terminalreporter.section("jepsen runs (replay: make chaos SEED=<seed> MIX=<mix>)")
        for line in test_cluster.RUNS:
            terminalreporter.write_line(line)
