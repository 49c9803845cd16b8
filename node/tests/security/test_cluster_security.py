"""A 3-replica group with everything on: peer mutual TLS, client TLS, bearer tokens and
an admin token. Writes replicate and relay; a replica with another CA's certificate is
refused; status codes are the ones clients expect; certificates rotate under load."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from tests.harness import NodeProcess, free_port
from tests.security.pki import Authority
from tests.security.support import (
    ADMIN_TOKEN,
    Secrets,
    SecureCluster,
    admin_get,
    make_secrets,
    official_client,
    peer_cert_serial,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    return make_secrets(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, secrets: Secrets) -> Iterator[SecureCluster]:
    c = SecureCluster(tmp_path_factory.mktemp("cluster"), size=3, extra=secrets.flags())
    c.start()
    yield c
    c.stop()


def followers(cluster: SecureCluster) -> list[NodeProcess]:
    leader = cluster.leader()
    return [n for n in cluster.nodes if n is not leader]


def test_writes_replicate_between_replicas_over_mutual_tls(
    cluster: SecureCluster, secrets: Secrets
) -> None:
    from google.cloud import datastore

    leader = cluster.leader()
    writer = official_client(secrets, leader, "repl", "tok-writer")
    entity = datastore.Entity(writer.key("K", "a"))
    entity["v"] = 1
    writer.put(entity)
    for node in cluster.nodes:
        reader = official_client(secrets, node, "repl", "tok-reader")

        def replicated(reader: Any = reader) -> bool:
            got = reader.get(reader.key("K", "a"), eventual=True)
            return got is not None and got["v"] == 1

        wait_until(replicated, 10, f"the write did not reach {node.node_id}")


def test_a_follower_relays_an_authorized_write_to_the_leader_over_tls(
    cluster: SecureCluster, secrets: Secrets
) -> None:
    from google.cloud import datastore

    follower = followers(cluster)[0]
    client = official_client(secrets, follower, "relay", "tok-writer")
    entity = datastore.Entity(client.key("K", "b"))
    entity["v"] = 2
    client.put(entity)  # relayed: the follower passes the token on, the leader checks it
    assert client.get(client.key("K", "b"))["v"] == 2
    reader = official_client(secrets, follower, "relay", "tok-reader")
    with pytest.raises(gexc.PermissionDenied, match="read-only"):
        reader.put(datastore.Entity(reader.key("K", "c")))


def test_clients_get_the_status_their_token_deserves(
    cluster: SecureCluster, secrets: Secrets
) -> None:
    from google.cloud import datastore

    node = followers(cluster)[1]
    anonymous = official_client(secrets, node, "codes", None)
    with pytest.raises(gexc.Unauthenticated, match="requires authentication"):
        anonymous.get(anonymous.key("K", "x"))
    wrong = official_client(secrets, node, "codes", "not-a-token")
    with pytest.raises(gexc.Unauthenticated, match="not valid"):
        wrong.get(wrong.key("K", "x"))
    reader = official_client(secrets, node, "codes", "tok-reader")
    assert reader.get(reader.key("K", "x")) is None  # reading is allowed
    with pytest.raises(gexc.PermissionDenied, match="read-only"):
        reader.put(datastore.Entity(reader.key("K", "x")))
    with pytest.raises(gexc.PermissionDenied, match="read-only"):
        reader.allocate_ids(reader.key("K"), 1)
    with pytest.raises(gexc.PermissionDenied, match="read-only"), reader.transaction():
        pass
    with reader.transaction(read_only=True):
        reader.get(reader.key("K", "x"))  # a read-only transaction is a read
    shop_elsewhere = official_client(secrets, node, "not-shop", "tok-shop")
    with pytest.raises(gexc.PermissionDenied, match="project 'not-shop'"):
        shop_elsewhere.get(shop_elsewhere.key("K", "x"))
    shop = official_client(secrets, node, "shop", "tok-shop")
    shop.put(datastore.Entity(shop.key("K", "x")))


def test_the_admin_api_needs_the_token_and_probes_stay_open(
    cluster: SecureCluster, secrets: Secrets
) -> None:
    node = cluster.nodes[0]
    assert admin_get(node, "/admin/status", token=None)[0] == 401
    assert admin_get(node, "/admin/status", token="wrong")[0] == 401
    assert admin_get(node, "/admin/status")[0] == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert node.http_get(path)[0] == 200, path
    base = [sys.executable, "-m", "zonestore_node.cli", "status", "--admin", node.admin_addr]
    refused = subprocess.run(base, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "--admin-token-file" in refused.stderr
    ok = subprocess.run(
        [*base, "--admin-token-file", str(secrets.admin_token)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert "leader" in ok.stdout


def test_a_replica_with_another_cas_certificate_is_refused_and_cannot_vote(
    cluster: SecureCluster, secrets: Secrets, tmp_path: Path
) -> None:
    leader = cluster.leader()
    term = cluster.status(leader)["term"]
    rogue_ca = Authority("rogue-ca")
    cert, key = rogue_ca.write(tmp_path / "pki", "rogue", rogue_ca.issue("rogue"))
    (tmp_path / "pki" / "ca.crt").write_bytes(rogue_ca.cert_pem)
    port = free_port()
    members = ",".join(
        [f"{n.node_id}=127.0.0.1:{n.peer_port}" for n in cluster.nodes]
        + [f"rogue=127.0.0.1:{port}"]
    )
    rogue = NodeProcess(
        tmp_path / "rogue",
        node_id="rogue",
        extra=[
            "--peer-addr", f"127.0.0.1:{port}",
            "--initial-cluster", members,
            "--tick-ms", "20",
            "--peer-tls-cert", str(cert),
            "--peer-tls-key", str(key),
            "--peer-tls-ca", str(tmp_path / "pki" / "ca.crt"),
        ],
    )  # fmt: skip
    rogue.spawn()
    try:
        wait_until(lambda: "transport.tls_refused" in rogue.log_tail(400), 15, "no refusal logged")
        time.sleep(2.0)  # long enough for many election timeouts at 20 ms ticks
        assert rogue.alive()
        status = cluster.status(leader)
        assert status["leader"] == leader.node_id and status["term"] == term
        member_ids = {m["id"] for m in status["members"]}
        assert "rogue" not in member_ids
        logs = "".join(n.log_tail(2000) for n in cluster.nodes)
        assert "transport.tls_refused side=accept" in logs
    finally:
        rogue.kill()


def test_certificate_rotation_under_write_load_fails_no_request(
    cluster: SecureCluster, secrets: Secrets
) -> None:
    from google.cloud import datastore

    nodes = cluster.nodes
    before = {n.node_id: peer_cert_serial(secrets, n.peer_port) for n in nodes}
    stop = threading.Event()
    failures: list[BaseException] = []
    done = [0]

    def load(node: NodeProcess, name: str) -> None:
        client = official_client(secrets, node, "rotation", "tok-writer")
        i = 0
        while not stop.is_set():
            try:
                entity = datastore.Entity(client.key("K", f"{name}-{i}"))
                entity["i"] = i
                client.put(entity)
                done[0] += 1
            except Exception as exc:
                failures.append(exc)
            i += 1

    threads = [
        threading.Thread(target=load, args=(node, node.node_id), daemon=True) for node in nodes
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        fresh = secrets.ca.issue("peer-rotated")
        secrets.ca.write(secrets.root, "peer", fresh)  # same paths: the nodes reload them

        def rotated() -> bool:
            return all(peer_cert_serial(secrets, n.peer_port) == fresh.serial for n in nodes)

        wait_until(rotated, 15, "new peer connections did not get the new certificate")
        time.sleep(1.0)  # keep writing with the new material
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert all(before[n] != fresh.serial for n in before)
    assert not failures, failures[:3]
    assert done[0] > 20
    assert admin_get(cluster.leader(), "/admin/status", token=ADMIN_TOKEN)[0] == 200
