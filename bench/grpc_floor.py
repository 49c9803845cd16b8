"""The Python gRPC server's own cost: server CPU per unary call of an echo handler.

    python -m bench.grpc_floor [--clients 16] [--seconds 5]

Every zonestore request pays this before any Datastore work, so it is the floor under
the figures `make bench` prints. Three servers, each in a process of its own, answer a
500-byte echo: grpc.aio on uvloop (what a node runs), grpc.aio on asyncio's loop, and
grpcio's threaded server. Two client processes (the official client's sync stubs, one
thread per call in flight) load each in turn; the server's CPU comes from its own
rusage over the measured window.

Where Go is installed, a fourth row is grpc-go answering the same echo (bench/goecho,
built into .cache/goecho on first use): what a compiled gRPC front end would pay per
call, the alternative the README's "Performance" section weighs. Its CPU is read from
/proc; without Go (or if the build fails) the row says why instead.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from bench import targets

SERVICE, METHOD = "bench.Echo", "Echo"
PAYLOAD = b"x" * 500
KINDS = ("uvloop", "asyncio", "threaded")
GO = "grpc-go"
GOECHO_SRC = Path(__file__).resolve().parent / "goecho"
GOECHO_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "goecho"


def _same(raw: bytes) -> bytes:
    return raw


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


def build_goecho() -> Path:
    """The grpc-go echo binary, built once per source version (raises RuntimeError
    saying why when it cannot be: no Go, or the module proxy unreachable)."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("Go is not installed")
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((GOECHO_SRC / name).read_bytes())
    binary = GOECHO_CACHE / digest.hexdigest()[:16] / "goecho"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    built = subprocess.run(
        [go, "build", "-o", str(binary) + ".tmp", "."],
        cwd=GOECHO_SRC,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CGO_ENABLED": "0"},
    )
    if built.returncode != 0:
        raise RuntimeError(f"go build failed: {built.stderr.strip()[-300:]}")
    os.replace(str(binary) + ".tmp", binary)
    return binary


def _warm_up(port: int, clients: int) -> None:
    out: Any = mp.Queue()
    warm = mp.Process(target=_load, args=(port, clients, 1.0, out))
    warm.start()
    warm.join()
    out.get()


def _loaded(port: int, clients: int, seconds: float) -> int:
    """Load the server from two processes; the calls they completed."""
    out: Any = mp.Queue()
    loaders = [
        mp.Process(target=_load, args=(port, max(1, clients // 2), seconds, out)) for _ in range(2)
    ]
    for p in loaders:
        p.start()
    for p in loaders:
        p.join()
    return int(out.get() + out.get())


def measure_go(binary: Path, clients: int, seconds: float, port: int) -> tuple[float, float]:
    server = subprocess.Popen([str(binary), str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "listening"
        _warm_up(port, clients)
        start = targets.process_cpu_seconds(server.pid)
        calls = _loaded(port, clients, seconds)
        used = targets.process_cpu_seconds(server.pid) - start
    finally:
        server.terminate()
        server.wait(timeout=10)
    return calls / seconds, used / max(1, calls) * 1e6


def measure(kind: str, clients: int, seconds: float, port: int) -> tuple[float, float]:
    """(calls per second, server CPU µs per call)."""
    marks: Any = mp.Queue()
    cpu: Any = mp.Queue()
    if kind == "threaded":
        server = mp.Process(target=_threaded, args=(port, marks, cpu))
    else:
        server = mp.Process(target=_aio, args=(port, marks, cpu, kind == "uvloop"))
    server.start()
    time.sleep(1.5)
    _warm_up(port, clients)
    marks.put("start")
    calls = _loaded(port, clients, seconds)
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
        rate, per_call = measure(kind, args.clients, args.seconds, targets.free_port())
        print(f"| {kind} | {args.clients} | {rate:,.0f} | {per_call:,.0f} |", flush=True)
    try:
        binary = build_goecho()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"| {GO} | {args.clients} | not measured: {exc} | |")
        return
    rate, per_call = measure_go(binary, args.clients, args.seconds, targets.free_port())
    print(f"| {GO} | {args.clients} | {rate:,.0f} | {per_call:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
