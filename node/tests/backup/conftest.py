"""Fixtures for the backup tests: a real S3-compatible server (versitygw) on loopback."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.objstore_server import S3Server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One versitygw for the session; tests isolate themselves with a bucket each."""
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    name = "zs-" + secrets.token_hex(6)
    s3_server.create_bucket(name)
    return name
