"""A toy cluster for planner tests: pods, Raft membership and a leader, turned into an
Observation, and changed by a Plan the way the real apply + nodes would change it.

Only the first membership action of a plan is executed per step, as the real loop does
(Raft changes membership one server at a time and the loop re-observes after each)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from zonestore_operator.model.node import MemberInfo, Membership, NodeStatus, RaftRole
from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import DatastoreSpec
from zonestore_operator.model.status import DatastoreStatus
from zonestore_operator.reconcile import plan as planner
from zonestore_operator.reconcile.credentials import WriteMode
from zonestore_operator.reconcile.observation import (
    Observation,
    PodObservation,
    StatefulSetObservation,
)
from zonestore_operator.resources import meta, security

REF = DatastoreRef(name="ds", namespace="ns", uid="u", generation=1)
T0 = datetime(2030, 1, 1, 12, 0, 0).astimezone()


@dataclass
class SimPod:
    zone: str
    ordinal: int
    role_label: str | None = None
    revision: str = "r1"
    ready: bool = True
    deleting: bool = False  # Terminating: deletionTimestamp set
    incarnation: int = 0  # bumped when the StatefulSet recreates the pod

    @property
    def node(self) -> str:
        return f"node-{self.zone}-{self.ordinal}" + (
            f"-{self.incarnation}" if self.incarnation else ""
        )

    @property
    def uid(self) -> str:
        return f"uid-{self.zone}-{self.ordinal}-{self.incarnation}"


@dataclass
class SimMember:
    zone: str
    membership: Membership
    lag: int = 0


@dataclass
class SimCluster:
    spec: DatastoreSpec
    pods: dict[str, SimPod] = field(default_factory=dict)
    members: dict[str, SimMember] = field(default_factory=dict)
    leader: str | None = None
    term: int = 1
    sts: dict[str, int] = field(default_factory=dict)
    update_revision: str = "r1"
    dead_zones: set[str] = field(default_factory=set)  # pods unreachable, nodes NotReady
    not_ready_zones: set[str] = field(default_factory=set)  # nodes NotReady, pods answer
    # Kubernetes node name -> since when it is NotReady (its pods unreachable).
    dead_nodes: dict[str, datetime] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)
    secrets: dict[str, dict[str, bytes]] = field(default_factory=dict)

    @classmethod
    def healthy(cls, spec: DatastoreSpec) -> SimCluster:
        sim = cls(spec=spec)
        boot = meta.bootstrap_members(REF, spec)
        for zone in spec.zones:
            sim.sts[zone] = spec.replicas_per_zone
            for i in range(spec.replicas_per_zone):
                name = meta.pod_name(REF, zone, i)
                sim.pods[name] = SimPod(zone, i)
                kind = Membership.VOTER if name in boot else Membership.LEARNER
                sim.members[name] = SimMember(zone, kind)
        sim.leader = boot[0]
        sim.label_roles()
        return sim

    def label_roles(self) -> None:
        for name, pod in self.pods.items():
            m = self.members.get(name)
            pod.role_label = (
                "leader"
                if name == self.leader
                else ("follower" if m.membership is Membership.VOTER else "learner")
                if m
                else None
            )

    def reachable(self, name: str) -> bool:
        pod = self.pods.get(name)
        return (
            pod is not None
            and pod.zone not in self.dead_zones
            and pod.node not in self.dead_nodes
            and not pod.deleting
        )

    def elect_if_needed(self) -> None:
        voters = [n for n, m in self.members.items() if m.membership is Membership.VOTER]
        alive = [v for v in voters if self.reachable(v)]
        has_quorum = len(alive) > len(voters) // 2
        if self.leader is not None and self.reachable(self.leader) and has_quorum:
            return  # check-quorum: a leader that lost its majority steps down
        self.leader = min(alive) if len(alive) > len(voters) // 2 else None
        self.term += 1

    def observation(self) -> Observation:
        self.elect_if_needed()
        pods = {
            name: PodObservation(
                name=name,
                zone=p.zone,
                ordinal=p.ordinal,
                ready=p.ready and self.reachable(name),
                deleting=p.deleting,
                uid=p.uid,
                node_name=p.node,
                ip="10.0.0.1",
                role_label=p.role_label,
                revision=p.revision,
            )
            for name, p in self.pods.items()
        }
        down = self.dead_zones | self.not_ready_zones
        node_ready = {
            pod.node_name: pod.zone not in down and pod.node_name not in self.dead_nodes
            for pod in pods.values()
            if pod.node_name
        }
        zone_nodes: dict[str, tuple[str, ...]] = {}
        for pod in pods.values():
            assert pod.node_name
            zone_nodes[pod.zone] = (*zone_nodes.get(pod.zone, ()), pod.node_name)
        infos = tuple(
            MemberInfo(
                id=n,
                peer_address=meta.peer_address(REF, self.spec, n),
                zone=m.zone,
                membership=m.membership,
                match_index=1000 - m.lag,
                lag=m.lag,
                healthy=self.reachable(n),
            )
            for n, m in self.members.items()
        )
        statuses = {}
        for name, p in self.pods.items():
            if not self.reachable(name):
                continue
            m = self.members.get(name)
            if name == self.leader:
                role = RaftRole.LEADER
            elif m and m.membership is Membership.VOTER:
                role = RaftRole.FOLLOWER
            else:
                role = RaftRole.LEARNER
            statuses[name] = NodeStatus(
                node_id=name,
                zone=p.zone,
                role=role,
                term=self.term,
                leader=self.leader,
                commit_index=1000,
                applied_index=1000 - (m.lag if m else 1000),
                ready=True,
                members=infos if name == self.leader else (),
            )
        return Observation(
            pods=pods,
            node_ready=node_ready,
            node_not_ready_since=dict(self.dead_nodes),
            zone_nodes=zone_nodes,
            statefulsets={
                z: StatefulSetObservation(z, n, self.update_revision) for z, n in self.sts.items()
            },
            statuses=statuses,
            secrets=dict(self.secrets),
        )

    def apply(self, p: planner.Plan) -> None:
        for write in p.secret_writes:
            name = write.secret["metadata"]["name"]
            if write.mode is WriteMode.CREATE and name in self.secrets:
                break
            self.secrets[name] = security.decode_data(write.secret["data"])
        for zone, n in p.zone_replicas.items():
            self.sts[zone] = n
            for i in range(n):
                name = meta.pod_name(REF, zone, i)
                if name not in self.pods:
                    self.pods[name] = SimPod(zone, i, revision=self.update_revision)
            for name in [k for k, v in self.pods.items() if v.zone == zone and v.ordinal >= n]:
                del self.pods[name]
        for action in p.pod_actions:
            if action.kind is planner.PodActionKind.SET_ROLE_LABEL:
                self.pods[action.pod].role_label = action.role
            elif action.kind is planner.PodActionKind.FORCE_DELETE:
                # The StatefulSet recreates the pod, scheduled on a live node.
                pod = self.pods[action.pod]
                assert action.uid == pod.uid
                pod.deleting, pod.incarnation = False, pod.incarnation + 1
                self.log.append(("ForceDelete", action.pod))
            else:
                pod = self.pods[action.pod]
                pod.revision = self.update_revision
                self.log.append(("Restart", action.pod))
        if p.member_actions:
            a = p.member_actions[0]
            self.log.append((a.kind.value, a.member))
            if a.kind is planner.ActionKind.ADD_LEARNER:
                self.members[a.member] = SimMember(a.zone, Membership.LEARNER, lag=500)
            elif a.kind is planner.ActionKind.PROMOTE:
                self.members[a.member].membership = Membership.VOTER
            elif a.kind is planner.ActionKind.TRANSFER_LEADER:
                self.leader = a.member
                self.term += 1
            elif a.kind is planner.ActionKind.REMOVE_MEMBER:
                del self.members[a.member]

    def catch_up(self) -> None:
        for m in self.members.values():
            m.lag = 0

    def step(self, status: DatastoreStatus, now: datetime) -> tuple[planner.Plan, DatastoreStatus]:
        p = planner.plan(REF, self.spec, status, self.observation(), now)
        self.apply(p)
        return p, p.status

    def converge(
        self, status: DatastoreStatus, now: datetime, steps: int = 30, catch_up: bool = True
    ) -> DatastoreStatus:
        """Plan and apply until a plan changes nothing; learners catch up between steps
        when `catch_up`. Fails if it does not settle."""
        for i in range(steps):
            before = (dict(self.sts), {k: (v.membership, v.lag) for k, v in self.members.items()})
            p, status = self.step(status, now + timedelta(seconds=i))
            if catch_up:
                self.catch_up()
            after = (dict(self.sts), {k: (v.membership, v.lag) for k, v in self.members.items()})
            if not p.member_actions and before == after and not p.pod_actions:
                return status
        raise AssertionError(f"did not settle in {steps} steps: {self.log}")
