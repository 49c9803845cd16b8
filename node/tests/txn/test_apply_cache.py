"""The state machine's caches (txn/apply.py IndexKeyCache, the registry) are pure
memoization: a replica applying with them must reach exactly the state and results of
one reading everything from the store, or replicas would diverge."""

from __future__ import annotations

import gc
import random
from pathlib import Path
from typing import Any

import pytest
from google.cloud.datastore_v1.types import entity

from zonestore_node.model import indexing, keys
from zonestore_node.storage import mvcc
from zonestore_node.storage.engine import Engine, Family
from zonestore_node.txn import apply as apply_mod
from zonestore_node.txn.command import CommitCommand, CreateIndexCommand, Op, Write

EntityPb: Any = entity.Entity.pb()


def _entity(name: str, value: int, tag: str) -> tuple[bytes, bytes]:
    key = keys.build("p", "", "", (("K", name),))
    e = EntityPb()
    e.key.CopyFrom(key)
    e.properties["v"].integer_value = value
    e.properties["tag"].string_value = tag
    return keys.encode(key), e.SerializeToString()


def _dump(engine: Engine) -> list[tuple[Family, bytes, bytes]]:
    out = []
    for family in (Family.ENTITIES, Family.INDEXES, Family.META):
        it = engine.iterator(family)
        it.seek(b"")
        while it.valid():
            out.append((family, bytes(it.key()), bytes(it.value())))
            it.next()
    return out


def _commands(rng: random.Random, count: int) -> list[Any]:
    names = [f"e{i}" for i in range(6)]
    commands: list[Any] = []
    versions: dict[str, int] = {}  # what the generator believes; preconditions sometimes stale
    ts = 0
    for n in range(count):
        ts += rng.randint(1, 3)
        if n == count // 2:
            # A composite index arriving midway: the registry (and the caches) change.
            definition = indexing.CompositeDefinition(
                "K", False, (indexing.Column("tag"), indexing.Column("v", descending=True))
            )
            commands.append(CreateIndexCommand(ts, definition))
            continue
        writes = []
        for name in rng.sample(names, rng.randint(1, 3)):
            op = rng.choice([Op.UPSERT, Op.UPSERT, Op.INSERT, Op.UPDATE, Op.DELETE])
            encoded, body = _entity(name, rng.randint(0, 3), rng.choice("ab"))
            base = None
            if rng.random() < 0.3:
                base = versions.get(name, 0) if rng.random() < 0.7 else rng.randint(0, ts)
            fail = base is not None and rng.random() < 0.5
            writes.append(Write(op, encoded, b"" if op is Op.DELETE else body, base, fail))
            versions[name] = ts
        commands.append(CommitCommand(ts, tuple(writes), transactional=True))
    return commands


@pytest.mark.parametrize("seed", range(12))
def test_applying_with_the_caches_reaches_the_same_state_as_without(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    commands = _commands(rng, 60)
    cached_engine = Engine(tmp_path / "cached")
    plain_engine = Engine(tmp_path / "plain")
    cached, plain = mvcc.Store(cached_engine), mvcc.Store(plain_engine)
    applier = apply_mod.Applier()
    try:
        for command in commands:
            batch_c, batch_p = cached_engine.batch(), plain_engine.batch()
            got = applier(cached, command, batch_c)
            if isinstance(command, CreateIndexCommand):
                want = apply_mod.create_index(plain, command, batch_p)
            else:
                want = apply_mod.apply(plain, command, batch_p)  # no cache: the store only
            assert (got.error, got.message, got.writes, got.index_updates) == (
                want.error, want.message, want.writes, want.index_updates,
            )  # fmt: skip
            cached_engine.write(batch_c)
            plain_engine.write(batch_p)
            if rng.random() < 0.1:
                applier.invalidate()  # as after a snapshot install: must change nothing
        assert _dump(cached_engine) == _dump(plain_engine)
    finally:
        cached_engine.close()
        plain_engine.close()


def test_an_overwrite_of_a_key_just_written_does_not_read_the_store(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "db")
    store = mvcc.Store(engine)
    applier = apply_mod.Applier()
    try:
        encoded, body = _entity("a", 1, "x")
        batch = engine.batch()
        first = applier(store, CommitCommand(10, (Write(Op.UPSERT, encoded, body),)), batch)
        engine.write(batch)
        reads: list[bytes] = []
        real_newest = store.newest

        def counting_newest(family: Family, key: bytes) -> Any:
            reads.append(key)
            return real_newest(family, key)

        store.newest = counting_newest  # type: ignore[method-assign,assignment]
        _, body2 = _entity("a", 2, "y")
        batch = engine.batch()
        second = applier(store, CommitCommand(20, (Write(Op.UPSERT, encoded, body2, 10),)), batch)
        assert reads == []
        assert second.error is None and not second.writes[0].conflict_detected
        assert second.writes[0].create_ts == first.writes[0].create_ts == 10
        assert second.index_updates == 4  # v and tag: old entries dead, new ones live
        applier.invalidate()
        batch = engine.batch()
        applier(store, CommitCommand(30, (Write(Op.DELETE, encoded, b""),)), batch)
        assert reads == [encoded]  # after invalidate() the store is read again
    finally:
        engine.close()


def test_the_index_key_cache_hands_out_copies_and_holds_nothing_the_gc_walks() -> None:
    cache = apply_mod.IndexKeyCache()
    cache.put(b"k", 5, {b"i1", b"i2"})
    cache.wrote(b"k", 5, apply_mod.entity_payload(3, b"entity"))
    gc.collect()
    # A set stays in the collector's lists for good; a tuple of bytes leaves them, so
    # a full collection does not walk the 20,000 cached versions.
    assert not any(gc.is_tracked(index) for index in cache._entries.values())
    got = cache.get(b"k", 5, b"", None)
    assert got == {b"i1", b"i2"}
    got.add(b"changed by apply")
    newest = cache.newest(b"k")
    assert newest is not None and newest[0] == 5 and newest[2] == {b"i1", b"i2"}
    newest[2].discard(b"i1")
    assert cache.get(b"k", 5, b"", None) == {b"i1", b"i2"}
