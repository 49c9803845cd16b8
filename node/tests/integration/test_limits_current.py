"""Production's current limits (Firestore in Datastore mode), each at its boundary: the
value just inside is accepted, the one just outside refused with INVALID_ARGUMENT.

No 500-mutation cap any more (only `--legacy-limits` keeps it); the 10 MiB request and
transaction caps; unindexed values, entities, keys, nesting, composite index entries;
filter values; namespace and database ids; negative ids."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import datastore
from google.cloud.datastore.query import PropertyFilter
from google.cloud.datastore_v1.types import datastore as ds
from google.cloud.datastore_v1.types import entity as entity_pb

from tests.conftest import make_client
from tests.harness import NodeProcess
from tests.integration.support import raw_api

MIB = 1024 * 1024


def text_of(n: int) -> str | bytes:
    return "t" * n


def blob_of(n: int) -> str | bytes:
    return b"b" * n


# Mutations per commit -----------------------------------------------------------------


def test_700_entities_in_one_put_multi_are_accepted(client: Any) -> None:
    entities = [datastore.Entity(client.key("Many", i + 1)) for i in range(700)]
    client.put_multi(entities)
    assert len(client.get_multi([e.key for e in entities])) == 700


@pytest.fixture(scope="module")
def legacy_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("legacy"), extra=["--legacy-limits"])
    proc.start()
    yield proc
    proc.stop()


def test_under_legacy_limits_500_mutations_are_accepted_and_501_are_invalid(
    legacy_node: NodeProcess, project: str
) -> None:
    client: Any = make_client(legacy_node.client_addr, project)
    client.put_multi([datastore.Entity(client.key("Many", i + 1)) for i in range(500)])
    with pytest.raises(exceptions.InvalidArgument, match="at most 500 mutations"):
        client.put_multi([datastore.Entity(client.key("Many", i + 1)) for i in range(501)])


# Request and transaction bytes ----------------------------------------------------------


def sized_commit(project: str, size: int, transaction: bytes = b"") -> Any:
    """A CommitRequest (raw protobuf) of exactly `size` serialized bytes: eleven upserts
    of unindexed blobs (an entity stops at 1 MiB), the last one's blob sized to fit."""
    request = ds.CommitRequest.pb()()
    request.project_id = project
    if transaction:
        request.mode = 1
        request.transaction = transaction
    else:
        request.mode = 2
    blobs = []
    for i in range(11):
        entity = request.mutations.add().upsert
        element = entity.key.path.add()
        element.kind, element.name = "TenMiB", f"e{i}"
        entity.key.partition_id.project_id = project
        value = entity.properties["blob"]
        value.exclude_from_indexes = True
        value.blob_value = b"x" * 1_000_000
        blobs.append(value)
    for _ in range(3):  # length prefixes change size as the blob shrinks: converge
        last = blobs[-1]
        last.blob_value = b"x" * (len(last.blob_value) + size - request.ByteSize())
    assert request.ByteSize() == size
    return request


def send(client: Any, request: Any) -> Any:
    return raw_api(client).commit(request=ds.CommitRequest.wrap(request))


def test_a_commit_of_exactly_10_mib_is_accepted_and_one_byte_more_is_invalid(
    client: Any,
) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="10485760 bytes"):
        send(client, sized_commit(client.project, 10 * MIB + 1))
    assert client.get(client.key("TenMiB", "e0")) is None
    send(client, sized_commit(client.project, 10 * MIB))
    assert len(client.get(client.key("TenMiB", "e9"))["blob"]) == 1_000_000


def test_a_transaction_of_exactly_10_mib_is_accepted_and_one_byte_more_is_invalid(
    client: Any,
) -> None:
    api = raw_api(client)
    txn = api.begin_transaction(request={"project_id": client.project}).transaction
    with pytest.raises(exceptions.InvalidArgument, match="10485760 bytes"):
        send(client, sized_commit(client.project, 10 * MIB + 1, txn))
    txn = api.begin_transaction(request={"project_id": client.project}).transaction
    send(client, sized_commit(client.project, 10 * MIB, txn))
    assert client.get(client.key("TenMiB", "e0")) is not None


# Values, entities, keys, nesting -------------------------------------------------------


def test_an_unindexed_value_of_1048487_bytes_is_accepted_and_one_more_is_invalid(
    client: Any,
) -> None:
    for kind, make in (("blob", blob_of), ("text", text_of)):
        entity = datastore.Entity(client.key("Unindexed", kind), exclude_from_indexes=("v",))
        entity["v"] = make(1_048_488)
        with pytest.raises(exceptions.InvalidArgument, match="1048487-byte limit"):
            client.put(entity)
        entity["v"] = make(1_048_487)
        client.put(entity)
        assert len(client.get(entity.key)["v"]) == 1_048_487


def key_of_size(client: Any, size: int) -> Any:
    """A key whose storage size (namespace, kinds and names as UTF-8 + 1, 8 per id, plus
    16: the storage-size page) is exactly `size`: four 1,500-byte names and a short one."""
    path: list[Any] = []
    for i in range(4):
        path += ["K", f"{i}" + "n" * 1499]  # 2 + 1501 bytes each
    rest = size - 16 - 4 * 1503 - 2 - 1
    path += ["K", "r" * rest]
    return client.key(*path)


def test_a_key_of_6_kib_is_accepted_and_one_byte_more_is_invalid(client: Any) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="6144-byte limit"):
        client.put(datastore.Entity(key_of_size(client, 6145)))
    with pytest.raises(exceptions.InvalidArgument, match="6144-byte limit"):
        client.get(key_of_size(client, 6145))
    client.put(datastore.Entity(key_of_size(client, 6144)))
    assert client.get(key_of_size(client, 6144)) is not None


def nested(client: Any, depth: int) -> Any:
    """An entity whose property holds `depth` entity values, each inside the last."""
    entity = datastore.Entity(client.key("Deep", depth))
    inner: Any = datastore.Entity()
    inner["leaf"] = 1
    for _ in range(depth - 1):
        outer = datastore.Entity()
        outer["next"] = inner
        inner = outer
    entity["next"] = inner
    return entity


def test_entities_nested_20_deep_are_accepted_and_21_are_invalid(client: Any) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="more than 20 levels deep"):
        client.put(nested(client, 21))
    entity = nested(client, 20)
    client.put(entity)
    got = client.get(entity.key)
    for _ in range(19):
        got = got["next"]
    assert got["next"]["leaf"] == 1


# Composite index entries ----------------------------------------------------------------

INDEX_YAML = """
indexes:
- kind: CompositeCount
  properties:
  - name: x
  - name: y
- kind: CompositeBytes
  properties:
  - name: a
  - name: b
"""


@pytest.fixture(scope="module")
def index_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    root = tmp_path_factory.mktemp("indexes")
    path = Path(root) / "index.yaml"
    path.write_text(INDEX_YAML)
    proc = NodeProcess(root, extra=["--index-yaml", str(path)])
    proc.start()
    yield proc
    proc.stop()


def test_20000_composite_entries_are_accepted_and_more_are_invalid(
    index_node: NodeProcess, project: str
) -> None:
    client: Any = make_client(index_node.client_addr, project)
    entity = datastore.Entity(client.key("CompositeCount", "k"))
    entity["y"] = list(range(100))
    entity["x"] = list(range(201))  # 20,100 entries
    with pytest.raises(exceptions.InvalidArgument, match="at most 20000 are allowed"):
        client.put(entity)
    entity["x"] = list(range(200))  # 20,000
    client.put(entity)
    assert client.get(entity.key) is not None


def test_composite_entries_of_2_mib_are_accepted_and_one_byte_more_is_invalid(
    index_node: NodeProcess, project: str
) -> None:
    """Each entry's storage size: the key's (16 + "CompositeBytes" 15 + "k" 2) + 32 +
    its a and b values' (UTF-8 + 1). One b of 1,001 bytes and as many distinct a values
    of ~1,001 bytes as fit, three of them a little longer so that the sum is exact."""
    client: Any = make_client(index_node.client_addr, project)
    fixed = (16 + 15 + 2) + 32 + 1001
    count = 2 * MIB // (fixed + 1001)
    rest = 2 * MIB - count * (fixed + 1001)
    a = [f"{i:05d}" + "a" * 995 for i in range(count)]
    for j in range(3):
        a[j] += "e" * (rest // 3 + (1 if j < rest % 3 else 0))
    assert sum(fixed + len(v) + 1 for v in a) == 2 * MIB
    entity = datastore.Entity(client.key("CompositeBytes", "k"))
    entity["b"] = "b" * 1000
    entity["a"] = [*a[:-1], a[-1] + "!"]  # one byte over
    with pytest.raises(exceptions.InvalidArgument, match="at most 2097152 are allowed"):
        client.put(entity)
    assert client.get(entity.key) is None
    entity["a"] = a
    client.put(entity)
    assert len(client.get(entity.key)["a"]) == count


# Filter values ----------------------------------------------------------------------------


def test_a_filter_value_over_1500_bytes_is_invalid_not_an_empty_result(client: Any) -> None:
    for make in (text_of, blob_of):
        q = client.query(kind="Idx")
        q.add_filter(filter=PropertyFilter("v", "=", make(1500)))
        assert list(q.fetch()) == []
        q = client.query(kind="Idx")
        q.add_filter(filter=PropertyFilter("v", ">", make(1501)))
        with pytest.raises(exceptions.InvalidArgument, match="1500-byte limit"):
            list(q.fetch())
        q = client.query(kind="Idx")
        q.add_filter(filter=PropertyFilter("v", "IN", ["ok", make(1501)]))
        with pytest.raises(exceptions.InvalidArgument, match="1500-byte limit"):
            list(q.fetch())


# Namespaces and database ids --------------------------------------------------------------


@pytest.mark.parametrize("namespace", ["ns!", "with space", "é", "__reserved__", "n" * 101])
def test_a_namespace_outside_the_allowed_characters_is_invalid(client: Any, namespace: str) -> None:
    key = client.key("Kind", 1, namespace=namespace)
    with pytest.raises(exceptions.InvalidArgument, match="namespace"):
        client.put(datastore.Entity(key))
    with pytest.raises(exceptions.InvalidArgument, match="namespace"):
        client.get(key)
    with pytest.raises(exceptions.InvalidArgument, match="namespace"):
        list(client.query(kind="Kind", namespace=namespace).fetch())


def test_a_namespace_of_the_allowed_characters_is_accepted(client: Any) -> None:
    namespace = "Ab-9_x." + "n" * 93  # 100 characters
    key = client.key("Kind", 1, namespace=namespace)
    client.put(datastore.Entity(key))
    assert client.get(key) is not None
    assert len(list(client.query(kind="Kind", namespace=namespace).fetch())) == 1


@pytest.mark.parametrize("database", ["db!", "__db__", "d" * 101, "two words"])
def test_a_database_id_outside_the_allowed_characters_is_invalid(
    node: NodeProcess, project: str, database: str
) -> None:
    client: Any = make_client(node.client_addr, project, database=database)
    with pytest.raises(exceptions.InvalidArgument, match="database_id"):
        client.get(client.key("Kind", 1))


def test_a_database_id_of_the_allowed_characters_is_accepted(
    node: NodeProcess, project: str
) -> None:
    client: Any = make_client(node.client_addr, project, database="my-db_1." + "d" * 92)
    client.put(datastore.Entity(client.key("Kind", 1)))
    assert client.get(client.key("Kind", 1)) is not None


# Ids ------------------------------------------------------------------------------------


def test_negative_ids_are_accepted_read_back_and_ordered_before_positive_ones(
    client: Any,
) -> None:
    api = raw_api(client)
    entities = []
    for ident in (-(1 << 63), -5, -1, 1, 7):
        key = entity_pb.Key.pb()()
        key.partition_id.project_id = client.project
        element = key.path.add()
        element.kind, element.id = "Neg", ident
        entity = entity_pb.Entity.pb()()
        entity.key.CopyFrom(key)
        entity.properties["n"].integer_value = ident
        entity.properties["ref"].key_value.CopyFrom(key)
        entities.append(entity)
    api.commit(
        request={
            "project_id": client.project,
            "mode": 2,
            "mutations": [{"upsert": entity_pb.Entity.wrap(e)} for e in entities],
        }
    )
    got = client.get(client.key("Neg", -5))
    assert got["n"] == -5 and got["ref"] == client.key("Neg", -5)
    ordered = [e.key.id for e in client.query(kind="Neg", order=["__key__"]).fetch()]
    assert ordered == [-(1 << 63), -5, -1, 1, 7]
    q = client.query(kind="Neg")
    q.add_filter(filter=PropertyFilter("ref", "<", client.key("Neg", 1)))
    assert sorted(e.key.id for e in q.fetch()) == [-(1 << 63), -5, -1]
    q = client.query(kind="Neg")
    q.add_filter(filter=PropertyFilter("__key__", "<=", client.key("Neg", -1)))
    assert [e.key.id for e in q.fetch()] == [-(1 << 63), -5, -1]
