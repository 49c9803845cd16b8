"""Operations as Jepsen records them: an invocation, then a completion that says the
operation happened (`ok`), certainly did not happen (`fail`), or may or may not have
happened (`info`: a timeout, a connection lost after the request was sent).

Times are logical: one counter shared by every client thread, taken under a lock at
invocation and at completion, so "a completed before b was invoked" is exact. This module
owns the record and nothing else; checkers read it, workloads write it.
"""

from __future__ import annotations

import enum
import itertools
import threading
from dataclasses import dataclass, field, replace
from typing import Any

INFINITY = 1 << 62  # the completion time of an operation that never completed


class Status(enum.Enum):
    OK = "ok"
    FAIL = "fail"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Op:
    """One operation. `value` is what was asked (a write's value, a CAS's (old, new));
    `result` what came back (a read's value). A pending (`info`) operation has
    `complete == INFINITY`. Invariant: invoke < complete."""

    process: int
    f: str
    key: Any
    value: Any
    status: Status
    invoke: int
    complete: int
    result: Any = None
    error: str = ""

    def as_info(self) -> Op:
        return replace(self, status=Status.INFO, complete=INFINITY)

    def __str__(self) -> str:
        end = "∞" if self.complete >= INFINITY else str(self.complete)
        shown = self.value if self.f != "read" else self.result
        err = f" ({self.error})" if self.error else ""
        return (
            f"[{self.invoke:>6}..{end:>6}] p{self.process} {self.status.value:<4} "
            f"{self.f} {self.key!r} {shown!r}{err}"
        )


@dataclass(slots=True)
class Recorder:
    """Thread-safe: workers call `invoke()` before sending and `complete()` after."""

    ops: list[Op] = field(default_factory=list)
    _clock: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def invoke(self) -> int:
        with self._lock:
            return next(self._clock)

    def complete(
        self,
        process: int,
        f: str,
        key: Any,
        value: Any,
        status: Status,
        invoked: int,
        result: Any = None,
        error: str = "",
    ) -> Op:
        with self._lock:
            now = next(self._clock)
            op = Op(
                process,
                f,
                key,
                value,
                status,
                invoked,
                INFINITY if status is Status.INFO else now,
                result,
                error,
            )
            self.ops.append(op)
            return op

    def snapshot(self) -> list[Op]:
        with self._lock:
            return sorted(self.ops, key=lambda op: op.invoke)
