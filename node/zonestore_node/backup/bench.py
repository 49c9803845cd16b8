"""Base backup and restore throughput (MB/s and entities/s), for `make bench`:

    python -m zonestore_node.backup.bench [--entities 100000 | --million] [--json FILE]

Fills a fresh single node with N small entities (~200 bytes each) through the managed
export importer (export/bench.py's data), then times `backup create` to a folder
destination and `restore` of it into a new data folder, as the CLI runs them (in this
process), unpaced (`max_rate=None`): the copy's own speed. The write-throughput cost of
a running backup and of archiving is backup/writecost.py's (its own `make bench` line;
figures in its docstring). At 1,000,000 entities on 2026-12-06 (114.6 MB of database,
folder on the same disk, load ~4): backup 3.2M entities/s (369 MB/s), restore 5.8M
entities/s (659 MB/s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from zonestore_node.backup import base, objstore, restore
from zonestore_node.export import bench as export_bench
from zonestore_node.export import transfer


def run(count: int, scratch: Path) -> dict[str, Any]:
    overall = export_bench.write_export(scratch / "in", count)
    node = export_bench._Node(scratch)
    quiet = open(os.devnull, "w")  # noqa: SIM115
    store = objstore.open_store((scratch / "backups").as_uri())
    try:
        client = transfer.Node(transfer.client_address(node.admin))
        try:
            source, key = transfer.split_location(str(overall))
            transfer.import_entities(
                client, source, key, progress=transfer.Progress("import", quiet)
            )
        finally:
            client.close()
        made = base.create(base.AdminClient(), node.admin, store, max_rate=None)  # unpaced
    finally:
        node.stop()
        quiet.close()
    started = time.monotonic()
    result = restore.restore(
        store, restore.plan(store, "", None), scratch / "restored", "restored-0"
    )
    restore_s = time.monotonic() - started
    size = made.manifest.total_bytes
    return {
        "entities": count,
        "backup_bytes": size,
        "backup_mb_per_s": size / 1e6 / made.seconds,
        "backup_entities_per_s": count / made.seconds,
        "restore_mb_per_s": result.download_bytes / 1e6 / restore_s,
        "restore_entities_per_s": count / restore_s,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="zonestore_node.backup.bench", description=__doc__)
    p.add_argument("--entities", type=int, default=100_000)
    p.add_argument("--million", action="store_true", help="1,000,000 entities")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    count = 1_000_000 if args.million else args.entities
    scratch = Path(tempfile.mkdtemp(prefix="zs-backup-bench-"))
    try:
        result = run(count, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"base backup to a folder, one node, {count:,} entities of ~200 bytes "
        f"({result['backup_bytes'] / 1e6:.1f} MB of database):\n"
        f"  backup   {result['backup_entities_per_s']:>9,.0f} entities/s "
        f"({result['backup_mb_per_s']:.1f} MB/s)\n"
        f"  restore  {result['restore_entities_per_s']:>9,.0f} entities/s "
        f"({result['restore_mb_per_s']:.1f} MB/s)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
