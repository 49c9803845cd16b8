"""What spec.security needs written: the CA, peer and client certificate Secrets, the
admin token, or cert-manager Certificates; and the certificates' validity for the status.

    plan_credentials(ref, spec, secrets, previous, now, entropy) -> CredentialsPlan

Pure, like the planner that calls it: `secrets` are the Secrets `observe` read (name ->
decoded data; absent when they do not exist), `now` and `entropy` are arguments. Level-
based: once the writes took effect, planning again writes nothing and draws no entropy.

Decisions, per Secret:
- `<name>-admin-token`: created once (POST, never overwritten); rewritten only when it
  exists without a token.
- `<name>-client-tokens` (clientAuth mode Tokens without tokensSecretName): created once
  (POST) and never rewritten, rotated or repaired: applications hold its token, and the
  user may add grants to its file. One that lacks the `tokens` file is reported (the
  node pods cannot mount it); deleting it makes the operator create a new token.
- `<name>-ca` (issuer selfSigned): created once; a CA Secret that cannot be parsed is
  reported and left alone (no certificates are issued from it) - replacing it would cut
  every replica off from its peers at once.
- leaf Secrets (`<name>-peer-tls`, `<name>-client-tls`): created when missing; reissued
  from the CA when they are `rotateBeforeExpiry` or less from expiry, were not signed by
  the current CA, carry the wrong CA bundle or key, or no longer cover the names.
- issuer certManager: Certificate objects instead (cert-manager renews them); the
  Secrets are read only to report expiry, and a changed notAfter is announced.
Writes are ordered CA first: when creating the CA loses a race (409), `apply` skips the
rest, and the next pass reissues from the CA that won.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import CertIssuer, DatastoreSpec
from zonestore_operator.model.status import CertificatesStatus, CertStatus, format_time
from zonestore_operator.resources import certs, meta, security

Secrets = Mapping[str, Mapping[str, bytes]]


class WriteMode(enum.Enum):
    CREATE = "Create"  # POST: an existing Secret is never overwritten
    APPLY = "Apply"  # server-side apply: replaces the data


@dataclass(frozen=True, slots=True)
class SecretWrite:
    mode: WriteMode
    secret: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Notice:
    """An Event to post: (type, reason, message)."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class CredentialsPlan:
    writes: tuple[SecretWrite, ...] = ()
    objects: tuple[Mapping[str, Any], ...] = ()  # cert-manager Certificates
    certificates: CertificatesStatus = field(default_factory=CertificatesStatus)
    notices: tuple[Notice, ...] = ()


def secret_names(ref: DatastoreRef, spec: DatastoreSpec) -> list[str]:
    """The Secrets `observe` reads for this spec."""
    sec = spec.security
    names = [meta.admin_token_secret_name(ref)]
    if sec.operator_ca:
        names.append(meta.ca_secret_name(ref))
    if sec.peer_tls:
        names.append(meta.peer_tls_secret_name(ref))
    if sec.client_tls.enabled:
        names.append(meta.client_tls_secret_name(ref, spec))
    if sec.client_auth.operator_tokens:
        names.append(meta.client_tokens_secret_name(ref, spec))
    return names


def admin_token(ref: DatastoreRef, secrets: Secrets) -> str | None:
    raw = (secrets.get(meta.admin_token_secret_name(ref)) or {}).get(security.ADMIN_TOKEN)
    token = raw.decode(errors="replace").strip() if raw else ""
    return token or None


def _when(moment: datetime) -> str:
    return format_time(moment)


class _Planner:
    def __init__(
        self,
        ref: DatastoreRef,
        spec: DatastoreSpec,
        secrets: Secrets,
        previous: CertificatesStatus,
        now: datetime,
        entropy: certs.Entropy,
    ) -> None:
        self.ref, self.spec, self.secrets, self.previous = ref, spec, secrets, previous
        self.now, self.entropy = now, entropy
        self.rotate_before = spec.security.certificates.rotate_before_expiry
        self.writes: list[SecretWrite] = []
        self.objects: list[Mapping[str, Any]] = []
        self.notices: list[Notice] = []

    def notice(self, type_: str, reason: str, message: str) -> None:
        self.notices.append(Notice(type_, reason, message))

    def admin_token(self) -> None:
        name = meta.admin_token_secret_name(self.ref)
        if name not in self.secrets:
            self.writes.append(
                SecretWrite(WriteMode.CREATE, security.admin_token_secret(self.ref, self.entropy))
            )
        elif admin_token(self.ref, self.secrets) is None:
            self.writes.append(
                SecretWrite(WriteMode.APPLY, security.admin_token_secret(self.ref, self.entropy))
            )
            self.notice("Warning", "AdminTokenReplaced", f"Secret {name} held no token")

    def client_tokens(self) -> None:
        name = meta.client_tokens_secret_name(self.ref, self.spec)
        data = self.secrets.get(name)
        if data is None:
            secret = security.client_tokens_secret(self.ref, self.spec, self.entropy)
            self.writes.append(SecretWrite(WriteMode.CREATE, secret))
            self.notice(
                "Normal",
                "ClientTokensCreated",
                f"created Secret {name}: clients send its '{security.CLIENT_TOKEN}' as "
                "'authorization: Bearer <token>' (read-write, every project and database)",
            )
        elif not data.get(security.CLIENT_TOKENS_FILE, b"").strip():
            self.notice(
                "Warning",
                "ClientTokensInvalid",
                f"Secret {name} has no '{security.CLIENT_TOKENS_FILE}' file, so the node pods "
                "cannot mount it; left alone (delete it to have a new token generated)",
            )

    def ca(self) -> tuple[certs.KeyPair | None, CertStatus | None]:
        name = meta.ca_secret_name(self.ref)
        data = self.secrets.get(name)
        if data is None:
            pair = certs.issue_ca(
                f"zonestore CA {self.ref.namespace}/{self.ref.name}", self.now, self.entropy
            )
            self.writes.append(SecretWrite(WriteMode.CREATE, security.ca_secret(self.ref, pair)))
            self.notice("Normal", "CAIssued", f"created the certificate authority in {name}")
        else:
            pair = certs.KeyPair(data.get(security.CA_CERT, b""), data.get(security.CA_KEY, b""))
        info = certs.parse(pair.cert_pem)
        if info is None or not info.is_ca or not certs.key_matches(pair.cert_pem, pair.key_pem):
            self.notice(
                "Warning",
                "CAInvalid",
                f"Secret {name} does not hold a CA certificate and its key; issuing no "
                "certificates (delete it together with the certificate Secrets to start over)",
            )
            return None, None
        return pair, CertStatus(name, info.not_before, info.not_after)

    def leaf(
        self,
        ca: certs.KeyPair,
        name: str,
        component: str,
        what: str,
        dns_names: list[str],
    ) -> CertStatus:
        data = self.secrets.get(name)
        cert_pem = (data or {}).get(security.TLS_CERT, b"")
        info = certs.parse(cert_pem) if data is not None else None
        mode, reason, why = WriteMode.APPLY, "", ""
        if data is None:
            mode, reason, why = WriteMode.CREATE, "CertificateIssued", "issued"
        elif (
            info is None
            or not certs.signed_by(cert_pem, ca.cert_pem)
            or data.get(security.CA_CERT) != ca.cert_pem
            or not certs.key_matches(cert_pem, data.get(security.TLS_KEY, b""))
        ):
            reason, why = "CertificateReissued", "reissued: not from the current CA"
        elif not certs.covers(info, dns_names):
            reason, why = "CertificateReissued", "reissued: its names changed"
        elif certs.needs_rotation(info, self.now, self.rotate_before):
            reason = "CertificateRotated"
            why = f"rotated: it expires at {_when(info.not_after)}"
        if reason:
            leaf = certs.issue_leaf(
                ca,
                f"{self.ref.name} {what}",
                dns_names,
                self.now,
                self.spec.security.certificates.validity,
                self.entropy,
            )
            secret = security.tls_secret(self.ref, name, component, leaf, ca.cert_pem)
            self.writes.append(SecretWrite(mode, secret))
            info = certs.parse(leaf.cert_pem)
            assert info is not None
            self.notice(
                "Normal",
                reason,
                f"{what} certificate in {name} {why}; valid until {_when(info.not_after)}",
            )
        assert info is not None
        return CertStatus(
            name, info.not_before, info.not_after, certs.renew_after(info, self.rotate_before)
        )

    def observed(
        self, name: str, what: str, before: CertStatus | None, renewed_by: timedelta | None
    ) -> CertStatus | None:
        """A certificate someone else writes (cert-manager, the user): only reported."""
        data = self.secrets.get(name)
        info = certs.parse(data.get(security.TLS_CERT, b"")) if data else None
        if info is None:
            return None
        if before is not None and before.not_after != info.not_after:
            self.notice(
                "Normal",
                "CertificateRotated",
                f"{what} certificate in {name} renewed; valid until {_when(info.not_after)}",
            )
        renew = info.not_after - renewed_by if renewed_by is not None else None
        return CertStatus(name, info.not_before, info.not_after, renew)

    def run(self) -> CredentialsPlan:
        ref, spec, sec = self.ref, self.spec, self.spec.security
        self.admin_token()
        if sec.client_auth.operator_tokens:
            self.client_tokens()
        ca_status = peer = client = None
        peer_name = meta.peer_tls_secret_name(ref)
        client_name = meta.client_tls_secret_name(ref, spec)
        if sec.certificates.issuer is CertIssuer.SELF_SIGNED:
            ca = None
            if sec.operator_ca:
                ca, ca_status = self.ca()
            if ca is not None and sec.peer_tls:
                peer = self.leaf(
                    ca, peer_name, "peer-tls", "peer", security.peer_dns_names(ref, spec)
                )
            if ca is not None and sec.operator_client_tls:
                client = self.leaf(
                    ca, client_name, "client-tls", "client", security.client_dns_names(ref, spec)
                )
        else:
            if sec.peer_tls:
                self.objects.append(
                    security.certificate(
                        ref,
                        spec,
                        meta.peer_certificate_name(ref),
                        peer_name,
                        security.peer_dns_names(ref, spec),
                        "peer-tls",
                    )
                )
                peer = self.observed(peer_name, "peer", self.previous.peer, self.rotate_before)
            if sec.operator_client_tls:
                self.objects.append(
                    security.certificate(
                        ref,
                        spec,
                        meta.client_certificate_name(ref),
                        client_name,
                        security.client_dns_names(ref, spec),
                        "client-tls",
                    )
                )
                client = self.observed(
                    client_name, "client", self.previous.client, self.rotate_before
                )
        if sec.client_tls.enabled and not sec.operator_client_tls:
            client = self.observed(client_name, "client", self.previous.client, None)
        return CredentialsPlan(
            writes=tuple(self.writes),
            objects=tuple(self.objects),
            certificates=CertificatesStatus(ca=ca_status, peer=peer, client=client),
            notices=tuple(self.notices),
        )


def plan_credentials(
    ref: DatastoreRef,
    spec: DatastoreSpec,
    secrets: Secrets,
    previous: CertificatesStatus,
    now: datetime,
    entropy: certs.Entropy,
) -> CredentialsPlan:
    return _Planner(ref, spec, secrets, previous, now, entropy).run()
