"""Shared pieces of the security tests: a secured cluster's files and flags, clients."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.cloud.datastore_v1.types import datastore as ds

from tests.harness import Cluster, NodeProcess
from tests.security.pki import Authority
from zonestore_e2e.clients import official_tls_client

SERVICE = "google.datastore.v1.Datastore"
ADMIN_TOKEN = "admin-secret-token"
TOKENS = {
    # plaintext token: (name, projects, access); the file holds only the hashes
    "tok-writer": ("writer", ["*"], "write"),
    "tok-reader": ("reader", ["*"], "read"),
    "tok-shop": ("shop-only", ["shop"], "write"),
}


@dataclass
class Secrets:
    root: Path
    ca: Authority
    ca_path: Path
    peer_cert: Path
    peer_key: Path
    client_cert: Path
    client_key: Path
    tokens: Path
    admin_token: Path

    def flags(self, *, client_tls: bool = True, auth: bool = True) -> list[str]:
        out = [
            "--peer-tls-cert", str(self.peer_cert),
            "--peer-tls-key", str(self.peer_key),
            "--peer-tls-ca", str(self.ca_path),
            "--admin-token-file", str(self.admin_token),
        ]  # fmt: skip
        if client_tls:
            out += ["--client-tls-cert", str(self.client_cert)]
            out += ["--client-tls-key", str(self.client_key)]
        if auth:
            out += ["--auth-tokens", str(self.tokens)]
        return out


def make_secrets(root: Path) -> Secrets:
    import hashlib

    ca = Authority("zonestore-test-ca")
    root.mkdir(parents=True, exist_ok=True)
    ca_path = root / "ca.crt"
    ca_path.write_bytes(ca.cert_pem)
    peer_cert, peer_key = ca.write(root, "peer", ca.issue("peer"))
    client_cert, client_key = ca.write(root, "client-port", ca.issue("client-port"))
    grants = [
        {
            "name": name,
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
            "projects": projects,
            "databases": ["*"],
            "access": access,
        }
        for token, (name, projects, access) in TOKENS.items()
    ]
    tokens = root / "tokens.json"
    tokens.write_text(json.dumps(grants))
    admin = root / "admin-token"
    admin.write_text(ADMIN_TOKEN + "\n")
    return Secrets(root, ca, ca_path, peer_cert, peer_key, client_cert, client_key, tokens, admin)


def admin_get(node: NodeProcess, path: str, token: str | None = ADMIN_TOKEN) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://{node.admin_addr}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, body


class SecureCluster(Cluster):
    """A Cluster whose admin API needs the token."""

    def status(self, node: NodeProcess) -> dict[str, Any]:
        code, body = admin_get(node, "/admin/status")
        assert code == 200, body
        result: dict[str, Any] = body
        return result


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(what)


def tls_channel(secrets: Secrets, node: NodeProcess) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(root_certificates=secrets.ca.cert_pem)
    return grpc.secure_channel(node.client_addr, creds)


def official_client(secrets: Secrets, node: NodeProcess, project: str, token: str | None) -> Any:
    """The official google-cloud-datastore client with credentials over TLS, trusting the
    test CA (zonestore_e2e.clients: the channel an https endpoint would get)."""
    return official_tls_client(node.client_addr, secrets.ca.cert_pem, project, token)


def raw_lookup(channel: grpc.Channel, project: str, metadata: list[tuple[str, str]]) -> Any:
    call = channel.unary_unary(
        f"/{SERVICE}/Lookup",
        request_serializer=lambda m: ds.LookupRequest.serialize(m),
        response_deserializer=ds.LookupResponse.deserialize,
    )
    request = ds.LookupRequest(project_id=project, keys=[{"path": [{"kind": "K", "name": "x"}]}])
    return call(request, metadata=metadata, timeout=10)


def peer_cert_serial(secrets: Secrets, port: int) -> int:
    """Open a fresh mutual-TLS connection to a replica's peer port; the serial it serves."""
    from cryptography import x509

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(secrets.ca_path))
    ctx.load_cert_chain(str(secrets.peer_cert), str(secrets.peer_key))
    import socket

    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)
