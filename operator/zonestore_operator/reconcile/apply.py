"""Carry out a Plan: Secrets (created once, or replaced on rotation), objects
(server-side apply), pod labels, update deletions and forced deletions, the
FIRST membership action (through the admin client, addressed to any healthy node: a
follower redirects to the leader), Events, and the status.

Only one membership action per call: Raft changes membership one server at a time, and
the loop re-observes before the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import DatastoreSpec
from zonestore_operator.reconcile.credentials import WriteMode
from zonestore_operator.reconcile.kube import KubeError, KubeGateway
from zonestore_operator.reconcile.observation import Observation
from zonestore_operator.reconcile.plan import (
    ActionKind,
    MemberAction,
    Plan,
    PodActionKind,
)
from zonestore_operator.resources import meta


class MembershipAdmin(Protocol):
    async def add_learner(
        self, address: str, member_id: str, peer_address: str, zone: str
    ) -> None: ...
    async def promote(self, address: str, member_id: str) -> None: ...
    async def remove(self, address: str, member_id: str) -> None: ...
    async def transfer_leader(self, address: str, target: str) -> None: ...


_EVENT_REASON = {
    ActionKind.ADD_LEARNER: "MemberAdded",
    ActionKind.PROMOTE: "MemberPromoted",
    ActionKind.TRANSFER_LEADER: "LeadershipTransferred",
    ActionKind.REMOVE_MEMBER: "MemberRemoved",
}


def admin_address(plan: Plan, observation: Observation, spec: DatastoreSpec) -> str | None:
    """The leader's admin address when it has an IP, else any healthy member's."""
    order = [plan.status.leader] + [m.pod for m in plan.status.members if m.healthy]
    for pod_name in order:
        pod = observation.pods.get(pod_name or "")
        if pod is not None and pod.ip:
            return f"{pod.ip}:{spec.ports.admin}"
    return None


async def apply_secrets(kube: KubeGateway, plan: Plan) -> bool:
    """Write the plan's Secrets in order. A Secret to create that already exists (another
    operator replica, or a Secret made by hand, got there first) is left as it is and
    the remaining writes wait for the next pass, which plans from what exists; returns
    False then."""
    for write in plan.secret_writes:
        if write.mode is WriteMode.CREATE:
            if not await kube.create(write.secret):
                return False
        else:
            await kube.apply(write.secret)
    return True


# Objects a Datastore may ask for that need what the cluster may lack (the Prometheus
# Operator's CRDs, the chart's opt-in RBAC): a failure is reported, not fatal, so the rest
# of the pass (status included) still happens.
OPTIONAL_KINDS = frozenset({"PodMonitor"})


async def apply_objects(kube: KubeGateway, plan: Plan) -> list[str]:
    """Apply every object; returns what failed among the optional ones."""
    failed = []
    for obj in plan.objects:
        if obj["kind"] not in OPTIONAL_KINDS:
            await kube.apply(obj)
            continue
        try:
            await kube.apply(obj)
        except KubeError as exc:
            failed.append(f"{obj['kind']} {obj['metadata']['name']} not applied: {exc}")
    return failed


async def apply_pods(kube: KubeGateway, ref: DatastoreRef, plan: Plan) -> list[str]:
    restarted = []
    for action in plan.pod_actions:
        if action.kind is PodActionKind.SET_ROLE_LABEL:
            labels: Mapping[str, str | None] = {meta.L_ROLE: action.role}
            await kube.set_pod_labels(ref.namespace, action.pod, labels)
        elif action.kind is PodActionKind.FORCE_DELETE:
            assert action.uid, "the planner forces only a pod whose uid it saw"
            if await kube.force_delete_pod(ref.namespace, action.pod, action.uid):
                await kube.post_event(ref, "Warning", "PodForceDeleted", action.reason)
        else:
            await kube.delete_pod(ref.namespace, action.pod)
            restarted.append(action.pod)
            await kube.post_event(
                ref, "Normal", "PodRestarted", f"restarted {action.pod} to update it"
            )
    return restarted


async def apply_member_action(
    admin: MembershipAdmin,
    kube: KubeGateway,
    ref: DatastoreRef,
    address: str,
    action: MemberAction,
) -> None:
    if action.kind is ActionKind.ADD_LEARNER:
        await admin.add_learner(address, action.member, action.peer_address, action.zone)
        message = f"added {action.member} ({action.zone}) as a learner: {action.reason}"
    elif action.kind is ActionKind.PROMOTE:
        await admin.promote(address, action.member)
        message = f"promoted {action.member} ({action.zone}) to voter: {action.reason}"
    elif action.kind is ActionKind.TRANSFER_LEADER:
        await admin.transfer_leader(address, action.member)
        message = f"leadership to {action.member} ({action.zone}): {action.reason}"
    else:
        await admin.remove(address, action.member)
        message = f"removed {action.member} ({action.zone}): {action.reason}"
    await kube.post_event(ref, "Normal", _EVENT_REASON[action.kind], message)
