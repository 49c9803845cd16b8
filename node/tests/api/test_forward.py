"""What a follower tells the client when relaying to the leader fails."""

from __future__ import annotations

import grpc
from grpc.aio import AioRpcError, Metadata

from zonestore_node.api import forward


def _error(code: grpc.StatusCode, details: str, answered: bool) -> AioRpcError:
    trailing = Metadata(*forward.ANSWERED) if answered else Metadata()
    return AioRpcError(code, Metadata(), trailing, details)


def test_the_leaders_own_answer_passes_through_unchanged() -> None:
    exc = _error(grpc.StatusCode.UNAVAILABLE, "it was not applied. Retry it.", answered=True)
    assert forward.relayed_status("Commit", exc) == (
        grpc.StatusCode.UNAVAILABLE,
        "it was not applied. Retry it.",
    )


def test_a_broken_connection_after_a_relayed_commit_is_ambiguous() -> None:
    exc = _error(grpc.StatusCode.UNAVAILABLE, "Socket closed", answered=False)
    code, details = forward.relayed_status("Commit", exc)
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "may or may not have been applied" in details


def test_a_commit_that_never_reached_the_leader_is_safely_unavailable() -> None:
    exc = _error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", False)
    assert forward.relayed_status("Commit", exc)[0] is grpc.StatusCode.UNAVAILABLE


def test_a_broken_connection_on_a_read_is_unavailable_so_clients_retry() -> None:
    exc = _error(grpc.StatusCode.UNAVAILABLE, "Connection reset by peer", answered=False)
    assert forward.relayed_status("Lookup", exc)[0] is grpc.StatusCode.UNAVAILABLE
