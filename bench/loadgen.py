"""Raw-gRPC load for the replicated suite: the same generator for zonestore and for etcd.

Runs inside the pool's worker processes (bench/pool.py hands them `RawCell` and `Probe`
commands); the parent only builds the command values, so grpc and the Datastore types
are imported inside functions, never at module level.

Design, identical for both systems so the only difference is the server: one
`grpc.aio` channel per worker process and `in_flight` coroutines, each a closed loop of
unary calls with bytes built up front (identity serializers, no generated code):
  - zonestore: `/google.datastore.v1.Datastore/Commit`, a NON_TRANSACTIONAL
    CommitRequest with one upsert of a ~500-byte entity (built with the official
    client's protobuf classes, `google.cloud.datastore_v1.types ... .pb()`);
  - etcd: `/etcdserverpb.KV/Put`, a hand-encoded PutRequest {key = 1, value = 2} with a
    500-byte value.
Each coroutine cycles over KEYS_PER_CLIENT keys of its own (overwrites; no hot key).
Timing follows pool.py: operations that complete inside [start_at, end_at] count.

`Probe` measures failover: writes are issued every `interval` seconds round-robin to
every member (open loop, at most MAX_OUTSTANDING in flight), and the worker reports
when each successful write started and finished; the parent knows when it killed the
leader and takes the first success of a write *issued after* the kill (an earlier
write may have committed before the kill and be answered just after it).
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from dataclasses import dataclass
from typing import Any

ZONESTORE = "zonestore"
ETCD = "etcd"
COMMIT = "/google.datastore.v1.Datastore/Commit"
PUT = "/etcdserverpb.KV/Put"
PROJECT = "bench"
KIND = "BenchRepl"
VALUE_BYTES = 500
ENTITY_PAYLOAD = "x" * 440  # with key and the other property: a ~500-byte Entity
KEYS_PER_CLIENT = 64
RPC_TIMEOUT = 30.0
MAX_FAILURES = 20
MAX_OUTSTANDING = 400
CHANNEL_OPTIONS = (("grpc.enable_retries", 0),)


@dataclass(frozen=True, slots=True)
class RawCell:
    system: str  # ZONESTORE or ETCD
    addr: str
    in_flight: int
    start_at: float
    end_at: float
    tag: str


@dataclass(frozen=True, slots=True)
class Probe:
    system: str
    addrs: tuple[str, ...]
    kill_at: float  # the planned kill instant (the parent measures the real one)
    give_up_at: float
    interval: float
    rpc_timeout: float
    tag: str


@dataclass(slots=True)
class ProbeResult:
    started: bytes  # array('d') of successful writes' start instants
    done: bytes  # array('d') of their completion instants (same order)
    errors: dict[str, int]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def etcd_put(key: bytes, value: bytes) -> bytes:
    """etcdserverpb.PutRequest: field 1 (key, bytes) and field 2 (value, bytes)."""
    return b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value)) + value


def zonestore_commit(name: str, n: int) -> bytes:
    """A serialized CommitRequest upserting one ~500-byte entity, non-transactionally."""
    from google.cloud.datastore_v1.types import datastore, entity

    commit_request = datastore.CommitRequest.pb()
    key_pb = entity.Key.pb()
    value_pb = entity.Value.pb()
    key = key_pb(
        partition_id=entity.PartitionId.pb()(project_id=PROJECT),
        path=[key_pb.PathElement(kind=KIND, name=name)],
    )
    upsert = entity.Entity.pb()(
        key=key,
        properties={
            "payload": value_pb(string_value=ENTITY_PAYLOAD, exclude_from_indexes=True),
            "n": value_pb(integer_value=n),
        },
    )
    request = commit_request(
        project_id=PROJECT,
        mode=commit_request.Mode.NON_TRANSACTIONAL,
        mutations=[datastore.Mutation.pb()(upsert=upsert)],
    )
    data: bytes = request.SerializeToString()
    return data


def requests_for(system: str, tag: str, count: int) -> list[bytes]:
    if system == ZONESTORE:
        return [zonestore_commit(f"{tag}-{i}", i) for i in range(count)]
    if system == ETCD:
        value = b"v" * VALUE_BYTES
        return [etcd_put(f"bench/{tag}/{i}".encode(), value) for i in range(count)]
    raise ValueError(f"unknown system {system!r}")


def method_for(system: str) -> str:
    return COMMIT if system == ZONESTORE else PUT


def describe(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    code = getattr(exc, "code", None)
    if callable(details) and callable(code):
        return f"{code().name}: {details()}"[:160].replace("\n", " ")
    return f"{type(exc).__name__}: {exc}"[:160].replace("\n", " ")


def run_cell(cell: RawCell) -> Any:
    import asyncio

    from bench import pool

    lats, errors, cpu = asyncio.run(_cell(cell))
    return pool.CellPart(latencies=lats.tobytes(), errors=dict(errors), cpu_seconds=cpu)


async def _cell(cell: RawCell) -> tuple[array[float], Counter[str], float]:
    import asyncio

    import grpc

    lat = array("d")
    errors: Counter[str] = Counter()
    requests = [
        requests_for(cell.system, f"{cell.tag}-c{c}", KEYS_PER_CLIENT)
        for c in range(cell.in_flight)
    ]
    clock = time.monotonic
    async with grpc.aio.insecure_channel(cell.addr, options=CHANNEL_OPTIONS) as channel:
        call = channel.unary_unary(method_for(cell.system))

        async def client(mine: list[bytes]) -> None:
            failures = 0
            i = 0
            start_at, end_at = cell.start_at, cell.end_at
            while True:
                began = clock()
                if began >= end_at:
                    return
                try:
                    await call(mine[i % KEYS_PER_CLIENT], timeout=RPC_TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    errors[describe(exc)] += 1
                    failures += 1
                    if failures >= MAX_FAILURES:
                        return
                    await asyncio.sleep(0.001)
                    continue
                i += 1
                failures = 0
                done = clock()
                if start_at <= done <= end_at:
                    lat.append(done - began)

        async def window() -> float:
            await asyncio.sleep(max(0.0, cell.start_at - clock()))
            cpu0 = time.process_time()
            await asyncio.sleep(max(0.0, cell.end_at - clock()))
            return time.process_time() - cpu0

        async with asyncio.TaskGroup() as tg:
            for mine in requests:
                tg.create_task(client(mine))
            measured = tg.create_task(window())
    return lat, errors, measured.result()


def run_probe(probe: Probe) -> ProbeResult:
    import asyncio

    return asyncio.run(_probe(probe))


async def _probe(probe: Probe) -> ProbeResult:
    import asyncio

    import grpc

    started = array("d")
    done = array("d")
    errors: Counter[str] = Counter()
    clock = time.monotonic
    first_after_kill: list[float] = []
    channels = [grpc.aio.insecure_channel(a, options=CHANNEL_OPTIONS) for a in probe.addrs]
    try:
        calls = [ch.unary_unary(method_for(probe.system)) for ch in channels]

        async def write(target: int, request: bytes) -> None:
            began = clock()
            try:
                await calls[target](request, timeout=probe.rpc_timeout)
            except grpc.aio.AioRpcError as exc:
                errors[f"{probe.addrs[target]} {describe(exc)}"] += 1
                return
            finished = clock()
            started.append(began)
            done.append(finished)
            if began >= probe.kill_at and not first_after_kill:
                first_after_kill.append(finished)

        tasks: set[asyncio.Task[None]] = set()
        n = 0
        while clock() < probe.give_up_at:
            if first_after_kill and clock() > first_after_kill[0] + 0.2:
                break
            if len(tasks) < MAX_OUTSTANDING:
                request = requests_for(probe.system, f"{probe.tag}-{n}", 1)[0]
                task = asyncio.create_task(write(n % len(calls), request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            await asyncio.sleep(probe.interval)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=probe.rpc_timeout + 1)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
    finally:
        for ch in channels:
            await ch.close()
    return ProbeResult(started.tobytes(), done.tobytes(), dict(errors))
