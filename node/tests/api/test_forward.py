"""What a follower tells the client when relaying to the leader fails, and where it relays
(the no-bounce rule)."""

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


class _Context:
    def __init__(self, *metadata: tuple[str, str]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _came_through(*addrs: str) -> _Context:
    return _Context((forward.FORWARDED, str(len(addrs))), (forward.RELAYED_TO, ",".join(addrs)))


def test_the_replicas_a_request_was_relayed_to_are_read_from_its_metadata() -> None:
    assert forward.relayed_to(_came_through("a:1", "b:2")) == ["a:1", "b:2"]
    assert forward.relayed_to(_Context((forward.RELAYED_TO, "a:1, b:2,"))) == ["a:1", "b:2"]
    assert forward.relayed_to(_Context()) == []


def test_a_request_is_held_back_from_a_replica_it_came_through_until_the_view_moves() -> None:
    """During a transfer A -> B, B's view still names A when A relays to it: the request
    waits at B instead of going back to A (which would spend the hops in a ping-pong)."""
    clock = _Clock()
    visited = forward.Visited(_came_through("a:1", "b:2"), clock)
    assert visited.holds("a:1")
    clock.now += forward.BOUNCE_WAIT_S / 2
    assert visited.holds("a:1")
    assert not visited.holds("c:3")  # the view moved: another replica leads
    assert not visited.holds("a:1")  # and a view that moved is trusted, even back to A


def test_a_request_goes_at_once_to_a_replica_it_has_not_been_through() -> None:
    assert not forward.Visited(_came_through("a:1"), _Clock()).holds("c:3")
    assert not forward.Visited(_Context(), _Clock()).holds("a:1")


def test_a_view_that_never_moves_sends_the_request_back_after_the_bounce_wait() -> None:
    """The replica where the request started is not in the list, and its view can be the
    right one: holding back is bounded."""
    clock = _Clock()
    visited = forward.Visited(_came_through("a:1"), clock)
    assert visited.holds("a:1")
    clock.now += forward.BOUNCE_WAIT_S
    assert not visited.holds("a:1")
