"""One reconcile pass for one Datastore: observe -> plan -> apply, repeated while the plan
still has a membership change to make (one change per round, at most `max_rounds`), so a
failover that needs promote, transfer and remove finishes in one pass when the nodes
answer quickly. Level-based: everything is recomputed each round from observation and
the status written the round before.

A spec change the running group cannot take (peerTLS.enabled, reconcile.transitions) is
held back here, before planning: the planner gets the spec it can apply, and the status
gets a Stalled condition saying what was refused.

The clock is read here (once per round) and handed to the pure planner, and so is the
randomness (`entropy`, `secrets.token_bytes` unless a test passes its own).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, Self

from zonestore_operator import metrics
from zonestore_operator.adminclient import AdminError
from zonestore_operator.model.node import NodeStatus
from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import SpecError, parse_spec
from zonestore_operator.model.status import (
    ConditionType,
    DatastoreStatus,
    parse_status,
    set_condition,
)
from zonestore_operator.reconcile import apply as applier
from zonestore_operator.reconcile import credentials, transitions
from zonestore_operator.reconcile.kube import KubeGateway
from zonestore_operator.reconcile.observe import observe, read_secrets
from zonestore_operator.reconcile.plan import Event, MemberAction, Plan, plan

log = logging.getLogger("zonestore_operator.reconcile")


class NodeAdmin(applier.MembershipAdmin, Protocol):
    async def status(self, address: str) -> NodeStatus: ...
    def authorized(self, token: str | None) -> Self: ...


@dataclass
class Outcome:
    plan: Plan | None = None
    member_actions: list[MemberAction] = field(default_factory=list)
    error: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


# Optional-object failures already posted as Events (once per Datastore and message, not
# on every pass; the log line repeats).
_REPORTED: set[tuple[str, str]] = set()


async def reconcile(
    body: Mapping[str, Any],
    kube: KubeGateway,
    admin: NodeAdmin,
    clock: Callable[[], datetime] = _now,
    max_rounds: int = 5,
    entropy: Callable[[int], bytes] = secrets.token_bytes,
    operator_namespace: str | None = None,
) -> Outcome:
    ref = DatastoreRef.from_body(body)
    previous = parse_status(body.get("status"))
    try:
        spec = parse_spec(body.get("spec"), ref.name)
    except SpecError as exc:
        await _report_invalid_spec(kube, ref, previous, str(exc), clock())
        metrics.RECONCILES.labels("invalid_spec").inc()
        return Outcome(error=str(exc))

    outcome = Outcome()
    status = previous
    with metrics.DURATION.time():
        for _ in range(max_rounds):
            observation = await observe(kube, admin, ref, spec, operator_namespace)
            # A change the running group cannot take is not applied (reconcile.transitions).
            effective, refusal = transitions.effective_spec(spec, observation)
            if credentials.secret_names(ref, effective) != credentials.secret_names(ref, spec):
                observation = replace(observation, secrets=await read_secrets(kube, ref, effective))
            now = clock()
            p = plan(ref, effective, status, observation, now, entropy)
            reported, notices = transitions.report(p.status, refusal, now, ref.generation)
            p = replace(
                p,
                status=reported,
                events=p.events + tuple(Event(n.type, n.reason, n.message) for n in notices),
            )
            outcome.plan = p
            if not await applier.apply_secrets(kube, p):
                log.info("reconcile.secret_exists datastore=%s/%s", ref.namespace, ref.name)
                break  # someone else created one of them: plan again from what exists
            for failure in await applier.apply_objects(kube, p):
                if (ref.uid, failure) not in _REPORTED:
                    _REPORTED.add((ref.uid, failure))
                    await kube.post_event(ref, "Warning", "OptionalObjectFailed", failure)
                log.warning(
                    "reconcile.optional_failed datastore=%s/%s %s", ref.namespace, ref.name, failure
                )
            await applier.apply_pods(kube, ref, p)
            for event in p.events:
                if event.reason == "ZoneFailed":
                    metrics.FAILOVERS.inc()
                await kube.post_event(ref, event.type, event.reason, event.message)
            status = p.status
            await kube.patch_status(ref, status.to_dict())
            _export_members(ref, status)
            if not p.member_actions:
                break
            action = p.member_actions[0]
            address = applier.admin_address(p, observation, effective)
            if address is None:
                break
            log.info(
                "reconcile.member_action datastore=%s/%s action=%s member=%s reason=%s",
                ref.namespace,
                ref.name,
                action.kind.value,
                action.member,
                action.reason,
            )
            node_admin = admin.authorized(credentials.admin_token(ref, observation.secrets))
            try:
                await applier.apply_member_action(node_admin, kube, ref, address, action)
            except AdminError as exc:
                outcome.error = str(exc)
                await kube.post_event(
                    ref,
                    "Warning",
                    "MembershipChangeFailed",
                    f"{action.kind.value} {action.member}: {exc}",
                )
                metrics.ERRORS.labels("admin").inc()
                break
            metrics.MEMBER_ACTIONS.labels(action.kind.value).inc()
            outcome.member_actions.append(action)
    metrics.RECONCILES.labels("error" if outcome.error else "ok").inc()
    return outcome


def _export_members(ref: DatastoreRef, status: DatastoreStatus) -> None:
    counts = {"healthy": 0, "unhealthy": 0, "voter": 0, "learner": 0}
    for m in status.members:
        counts["healthy" if m.healthy else "unhealthy"] += 1
        if m.membership == "Voter":
            counts["voter"] += 1
        elif m.membership == "Learner":
            counts["learner"] += 1
    for state, n in counts.items():
        metrics.MEMBERS.labels(ref.namespace, ref.name, state).set(n)


async def _report_invalid_spec(
    kube: KubeGateway, ref: DatastoreRef, previous: DatastoreStatus, message: str, now: datetime
) -> None:
    conditions = set_condition(
        previous.conditions, ConditionType.READY, False, "InvalidSpec", message, now, ref.generation
    )
    conditions = set_condition(
        conditions, ConditionType.DEGRADED, True, "InvalidSpec", message, now, ref.generation
    )
    await kube.patch_status(
        ref,
        {
            "observedGeneration": ref.generation,
            "conditions": [c.to_dict() for c in conditions],
        },
    )
    await kube.post_event(ref, "Warning", "InvalidSpec", message)
