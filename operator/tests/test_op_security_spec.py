"""spec.security in the CRD and the spec parser: defaults agree, every field is accepted,
bad values are named, CEL rules guard what the schema cannot; status.certificates round
trips; and the admin client sends the bearer token to a node."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import crdschema
import pytest
from aiohttp import web

from zonestore_operator.adminclient import AdminClient, AdminError
from zonestore_operator.model import spec as specmodel
from zonestore_operator.model.status import (
    CertificatesStatus,
    CertStatus,
    DatastoreStatus,
    parse_status,
)

FULL: dict[str, Any] = {
    "peerTLS": {"enabled": True},
    "clientTLS": {"enabled": True, "secretName": "orders-client-cert"},
    "certificates": {
        "issuer": "certManager",
        "certManagerIssuerRef": {"name": "corp", "kind": "ClusterIssuer"},
        "validity": "1440h",
        "rotateBeforeExpiry": "360h30m",
    },
    "clientAuth": {
        "mode": "Tokens",
        "tokensSecretName": "orders-tokens",
        "tokensSecretKey": "tokens.yaml",
    },
    "networkPolicy": {
        "enabled": True,
        "clientNamespaceSelector": {"matchLabels": {"team": "orders"}},
        "clientPodSelector": {
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]
        },
        "monitoringNamespaceSelector": {"matchLabels": {"name": "monitoring"}},
        "monitoringPodSelector": {"matchLabels": {"app": "prometheus"}},
    },
}


def _manifest(security: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"zones": ["a", "b", "c"]}
    if security is not None:
        spec["security"] = security
    return {
        "apiVersion": "zonestore.io/v1alpha1",
        "kind": "Datastore",
        "metadata": {"name": "orders"},
        "spec": spec,
    }


def test_crd_defaults_security_like_the_parser(crd_schema: dict) -> None:
    defaulted = crdschema.apply_defaults(crd_schema, _manifest(None))
    assert defaulted["spec"]["security"] == {
        "peerTLS": {"enabled": True},
        "clientTLS": {"enabled": False},
        "certificates": {"issuer": "selfSigned", "validity": "2160h", "rotateBeforeExpiry": "720h"},
        "clientAuth": {"mode": "None", "tokensSecretKey": "tokens"},
        "networkPolicy": {"enabled": True},
    }
    parsed = specmodel.parse_spec(defaulted["spec"])
    assert parsed == specmodel.parse_spec({"zones": ["a", "b", "c"]})
    sec = parsed.security
    assert sec.peer_tls and not sec.client_tls.enabled and sec.network_policy.enabled
    assert sec.certificates.issuer is specmodel.CertIssuer.SELF_SIGNED
    assert sec.certificates.validity == timedelta(days=90)
    assert sec.certificates.rotate_before_expiry == timedelta(days=30)
    assert sec.client_auth.tokens_secret_name is None
    assert sec.client_auth.mode is specmodel.ClientAuthMode.NONE
    assert not sec.client_auth.enabled and not sec.client_auth.operator_tokens


def test_crd_accepts_every_security_field_and_the_parser_reads_them(crd_schema: dict) -> None:
    defaulted = crdschema.apply_defaults(crd_schema, _manifest(FULL))
    assert crdschema.validate(crd_schema, defaulted) == []
    ref = defaulted["spec"]["security"]["certificates"]["certManagerIssuerRef"]
    assert ref == {"name": "corp", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    sec = specmodel.parse_spec(defaulted["spec"]).security
    assert sec.certificates.cert_manager_issuer_ref == specmodel.IssuerRef(
        "corp", "ClusterIssuer", "cert-manager.io"
    )
    assert sec.certificates.rotate_before_expiry == timedelta(hours=360, minutes=30)
    assert sec.client_tls.secret_name == "orders-client-cert"
    assert not sec.operator_client_tls and not sec.operator_ca
    assert sec.client_auth.tokens_secret_key == "tokens.yaml"
    assert sec.network_policy.client_pod_selector == FULL["networkPolicy"]["clientPodSelector"]


@pytest.mark.parametrize(
    ("security", "error"),
    [
        ({"certificates": {"issuer": "acme"}}, ".issuer: 'acme' not in"),
        ({"certificates": {"validity": "90d"}}, ".validity: '90d' does not match"),
        ({"peerTLS": {"enabled": "yes"}}, ".enabled: must be boolean"),
        ({"networkPolicy": {"clientPodSelector": {"matchLabels": {"a": 1}}}}, "must be string"),
        ({"clientAuth": {"tokens": "x"}}, ".tokens: unknown field"),
    ],
)
def test_crd_rejects_malformed_security(crd_schema: dict, security: dict, error: str) -> None:
    defaulted = crdschema.apply_defaults(crd_schema, _manifest(security))
    errors = crdschema.validate(crd_schema, defaulted)
    assert any(error in e for e in errors), errors


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ({"certificates": {"issuer": "certManager"}}, "certManagerIssuerRef is required"),
        ({"certificates": {"rotateBeforeExpiry": "2160h"}}, "must be shorter than"),
        ({"certificates": {"validity": "30m", "rotateBeforeExpiry": "1m"}}, "at least 1h"),
        ({"certificates": {"validity": "1 day"}}, "must be a duration"),
        ({"networkPolicy": {"clientPodSelector": {"labels": {}}}}, "unknown fields: labels"),
        ({"certificates": {"certManagerIssuerRef": {"name": "x", "kind": "Foo"}}}, "Issuer or"),
    ],
)
def test_parser_names_the_bad_security_field(security: dict, message: str) -> None:
    with pytest.raises(specmodel.SpecError, match=message):
        specmodel.parse_spec({"zones": ["a"], "voters": 1, "security": security})


def test_crd_carries_cel_rules_for_what_the_schema_cannot_say(crd_schema: dict) -> None:
    certificates = crd_schema["properties"]["spec"]["properties"]["security"]["properties"][
        "certificates"
    ]
    rules = " ".join(r["rule"] for r in certificates["x-kubernetes-validations"])
    assert "has(self.certManagerIssuerRef)" in rules
    assert "duration(self.rotateBeforeExpiry) < duration(self.validity)" in rules


def test_status_certificates_round_trip() -> None:
    t = datetime(2030, 1, 1, tzinfo=UTC)
    status = DatastoreStatus(
        certificates=CertificatesStatus(
            ca=CertStatus("o-ca", t, t + timedelta(days=3650)),
            peer=CertStatus("o-peer-tls", t, t + timedelta(days=90), t + timedelta(days=60)),
        )
    )
    raw = status.to_dict()
    assert raw["certificates"]["peer"] == {
        "secretName": "o-peer-tls",
        "notBefore": "2030-01-01T00:00:00Z",
        "notAfter": "2030-04-01T00:00:00Z",
        "renewAfter": "2030-03-02T00:00:00Z",
    }
    assert "client" not in raw["certificates"]
    assert parse_status(raw).certificates == status.certificates


def test_status_schema_describes_certificates(crd_schema: dict) -> None:
    raw = DatastoreStatus(
        certificates=CertificatesStatus(
            peer=CertStatus("p", datetime(2030, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC))
        )
    ).to_dict()
    assert crdschema.validate(crd_schema["properties"]["status"], raw) == []


def test_admin_client_sends_the_bearer_token_and_views_share_one_session() -> None:
    seen: list[str | None] = []

    async def status(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer s3cret":
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response(
            {
                "node_id": "n",
                "role": "leader",
                "term": 1,
                "leader": "n",
                "commit_index": 1,
                "applied_index": 1,
            }
        )

    async def body() -> None:
        app = web.Application()
        app.router.add_get("/admin/status", status)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        address = f"127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with AdminClient(timeout_s=2) as client:
                with pytest.raises(AdminError, match="401"):
                    await client.status(address)
                view = client.authorized("s3cret")
                assert (await view.status(address)).node_id == "n"
                assert view._sessions is client._sessions
        finally:
            await runner.cleanup()

    asyncio.run(body())
    assert seen == [None, "Bearer s3cret"]
