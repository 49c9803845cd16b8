"""Transaction ids, expiry, and what a new leader says about ids it never issued."""

from __future__ import annotations

import pytest

from zonestore_node.model.errors import Code, DatastoreError
from zonestore_node.txn.transactions import Registry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_transaction_from_an_earlier_leadership_is_aborted_so_clients_retry() -> None:
    leadership = ["a/3"]
    registry = Registry(leadership=lambda: leadership[0])
    txn = registry.begin("p", "", read_only=False, read_ts=10)
    successor = Registry(leadership=lambda: "b/4")  # the new leader's empty registry
    with pytest.raises(DatastoreError) as info:
        successor.get(txn.id, "p", "")
    assert info.value.code is Code.ABORTED


def test_an_unknown_id_under_the_same_leadership_is_invalid() -> None:
    registry = Registry(leadership=lambda: "a/3")
    txn = registry.begin("p", "", read_only=False, read_ts=10)
    registry.finish(txn.id)
    with pytest.raises(DatastoreError) as info:
        registry.get(txn.id, "p", "")
    assert info.value.code is Code.INVALID_ARGUMENT
    with pytest.raises(DatastoreError) as garbage:
        registry.get(b"not a transaction", "p", "")
    assert garbage.value.code is Code.INVALID_ARGUMENT


def test_idle_transactions_expire_after_sixty_seconds() -> None:
    clock = Clock()
    registry = Registry(monotonic=clock)
    txn = registry.begin("p", "", read_only=True, read_ts=1)
    clock.now = 59.0
    assert registry.get(txn.id, "p", "") is txn
    clock.now = 120.0
    assert registry.expire() == 1
    with pytest.raises(DatastoreError):
        registry.get(txn.id, "p", "")


def test_a_transaction_cannot_be_used_in_another_project() -> None:
    registry = Registry()
    txn = registry.begin("p", "", read_only=False, read_ts=1)
    with pytest.raises(DatastoreError) as info:
        registry.get(txn.id, "other", "")
    assert info.value.code is Code.INVALID_ARGUMENT
