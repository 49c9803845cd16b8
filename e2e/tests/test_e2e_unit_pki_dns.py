"""Unit tests for the e2e PKI and cluster DNS: no control plane, no namespaces needed.

The PKI tests check what the API server will rely on (SANs, CN/O as user and groups,
chains to the CA) and that a real TLS handshake works with the files; the DNS tests
feed Service/EndpointSlice dicts to the pure table and query a server on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import ssl
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from dnslib import QTYPE, RCODE, DNSRecord

from zonestore_e2e import dns, pki

# --- PKI ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> pki.Pki:
    return pki.Pki.build(tmp_path_factory.mktemp("pki"))


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _subject(cert: x509.Certificate) -> tuple[str, list[str]]:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return str(cn), [str(o) for o in orgs]


def _kubeconfig(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _embedded_cert(path: Path) -> x509.Certificate:
    user = _kubeconfig(path)["users"][0]["user"]
    return x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))


def test_apiserver_certificate_names_every_address_the_api_is_reached_by(built: pki.Pki) -> None:
    san = _cert(built.apiserver.cert).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    ips = {str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)}
    names = set(san.value.get_values_for_type(x509.DNSName))
    assert ips == {"10.244.0.1", "10.96.0.1", "127.0.0.1"}
    assert names == {
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    }


@pytest.mark.parametrize(
    ("kubeconfig", "user", "groups"),
    [
        ("admin", "zse2e-admin", ["system:masters"]),
        ("kube-controller-manager", "system:kube-controller-manager", []),
        ("kube-scheduler", "system:kube-scheduler", []),
    ],
)
def test_component_kubeconfigs_carry_the_users_kubernetes_expects(
    built: pki.Pki, kubeconfig: str, user: str, groups: list[str]
) -> None:
    path = built.directory / f"{kubeconfig}.kubeconfig"
    cert = _embedded_cert(path)
    assert _subject(cert) == (user, groups)
    cert.verify_directly_issued_by(_cert(built.ca_cert))
    cluster = _kubeconfig(path)["clusters"][0]["cluster"]
    assert cluster["server"] == "https://10.244.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == built.ca_cert.read_bytes()


def test_node_kubeconfig_is_the_node_user_in_the_nodes_group(built: pki.Pki) -> None:
    cert = _embedded_cert(built.node_kubeconfig("z1-n0"))
    assert _subject(cert) == ("system:node:z1-n0", ["system:nodes"])


def test_token_kubeconfig_uses_the_token_and_trusts_the_ca(built: pki.Pki, tmp_path: Path) -> None:
    config = _kubeconfig(built.kubeconfig_for_token(tmp_path / "sa.kubeconfig", "abc.def"))
    assert config["users"][0]["user"] == {"token": "abc.def"}
    cluster = config["clusters"][0]["cluster"]
    assert base64.b64decode(cluster["certificate-authority-data"]) == built.ca_cert.read_bytes()


def test_rebuilding_the_same_directory_reuses_every_file(built: pki.Pki) -> None:
    before = {p.name: p.read_bytes() for p in built.directory.iterdir()}
    pki.Pki.build(built.directory)
    after = {p.name: p.read_bytes() for p in built.directory.iterdir()}
    assert after == before


def test_a_new_ca_reissues_the_certificates_signed_by_the_old_one(tmp_path: Path) -> None:
    first = pki.Pki.build(tmp_path)
    old_admin = first.admin.cert.read_bytes()
    first.ca_cert.unlink()
    second = pki.Pki.build(tmp_path)
    _embedded_cert(second.admin_kubeconfig).verify_directly_issued_by(_cert(second.ca_cert))
    assert second.admin.cert.read_bytes() != old_admin


def test_private_keys_are_readable_by_the_owner_only(built: pki.Pki) -> None:
    for key in (built.ca_key, built.apiserver.key, built.sa_private_key, built.admin.key):
        assert key.stat().st_mode & 0o077 == 0


def test_serving_and_client_certificates_complete_a_mutual_tls_handshake(built: pki.Pki) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(built.ca_cert))
    server_ctx.load_cert_chain(str(built.apiserver.cert), str(built.apiserver.key))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(built.ca_cert))
    client_ctx.load_cert_chain(str(built.admin.cert), str(built.admin.key))
    peer: dict[str, Any] = {}

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                peer.update(tls.getpeercert() or {})
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.recv(2) == b"ok"
        thread.join(timeout=5)
    subject = dict(item for rdn in peer["subject"] for item in rdn)
    assert subject == {"commonName": "zse2e-admin", "organizationName": "system:masters"}


# --- DNS name table ----------------------------------------------------------------------


def _service(ns: str, name: str, *, cluster_ip: str = "None", kind: str = "ClusterIP") -> Any:
    return {
        "metadata": {"namespace": ns, "name": name},
        "spec": {"type": kind, "clusterIP": cluster_ip},
    }


def _endpoint(ip: str, *, hostname: str | None = None, ready: bool | None = True) -> Any:
    ep: dict[str, Any] = {"addresses": [ip], "conditions": {}}
    if ready is not None:
        ep["conditions"]["ready"] = ready
    if hostname is not None:
        ep["hostname"] = hostname
    return ep


def _slice(ns: str, name: str, service: str, *endpoints: Any, family: str = "IPv4") -> Any:
    return {
        "metadata": {
            "namespace": ns,
            "name": name,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": family,
        "endpoints": list(endpoints),
    }


STORE = [_service("t1", "store")]
STORE_SLICE = _slice(
    "t1",
    "store-abc",
    "store",
    _endpoint("10.244.2.11", hostname="store-1"),
    _endpoint("10.244.1.10", hostname="store-0"),
    _endpoint("10.244.3.12", hostname="store-2", ready=False),
)


def test_headless_service_name_answers_its_ready_endpoints_in_address_order() -> None:
    table = dns.build_table(STORE, [STORE_SLICE])
    assert table.lookup("store.t1.svc.cluster.local.") == dns.Answer(
        dns.Rcode.NOERROR, ("10.244.1.10", "10.244.2.11")
    )


def test_pod_hostname_under_its_service_answers_that_pods_address() -> None:
    table = dns.build_table(STORE, [STORE_SLICE])
    assert table.lookup("Store-1.store.t1.svc.cluster.local").addresses == ("10.244.2.11",)


def test_not_ready_endpoint_hostname_does_not_resolve() -> None:
    table = dns.build_table(STORE, [STORE_SLICE])
    assert table.lookup("store-2.store.t1.svc.cluster.local").rcode is dns.Rcode.NXDOMAIN


def test_endpoint_without_a_ready_condition_counts_as_ready() -> None:
    table = dns.build_table(
        STORE, [_slice("t1", "s", "store", _endpoint("10.244.1.5", ready=None))]
    )
    assert table.lookup("store.t1.svc.cluster.local").addresses == ("10.244.1.5",)


def test_cluster_ip_service_answers_endpoints_because_nothing_routes_cluster_ips() -> None:
    services = [_service("t1", "api", cluster_ip="10.96.4.4")]
    slices = [
        _slice("t1", "api-1", "api", _endpoint("10.244.1.20")),
        _slice("t1", "api-2", "api", _endpoint("10.244.3.20")),
    ]
    table = dns.build_table(services, slices)
    assert table.lookup("api.t1.svc.cluster.local").addresses == ("10.244.1.20", "10.244.3.20")


def test_service_without_ready_endpoints_exists_with_no_addresses() -> None:
    table = dns.build_table(STORE, [])
    assert table.lookup("store.t1.svc.cluster.local") == dns.Answer(dns.Rcode.NOERROR, ())


def test_slices_of_a_missing_service_and_ipv6_slices_are_ignored() -> None:
    slices = [
        _slice("t1", "gone-1", "gone", _endpoint("10.244.1.7")),
        _slice("t1", "store-v6", "store", _endpoint("fd00::7"), family="IPv6"),
    ]
    table = dns.build_table(STORE, slices)
    assert table.lookup("gone.t1.svc.cluster.local").rcode is dns.Rcode.NXDOMAIN
    assert table.lookup("store.t1.svc.cluster.local").addresses == ()


def test_external_name_services_are_not_served() -> None:
    table = dns.build_table([_service("t1", "ext", kind="ExternalName")], [])
    assert table.lookup("ext.t1.svc.cluster.local").rcode is dns.Rcode.NXDOMAIN


def test_kubernetes_service_is_the_api_servers_address_even_before_any_list() -> None:
    table = dns.build_table([], [])
    assert table.lookup("kubernetes.default.svc.cluster.local").addresses == ("10.244.0.1",)


def test_unknown_cluster_names_are_nxdomain_and_outside_names_are_refused() -> None:
    table = dns.build_table(STORE, [STORE_SLICE])
    assert table.lookup("nope.t1.svc.cluster.local").rcode is dns.Rcode.NXDOMAIN
    assert table.lookup("store.t1.svc.cluster.local.t1.svc.cluster.local").rcode is (
        dns.Rcode.NXDOMAIN
    )
    assert table.lookup("example.com").rcode is dns.Rcode.REFUSED
    assert table.lookup("notcluster.local").rcode is dns.Rcode.REFUSED


def test_cluster_state_follows_watch_events_and_relists() -> None:
    state = dns.ClusterState()
    state.replace("services", STORE)
    state.apply("endpointslices", "ADDED", STORE_SLICE)
    assert len(state.table().lookup("store.t1.svc.cluster.local").addresses) == 2
    state.apply("endpointslices", "DELETED", STORE_SLICE)
    assert state.table().lookup("store.t1.svc.cluster.local").addresses == ()
    state.apply("endpointslices", "ADDED", STORE_SLICE)
    state.replace("services", [])
    assert state.table().lookup("store.t1.svc.cluster.local").rcode is dns.Rcode.NXDOMAIN


def test_resolv_conf_searches_the_pods_namespace_first() -> None:
    assert dns.resolv_conf("t1") == (
        "nameserver 10.244.0.2\n"
        "search t1.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n"
    )


# --- DNS wire format -----------------------------------------------------------------------


def _ask(table: dns.NameTable, name: str, qtype: str = "A") -> DNSRecord:
    reply = dns.respond(table, bytes(DNSRecord.question(name, qtype).pack()), udp=True)
    assert reply is not None
    return DNSRecord.parse(reply)


def test_reply_carries_a_records_with_the_short_ttl() -> None:
    reply = _ask(dns.build_table(STORE, [STORE_SLICE]), "store.t1.svc.cluster.local")
    assert reply.header.rcode == RCODE.NOERROR
    assert reply.header.aa == 1
    assert [(str(rr.rdata), rr.ttl) for rr in reply.rr] == [
        ("10.244.1.10", 5),
        ("10.244.2.11", 5),
    ]


def test_aaaa_for_an_existing_name_is_no_data_with_an_soa() -> None:
    reply = _ask(dns.build_table(STORE, [STORE_SLICE]), "store.t1.svc.cluster.local", "AAAA")
    assert reply.header.rcode == RCODE.NOERROR
    assert reply.rr == []
    assert [QTYPE[rr.rtype] for rr in reply.auth] == ["SOA"]


def test_refused_reply_is_not_authoritative() -> None:
    reply = _ask(dns.build_table([], []), "pypi.org")
    assert reply.header.rcode == RCODE.REFUSED
    assert reply.header.aa == 0


def test_oversized_udp_reply_is_truncated() -> None:
    many = [_endpoint(str(ipaddress.ip_address("10.244.1.0") + i)) for i in range(1, 60)]
    reply = _ask(
        dns.build_table(STORE, [_slice("t1", "big", "store", *many)]),
        "store.t1.svc.cluster.local",
    )
    assert reply.header.tc == 1
    assert reply.rr == []


def test_garbage_is_dropped() -> None:
    assert dns.respond(dns.build_table([], []), b"\x00\x01") is None


# --- DNS server on loopback --------------------------------------------------------------


@pytest.fixture
async def server_port() -> AsyncIterator[int]:
    table = dns.build_table(STORE, [STORE_SLICE])
    server = dns.DnsServer(lambda: table)
    port = await server.start("127.0.0.1", 0)
    try:
        yield port
    finally:
        await server.aclose()


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_server_answers_over_udp_and_tcp(server_port: int, tcp: bool) -> None:
    query = DNSRecord.question("store-0.store.t1.svc.cluster.local")
    raw = await asyncio.to_thread(query.send, "127.0.0.1", server_port, tcp=tcp, timeout=5)
    reply = DNSRecord.parse(raw)
    assert reply.header.id == query.header.id
    assert [str(rr.rdata) for rr in reply.rr] == ["10.244.1.10"]


async def test_server_serves_several_queries_on_one_tcp_connection(server_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server_port)
    try:
        for name, rcode in (("store.t1.svc.cluster.local", 0), ("x.t1.svc.cluster.local", 3)):
            packed = bytes(DNSRecord.question(name).pack())
            writer.write(len(packed).to_bytes(2, "big") + packed)
            await writer.drain()
            length = int.from_bytes(await reader.readexactly(2), "big")
            reply = DNSRecord.parse(await reader.readexactly(length))
            assert reply.header.rcode == rcode
    finally:
        writer.close()
        await writer.wait_closed()
