"""The Python gRPC server's own cost: server CPU per unary call of an echo handler.

    python -m bench.grpc_floor [--clients 16] [--seconds 5]

Every zonestore request pays this before any Datastore work, so it is the floor under
the figures `make bench` prints. Three servers, each in a process of its own, answer a
500-byte echo: grpc.aio on uvloop (what a node runs), grpc.aio on asyncio's loop, and
grpcio's threaded server. Two client processes (the official client's sync stubs, one
thread per call in flight) load each in turn; the server's CPU comes from its own
rusage over the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import resource
import socket
import threading
import time
from concurrent import futures
from typing import Any

import grpc

SERVICE, METHOD = "bench.Echo", "Echo"
PAYLOAD = b"x" * 500
KINDS = ("uvloop", "asyncio", "threaded")


def _same(raw: bytes) -> bytes:
    return raw


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load(port: int, threads: int, seconds: float, out: Any) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(
        f"/{SERVICE}/{METHOD}", request_serializer=_same, response_deserializer=_same
    )
    until = time.monotonic() + seconds
    counts = [0] * threads

    def run(i: int) -> None:
        while time.monotonic() < until:
            call(PAYLOAD)
            counts[i] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put(sum(counts))


def _threaded(port: int, marks: Any, cpu: Any) -> None:
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {METHOD: grpc.unary_unary_rpc_method_handler(lambda r, c: r, _same, _same)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(16))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    marks.get()
    start = _cpu()
    marks.get()
    cpu.put(_cpu() - start)
    server.stop(0)


def _aio(port: int, marks: Any, cpu: Any, use_uvloop: bool) -> None:
    async def echo(request: bytes, context: Any) -> bytes:
        return request

    async def serve() -> None:
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(echo, _same, _same)}
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, marks.get)
        start = _cpu()
        await loop.run_in_executor(None, marks.get)
        cpu.put(_cpu() - start)
        await server.stop(0)

    if use_uvloop:
        import uvloop

        uvloop.run(serve())
    else:
        asyncio.run(serve())


def measure(kind: str, clients: int, seconds: float, port: int) -> tuple[float, float]:
    """(calls per second, server CPU µs per call)."""
    marks: Any = mp.Queue()
    cpu: Any = mp.Queue()
    out: Any = mp.Queue()
    if kind == "threaded":
        server = mp.Process(target=_threaded, args=(port, marks, cpu))
    else:
        server = mp.Process(target=_aio, args=(port, marks, cpu, kind == "uvloop"))
    server.start()
    time.sleep(1.5)
    warm = mp.Process(target=_load, args=(port, clients, 1.0, out))
    warm.start()
    warm.join()
    out.get()
    marks.put("start")
    loaders = [
        mp.Process(target=_load, args=(port, max(1, clients // 2), seconds, out)) for _ in range(2)
    ]
    for p in loaders:
        p.start()
    for p in loaders:
        p.join()
    calls = out.get() + out.get()
    marks.put("stop")
    used = cpu.get(timeout=30)
    server.join(timeout=30)
    return calls / seconds, used / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.grpc_floor", description=__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print("| server | clients | calls/s | server CPU µs/call |\n| --- | ---: | ---: | ---: |")
    for kind in KINDS:
        rate, per_call = measure(kind, args.clients, args.seconds, _free_port())
        print(f"| {kind} | {args.clients} | {rate:,.0f} | {per_call:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
