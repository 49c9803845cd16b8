"""A full disk under the engine: the first failed write fences it (every later write and
fsync fails with the same StorageError, never a retried fsync), the failure policy runs
once, and a database reopened once space exists has everything that was synced."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import can_mount, resize_disk, small_disk
from zonestore_node.storage.engine import Engine, Family, StorageError

pytestmark = pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", "2m") as path:
        yield path


def _put(engine: Engine, i: int) -> None:
    batch = engine.batch()
    batch.put(Family.ENTITIES, b"k%08d" % i, os.urandom(1000))
    engine.write(batch)


def test_a_full_disk_fences_the_engine_and_synced_writes_survive_a_reopen(disk: Path) -> None:
    failures: list[StorageError] = []
    engine = Engine(disk / "db", on_failure=failures.append)
    synced = 0
    with pytest.raises(StorageError) as caught:
        for i in range(100_000):
            _put(engine, i)
            if i % 50 == 49:
                engine.sync_wal()
                synced = i + 1
    assert caught.value.no_space
    assert "no space left on device" in str(caught.value)
    assert failures == [caught.value]  # the policy ran once
    assert not engine.healthy
    assert synced > 0
    # Fenced: the same error again, without touching RocksDB, even once space is back.
    resize_disk(disk, "16m")
    with pytest.raises(StorageError) as again:
        _put(engine, 0)
    assert again.value is caught.value
    with pytest.raises(StorageError):
        engine.sync_wal()
    engine.close()
    assert failures == [caught.value]

    reopened = Engine(disk / "db", on_failure=failures.append)
    try:
        for i in range(synced):
            assert reopened.get(Family.ENTITIES, b"k%08d" % i) is not None, i
        _put(reopened, 10**7)
        reopened.sync_wal()
    finally:
        reopened.close()


def test_opening_on_a_full_disk_is_a_storage_failure(disk: Path) -> None:
    failures: list[StorageError] = []
    engine = Engine(disk / "db", on_failure=failures.append)
    with pytest.raises(StorageError):
        for i in range(100_000):
            _put(engine, i)
    engine.close()
    # Recovery would flush the WAL into a table file: no room for it.
    with pytest.raises(StorageError) as caught:
        Engine(disk / "db", on_failure=failures.append)
    assert caught.value.no_space
    assert caught.value.operation == "open"
    resize_disk(disk, "16m")
    Engine(disk / "db", on_failure=failures.append).close()
