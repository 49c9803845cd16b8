"""Vector search (`Query.find_nearest`): exact nearest neighbours by a flat numpy scan.

Index: model/vectors.py keeps one vector index per (partition, kind, property,
dimension) in the indexes family, versioned like every index entry. Here each index
that a query touched is held in memory as a numpy matrix (`_Matrix`: one float64 row per
entity, its encoded path, a live mask), built once by scanning the index at a snapshot
and then kept current from the change log apply writes (model.vectors.note), folded in
up to each query's read_ts. A query at a snapshot older than the matrix (a transaction,
a read_time) scans the index at that snapshot instead, without caching. The matrix is a
cache: rebuilt from RocksDB when the log was trimmed past it or a snapshot was installed
(`reset`). Deterministic: the entries are the same on every replica, and so are results.

Search: every live row of the index (or only the rows of the entities the query's
filters admit: the filters run through the ordinary planner as a keys-only query),
distances in float64, exact, ties broken by key path (production leaves the order of
equal distances unspecified):
    EUCLIDEAN    sqrt(sum((x - q)^2)), ascending; keeps distance <= threshold
    COSINE       1 - x.q / (|x| |q|), ascending; keeps distance <= threshold; a zero
                 vector has no angle: such rows are never returned, a zero query vector
                 is INVALID_ARGUMENT
    DOT_PRODUCT  x.q, descending (larger is closer); keeps distance >= threshold
`limit` (required) 1..100, as production; `distance_result_property` puts the distance
(a double) on each returned entity. Projections other than `__key__`, cursors, offsets
and sort orders together with find_nearest are refused as not served (UNIMPLEMENTED, and
the README lists them).

Imports model/, storage/ and query's filters/planner/rows; numpy.
"""

from __future__ import annotations

import bisect
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from zonestore_node.model import vectors
from zonestore_node.model.errors import Code, DatastoreError, invalid
from zonestore_node.storage import keycodec, mvcc
from zonestore_node.storage.engine import Family

EUCLIDEAN = 1
COSINE = 2
DOT_PRODUCT = 3
MEASURES = {EUCLIDEAN: "EUCLIDEAN", COSINE: "COSINE", DOT_PRODUCT: "DOT_PRODUCT"}
MAX_LIMIT = 100
_CHUNK_ROWS = 8192

Floats = npt.NDArray[np.float64]


def unimplemented(message: str) -> DatastoreError:
    return DatastoreError(Code.UNIMPLEMENTED, message)


@dataclass(frozen=True, slots=True)
class Nearest:
    """A validated FindNearest."""

    name: str  # the vector property
    query: tuple[float, ...]
    measure: int
    limit: int
    result_property: str
    threshold: float | None

    @property
    def dimension(self) -> int:
        return len(self.query)


def parse(fn: Any) -> Nearest:
    name = fn.vector_property.name
    if not name:
        raise invalid("find_nearest must name a vector_property.")
    if "." in name:
        raise unimplemented(
            "find_nearest on a property of an embedded entity is not served: zonestore "
            "indexes vectors of top-level properties."
        )
    if not fn.HasField("query_vector"):
        raise invalid("find_nearest needs a query_vector.")
    vector = vectors.vector_of(fn.query_vector)
    if vector is None:
        raise invalid(
            "find_nearest's query_vector must be a vector: an array value with meaning 31 "
            f"of 1 to {vectors.MAX_DIMENSION} doubles."
        )
    if fn.distance_measure not in MEASURES:
        raise invalid("find_nearest needs a distance_measure: EUCLIDEAN, COSINE or DOT_PRODUCT.")
    if not fn.HasField("limit"):
        raise invalid("find_nearest needs a limit.")
    limit = fn.limit.value
    if not 0 < limit <= MAX_LIMIT:
        raise invalid(f"find_nearest's limit must be between 1 and {MAX_LIMIT}.")
    if fn.distance_measure == COSINE and not any(vector):
        raise invalid("A COSINE find_nearest needs a non-zero query_vector.")
    result_property = fn.distance_result_property
    if result_property:
        if result_property.startswith("__") and result_property.endswith("__"):
            raise invalid(f'distance_result_property "{result_property}" is a reserved name.')
        if len(result_property.encode()) > 1500:
            raise invalid("distance_result_property is longer than 1,500 bytes.")
    threshold = fn.distance_threshold.value if fn.HasField("distance_threshold") else None
    return Nearest(name, vector, fn.distance_measure, limit, result_property, threshold)


def index_prefix(partition: bytes, kind: str, nearest: Nearest) -> bytes:
    """The vector index a query searches: its kind, property and query dimension."""
    return vectors.group_prefix(partition, kind, nearest.name, nearest.dimension)


# The in-memory index ------------------------------------------------------------------


class _Matrix:
    """One vector index at `as_of`: rows of vectors, their paths, which rows are live."""

    def __init__(self, prefix: bytes, dimension: int, as_of: int, epoch: int) -> None:
        self.prefix = prefix
        self.dimension = dimension
        self.as_of = as_of
        self.epoch = epoch
        self.rows: Floats = np.empty((0, dimension), dtype=np.float64)
        self.count = 0  # rows in use (live or dead)
        self.paths: list[bytes] = []
        self.live: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)
        self.row_of: dict[bytes, int] = {}

    def put(self, path: bytes, packed: bytes) -> None:
        vector = np.frombuffer(packed, dtype=">f8").astype(np.float64)
        row = self.row_of.get(path)
        if row is None:
            if self.count == len(self.rows):
                grow = max(1024, len(self.rows))
                self.rows = np.concatenate(
                    [self.rows, np.empty((grow, self.dimension), dtype=np.float64)]
                )
                self.live = np.concatenate([self.live, np.zeros(grow, dtype=bool)])
            row = self.count
            self.count += 1
            self.paths.append(path)
            self.row_of[path] = row
        self.rows[row] = vector
        self.live[row] = True

    def remove(self, path: bytes) -> None:
        row = self.row_of.pop(path, None)
        if row is not None:
            self.live[row] = False

    def compact(self) -> None:
        """Drop dead rows once they are the majority (order of live rows kept)."""
        dead = self.count - len(self.row_of)
        if dead < 1024 or dead * 2 < self.count:
            return
        keep = np.flatnonzero(self.live[: self.count])
        self.rows = self.rows[keep].copy()
        self.paths = [self.paths[i] for i in keep]
        self.count = len(self.paths)
        self.live = np.ones(self.count, dtype=bool)
        self.row_of = {p: i for i, p in enumerate(self.paths)}


def _scan(store: mvcc.Store, prefix: bytes, dimension: int, read_ts: int) -> _Matrix:
    matrix = _Matrix(prefix, dimension, read_ts, 0)
    for version in store.scan(Family.INDEXES, prefix, keycodec.prefix_end(prefix), read_ts):
        path, packed = vectors.split(version.encoded, prefix, dimension)
        matrix.put(path, packed)
    return matrix


class Cache:
    """The matrices of one store's vector indexes, by index prefix."""

    def __init__(self) -> None:
        self.matrices: dict[bytes, _Matrix] = {}
        self.builds = 0  # full scans of an index (tests, metrics)

    def matrix(self, store: mvcc.Store, prefix: bytes, dimension: int, read_ts: int) -> _Matrix:
        """The index as of read_ts: the cached matrix brought forward, or (a snapshot
        older than the cache) a one-off scan at read_ts."""
        log = vectors.changes(store.engine)
        matrix = self.matrices.get(prefix)
        if matrix is not None and (matrix.epoch != log.epoch or log.floor > matrix.as_of):
            matrix = None  # the log no longer covers what happened since it was built
        if matrix is None:
            matrix = _scan(store, prefix, dimension, read_ts)
            matrix.epoch = log.epoch
            self.builds += 1
            self.matrices[prefix] = matrix
            return matrix
        if read_ts < matrix.as_of:
            return _scan(store, prefix, dimension, read_ts)
        if read_ts > matrix.as_of:
            lo = bisect.bisect_right(log.commit_ts, matrix.as_of)
            hi = bisect.bisect_right(log.commit_ts, read_ts)
            cut = len(prefix)
            for key, live in log.entries[lo:hi]:
                if key[:cut] != prefix:
                    continue
                path, packed = vectors.split(key, prefix, dimension)
                if live:
                    matrix.put(path, packed)
                else:
                    matrix.remove(path)
            matrix.as_of = read_ts
            matrix.compact()
        return matrix


_caches: weakref.WeakKeyDictionary[Any, Cache] = weakref.WeakKeyDictionary()


def cache_for(store: mvcc.Store) -> Cache:
    cache = _caches.get(store.engine)
    if cache is None:
        cache = _caches[store.engine] = Cache()
    return cache


# Search --------------------------------------------------------------------------------


@dataclass(slots=True)
class Hits:
    paths: list[bytes] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    scanned: int = 0  # vectors compared


def distances(rows: Floats, query: Floats, measure: int) -> Floats:
    """Distance of every row to the query, exact in float64, computed in chunks."""
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), _CHUNK_ROWS):
        chunk = rows[start : start + _CHUNK_ROWS]
        if measure == EUCLIDEAN:
            diff = chunk - query
            out[start : start + len(chunk)] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        elif measure == DOT_PRODUCT:
            out[start : start + len(chunk)] = chunk @ query
        else:
            norms = np.sqrt(np.einsum("ij,ij->i", chunk, chunk))
            with np.errstate(divide="ignore", invalid="ignore"):
                out[start : start + len(chunk)] = 1.0 - (chunk @ query) / (
                    norms * float(np.sqrt(query @ query))
                )
    return out


def search(
    store: mvcc.Store,
    prefix: bytes,
    nearest: Nearest,
    read_ts: int,
    allowed: set[bytes] | None,
) -> Hits:
    """The nearest rows of the index under `prefix` at read_ts; `allowed`: only these
    entity paths (the query's filters), None for all."""
    matrix = cache_for(store).matrix(store, prefix, nearest.dimension, read_ts)
    if allowed is None:
        idx = np.flatnonzero(matrix.live[: matrix.count])
    else:
        idx = np.array(
            sorted(matrix.row_of[p] for p in allowed if p in matrix.row_of), dtype=np.int64
        )
    hits = Hits(scanned=len(idx))
    if not len(idx):
        return hits
    query = np.asarray(nearest.query, dtype=np.float64)
    # every row live and no filter: idx is 0..count-1, and a view saves the copy
    rows = matrix.rows[: matrix.count] if len(idx) == matrix.count else matrix.rows[idx]
    dist = distances(rows, query, nearest.measure)
    keep = ~np.isnan(dist)
    if nearest.threshold is not None:
        if nearest.measure == DOT_PRODUCT:
            keep &= dist >= nearest.threshold
        else:
            keep &= dist <= nearest.threshold
    candidates = np.flatnonzero(keep)
    if not len(candidates):
        return hits
    score = -dist[candidates] if nearest.measure == DOT_PRODUCT else dist[candidates]
    k = min(nearest.limit, len(candidates))
    if k < len(candidates):
        # Everything that ties with the k-th best, so the key tie-break sees all of them.
        kth = np.partition(score, k - 1)[k - 1]
        candidates = candidates[score <= kth]
        score = -dist[candidates] if nearest.measure == DOT_PRODUCT else dist[candidates]
    order = sorted(
        range(len(candidates)),
        key=lambda i: (float(score[i]), matrix.paths[int(idx[candidates[i]])]),
    )[:k]
    for i in order:
        row = int(idx[candidates[i]])
        hits.paths.append(matrix.paths[row])
        hits.distances.append(float(dist[candidates[i]]))
    return hits
