"""What a compiled front end's hand-off would cost the Python node: server CPU per request.

    python -m bench.handoff_floor [--seconds 4]

The other half of the estimate beside `bench.grpc_floor`'s grpc-go row (see the README's
"Performance"). A front end that terminates gRPC elsewhere would pass requests to the
node in batches over a local socket; this measures the Python side of such a hand-off
on uvloop: length-prefixed frames over a Unix socket, each a serialized CommitRequest
(the replicated suite's ~500-byte upsert) parsed, run as a task that awaits a future (as
a commit awaits its apply), and answered with a serialized CommitResponse, the answers
of one read written back together. The client, in another process, keeps `window`
requests in flight; the figure is the server process's CPU per request. Nothing of
zonestore's own request handling runs here: add it (about 245 µs for a one-entity
Commit at 16 callers, measured in-process) to compare with the gRPC front end.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import loadgen, targets

HEADER = struct.Struct("<II")  # payload length, request id
WINDOWS = (1, 16, 64)


def _serve(path: str, ready: Any) -> None:
    import uvloop
    from google.cloud.datastore_v1.types import datastore

    request_type: Any = datastore.CommitRequest.pb()
    response_type: Any = datastore.CommitResponse.pb()

    async def handle(request_id: int, payload: bytes, out: list[bytes]) -> None:
        request_type.FromString(payload)
        loop = asyncio.get_running_loop()
        applied: asyncio.Future[None] = loop.create_future()
        loop.call_soon(applied.set_result, None)
        await applied
        response = response_type()
        result = response.mutation_results.add()
        result.version = 1
        result.update_time.seconds = 1
        response.commit_time.seconds = 1
        body = response.SerializeToString()
        out.append(HEADER.pack(len(body), request_id) + body)

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buffer = b""
            self.out: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            loop = asyncio.get_running_loop()
            pos, end = 0, len(self.buffer)
            while end - pos >= HEADER.size:
                length, request_id = HEADER.unpack_from(self.buffer, pos)
                if end - pos - HEADER.size < length:
                    break
                start = pos + HEADER.size
                payload = self.buffer[start : start + length]
                pos = start + length
                task = loop.create_task(handle(request_id, payload, self.out))
                task.add_done_callback(self.flush)
            self.buffer = self.buffer[pos:]

        def flush(self, _: Any) -> None:
            if self.out:
                self.transport.write(b"".join(self.out))
                self.out.clear()

    async def main() -> None:
        await asyncio.get_running_loop().create_unix_server(Protocol, path)
        ready.set()
        await asyncio.Event().wait()

    uvloop.run(main())


def _load(path: str, window: int, seconds: float, out: Any) -> None:
    requests = loadgen.requests_for(loadgen.ZONESTORE, "handoff", 64)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    in_flight = done = sent = 0
    buffer = b""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        batch = []
        while in_flight < window:
            body = requests[sent % len(requests)]
            batch.append(HEADER.pack(len(body), sent) + body)
            sent += 1
            in_flight += 1
        if batch:
            sock.sendall(b"".join(batch))
        buffer += sock.recv(1 << 20)
        while len(buffer) >= HEADER.size:
            length, _ = HEADER.unpack_from(buffer)
            if len(buffer) < HEADER.size + length:
                break
            buffer = buffer[HEADER.size + length :]
            in_flight -= 1
            done += 1
    sock.close()
    out.put(done)


def measure(path: str, server_pid: int, window: int, seconds: float) -> tuple[float, float]:
    """(requests per second, server CPU µs per request) at `window` in flight."""
    out: Any = mp.Queue()
    warm = mp.Process(target=_load, args=(path, window, 1.0, out))
    warm.start()
    warm.join()
    out.get()
    start = targets.process_cpu_seconds(server_pid)
    load = mp.Process(target=_load, args=(path, window, seconds, out))
    load.start()
    load.join()
    done = int(out.get())
    return done / seconds, (targets.process_cpu_seconds(server_pid) - start) / max(1, done) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.handoff_floor", description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = str(Path(scratch) / "handoff.sock")
        ready: Any = mp.Event()
        server = mp.Process(target=_serve, args=(path, ready), daemon=True)
        server.start()
        try:
            if not ready.wait(30):
                raise SystemExit("the hand-off server did not start")
            assert server.pid is not None
            print("| in flight | requests/s | server CPU µs/request |\n| ---: | ---: | ---: |")
            for window in WINDOWS:
                rate, per_request = measure(path, server.pid, window, args.seconds)
                print(f"| {window} | {rate:,.0f} | {per_request:,.0f} |", flush=True)
        finally:
            server.terminate()
            server.join(timeout=10)


if __name__ == "__main__":
    main()
