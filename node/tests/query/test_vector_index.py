"""Vector indexes declared like composite indexes: index.yaml's `vectorConfig`, the
definition through the log's wire format, and find_nearest under each --auto-index
policy (refused naming the index to add, created on demand, served undeclared under
fallback); a vector index never serves an ordinary composite query."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.query.test_vector_search import EUCLIDEAN, doc, nearest_query
from tests.query.world import PROJECT, World
from zonestore_node.model import indexing
from zonestore_node.model.errors import Code, DatastoreError
from zonestore_node.query import executor, planner
from zonestore_node.query.planner import IndexPolicy
from zonestore_node.txn import command as command_mod

DECLARED = """
indexes:
- kind: Doc
  properties:
  - name: emb
    vectorConfig:
      dimension: 3
      flat: {}
- kind: Doc
  properties:
  - name: tag
  - name: n
    direction: desc
"""


def vector_index(dimension: int = 3) -> indexing.CompositeDefinition:
    return indexing.CompositeDefinition(
        "Doc", False, (indexing.Column("emb", vector_dimension=dimension),)
    )


def test_index_yaml_declares_a_vector_index_beside_composite_ones() -> None:
    vector, composite = indexing.parse_index_yaml(DECLARED)
    assert vector == vector_index(3)
    assert vector.vector and not composite.vector
    assert composite.columns == (indexing.Column("tag"), indexing.Column("n", True))
    # The suggestion a refusal prints is itself index.yaml that parses back.
    text = "indexes:\n" + vector.yaml()
    assert "vectorConfig:" in text and "dimension: 3" in text and "flat: {}" in text
    assert indexing.parse_index_yaml(text) == [vector]


@pytest.mark.parametrize(
    ("prop", "message"),
    [
        ("vectorConfig: {dimension: 0, flat: {}}", "positive integer dimension"),
        ("vectorConfig: {dimension: x, flat: {}}", "positive integer dimension"),
        ("vectorConfig: {dimension: 3}", "flat"),
        ("vectorConfig: {dimension: 3, flat: {}, hnsw: {}}", "vectorConfig is"),
        ("vectorConfig: {dimension: 3, flat: {}}\n    direction: asc", "no direction"),
        ("vectorConfig: {dimension: 4096, flat: {}}", "between 1 and 2048"),
    ],
)
def test_a_bad_vector_config_is_refused_with_the_reason(prop: str, message: str) -> None:
    text = f"indexes:\n- kind: Doc\n  properties:\n  - name: emb\n    {prop}\n"
    with pytest.raises(DatastoreError, match=message) as info:
        indexing.parse_index_yaml(text)
    assert info.value.code is Code.INVALID_ARGUMENT


def test_a_vector_index_has_exactly_one_top_level_property() -> None:
    text = (
        "indexes:\n- kind: Doc\n  properties:\n  - name: tag\n"
        "  - name: emb\n    vectorConfig: {dimension: 3, flat: {}}\n"
    )
    with pytest.raises(DatastoreError, match="exactly one property"):
        indexing.parse_index_yaml(text)
    nested = "indexes:\n- kind: Doc\n  properties:\n  - name: a.emb\n"
    nested += "    vectorConfig: {dimension: 3, flat: {}}\n"
    with pytest.raises(DatastoreError, match="top-level"):
        indexing.parse_index_yaml(nested)


def test_a_vector_definition_survives_the_log_and_ordinary_ones_keep_their_bytes() -> None:
    for definition in (vector_index(7), indexing.parse_index_yaml(DECLARED)[1]):
        cmd = command_mod.CreateIndexCommand(1234, definition)
        decoded = command_mod.decode(cmd.encode())
        assert isinstance(decoded, command_mod.CreateIndexCommand)
        assert decoded.definition == definition
    # Ordinary columns still pack as [name, descending]: what older replicas read.
    assert indexing.parse_index_yaml(DECLARED)[1].pack()[2] == [["tag", False], ["n", True]]


def test_find_nearest_without_its_vector_index_names_the_index_to_add(world: World) -> None:
    world.put(doc(1, [1.0, 0.0, 0.0]), doc(2, [0.0, 1.0, 0.0]))
    q = nearest_query([1.0, 0.0, 0.0], EUCLIDEAN, 1)
    with pytest.raises(DatastoreError) as info:
        world.run(q, policy=IndexPolicy.REQUIRE)
    assert info.value.code is Code.FAILED_PRECONDITION
    assert "no matching index found" in info.value.message
    assert indexing.parse_index_yaml("indexes:\n" + info.value.message.split(":\n", 1)[1]) == [
        vector_index(3)
    ]
    # A plan without analyze refuses too, and creates nothing.
    with pytest.raises(DatastoreError, match="no matching index"):
        executor.run_query(
            world.store, PROJECT, "", "", q, world.commit_ts, IndexPolicy.REQUIRE, plan_only=True
        )
    assert indexing.load_registry(world.engine).indexes == ()


def test_find_nearest_under_auto_index_creates_the_vector_index_and_answers(
    world: World,
) -> None:
    world.put(doc(1, [1.0, 0.0, 0.0]), doc(2, [0.0, 1.0, 0.0]), doc(3, [0.0, 0.0, 5.0]))
    q = nearest_query([0.0, 0.9, 0.0], EUCLIDEAN, 2, result_property="d")
    with pytest.raises(planner.NeedsIndex) as info:
        executor.run_query(world.store, PROJECT, "", "", q, world.commit_ts, IndexPolicy.CREATE)
    assert info.value.definition == vector_index(3)
    batch = world.run(q, policy=IndexPolicy.CREATE).batch  # creates it, runs again
    assert [er.entity.key.path[0].id for er in batch.entity_results] == [2, 1]
    registry = indexing.load_registry(world.engine)
    assert [i.definition for i in registry.indexes] == [vector_index(3)]
    # Declared now: REQUIRE serves it; a query of another dimension needs its own.
    assert world.names(q, policy=IndexPolicy.REQUIRE) == [2, 1]
    with pytest.raises(DatastoreError, match="dimension: 2"):
        world.run(nearest_query([0.0, 1.0], EUCLIDEAN, 1), policy=IndexPolicy.REQUIRE)


def test_declaring_a_vector_index_backfills_nothing_and_writes_keep_it_current(
    world: World,
) -> None:
    world.put(doc(1, [1.0, 0.0, 0.0]), doc(2, [0.0, 1.0, 0.0]))
    assert world.create_index(vector_index(3)).index_updates == 0
    q = nearest_query([0.0, 0.0, 1.0], EUCLIDEAN, 1)
    assert world.names(q, policy=IndexPolicy.REQUIRE) in ([1], [2])
    world.put(doc(3, [0.0, 0.0, 1.0]))
    assert world.names(q, policy=IndexPolicy.REQUIRE) == [3]
    world.delete(doc(3, None).key)
    assert world.names(q, policy=IndexPolicy.REQUIRE) != [3]


def test_fallback_serves_find_nearest_without_a_declared_index(world: World) -> None:
    world.put(doc(1, [1.0, 0.0, 0.0]), doc(2, [0.0, 1.0, 0.0]))
    q = nearest_query([1.0, 0.1, 0.0], EUCLIDEAN, 1)
    assert world.names(q, policy=IndexPolicy.FALLBACK) == [1]
    assert indexing.load_registry(world.engine).indexes == ()


def test_a_vector_index_never_serves_an_ordinary_composite_query(world: World) -> None:
    world.create_index(vector_index(3))
    world.put(doc(1, [1.0, 0.0, 0.0], tag="a"), doc(2, [0.0, 1.0, 0.0], tag="a"))
    need = planner.Need(
        frozenset({"tag"}),
        (planner.Order("emb", False),),
        False,
        indexing.CompositeDefinition(
            "Doc", False, (indexing.Column("tag"), indexing.Column("emb"))
        ),
    )
    registry = indexing.load_registry(world.engine)
    assert planner.find_index(registry, need) is None
    single = planner.Need(frozenset(), (planner.Order("emb", False),), False, vector_index(3))
    assert not planner.matches(vector_index(3), single)


def test_the_readmes_vector_index_yaml_parses_to_a_vector_index() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    block = readme.split("```yaml\nindexes:\n", 1)[1].split("```", 1)[0]
    assert indexing.parse_index_yaml("indexes:\n" + block) == [
        indexing.CompositeDefinition(
            "Doc", False, (indexing.Column("embedding", vector_dimension=256),)
        )
    ]
