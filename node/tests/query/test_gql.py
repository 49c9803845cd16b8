"""GQL parsed into structured queries and run by the same engine."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud.datastore_v1.types import query as query_types

from tests.query.world import World, entity, key, python
from zonestore_node.model.errors import DatastoreError
from zonestore_node.query import executor

GqlPb: Any = query_types.GqlQuery.pb()


def gql(text: str, *positional: Any, **named: Any) -> Any:
    from tests.query.world import set_value

    g = GqlPb()
    g.query_string = text
    g.allow_literals = True
    for v in positional:
        set_value(g.positional_bindings.add().value, v)
    for name, v in named.items():
        set_value(g.named_bindings[name].value, v)
    return g


@pytest.fixture
def books(world: World) -> World:
    world.put(
        entity(key("Book", 1), title="a", year=1990, tags=["x"]),
        entity(key("Book", 2), title="b", year=2005, tags=["y", "x"]),
        entity(key("Book", 3), title="c", year=2020, tags=["z"]),
    )
    return world


def ids(world: World, g: Any) -> list[int]:
    batch = world.run(executor.parse_gql(g)).batch
    return [er.entity.key.path[0].id for er in batch.entity_results]


def test_gql_select_with_where_order_and_limit(books: World) -> None:
    assert ids(books, gql("SELECT * FROM Book WHERE year > 1995 ORDER BY year DESC LIMIT 1")) == [3]
    assert ids(books, gql("SELECT * FROM `Book` WHERE tags = 'x' AND year < @1", 2000)) == [1]
    assert ids(books, gql("SELECT __key__ FROM Book WHERE title IN ARRAY('a', 'c')")) == [1, 3]
    assert ids(books, gql("SELECT * FROM Book WHERE year = @y OR title = 'c'", y=1990)) == [1, 3]
    q = gql("SELECT * FROM Book WHERE __key__ HAS ANCESTOR KEY(Book, 2)")
    assert ids(books, q) == [2]


def test_gql_projection_and_offset(books: World) -> None:
    q = executor.parse_gql(gql("SELECT title FROM Book ORDER BY title LIMIT 2 OFFSET 1"))
    batch = books.run(q).batch
    assert [python(er.entity.properties["title"]) for er in batch.entity_results] == ["b", "c"]


def test_gql_aggregations(books: World) -> None:
    for text in (
        "AGGREGATE COUNT(*) AS n, SUM(year) AS s OVER (SELECT * FROM Book WHERE year > 2000)",
        "SELECT COUNT(*) AS n, SUM(year) AS s FROM Book WHERE year > 2000",
    ):
        agg = executor.parse_gql_aggregation(gql(text))
        out = executor.run_aggregation(books.store, "proj", "", "", agg, books.commit_ts)
        props = out.batch.aggregation_results[0].aggregate_properties
        assert {k: python(v) for k, v in props.items()} == {"n": 2, "s": 4025}


def test_gql_literals_need_allow_literals_and_syntax_errors_are_invalid(books: World) -> None:
    g = gql("SELECT * FROM Book WHERE year = 1990")
    g.allow_literals = False
    for bad in (g, gql("SELECT * FROM Book WHERE"), gql("SELEKT * FROM Book")):
        with pytest.raises(DatastoreError):
            executor.parse_gql(bad)
