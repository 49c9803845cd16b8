"""ReadIndex bookkeeping on the leader (thesis §6.4).

Owns the queue of read requests waiting for a heartbeat round to confirm leadership:
each request records the commit_index at arrival (its read index) and which voters
acknowledged a heartbeat carrying its context. A quorum of acks for one request
confirms it and every request queued before it. Imports nothing from other
zonestore_node packages; does no I/O.

Request contexts must be unique among pending reads (the replica layer uses a counter).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ReadRequest:
    index: int  # commit_index when the request arrived: the read index
    from_: str  # who asked: the leader itself or a follower that forwarded it
    context: bytes
    acks: set[str] = field(default_factory=set)


class ReadOnly:
    __slots__ = ("_pending", "_queue")

    def __init__(self) -> None:
        self._pending: dict[bytes, ReadRequest] = {}
        self._queue: list[bytes] = []

    def add_request(self, index: int, from_: str, context: bytes) -> bool:
        """Queue a request; False if a request with that context is already pending."""
        if context in self._pending:
            return False
        self._pending[context] = ReadRequest(index, from_, context)
        self._queue.append(context)
        return True

    def recv_ack(self, from_: str, context: bytes) -> set[str] | None:
        """Record a heartbeat ack; returns who acked that context so far (None if unknown)."""
        req = self._pending.get(context)
        if req is None:
            return None
        req.acks.add(from_)
        return req.acks

    def advance(self, context: bytes) -> list[ReadRequest]:
        """Pop the request for ``context`` and all requests queued before it."""
        if context not in self._pending:
            return []
        i = self._queue.index(context)
        done = [self._pending.pop(c) for c in self._queue[: i + 1]]
        del self._queue[: i + 1]
        return done

    def last_pending_context(self) -> bytes:
        return self._queue[-1] if self._queue else b""

    def __len__(self) -> int:
        return len(self._queue)
