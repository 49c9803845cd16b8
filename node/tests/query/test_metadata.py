"""Metadata queries derived by skip-scanning the index keyspace."""

from __future__ import annotations

from typing import Any

from tests.query.world import World, entity, key, pf, query


def names_of(world: World, q: Any, namespace: str = "") -> list[tuple[Any, ...]]:
    batch = world.run(q, namespace=namespace).batch
    return [tuple(e.name or e.id for e in er.entity.key.path) for er in batch.entity_results]


def populate(world: World) -> None:
    world.put(
        entity(key("Cat", 1), name="tom", age=3),
        entity(key("Cat", 2), name="kit", tags=["a", 1]),
        entity(key("Dog", 1), name="rex"),
        entity(key("Owl", 1, namespace="zoo"), wise=True),
    )


def test_kind_query_lists_each_kind_once(world: World) -> None:
    populate(world)
    assert names_of(world, query("__kind__")) == [("Cat",), ("Dog",)]
    assert names_of(world, query("__kind__"), namespace="zoo") == [("Owl",)]


def test_kind_query_honours_key_ranges(world: World) -> None:
    populate(world)
    q = query("__kind__", pf("__key__", ">", key("__kind__", "Cat")))
    assert names_of(world, q) == [("Dog",)]


def test_namespace_query_lists_the_default_namespace_as_id_1(world: World) -> None:
    populate(world)
    assert names_of(world, query("__namespace__")) == [(1,), ("zoo",)]


def test_property_query_lists_properties_and_representations(world: World) -> None:
    populate(world)
    batch = world.run(query("__property__")).batch
    got = {
        tuple(e.name for e in er.entity.key.path): [
            v.string_value
            for v in er.entity.properties["property_representation"].array_value.values
        ]
        for er in batch.entity_results
    }
    assert got == {
        ("Cat", "age"): ["INT64"],
        ("Cat", "name"): ["STRING"],
        ("Cat", "tags"): ["INT64", "STRING"],
        ("Dog", "name"): ["STRING"],
    }


def test_property_query_with_a_kind_ancestor_lists_that_kind_only(world: World) -> None:
    populate(world)
    q = query("__property__", pf("__key__", "ancestor", key("__kind__", "Dog")))
    assert names_of(world, q) == [("Dog", "name")]
