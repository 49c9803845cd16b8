"""The Admin API on the client port (api/admin_api.py), through the official clients:
google.cloud.datastore_admin_v1.DatastoreAdminClient and api_core's operations_v1 on an
insecure channel to the node. Export to a folder and to S3 (versitygw), import into a
fresh node, progress and result in the operation, a damaged file failing the operation
with its name and offset, cancel, the operations' own methods, the index methods, bad
input. Behind zonestore-edge (the default here) and behind grpc.aio (--edge off)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions, operations_v1
from google.cloud import datastore, datastore_admin_v1
from google.cloud.datastore.query import PropertyFilter
from google.cloud.datastore_admin_v1.services.datastore_admin.transports import (
    DatastoreAdminGrpcTransport,
)
from google.cloud.datastore_admin_v1.types import datastore_admin as da
from google.cloud.datastore_admin_v1.types import index as ix

from tests.export.conftest import client_for
from tests.export.test_commands import KINDS, count_rows, offsets_of, seed
from tests.export.values import assert_same, read_all
from tests.harness import Cluster, NodeProcess
from tests.objstore_server import S3Server
from tests.security.support import make_secrets, official_client
from zonestore_node.api import admin_api, handoff
from zonestore_node.export import records

State = da.CommonMetadata.State
OP_TIMEOUT = 300  # generous: the machine is shared


@pytest.fixture
def admin(node: NodeProcess) -> Iterator[datastore_admin_v1.DatastoreAdminClient]:
    channel = grpc.insecure_channel(node.client_addr)
    yield datastore_admin_v1.DatastoreAdminClient(
        transport=DatastoreAdminGrpcTransport(channel=channel)
    )
    channel.close()


def admin_for(node: NodeProcess) -> datastore_admin_v1.DatastoreAdminClient:
    return datastore_admin_v1.DatastoreAdminClient(
        client_options={"api_endpoint": node.client_addr},
        transport=DatastoreAdminGrpcTransport(channel=grpc.insecure_channel(node.client_addr)),
    )


def operations_for(node: NodeProcess) -> operations_v1.OperationsClient:
    return operations_v1.OperationsClient(grpc.insecure_channel(node.client_addr))


def export(
    admin: datastore_admin_v1.DatastoreAdminClient, project: str, prefix: str, **extra: Any
) -> tuple[Any, str]:
    op = admin.export_entities(
        request={"project_id": project, "output_url_prefix": prefix, **extra}
    )
    response = op.result(timeout=OP_TIMEOUT)
    return op, response.output_url


def test_export_to_a_folder_then_import_into_a_fresh_node_reads_equal_with_progress(
    node: NodeProcess, project: str, admin: Any, tmp_path: Path
) -> None:
    written = seed(node, project)
    op, url = export(admin, project, (tmp_path / "out").as_uri())
    assert url.startswith((tmp_path / "out").as_uri()) and url.endswith(".overall_export_metadata")
    assert Path(url.removeprefix("file://")).is_file()
    md = op.metadata
    assert isinstance(md, da.ExportEntitiesMetadata)
    assert md.common.state == State.SUCCESSFUL
    assert md.common.operation_type == da.OperationType.EXPORT_ENTITIES
    assert md.common.end_time >= md.common.start_time
    assert md.progress_entities.work_completed == len(written)
    assert md.progress_bytes.work_completed > 600_000  # the big blob and text are in it
    assert md.output_url_prefix == (tmp_path / "out").as_uri()

    fresh = NodeProcess(tmp_path / "fresh")
    fresh.start()
    try:
        imp = admin_for(fresh).import_entities(request={"project_id": project, "input_url": url})
        imp.result(timeout=OP_TIMEOUT)
        assert imp.metadata.common.state == State.SUCCESSFUL
        assert imp.metadata.progress_entities.work_completed == len(written)
        assert imp.metadata.input_url == url
        got = read_all(client_for(fresh, project), [None, "ns1"], KINDS)
        assert_same(got, written)
    finally:
        fresh.stop()


def test_export_to_s3_and_import_back_through_the_api_with_filters(
    node: NodeProcess, project: str, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    fresh = NodeProcess(tmp_path / "s3node", env=s3_server.env())  # AWS_* for the node
    fresh.start()
    try:
        written = seed(fresh, project)
        admin = admin_for(fresh)
        op, url = export(
            admin, project, s3_server.url(s3_bucket, "exports/nightly"),
            entity_filter={"kinds": ["Thing"], "namespace_ids": ["ns1"]},
        )  # fmt: skip
        assert url.startswith(f"s3://{s3_bucket}/exports/nightly/")
        keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]]
        assert any(k.endswith("namespace_ns1/kind_Thing/output-0") for k in keys), keys
        assert list(op.metadata.entity_filter.kinds) == ["Thing"]
        target = project + "-s3"
        imp = admin.import_entities(request={"project_id": target, "input_url": url})
        imp.result(timeout=OP_TIMEOUT)
        got = read_all(client_for(fresh, target), [None, "ns1"], KINDS)
        expected = [e for e in written if e.key.namespace == "ns1" and e.key.kind == "Thing"]
        assert len(got) == len(expected) == 2
        assert sorted(e.key.flat_path for e in got) == sorted(e.key.flat_path for e in expected)
    finally:
        fresh.stop()


def rows(node: NodeProcess, project: str, count: int) -> None:
    client = client_for(node, project)
    batch = []
    for i in range(count):
        entity = datastore.Entity(client.key("Row", i + 1), exclude_from_indexes=("pad",))
        entity.update({"i": i, "pad": "x" * 300})
        batch.append(entity)
        if len(batch) == 400:
            client.put_multi(batch)
            batch = []
    if batch:
        client.put_multi(batch)


def test_an_import_of_a_corrupted_file_ends_the_operation_with_the_file_and_offset(
    node: NodeProcess, project: str, admin: Any, tmp_path: Path
) -> None:
    rows(node, project, 2000)
    _, url = export(admin, project, (tmp_path / "out").as_uri(), entity_filter={"kinds": ["Row"]})
    output = Path(url.removeprefix("file://")).parent / "all_namespaces/kind_Row/output-0"
    offsets = offsets_of(output)
    bad = 1234
    data = bytearray(output.read_bytes())
    data[offsets[bad] + records.HEADER_SIZE + 5] ^= 0x40
    output.write_bytes(bytes(data))

    target = project + "-bad"
    op = admin.import_entities(request={"project_id": target, "input_url": url})
    with pytest.raises(exceptions.GoogleAPICallError) as failed:
        op.result(timeout=OP_TIMEOUT)
    error = op.operation.error
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert str(output) in error.message and f"offset {offsets[bad]}" in error.message
    assert "checksum" in error.message and str(output) in str(failed.value)
    assert op.metadata.common.state == State.FAILED
    assert op.metadata.progress_entities.work_completed == bad
    assert count_rows(node, target) == bad  # everything before the damage, nothing after


def test_a_cancelled_export_ends_cancelled_and_leaves_no_overall_metadata(
    node: NodeProcess, project: str, admin: Any, tmp_path: Path
) -> None:
    rows(node, project, 30_000)
    out = tmp_path / "out"
    op = admin.export_entities(request={"project_id": project, "output_url_prefix": out.as_uri()})
    operations = operations_for(node)
    deadline = time.monotonic() + OP_TIMEOUT
    while True:  # cancel once it is under way
        seen = operations.get_operation(op.operation.name)
        md = da.ExportEntitiesMetadata.deserialize(seen.metadata.value)
        assert not seen.done, "the export finished before it could be cancelled"
        if md.progress_entities.work_completed > 0:
            break
        assert time.monotonic() < deadline
        time.sleep(0.01)
    operations.cancel_operation(op.operation.name)
    with pytest.raises(exceptions.GoogleAPICallError):
        op.result(timeout=OP_TIMEOUT)
    assert op.operation.error.code == grpc.StatusCode.CANCELLED.value[0]
    assert op.metadata.common.state == State.CANCELLED
    assert 0 < op.metadata.progress_entities.work_completed < 30_000
    assert not list(out.rglob("*.overall_export_metadata"))  # visibly incomplete


def test_operations_are_listed_got_and_deleted_and_unknown_names_are_not_found(
    node: NodeProcess, project: str, admin: Any, tmp_path: Path
) -> None:
    seed(node, project)
    op, _ = export(admin, project, (tmp_path / "out").as_uri())
    name = op.operation.name
    assert name.startswith(f"projects/{project}/operations/")
    operations = operations_for(node)
    listed = list(operations.list_operations(f"projects/{project}", ""))
    assert [o.name for o in listed] == [name] and listed[0].done
    assert list(operations.list_operations(f"projects/{project}-other", "")) == []
    got = operations.get_operation(name)
    assert got.done and got.response.type_url.endswith("ExportEntitiesResponse")
    operations.cancel_operation(name)  # a finished operation: nothing happens
    assert operations.get_operation(name).response == got.response
    operations.delete_operation(name)
    with pytest.raises(exceptions.NotFound):
        operations.get_operation(name)
    with pytest.raises(exceptions.NotFound, match="no operation"):
        operations.get_operation(f"projects/{project}/operations/nope")
    with pytest.raises(exceptions.NotFound):
        operations.cancel_operation(f"projects/{project}/operations/nope")
    with pytest.raises(exceptions.InvalidArgument):
        operations.get_operation("nonsense")


@pytest.mark.parametrize(
    "prefix",
    ["", "gs://my-bucket/exports", "exports/relative", "http://example.invalid/x", "s3://"],
)
def test_a_bad_output_url_prefix_is_invalid_argument(admin: Any, project: str, prefix: str) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="output_url_prefix"):
        admin.export_entities(request={"project_id": project, "output_url_prefix": prefix})


def test_a_bad_input_url_is_invalid_argument_and_a_missing_file_fails_the_operation(
    admin: Any, project: str, tmp_path: Path
) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="input_url"):
        admin.import_entities(request={"project_id": project, "input_url": ""})
    with pytest.raises(exceptions.InvalidArgument, match="input_url"):
        admin.import_entities(request={"project_id": project, "input_url": "gs://b/x"})
    missing = (tmp_path / "x.overall_export_metadata").as_uri()
    op = admin.import_entities(request={"project_id": project, "input_url": missing})
    with pytest.raises(exceptions.GoogleAPICallError, match="no such file"):
        op.result(timeout=OP_TIMEOUT)


def index_of(project: str, kind: str) -> dict[str, Any]:
    return {
        "project_id": project,
        "kind": kind,
        "ancestor": ix.Index.AncestorMode.NONE,
        "properties": [
            {"name": "done", "direction": ix.Index.Direction.ASCENDING},
            {"name": "priority", "direction": ix.Index.Direction.DESCENDING},
        ],
    }


def check_index_methods(
    node: NodeProcess, project: str, refuses_missing_indexes: bool = False
) -> None:
    admin = admin_for(node)
    kind = f"Task{project.replace('-', '')}"
    client = client_for(node, project)
    for i in range(5):
        task = datastore.Entity(client.key(kind, i + 1))
        task.update({"done": i % 2 == 0, "priority": i})
        client.put(task)
    op = admin.create_index(request={"project_id": project, "index": index_of(project, kind)})
    created = op.result(timeout=OP_TIMEOUT)
    assert created.state == ix.Index.State.READY and created.kind == kind
    assert op.metadata.common.operation_type == da.OperationType.CREATE_INDEX
    assert op.metadata.index_id == created.index_id
    listed = admin.list_indexes(request={"project_id": project})
    assert created.index_id in [i.index_id for i in listed]
    got = admin.get_index(request={"project_id": project, "index_id": created.index_id})
    assert got.kind == kind and [p.name for p in got.properties] == ["done", "priority"]
    assert got.properties[1].direction == ix.Index.Direction.DESCENDING
    query = client.query(kind=kind, order=["-priority"])
    query.add_filter(filter=PropertyFilter("done", "=", True))
    assert [e["priority"] for e in query.fetch()] == [4, 2, 0]  # served by the index
    if refuses_missing_indexes:  # --auto-index false: the index CreateIndex made serves it
        other = client.query(kind=kind, order=["-done"])
        other.add_filter(filter=PropertyFilter("priority", ">", 1))
        with pytest.raises(exceptions.FailedPrecondition, match="no matching index"):
            list(other.fetch())

    with pytest.raises(exceptions.AlreadyExists):
        admin.create_index(request={"project_id": project, "index": index_of(project, kind)})
    with pytest.raises(exceptions.NotFound):
        admin.get_index(request={"project_id": project, "index_id": "999999"})
    with pytest.raises(exceptions.InvalidArgument):
        admin.create_index(request={"project_id": project, "index": {"kind": kind}})
    with pytest.raises(exceptions.NotFound):
        admin.delete_index(request={"project_id": project, "index_id": "999999"})

    deleting = admin.delete_index(request={"project_id": project, "index_id": created.index_id})
    gone = deleting.result(timeout=OP_TIMEOUT)
    assert gone.index_id == created.index_id and gone.state == ix.Index.State.DELETING
    assert deleting.metadata.common.operation_type == da.OperationType.DELETE_INDEX
    assert deleting.metadata.common.state == State.SUCCESSFUL
    with pytest.raises(exceptions.NotFound):
        admin.get_index(request={"project_id": project, "index_id": created.index_id})
    listed = admin.list_indexes(request={"project_id": project})
    assert created.index_id not in [i.index_id for i in listed]
    if refuses_missing_indexes:  # the planner no longer has it
        with pytest.raises(exceptions.FailedPrecondition, match="no matching index"):
            list(query.fetch())
    again = admin.create_index(request={"project_id": project, "index": index_of(project, kind)})
    recreated = again.result(timeout=OP_TIMEOUT)
    assert int(recreated.index_id) > int(created.index_id)  # ids are never reused
    assert [e["priority"] for e in query.fetch()] == [4, 2, 0]


def test_index_methods_list_get_and_create_composite_indexes(
    node: NodeProcess, project: str
) -> None:
    check_index_methods(node, project)


def test_the_grpc_aio_server_serves_the_admin_api_too(tmp_path: Path, project: str) -> None:
    plain = NodeProcess(tmp_path / "plain", edge="off", extra=["--auto-index", "false"])
    plain.start()
    try:
        check_index_methods(plain, project, refuses_missing_indexes=True)
        seed(plain, project)
        op, url = export(admin_for(plain), project, (tmp_path / "out").as_uri())
        assert op.metadata.common.state == State.SUCCESSFUL and url.endswith("metadata")
        with pytest.raises(exceptions.NotFound):
            operations_for(plain).get_operation(f"projects/{project}/operations/nope")
    finally:
        plain.stop()


def test_the_nodes_wire_order_is_the_edges_method_list() -> None:
    """handoff.py's table and node/edge/node.go's `methods` number methods alike."""
    source = (Path(__file__).parents[2] / "edge" / "node.go").read_text()
    block = re.search(r"var methods = \[\]string\{(.*?)\n\}", source, re.S)
    assert block is not None
    go = re.findall(r'"([^"]+)"', block.group(1))
    api = admin_api.DatastoreAdminApi(None, None, "")  # type: ignore[arg-type]
    python = [name for name, _, _ in handoff.METHODS] + [
        ("Operations/" if service == admin_api.OPERATIONS else "DatastoreAdmin/") + method
        for service, method, *_ in api.methods()
    ]
    assert go == python and len(go) == 18


def test_a_secured_node_checks_the_callers_token_for_operations_and_the_work(
    tmp_path: Path,
) -> None:
    """Client TLS and --auth-tokens: the export runs with the caller's token (through the
    node's own TLS client port), a read-only token cannot import, no token is refused."""
    secrets = make_secrets(tmp_path / "secrets")
    guarded = NodeProcess(tmp_path / "node", extra=secrets.flags(client_tls=True, auth=True))
    guarded.start()

    def admin_with(token: str | None) -> Any:
        credentials = grpc.ssl_channel_credentials(root_certificates=secrets.ca.cert_pem)
        if token is not None:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(token)
            )
        channel = grpc.secure_channel(guarded.client_addr, credentials)
        return datastore_admin_v1.DatastoreAdminClient(
            transport=DatastoreAdminGrpcTransport(channel=channel)
        )

    try:
        writer = official_client(secrets, guarded, "p", "tok-writer")
        entity = datastore.Entity(writer.key("K", "one"))
        entity["v"] = 1
        writer.put(entity)
        out = (tmp_path / "out").as_uri()
        with pytest.raises(exceptions.Unauthenticated):
            admin_with(None).export_entities(request={"project_id": "p", "output_url_prefix": out})
        reader = admin_with("tok-reader")
        op, url = export(reader, "p", out)  # reading is enough to export
        assert op.metadata.progress_entities.work_completed == 1
        with pytest.raises(exceptions.PermissionDenied, match="read-only"):
            reader.import_entities(request={"project_id": "p2", "input_url": url})
        admin_with("tok-writer").import_entities(
            request={"project_id": "p2", "input_url": url}
        ).result(timeout=OP_TIMEOUT)
        copy = official_client(secrets, guarded, "p2", "tok-reader")
        assert copy.get(copy.key("K", "one"))["v"] == 1
    finally:
        guarded.stop()


def test_in_a_group_operations_live_on_the_replica_that_started_them(tmp_path: Path) -> None:
    """Export through a follower: its GetOperation knows the operation, another replica's
    does not; CreateIndex and DeleteIndex through a follower go to the leader and reach
    every replica."""
    cluster = Cluster(tmp_path / "cluster")
    cluster.start()
    try:
        leader = cluster.leader()
        follower, other = [n for n in cluster.nodes if n is not leader]
        written = seed(leader, "grp")
        op, url = export(admin_for(follower), "grp", (tmp_path / "out").as_uri())
        assert op.metadata.progress_entities.work_completed == len(written)
        name = op.operation.name
        assert operations_for(follower).get_operation(name).done
        with pytest.raises(exceptions.NotFound):
            operations_for(other).get_operation(name)
        admin_for(other).import_entities(request={"project_id": "grp2", "input_url": url}).result(
            timeout=OP_TIMEOUT
        )
        assert_same(read_all(client_for(leader, "grp2"), [None, "ns1"], KINDS), written)

        created = (
            admin_for(follower)
            .create_index(request={"project_id": "grp", "index": index_of("grp", "Grouped")})
            .result(timeout=OP_TIMEOUT)
        )
        deadline = time.monotonic() + 60
        for node in cluster.nodes:  # applied through the log everywhere
            while True:
                listed = admin_for(node).list_indexes(request={"project_id": "grp"})
                if created.index_id in [i.index_id for i in listed]:
                    break
                assert time.monotonic() < deadline, node.node_id
                time.sleep(0.1)
        admin_for(follower).delete_index(
            request={"project_id": "grp", "index_id": created.index_id}
        ).result(timeout=OP_TIMEOUT)
        for node in cluster.nodes:  # and dropped everywhere
            while True:
                listed = admin_for(node).list_indexes(request={"project_id": "grp"})
                if created.index_id not in [i.index_id for i in listed]:
                    break
                assert time.monotonic() < deadline, node.node_id
                time.sleep(0.1)
    finally:
        cluster.stop()
