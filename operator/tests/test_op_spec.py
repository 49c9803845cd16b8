"""The spec parser: defaults, and a clear message for every invalid spec."""

from __future__ import annotations

import pytest

from zonestore_operator.model.spec import (
    DatastoreSpec,
    RetentionPolicy,
    SpecError,
    UpdateStrategy,
    parse_spec,
)


def test_minimal_spec_gets_the_documented_defaults() -> None:
    spec = parse_spec({"zones": ["a", "b", "c"]})
    assert spec == DatastoreSpec(zones=("a", "b", "c"))
    assert (spec.voters, spec.replicas_per_zone, spec.total_replicas, spec.quorum) == (3, 1, 3, 2)
    assert (spec.ports.client, spec.ports.admin, spec.ports.peer) == (8081, 9081, 7081)
    assert spec.failover.zone_timeout_seconds == 60
    assert spec.update_strategy is UpdateStrategy.ROLLING_UPDATE
    assert spec.pvc_retention.when_deleted is RetentionPolicy.RETAIN


def test_full_spec_is_parsed_field_by_field() -> None:
    spec = parse_spec(
        {
            "zones": ["z1", "z2"],
            "replicasPerZone": 3,
            "voters": 5,
            "image": "reg/zs:1",
            "preferredLeaderZone": "z2",
            "storage": {"size": "1Gi", "storageClassName": "fast"},
            "resources": {"requests": {"cpu": "1"}},
            "ports": {"client": 1, "admin": 2, "peer": 3},
            "failover": {"zoneTimeoutSeconds": 5, "maxAutomaticReplacements": 2},
            "updateStrategy": {"type": "OnDelete"},
            "pvcRetentionPolicy": {"whenDeleted": "Delete"},
            "podLabels": {"team": "x"},
        }
    )
    assert spec.total_replicas == 6
    assert spec.storage.storage_class_name == "fast"
    assert spec.resources == {"requests": {"cpu": "1"}}
    assert spec.failover.max_automatic_replacements == 2
    assert spec.update_strategy is UpdateStrategy.ON_DELETE
    assert spec.pvc_retention.when_deleted is RetentionPolicy.DELETE
    assert spec.pod_labels == {"team": "x"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "spec.zones must list at least one zone name"),
        ({"zones": ["a", "a", "b"]}, "spec.zones must not repeat a zone; 'a' appears twice"),
        ({"zones": ["Zone_A"]}, "spec.zones[0] must be a lowercase DNS label"),
        ({"zones": ["a", "b", "c"], "voters": 2}, "spec.voters must be odd, got 2"),
        (
            {"zones": ["a"], "voters": 3},
            "spec.voters (3) must not exceed the total replica count (1 zones x 1 replicasPerZone = 1)",
        ),
        (
            {"zones": ["a"], "voters": 1, "replicasPerZone": 0},
            "spec.replicasPerZone must be between 1 and 15, got 0",
        ),
        ({"zones": ["a"], "voters": True}, "spec.voters must be an integer, got True"),
        (
            {"zones": ["a"], "voters": 1, "preferredLeaderZone": "b"},
            "spec.preferredLeaderZone 'b' is not one of spec.zones",
        ),
        (
            {"zones": ["a"], "voters": 1, "storage": {"size": "lots"}},
            "spec.storage.size must be a quantity",
        ),
        (
            {"zones": ["a"], "voters": 1, "ports": {"client": 9081}},
            "spec.ports must be three different ports",
        ),
        (
            {"zones": ["a"], "voters": 1, "updateStrategy": {"type": "Yolo"}},
            "spec.updateStrategy.type must be one of RollingUpdate, OnDelete; got 'Yolo'",
        ),
        (
            {"zones": ["a"], "voters": 1, "podLabels": {"a": 1}},
            "spec.podLabels must map strings to strings",
        ),
        (
            {"zones": ["a"], "voters": 1, "resources": {"cpus": 1}},
            "spec.resources has unknown fields: cpus",
        ),
        (
            {"zones": ["a"], "voters": 1, "failover": []},
            "spec.failover must be an object, got list",
        ),
    ],
)
def test_invalid_spec_is_rejected_with_a_message_naming_the_field(raw: dict, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    assert str(caught.value).startswith(message)


def test_name_plus_zone_length_is_bounded_for_child_names() -> None:
    with pytest.raises(SpecError, match="exceed 50 characters"):
        parse_spec({"zones": ["a" * 30], "voters": 1}, name="n" * 21)
