"""Shared fixtures: a node process per session, and clients of the official library."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.harness import NodeProcess

# Shared 2-core machines (and CI) stall for hundreds of milliseconds at times: a per-example
# deadline would turn that into failures that say nothing about the code.
settings.register_profile("zonestore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("zonestore")

_projects = itertools.count()


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node for the whole session; tests isolate themselves by project id."""
    proc = NodeProcess(tmp_path_factory.mktemp("node"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def fresh_node(tmp_path: Path) -> Iterator[NodeProcess]:
    """A node of the test's own, for restarts and kills."""
    proc = NodeProcess(tmp_path)
    proc.start()
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.kill()


ClientFactory = Callable[..., object]


def make_client(addr: str, project: str, **kwargs: object) -> object:
    from google.cloud import datastore

    os.environ["DATASTORE_EMULATOR_HOST"] = addr
    return datastore.Client(project=project, **kwargs)


@pytest.fixture
def project(request: pytest.FixtureRequest) -> str:
    """A project id of the test's own, so tests sharing a node never see each other's data."""
    return f"p{next(_projects)}-{os.getpid()}"


@pytest.fixture
def client(node: NodeProcess, project: str) -> object:
    return make_client(node.client_addr, project)
