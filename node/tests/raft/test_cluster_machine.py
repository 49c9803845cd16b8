"""A hypothesis RuleBasedStateMachine over the simulated cluster.

Hypothesis picks the faults and their order (and shrinks failing histories); the
cluster's own checkers assert safety after every step, the invariant checks log
matching pairwise, and teardown requires recovery once everything heals.
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.raft.sim import Cluster, SimParams
from zonestore_node.raft import ProposalDropped

IDS = [f"zs-{i}" for i in range(5)]
nodes = st.sampled_from(IDS)


class RaftCluster(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        calm = SimParams(
            pool=5,
            voters=3,
            p_drop=0.0,
            p_dup=0.0,
            max_delay=2,
            p_defer_ready=0.3,
            snapshot_every=6,
        )
        self.cluster = Cluster(seed=1, params=calm)

    @rule(ticks=st.integers(1, 25))
    def let_time_pass(self, ticks: int) -> None:
        for _ in range(ticks):
            self.cluster.step_time(chaos=False, propose=False)

    @rule(n=st.integers(1, 5))
    def propose(self, n: int) -> None:
        lead = self.cluster.leader()
        if lead is not None:
            with contextlib.suppress(ProposalDropped):
                lead.propose_batch([b"h%d" % i for i in range(n)])
            self.cluster.maybe_drive(lead.id)

    @rule(nid=nodes, clean=st.booleans())
    def crash(self, nid: str, clean: bool) -> None:
        self.cluster.crash(nid, clean)

    @rule(nid=nodes)
    def restart(self, nid: str) -> None:
        if self.cluster.procs[nid].node is None:
            self.cluster.start(nid)

    @rule(nid=nodes)
    def isolate(self, nid: str) -> None:
        self.cluster.cut |= {frozenset((nid, b)) for b in IDS if b != nid}

    @rule()
    def heal(self) -> None:
        self.cluster.cut.clear()

    @rule()
    def change_membership(self) -> None:
        self.cluster._conf_change()

    @rule(to=nodes)
    def transfer_leadership(self, to: str) -> None:
        lead = self.cluster.leader()
        if lead is not None:
            with contextlib.suppress(ProposalDropped):
                lead.transfer_leadership(to)

    @invariant()
    def logs_match(self) -> None:
        self.cluster.check_logs_match()

    def teardown(self) -> None:
        self.cluster.settle(400)


RaftCluster.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_cluster_under_hypothesis_chosen_faults_stays_safe = RaftCluster.TestCase
