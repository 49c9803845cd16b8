"""The leader indexes an entity once, while validating it; every other replica indexes
the logged bytes. Both must yield the same index entries, or replicas would diverge."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud.datastore_v1.types import datastore, entity

from zonestore_node.model import indexing
from zonestore_node.model.errors import DatastoreError
from zonestore_node.storage import mvcc
from zonestore_node.storage.engine import Engine, Family
from zonestore_node.txn import apply as apply_mod
from zonestore_node.txn.command import CommitCommand, CreateIndexCommand, Write
from zonestore_node.txn.service import DatastoreService

KeyPb: Any = entity.Key.pb()
ValuePb: Any = entity.Value.pb()
EntityPb: Any = entity.Entity.pb()
MutationPb: Any = datastore.Mutation.pb()


def _key(*path: tuple[str, str | int], project: str = "") -> Any:
    elements = [
        KeyPb.PathElement(kind=k, id=i) if isinstance(i, int) else KeyPb.PathElement(kind=k, name=i)
        for k, i in path
    ]
    return KeyPb(partition_id=entity.PartitionId.pb()(project_id=project), path=elements)


def _entity() -> Any:
    """Every shape the index walk treats differently."""
    inner = EntityPb(
        key=_key(("Inner", 1)),
        properties={
            "deep": ValuePb(string_value="d"),
            "hidden": ValuePb(integer_value=5, exclude_from_indexes=True),
        },
    )
    e = EntityPb(key=_key(("Parent", "p"), ("Thing", "t1")))
    props = e.properties
    props["s"].string_value = "hello"
    props["i"].integer_value = -42
    props["d"].double_value = 2.5
    props["b"].boolean_value = True
    props["n"].null_value = 0
    props["t"].timestamp_value.seconds = 1_700_000_000
    props["t"].timestamp_value.nanos = 123_456_789  # truncated to micros while validating
    props["k"].key_value.CopyFrom(_key(("Other", 7)))  # empty partition: filled from the request
    props["g"].geo_point_value.latitude = 10.5
    props["g"].geo_point_value.longitude = -20.25
    props["blob"].blob_value = b"\x00\x01"
    props["unindexed"].string_value = "x" * 2000
    props["unindexed"].exclude_from_indexes = True
    for v in (3, 1, 3):
        props["arr"].array_value.values.add().integer_value = v
    props["arr"].array_value.values.add().entity_value.CopyFrom(inner)
    props["emb"].entity_value.CopyFrom(inner)
    props["emb_hidden"].entity_value.CopyFrom(inner)
    props["emb_hidden"].exclude_from_indexes = True
    return e


def _evaluate(e: Any) -> Write:
    mutation = MutationPb(upsert=e)
    write, _ = DatastoreService._evaluate(None, "proj", "", mutation)  # type: ignore[arg-type]
    return write


def test_the_leaders_index_entries_equal_those_recomputed_from_the_logged_bytes() -> None:
    write = _evaluate(_entity())
    assert write.index_memo is not None
    logged = CommitCommand.decode(CommitCommand(1, (write,)).encode()).writes[0]
    assert logged.index_memo is None  # never on the wire
    recomputed = indexing.index_keys(indexing.EntityPb.FromString(logged.entity), None)
    assert indexing.indexing_keys(write.index_memo, None) == recomputed
    assert write.encoded == logged.encoded == write.index_memo.encoded_key
    names = {name for name, _ in write.index_memo.indexed}
    # Array elements, embedded sub-properties (also inside arrays); nothing excluded.
    assert names == {"s", "i", "d", "b", "n", "t", "k", "g", "blob", "arr", "arr.deep", "emb.deep"}
    assert sum(1 for name, _ in write.index_memo.indexed if name == "arr") == 3


def test_validation_errors_are_unchanged_by_collecting_index_values() -> None:
    nested = EntityPb(key=_key(("Thing", "x")))
    nested.properties["a"].array_value.values.add().array_value.values.add().integer_value = 1
    with pytest.raises(DatastoreError, match="array value inside an array"):
        _evaluate(nested)
    long = EntityPb(key=_key(("Thing", "y")))
    long.properties["s"].string_value = "x" * 1501
    with pytest.raises(DatastoreError, match="longer than 1500 bytes"):
        _evaluate(long)
    reserved = EntityPb(key=_key(("Thing", "z")))
    reserved.properties["__x__"].integer_value = 1
    with pytest.raises(DatastoreError, match="reserved"):
        _evaluate(reserved)
    # The memo of valid labels does not make a later invalid one pass.
    reserved_kind = EntityPb(key=_key(("__Thing__", "z")))
    with pytest.raises(DatastoreError, match="reserved"):
        _evaluate(reserved_kind)


def test_leader_and_follower_apply_write_identical_batches(tmp_path: Any) -> None:
    """The same command applied with the memo (leader) and from its bytes (follower),
    over a composite index, writes the same keys and values."""
    registry_def = indexing.CompositeDefinition(
        "Thing", False, (indexing.Column("arr"), indexing.Column("i", descending=True))
    )
    batches: list[dict[tuple[str, bytes], bytes]] = []
    for memo in (True, False):
        engine = Engine(tmp_path / f"db-{memo}")
        store = mvcc.Store(engine)
        applier = apply_mod.Applier()
        setup = engine.batch()
        applier(store, CreateIndexCommand(1, registry_def), setup)
        engine.write(setup)
        command = CommitCommand(2, (_evaluate(_entity()),))
        if not memo:
            command = CommitCommand.decode(command.encode())
        batch = engine.batch()
        result = applier(store, command, batch)
        assert result.error is None
        engine.write(batch)
        seen: dict[tuple[str, bytes], bytes] = {}
        for family in (Family.ENTITIES, Family.INDEXES):
            it = engine.iterator(family)
            it.seek(b"")
            while it.valid():
                seen[(family.value, bytes(it.key()))] = bytes(it.value())
                it.next()
        batches.append(seen)
        engine.close()
    assert batches[0] == batches[1]
    assert any(
        family == Family.INDEXES.value and key[:1] == indexing.COMPOSITE_INDEX
        for family, key in batches[0]
    )
