"""Values built from files that Kubernetes may replace while the node runs.

A mounted Secret (certificates, token files) is updated in place by the kubelet. A
`Watched` value is built from its files at start — a bad file there stops the node —
and rebuilt when they change: the files are looked at (os.stat: mtime, inode, size) at
most every `reload_every` seconds, from the caller's own path (no background task). A
rebuild that fails (a half-written update: key and certificate not matching yet, an
empty file) is logged and the previous value stays in use until the next look.

Imports nothing from the rest of zonestore: api/ and replica/ both use it.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("zonestore.filewatch")

RELOAD_EVERY_S = 2.0


def _signature(paths: Sequence[Path]) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in paths:
        st = os.stat(path)
        out.append((st.st_mtime_ns, st.st_ino, st.st_size))
    return tuple(out)


class Watched(Generic[T]):
    def __init__(
        self,
        paths: Sequence[Path],
        build: Callable[[], T],
        what: str,
        reload_every: float = RELOAD_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.what = what
        self.reload_every = reload_every
        self._build = build
        self._clock = clock
        self._signature = _signature(self.paths)
        self._value = build()
        self._checked_at = clock()
        self.generation = 1  # how many values have been built

    def current(self) -> T:
        now = self._clock()
        if now - self._checked_at >= self.reload_every:
            self._checked_at = now
            self._maybe_rebuild()
        return self._value

    def _maybe_rebuild(self) -> None:
        try:
            signature = _signature(self.paths)
            if signature == self._signature:
                return
            value = self._build()
        except (OSError, ValueError, ssl.SSLError) as exc:
            log.warning("%s.reload_failed error=%s; keeping the previous one", self.what, exc)
            return
        self._signature = signature
        self._value = value
        self.generation += 1
        log.info("%s.reloaded generation=%d", self.what, self.generation)
