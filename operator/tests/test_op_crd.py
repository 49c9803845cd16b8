"""The CRD file: names, subresources, printer columns, a structural schema whose defaults
match the spec parser's, CEL rules for the invariants, and example manifests that fit."""

from __future__ import annotations

from pathlib import Path

import crdschema
import pytest
import yaml
from conftest import REPO

from zonestore_operator.model import spec as specmodel

CHART_EXAMPLES = REPO / "charts" / "zonestore-operator" / "examples"


def _examples() -> list[Path]:
    return sorted((REPO / "crds" / "examples").glob("*.yaml"))


def _all_examples() -> list[Path]:
    return [*_examples(), *sorted(CHART_EXAMPLES.glob("*.yaml"))]


def test_crd_names_the_zonestore_group_kind_and_short_name(crd: dict) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "datastores.zonestore.io"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        "Datastore",
        "datastores",
        ["zds"],
        ["zonestore"],
    )
    [version] = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_crd_has_status_and_scale_subresources(crd: dict) -> None:
    sub = crd["spec"]["versions"][0]["subresources"]
    assert sub["status"] == {}
    assert sub["scale"]["specReplicasPath"] == ".spec.replicasPerZone"
    assert sub["scale"]["statusReplicasPath"] == ".status.replicasPerZone"
    assert sub["scale"]["labelSelectorPath"] == ".status.selector"


def test_crd_prints_ready_leader_replicas_zones_and_age(crd: dict) -> None:
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    for name in ("Ready", "Leader", "Replicas", "Zones", "Age"):
        assert name in columns


def test_crd_schema_is_structural(crd_schema: dict) -> None:
    assert crdschema.structural_problems(crd_schema) == []


def test_every_optional_spec_field_has_a_default(crd_schema: dict) -> None:
    spec = crd_schema["properties"]["spec"]
    optional_without_default = {"preferredLeaderZone", "zones"}
    for key, sub in spec["properties"].items():
        if key in optional_without_default:
            continue
        assert "default" in sub, f"spec.{key} has no default"
        for inner, leaf in sub.get("properties", {}).items():
            if sub.get("type") == "object" and leaf.get("type") in ("integer", "boolean"):
                assert "default" in leaf, f"spec.{key}.{inner} has no default"


def test_schema_defaults_agree_with_the_spec_parser(crd_schema: dict) -> None:
    spec_schema = crd_schema["properties"]["spec"]
    minimal = {"zones": ["a", "b", "c"]}
    defaulted = crdschema.apply_defaults(spec_schema, minimal)
    assert specmodel.parse_spec(defaulted) == specmodel.parse_spec(minimal)


def test_crd_carries_cel_rules_for_the_spec_invariants(crd_schema: dict) -> None:
    rules = " ".join(
        r["rule"] for r in crd_schema["properties"]["spec"]["x-kubernetes-validations"]
    )
    assert "self.voters % 2 == 1" in rules
    assert "self.voters <= size(self.zones) * self.replicasPerZone" in rules
    assert "exists_one" in rules  # zones unique
    assert "oldSelf" in rules  # transition rules guard immutable fields
    storage = crd_schema["properties"]["spec"]["properties"]["storage"]
    assert "oldSelf.storageClassName" in storage["x-kubernetes-validations"][0]["rule"]


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
def test_example_manifest_fits_the_schema_and_parses(path: Path, crd_schema: dict) -> None:
    with path.open() as f:
        manifest = yaml.safe_load(f)
    assert manifest["apiVersion"] == "zonestore.io/v1alpha1"
    assert manifest["kind"] == "Datastore"
    defaulted = crdschema.apply_defaults(crd_schema, manifest)
    assert crdschema.validate(crd_schema, defaulted) == []
    parsed = specmodel.parse_spec(defaulted["spec"], manifest["metadata"]["name"])
    assert parsed.voters % 2 == 1


def test_validator_rejects_a_wrong_type_and_an_unknown_field(crd_schema: dict) -> None:
    manifest = {
        "apiVersion": "zonestore.io/v1alpha1",
        "kind": "Datastore",
        "metadata": {"name": "x"},
        "spec": {"zones": ["a"], "voters": "three", "colour": "blue"},
    }
    errors = crdschema.validate(crd_schema, crdschema.apply_defaults(crd_schema, manifest))
    assert ".spec.voters: must be integer, got str" in errors
    assert ".spec.colour: unknown field (would be pruned)" in errors


def test_the_minimal_example_is_a_name_zones_and_a_volume_size_and_nothing_else() -> None:
    """The README's first `kubectl apply`, and the file the e2e suite applies as is."""
    text = (REPO / "crds" / "examples" / "minimal.yaml").read_bytes()
    assert (CHART_EXAMPLES / "minimal.yaml").read_bytes() == text, "keep the two copies equal"
    manifest = yaml.safe_load(text)
    assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(manifest["metadata"]) == {"name"}  # applied into the current namespace
    assert set(manifest["spec"]) == {"zones", "storage"}
    assert set(manifest["spec"]["storage"]) == {"size"}


def test_the_minimal_example_serves_credential_less_clients_behind_the_namespace_policy(
    crd_schema: dict,
) -> None:
    from zonestore_operator.model.ref import DatastoreRef
    from zonestore_operator.resources import security

    manifest = yaml.safe_load((REPO / "crds" / "examples" / "minimal.yaml").read_text())
    defaulted = crdschema.apply_defaults(crd_schema, manifest)
    auth = defaulted["spec"]["security"]["clientAuth"]
    assert auth["mode"] == "None"
    spec = specmodel.parse_spec(defaulted["spec"], manifest["metadata"]["name"])
    assert not spec.security.client_auth.enabled and spec.security.network_policy.enabled
    ref = DatastoreRef(manifest["metadata"]["name"], "apps", uid="u")
    policy = security.network_policy(ref, spec, "zonestore-system")
    client_from = [
        r["from"] for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == spec.ports.client
    ]
    assert client_from == [[{"podSelector": {}}]]  # pods of the Datastore's namespace only


@pytest.mark.parametrize("path", _all_examples(), ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_no_example_asks_for_tokens_without_client_tls(path: Path, crd_schema: dict) -> None:
    """The CRD refuses that pair on a new object (a CEL rule the real API server checks in
    e2e/tests/test_e2e_schema.py); an example that asked for it could not be applied."""
    manifest = yaml.safe_load(path.read_text())
    defaulted = crdschema.apply_defaults(crd_schema, manifest)
    assert crdschema.validate(crd_schema, defaulted) == []
    security = specmodel.parse_spec(defaulted["spec"], manifest["metadata"]["name"]).security
    assert security.client_tls.enabled or not security.client_auth.enabled
