"""Index scans: ordered streams of candidate entity paths, with the ranges they read.

`RangeScan` walks a list of disjoint `[lo, hi)` ranges of the indexes family at one
`read_ts`, forwards or backwards, and can seek ahead (what the zig-zag join needs:
`mvcc.Store.scan` has no seek, so a seek starts a new scan). It records how far it got
in each range, so the executor can hand back `ReadRange`s that cover exactly what was
read: `[lo, prefix_end(last key)]` forwards, `[last key, hi)` backwards, the whole
range once exhausted. A seek counts as reading what it jumped over: that keeps the
recorded range contiguous (a superset is always safe for validation).

Sources turn scans into `Candidate`s in the order their plan promises:
    kind_source      the kind index, ordered by path
    entity_source    the entities family (kindless queries), ordered by path
    join_source      zig-zag merge join of equality scans, ordered by path
    property_source  one property's index over value intervals, ordered by (value, path)
    composite_source a composite index under a fixed prefix, its first column over value
                     intervals, ordered by (columns, path)
Imports storage/ and query.filters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from zonestore_node.model import indexing
from zonestore_node.query import filters
from zonestore_node.storage import keycodec, mvcc
from zonestore_node.storage.engine import Family
from zonestore_node.txn.command import ReadRange


@dataclass(frozen=True, slots=True)
class Candidate:
    path: bytes  # encoded key path
    value: bytes | None = None  # property_source: the index entry's value
    version: mvcc.Version | None = None  # entity_source: the entity itself


class Tracker:
    """Collects the ranges every scan of one query has read."""

    def __init__(self) -> None:
        self.scans: list[RangeScan] = []
        self.extra: list[ReadRange] = []
        # Query explain's execution stats: index entries and entities read by scans.
        self.index_entries = 0
        self.documents = 0

    def ranges(self) -> list[ReadRange]:
        out = list(self.extra)
        for scan in self.scans:
            out.extend(scan.covered())
        return out


class RangeScan:
    def __init__(
        self,
        store: mvcc.Store,
        read_ts: int,
        ranges: list[tuple[bytes, bytes]],
        tracker: Tracker,
        *,
        reverse: bool = False,
        family: Family = Family.INDEXES,
    ) -> None:
        self.store = store
        self.read_ts = read_ts
        self.family = family
        self.reverse = reverse
        self.ranges = [r for r in ranges if r[0] < r[1]]
        if reverse:
            self.ranges.reverse()
        self.index = 0
        # Per range: how far reading got (forwards: exclusive upper end; backwards: lower).
        self.reached: list[bytes | None] = [None] * len(self.ranges)
        self.finished = [False] * len(self.ranges)
        self._it: Iterator[mvcc.Version] | None = None
        self.tracker = tracker
        tracker.scans.append(self)

    def next(self) -> mvcc.Version | None:
        while self.index < len(self.ranges):
            if self._it is None:
                self._it = self._open(self.ranges[self.index])
            version = next(self._it, None)
            if version is not None:
                self._note(version.encoded)
                if self.family is Family.INDEXES:
                    self.tracker.index_entries += 1
                else:
                    self.tracker.documents += 1
                return version
            self.finished[self.index] = True
            self.index += 1
            self._it = None
        return None

    def seek(self, bound: bytes) -> None:
        """Forwards: skip to keys >= bound. Backwards: skip to keys < bound."""
        while self.index < len(self.ranges):
            lo, hi = self.ranges[self.index]
            beyond = hi <= bound if not self.reverse else lo >= bound
            if not beyond:
                break
            self.finished[self.index] = True
            self.index += 1
            self._it = None
        if self.index >= len(self.ranges):
            return
        lo, hi = self.ranges[self.index]
        reached = self.reached[self.index]
        if not self.reverse:
            if bound <= lo or (reached is not None and bound <= reached):
                return
            self.reached[self.index] = bound
            self._it = self.store.scan(self.family, bound, hi, self.read_ts)
        else:
            if bound >= hi or (reached is not None and bound >= reached):
                return
            self.reached[self.index] = bound
            self._it = self.store.scan(self.family, lo, bound, self.read_ts, reverse=True)

    def _open(self, r: tuple[bytes, bytes]) -> Iterator[mvcc.Version]:
        return self.store.scan(self.family, r[0], r[1], self.read_ts, reverse=self.reverse)

    def _note(self, key: bytes) -> None:
        self.reached[self.index] = key if self.reverse else keycodec.prefix_end(key)

    def covered(self) -> list[ReadRange]:
        out: list[ReadRange] = []
        for (lo, hi), reached, finished in zip(
            self.ranges, self.reached, self.finished, strict=True
        ):
            if finished:
                out.append(ReadRange(lo, hi))
            elif reached is not None:
                out.append(ReadRange(reached, hi) if self.reverse else ReadRange(lo, reached))
        return out


def bounded(prefix: bytes, intervals: list[filters.Interval]) -> list[tuple[bytes, bytes]]:
    """Index ranges for `prefix ++ x` with x in the intervals."""
    end = keycodec.prefix_end(prefix)
    return [(prefix + lo, end if hi is None else prefix + hi) for lo, hi in intervals]


def clip_start(
    ranges: list[tuple[bytes, bytes]], start: bytes | None, reverse: bool
) -> list[tuple[bytes, bytes]]:
    """Drop what lies before a resume point (forwards: keys < start; backwards: >= start)."""
    if start is None:
        return ranges
    if not reverse:
        return [(max(lo, start), hi) for lo, hi in ranges if hi > start]
    return [(lo, min(hi, start)) for lo, hi in ranges if lo < start]


def kind_source(
    store: mvcc.Store,
    read_ts: int,
    tracker: Tracker,
    prefix: bytes,
    key_intervals: list[filters.Interval],
    reverse: bool,
    resume: bytes | None,
) -> Iterator[Candidate]:
    """`resume`: an index key to start from (forwards, inclusive) or below (backwards)."""
    ranges = clip_start(bounded(prefix, key_intervals), resume, reverse)
    scan = RangeScan(store, read_ts, ranges, tracker, reverse=reverse)
    cut = len(prefix)
    while (version := scan.next()) is not None:
        yield Candidate(version.encoded[cut:])


def entity_source(
    store: mvcc.Store,
    read_ts: int,
    tracker: Tracker,
    partition: bytes,
    key_intervals: list[filters.Interval],
    reverse: bool,
    resume: bytes | None,
) -> Iterator[Candidate]:
    """Kindless: the entities family. Its recorded read range is every kind-index entry
    of the partition (a write to any entity of the partition touches one)."""
    kinds = indexing.KIND_INDEX + partition
    tracker.extra.append(ReadRange(kinds, keycodec.prefix_end(kinds)))
    ranges = clip_start(bounded(partition, key_intervals), resume, reverse)
    scan = RangeScan(store, read_ts, ranges, Tracker(), reverse=reverse, family=Family.ENTITIES)
    cut = len(partition)
    while (version := scan.next()) is not None:
        tracker.documents += 1
        yield Candidate(version.encoded[cut:], version=version)


def property_source(
    store: mvcc.Store,
    read_ts: int,
    tracker: Tracker,
    prefix: bytes,
    value_intervals: list[filters.Interval],
    reverse: bool,
    resume: bytes | None,
) -> Iterator[Candidate]:
    ranges = clip_start(bounded(prefix, value_intervals), resume, reverse)
    scan = RangeScan(store, read_ts, ranges, tracker, reverse=reverse)
    cut = len(prefix)
    while (version := scan.next()) is not None:
        key = version.encoded
        value_end = keycodec.skip_value(key, cut)
        yield Candidate(key[value_end:], value=key[cut:value_end])


def join_source(
    store: mvcc.Store,
    read_ts: int,
    tracker: Tracker,
    prefixes: list[bytes],
    key_intervals: list[filters.Interval],
    reverse: bool,
    resume: bytes | None,
) -> Iterator[Candidate]:
    """Zig-zag merge join: paths present under every prefix, in path order.

    Each prefix is `P ++ partition ++ kind ++ property ++ value`, so its entries are
    ordered by path. The scan whose head is furthest along names the candidate; every
    other scan seeks to it; when all heads agree the path is a result.
    `resume` is a path to start from, inclusive, in either direction.
    """
    scans = []
    for prefix in prefixes:
        start = None
        if resume is not None:
            start = keycodec.prefix_end(prefix + resume) if reverse else prefix + resume
        ranges = clip_start(bounded(prefix, key_intervals), start, reverse)
        scans.append(
            (len(prefix), prefix, RangeScan(store, read_ts, ranges, tracker, reverse=reverse))
        )
    heads: list[bytes | None] = []
    for cut, _prefix, scan in scans:
        version = scan.next()
        if version is None:
            return
        heads.append(version.encoded[cut:])
    while True:
        paths = [h for h in heads if h is not None]
        target = min(paths) if reverse else max(paths)
        agreed = True
        for i, (cut, prefix, scan) in enumerate(scans):
            head = heads[i]
            assert head is not None
            while head != target and (head < target if not reverse else head > target):
                scan.seek(prefix + target if not reverse else keycodec.prefix_end(prefix + target))
                version = scan.next()
                if version is None:
                    return
                head = version.encoded[cut:]
            heads[i] = head
            if head != target:
                agreed = False
                break
        if not agreed:
            continue
        yield Candidate(target)
        for i, (cut, _prefix, scan) in enumerate(scans):
            version = scan.next()
            if version is None:
                return
            heads[i] = version.encoded[cut:]


def inverted_intervals(intervals: list[filters.Interval]) -> list[filters.Interval]:
    """The intervals a DESC column (bitwise-inverted encodings) holds for `intervals` of
    plain encodings. For a whole encoding v (never a proper prefix of a bound):
    v >= lo iff inv(v) < prefix_end(inv(lo)), and v < hi iff inv(v) >= prefix_end(inv(hi))."""
    out: list[filters.Interval] = []
    for lo, hi in reversed(intervals):
        new_lo = keycodec.prefix_end(indexing.invert(hi)) if hi is not None else b""
        new_hi = keycodec.prefix_end(indexing.invert(lo)) if lo else None
        out.append((new_lo, new_hi))
    return out


def composite_source(
    store: mvcc.Store,
    read_ts: int,
    tracker: Tracker,
    prefix: bytes,
    first_intervals: list[filters.Interval],
    descending: tuple[bool, ...],
    resume: bytes | None,
) -> Iterator[Candidate]:
    """Entries `prefix ++ columns ++ path`, the first column in `first_intervals` (plain
    encodings; inverted here for a DESC column). `descending`: per column after the
    prefix. Candidates carry the column bytes as stored in `value`."""
    intervals = inverted_intervals(first_intervals) if descending[0] else first_intervals
    ranges = clip_start(bounded(prefix, intervals), resume, False)
    scan = RangeScan(store, read_ts, ranges, tracker)
    cut = len(prefix)
    while (version := scan.next()) is not None:
        key = version.encoded
        pos = cut
        for desc in descending:
            if desc:
                pos += keycodec.skip_value(indexing.invert(key[pos:]), 0)
            else:
                pos = keycodec.skip_value(key, pos)
        yield Candidate(key[pos:], value=key[cut:pos])
