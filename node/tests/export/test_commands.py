"""`zonestore export` and `zonestore import` against a real node, through the CLI:
round trips of every value type, filters, one read time, idempotent reruns, damaged
input that stops with the file and offset named, and an S3-compatible destination."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from google.cloud import datastore

from tests.export.conftest import client_for, zonestore
from tests.export.values import assert_same, every_value_type, read_all
from tests.harness import Cluster, NodeProcess
from tests.objstore_server import S3Server
from tests.security.support import make_secrets, official_client
from zonestore_node.backup import objstore
from zonestore_node.export import entities, records, transfer

KINDS = ["Thing", "Child", "Root", "Other", "Parent"]


def seed(node: NodeProcess, project: str) -> list[datastore.Entity]:
    client = client_for(node, project)
    written = every_value_type(client) + every_value_type(client, namespace="ns1")
    client.put_multi(written)
    return written


def export_to(node: NodeProcess, project: str, to: str, *extra: str, env: Any = None) -> str:
    ran = zonestore(
        "export", "--admin", node.admin_addr, "--to", to, "--project", project, *extra, env=env
    )
    assert ran.code == 0, ran.err
    assert "entities/s" in ran.err  # progress on the console
    return ran.out.strip().splitlines()[-1]


def test_export_then_import_into_another_project_keeps_every_value_and_flag(
    node: NodeProcess, project: str, tmp_path: Path
) -> None:
    written = seed(node, project)
    overall = export_to(node, project, str(tmp_path / "out"))
    assert overall.startswith(str(tmp_path / "out")) and overall.endswith(
        ".overall_export_metadata"
    )
    folder = Path(overall).parent
    assert (folder / "all_namespaces/all_kinds/output-0").is_file()
    assert (folder / "all_namespaces/all_kinds/all_namespaces_all_kinds.export_metadata").is_file()

    target = project + "-copy"
    ran = zonestore("import", "--admin", node.admin_addr, "--from", overall, "--project", target)
    assert ran.code == 0, ran.err
    assert f"imported {len(written)} entities" in ran.err
    copy = client_for(node, target)
    got = read_all(copy, [None, "ns1"], KINDS)
    assert_same(got, written)


def test_import_defaults_to_the_exports_project_and_a_rerun_upserts_the_same(
    node: NodeProcess, project: str, tmp_path: Path
) -> None:
    written = seed(node, project)
    overall = export_to(node, project, str(tmp_path / "out"))
    client = client_for(node, project)
    client.delete_multi([e.key for e in written])
    for source in (overall, str(Path(overall).parent)):  # the file, or its folder
        ran = zonestore("import", "--admin", node.admin_addr, "--from", source)
        assert ran.code == 0, ran.err
        assert f"into project {project}" in ran.err
    got = read_all(client, [None, "ns1"], KINDS)
    assert len(got) == len(written)
    assert_same(got, written)


def test_filters_write_a_folder_per_kind_and_namespace_and_import_filters_too(
    node: NodeProcess, project: str, tmp_path: Path
) -> None:
    seed(node, project)
    overall = export_to(
        node,
        project,
        str(tmp_path / "out"),
        "--kinds",
        "Thing,Root",
        "--namespaces",
        "(default),ns1",
    )
    folder = Path(overall).parent
    metadata = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.export_metadata"))
    assert metadata == [
        "default_namespace/kind_Root/default_namespace_kind_Root.export_metadata",
        "default_namespace/kind_Thing/default_namespace_kind_Thing.export_metadata",
        "namespace_ns1/kind_Root/namespace_ns1_kind_Root.export_metadata",
        "namespace_ns1/kind_Thing/namespace_ns1_kind_Thing.export_metadata",
    ]
    target = project + "-f"
    ran = zonestore(
        "import", "--admin", node.admin_addr, "--from", overall, "--project", target,
        "--kinds", "Thing", "--namespaces", "ns1",
    )  # fmt: skip
    assert ran.code == 0, ran.err
    copy = client_for(node, target)
    got = read_all(copy, [None, "ns1"], KINDS)
    assert sorted((e.key.namespace, e.key.flat_path) for e in got) == [
        ("ns1", ("Parent", "p", "Thing", 7)),
        ("ns1", ("Thing", "named")),
    ]


def test_an_export_shows_the_data_at_one_read_time(
    node: NodeProcess, project: str, tmp_path: Path
) -> None:
    """Writes that land while the export runs (after its first query) are not in it."""
    written = seed(node, project)
    client = client_for(node, project)
    real = transfer.Node(node.client_addr)
    calls = 0

    class WritingMeanwhile:
        address = real.address

        def run_query(self, request: Any) -> Any:
            nonlocal calls
            calls += 1
            answer = real.run_query(request)
            if calls == 1:  # the namespace query fixed the read time; now change things
                late = datastore.Entity(client.key("Thing", "late"))
                late["i"] = -1
                changed = datastore.Entity(client.key("Thing", "named"))
                changed["i"] = 1000
                client.put_multi([late, changed])
                client.delete(client.key("Root", 123456789012))
            return answer

    store = objstore.open_store((tmp_path / "out").as_uri())
    try:
        result = transfer.export_entities(
            WritingMeanwhile(),  # type: ignore[arg-type]
            store,
            project,
            progress=transfer.Progress("t", io.StringIO()),
        )
    finally:
        real.close()
    assert result.entities == len(written)
    got = {}
    for key in [k.key for k in store.list() if k.key.endswith("output-0")]:
        for _, record in records.read_records(io.BytesIO(store.get_bytes(key))):
            entity = entities.decode(record, entities.Target(project))
            got[
                (
                    entity.key.partition_id.namespace_id,
                    tuple(e.kind for e in entity.key.path),
                    entity.key.path[-1].name,
                )
            ] = entity
    assert (("", ("Thing",), "named")) in got
    assert got[("", ("Thing",), "named")].properties["i"].integer_value == 0  # not 1000
    assert ("", ("Thing",), "late") not in got
    assert ("", ("Root",), "") in got  # deleted after the read time, still exported


def damaged_export(node: NodeProcess, project: str, tmp_path: Path, count: int) -> Path:
    client = client_for(node, project)
    batch = []
    for i in range(count):
        entity = datastore.Entity(client.key("Row", i + 1), exclude_from_indexes=("pad",))
        entity.update({"i": i, "pad": "x" * 300})
        batch.append(entity)
        if len(batch) == 400:
            client.put_multi(batch)
            batch = []
    client.put_multi(batch)
    overall = export_to(node, project, str(tmp_path / "out"), "--kinds", "Row")
    return Path(overall)


def offsets_of(path: Path) -> list[int]:
    with path.open("rb") as f:
        return [offset for offset, _ in records.read_records(f)]


def count_rows(node: NodeProcess, project: str) -> int:
    client = client_for(node, project)
    query = client.query(kind="Row")
    query.keys_only()
    return len(list(query.fetch()))


def test_a_corrupted_record_stops_the_import_naming_file_and_offset_keeping_what_came_before(
    node: NodeProcess, project: str, tmp_path: Path
) -> None:
    overall = damaged_export(node, project, tmp_path, 3000)
    output = overall.parent / "all_namespaces/kind_Row/output-0"
    offsets = offsets_of(output)
    assert len(offsets) == 3000
    bad = 1717
    data = bytearray(output.read_bytes())
    data[offsets[bad] + records.HEADER_SIZE + 5] ^= 0x40  # a byte inside the entity
    output.write_bytes(bytes(data))

    target = project + "-bad"
    ran = zonestore(
        "import", "--admin", node.admin_addr, "--from", str(overall), "--project", target
    )
    assert ran.code == 1
    assert str(output) in ran.err
    assert f"offset {offsets[bad]}" in ran.err and "checksum" in ran.err
    assert count_rows(node, target) == bad  # every record before the damaged one, none after

    # Repaired, the rerun completes: the import resumes by running again.
    data[offsets[bad] + records.HEADER_SIZE + 5] ^= 0x40
    output.write_bytes(bytes(data))
    ran = zonestore(
        "import", "--admin", node.admin_addr, "--from", str(overall), "--project", target
    )
    assert ran.code == 0, ran.err
    assert count_rows(node, target) == 3000


def test_a_truncated_file_stops_the_import_naming_it(
    node: NodeProcess, project: str, tmp_path: Path
) -> None:
    overall = damaged_export(node, project, tmp_path, 1000)
    output = overall.parent / "all_namespaces/kind_Row/output-0"
    offsets = offsets_of(output)
    output.write_bytes(output.read_bytes()[: offsets[600] + 40])
    target = project + "-cut"
    ran = zonestore(
        "import", "--admin", node.admin_addr, "--from", str(overall), "--project", target
    )
    assert ran.code == 1
    assert str(output) in ran.err and "truncated" in ran.err
    assert f"offset {offsets[600]}" in ran.err
    assert count_rows(node, target) == 600


def test_missing_or_foreign_files_get_a_clear_error(node: NodeProcess, tmp_path: Path) -> None:
    ran = zonestore(
        "import", "--admin", node.admin_addr, "--from", str(tmp_path / "x.overall_export_metadata")
    )
    assert ran.code == 1 and "no such file" in ran.err
    bogus = tmp_path / "b.overall_export_metadata"
    bogus.write_bytes(b"not a log at all, just some bytes")
    ran = zonestore("import", "--admin", node.admin_addr, "--from", str(bogus))
    assert ran.code == 1 and str(bogus.name) in ran.err
    ran = zonestore("export", "--admin", "127.0.0.1:1", "--to", str(tmp_path), "--project", "p")
    assert ran.code == 1 and "cannot reach the admin API" in ran.err


def test_export_to_and_import_from_s3_compatible_storage(
    node: NodeProcess, project: str, s3_server: S3Server, s3_bucket: str
) -> None:
    written = seed(node, project)
    env = s3_server.env()
    overall = export_to(node, project, s3_server.url(s3_bucket, "exports/nightly"), env=env)
    assert overall.startswith(f"s3://{s3_bucket}/exports/nightly/")
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert any(k.endswith("all_namespaces/all_kinds/output-0") for k in keys)
    target = project + "-s3"
    ran = zonestore(
        "import", "--admin", node.admin_addr, "--from", overall, "--project", target, env=env
    )
    assert ran.code == 0, ran.err
    got = read_all(client_for(node, target), [None, "ns1"], KINDS)
    assert_same(got, written)


def test_import_streams_in_batches_under_the_commit_caps(
    node: NodeProcess, project: str, tmp_path: Path
) -> None:
    """Entities of ~1 MiB each: batches split by bytes, not only by count."""
    client = client_for(node, project)
    big = []
    for i in range(30):
        entity = datastore.Entity(client.key("Big", i + 1), exclude_from_indexes=("blob",))
        entity["blob"] = bytes([i]) * 1_000_000
        big.append(entity)
        client.put(entity)
    overall = export_to(node, project, str(tmp_path / "out"), "--kinds", "Big")
    sent: list[int] = []
    real = transfer.Node(node.client_addr)
    original = real.commit

    class Recording:
        def future(self, request: Any, timeout: float, metadata: Any = ()) -> Any:
            sent.append(request.ByteSize())
            return original.future(request, timeout=timeout, metadata=metadata)

    real.commit = Recording()
    store, key = transfer.split_location(overall)
    try:
        result = transfer.import_entities(
            real,
            store,
            key,
            project=project + "-big",
            progress=transfer.Progress("t", io.StringIO()),
        )
    finally:
        real.close()
    assert result.entities == 30
    assert len(sent) >= 4 and max(sent) <= transfer.MAX_BATCH_BYTES + (1 << 20)
    copy = client_for(node, project + "-big")
    assert {e.key.id: e["blob"][:1] for e in copy.query(kind="Big").fetch()} == {
        i + 1: bytes([i]) for i in range(30)
    }


def test_a_secured_node_is_reached_with_admin_token_client_token_and_tls_ca(
    tmp_path: Path,
) -> None:
    secrets = make_secrets(tmp_path / "secrets")
    token = tmp_path / "token.txt"
    token.write_text("tok-writer\n")
    guarded = NodeProcess(tmp_path / "node", extra=secrets.flags(client_tls=True, auth=True))
    guarded.start()
    access = ["--admin-token-file", str(secrets.admin_token), "--tls-ca", str(secrets.ca_path)]
    try:
        writer = official_client(secrets, guarded, "p", "tok-writer")
        entity = datastore.Entity(writer.key("K", "one"))
        entity["v"] = 1
        writer.put(entity)
        ran = zonestore(
            "export", "--admin", guarded.admin_addr, "--to", str(tmp_path / "a"),
            "--project", "p", *access,
        )  # fmt: skip
        assert ran.code == 1 and "UNAUTHENTICATED" in ran.err
        ran = zonestore(
            "export", "--admin", guarded.admin_addr, "--to", str(tmp_path / "b"),
            "--project", "p", *access, "--token-file", str(token),
        )  # fmt: skip
        assert ran.code == 0, ran.err
        ran = zonestore(
            "import", "--admin", guarded.admin_addr, "--from", ran.out.strip().splitlines()[-1],
            "--project", "p2", *access, "--token-file", str(token),
        )  # fmt: skip
        assert ran.code == 0, ran.err
        reader = official_client(secrets, guarded, "p2", "tok-reader")
        assert reader.get(reader.key("K", "one"))["v"] == 1
    finally:
        guarded.stop()


def test_a_replicated_group_is_exported_and_imported_through_a_follower(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster")
    cluster.start()
    try:
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes if n is not leader)
        written = seed(leader, "grp")
        overall = export_to(follower, "grp", str(tmp_path / "out"))
        ran = zonestore(
            "import", "--admin", follower.admin_addr, "--from", overall, "--project", "grp2"
        )
        assert ran.code == 0, ran.err
        assert_same(read_all(client_for(leader, "grp2"), [None, "ns1"], KINDS), written)
    finally:
        cluster.stop()
