"""A large import streams: the CLI's peak memory stays near its baseline however large
the export, because records are read a block at a time and only the batches in flight
are held (the issue's 1,000,000-entity import measured the same way: README)."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from google.cloud.datastore_v1.types import entity as v1

from tests.export.conftest import client_for
from tests.harness import NodeProcess
from zonestore_node.backup import objstore
from zonestore_node.export import entities, layout, records

ENTITIES = 40_000
PAD_BYTES = 4_000  # ~160 MB of export: far more than the bound below
PEAK_RSS_LIMIT_MIB = 150


def write_export(root: Path, project: str) -> Path:
    store = objstore.open_store(root.as_uri())
    entity_set = layout.EntitySet()

    def framed() -> Iterator[bytes]:
        out = io.BytesIO()
        writer = records.Writer(out)
        entity = v1.Entity.pb()()
        entity.key.partition_id.project_id = project
        element = entity.key.path.add()
        element.kind = "Row"
        for i in range(ENTITIES):
            element.id = i + 1
            entity.properties["i"].integer_value = i
            entity.properties["pad"].string_value = f"{i:08d}" * (PAD_BYTES // 8)
            entity.properties["pad"].exclude_from_indexes = True
            writer.write(entities.encode(entity))
            if out.tell() > 1 << 20:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()

    size = store.put_stream(f"big/{entity_set.folder}/output-0", framed())
    store.put_bytes(
        f"big/{entity_set.metadata_key}",
        layout.encode_backup("big", 0, 0, entity_set, ["output-0"]),
    )
    pointer = layout.Pointer(entity_set, entity_set.metadata_key, ENTITIES, size)
    store.put_bytes("big/big.overall_export_metadata", layout.encode_overall([pointer]))
    assert size > 2 * PEAK_RSS_LIMIT_MIB * (1 << 20) // 2
    return root / "big" / "big.overall_export_metadata"


def test_a_large_import_streams_in_bounded_memory(
    node: NodeProcess, project: str, tmp_path: Path
) -> None:
    overall = write_export(tmp_path, project)
    # VmHWM: this process image's peak (ru_maxrss would carry the forking pytest's over exec).
    measured = (
        "import re, sys\n"
        "from zonestore_node import cli\n"
        "code = cli.main(sys.argv[1:])\n"
        "status = open('/proc/self/status').read()\n"
        "print('peak_rss_kib', re.search(r'VmHWM:\\s+(\\d+)', status).group(1), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    ran = subprocess.run(
        [
            sys.executable,
            "-c",
            measured,
            "import",
            "--admin",
            node.admin_addr,
            "--from",
            str(overall),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert ran.returncode == 0, ran.stderr
    peak_mib = int(ran.stderr.rsplit("peak_rss_kib", 1)[1].split()[0]) / 1024
    assert 20 < peak_mib < PEAK_RSS_LIMIT_MIB, ran.stderr
    assert "entities/s" in ran.stderr
    query = client_for(node, project).query(kind="Row")
    query.keys_only()
    assert len(list(query.fetch())) == ENTITIES
