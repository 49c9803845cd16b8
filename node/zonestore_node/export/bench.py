"""Import and export throughput (entities/s) of the managed export format against a
fresh single node, for `make bench`:

    python -m zonestore_node.export.bench [--entities 200000] [--json FILE]

Writes an export of N small entities (five properties, ~200 bytes each) with this
package's own writer, starts `zonestore serve` on free loopback ports in a scratch
folder, runs `zonestore import` and `zonestore export` as the CLI runs them (in this
process, through the node's client port), and prints entities/s and MiB/s for each.
The node is stopped and the scratch folder removed at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from google.cloud.datastore_v1.types import entity as v1

from zonestore_node.backup import objstore
from zonestore_node.export import entities, layout, records, transfer

PROJECT = "bench-export"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_rows(
    root: Path, name: str, count: int, fill: Callable[[Any, int], None], project: str = PROJECT
) -> Path:
    """An export (the managed format) of `count` entities of kind Row, ids 1..count, in
    `root/name`; `fill(entity, i)` sets the properties of the i-th. Returns its overall
    metadata file."""
    store = objstore.open_store(root.as_uri())
    entity_set = layout.EntitySet()

    def framed() -> Iterator[bytes]:
        out = io.BytesIO()
        writer = records.Writer(out)
        entity = v1.Entity.pb()()
        entity.key.partition_id.project_id = project
        element = entity.key.path.add()
        element.kind = "Row"
        for i in range(count):
            element.id = i + 1
            fill(entity, i)
            writer.write(entities.encode(entity))
            if out.tell() > 1 << 20:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()

    size = store.put_stream(f"{name}/{entity_set.folder}/output-0", framed())
    store.put_bytes(
        f"{name}/{entity_set.metadata_key}",
        layout.encode_backup(name, 0, 0, entity_set, ["output-0"]),
    )
    pointer = layout.Pointer(entity_set, entity_set.metadata_key, count, size)
    store.put_bytes(f"{name}/{name}.overall_export_metadata", layout.encode_overall([pointer]))
    return root / name / f"{name}.overall_export_metadata"


def _bench_row(entity: Any, i: int) -> None:
    entity.properties["i"].integer_value = i
    entity.properties["name"].string_value = f"row number {i}"
    entity.properties["score"].double_value = i * 0.5
    entity.properties["even"].boolean_value = i % 2 == 0
    entity.properties["pad"].string_value = "x" * 100
    entity.properties["pad"].exclude_from_indexes = True


def write_export(root: Path, count: int) -> Path:
    """An export of `count` entities of kind Row; returns its overall metadata file."""
    return write_rows(root, "bench", count, _bench_row)


class _Node:
    def __init__(self, folder: Path) -> None:
        self.client = f"127.0.0.1:{_free_port()}"
        self.admin = f"127.0.0.1:{_free_port()}"
        self.log = open(folder / "node.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "zonestore_node.cli", "serve",
                "--data-dir", str(folder / "data"),
                "--client-addr", self.client, "--admin-addr", self.admin,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the node exited: see {folder / 'node.log'}")
            try:
                with urllib.request.urlopen(f"http://{self.admin}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the node did not become ready in 60 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def run(count: int, scratch: Path) -> dict[str, Any]:
    overall = write_export(scratch / "in", count)
    node = _Node(scratch)
    quiet = open(os.devnull, "w")  # noqa: SIM115
    try:
        client = transfer.Node(transfer.client_address(node.admin))
        try:
            store, key = transfer.split_location(str(overall))
            imported = transfer.import_entities(
                client, store, key, progress=transfer.Progress("import", quiet)
            )
            exported = transfer.export_entities(
                client,
                objstore.open_store((scratch / "out").as_uri()),
                PROJECT,
                progress=transfer.Progress("export", quiet),
            )
        finally:
            client.close()
    finally:
        node.stop()
        quiet.close()
    if imported.entities != count or exported.entities != count:
        raise RuntimeError(f"moved {imported.entities} in and {exported.entities} out of {count}")
    return {
        "entities": count,
        "import_entities_per_s": count / imported.seconds,
        "import_mib_per_s": imported.bytes / imported.seconds / (1 << 20),
        "export_entities_per_s": count / exported.seconds,
        "export_mib_per_s": exported.bytes / exported.seconds / (1 << 20),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="zonestore_node.export.bench", description=__doc__)
    p.add_argument("--entities", type=int, default=200_000)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="zs-export-bench-"))
    try:
        result = run(args.entities, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"managed export format, one node, {result['entities']:,} entities of ~200 bytes:\n"
        f"  import  {result['import_entities_per_s']:>9,.0f} entities/s "
        f"({result['import_mib_per_s']:.1f} MiB/s)\n"
        f"  export  {result['export_entities_per_s']:>9,.0f} entities/s "
        f"({result['export_mib_per_s']:.1f} MiB/s)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
