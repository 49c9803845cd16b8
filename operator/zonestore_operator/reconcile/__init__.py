"""observe -> plan -> apply.

- `observation`: the values a pass observes (pods, nodes, StatefulSets, node statuses).
- `observe`: gathers an Observation through the Kubernetes gateway and the admin client.
- `plan`: a pure function from (spec, previous status, observation, now) to a Plan:
  desired objects, membership actions, pod actions, the new status and Events. Its
  steps live in `replicas` (the pass's View, each Replica's health), `membership`
  (desired voters, membership actions), `pods` (replicas per zone, pod actions) and
  `report` (the new status); the values it returns in `actions`.
- `kube`: the one module that talks to the Kubernetes API.
- `apply`: executes a Plan: server-side apply of the objects, pod labels/deletions,
  membership actions through the admin client, status and Events.
- `loop`: one reconcile pass (re-observes after each membership change).
"""
