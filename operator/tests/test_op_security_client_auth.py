"""Client authentication (spec.security.clientAuth): off by default (mode None), so the
official clients work unmodified through DATASTORE_EMULATOR_HOST, with the NetworkPolicy
admitting the client port from the Datastore's namespace only. mode Tokens (which the CRD
accepts only with client TLS, or on an object already created with it under the old
default) without a Secret of the user's makes the operator generate `<name>-client-tokens`
once (a read-write token for every project and database, in the node's token-file format)
and mount only its hash file. Covers the CRD and the parser, the builders field by field,
the credentials plan, and the generated file against the node's own token checker."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import crdschema
import pytest
import yaml
from conftest import REPO
from simcluster import REF, T0, SimCluster

from zonestore_node.api import auth as nodeauth
from zonestore_operator.model import spec as specmodel
from zonestore_operator.model.spec import ClientAuthMode, parse_spec
from zonestore_operator.model.status import CertificatesStatus, ConditionType, DatastoreStatus
from zonestore_operator.reconcile import credentials
from zonestore_operator.reconcile import plan as planner
from zonestore_operator.reconcile.credentials import WriteMode
from zonestore_operator.resources import certs, security, statefulset

ZONES = ["a", "b", "c"]
NO_TLS: dict[str, Any] = {"peerTLS": {"enabled": False}}
TOKENS: dict[str, Any] = {"mode": "Tokens"}


def _spec(client_auth: dict[str, Any] | None = None, **security_: Any) -> specmodel.DatastoreSpec:
    sec: dict[str, Any] = dict(security_)
    if client_auth is not None:
        sec["clientAuth"] = client_auth
    return parse_spec({"zones": ZONES, "security": sec})


def _entropy(seed: int = 7) -> certs.Entropy:
    return random.Random(seed).randbytes


def _no_entropy(n: int) -> bytes:
    raise AssertionError("nothing should be generated")


def _generated(spec: specmodel.DatastoreSpec | None = None) -> dict[str, Any]:
    return security.client_tokens_secret(REF, spec or _spec(TOKENS), _entropy())


def _decoded(secret: dict[str, Any]) -> dict[str, bytes]:
    return security.decode_data(secret["data"])


def _pod(spec: specmodel.DatastoreSpec) -> dict[str, Any]:
    pod: dict[str, Any] = statefulset.statefulset(REF, spec, "a", 1)["spec"]["template"]["spec"]
    return pod


def _flag(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


# The spec ------------------------------------------------------------------------------


def test_client_auth_defaults_to_none_for_the_official_clients_unmodified() -> None:
    spec = parse_spec({"zones": ZONES})
    auth = spec.security.client_auth
    assert auth.mode is ClientAuthMode.NONE
    assert not auth.enabled and not auth.operator_tokens
    assert auth.tokens_secret_name is None and auth.tokens_secret_key == "tokens"
    # ... and the gate is the NetworkPolicy, on by default: the client port admits pods
    # of the Datastore's own namespace, nothing else.
    policy = security.network_policy(REF, spec, "zonestore-system")
    [client_rule] = [
        r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == spec.ports.client
    ]
    assert client_rule["from"] == [{"podSelector": {}}]


def test_mode_tokens_has_the_operator_generate_the_tokens() -> None:
    auth = _spec(TOKENS).security.client_auth
    assert auth.mode is ClientAuthMode.TOKENS
    assert auth.enabled and auth.operator_tokens
    assert auth.tokens_secret_name is None and auth.tokens_secret_key == "tokens"


def test_mode_none_turns_client_auth_off() -> None:
    auth = _spec({"mode": "None"}).security.client_auth
    assert auth.mode is ClientAuthMode.NONE
    assert not auth.enabled and not auth.operator_tokens


def test_a_users_tokens_secret_replaces_the_generated_one() -> None:
    auth = _spec(
        {"mode": "Tokens", "tokensSecretName": "mine", "tokensSecretKey": "t.yaml"}
    ).security.client_auth
    assert auth.enabled and not auth.operator_tokens
    assert (auth.tokens_secret_name, auth.tokens_secret_key) == ("mine", "t.yaml")


@pytest.mark.parametrize(
    ("client_auth", "message"),
    [
        ({"mode": "None", "tokensSecretName": "mine"}, r"clientAuth.tokensSecretName must not"),
        # mode defaults to None: a tokens Secret alone says two things
        ({"tokensSecretName": "mine"}, r"must not be set when mode is None \(set mode: Tokens"),
        ({"mode": "Off"}, r"clientAuth.mode must be one of Tokens, None; got 'Off'"),
        ({"mode": None}, r"clientAuth.mode must be one of"),  # YAML null, not the string
    ],
)
def test_parser_refuses_contradictory_or_unknown_client_auth(
    client_auth: dict[str, Any], message: str
) -> None:
    with pytest.raises(specmodel.SpecError, match=message):
        _spec(client_auth)


def test_crd_defaults_client_auth_to_none_with_the_mode_spelled_out(crd_schema: dict) -> None:
    auth = crd_schema["properties"]["spec"]["properties"]["security"]["properties"]["clientAuth"]
    # The API server checks the default against the CEL rule before nested defaults apply.
    assert auth["default"] == {"mode": "None", "tokensSecretKey": "tokens"}
    assert auth["properties"]["mode"]["enum"] == ["Tokens", "None"]
    assert auth["properties"]["mode"]["default"] == "None"
    [rule] = auth["x-kubernetes-validations"]
    assert rule["rule"] == "self.mode != 'None' || !has(self.tokensSecretName)"


def test_crd_refuses_tokens_without_tls_only_to_objects_entering_that_state(
    crd_schema: dict,
) -> None:
    """The rule itself is judged by the real API server (e2e/tests/test_e2e_schema.py);
    here: it is a transition rule that also runs on create, and says why and what to set."""
    sec = crd_schema["properties"]["spec"]["properties"]["security"]
    [rule] = sec["x-kubernetes-validations"]
    assert rule["optionalOldSelf"] is True  # evaluated on create as well (no old value)
    assert "oldSelf.hasValue()" in rule["rule"]  # an object already in the state may stay
    assert "self.clientAuth.mode == 'Tokens'" in rule["rule"]
    assert "self.clientTLS.enabled" in rule["rule"]
    assert rule["fieldPath"] == ".clientAuth.mode"
    for words in ("clientTLS.enabled: true", "only over TLS", "DATASTORE_EMULATOR_HOST", "None"):
        assert words in rule["message"]


def test_crd_accepts_mode_none_and_rejects_an_unknown_mode(crd_schema: dict) -> None:
    def errors(client_auth: dict[str, Any]) -> list[str]:
        manifest = {
            "apiVersion": "zonestore.io/v1alpha1",
            "kind": "Datastore",
            "metadata": {"name": "orders"},
            "spec": {"zones": ZONES, "security": {"clientAuth": client_auth}},
        }
        defaulted = crdschema.apply_defaults(crd_schema, manifest)
        return crdschema.validate(crd_schema, defaulted)

    assert errors({"mode": "None"}) == []
    assert errors({"mode": "Tokens", "tokensSecretName": "mine"}) == []
    assert any("'Off' not in" in e for e in errors({"mode": "Off"}))


def test_the_opt_out_trade_off_is_written_where_users_choose_it(crd_schema: dict) -> None:
    auth = crd_schema["properties"]["spec"]["properties"]["security"]["properties"]["clientAuth"]
    mode_doc = auth["properties"]["mode"]["description"]
    chart_doc = (REPO / "charts" / "zonestore-operator" / "README.md").read_text()
    example = (REPO / "charts" / "zonestore-operator" / "examples" / "datastore.yaml").read_text()
    for doc in (mode_doc, chart_doc, example):
        assert "DATASTORE_EMULATOR_HOST" in doc
        assert "-client-tokens" in doc


# The builders --------------------------------------------------------------------------


def test_generated_secret_holds_a_random_token_and_the_node_file_with_only_its_hash() -> None:
    secret = _generated()
    assert (secret["apiVersion"], secret["kind"], secret["type"]) == ("v1", "Secret", "Opaque")
    md = secret["metadata"]
    assert (md["name"], md["namespace"]) == ("ds-client-tokens", "ns")
    assert md["ownerReferences"][0]["uid"] == REF.uid  # deleted with the Datastore
    assert md["labels"]["app.kubernetes.io/component"] == "client-tokens"
    data = _decoded(secret)
    assert set(data) == {"token", "tokens"}
    token = data["token"].decode()
    assert len(token) == 64 and bytes.fromhex(token)  # 32 random bytes, hex
    assert token.encode() not in data["tokens"]  # the node file holds no plaintext
    [grant] = yaml.safe_load(data["tokens"])["tokens"]
    assert grant == {
        "name": "default",
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "projects": ["*"],
        "databases": ["*"],
        "access": "write",
    }


def test_generated_secret_is_different_each_time_it_is_made() -> None:
    one = security.client_tokens_secret(REF, _spec(), _entropy(1))
    two = security.client_tokens_secret(REF, _spec(), _entropy(2))
    assert _decoded(one)["token"] != _decoded(two)["token"]


def test_the_node_accepts_the_generated_token_for_any_project_and_write(tmp_path: Path) -> None:
    data = _decoded(_generated())
    path = tmp_path / "tokens"
    path.write_bytes(data["tokens"])
    checker = nodeauth.TokenAuth(path)
    commit = SimpleNamespace(mutations=[object()])
    good = [("authorization", f"Bearer {data['token'].decode()}")]
    for project, database in (("shop", ""), ("other", "analytics")):
        grant = checker.check("Commit", commit, project, database, good)
        assert grant.access is nodeauth.Access.WRITE
    with pytest.raises(nodeauth.Denied) as missing:
        checker.check("Commit", commit, "shop", "", [])
    assert missing.value.unauthenticated
    with pytest.raises(nodeauth.Denied) as wrong:
        checker.check("Commit", commit, "shop", "", [("authorization", "Bearer " + "0" * 64)])
    assert wrong.value.unauthenticated


def test_tokens_pod_mounts_only_the_hash_file_of_the_generated_secret() -> None:
    pod = _pod(_spec(TOKENS))
    [container] = pod["containers"]
    assert _flag(container["args"], "--auth-tokens") == "/etc/zonestore/auth/tokens"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["auth-tokens"] == {
        "name": "auth-tokens",
        "secret": {
            "secretName": "ds-client-tokens",
            "defaultMode": 0o440,
            # the plaintext `token` is for applications: it never reaches the node pods
            "items": [{"key": "tokens", "path": "tokens"}],
        },
    }
    assert {"name": "auth-tokens", "mountPath": "/etc/zonestore/auth", "readOnly": True} in (
        container["volumeMounts"]
    )


def test_a_users_tokens_secret_is_mounted_whole_at_its_key() -> None:
    pod = _pod(_spec({"mode": "Tokens", "tokensSecretName": "mine", "tokensSecretKey": "t.yaml"}))
    [container] = pod["containers"]
    assert _flag(container["args"], "--auth-tokens") == "/etc/zonestore/auth/t.yaml"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["auth-tokens"]["secret"] == {"secretName": "mine", "defaultMode": 0o440}


def test_the_generated_secret_ignores_tokens_secret_key() -> None:
    # tokensSecretKey names the file in the user's Secret; ours is always `tokens`.
    spec = _spec({"mode": "Tokens", "tokensSecretKey": "t.yaml"})
    assert _flag(_pod(spec)["containers"][0]["args"], "--auth-tokens") == (
        "/etc/zonestore/auth/tokens"
    )
    assert set(_decoded(_generated(spec))) == {"token", "tokens"}


@pytest.mark.parametrize("client_auth", [None, {"mode": "None"}], ids=["default", "explicit"])
def test_mode_none_passes_no_tokens_flag_and_mounts_nothing(
    client_auth: dict[str, Any] | None,
) -> None:
    pod = _pod(_spec(client_auth))
    [container] = pod["containers"]
    assert "--auth-tokens" not in container["args"]
    assert "auth-tokens" not in {v["name"] for v in pod["volumes"]}
    assert "/etc/zonestore/auth" not in {m["mountPath"] for m in container["volumeMounts"]}


# The credentials plan ------------------------------------------------------------------


def _plan(
    spec: specmodel.DatastoreSpec,
    secrets: credentials.Secrets,
    entropy: certs.Entropy = _no_entropy,
) -> credentials.CredentialsPlan:
    return credentials.plan_credentials(REF, spec, secrets, CertificatesStatus(), T0, entropy)


ADMIN = {"ds-admin-token": {"token": b"a" * 64}}


def test_observe_reads_the_generated_secret_only_when_the_operator_owns_it() -> None:
    assert "ds-client-tokens" in credentials.secret_names(REF, _spec(TOKENS))
    assert "ds-client-tokens" not in credentials.secret_names(REF, _spec())
    assert "ds-client-tokens" not in credentials.secret_names(REF, _spec({"mode": "None"}))
    names = credentials.secret_names(REF, _spec({"mode": "Tokens", "tokensSecretName": "mine"}))
    assert "ds-client-tokens" not in names and "mine" not in names  # the user's: only mounted


def test_plan_creates_the_tokens_secret_once_with_a_create_that_never_overwrites() -> None:
    spec = _spec(TOKENS, **NO_TLS)
    plan = _plan(spec, ADMIN, _entropy())
    [write] = plan.writes
    assert write.mode is WriteMode.CREATE  # a POST: a Secret created meanwhile is kept
    assert write.secret["metadata"]["name"] == "ds-client-tokens"
    assert [(n.type, n.reason) for n in plan.notices] == [("Normal", "ClientTokensCreated")]
    assert "'token'" in plan.notices[0].message and "Bearer" in plan.notices[0].message
    # Once it exists: nothing written, nothing announced, no randomness drawn.
    existing = {**ADMIN, "ds-client-tokens": _decoded(write.secret)}
    again = _plan(spec, existing)
    assert again.writes == () and again.notices == ()


def test_plan_leaves_an_existing_secret_alone_even_when_the_user_changed_it() -> None:
    edited = b"tokens:\n  - {name: ro, token_sha256: " + b"1" * 64 + b", projects: ['*']}\n"
    secrets = {**ADMIN, "ds-client-tokens": {"token": b"rotated-by-hand", "tokens": edited}}
    plan = _plan(_spec(TOKENS, **NO_TLS), secrets)
    assert plan.writes == () and plan.notices == ()


def test_plan_reports_a_secret_without_the_tokens_file_and_does_not_replace_it() -> None:
    secrets = {**ADMIN, "ds-client-tokens": {"token": b"x" * 64}}
    plan = _plan(_spec(TOKENS, **NO_TLS), secrets)
    assert plan.writes == ()
    [notice] = plan.notices
    assert (notice.type, notice.reason) == ("Warning", "ClientTokensInvalid")
    assert "delete it" in notice.message


@pytest.mark.parametrize(
    "client_auth",
    [None, {"mode": "None"}, {"mode": "Tokens", "tokensSecretName": "mine"}],
    ids=["default", "none", "users"],
)
def test_plan_generates_nothing_without_tokens_or_with_the_users_secret(
    client_auth: dict[str, Any] | None,
) -> None:
    plan = _plan(_spec(client_auth, **NO_TLS), ADMIN)
    assert plan.writes == () and plan.notices == ()


# Whether the official clients can use it (status condition and event) -----------------


def _usability(spec: specmodel.DatastoreSpec, previous: Any = None) -> Any:
    sim = SimCluster.healthy(spec)
    return planner.plan(REF, spec, previous or DatastoreStatus(), sim.observation(), T0)


@pytest.mark.parametrize(
    ("security_", "usable", "reason"),
    [
        ({}, True, "NoClientAuth"),  # the default: None, clients need no credentials
        # An object created when Tokens was the default (the CRD refuses new ones).
        ({"clientAuth": TOKENS}, False, "TokensWithoutTLS"),
        ({"clientAuth": TOKENS, "clientTLS": {"enabled": True}}, True, "TokensOverTLS"),
        ({"clientAuth": {"mode": "None"}}, True, "NoClientAuth"),
    ],
    ids=["default", "tokens-plaintext", "tokens-tls", "none"],
)
def test_the_status_says_whether_official_clients_can_authenticate(
    security_: dict[str, Any], usable: bool, reason: str
) -> None:
    p = _usability(parse_spec({"zones": ZONES, "security": security_}))
    condition = p.status.condition(ConditionType.CLIENT_AUTH_USABLE)
    assert condition is not None
    assert (condition.status, condition.reason) == (usable, reason)
    warned = [e for e in p.events if e.reason == "TokensWithoutTLS"]
    assert [e.type for e in warned] == (["Warning"] if not usable else [])
    if not usable:
        assert "spec.security.clientTLS" in condition.message
        assert "clientAuth.mode: None" in condition.message


def test_the_tokens_without_tls_warning_is_an_event_once_not_on_every_pass() -> None:
    plaintext = parse_spec({"zones": ZONES, "security": {"clientAuth": TOKENS}})
    first = _usability(plaintext)
    again = _usability(plaintext, first.status)
    assert [e.reason for e in again.events if e.reason == "TokensWithoutTLS"] == []
    fixed = _usability(
        parse_spec(
            {"zones": ZONES, "security": {"clientAuth": TOKENS, "clientTLS": {"enabled": True}}}
        ),
        again.status,
    )
    back = _usability(plaintext, fixed.status)
    assert [e.reason for e in back.events if e.reason == "TokensWithoutTLS"] == ["TokensWithoutTLS"]
