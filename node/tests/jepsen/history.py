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
    commit_ts: int | None = None  # the commit timestamp the node returned (µs), if kept

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
        commit_ts: int | None = None,
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
                commit_ts,
            )
            self.ops.append(op)
            return op

    def snapshot(self) -> list[Op]:
        with self._lock:
            return sorted(self.ops, key=lambda op: op.invoke)


def to_record(op: Op, workload: str) -> dict[str, Any]:
    """One JSON line of a run's history file (history.jsonl); `complete` is null for an
    operation that never completed (info)."""
    return {
        "workload": workload,
        "process": op.process,
        "f": op.f,
        "key": op.key,
        "value": op.value,
        "status": op.status.value,
        "invoke": op.invoke,
        "complete": None if op.complete >= INFINITY else op.complete,
        "result": op.result,
        "error": op.error,
        "commit_ts": op.commit_ts,
    }


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def from_record(record: dict[str, Any]) -> tuple[str, Op]:
    """The inverse of `to_record` (lists come back as tuples in `value`, as the
    workloads ask them; results stay lists)."""
    complete = record["complete"]
    op = Op(
        record["process"],
        record["f"],
        record["key"],
        _tuples(record["value"]),
        Status(record["status"]),
        record["invoke"],
        INFINITY if complete is None else complete,
        record["result"],
        record["error"],
        record.get("commit_ts"),
    )
    return record["workload"], op
