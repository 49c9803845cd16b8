"""Fuzzing a running node: random bytes, random messages built from the Datastore
descriptors, deep nesting, and random admin HTTP requests, for a bounded time. Every
answer must be a clean gRPC status or HTTP response (no INTERNAL/UNKNOWN, no 5xx, no
hang), and afterwards the data written before is intact and new writes work."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.cloud.datastore_v1.types import datastore as ds
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import NodeProcess

pytestmark = pytest.mark.integration

SERVICE = "google.datastore.v1.Datastore"
METHODS = {
    "Lookup": ds.LookupRequest,
    "RunQuery": ds.RunQueryRequest,
    "RunAggregationQuery": ds.RunAggregationQueryRequest,
    "BeginTransaction": ds.BeginTransactionRequest,
    "Commit": ds.CommitRequest,
    "Rollback": ds.RollbackRequest,
    "AllocateIds": ds.AllocateIdsRequest,
    "ReserveIds": ds.ReserveIdsRequest,
}
PROJECT = "fuzz"
# A hang would show as DEADLINE_EXCEEDED; INTERNAL and UNKNOWN are crashes in handlers.
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
BUDGET_S = 5.0  # per strategy below; ~20 s in all
EXAMPLES = 1000  # per strategy; the time budget usually ends it first


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("fuzz"))
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def channel(node: NodeProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(node.client_addr) as ch:
        yield ch


def call(channel: grpc.Channel, method: str, payload: bytes) -> grpc.StatusCode:
    stub = channel.unary_unary(
        f"/{SERVICE}/{method}", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    try:
        stub(payload, timeout=10)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        details = exc.details()
    else:
        return grpc.StatusCode.OK
    assert code not in BAD, (method, code, details)
    return code


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return st.one_of(
            st.sampled_from(["", PROJECT, "K", "__key__", "a.b", "x" * 1600]), st.text(max_size=8)
        )
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=24)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if t == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values] + [99])
    if t in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return st.integers(-(2**31), 2**31 - 1)
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    return st.integers(-(2**63), 2**63 - 1)


def fill(draw: Any, message: Any, depth: int) -> None:
    """Set a random subset of `message`'s fields, recursing into messages up to `depth`."""
    for field in message.DESCRIPTOR.fields:
        if not draw(st.integers(0, 3)):  # about three in four fields stay unset
            continue
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth <= 0:
                continue
            if field.message_type.GetOptions().map_entry:
                target = getattr(message, field.name)
                for _ in range(draw(st.integers(0, 2))):
                    key = draw(st.sampled_from(["a", "b", "", "__x__"]))
                    value_field = field.message_type.fields_by_name["value"]
                    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                        fill(draw, target[key], depth - 1)
                    else:
                        target[key] = draw(_scalar(value_field))
                continue
            if repeated:
                for _ in range(draw(st.integers(0, 2))):
                    fill(draw, getattr(message, field.name).add(), depth - 1)
            else:
                child = getattr(message, field.name)
                child.SetInParent()
                fill(draw, child, depth - 1)
        elif repeated:
            getattr(message, field.name).extend(draw(st.lists(_scalar(field), max_size=3)))
        else:
            setattr(message, field.name, draw(_scalar(field)))


@st.composite
def requests(draw: Any) -> tuple[str, bytes]:
    method = draw(st.sampled_from(sorted(METHODS)))
    message = METHODS[method].pb()()
    fill(draw, message, depth=6)
    if draw(st.booleans()):
        message.project_id = PROJECT
    return method, message.SerializeToString()


def nested_entity(depth: int) -> Any:
    from google.cloud.datastore_v1.types import entity as entity_pb

    value = entity_pb.Value.pb()(integer_value=1)
    for _ in range(depth):
        outer = entity_pb.Value.pb()()
        outer.entity_value.properties["p"].CopyFrom(value)
        value = outer
    return value


def test_a_node_survives_random_bytes_messages_and_deep_nesting(
    node: NodeProcess, channel: grpc.Channel
) -> None:
    import os

    from google.cloud import datastore

    os.environ["DATASTORE_EMULATOR_HOST"] = node.client_addr
    client = datastore.Client(project=PROJECT)
    before = []
    for i in range(20):
        entity = datastore.Entity(client.key("Kept", i + 1))
        entity["i"] = i
        before.append(entity)
    client.put_multi(before)

    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(method=st.sampled_from(sorted(METHODS)), payload=st.binary(max_size=200))
    def random_bytes(method: str, payload: bytes) -> None:
        if time.monotonic() - started < BUDGET_S:
            call(channel, method, payload)

    random_bytes()

    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(requests())
    def random_messages(request: tuple[str, bytes]) -> None:
        if time.monotonic() - started < BUDGET_S:
            call(channel, *request)

    random_messages()

    # Deep nesting: over Datastore's 20 levels of entity values, over protobuf's parser limit.
    for depth in (21, 150):
        commit = ds.CommitRequest.pb()(project_id=PROJECT, mode=2)
        mutation = commit.mutations.add()
        mutation.upsert.key.path.add(kind="Deep", name="d")
        mutation.upsert.properties["p"].CopyFrom(nested_entity(depth))
        assert (
            call(channel, "Commit", commit.SerializeToString()) == grpc.StatusCode.INVALID_ARGUMENT
        )
    commit = ds.CommitRequest.pb()(project_id=PROJECT, mode=2)
    mutation = commit.mutations.add()
    mutation.upsert.key.path.add(kind="Deep", name="ok")
    mutation.upsert.properties["p"].CopyFrom(nested_entity(20))
    assert call(channel, "Commit", commit.SerializeToString()) == grpc.StatusCode.OK
    query = ds.RunQueryRequest.pb()(project_id=PROJECT)
    f = query.query.filter
    for _ in range(90):  # composite filters nested 90 deep, one property filter inside
        f.composite_filter.op = 1
        f = f.composite_filter.filters.add()
    f.property_filter.property.name = "i"
    f.property_filter.op = 5
    f.property_filter.value.integer_value = 1
    assert call(channel, "RunQuery", query.SerializeToString()) in (
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    wide = ds.RunQueryRequest.pb()(project_id=PROJECT)
    wide.query.filter.property_filter.property.name = "i"
    wide.query.filter.property_filter.op = 6  # IN
    for i in range(5000):
        wide.query.filter.property_filter.value.array_value.values.add(integer_value=i)
    assert call(channel, "RunQuery", wide.SerializeToString()) == grpc.StatusCode.INVALID_ARGUMENT

    http_fuzz(node)

    assert node.alive()
    got = client.get_multi([e.key for e in before])
    assert sorted(e["i"] for e in got) == list(range(20))
    fresh = datastore.Entity(client.key("Kept", "after"))
    fresh["ok"] = True
    client.put(fresh)
    assert client.get(fresh.key)["ok"] is True


def http_fuzz(node: NodeProcess) -> None:
    started = time.monotonic()
    paths = [
        "/admin/status", "/admin/members", "/admin/members/x/promote", "/admin/members/x",
        "/admin/leader", "/admin/snapshot", "/healthz", "/readyz", "/metrics", "/admin/",
    ]  # fmt: skip
    bodies = st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"[]", b"null", b"{}", b'{"target": 1}', b'{"id": []}', b'"x"']),
    )

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(
        method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
        path=st.one_of(st.sampled_from(paths), st.text("/abcdmin%.", max_size=20)),
        body=bodies,
    )
    def requests_(method: str, path: str, body: bytes) -> None:
        if time.monotonic() - started >= BUDGET_S:
            return
        url = f"http://{node.admin_addr}/{path.lstrip('/')}"
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                status = r.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, ValueError):
            return  # a URL urllib itself refuses to send
        assert status < 500 or (status == 504 and "/admin/" in path), (method, path, status)

    requests_()
