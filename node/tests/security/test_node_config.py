"""Security configuration of a single node: what is refused at start, auth without TLS,
and what the official client sends in emulator mode."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.api_core import exceptions as gexc

from tests.harness import NodeProcess, free_port
from tests.security.support import Secrets, make_secrets, raw_lookup
from zonestore_node import server
from zonestore_node.api import auth

pytestmark = pytest.mark.integration


def serve(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "zonestore_node.cli", "serve",
            "--data-dir", str(tmp_path / "data"),
            "--client-addr", f"127.0.0.1:{free_port()}",
            *extra,
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_a_non_loopback_admin_address_without_a_token_is_refused_at_start(
    tmp_path: Path,
) -> None:
    result = serve(tmp_path, "--admin-addr", f"0.0.0.0:{free_port()}")
    assert result.returncode == 2
    assert "--admin-token-file" in result.stderr and "--admin-insecure" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was opened


def test_half_a_tls_configuration_is_refused_at_start(tmp_path: Path) -> None:
    result = serve(tmp_path, "--peer-tls-cert", "x.crt")
    assert result.returncode == 2 and "--peer-tls-key" in result.stderr


def test_token_files_hold_hashes_and_scopes() -> None:
    with pytest.raises(ValueError, match="plaintext"):
        auth.parse_grants('[{"name": "a", "token": "t", "projects": ["*"]}]')
    with pytest.raises(ValueError, match="64 hex"):
        auth.parse_grants('[{"name": "a", "token_sha256": "abc", "projects": ["*"]}]')
    yaml_doc = f"""
tokens:
  - name: ci
    token_sha256: {auth.hash_token("t1")}
    projects: [p]
    databases: ["(default)"]
    access: write
"""
    (grant,) = auth.parse_grants(yaml_doc)
    assert grant.covers_project("p") and not grant.covers_project("q")
    assert grant.covers_database("") and not grant.covers_database("other")


@pytest.fixture
def auth_node(tmp_path: Path) -> Iterator[tuple[NodeProcess, Secrets]]:
    secrets = make_secrets(tmp_path / "pki")
    node = NodeProcess(tmp_path / "node", extra=["--auth-tokens", str(secrets.tokens)])
    node.start()
    yield node, secrets
    node.kill()


def test_tokens_work_without_tls_and_the_emulator_mode_client_sends_none(
    auth_node: tuple[NodeProcess, Secrets], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, _ = auth_node
    with grpc.insecure_channel(node.client_addr) as channel:
        raw_lookup(channel, "p", [("authorization", "Bearer tok-reader")])
        with pytest.raises(grpc.RpcError) as info:
            raw_lookup(channel, "p", [])
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # With DATASTORE_EMULATOR_HOST the official client refuses explicit credentials
    # and opens an insecure channel without any: a node with tokens is out of its reach
    # (clients point api_endpoint at a TLS port instead; see support.official_client).
    from google.cloud import datastore
    from google.oauth2.credentials import Credentials

    monkeypatch.setenv("DATASTORE_EMULATOR_HOST", node.client_addr)
    with pytest.raises(ValueError, match="incompatible with the emulator"):
        datastore.Client(project="p", credentials=Credentials(token="tok-reader"))
    client = datastore.Client(project="p")
    with pytest.raises(gexc.Unauthenticated):
        client.get(client.key("K", "x"))
    assert os.environ["DATASTORE_EMULATOR_HOST"] == node.client_addr


def test_wildcard_listen_addresses_are_advertised_with_the_peer_host() -> None:
    # Followers relay to the leader's advertised client address (over TLS: checked
    # against the certificate's SANs), so it must name the pod, not 0.0.0.0.
    pod = "zs-0.zs-peers.ns.svc:7000"
    assert server.advertised("0.0.0.0:8081", pod) == "zs-0.zs-peers.ns.svc:8081"
    assert server.advertised("127.0.0.1:8081", pod) == "127.0.0.1:8081"
    assert server.advertised("0.0.0.0:8081", "") == "0.0.0.0:8081"
