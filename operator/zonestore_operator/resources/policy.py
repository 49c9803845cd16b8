"""The PodDisruptionBudget that keeps voluntary disruptions (drains, evictions) from
breaking the Raft quorum.

Why `minAvailable: quorum` over voter pods, not `maxUnavailable` over all pods:
- Only voters count toward quorum; learners can all go without harm. The budget selects
  pods whose role label is leader or follower (the operator keeps role labels current).
- With `maxUnavailable`, the disruption controller takes the expected pod count from the
  scale of the pods' controllers: here the per-zone StatefulSets, which also hold the
  learners, so the budget would be computed against the wrong total. With an integer
  `minAvailable` the expected count is the number of selected pods, i.e. the voters.
- quorum = voters // 2 + 1, so at most (voters - 1) // 2 voters may be disrupted at once
  (3 -> 1, 5 -> 2); a voter that is already down uses up that allowance. With a single
  voter nothing may be evicted voluntarily: that is the price of voters: 1.
Before the first roles are labelled the budget selects nothing (bootstrap is not
protected); the operator labels roles on its first pass after a leader appears.
"""

from __future__ import annotations

from typing import Any

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import DatastoreSpec
from zonestore_operator.resources import meta


def disruptions_allowed(voters: int) -> int:
    """Voters that may be down at once while a quorum remains."""
    return voters - (voters // 2 + 1)


def pod_disruption_budget(ref: DatastoreRef, spec: DatastoreSpec) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta.object_meta(ref, meta.pdb_name(ref), "voters"),
        "spec": {
            "minAvailable": spec.quorum,
            "selector": {
                "matchLabels": meta.selector_labels(ref),
                "matchExpressions": [
                    {
                        "key": meta.L_ROLE,
                        "operator": "In",
                        "values": [meta.ROLE_LEADER, meta.ROLE_FOLLOWER],
                    }
                ],
            },
        },
    }
