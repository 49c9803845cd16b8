"""Fixtures for the export tests: the official client on the session's node, a real
S3-compatible server, and the `zonestore` CLI as a subprocess."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from google.cloud import datastore

from tests.harness import NodeProcess
from tests.objstore_server import S3Server


@dataclass
class Ran:
    code: int
    out: str
    err: str


def zonestore(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Ran:
    """Runs the real CLI (`python -m zonestore_node.cli`)."""
    proc = subprocess.run(
        [sys.executable, "-m", "zonestore_node.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def client_for(node: NodeProcess, project: str, namespace: str | None = None) -> datastore.Client:
    os.environ["DATASTORE_EMULATOR_HOST"] = node.client_addr
    return datastore.Client(project=project, namespace=namespace)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    name = "zs-" + secrets.token_hex(6)
    s3_server.create_bucket(name)
    return name
