"""Query cursors: opaque bytes naming a position in a query's result order.

A position is the *sort key* of the last result handed out (see `planner.SortKey`):
the concatenation of the result's order values (inverted for descending orders), then
its encoded key path, then, for projections, its projected values. Sort keys are
unique per result and totally ordered, so "resume after a cursor" is "sort key greater
than the cursor's", whatever plan serves the query, and a plan can turn the leading
order value into a seek. `group_len` covers `distinct_on`: resuming also skips the rest
of the group the cursor's result belonged to (the first `group_len` bytes).

Wire format: msgpack [FORMAT_VERSION, sort_key, group_len]. The empty sort key is the
position before every result. Imports nothing from zonestore but model.errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from zonestore_node.model.errors import invalid

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Position:
    sort_key: bytes
    group_len: int = 0

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(
            [FORMAT_VERSION, self.sort_key, self.group_len], use_bin_type=True
        )
        return packed

    def is_after(self, sort_key: bytes) -> bool:
        """Whether a result with `sort_key` lies at or before this position."""
        if sort_key <= self.sort_key:
            return True
        return (
            bool(self.group_len) and sort_key[: self.group_len] == self.sort_key[: self.group_len]
        )


START = Position(b"")


def decode(raw: bytes) -> Position:
    """The position of a client's cursor; INVALID_ARGUMENT for anything we did not make."""
    try:
        decoded = msgpack.unpackb(raw, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise invalid("Invalid cursor.") from exc
    if (
        not isinstance(decoded, list)
        or len(decoded) != 3
        or decoded[0] != FORMAT_VERSION
        or not isinstance(decoded[1], bytes)
        or not isinstance(decoded[2], int)
        or not 0 <= decoded[2] <= len(decoded[1])
    ):
        raise invalid("Invalid cursor.")
    return Position(decoded[1], decoded[2])
