"""The RocksDB database (through rocksdict) and its column families.

Owns opening, closing, atomic batch writes and the durability point. Knows nothing of
MVCC, Datastore or replication: it moves bytes.

Column families:
    default    node metadata (id allocator high-water marks, applied position, ...)
    entities   MVCC versions of entities      (keycodec: versioned entity keys)
    indexes    MVCC versions of index entries (keycodec: versioned index keys)
    raftlog    the replicated log (owned by replica/, stored here so one fsync covers both)

Durability: rocksdict holds the GIL through a `sync=True` write, which would stall the
event loop on every fsync. So every write here is `sync=False`, and the commit point is
`sync_wal()`: one fdatasync of the WAL, which releases the GIL and is meant to run in a
worker thread, once per group of writes (group commit).
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any

import rocksdict


class Family(StrEnum):
    META = "default"
    ENTITIES = "entities"
    INDEXES = "indexes"
    RAFTLOG = "raftlog"


def _options() -> Any:
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.increase_parallelism(2)
    return opts


class Engine:
    """One RocksDB database with zonestore's column families."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        families = {
            f.value: rocksdict.Options(raw_mode=True) for f in Family if f is not Family.META
        }
        if read_only:
            self._db = rocksdict.Rdict(
                str(self.path),
                options=_options(),
                column_families=families,
                access_type=rocksdict.AccessType.read_only(),
            )
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self._db = rocksdict.Rdict(str(self.path), options=_options(), column_families=families)
            self._fsync_side_files()
        self._handles = {f: self._db.get_column_family_handle(f.value) for f in Family}
        self._views = {f: self._db.get_column_family(f.value) for f in Family}
        self._write_opts = rocksdict.WriteOptions()
        self._write_opts.sync = False
        self.closed = False

    def _fsync_side_files(self) -> None:
        """rocksdict writes rocksdict-config.json without fsync; a power loss right after
        creating the database could leave it torn and the database unopenable."""
        side = self.path / "rocksdict-config.json"
        if side.exists():
            fd = os.open(side, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        dfd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def batch(self) -> WriteBatch:
        return WriteBatch(self)

    def write(self, batch: WriteBatch) -> None:
        """Apply a batch atomically (not yet durable: see `sync_wal`)."""
        if batch.count:
            self._db.write(batch.raw, self._write_opts)

    def sync_wal(self) -> None:
        """The durability point: fdatasync the WAL. Releases the GIL; call from a thread."""
        self._db.flush_wal(True)

    def get(self, family: Family, key: bytes) -> bytes | None:
        value = self._views[family].get(key)
        return None if value is None else bytes(value)

    def iterator(self, family: Family, upper_bound: bytes | None = None) -> RawIterator:
        """A raw iterator over one family; it reads an implicit snapshot taken at creation.

        Only the upper bound is set here: rocksdict's `set_iterate_lower_bound` sets the
        upper bound instead, so callers seek to their lower end.
        """
        read_opts = rocksdict.ReadOptions()
        if upper_bound is not None:
            read_opts.set_iterate_upper_bound(upper_bound)
        return RawIterator(self._views[family].iter(read_opts), read_opts, upper_bound)

    def handle(self, family: Family) -> Any:
        return self._handles[family]

    def checkpoint(self, directory: str | os.PathLike[str]) -> None:
        rocksdict.Checkpoint(self._db).create_checkpoint(str(directory))

    def approximate_size(self) -> int:
        total = 0
        for family in Family:
            value = self._views[family].property_int_value("rocksdb.total-sst-files-size")
            total += int(value or 0)
            value = self._views[family].property_int_value("rocksdb.cur-size-all-mem-tables")
            total += int(value or 0)
        return total

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if not self.read_only:
                self._db.flush_wal(True)
            self._db.close()


class RawIterator:
    """A rocksdict iterator that keeps its read options and bound alive.

    RocksDB keeps a pointer to the upper-bound slice, and rocksdict does not own a copy:
    when the bytes object is freed while the iterator lives, the bound reads freed
    memory and scans end early at random (seen in the MVCC property test). Holding the
    references here makes the bound outlive the iterator.
    """

    __slots__ = (
        "_bound",
        "_opts",
        "key",
        "next",
        "prev",
        "seek",
        "seek_for_prev",
        "valid",
        "value",
    )

    def __init__(self, raw: Any, opts: Any, bound: bytes | None) -> None:
        self._opts = opts
        self._bound = bound
        self.seek = raw.seek
        self.seek_for_prev = raw.seek_for_prev
        self.valid = raw.valid
        self.key = raw.key
        self.value = raw.value
        self.next = raw.next
        self.prev = raw.prev


class WriteBatch:
    """An atomic group of puts and deletes across column families."""

    __slots__ = ("_engine", "count", "raw")

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.raw = rocksdict.WriteBatch(raw_mode=True)
        self.count = 0

    def put(self, family: Family, key: bytes, value: bytes) -> None:
        self.raw.put(key, value, self._engine.handle(family))
        self.count += 1

    def delete(self, family: Family, key: bytes) -> None:
        self.raw.delete(key, self._engine.handle(family))
        self.count += 1

    def delete_range(self, family: Family, begin: bytes, end: bytes) -> None:
        """Delete every key in [begin, end)."""
        self.raw.delete_range(begin, end, self._engine.handle(family))
        self.count += 1
