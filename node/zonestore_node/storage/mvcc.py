"""Multi-version reads and writes over the engine's column families.

Owns the meaning of a versioned key: `keycodec.versioned(encoded, commit_ts)` maps to a
payload, and an empty payload is a tombstone (the key was deleted at commit_ts). A read
at `read_ts` sees, for every user key, the newest version with commit_ts <= read_ts.

It cannot tell whether a batch was replicated and must not import replica/ or raft/:
the layers above decide *when* a batch is written; this module only decides *how*.

Range bounds given to the scans are user-key bounds, and they must be either whole user
keys or prefixes of user keys. Because every user key is a prefix-free encoding, the
raw RocksDB key of any version of `u` then sorts on the same side of a bound as `u`
itself, so the bounds can be handed to RocksDB unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from zonestore_node.storage import keycodec
from zonestore_node.storage.engine import Engine, Family, RawIterator, WriteBatch

TOMBSTONE = b""
_TS = keycodec.TS_SUFFIX_LEN


@dataclass(frozen=True, slots=True)
class Version:
    encoded: bytes
    commit_ts: int
    payload: bytes  # empty: tombstone


class Store:
    """MVCC reads and version writes; one instance per engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # Reads -------------------------------------------------------------------

    def get(self, family: Family, encoded: bytes, read_ts: int) -> Version | None:
        """The live version of `encoded` visible at `read_ts`, or None."""
        it = self.engine.iterator(family, upper_bound=encoded + b"\xff" * (_TS + 1))
        return self._seek_visible(it, encoded, read_ts)

    def get_many(self, family: Family, keys: list[bytes], read_ts: int) -> list[Version | None]:
        """Point reads sharing one iterator (keys in any order)."""
        it = self.engine.iterator(family)
        return [self._seek_visible(it, key, read_ts) for key in keys]

    @staticmethod
    def _seek_visible(it: RawIterator, encoded: bytes, read_ts: int) -> Version | None:
        it.seek(keycodec.versioned(encoded, read_ts))
        if not it.valid():
            return None
        raw = it.key()
        if len(raw) != len(encoded) + _TS or not raw.startswith(encoded):
            return None
        payload = it.value()
        if not payload:
            return None
        return Version(encoded, keycodec.split_versioned(raw)[1], payload)

    def newest(self, family: Family, encoded: bytes) -> Version | None:
        """The newest version of `encoded`, tombstone included, at any timestamp."""
        it = self.engine.iterator(family, upper_bound=encoded + b"\xff" * (_TS + 1))
        it.seek(encoded)
        if not it.valid():
            return None
        raw = it.key()
        if len(raw) != len(encoded) + _TS or not raw.startswith(encoded):
            return None
        return Version(encoded, keycodec.split_versioned(raw)[1], it.value())

    def scan(
        self, family: Family, lo: bytes, hi: bytes, read_ts: int, *, reverse: bool = False
    ) -> Iterator[Version]:
        """Live versions visible at `read_ts` of the user keys in [lo, hi), in key order
        (descending with `reverse`)."""
        if reverse:
            yield from self._scan_reverse(family, lo, hi, read_ts)
            return
        it = self.engine.iterator(family, upper_bound=hi)
        it.seek(lo)
        skip_past: bytes | None = None
        while it.valid():
            raw = it.key()
            user = raw[:-_TS]
            if user == skip_past:
                it.next()
                continue
            commit_ts = keycodec.split_versioned(raw)[1]
            if commit_ts > read_ts:
                it.next()
                continue
            skip_past = user
            payload = it.value()
            if payload:
                yield Version(user, commit_ts, payload)
            it.next()

    def _scan_reverse(
        self, family: Family, lo: bytes, hi: bytes, read_ts: int
    ) -> Iterator[Version]:
        it = self.engine.iterator(family)
        it.seek_for_prev(hi)
        current: bytes | None = None
        best: Version | None = None
        while it.valid():
            raw = it.key()
            if raw >= hi:
                it.prev()
                continue
            if raw < lo:
                break
            user = raw[:-_TS]
            if user != current:
                if best is not None and best.payload:
                    yield best
                current, best = user, None
            commit_ts = keycodec.split_versioned(raw)[1]
            if commit_ts <= read_ts:  # versions of one key arrive oldest first here
                best = Version(user, commit_ts, it.value())
            it.prev()
        if best is not None and best.payload:
            yield best

    def written_after(self, family: Family, lo: bytes, hi: bytes, after_ts: int) -> bool:
        """Whether any version (tombstones too) in [lo, hi) has commit_ts > after_ts."""
        it = self.engine.iterator(family, upper_bound=hi)
        it.seek(lo)
        while it.valid():
            if keycodec.split_versioned(it.key())[1] > after_ts:
                return True
            it.next()
        return False

    # Writes ------------------------------------------------------------------

    @staticmethod
    def put_version(
        batch: WriteBatch, family: Family, encoded: bytes, commit_ts: int, payload: bytes
    ) -> None:
        batch.put(family, keycodec.versioned(encoded, commit_ts), payload)

    # Garbage collection ------------------------------------------------------

    def collect(
        self, family: Family, start: bytes, horizon_ts: int, max_keys: int
    ) -> tuple[WriteBatch, bytes | None, int]:
        """Plan the deletion of versions no read at or after `horizon_ts` can see.

        For each user key, every version newer than the horizon stays, and so does the
        newest version at or below it unless that one is a tombstone. Returns the batch
        of deletions, the raw key to resume from (None when the family is done) and how
        many raw keys were examined.
        """
        batch = self.engine.batch()
        it = self.engine.iterator(family)
        it.seek(start)
        current: bytes | None = None
        kept_base = False
        examined = 0
        while it.valid():
            raw = it.key()
            user = raw[:-_TS]
            if user != current:
                if examined >= max_keys:
                    return batch, raw, examined
                current, kept_base = user, False
            examined += 1
            commit_ts = keycodec.split_versioned(raw)[1]
            if commit_ts > horizon_ts:
                pass
            elif not kept_base:
                kept_base = True
                if not it.value():
                    batch.delete(family, raw)
            else:
                batch.delete(family, raw)
            it.next()
        return batch, None, examined
