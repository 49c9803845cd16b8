"""Certificates, keys and kubeconfigs for the e2e control plane.

Owns one directory: a CA (which also verifies client certificates, `--client-ca-file`),
the kube-apiserver serving certificate, the service-account key pair, and one client
certificate + kubeconfig per identity (admin, kube-controller-manager, kube-scheduler,
each Node). Identities are real Kubernetes users: `system:node:<name>` in
`system:nodes` makes the Node authorizer and NodeRestriction admission judge the
process kubelets exactly as they judge a real kubelet.

Building is idempotent per directory: a file that exists, is still valid for a day and
chains to the CA in the directory is reused, anything else is (re)written. Keys are
ECDSA P-256 (fast to make, accepted for TLS serving and client certificates); the
service-account signing key is RSA because RS256 is what every token consumer expects.

Imports only `cryptography` and the standard library; knows nothing of processes.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

APISERVER_URL = "https://10.244.0.1:6443"
SERVING_IPS = ("10.244.0.1", "10.96.0.1", "127.0.0.1")
SERVING_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
ADMIN_USER = "zse2e-admin"
FRONT_PROXY_USER = "front-proxy-client"
CA_VALIDITY = datetime.timedelta(days=365)
LEAF_VALIDITY = datetime.timedelta(days=90)
# A file closer than this to expiry is re-issued rather than reused.
MIN_REMAINING_VALIDITY = datetime.timedelta(days=1)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Atomic write (temp + rename) so a crashed build never leaves half a PEM behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{path}: unexpected key type {type(key).__name__}")
    return key


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signing only; a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _still_good(cert: x509.Certificate, issuer: x509.Certificate | None) -> bool:
    if cert.not_valid_after_utc - _now() < MIN_REMAINING_VALIDITY:
        return False
    if issuer is None:
        return True
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Credentials:
    """A certificate and its key, as files."""

    cert: Path
    key: Path


class Pki:
    """The cluster's PKI in `directory`; `Pki.build(directory)` creates or reuses it."""

    def __init__(self, directory: Path, server_url: str = APISERVER_URL) -> None:
        self.directory = directory
        self.server_url = server_url
        self._ca_cert: x509.Certificate | None = None
        self._ca_key: PrivateKey | None = None

    @classmethod
    def build(cls, directory: Path, server_url: str = APISERVER_URL) -> Pki:
        pki = cls(directory, server_url)
        directory.mkdir(parents=True, exist_ok=True)
        pki._ensure_ca()
        pki._ensure_cert(
            "apiserver",
            _name("kube-apiserver"),
            server=True,
            ips=SERVING_IPS,
            dns_names=SERVING_DNS_NAMES,
        )
        pki._ensure_cert("front-proxy-client", _name(FRONT_PROXY_USER), server=False)
        pki._ensure_sa_keys()
        pki._ensure_client_kubeconfig("admin", ADMIN_USER, ("system:masters",))
        pki._ensure_client_kubeconfig("kube-controller-manager", "system:kube-controller-manager")
        pki._ensure_client_kubeconfig("kube-scheduler", "system:kube-scheduler")
        return pki

    # --- paths -------------------------------------------------------------------------

    @property
    def ca_cert(self) -> Path:
        """The CA certificate: `--client-ca-file`, `--root-ca-file` and every kubeconfig's
        certificate-authority."""
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """CA key; KCM's CSR signer (`--cluster-signing-key-file`) uses it too."""
        return self.directory / "ca.key"

    @property
    def apiserver(self) -> Credentials:
        return Credentials(self.directory / "apiserver.crt", self.directory / "apiserver.key")

    @property
    def front_proxy_client(self) -> Credentials:
        """The apiserver's client certificate towards aggregated API servers
        (`--proxy-client-*`). With it the apiserver publishes a request-header CA, and
        KCM and the scheduler stop logging, every second, that the CA bundle is empty."""
        return self._credentials("front-proxy-client")

    @property
    def sa_public_key(self) -> Path:
        """`--service-account-key-file` of the apiserver (verifies tokens)."""
        return self.directory / "sa.pub"

    @property
    def sa_private_key(self) -> Path:
        """`--service-account-signing-key-file` of the apiserver and
        `--service-account-private-key-file` of KCM."""
        return self.directory / "sa.key"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.directory / "admin.kubeconfig"

    @property
    def admin(self) -> Credentials:
        """The admin's client certificate (for probing `/readyz` without a kubeconfig)."""
        return self._credentials("admin")

    @property
    def controller_manager_kubeconfig(self) -> Path:
        return self.directory / "kube-controller-manager.kubeconfig"

    @property
    def scheduler_kubeconfig(self) -> Path:
        return self.directory / "kube-scheduler.kubeconfig"

    def node_kubeconfig(self, node_name: str) -> Path:
        """Kubeconfig of the kubelet of `node_name`: user `system:node:<name>` in group
        `system:nodes`, issued on first use."""
        return self._ensure_client_kubeconfig(
            f"node-{node_name}", f"system:node:{node_name}", ("system:nodes",)
        )

    def kubeconfig_for_token(self, path: Path, token: str) -> Path:
        """A kubeconfig at `path` authenticating with a bearer token (a ServiceAccount's),
        trusting this cluster's CA; for running a workload as its ServiceAccount."""
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, self._kubeconfig_yaml("token-user", {"token": token}), private=True)
        return path

    # --- building ----------------------------------------------------------------------

    def _credentials(self, stem: str) -> Credentials:
        return Credentials(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")

    def _ca(self) -> tuple[x509.Certificate, PrivateKey]:
        if self._ca_cert is None or self._ca_key is None:
            self._ensure_ca()
        assert self._ca_cert is not None and self._ca_key is not None
        return self._ca_cert, self._ca_key

    def _ensure_ca(self) -> None:
        if self.ca_cert.exists() and self.ca_key.exists():
            cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
            if _still_good(cert, None):
                self._ca_cert, self._ca_key = cert, _load_key(self.ca_key)
                return
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name("zse2e-ca", ("zonestore-e2e",))
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        _write(self.ca_key, _key_pem(key), private=True)
        _write(self.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
        self._ca_cert, self._ca_key = cert, key

    def _ensure_cert(
        self,
        stem: str,
        subject: x509.Name,
        *,
        server: bool,
        ips: Sequence[str] = (),
        dns_names: Sequence[str] = (),
    ) -> Credentials:
        creds = self._credentials(stem)
        ca_cert, ca_key = self._ca()
        if creds.cert.exists() and creds.key.exists():
            cert = x509.load_pem_x509_certificate(creds.cert.read_bytes())
            if _still_good(cert, ca_cert) and cert.subject == subject:
                return creds
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + LEAF_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if ips or dns_names:
            alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
            alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write(creds.key, _key_pem(key), private=True)
        _write(creds.cert, cert.public_bytes(serialization.Encoding.PEM))
        return creds

    def _ensure_sa_keys(self) -> None:
        if self.sa_private_key.exists() and self.sa_public_key.exists():
            return
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _write(self.sa_private_key, _key_pem(key), private=True)
        _write(self.sa_public_key, public)

    def _ensure_client_kubeconfig(self, stem: str, user: str, groups: Sequence[str] = ()) -> Path:
        path = self.directory / f"{stem}.kubeconfig"
        cert_file = self._credentials(stem).cert
        cert_mtime = cert_file.stat().st_mtime_ns if path.exists() and cert_file.exists() else 0
        creds = self._ensure_cert(stem, _name(user, groups), server=False)
        # Rewrite the kubeconfig only when the certificate it embeds changed.
        if path.exists() and creds.cert.stat().st_mtime_ns == cert_mtime:
            return path
        user_entry = {
            "client-certificate-data": _b64(creds.cert.read_bytes()),
            "client-key-data": _b64(creds.key.read_bytes()),
        }
        _write(path, self._kubeconfig_yaml(user, user_entry), private=True)
        return path

    def _kubeconfig_yaml(self, user: str, user_entry: dict[str, str]) -> bytes:
        """A self-contained kubeconfig (data embedded, no relative paths), so it can be
        copied into a pod's volume or handed to any client as is."""
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "zse2e",
                    "cluster": {
                        "server": self.server_url,
                        "certificate-authority-data": _b64(self.ca_cert.read_bytes()),
                    },
                }
            ],
            "users": [{"name": user, "user": user_entry}],
            "contexts": [{"name": "zse2e", "context": {"cluster": "zse2e", "user": user}}],
            "current-context": "zse2e",
        }
        return yaml.safe_dump(config, sort_keys=False).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
