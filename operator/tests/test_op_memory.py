"""The node's --memory-budget, derived from the pod's memory limit."""

from __future__ import annotations

import pytest

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import parse_spec
from zonestore_operator.resources import memory, statefulset

REF = DatastoreRef(name="orders", namespace="shop", uid="uid-1", generation=3)
MiB = 1 << 20


@pytest.mark.parametrize(
    ("quantity", "size"),
    [
        ("1Gi", 1 << 30),
        ("512Mi", 512 * MiB),
        ("1G", 10**9),
        ("500M", 500 * 10**6),
        ("1.5Gi", 3 << 29),
        ("1e9", 10**9),
        ("268435456", 268435456),
        (268435456, 268435456),
        ("2048Ki", 2 * MiB),
        ("1E", 10**18),
    ],
)
def test_memory_quantities_read_as_kubernetes_reads_them(quantity: str | int, size: int) -> None:
    assert memory.quantity_bytes(quantity) == size


@pytest.mark.parametrize("quantity", ["", "lots", "1GB", "Mi", "1.2.3Gi", "-1Gi", "1e"])
def test_what_is_not_a_quantity_gives_no_size(quantity: str) -> None:
    assert memory.quantity_bytes(quantity) is None


def _args(resources: dict[str, dict[str, str]]) -> list[str]:
    spec = parse_spec({"zones": ["a", "b", "c"], "resources": resources})
    [container] = statefulset.statefulset(REF, spec, "a", 1)["spec"]["template"]["spec"][
        "containers"
    ]
    args: list[str] = container["args"]
    return args


@pytest.mark.parametrize(
    ("limit", "budget"),
    [
        ("1Gi", "512MiB"),
        ("2Gi", "1024MiB"),
        ("1G", "476MiB"),  # half of 10^9 bytes, rounded down to whole MiB
        ("700Mi", "350MiB"),
        ("40Mi", "32MiB"),  # never below what the node accepts
    ],
)
def test_the_budget_is_half_the_pods_memory_limit(limit: str, budget: str) -> None:
    args = _args({"requests": {"memory": "256Mi"}, "limits": {"memory": limit}})
    flag = args.index("--memory-budget")
    assert args[flag + 1] == budget
    assert args.count("--memory-budget") == 1


def test_without_a_memory_limit_the_node_keeps_its_default_budget() -> None:
    assert "--memory-budget" not in _args({})
    assert "--memory-budget" not in _args({"requests": {"memory": "1Gi"}})
    assert "--memory-budget" not in _args({"limits": {"cpu": "2"}})


def test_the_budget_flag_parses_as_the_node_reads_it() -> None:
    from zonestore_node import cli

    args = _args({"limits": {"memory": "3Gi"}})
    parsed = cli.build_parser().parse_args(
        [
            a.replace("$(POD_NAME)", "p").replace("$(ZONESTORE_INITIAL_CLUSTER)", "")
            for a in args[1:]
        ]
    )
    assert cli.memory_budget(parsed, "serve").total == 1536 * MiB
