"""Round trips with Google's Firestore emulator (Datastore mode), in both directions:

- entities of every value type written to the emulator with the official client, exported
  by the emulator, imported into zonestore with `zonestore import`: equal, property by
  property and flag by flag, to what the emulator itself returns;
- entities written to zonestore, exported with `zonestore export`, loaded by a Firestore
  emulator started with `--import-data`: read back equal through the official client.

One emulator per direction for the whole module (start-up is several seconds of Java).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import datastore

from tests.export.conftest import client_for, zonestore
from tests.export.firestore_emulator import FirestoreEmulator
from tests.export.values import assert_same, every_value_type, read_all
from tests.harness import NodeProcess

pytestmark = pytest.mark.emulator

KINDS = ["Thing", "Child", "Root", "Other", "Parent"]
NAMESPACES: list[str | None] = [None, "ns1"]


def emulator_client(emulator: FirestoreEmulator, project: str) -> datastore.Client:
    os.environ["DATASTORE_EMULATOR_HOST"] = emulator.address
    return datastore.Client(project=project)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirestoreEmulator]:
    emu = FirestoreEmulator(tmp_path_factory.mktemp("firestore"))
    try:
        yield emu
    finally:
        emu.stop()


def test_an_export_by_the_firestore_emulator_imports_into_zonestore_unchanged(
    emulator: FirestoreEmulator, node: NodeProcess, project: str, tmp_path: Path
) -> None:
    source = emulator_client(emulator, project)
    written = every_value_type(source) + every_value_type(source, namespace="ns1")
    source.put_multi(written)
    as_google_has_them = read_all(source, NAMESPACES, KINDS)
    assert_same(as_google_has_them, written)

    overall = emulator.export(project, tmp_path / "google-export")
    target = project + "-from-google"
    ran = zonestore(
        "import", "--admin", node.admin_addr, "--from", str(overall), "--project", target
    )
    assert ran.code == 0, ran.err
    assert f"imported {len(written)} entities" in ran.err

    imported = read_all(client_for(node, target), NAMESPACES, KINDS)
    assert_same(imported, as_google_has_them)


def test_a_zonestore_export_loads_into_the_firestore_emulator_unchanged(
    node: NodeProcess, project: str, tmp_path: Path
) -> None:
    client = client_for(node, project)
    written = every_value_type(client) + every_value_type(client, namespace="ns1")
    client.put_multi(written)
    as_zonestore_has_them = read_all(client, NAMESPACES, KINDS)
    assert_same(as_zonestore_has_them, written)

    ran = zonestore(
        "export", "--admin", node.admin_addr, "--to", str(tmp_path / "out"), "--project", project
    )
    assert ran.code == 0, ran.err
    overall = Path(ran.out.strip().splitlines()[-1])

    loaded = FirestoreEmulator(tmp_path / "firestore", import_data=overall)
    try:
        got = read_all(emulator_client(loaded, project), NAMESPACES, KINDS)
    finally:
        loaded.stop()
    assert_same(got, as_zonestore_has_them)
