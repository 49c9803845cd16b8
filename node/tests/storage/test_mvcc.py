"""MVCC reads agree with a dict-of-versions model under random histories, before and after GC."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zonestore_node.storage import keycodec, mvcc
from zonestore_node.storage.engine import Engine, Family

KEYS = [keycodec.encode_key("p", "", "", (("K", i),)) for i in range(1, 6)]

history = st.lists(
    st.tuples(
        st.integers(0, len(KEYS) - 1), st.one_of(st.none(), st.binary(min_size=1, max_size=4))
    ),
    min_size=1,
    max_size=30,
)


def model_read(
    model: dict[bytes, list[tuple[int, bytes | None]]], key: bytes, ts: int
) -> bytes | None:
    visible = [v for t, v in model.get(key, []) if t <= ts]
    return visible[-1] if visible else None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history, st.data())
def test_reads_at_any_timestamp_match_the_model(
    ops: list[tuple[int, bytes | None]], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(Path(tmp))
        store = mvcc.Store(engine)
        model: dict[bytes, list[tuple[int, bytes | None]]] = {}
        for ts, (i, value) in enumerate(ops, start=10):
            batch = engine.batch()
            store.put_version(batch, Family.ENTITIES, KEYS[i], ts, value or mvcc.TOMBSTONE)
            engine.write(batch)
            model.setdefault(KEYS[i], []).append((ts, value))
        last = 10 + len(ops)
        for read_ts in range(9, last + 1):
            for key in KEYS:
                got = store.get(Family.ENTITIES, key, read_ts)
                assert (got.payload if got else None) == model_read(model, key, read_ts)
            scanned = {
                v.encoded: v.payload for v in store.scan(Family.ENTITIES, b"", b"\xff", read_ts)
            }
            expected = {k: model_read(model, k, read_ts) for k in KEYS}
            assert scanned == {k: v for k, v in expected.items() if v is not None}
            backwards = [
                v.encoded for v in store.scan(Family.ENTITIES, b"", b"\xff", read_ts, reverse=True)
            ]
            assert backwards == sorted(scanned, reverse=True)
        horizon = data.draw(st.integers(9, last))
        batch, resume, _ = store.collect(Family.ENTITIES, b"", horizon, 1000)
        assert resume is None
        engine.write(batch)
        for read_ts in range(horizon, last + 1):
            for key in KEYS:
                got = store.get(Family.ENTITIES, key, read_ts)
                assert (got.payload if got else None) == model_read(model, key, read_ts)
        engine.close()


def test_written_after_sees_tombstones_and_new_versions(tmp_path: Path) -> None:
    engine = Engine(tmp_path)
    store = mvcc.Store(engine)
    batch = engine.batch()
    store.put_version(batch, Family.INDEXES, b"a1", 5, b"\x01")
    store.put_version(batch, Family.INDEXES, b"b1", 9, mvcc.TOMBSTONE)
    engine.write(batch)
    assert store.written_after(Family.INDEXES, b"a", b"c", 8)
    assert not store.written_after(Family.INDEXES, b"a", b"b", 8)
    assert not store.written_after(Family.INDEXES, b"a", b"c", 9)
    engine.close()


def test_gc_keeps_the_newest_version_at_the_horizon_and_drops_older_ones(tmp_path: Path) -> None:
    engine = Engine(tmp_path)
    store = mvcc.Store(engine)
    for ts, value in [(1, b"x"), (2, b"y"), (3, b"z")]:
        batch = engine.batch()
        store.put_version(batch, Family.ENTITIES, KEYS[0], ts, value)
        engine.write(batch)
    batch, _, _ = store.collect(Family.ENTITIES, b"", 2, 100)
    assert batch.count == 1  # only version 1 goes
    engine.write(batch)
    assert store.get(Family.ENTITIES, KEYS[0], 1) is None
    got = store.get(Family.ENTITIES, KEYS[0], 2)
    assert got is not None
    assert got.payload == b"y"
    engine.close()
