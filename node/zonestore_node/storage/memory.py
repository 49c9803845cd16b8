"""RocksDB's memory budget: one block cache and one write buffer manager per process.

Owns the `--memory-budget` value (parsing and validation) and the RocksDB objects that
enforce it. Imports only rocksdict; knows nothing of MVCC or replication.

Left alone, RocksDB sizes memory per column family: a 64 MiB memtable (up to two of
them) and a private block cache for each of zonestore's four families, with nothing
bounding the sum. A node holding 1M entities measured 558-574 MiB RSS, mostly
memtables. Here every database the process opens (the node's, a snapshot being
received, a backup being restored) shares:

    block cache    capacity = budget: data blocks, index and filter blocks, and the
                   memtables (charged to it as reservations by the manager below)
    write buffers  a WriteBufferManager of budget / 4, charged to the cache: when the
                   memtables of all families together pass it, RocksDB flushes one

So RocksDB's caches and memtables stay near `budget` (the cache is not strict: a block
pinned by a running read may briefly exceed it). The manager does not stall writers
(allow_stall=False): rocksdict holds the GIL through a write, and a stalled write
would freeze the node's event loop and with it Raft's heartbeats; it flushes instead.

The default, when --memory-budget is not given, is 256 MiB: write buffers of 64 MiB
(what one family's memtable alone could use before) and a block cache that fills only
as data is read. The operator passes half the pod's memory limit.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import rocksdict

log = logging.getLogger("zonestore.storage")

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

DEFAULT_BUDGET = 256 * MiB
MIN_BUDGET = 32 * MiB  # below this, memtables of 2 MiB flush constantly: a mistake
WRITE_BUFFER_SHARE = 4  # write buffers = budget / 4
# One family's memtable flushes at this share of the write buffers, so the busiest
# family (the Raft log, entities, indexes under a load) does not have to wait for the
# manager, and two of them fit at once.
FAMILY_WRITE_BUFFER_SHARE = 2

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": KiB,
    "kib": KiB,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": MiB,
    "mib": MiB,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": GiB,
    "gib": GiB,
    "t": 1000**4,
    "tb": 1000**4,
    "ti": 1 << 40,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


class BudgetError(ValueError):
    """A memory budget that cannot be used; the message says what to write instead."""


def parse_size(text: str) -> int:
    """Bytes from `256MiB`, `256Mi`, `1GiB`, `1.5G`, `500MB` or a plain byte count.

    Binary suffixes (Ki, Mi, Gi, with or without B) are powers of 1024, as in
    Kubernetes quantities; K, M, G (with or without B) are powers of 1000.
    """
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise BudgetError(f"must be a size such as 256MiB, 1GiB or 500MB, got {text!r}")
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(size: int) -> str:
    """The shortest exact spelling: 256MiB, 1GiB, 1536KiB, 1000 (bytes)."""
    for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


@dataclass(frozen=True, slots=True)
class Budget:
    """How many bytes RocksDB may hold in memory (block cache + memtables)."""

    total: int = DEFAULT_BUDGET

    def __post_init__(self) -> None:
        if self.total < MIN_BUDGET:
            raise BudgetError(
                f"must be at least {format_size(MIN_BUDGET)}, got {format_size(self.total)}"
            )

    @classmethod
    def parse(cls, text: str) -> Budget:
        """The --memory-budget flag; empty means the default."""
        return cls(parse_size(text)) if text.strip() else cls()

    @property
    def write_buffers(self) -> int:
        return self.total // WRITE_BUFFER_SHARE

    @property
    def family_write_buffer(self) -> int:
        return self.write_buffers // FAMILY_WRITE_BUFFER_SHARE


class Shared:
    """The RocksDB objects of one budget: give `db_options` to the database and
    `family_options` to each column family (the default one included)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.cache = rocksdict.Cache(budget.total)
        self.write_buffer_manager = (
            rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
                budget.write_buffers, False, self.cache
            )
        )

    def apply_family(self, opts: Any) -> None:
        """A family's memtable size and its tables' use of the shared cache."""
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(self.cache)
        # Index and filter blocks go in the cache too (else they grow with the data,
        # outside any budget), at high priority, and level 0's stay pinned.
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        opts.set_block_based_table_factory(table)
        opts.set_write_buffer_size(self.budget.family_write_buffer)

    def apply_db(self, opts: Any) -> None:
        """The database-wide part: the write buffer manager, plus `apply_family` for
        the default family (its options are the database's)."""
        opts.set_write_buffer_manager(self.write_buffer_manager)
        self.apply_family(opts)


_process_budget = Budget()
_process_shared: Shared | None = None


def configure(budget: Budget) -> None:
    """Set the budget of every database this process opens from now on (a node does it
    before it opens its own); databases already open keep the objects they share."""
    global _process_budget, _process_shared
    _process_budget = budget
    if _process_shared is not None and _process_shared.budget != budget:
        _process_shared = None


def process_shared() -> Shared:
    """The process's cache and write buffer manager, made on first use."""
    global _process_shared
    if _process_shared is None:
        _process_shared = Shared(_process_budget)
        log.info(
            "storage.memory_budget block_cache=%s write_buffers=%s",
            format_size(_process_budget.total),
            format_size(_process_budget.write_buffers),
        )
    return _process_shared
