"""X.509 for a Datastore: a CA per Datastore and the leaf certificates it signs, as pure
functions of a clock value (`now`) and injected randomness (`entropy(n) -> n bytes`).

Keys are ECDSA P-256, derived from the injected bytes (`derive_private_key`), so a
seeded entropy source gives the same keys and serial numbers every time. The one thing
not drawn from `entropy` is the ECDSA signature nonce, which OpenSSL picks itself: two
issuances with the same inputs differ only in their signature bytes.

Leaf certificates carry both serverAuth and clientAuth: replicas use one certificate to
accept and to open peer connections (mutual TLS). `not_before` is back-dated by
`CLOCK_SKEW` so a node whose clock is a little behind the operator's accepts a fresh one.

Rotation: a leaf within `rotate_before` of its expiry is reissued from the same CA (the
key changes too); the nodes reload the mounted files, no restart. The CA itself lives
`CA_VALIDITY` (10 years) and is not rotated automatically. Rotating it without an outage
takes two steps, because every replica must trust the new CA before any presents a
certificate signed by it:
  1. create the new CA and publish a trust bundle with old + new CA certificates as
     `ca.crt` of the peer Secret; wait until every node has reloaded it;
  2. reissue the peer certificate from the new CA; once every node presents it, drop
     the old CA from the bundle.
(By hand today: delete `<name>-ca` and `<name>-peer-tls` together and the operator
issues both anew - the replicas cannot talk to each other until all have reloaded.)

No I/O, no clock, no global RNG. Imports only `cryptography`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Entropy = Callable[[int], bytes]

CA_VALIDITY = timedelta(days=3650)
CLOCK_SKEW = timedelta(minutes=5)
ORGANIZATION = "zonestore"
# Order of the P-256 group: private scalars are in [1, n - 1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True, slots=True)
class KeyPair:
    """PEM certificate and its PKCS#8 PEM private key."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What the operator needs to know about a certificate it finds in a Secret."""

    subject_cn: str
    issuer_cn: str
    not_before: datetime
    not_after: datetime
    dns_names: tuple[str, ...]
    is_ca: bool


def private_key(entropy: Entropy) -> ec.EllipticCurvePrivateKey:
    # 48 bytes reduced modulo n - 1: the bias is below 2^-128.
    scalar = int.from_bytes(entropy(48), "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _serial(entropy: Entropy) -> int:
    # RFC 5280 §4.1.2.2: positive, at most 20 octets; 159 random bits.
    return (int.from_bytes(entropy(20), "big") >> 1) or 1


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def issue_ca(common_name: str, now: datetime, entropy: Entropy) -> KeyPair:
    """A self-signed CA that may sign leaf certificates only (pathLen 0)."""
    key = private_key(entropy)
    name = _name(common_name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial(entropy))
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def issue_leaf(
    ca: KeyPair,
    common_name: str,
    dns_names: Sequence[str],
    now: datetime,
    validity: timedelta,
    entropy: Entropy,
) -> KeyPair:
    """A leaf certificate for `dns_names`, signed by `ca`, for server and client auth."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = private_key(entropy)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(_serial(entropy))
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def _cn(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def parse(cert_pem: bytes) -> CertInfo | None:
    """The first certificate of a PEM bundle; None when it is not one."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return None
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns = tuple(sans.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns = ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertInfo(
        subject_cn=_cn(cert.subject),
        issuer_cn=_cn(cert.issuer),
        not_before=cert.not_valid_before_utc.astimezone(UTC),
        not_after=cert.not_valid_after_utc.astimezone(UTC),
        dns_names=dns,
        is_ca=is_ca,
    )


def signed_by(cert_pem: bytes, ca_cert_pem: bytes) -> bool:
    """Whether `ca_cert_pem` issued `cert_pem` (names match and the signature checks)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_cert_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether `key_pem` is the private key of `cert_pem`."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return False
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt))


def renew_after(info: CertInfo, rotate_before: timedelta) -> datetime:
    return info.not_after - rotate_before


def needs_rotation(info: CertInfo, now: datetime, rotate_before: timedelta) -> bool:
    """Due from the moment it is `rotate_before` from expiry (inclusive)."""
    return now >= renew_after(info, rotate_before)


def covers(info: CertInfo, names: Sequence[str]) -> bool:
    """Every name in `names` is a SAN of the certificate, literally or by a wildcard that
    matches exactly one leftmost label (RFC 6125 §6.4.3)."""

    def matched(name: str) -> bool:
        for san in info.dns_names:
            if san == name:
                return True
            if san.startswith("*.") and "." in name:
                head, tail = name.split(".", 1)
                if head and tail == san[2:]:
                    return True
        return False

    return all(matched(n) for n in names)
