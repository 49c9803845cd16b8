"""find_nearest latency (p50, p95) of one node at growing vector counts, for `make bench`:

    python -m bench.vectors [--sizes 10000,100000] [--dim 256] [--queries 60] [--json FILE]

Starts `zonestore serve` (bench.targets.Zonestore, fresh data folder), loads random
vectors of `--dim` doubles (kind Doc, property emb, meaning 31, as the clients write a
Vector) up to each size in turn, and times RunQuery with find_nearest (EUCLIDEAN,
limit 10) over raw gRPC from one client, one query at a time, each with a new random
query vector. The first query at each size is not timed: it declares the vector index
(--auto-index true) and builds the in-memory matrix; its answer is checked against a
numpy brute force, so a wrong index fails the bench instead of timing it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from google.cloud.datastore_v1.types import datastore as ds

from bench.targets import Zonestore

PROJECT = "bench-vectors"
BATCH = 500  # entities per Commit (~1 MiB at dimension 256)
LIMIT = 10
EUCLIDEAN = 1
Floats = npt.NDArray[np.float64]

CommitRequest: Any = ds.CommitRequest.pb()
CommitResponse: Any = ds.CommitResponse.pb()
RunQueryRequest: Any = ds.RunQueryRequest.pb()
RunQueryResponse: Any = ds.RunQueryResponse.pb()


def _vector(target: Any, values: Floats) -> None:
    target.meaning = 31
    target.exclude_from_indexes = True
    array = target.array_value
    for x in values.tolist():
        array.values.add().double_value = x


class Client:
    def __init__(self, addr: str) -> None:
        self.channel = grpc.insecure_channel(
            addr, options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        service = "/google.datastore.v1.Datastore/"
        self.commit = self.channel.unary_unary(
            service + "Commit",
            request_serializer=CommitRequest.SerializeToString,
            response_deserializer=CommitResponse.FromString,
        )
        self.run_query = self.channel.unary_unary(
            service + "RunQuery",
            request_serializer=RunQueryRequest.SerializeToString,
            response_deserializer=RunQueryResponse.FromString,
        )

    def load(self, vectors: Floats, first_id: int) -> None:
        for start in range(0, len(vectors), BATCH):
            request = CommitRequest()
            request.project_id = PROJECT
            request.mode = 2  # NON_TRANSACTIONAL
            for offset, row in enumerate(vectors[start : start + BATCH]):
                entity = request.mutations.add().upsert
                entity.key.partition_id.project_id = PROJECT
                element = entity.key.path.add()
                element.kind = "Doc"
                element.id = first_id + start + offset
                _vector(entity.properties["emb"], row)
            self.commit(request, timeout=300)

    def nearest(self, query: Floats) -> list[int]:
        request = RunQueryRequest()
        request.project_id = PROJECT
        q = request.query
        q.kind.add().name = "Doc"
        q.projection.add().property.name = "__key__"
        fn = q.find_nearest
        fn.vector_property.name = "emb"
        _vector(fn.query_vector, query)
        fn.distance_measure = EUCLIDEAN
        fn.limit.value = LIMIT
        response = self.run_query(request, timeout=300)
        return [int(er.entity.key.path[0].id) for er in response.batch.entity_results]

    def close(self) -> None:
        self.channel.close()


def run(sizes: list[int], dim: int, queries: int, scratch: Path) -> list[dict[str, Any]]:
    rng = np.random.default_rng(256)
    node = Zonestore(scratch)
    node.start()
    client = Client(node.addr)
    results: list[dict[str, Any]] = []
    stored: Floats = np.empty((0, dim))
    try:
        for size in sorted(sizes):
            fresh = rng.uniform(-1.0, 1.0, (size - len(stored), dim))
            began = time.perf_counter()
            client.load(fresh, first_id=len(stored) + 1)
            load_s = time.perf_counter() - began
            stored = np.vstack([stored, fresh])
            probe = rng.uniform(-1.0, 1.0, dim)
            want = np.argsort(np.linalg.norm(stored - probe, axis=1), kind="stable")[:LIMIT] + 1
            got = client.nearest(probe)  # declares the index, builds the matrix
            if got != want.tolist():
                raise RuntimeError(f"find_nearest at {size}: got {got}, numpy says {want}")
            latencies = []
            for _ in range(queries):
                query = rng.uniform(-1.0, 1.0, dim)
                began = time.perf_counter()
                client.nearest(query)
                latencies.append(time.perf_counter() - began)
            latencies.sort()
            results.append(
                {
                    "vectors": size,
                    "dimension": dim,
                    "queries": queries,
                    "p50_ms": statistics.median(latencies) * 1000,
                    "p95_ms": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] * 1000,
                    "load_vectors_per_s": len(fresh) / load_s,
                }
            )
    finally:
        client.close()
        node.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.vectors", description=__doc__)
    p.add_argument("--sizes", default="10000,100000", help="vector counts, comma-separated")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=60, help="timed queries per size")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    scratch = Path(tempfile.mkdtemp(prefix="zs-vector-bench-"))
    try:
        results = run(sizes, args.dim, args.queries, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"find_nearest, one node, EUCLIDEAN, limit {LIMIT}, one client, exact (flat scan):")
    print("| vectors | dimension | p50 ms | p95 ms | loaded vectors/s |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['vectors']:,} | {r['dimension']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
            f"| {r['load_vectors_per_s']:,.0f} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
