"""The export benchmark (`make bench`) runs end to end on a small count."""

from __future__ import annotations

from pathlib import Path

from zonestore_node.export import bench


def test_the_export_benchmark_moves_every_entity_in_and_out(tmp_path: Path) -> None:
    result = bench.run(2_000, tmp_path)
    assert result["entities"] == 2_000
    assert result["import_entities_per_s"] > 0 and result["export_entities_per_s"] > 0
