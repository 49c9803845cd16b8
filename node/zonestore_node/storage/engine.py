"""The RocksDB database (through rocksdict) and its column families.

Owns opening, closing, atomic batch writes and the durability point. Knows nothing of
MVCC, Datastore or replication: it moves bytes.

Memory: every family uses the block cache and write buffer manager of storage/memory.py
(shared by the databases of the process), so RocksDB stays within `--memory-budget`.

Column families:
    default    node metadata (id allocator high-water marks, applied position, ...)
    entities   MVCC versions of entities      (keycodec: versioned entity keys)
    indexes    MVCC versions of index entries (keycodec: versioned index keys)
    raftlog    the replicated log (owned by replica/, stored here so one fsync covers both)

Durability: rocksdict holds the GIL through a `sync=True` write, which would stall the
event loop on every fsync. So every write here is `sync=False`, and the commit point is
`sync_wal()`: one fdatasync of the WAL, which releases the GIL and is meant to run in a
worker thread, once per group of writes (group commit).

Storage failures are fatal to the process (crash-only). When a write, the WAL fsync,
a checkpoint, or opening the database fails with an I/O error (a full disk: ENOSPC; a
failed fsync: EIO), RocksDB refuses every later write ("Writer has previous error"),
rocksdict exposes no `DB::Resume()`, and whoever called us has already moved its memory
(the Raft log mirror, the applied index) past what is on disk. Retrying an fsync is never
safe (PostgreSQL's "fsyncgate"); etcd exits on a failed WAL write for the same reason. So
the engine logs one `storage.failed` line and ends the process with EXIT_STORAGE (75,
EX_TEMPFAIL): nothing is acknowledged before the fsync that covers it, so nothing
acknowledged is lost, and the supervisor (the kubelet, the test harness)
starts it again from what is durable. A database that cannot open for lack of space
fails the same way, so a restarted replica comes up once space exists. `on_failure`
replaces the exit in tests.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import rocksdict

from zonestore_node.storage import memory

log = logging.getLogger("zonestore.storage")

# TEST ONLY: with ZONESTORE_UNSAFE_NO_FSYNC=1 the durability point hands the WAL to the
# kernel without fsync, i.e. the node acknowledges before fsync: the broken build that the
# `power` fault (tests/jepsen/powerfs.py) must catch.
UNSAFE_NO_FSYNC_ENV = "ZONESTORE_UNSAFE_NO_FSYNC"

# sysexits.h EX_TEMPFAIL: "a temporary failure; the invoker is invited to retry".
EXIT_STORAGE = 75


class StorageError(Exception):
    """An I/O failure of the database: after it, this engine accepts no more writes."""

    def __init__(self, path: Path, operation: str, cause: BaseException) -> None:
        self.path = path
        self.operation = operation
        self.cause = cause
        text = str(cause)
        self.no_space = (
            isinstance(cause, OSError) and cause.errno == errno.ENOSPC
        ) or "No space left on device" in text
        what = "no space left on device" if self.no_space else "I/O error"
        super().__init__(f"storage unavailable: {what} during {operation} at {path}: {text}")


def _is_io_error(exc: BaseException) -> bool:
    """rocksdict raises a bare Exception whose text starts with RocksDB's status."""
    return isinstance(exc, OSError) or str(exc).startswith("IO error")


def exit_for_restart(error: StorageError) -> None:
    """The default failure policy: one log line, then end the process at once (no
    unwinding: no `finally` may write or acknowledge anything after the failure)."""
    log.critical(
        "storage.failed op=%s no_space=%s path=%s exit_code=%d error=%s "
        "action=exiting so that a restart recovers from what is durable",
        error.operation,
        error.no_space,
        error.path,
        EXIT_STORAGE,
        error.cause,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_STORAGE)


class Family(StrEnum):
    META = "default"
    ENTITIES = "entities"
    INDEXES = "indexes"
    RAFTLOG = "raftlog"


def _options(shared: memory.Shared) -> Any:
    opts = rocksdict.Options(raw_mode=True)
    shared.apply_db(opts)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.increase_parallelism(2)
    # RocksDB renames its info LOG on every open; a replica restarting over and over on
    # a full disk must not fill it further with LOG.old files (default: keep 1000).
    opts.set_keep_log_file_num(5)
    return opts


class Engine:
    """One RocksDB database with zonestore's column families."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        on_failure: Callable[[StorageError], None] = exit_for_restart,
        shared: memory.Shared | None = None,
    ) -> None:
        """`on_failure` is called with the first StorageError (the default ends the
        process); if it returns, the error is raised, now and on every later write.
        `shared`: the block cache and write buffer manager (default: the process's,
        storage/memory.py)."""
        self.path = Path(path)
        self.read_only = read_only
        self.on_failure = on_failure
        self.failure: StorageError | None = None
        self._fsync = os.environ.get(UNSAFE_NO_FSYNC_ENV, "") != "1"
        if not self._fsync and not read_only:
            log.warning("storage.unsafe_no_fsync path=%s (TEST ONLY: acks before fsync)", path)
        self.shared = shared if shared is not None else memory.process_shared()
        families = {}
        for f in Family:
            if f is not Family.META:
                families[f.value] = rocksdict.Options(raw_mode=True)
                self.shared.apply_family(families[f.value])
        if read_only:
            self._db = rocksdict.Rdict(
                str(self.path),
                options=_options(self.shared),
                column_families=families,
                access_type=rocksdict.AccessType.read_only(),
            )
        else:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                self._db = rocksdict.Rdict(
                    str(self.path), options=_options(self.shared), column_families=families
                )
                self._fsync_side_files()
            except Exception as exc:
                # Only a full disk: other open errors (a held lock, corruption) are not
                # cured by a restart and keep their own message.
                error = StorageError(self.path, "open", exc)
                if not error.no_space:
                    raise
                self._fail(error)
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

    def _fail(self, error: StorageError) -> None:
        """Fence the engine, run the failure policy, raise."""
        if self.failure is None:
            self.failure = error
            self.on_failure(error)
        raise error

    @property
    def healthy(self) -> bool:
        return self.failure is None

    def write(self, batch: WriteBatch) -> None:
        """Apply a batch atomically (not yet durable: see `sync_wal`)."""
        if self.failure is not None:
            raise self.failure
        if batch.count:
            try:
                self._db.write(batch.raw, self._write_opts)
            except Exception as exc:
                if not _is_io_error(exc):
                    raise
                self._fail(StorageError(self.path, "write", exc))

    def sync_wal(self) -> None:
        """The durability point: fdatasync the WAL. Releases the GIL; call from a thread.
        A failure here is never retried (the kernel may have dropped the dirty pages)."""
        if self.failure is not None:
            raise self.failure
        try:
            self._db.flush_wal(self._fsync)
        except Exception as exc:
            self._fail(StorageError(self.path, "sync", exc))

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
        if self.failure is not None:
            raise self.failure
        try:
            rocksdict.Checkpoint(self._db).create_checkpoint(str(directory))
        except Exception as exc:
            if not _is_io_error(exc):
                raise
            self._fail(StorageError(self.path, "checkpoint", exc))

    def approximate_size(self) -> int:
        total = 0
        for family in Family:
            value = self._views[family].property_int_value("rocksdb.total-sst-files-size")
            total += int(value or 0)
            value = self._views[family].property_int_value("rocksdb.cur-size-all-mem-tables")
            total += int(value or 0)
        return total

    def memory_usage(self) -> dict[str, int]:
        """RocksDB's memory by kind, in bytes (the block cache is shared by every
        database of the process, memtables are this database's)."""
        meta = self._views[Family.META]
        return {
            "block_cache_capacity": int(
                meta.property_int_value("rocksdb.block-cache-capacity") or 0
            ),
            "block_cache_usage": int(meta.property_int_value("rocksdb.block-cache-usage") or 0),
            "memtables": sum(
                int(self._views[f].property_int_value("rocksdb.cur-size-all-mem-tables") or 0)
                for f in Family
            ),
            "write_buffer_limit": self.shared.write_buffer_manager.get_buffer_size(),
        }

    def close(self) -> None:
        """Close the database and release its LOCK now, not when this object is
        collected: rocksdict keeps the database open while a column family handle lives,
        so an Engine still referenced (a snapshot staging being replaced, a restore)
        would hold the LOCK and the next open of the same folder would fail."""
        if not self.closed:
            self.closed = True
            if self.read_only or self.failure is None:
                if not self.read_only:
                    self.sync_wal()
                self._db.close()
            else:
                try:  # a failed database refuses to close ("Writer has previous error")
                    self._db.close()
                except Exception as exc:
                    log.warning("storage.close_failed path=%s error=%s", self.path, exc)
            # Dropping every reference frees the database (and its LOCK).
            self._handles.clear()
            self._views.clear()
            del self._db
            if self.failure is not None:
                gc.collect()


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
