"""Property transforms and write masks as apply evaluates them: the documented arithmetic
(datastore_v1/types/datastore.py), the masked merge, the log format that carries the
recipe, and identical results on every replica that applies the same command."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from google.cloud.datastore_v1.types import datastore, entity

from zonestore_node.model import masks
from zonestore_node.model.errors import DatastoreError
from zonestore_node.storage import mvcc
from zonestore_node.storage.engine import Engine, Family
from zonestore_node.txn import apply as apply_mod
from zonestore_node.txn import transform
from zonestore_node.txn.command import CommitCommand, Write
from zonestore_node.txn.service import DatastoreService

ValuePb: Any = entity.Value.pb()
EntityPb: Any = entity.Entity.pb()
MutationPb: Any = datastore.Mutation.pb()
TransformPb: Any = datastore.PropertyTransform.pb()
INT_MAX, INT_MIN = (1 << 63) - 1, -(1 << 63)


def num(x: int | float) -> Any:
    return ValuePb(integer_value=x) if isinstance(x, int) else ValuePb(double_value=x)


def py(value: Any) -> Any:
    which = value.WhichOneof("value_type")
    if which == "array_value":
        return [py(v) for v in value.array_value.values]
    if which == "null_value":
        return None
    return getattr(value, which)


def run(current: Any | None, *transforms: Any, commit_ts: int = 1_700_000_000_123_456) -> Any:
    """Apply transforms to an entity whose property "p" is `current` (absent if None);
    returns (the new "p" as a Value, the transform results)."""
    e = EntityPb()
    if current is not None:
        e.properties["p"].CopyFrom(current)
    results = transform.apply_all(e, [t.SerializeToString() for t in transforms], commit_ts)
    return e.properties.get("p"), results


def inc(x: int | float, prop: str = "p") -> Any:
    return TransformPb(property=prop, increment=num(x))


@pytest.mark.parametrize(
    ("stored", "operand", "want"),
    [
        (5, 3, 8),
        (INT_MAX, 1, INT_MAX),  # overflow: the largest magnitude integer
        (INT_MIN, -1, INT_MIN),
        (INT_MAX, INT_MAX, INT_MAX),
        (5, 0.5, 5.5),  # either a double: both doubles
        (0.25, 2, 2.25),
        (1e308, 1e308, math.inf),  # IEEE 754
    ],
)
def test_increment_follows_the_documented_arithmetic(
    stored: int | float, operand: int | float, want: int | float
) -> None:
    value, results = run(num(stored), inc(operand))
    assert py(value) == want and type(py(value)) is type(want)
    assert py(results[0]) == want


def test_increment_of_a_missing_or_non_numeric_property_sets_the_operand() -> None:
    assert py(run(None, inc(7))[0]) == 7
    assert py(run(ValuePb(string_value="x"), inc(2.5))[0]) == 2.5
    assert py(run(ValuePb(null_value=0), inc(-1))[0]) == -1


def test_increment_keeps_the_stored_values_unindexed_flag() -> None:
    stored = num(1)
    stored.exclude_from_indexes = True
    assert run(stored, inc(1))[0].exclude_from_indexes is True


@pytest.mark.parametrize(
    ("which", "stored", "operand", "want"),
    [
        ("maximum", 3, 5, 5),
        ("maximum", 5, 3, 5),
        ("maximum", 3, 3.5, 3.5),  # takes the larger operand's type
        ("maximum", 3.5, 4, 4),
        ("maximum", 3, 3.0, 3),  # equivalent: the stored value stays
        ("maximum", 3.0, 3, 3.0),
        ("maximum", 0, -0.0, 0),  # every zero is zero: the stored one stays
        ("maximum", -0.0, 0, -0.0),
        ("minimum", 3, 5, 3),
        ("minimum", 3, 2.5, 2.5),
        ("minimum", 2.0, 2, 2.0),
        ("minimum", 0.0, 0, 0.0),
    ],
)
def test_maximum_and_minimum_take_the_winning_operand_with_its_type(
    which: str, stored: int | float, operand: int | float, want: int | float
) -> None:
    value, results = run(num(stored), TransformPb(property="p", **{which: num(operand)}))
    assert py(value) == want and type(py(value)) is type(want)
    assert math.copysign(1, py(value)) == math.copysign(1, want)
    assert py(results[0]) == want


@pytest.mark.parametrize("which", ["maximum", "minimum"])
def test_maximum_and_minimum_with_nan_give_nan_and_missing_gives_the_operand(
    which: str,
) -> None:
    assert math.isnan(py(run(num(3), TransformPb(property="p", **{which: num(math.nan)}))[0]))
    assert math.isnan(py(run(num(math.nan), TransformPb(property="p", **{which: num(3)}))[0]))
    assert py(run(None, TransformPb(property="p", **{which: num(4)}))[0]) == 4
    assert py(run(ValuePb(string_value="s"), TransformPb(property="p", **{which: num(4)}))[0]) == 4


def array(*values: Any) -> Any:
    v = ValuePb()
    v.array_value.SetInParent()
    for x in values:
        v.array_value.values.add().CopyFrom(x if not isinstance(x, (int, float)) else num(x))
    return v


def test_append_missing_elements_compares_numbers_across_types_nan_and_null() -> None:
    stored = array(3, math.nan, ValuePb(null_value=0), ValuePb(string_value="a"))
    append = TransformPb(property="p")
    append.append_missing_elements.CopyFrom(
        array(
            3.0, math.nan, ValuePb(null_value=0), 4, 4.0, ValuePb(string_value="a"), 5
        ).array_value
    )
    value, results = run(stored, append)
    got = py(value)
    assert got[0] == 3 and math.isnan(got[1]) and got[2:] == [None, "a", 4, 5]
    assert results[0].WhichOneof("value_type") == "null_value"


def test_array_transforms_on_a_missing_or_non_array_property_start_from_empty() -> None:
    append = TransformPb(property="p")
    append.append_missing_elements.CopyFrom(array(1, 1).array_value)
    assert py(run(None, append)[0]) == [1]
    assert py(run(num(9), append)[0]) == [1]
    remove = TransformPb(property="p")
    remove.remove_all_from_array.CopyFrom(array(1).array_value)
    assert py(run(None, remove)[0]) == []
    assert py(run(ValuePb(string_value="x"), remove)[0]) == []


def test_remove_all_from_array_removes_every_equivalent_element() -> None:
    remove = TransformPb(property="p")
    remove.remove_all_from_array.CopyFrom(array(2.0, math.nan).array_value)
    value, results = run(array(1, 2, 2.0, math.nan, 3, 2), remove)
    assert py(value) == [1, 3]
    assert results[0].WhichOneof("value_type") == "null_value"


def test_request_time_is_the_commit_time_in_milliseconds() -> None:
    value, results = run(None, TransformPb(property="p", set_to_server_value=1))
    assert value.timestamp_value.seconds == 1_700_000_000
    assert value.timestamp_value.nanos == 123_000_000
    assert results[0] == value


def test_transforms_apply_in_order_and_reach_into_embedded_entities() -> None:
    e = EntityPb()
    e.properties["a"].string_value = "not an entity"
    raw = [inc(1, "a.b.c").SerializeToString(), inc(2, "a.b.c").SerializeToString()]
    results = transform.apply_all(e, raw, 1)
    assert [py(r) for r in results] == [1, 3]
    assert e.properties["a"].entity_value.properties["b"].entity_value.properties["c"] == num(3)


def test_transform_checks_refuse_what_the_api_refuses() -> None:
    with pytest.raises(DatastoreError, match="integer or double"):
        transform.check([TransformPb(property="p", increment=ValuePb(string_value="1"))], "p", "")
    with pytest.raises(DatastoreError, match="name a property"):
        transform.check([inc(1, "")], "p", "")
    with pytest.raises(DatastoreError, match="reserved"):
        transform.check([inc(1, "__x__")], "p", "")
    with pytest.raises(DatastoreError, match="no transform"):
        transform.check([TransformPb(property="p")], "p", "")
    with pytest.raises(DatastoreError, match="unknown server value"):
        transform.check([TransformPb(property="p", set_to_server_value=0)], "p", "")
    nested = TransformPb(property="p")
    nested.append_missing_elements.values.add().array_value.SetInParent()
    with pytest.raises(DatastoreError, match="array value inside an array"):
        transform.check([nested], "p", "")
    with pytest.raises(DatastoreError, match="at most 500"):
        transform.check([inc(1)] * 501, "p", "")
    assert len(transform.check([inc(1)] * 500, "p", "")) == 500


# Masks --------------------------------------------------------------------------------


def test_mask_paths_split_on_unescaped_dots() -> None:
    assert masks.parse_path("a.b") == ("a", "b")
    assert masks.parse_path("a\\.b.c\\\\d") == ("a.b", "c\\d")
    for bad in ("", "a..b", "a.", "a\\"):
        with pytest.raises(DatastoreError):
            masks.parse_path(bad)
    with pytest.raises(DatastoreError, match="reserved"):
        masks.parse_paths(["a.__x__"])
    assert masks.parse_paths(["__key__", "a"]) == [("a",)]


def test_a_masked_write_updates_named_properties_and_deletes_named_absent_ones() -> None:
    current = EntityPb()
    current.properties["keep"].integer_value = 1
    current.properties["gone"].integer_value = 2
    current.properties["emb"].entity_value.properties["x"].integer_value = 3
    current.properties["emb"].entity_value.properties["y"].integer_value = 4
    given = EntityPb()
    given.properties["new"].integer_value = 5
    given.properties["ignored"].integer_value = 6
    given.properties["emb"].entity_value.properties["x"].integer_value = 7
    paths = masks.parse_paths(["new", "gone", "emb.x", "missing.deep"])
    merged = masks.merge(current, given, paths)
    assert set(merged.properties) == {"keep", "new", "emb"}
    assert merged.properties["new"].integer_value == 5
    inner = merged.properties["emb"].entity_value.properties
    assert inner["x"].integer_value == 7 and inner["y"].integer_value == 4
    assert set(masks.merge(None, given, paths).properties) == {"new", "emb"}


def test_a_read_mask_keeps_only_named_properties_and_sub_properties() -> None:
    e = EntityPb()
    e.properties["a"].integer_value = 1
    e.properties["b"].string_value = "x"
    e.properties["emb"].entity_value.properties["x"].integer_value = 3
    e.properties["emb"].entity_value.properties["y"].integer_value = 4
    e.properties["flat"].integer_value = 5
    masks.project(e, masks.tree(masks.parse_paths(["a", "emb.y", "flat.z", "none"])))
    assert set(e.properties) == {"a", "emb"}
    assert set(e.properties["emb"].entity_value.properties) == {"y"}


# Through evaluate, the log and apply ------------------------------------------------------


def _key(name: str) -> Any:
    key = entity.Key.pb()()
    key.partition_id.project_id = "proj"
    element = key.path.add()
    element.kind, element.name = "Counter", name
    return key


def _evaluate(mutation: Any) -> Write:
    write, _ = DatastoreService._evaluate(None, "proj", "", mutation)  # type: ignore[arg-type]
    return write


def test_the_log_carries_the_recipe_and_keeps_format_1_without_one() -> None:
    plain = _evaluate(MutationPb(upsert=EntityPb(key=_key("a"))))
    assert CommitCommand(1, (plain,)).encode()[1] == 1  # msgpack fixarray, then format 1
    m = MutationPb(upsert=EntityPb(key=_key("a")), base_version=3, conflict_resolution_strategy=3)
    m.property_mask.paths.append("n")
    m.property_transforms.append(inc(2, "n"))
    write = _evaluate(m)
    assert write.index_memo is None  # the stored entity is not the mutation's
    logged = CommitCommand.decode(CommitCommand(1, (write,)).encode()).writes[0]
    assert logged == write
    assert (logged.mask, logged.fail_on_conflict, logged.base_version) == (("n",), True, 3)
    assert TransformPb.FromString(logged.transforms[0]) == inc(2, "n")


def test_every_replica_applying_the_same_commands_stores_the_same_bytes(tmp_path: Path) -> None:
    """Two stores (two replicas) apply the same logged commands: increments, array
    unions, REQUEST_TIME and a masked write; their entities and indexes are equal."""
    commands = []
    for ts, n in ((10, 1), (20, 2.5), (30, 4)):
        m = MutationPb(upsert=EntityPb(key=_key("c")))
        m.property_mask.paths.append("other")
        m.property_transforms.append(inc(n, "n"))
        m.property_transforms.append(TransformPb(property="t", set_to_server_value=1))
        union = TransformPb(property="tags")
        union.append_missing_elements.values.add().integer_value = ts
        m.property_transforms.append(union)
        commands.append(CommitCommand(ts * 1000, (_evaluate(m),)).encode())
    stores = []
    for name in ("r1", "r2"):
        engine = Engine(tmp_path / name)
        store = mvcc.Store(engine)
        applier = apply_mod.Applier()
        results = []
        for raw in commands:
            batch = engine.batch()
            result = applier(store, CommitCommand.decode(raw), batch)
            assert result.error is None, result.message
            engine.write(batch)
            results.append([py(v) for v in result.writes[0].transform_results])
        seen = {}
        for family in (Family.ENTITIES, Family.INDEXES):
            it = engine.iterator(family)
            it.seek(b"")
            while it.valid():
                seen[(family.value, bytes(it.key()))] = bytes(it.value())
                it.next()
        stores.append((seen, results))
        newest = store.newest(Family.ENTITIES, next(iter(seen))[1][:-8])
        assert newest is not None
        final = apply_mod.decode_entity(newest.payload)[1]
        assert py(final.properties["n"]) == 7.5
        assert py(final.properties["tags"]) == [10, 20, 30]
        engine.close()
    assert stores[0] == stores[1]
    assert [r[0] for r in stores[0][1]] == [1, 3.5, 7.5]


def test_a_transform_on_an_update_of_a_missing_entity_is_not_found(tmp_path: Path) -> None:
    m = MutationPb(update=EntityPb(key=_key("none")))
    m.property_transforms.append(inc(1, "n"))
    engine = Engine(tmp_path / "db")
    result = apply_mod.apply(mvcc.Store(engine), CommitCommand(5, (_evaluate(m),)), engine.batch())
    engine.close()
    assert result.error is not None and result.error.name == "NOT_FOUND"


def test_a_transform_on_a_delete_is_invalid() -> None:
    m = MutationPb(delete=_key("x"))
    m.property_transforms.append(inc(1, "n"))
    with pytest.raises(DatastoreError, match="delete"):
        _evaluate(m)
