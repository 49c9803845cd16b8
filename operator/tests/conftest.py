"""Shared fixtures for the operator's unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def crd() -> dict:
    with (REPO / "crds" / "datastore.yaml").open() as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="session")
def crd_schema(crd: dict) -> dict:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
