"""zonestore-edge as the node's child process: finding the binary, starting, restarting, stopping.

`zonestore serve --edge auto` (the default) serves the client port through the Go edge
(node/edge) when its binary is found: `--edge-binary` / ZONESTORE_EDGE_BINARY, else
`zonestore-edge` next to the Python interpreter (a venv's scripts), on $PATH, or in the
repository's .cache/bin (where `make edge` builds it). Without it, the node serves gRPC
itself (api/datastore.py on grpc.aio) and says once how to build the edge. `--edge off`
always does. The supervisor restarts an edge that exits; one that keeps failing makes
the node not ready (`failing`) until it stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

log = logging.getLogger("zonestore.edge")

BINARY = "zonestore-edge"
BUILD_HINT = "make edge"
# Restarts within this window beyond which the node reports not ready.
RESTART_WINDOW_S = 60.0
MAX_RESTARTS = 5


def find_binary(explicit: str = "") -> Path | None:
    """The edge binary to run, or None. An explicit path that is not executable is an
    error (FileNotFoundError), not a silent fallback."""
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"--edge-binary {explicit} is not an executable file")
        return path
    candidates = [Path(sys.executable).parent / BINARY]
    on_path = shutil.which(BINARY)
    if on_path:
        candidates.append(Path(on_path))
    candidates.append(Path(__file__).resolve().parents[3] / ".cache" / "bin" / BINARY)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


class EdgeProcess:
    """Runs the edge with `args` until `stop()`, restarting it when it exits."""

    def __init__(self, binary: Path, args: list[str]) -> None:
        self.binary = binary
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts: list[float] = []
        self._stopping = False

    @property
    def failing(self) -> bool:
        """It exited more than MAX_RESTARTS times in the last RESTART_WINDOW_S."""
        cutoff = time.monotonic() - RESTART_WINDOW_S
        return sum(1 for t in self.restarts if t >= cutoff) > MAX_RESTARTS

    async def run(self) -> None:
        backoff = 0.2
        while not self._stopping:
            started = time.monotonic()
            self.proc = await asyncio.create_subprocess_exec(str(self.binary), *self.args)
            log.info("edge.started pid=%d binary=%s", self.proc.pid, self.binary)
            code = await self.proc.wait()
            if self._stopping:
                return
            self.restarts.append(time.monotonic())
            if time.monotonic() - started > RESTART_WINDOW_S:
                backoff = 0.2
            log.warning("edge.exited code=%s restarting_in=%.1fs", code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def stop(self, grace: float) -> None:
        """SIGTERM: the edge stops accepting and lets in-flight calls finish."""
        self._stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace + 2.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
