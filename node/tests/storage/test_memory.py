"""RocksDB's memory budget: parsing --memory-budget, and the database using it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from zonestore_node import cli, supervisor
from zonestore_node.storage import memory
from zonestore_node.storage.engine import Engine, Family

MiB = memory.MiB


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256MiB", 256 * MiB),
        ("256Mi", 256 * MiB),
        ("1GiB", 1 << 30),
        ("1.5Gi", 3 << 29),
        ("500MB", 500_000_000),
        ("2G", 2_000_000_000),
        ("123456789", 123456789),
        (" 64 mib ", 64 * MiB),
    ],
)
def test_sizes_parse_with_binary_and_decimal_units(text: str, size: int) -> None:
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "12XB", "-5MiB", "1e9", "MiB"])
def test_a_size_that_is_not_a_size_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(memory.BudgetError, match="such as 256MiB"):
        memory.parse_size(text)


def test_a_budget_below_the_minimum_is_refused() -> None:
    with pytest.raises(memory.BudgetError, match="at least 32MiB, got 16MiB"):
        memory.Budget.parse("16MiB")


def test_an_empty_flag_means_the_default_budget() -> None:
    assert memory.Budget.parse("").total == memory.DEFAULT_BUDGET == 256 * MiB
    assert memory.Budget.parse("1GiB").write_buffers == 256 * MiB
    assert memory.Budget.parse("1GiB").family_write_buffer == 128 * MiB


def test_sizes_print_in_their_shortest_exact_unit() -> None:
    assert memory.format_size(256 * MiB) == "256MiB"
    assert memory.format_size(1 << 30) == "1GiB"
    assert memory.format_size(1536 * 1024) == "1536KiB"
    assert memory.format_size(1000) == "1000"


def test_the_database_uses_the_budget_as_one_block_cache_with_memtables_charged_to_it(
    tmp_path: Path,
) -> None:
    shared = memory.Shared(memory.Budget(64 * MiB))
    engine = Engine(tmp_path / "db", shared=shared)
    try:
        for family in Family:  # one cache for every family, of the budget's size
            view = engine._views[family]
            assert view.property_int_value("rocksdb.block-cache-capacity") == 64 * MiB
        idle = engine.memory_usage()
        batch = engine.batch()
        for i in range(20_000):
            batch.put(Family.ENTITIES, i.to_bytes(4, "big"), b"x" * 100)
        engine.write(batch)
        usage = engine.memory_usage()
        assert usage["block_cache_capacity"] == 64 * MiB
        assert usage["write_buffer_limit"] == 16 * MiB
        assert shared.write_buffer_manager.enabled()
        # The write buffer manager reserves the memtables' memory in the block cache.
        assert usage["memtables"] >= 2 * MiB
        assert usage["block_cache_usage"] - idle["block_cache_usage"] >= 2 * MiB
        assert shared.write_buffer_manager.get_usage() >= 2 * MiB
    finally:
        engine.close()
    options = max((tmp_path / "db").glob("OPTIONS-*")).read_text()
    # Every family: memtables of write_buffers / 2; index and filter blocks in the cache.
    assert options.count("write_buffer_size=8388608") == len(Family)
    assert options.count("cache_index_and_filter_blocks=true") == len(Family)


def test_memtables_beyond_the_write_buffers_are_flushed(tmp_path: Path) -> None:
    shared = memory.Shared(memory.Budget(32 * MiB))  # write buffers of 8 MiB
    engine = Engine(tmp_path / "db", shared=shared)
    try:
        for round_ in range(12):  # ~24 MiB over three families
            batch = engine.batch()
            for i in range(5_000):
                key = round_.to_bytes(2, "big") + i.to_bytes(4, "big")
                for family in (Family.ENTITIES, Family.INDEXES, Family.RAFTLOG):
                    batch.put(family, key, b"y" * 128)
            engine.write(batch)
        # The manager schedules the flushes; RocksDB's background threads run them (on a
        # busy machine, a moment after the write returns).
        deadline = time.monotonic() + 20
        while (held := engine.memory_usage()["memtables"]) > 8 * MiB + 2 * MiB:
            assert time.monotonic() < deadline, f"memtables still hold {held} bytes"
            time.sleep(0.05)
        assert engine.get(Family.INDEXES, (0).to_bytes(2, "big") + (7).to_bytes(4, "big"))
    finally:
        engine.close()


def test_every_database_of_the_process_shares_the_configured_budget(tmp_path: Path) -> None:
    memory.configure(memory.Budget(96 * MiB))
    try:
        first = Engine(tmp_path / "a")
        second = Engine(tmp_path / "b")
        try:
            assert first.shared is second.shared is memory.process_shared()
            assert first.memory_usage()["block_cache_capacity"] == 96 * MiB
        finally:
            first.close()
            second.close()
    finally:
        memory.configure(memory.Budget())
    assert memory.process_shared().budget.total == memory.DEFAULT_BUDGET


@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_bad_memory_budget_is_a_usage_error_that_names_the_flag(
    command: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "zonestore_node.cli", command, "--memory-budget", "8MiB",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"zonestore {command}: --memory-budget must be at least 32MiB" in proc.stderr
    assert not list(tmp_path.iterdir())  # refused before anything started


def test_zonestore_run_passes_the_budget_to_every_replica(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[tuple[str, ...]] = []

    def run(specs: list[supervisor.ReplicaSpec], *_: object, **__: object) -> int:
        started.extend(spec.command for spec in specs)
        return 0

    monkeypatch.setattr(supervisor, "run", run)
    args = ["run", "--memory-budget", "0.5GiB", "--data-dir", str(tmp_path)]
    assert cli.main(args) == 0
    assert len(started) == 3
    for command in started:
        flag = command.index("--memory-budget")
        assert command[flag + 1] == "512MiB"
        assert cli.build_parser().parse_args(command[3:]).memory_budget == "512MiB"
