"""Credentials through the planner and the reconcile loop: the first pass creates the
admin token, the CA and the peer certificate (through the Kubernetes gateway, CA first);
later passes write nothing (the admin token stays the same); a certificate is rotated at
the rotateBeforeExpiry boundary with the same CA and an Event; issuer certManager plans
Certificates instead; the admin client carries the token."""

from __future__ import annotations

import asyncio
import base64
import random
from datetime import timedelta
from typing import Any

from simcluster import REF, T0, SimCluster
from test_op_loop import FakeAdmin, FakeKube

from zonestore_operator.model.spec import parse_spec
from zonestore_operator.model.status import DatastoreStatus
from zonestore_operator.reconcile import credentials
from zonestore_operator.reconcile import plan as planner
from zonestore_operator.reconcile.credentials import WriteMode
from zonestore_operator.reconcile.loop import reconcile
from zonestore_operator.resources import certs, security

SPEC_RAW: dict[str, Any] = {"zones": ["a", "b", "c"], "replicasPerZone": 1, "voters": 3}
SPEC = parse_spec(SPEC_RAW)
# Everything the operator can generate: client tokens (mode Tokens) and client TLS too.
SPEC_ALL = parse_spec(
    {**SPEC_RAW, "security": {"clientAuth": {"mode": "Tokens"}, "clientTLS": {"enabled": True}}}
)
ROTATE = SPEC.security.certificates.rotate_before_expiry
VALIDITY = SPEC.security.certificates.validity


def _entropy(seed: int = 11) -> certs.Entropy:
    return random.Random(seed).randbytes


def _writes(p: planner.Plan) -> list[tuple[WriteMode, str]]:
    return [(w.mode, w.secret["metadata"]["name"]) for w in p.secret_writes]


def _settled_sim(spec: Any = SPEC) -> tuple[SimCluster, DatastoreStatus]:
    sim = SimCluster.healthy(spec)
    status = sim.converge(DatastoreStatus(), T0)
    return sim, status


def _body(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "zonestore.io/v1alpha1",
        "kind": "Datastore",
        "metadata": {"name": REF.name, "namespace": REF.namespace, "uid": REF.uid, "generation": 1},
        "spec": dict(spec or SPEC_RAW),
    }


def _secret_data(kube: FakeKube, name: str) -> dict[str, bytes]:
    return security.decode_data(kube.secrets[name]["data"])


def test_first_plan_creates_admin_token_then_ca_then_peer_certificate() -> None:
    sim = SimCluster.healthy(SPEC)
    p = planner.plan(REF, SPEC, DatastoreStatus(), sim.observation(), T0, _entropy())
    # No client tokens: clientAuth defaults to None.
    assert _writes(p) == [
        (WriteMode.CREATE, "ds-admin-token"),
        (WriteMode.CREATE, "ds-ca"),
        (WriteMode.CREATE, "ds-peer-tls"),
    ]
    token, ca, peer = (w.secret for w in p.secret_writes)
    assert token["type"] == "Opaque" and set(token["data"]) == {"token"}
    assert len(base64.b64decode(token["data"]["token"])) == 64  # 32 bytes, hex
    assert ca["type"] == "Opaque" and set(ca["data"]) == {"ca.crt", "ca.key"}
    assert peer["type"] == "kubernetes.io/tls"
    assert set(peer["data"]) == {"tls.crt", "tls.key", "ca.crt"}  # no CA key in it
    assert peer["data"]["ca.crt"] == ca["data"]["ca.crt"]
    for secret in (token, ca, peer):
        assert secret["metadata"]["ownerReferences"][0]["name"] == REF.name
    reasons = [e.reason for e in p.events]
    assert "CAIssued" in reasons and "CertificateIssued" in reasons
    peer_status = p.status.certificates.peer
    assert peer_status is not None
    assert peer_status.not_after == T0 + VALIDITY
    assert peer_status.renew_after == T0 + VALIDITY - ROTATE
    assert p.status.certificates.ca is not None


def test_planning_again_after_the_writes_changes_nothing_and_draws_no_entropy() -> None:
    sim, status = _settled_sim(SPEC_ALL)
    token = sim.secrets["ds-admin-token"]["token"]
    client_tokens = sim.secrets["ds-client-tokens"]
    client_tls = sim.secrets["ds-client-tls"]

    def no_entropy(n: int) -> bytes:
        raise AssertionError("a settled plan must not draw randomness")

    for minutes in (1, 60, 60 * 24):
        p = planner.plan(
            REF, SPEC_ALL, status, sim.observation(), T0 + timedelta(minutes=minutes), no_entropy
        )
        assert p.secret_writes == ()
        assert not [e for e in p.events if e.reason.startswith(("Cert", "CA", "Admin"))]
        sim.apply(p)
        status = p.status
    assert sim.secrets["ds-admin-token"]["token"] == token
    assert sim.secrets["ds-client-tokens"] == client_tokens
    assert sim.secrets["ds-client-tls"] == client_tls


def test_peer_certificate_rotates_at_the_boundary_from_the_same_ca() -> None:
    sim, status = _settled_sim()
    old = sim.secrets["ds-peer-tls"]
    info = certs.parse(old["tls.crt"])
    assert info is not None
    boundary = info.not_after - ROTATE
    before = planner.plan(
        REF, SPEC, status, sim.observation(), boundary - timedelta(seconds=1), _entropy(5)
    )
    assert before.secret_writes == ()
    at = planner.plan(REF, SPEC, status, sim.observation(), boundary, _entropy(5))
    assert _writes(at) == [(WriteMode.APPLY, "ds-peer-tls")]
    [event] = [e for e in at.events if e.reason == "CertificateRotated"]
    assert event.type == "Normal" and "ds-peer-tls" in event.message
    sim.apply(at)
    new = sim.secrets["ds-peer-tls"]
    assert new["tls.key"] != old["tls.key"]
    assert new["ca.crt"] == old["ca.crt"] == sim.secrets["ds-ca"]["ca.crt"]
    assert certs.signed_by(new["tls.crt"], sim.secrets["ds-ca"]["ca.crt"])
    new_info = certs.parse(new["tls.crt"])
    assert new_info is not None and new_info.not_after == boundary + VALIDITY
    assert at.status.certificates.peer is not None
    assert at.status.certificates.peer.not_after == boundary + VALIDITY
    again = planner.plan(REF, SPEC, at.status, sim.observation(), boundary, _entropy(6))
    assert again.secret_writes == ()


def test_a_peer_certificate_from_another_ca_is_reissued() -> None:
    sim, status = _settled_sim()
    stranger = certs.issue_ca("someone else", T0, _entropy(99))
    leaf = certs.issue_leaf(
        stranger, "x", security.peer_dns_names(REF, SPEC), T0, VALIDITY, _entropy(98)
    )
    sim.secrets["ds-peer-tls"] = {
        "tls.crt": leaf.cert_pem,
        "tls.key": leaf.key_pem,
        "ca.crt": stranger.cert_pem,
    }
    p = planner.plan(REF, SPEC, status, sim.observation(), T0, _entropy())
    assert _writes(p) == [(WriteMode.APPLY, "ds-peer-tls")]
    assert any(e.reason == "CertificateReissued" for e in p.events)


def test_an_unreadable_ca_is_reported_and_not_replaced() -> None:
    sim, status = _settled_sim()
    sim.secrets["ds-ca"] = {"ca.crt": b"garbage"}
    p = planner.plan(REF, SPEC, status, sim.observation(), T0, _entropy())
    assert p.secret_writes == ()
    assert [(e.type, e.reason) for e in p.events if e.reason == "CAInvalid"] == [
        ("Warning", "CAInvalid")
    ]


def test_client_tls_is_issued_for_the_client_services_when_enabled() -> None:
    spec = parse_spec({**SPEC_RAW, "security": {"clientTLS": {"enabled": True}}})
    plan_ = credentials.plan_credentials(
        REF, spec, {}, DatastoreStatus().certificates, T0, _entropy()
    )
    names = [w.secret["metadata"]["name"] for w in plan_.writes]
    assert names == ["ds-admin-token", "ds-ca", "ds-peer-tls", "ds-client-tls"]
    with_tokens = credentials.plan_credentials(
        REF, SPEC_ALL, {}, DatastoreStatus().certificates, T0, _entropy()
    )
    assert [w.secret["metadata"]["name"] for w in with_tokens.writes] == [
        "ds-admin-token",
        "ds-client-tokens",
        "ds-ca",
        "ds-peer-tls",
        "ds-client-tls",
    ]
    client = security.decode_data(plan_.writes[-1].secret["data"])
    info = certs.parse(client["tls.crt"])
    assert info is not None
    assert certs.covers(info, ["ds.ns.svc", "ds-leader.ns.svc", "ds-readonly.ns.svc.cluster.local"])


def test_a_users_client_certificate_is_only_reported() -> None:
    spec = parse_spec(
        {**SPEC_RAW, "security": {"clientTLS": {"enabled": True, "secretName": "mine"}}}
    )
    ca = certs.issue_ca("user ca", T0, _entropy(1))
    leaf = certs.issue_leaf(ca, "x", ["ds.ns.svc"], T0, VALIDITY, _entropy(2))
    secrets = {"mine": {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem}}
    assert "mine" in credentials.secret_names(REF, spec)
    plan_ = credentials.plan_credentials(
        REF, spec, secrets, DatastoreStatus().certificates, T0, _entropy()
    )
    assert "mine" not in [w.secret["metadata"]["name"] for w in plan_.writes]
    client = plan_.certificates.client
    assert client is not None and client.secret_name == "mine" and client.renew_after is None


def test_cert_manager_issuer_plans_certificates_and_reads_their_secrets() -> None:
    spec = parse_spec(
        {
            **SPEC_RAW,
            "security": {
                "clientTLS": {"enabled": True},
                "certificates": {
                    "issuer": "certManager",
                    "certManagerIssuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"},
                    "validity": "720h",
                    "rotateBeforeExpiry": "240h",
                },
            },
        }
    )
    empty = credentials.plan_credentials(
        REF, spec, {}, DatastoreStatus().certificates, T0, _entropy()
    )
    assert [w.secret["metadata"]["name"] for w in empty.writes] == ["ds-admin-token"]
    peer, client = empty.objects
    assert (peer["apiVersion"], peer["kind"]) == ("cert-manager.io/v1", "Certificate")
    assert peer["metadata"]["name"] == "ds-peer"
    assert peer["spec"]["secretName"] == "ds-peer-tls"
    assert peer["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert peer["spec"]["duration"] == "2592000s" and peer["spec"]["renewBefore"] == "864000s"
    assert {"server auth", "client auth"} <= set(peer["spec"]["usages"])
    assert "*.ds-peers.ns.svc" in peer["spec"]["dnsNames"]
    assert peer["spec"]["privateKey"]["rotationPolicy"] == "Always"
    assert client["spec"]["secretName"] == "ds-client-tls"
    assert empty.certificates.ca is None and empty.certificates.peer is None
    # cert-manager wrote the Secret, later renewed it: reported, and the renewal announced.
    ca = certs.issue_ca("corp", T0, _entropy(1))
    first = certs.issue_leaf(ca, "p", ["x"], T0, timedelta(days=30), _entropy(2))
    seen = credentials.plan_credentials(
        REF, spec, {"ds-peer-tls": {"tls.crt": first.cert_pem}}, empty.certificates, T0, _entropy()
    )
    assert seen.certificates.peer is not None
    assert seen.certificates.peer.renew_after == T0 + timedelta(days=20)
    assert not [n for n in seen.notices if n.reason == "CertificateRotated"]
    later = T0 + timedelta(days=20)
    second = certs.issue_leaf(ca, "p", ["x"], later, timedelta(days=30), _entropy(3))
    renewed = credentials.plan_credentials(
        REF,
        spec,
        {"ds-peer-tls": {"tls.crt": second.cert_pem}},
        seen.certificates,
        later,
        _entropy(),
    )
    assert [n.reason for n in renewed.notices if n.reason.startswith("Cert")] == [
        "CertificateRotated"
    ]


# Through the reconcile loop and the fake Kubernetes gateway ---------------------------


def test_a_pass_creates_the_secrets_through_the_gateway_and_later_passes_keep_them() -> None:
    sim = SimCluster.healthy(SPEC)
    kube, admin = FakeKube(sim, _body()), FakeAdmin(sim)
    outcome = asyncio.run(reconcile(kube.body, kube, admin, clock=lambda: T0, entropy=_entropy()))
    assert outcome.error is None
    assert kube.writes == [
        ("create", "ds-admin-token"),
        ("create", "ds-ca"),
        ("create", "ds-peer-tls"),
    ]
    assert ("NetworkPolicy", "ds-nodes") in kube.applied
    token = _secret_data(kube, "ds-admin-token")["token"]
    status = kube.body["status"]["certificates"]
    assert set(status) == {"ca", "peer"}
    assert status["peer"]["secretName"] == "ds-peer-tls"
    reasons = [r for _, r in kube.events]
    assert "CAIssued" in reasons and "CertificateIssued" in reasons
    for seconds in (10, 20, 30):
        kube.writes.clear()
        asyncio.run(
            reconcile(
                kube.body,
                kube,
                admin,
                clock=lambda s=seconds: T0 + timedelta(seconds=s),
                entropy=_entropy(seconds),
            )
        )
        assert kube.writes == []
    assert _secret_data(kube, "ds-admin-token")["token"] == token


def test_the_admin_client_carries_the_token_from_the_secret() -> None:
    sim = SimCluster.healthy(SPEC)
    kube, admin = FakeKube(sim, _body()), FakeAdmin(sim)
    asyncio.run(reconcile(kube.body, kube, admin, clock=lambda: T0, entropy=_entropy()))
    admin.tokens_used.clear()
    asyncio.run(reconcile(kube.body, kube, admin, clock=lambda: T0 + timedelta(seconds=5)))
    token = _secret_data(kube, "ds-admin-token")["token"].decode()
    assert admin.tokens_used == {token}


def test_a_secret_someone_else_created_first_is_kept_and_writes_stop_for_the_pass() -> None:
    sim = SimCluster.healthy(SPEC)
    kube, admin = FakeKube(sim, _body()), FakeAdmin(sim)
    theirs = certs.issue_ca("the other replica's CA", T0, _entropy(50))
    kube.secrets["ds-ca"] = security.ca_secret(REF, theirs)

    # The CA exists but observe did not see it yet: simulate by hiding it on the read.
    hidden = kube.secrets.pop("ds-ca")

    async def get_secret(namespace: str, name: str) -> dict[str, Any] | None:
        return None if name == "ds-ca" else kube.secrets.get(name)

    kube.get_secret = get_secret  # type: ignore[method-assign]
    kube.secrets["ds-ca"] = hidden
    asyncio.run(
        reconcile(kube.body, kube, admin, clock=lambda: T0, entropy=_entropy(), max_rounds=1)
    )
    # the CA create lost: stop
    assert kube.writes == [("create", "ds-admin-token")]
    assert _secret_data(kube, "ds-ca")["ca.crt"] == theirs.cert_pem
    assert "ds-peer-tls" not in kube.secrets
    assert kube.applied == {}  # nothing that mounts an unwritten Secret
    del kube.get_secret  # type: ignore[misc]
    asyncio.run(reconcile(kube.body, kube, admin, clock=lambda: T0, entropy=_entropy()))
    peer = _secret_data(kube, "ds-peer-tls")
    assert certs.signed_by(peer["tls.crt"], theirs.cert_pem)
