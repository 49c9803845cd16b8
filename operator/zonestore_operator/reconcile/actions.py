"""What a planning pass hands back: the Plan value and the actions in it (membership
changes, pod labels and deletions, Events). Values only; built by reconcile.plan,
executed by reconcile.apply."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zonestore_operator.model.status import DatastoreStatus
from zonestore_operator.reconcile import credentials


class ActionKind(enum.Enum):
    ADD_LEARNER = "AddLearner"
    PROMOTE = "Promote"
    TRANSFER_LEADER = "TransferLeader"
    REMOVE_MEMBER = "RemoveMember"


@dataclass(frozen=True, slots=True)
class MemberAction:
    kind: ActionKind
    member: str  # the node id (= pod name) acted on; for a transfer, the new leader
    zone: str = ""
    peer_address: str = ""  # for ADD_LEARNER
    reason: str = ""


class PodActionKind(enum.Enum):
    SET_ROLE_LABEL = "SetRoleLabel"
    DELETE_FOR_UPDATE = "DeleteForUpdate"
    # DELETE with gracePeriodSeconds=0 and a UID precondition, for a pod stuck
    # Terminating on a dead node (step 6).
    FORCE_DELETE = "ForceDelete"


@dataclass(frozen=True, slots=True)
class PodAction:
    kind: PodActionKind
    pod: str
    role: str | None = None  # for SET_ROLE_LABEL; None removes the label
    uid: str | None = None  # for FORCE_DELETE: only this incarnation of the pod
    reason: str = ""  # for FORCE_DELETE: the Event's and the condition's message


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Plan:
    objects: list[dict[str, Any]]
    member_actions: tuple[MemberAction, ...]
    pod_actions: tuple[PodAction, ...]
    status: DatastoreStatus
    events: tuple[Event, ...] = ()
    zone_replicas: Mapping[str, int] = field(default_factory=dict)
    # Written before `objects` (the pods mount them), in order.
    secret_writes: tuple[credentials.SecretWrite, ...] = ()
