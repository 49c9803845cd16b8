"""The official Node client's main paths (node/tests/js/client_paths.js), and entities
crossing between the Node and Python clients.

Starting node with the client library takes seconds here, so one Node process plays
every scenario in order, in one project of this module's own; the tests then check
what each scenario observed.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
from typing import Any

import pytest
from google.cloud import datastore

from tests.harness import NodeProcess
from tests.integration.support import datastore_client, run_js

SCRIPT = "client_paths.js"
SCENARIOS = [
    ["crud"],
    ["ids"],
    ["mixed"],
    ["transaction"],
    ["conflict"],
    ["errors"],
    ["database", "db2"],
    ["write", "", ""],
    ["write", "db2", "ns1"],
    ["read", "", "py", "FromPy", "p"],
    ["query"],
    ["large"],
]
_modules = itertools.count()
PY_WRITTEN = {"s": "hé", "n": 5, "ok": True, "nothing": None, "list": [1, "a"]}


@pytest.fixture(scope="module")
def node_project() -> str:
    return f"js{next(_modules)}-{os.getpid()}"


@pytest.fixture(scope="module")
def played(node: NodeProcess, node_project: str) -> dict[str, Any]:
    client = datastore_client(node.client_addr, node_project, namespace="py")
    entity = datastore.Entity(client.key("FromPy", "p"))
    entity.update(PY_WRITTEN)
    client.put(entity)
    results: dict[str, Any] = run_js(node, node_project, SCRIPT, json.dumps(SCENARIOS))
    return results


def scenario(played: dict[str, Any], label: str) -> Any:
    result = played[label]
    assert not (isinstance(result, dict) and "error" in result), result.get("error")
    return result


def test_node_saves_gets_updates_and_deletes(played: dict[str, Any]) -> None:
    out = scenario(played, "crud")
    assert out["one"] == {
        "n": 1,
        "s": "zürich",
        "f": 1.5,
        "big": "9007199254740993",  # int64 beyond 2**53 survives as a string
        "path": ["Task", "a"],
    }
    assert out["many"] == ["a", "b"]  # the missing key is left out
    assert out["when"] == "2020-01-02T03:04:05.678Z"
    assert out["updated"] == {"n": 10}
    assert out["deleted"] is True


def test_node_auto_ids_and_allocate_ids_are_distinct(played: dict[str, Any]) -> None:
    out = scenario(played, "ids")
    assert out["saved"]
    assert len(out["allocated"]) == 5
    assert out["distinct"] == 6


def test_node_save_of_mixed_keys_puts_each_id_on_its_entity(played: dict[str, Any]) -> None:
    out = scenario(played, "mixed")
    stored = {int(i): ident for i, ident in out["stored"].items()}
    assert stored == dict(enumerate(out["assigned"]))
    assert all(out["assigned"][i].isdigit() for i in (0, 2, 4))


def test_node_transaction_commits_and_rolls_back(played: dict[str, Any]) -> None:
    assert scenario(played, "transaction") == {"afterCommit": 70, "afterRollback": 70}


def test_node_second_conflicting_commit_gets_aborted_code_10(played: dict[str, Any]) -> None:
    assert scenario(played, "conflict") == {"code": 10, "final": 1}


def test_node_insert_of_an_existing_entity_gives_code_6(played: dict[str, Any]) -> None:
    out = scenario(played, "errors")
    assert out["insert"] == 6
    assert "already exists" in out["insertMessage"]
    assert out["update"] == 5
    assert out["stored"] == 1


def test_node_named_database_is_isolated(
    node: NodeProcess, node_project: str, played: dict[str, Any]
) -> None:
    assert scenario(played, "database db2") == {"inNamed": "db2", "inDefault": True}
    python_db2 = datastore_client(node.client_addr, node_project, database="db2")
    got = python_db2.get(python_db2.key("Doc", "d"))
    assert got["where"] == "db2"
    assert got.key.database == "db2"


@pytest.mark.parametrize(("database", "namespace"), [("", ""), ("db2", "ns1")])
def test_node_written_entities_read_and_write_back_in_python(
    node: NodeProcess, node_project: str, played: dict[str, Any], database: str, namespace: str
) -> None:
    assert scenario(played, f"write {database} {namespace}") == {"ok": True}
    project = node_project
    client = datastore_client(
        node.client_addr, project, database=database or None, namespace=namespace or None
    )
    key = client.key("Owner", "o1", "Pet", "rex")
    pet = client.get(key)
    assert pet is not None
    assert pet.key.project == project  # the server filled the partition Node left empty
    assert pet.key.database == (database or None)
    assert pet.key.namespace == (namespace or None)
    assert pet["owner"] == client.key("Owner", "o1")  # key values get the partition too
    assert pet["weight"] == 12.0 and isinstance(pet["weight"], float)
    assert pet["at"] == datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    pet["legs"] = 3
    client.put(pet)  # a fetched entity goes back into its own database
    assert client.get(key)["legs"] == 3


def test_python_written_entities_read_in_node(played: dict[str, Any]) -> None:
    assert scenario(played, "read  py FromPy p") == {"found": True, **PY_WRITTEN}


def test_node_query_filters_and_orders(played: dict[str, Any]) -> None:
    assert scenario(played, "query") == {"rows": [2, 4]}


def test_node_gets_large_entities_and_pages_through_a_large_query(played: dict[str, Any]) -> None:
    assert scenario(played, "large") == {
        "got": 5,
        "bytes": 5 * 900_000,
        "rows": 700,
        "sorted": True,
    }
