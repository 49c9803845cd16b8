"""Spec changes a running group cannot take, and what the operator runs instead.

    effective_spec(spec, observation) -> (spec to reconcile, Refusal | None)
    report(status, refusal, now, generation) -> (status, events)

spec.security.peerTLS.enabled on a running group: a node speaks either mutual TLS or
plaintext on its peer port, never both (zonestore_node.replica.transport), so the first
replica a rolling update restarts with the other setting can no longer reach its peers,
and the second restart loses quorum: the roll stalls with the group down. The CRD
refuses the change (a CEL transition rule, `self == oldSelf`); this guard covers a CRD
that was not upgraded with the operator (Helm never upgrades CRDs): when every node pod
runs with one setting and the spec asks for the other, the operator keeps building the
pods with the setting that runs (everything else in the spec still applies, failover
included) and reports Stalled=True, reason PeerTLSChangeRefused, until the spec matches
again. Pods that disagree among themselves (a roll an older operator left half done)
are not pinned: the spec decides, so that setting it back can finish the repair.

There is no in-place migration: create a new Datastore with the setting you want and
copy the data into it.

Pure: no I/O, no clock. May import `model` and `reconcile.observation` only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from zonestore_operator.model.spec import DatastoreSpec
from zonestore_operator.model.status import ConditionType, DatastoreStatus, set_condition
from zonestore_operator.reconcile.observation import Observation

PEER_TLS_CHANGE_REFUSED = "PeerTLSChangeRefused"
SPEC_APPLIED = "SpecApplicable"  # Stalled=False once the refused change is gone


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    message: str


def running_peer_tls(observation: Observation) -> bool | None:
    """The peer TLS setting every observed node pod was started with; None when there
    are no pods yet or they disagree."""
    modes = {p.peer_tls for p in observation.pods.values() if p.peer_tls is not None}
    return modes.pop() if len(modes) == 1 else None


def _setting(enabled: bool) -> str:
    return "true" if enabled else "false"


def effective_spec(
    spec: DatastoreSpec, observation: Observation
) -> tuple[DatastoreSpec, Refusal | None]:
    running = running_peer_tls(observation)
    if running is None or running == spec.security.peer_tls:
        return spec, None
    message = (
        f"spec.security.peerTLS.enabled is {_setting(spec.security.peer_tls)} but the "
        f"node pods run with {_setting(running)}; the change is not applied: a replica "
        "restarted with the other setting cannot reach its peers, so a rolling update "
        "would lose quorum. Set it back to "
        f"{_setting(running)}, or create a new Datastore with peerTLS.enabled "
        f"{_setting(spec.security.peer_tls)} and copy the data into it."
    )
    pinned = replace(spec, security=replace(spec.security, peer_tls=running))
    return pinned, Refusal(PEER_TLS_CHANGE_REFUSED, message)


@dataclass(frozen=True, slots=True)
class Notice:
    """An Event to post: (type, reason, message)."""

    type: str
    reason: str
    message: str


def report(
    status: DatastoreStatus, refusal: Refusal | None, now: datetime, generation: int
) -> tuple[DatastoreStatus, tuple[Notice, ...]]:
    """`status` with the Stalled condition: True while a change is refused (announced
    once, when it starts); False once it is gone; absent when nothing was ever refused."""
    before = status.condition(ConditionType.STALLED)
    if refusal is None:
        if before is None or before.status is False:
            return status, ()
        conditions = set_condition(
            status.conditions,
            ConditionType.STALLED,
            False,
            SPEC_APPLIED,
            "the spec can be applied to the running group",
            now,
            generation,
        )
        return replace(status, conditions=conditions), ()
    conditions = set_condition(
        status.conditions,
        ConditionType.STALLED,
        True,
        refusal.reason,
        refusal.message,
        now,
        generation,
    )
    starts = before is None or before.status is not True or before.reason != refusal.reason
    notices = (Notice("Warning", refusal.reason, refusal.message),) if starts else ()
    return replace(status, conditions=conditions), notices
