"""zonestore-edge in front of real nodes: the client port served by the Go edge (--edge on)
and by Python's grpc.aio server (--edge off) answer alike; the hand-off socket's Python
side; supervision; relays that cost a follower's Python nothing; TLS rotation; reset."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.cloud import datastore
from google.cloud.datastore_v1.types import datastore as ds

from tests.harness import Cluster, NodeProcess
from tests.security.pki import write_atomic
from tests.security.support import make_secrets
from zonestore_node.api import edgeproc

SERVICE = "google.datastore.v1.Datastore"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def edge_binary() -> Path:
    """The built edge (`make edge`, which `make test` runs first; built here if missing)."""
    binary = edgeproc.find_binary(os.environ.get("ZONESTORE_EDGE_BINARY", ""))
    if binary is None:
        subprocess.run(["make", "-s", "edge"], cwd=REPO, check=True)
        binary = edgeproc.find_binary()
    assert binary is not None, "make edge did not produce .cache/bin/zonestore-edge"
    return binary


@pytest.fixture(scope="module", params=["on", "off"])
def mode_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, edge_binary: Path
) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path_factory.mktemp(f"edge-{request.param}"), edge=request.param)
    node.start()
    yield node
    node.stop()


def client_for(node: NodeProcess, project: str) -> Any:
    os.environ["DATASTORE_EMULATOR_HOST"] = node.client_addr
    return datastore.Client(project=project)


def metrics(node: NodeProcess) -> str:
    code, body = node.http_get("/metrics")
    assert code == 200
    return body.decode()


def eventually(node: NodeProcess, check: Any, timeout: float = 10.0) -> str:
    """/metrics once `check(text)` holds (the edge pushes its metrics every second)."""
    deadline = time.monotonic() + timeout
    while True:
        text = metrics(node)
        if check(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_official_client_works_through_either_front(mode_node: NodeProcess) -> None:
    client = client_for(mode_node, f"edge-{mode_node.extra[1]}")
    user = datastore.Entity(client.key("User", "John Doe"))
    user.update({"name": "John Doe", "age": 42})
    client.put(user)
    assert client.get(client.key("User", "John Doe"))["age"] == 42
    query = client.query(kind="User")
    query.add_filter(filter=datastore.query.PropertyFilter("age", ">", 40))
    assert [e.key.name for e in query.fetch()] == ["John Doe"]
    with client.transaction():
        got = client.get(client.key("User", "John Doe"))
        got["age"] = 43
        client.put(got)
    assert client.get(client.key("User", "John Doe"), eventual=True)["age"] == 43
    served_by_edge = "edge.started" in mode_node.log_path.read_text()
    assert served_by_edge == (mode_node.extra[1] == "on")
    if served_by_edge:
        text = eventually(
            mode_node,
            lambda t: sample(t, "zonestore_edge_requests_total", method="Commit", code="OK") >= 2,
        )
        assert sample(text, "zonestore_edge_requests_total", method="Commit", code="OK") >= 2
        assert sample(text, "zonestore_edge_batch_size_count") >= 1
        # The node's own request metrics keep counting what it serves.
        assert sample(text, "zonestore_requests_total", method="Commit", code="OK") >= 2


def raw_call(node: NodeProcess, method: str, body: bytes, **kwargs: Any) -> Any:
    with grpc.insecure_channel(node.client_addr) as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            return call.with_call(body, timeout=10, **kwargs)
        except grpc.RpcError as exc:
            return exc


def test_statuses_messages_and_trailers_are_the_nodes(mode_node: NodeProcess) -> None:
    bad = raw_call(mode_node, "Lookup", b"\xff\xff\xff")
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.details() == "The request is not a valid google.datastore.v1.LookupRequest message."
    assert ("x-zonestore-answered", "1") in tuple(bad.trailing_metadata())
    no_project = raw_call(mode_node, "Commit", ds.CommitRequest.serialize(ds.CommitRequest()))
    assert no_project.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert no_project.details() == "The request must name a project_id."
    unknown = raw_call(mode_node, "Frobnicate", b"")
    assert unknown.code() == grpc.StatusCode.UNIMPLEMENTED
    request = ds.AllocateIdsRequest(project_id="edge-raw", keys=[{"path": [{"kind": "K"}]}])
    response, _ = raw_call(
        mode_node,
        "AllocateIds",
        ds.AllocateIdsRequest.serialize(request),
        metadata=[("x-goog-request-params", "project_id=edge-raw")],
    )
    assert ds.AllocateIdsResponse.deserialize(response).keys[0].path[0].id > 0


def _frame(kind: int, request_id: int, payload: bytes) -> bytes:
    return struct.pack("<IBI", 5 + len(payload), kind, request_id) + payload


def _read_frame(sock: socket.socket) -> tuple[int, int, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "the node closed the hand-off socket"
            data += chunk
        return data

    length, kind, request_id = struct.unpack("<IBI", exactly(9))
    return kind, request_id, exactly(length - 5)


def test_the_handoff_socket_speaks_the_protocol(mode_node: NodeProcess) -> None:
    """A second client on the node's socket, frame by frame (node/edge/PROTOCOL.md)."""
    found = re.findall(r"node=(\S+node\.sock)", mode_node.log_path.read_text())
    if mode_node.extra[1] == "off":
        assert not found  # grpc.aio serves the port: there is no hand-off
        return
    assert found, mode_node.log_tail()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(found[-1])
        kind, _, payload = _read_frame(sock)  # the leader, at once
        assert kind == 4 and payload[0] == 3  # this replica leads; it serves strong reads
        lookup = ds.LookupRequest.serialize(
            ds.LookupRequest(project_id="sock", keys=[{"path": [{"kind": "K", "name": "a"}]}])
        )

        def request(rid: int, method: int, body: bytes, metadata: bytes = b"\x00") -> bytes:
            return _frame(1, rid, struct.pack("<BI", method, 5000) + metadata + body)

        auth = (
            b"\x01" + struct.pack("<H", 13) + b"authorization" + struct.pack("<H", 8) + b"Bearer x"
        )
        # Three requests in one write; a cancel of an unknown id is ignored.
        sock.sendall(
            request(1, 0, lookup)
            + request(2, 0, b"\xff\xff")
            + _frame(2, 99, b"")
            + request(3, 0, lookup, auth)
        )
        answers: dict[int, bytes] = {}
        while len(answers) < 3:
            kind, rid, payload = _read_frame(sock)
            if kind == 3:
                answers[rid] = payload
        ok = answers[1]
        assert ok[0] == 0 and ok[1] == 1  # OK, one trailer (answered)
        body = ok[2 + 2 + len("x-zonestore-answered") + 2 + 1 :]
        assert ds.LookupResponse.deserialize(body).missing[0].entity.key.path[0].name == "a"
        assert answers[2][0] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert answers[2].endswith(b"not a valid google.datastore.v1.LookupRequest message.")
        assert answers[3][0] == 0  # no token file: the metadata is carried, not required
        # A reset without --allow-reset is refused with the reason.
        sock.sendall(_frame(5, 7, b""))
        kind, rid, payload = _read_frame(sock)
        while kind != 3:
            kind, rid, payload = _read_frame(sock)
        assert rid == 7 and payload[0] == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert payload.endswith(b"reset is disabled: the node runs without --allow-reset")


def test_an_edge_that_dies_is_restarted(tmp_path: Path, edge_binary: Path) -> None:
    node = NodeProcess(tmp_path, edge="on")
    node.start()
    try:
        first = node.edge_pid()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while node.edge_pid() == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node.edge_pid() not in (None, first), node.log_tail()
        node.wait_ready(20)
        client = client_for(node, "restarted")
        client.put(datastore.Entity(client.key("K", 1)))
        assert client.get(client.key("K", 1)) is not None
    finally:
        assert node.stop() == 0
    # Stopping the node stops its edge.
    second = node.edge_pid()
    assert second is not None
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)


def test_a_missing_edge_binary_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zonestore_node.cli", "serve", "--data-dir", str(tmp_path),
         "--edge-binary", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "is not an executable file" in result.stderr


def test_a_follower_relays_without_its_python(tmp_path: Path, edge_binary: Path) -> None:
    cluster = Cluster(tmp_path, 3, extra=["--edge", "on"])
    cluster.start()
    try:
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes if n is not leader)
        client = client_for(follower, "relay")
        for i in range(5):
            client.put(datastore.Entity(client.key("K", i + 1)))
        assert len(client.get_multi([client.key("K", i + 1) for i in range(5)])) == 5
        on_follower = eventually(
            follower,
            lambda t: sample(t, "zonestore_forwarded_requests_total", method="Commit") >= 5,
        )
        assert sample(on_follower, "zonestore_requests_total", method="Commit", code="OK") == 0
        assert sample(on_follower, "zonestore_forwarded_requests_total", method="Commit") == 5
        assert sample(metrics(leader), "zonestore_requests_total", method="Commit", code="OK") >= 5
        # A strong read is the follower's own, after a read index from the leader
        # (--follower-reads, the default): it sees the writes just acknowledged.
        assert sample(on_follower, "zonestore_requests_total", method="Lookup", code="OK") >= 1
        assert (
            sample(on_follower, "zonestore_edge_relays_total", method="Lookup", outcome="ok") == 0
        )
        # So is an eventual one.
        assert client.get(client.key("K", 1), eventual=True) is not None
        # A transaction's read is the leader's (transactions live there): relayed.
        with client.transaction():
            assert client.get(client.key("K", 2)) is not None
        relayed = eventually(
            follower,
            lambda t: sample(t, "zonestore_edge_relays_total", method="Lookup", outcome="ok") >= 1,
        )
        assert sample(relayed, "zonestore_edge_relays_total", method="Lookup", outcome="ok") >= 1
    finally:
        cluster.stop()


def served_serial(node: NodeProcess, ca: Path) -> int:
    from cryptography import x509

    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2"])
    host, port = node.client_addr.split(":")
    with (
        socket.create_connection((host, int(port)), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname=host) as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_a_rotated_client_certificate_is_served_without_a_restart(
    tmp_path: Path, edge_binary: Path
) -> None:
    secrets = make_secrets(tmp_path / "pki")
    node = NodeProcess(tmp_path / "node", edge="on", extra=secrets.flags(auth=False))
    node.start()
    try:
        before = served_serial(node, secrets.ca_path)
        issued = secrets.ca.issue("client-port")
        write_atomic(secrets.client_key, issued.key_pem)
        write_atomic(secrets.client_cert, issued.cert_pem)
        assert served_serial(node, secrets.ca_path) == issued.serial != before
        creds = grpc.ssl_channel_credentials(root_certificates=secrets.ca.cert_pem)
        with grpc.secure_channel(node.client_addr, creds) as channel:
            call = channel.unary_unary(f"/{SERVICE}/AllocateIds")
            request = ds.AllocateIdsRequest(project_id="tls", keys=[{"path": [{"kind": "K"}]}])
            response = call(ds.AllocateIdsRequest.serialize(request), timeout=10)
        assert ds.AllocateIdsResponse.deserialize(response).keys
    finally:
        node.stop()


def post_reset(node: NodeProcess) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{node.client_addr}/reset", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_reset_deletes_all_data_only_when_allowed(tmp_path: Path, edge_binary: Path) -> None:
    refused = NodeProcess(tmp_path / "refused", edge="on")
    allowed = NodeProcess(tmp_path / "allowed", edge="on", extra=["--allow-reset"])
    refused.start()
    allowed.start()
    try:
        for node in (refused, allowed):
            for project in ("a", "b"):
                client = client_for(node, project)
                client.put_multi([datastore.Entity(client.key("K", i + 1)) for i in range(3)])
        code, text = post_reset(refused)
        assert code == 403 and "--allow-reset" in text
        assert client_for(refused, "a").get(client_for(refused, "a").key("K", 1)) is not None
        code, text = post_reset(allowed)
        assert code == 200, text
        for project in ("a", "b"):
            client = client_for(allowed, project)
            assert list(client.query(kind="K").fetch()) == []
    finally:
        refused.stop()
        allowed.stop()


def test_the_node_image_builds_the_edge_and_serve_finds_it() -> None:
    """The Dockerfile's edge stage builds node/edge; the node image puts the binary beside
    the interpreter, where `zonestore serve --edge auto` looks first."""
    text = (REPO / "Dockerfile").read_text()
    stage = text.split(" AS edge", 1)[1].split("\nFROM ", 1)[0]
    assert "COPY node/edge/go.mod node/edge/go.sum" in stage
    assert re.search(r"go build .*-o /zonestore-edge \.", stage)
    assert "COPY --from=edge /zonestore-edge /usr/local/bin/zonestore-edge" in text
    assert Path("/usr/local/bin/python").parent / edgeproc.BINARY == Path(
        "/usr/local/bin/zonestore-edge"
    )


def test_auto_without_the_binary_warns_once_naming_the_build(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    import logging

    from zonestore_node import server

    monkeypatch.setattr(edgeproc, "find_binary", lambda explicit="": None)
    with caplog.at_level(logging.WARNING):
        config = server.NodeConfig(node_id="x", zone="z", data_dir=tmp_path, edge="auto")
        assert server.find_edge(config) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "`make edge`" in warnings[0], warnings
    with pytest.raises(server.ConfigError, match="make edge"):
        server.find_edge(server.NodeConfig(node_id="x", zone="z", data_dir=tmp_path, edge="on"))
    assert (
        server.find_edge(server.NodeConfig(node_id="x", zone="z", data_dir=tmp_path, edge="off"))
        is None
    )
