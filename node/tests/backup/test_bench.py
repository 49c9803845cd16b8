"""Smoke test of `make bench`'s backup and restore throughput (zonestore_node.backup.bench)
with a tiny N: it runs end to end and reports positive figures."""

from __future__ import annotations

import json
from pathlib import Path

from zonestore_node.backup import bench


def test_the_backup_bench_backs_up_and_restores_a_small_node(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    assert bench.main(["--entities", "500", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["entities"] == 500 and result["backup_bytes"] > 500 * 100
    for name in ("backup", "restore"):
        assert result[f"{name}_mb_per_s"] > 0 and result[f"{name}_entities_per_s"] > 0
