"""The RocksDB engine's life cycle."""

from __future__ import annotations

from pathlib import Path

from zonestore_node.storage.engine import Engine, Family


def test_close_releases_the_lock_while_the_engine_object_is_still_referenced(
    tmp_path: Path,
) -> None:
    """A snapshot staging replaced by a resend is reopened at once, while the caller still
    holds the old Engine: close() itself must free the database and its LOCK."""
    first = Engine(tmp_path / "db")
    batch = first.batch()
    batch.put(Family.META, b"k", b"v")
    first.write(batch)
    first.close()
    second = Engine(tmp_path / "db")  # `first` is still referenced here
    try:
        assert second.get(Family.META, b"k") == b"v"
    finally:
        second.close()
    first.close()  # twice is harmless
