"""A steady write load through the official Python client, and the audit that follows it.

The writer puts `Seq/<n>` for n = 1, 2, 3, ... one at a time, each to one of the
Datastore's pods (client port, pod IP), moving to another pod on any failure. Every put
ends as *acked* (the client returned), *failed* (a definite error: nothing was written) or
*unknown* (a timeout or a lost connection: it may have committed). After the scenario,
`audit` reads every acked key back with a strong lookup: an acked key that is missing is
a lost write, the one thing that must never happen.

The time between the fault and the first ack after it is "writes resumed"; the longest
gap between consecutive acks bounds the unavailability, whatever the fault.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

KIND = "Seq"
_env_lock = threading.Lock()


def make_client(addr: str, project: str) -> object:
    """The official client reads DATASTORE_EMULATOR_HOST when it is built; build under a
    lock so concurrent builders never see each other's address."""
    from google.cloud import datastore

    with _env_lock:
        os.environ["DATASTORE_EMULATOR_HOST"] = addr
        return datastore.Client(project=project)


@dataclass
class Outcome:
    n: int
    addr: str
    start: float
    end: float
    result: str  # acked | failed | unknown
    error: str = ""


@dataclass
class SteadyWriter:
    """Writes until stopped; `targets()` gives the client addresses to use now."""

    project: str
    targets: Callable[[], Sequence[str]]
    interval_s: float = 0.02
    timeout_s: float = 5.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _clients: dict[str, object] = field(default_factory=dict)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="steady-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s * 3)

    def _client(self, addr: str) -> object:
        if addr not in self._clients:
            self._clients[addr] = make_client(addr, self.project)
        return self._clients[addr]

    def _run(self) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud import datastore

        n = 1  # Datastore ids are positive
        turn = 0
        while not self._stop.is_set():
            addrs = list(self.targets())
            if not addrs:
                self._stop.wait(0.2)
                continue
            addr = addrs[turn % len(addrs)]
            client = self._client(addr)
            entity = datastore.Entity(client.key(KIND, n))  # type: ignore[attr-defined]
            entity["n"] = n
            entity["at"] = time.time()
            start = time.monotonic()
            try:
                client.put(entity, retry=None, timeout=self.timeout_s)  # type: ignore[attr-defined]
                result, error = "acked", ""
            except (
                gexc.DeadlineExceeded,
                gexc.ServiceUnavailable,
                gexc.Unknown,
                gexc.Cancelled,  # the server gave up on the call: it may have committed
            ) as exc:
                result, error = "unknown", f"{type(exc).__name__}: {str(exc)[:120]}"
            except gexc.GoogleAPICallError as exc:
                result, error = "failed", f"{type(exc).__name__}: {str(exc)[:120]}"
            except Exception as exc:  # a broken channel and the like: may have committed
                result, error = "unknown", f"{type(exc).__name__}: {str(exc)[:120]}"
            self.outcomes.append(Outcome(n, addr, start, time.monotonic(), result, error))
            n += 1
            if result != "acked":
                turn += 1
                self._stop.wait(0.1)
            else:
                self._stop.wait(self.interval_s)

    # -- figures -------------------------------------------------------------------

    def acked(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result == "acked"]

    def first_ack_after(self, t: float) -> float | None:
        """Seconds from monotonic time `t` to the first ack of a write started after it."""
        for o in self.outcomes:
            if o.result == "acked" and o.start >= t:
                return o.end - t
        return None

    def longest_gap(self, since: float) -> float:
        start, end = self.outage(since)
        return end - start

    def outage(self, since: float) -> tuple[float, float]:
        """The longest stretch without an ack after `since` (from the fault itself when
        nothing was acked in between): (last ack before it, first ack after it)."""
        ends = [since, *(o.end for o in self.acked() if o.end >= since)]
        return max(itertools.pairwise(ends), key=lambda ab: ab[1] - ab[0], default=(since, since))

    def problems(self, limit: int = 5) -> list[str]:
        """The first distinct errors of writes that were not acknowledged (for the report)."""
        seen: list[str] = []
        for o in self.outcomes:
            text = f"{o.result} via {o.addr}: {o.error}"
            if o.result != "acked" and o.error not in {t.split(": ", 1)[-1] for t in seen}:
                seen.append(text)
        return seen[:limit]

    def counts(self) -> dict[str, int]:
        out = {"acked": 0, "failed": 0, "unknown": 0}
        for o in self.outcomes:
            out[o.result] += 1
        return out


def audit(addr: str, project: str, acked: Sequence[Outcome]) -> list[int]:
    """The acked writes a strong read at `addr` does not find (must be empty)."""
    client = make_client(addr, project)
    missing: list[int] = []
    ns = [o.n for o in acked]
    for i in range(0, len(ns), 500):
        batch = ns[i : i + 500]
        keys = [client.key(KIND, n) for n in batch]  # type: ignore[attr-defined]
        found = client.get_multi(keys, timeout=30)  # type: ignore[attr-defined]
        have = {e.key.id for e in found}
        missing += [n for n in batch if n not in have]
    return missing
