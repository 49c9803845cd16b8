"""The pure X.509 functions: a CA per Datastore, leaf certificates it signs (names,
validity, key usage for both ends of mutual TLS), seeded determinism, and the rotation
decision at its boundary."""

from __future__ import annotations

import random
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import parse_spec
from zonestore_operator.resources import certs, security

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
REF = DatastoreRef(name="orders", namespace="shop", uid="u")
SPEC = parse_spec({"zones": ["zone-a", "zone-b", "zone-c"], "replicasPerZone": 2})
VALIDITY = timedelta(days=90)


def _entropy(seed: int = 7) -> certs.Entropy:
    return random.Random(seed).randbytes


def _ca() -> certs.KeyPair:
    return certs.issue_ca("zonestore CA shop/orders", NOW, _entropy(1))


def _peer(ca: certs.KeyPair | None = None) -> certs.KeyPair:
    names = security.peer_dns_names(REF, SPEC)
    return certs.issue_leaf(ca or _ca(), "orders peer", names, NOW, VALIDITY, _entropy(2))


def test_ca_is_a_self_signed_p256_ca_that_signs_only_leaves() -> None:
    ca = _ca()
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    assert cert.issuer == cert.subject
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert cert.not_valid_after_utc == NOW + certs.CA_VALIDITY
    assert certs.key_matches(ca.cert_pem, ca.key_pem)


def test_peer_certificate_names_every_pod_the_wildcard_and_cluster_local_names() -> None:
    info = certs.parse(_peer().cert_pem)
    assert info is not None
    sans = set(info.dns_names)
    for zone in ("zone-a", "zone-b", "zone-c"):
        for i in (0, 1):
            assert f"orders-{zone}-{i}.orders-peers.shop.svc" in sans
            assert f"orders-{zone}-{i}.orders-peers.shop.svc.cluster.local" in sans
    assert "*.orders-peers.shop.svc" in sans
    assert "*.orders-peers.shop.svc.cluster.local" in sans
    assert "orders-peers.shop.svc" in sans
    # A replacement pod beyond replicasPerZone is covered by the wildcard.
    assert certs.covers(info, ["orders-zone-a-7.orders-peers.shop.svc"])
    assert not certs.covers(info, ["orders-zone-a-7.other-peers.shop.svc"])
    assert not certs.covers(info, ["a.b.orders-peers.shop.svc"])  # one label only


def test_leaf_is_signed_by_its_ca_and_valid_for_the_configured_time() -> None:
    ca = _ca()
    leaf = _peer(ca)
    assert certs.signed_by(leaf.cert_pem, ca.cert_pem)
    assert not certs.signed_by(leaf.cert_pem, certs.issue_ca("other", NOW, _entropy(9)).cert_pem)
    info = certs.parse(leaf.cert_pem)
    assert info is not None
    assert info.not_after == NOW + VALIDITY
    assert info.not_before == NOW - certs.CLOCK_SKEW  # tolerates a node a little behind
    assert not info.is_ca
    assert certs.key_matches(leaf.cert_pem, leaf.key_pem)
    assert not certs.key_matches(leaf.cert_pem, ca.key_pem)


def test_leaf_serves_and_authenticates_both_ends_of_mutual_tls() -> None:
    cert = x509.load_pem_x509_certificate(_peer().cert_pem)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_openssl_verifies_the_leaf_against_the_ca_for_a_pod_name(tmp_path: Path) -> None:
    """The files as the node reads them load into an SSLContext for both roles."""
    ca = _ca()
    leaf = _peer(ca)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "tls.crt").write_bytes(leaf.cert_pem)
    (tmp_path / "tls.key").write_bytes(leaf.key_pem)
    for purpose in (ssl.Purpose.CLIENT_AUTH, ssl.Purpose.SERVER_AUTH):
        context = ssl.create_default_context(purpose, cafile=str(tmp_path / "ca.crt"))
        context.load_cert_chain(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))


def test_a_leaf_never_outlives_its_ca() -> None:
    ca = _ca()
    late = NOW + certs.CA_VALIDITY - timedelta(days=10)
    leaf = certs.issue_leaf(ca, "x", ["x.svc"], late, VALIDITY, _entropy())
    info = certs.parse(leaf.cert_pem)
    assert info is not None and info.not_after == NOW + certs.CA_VALIDITY


def test_seeded_entropy_gives_the_same_keys_and_serials() -> None:
    a = certs.issue_ca("ca", NOW, _entropy(3))
    b = certs.issue_ca("ca", NOW, _entropy(3))
    c = certs.issue_ca("ca", NOW, _entropy(4))
    assert a.key_pem == b.key_pem and a.key_pem != c.key_pem
    serial = x509.load_pem_x509_certificate(a.cert_pem).serial_number
    assert serial == x509.load_pem_x509_certificate(b.cert_pem).serial_number
    assert 0 < serial < 2**159


@pytest.mark.parametrize(
    ("offset", "due"),
    [
        (timedelta(seconds=-1), False),  # one second before the boundary
        (timedelta(0), True),  # exactly rotateBeforeExpiry before expiry
        (timedelta(days=29), True),
    ],
)
def test_rotation_is_due_from_rotate_before_expiry_on(offset: timedelta, due: bool) -> None:
    info = certs.parse(_peer().cert_pem)
    assert info is not None
    rotate_before = timedelta(days=30)
    boundary = info.not_after - rotate_before
    assert certs.renew_after(info, rotate_before) == boundary
    assert certs.needs_rotation(info, boundary + offset, rotate_before) is due


def test_garbage_is_not_a_certificate() -> None:
    assert certs.parse(b"not a pem") is None
    assert certs.parse(b"") is None
    assert not certs.signed_by(b"junk", _ca().cert_pem)
    assert not certs.key_matches(b"junk", b"junk")
