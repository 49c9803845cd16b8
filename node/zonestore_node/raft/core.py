"""The raft consensus state machine (`Raft`): messages and ticks in, effects queued out.

Owns roles and terms (§5.2 election, thesis §9.6 pre-vote, §6.2 check-quorum), log
replication and commitment (§5.3, §5.4), membership (thesis §4.1, see `confchange`),
leadership transfer (§3.10), ReadIndex (§6.4) and snapshot install (§5.1 of the thesis'
chapter 5 / paper §7). `node.Node` wraps it into the Ready/advance API the driver uses.

Pure: no clock (time is `tick()`), no sockets, no files, no threads; randomness comes
from an injected `random.Random`. Nothing here imports other zonestore_node packages.

Decisions worth knowing:

- Vote requests: a node answers a RequestVote on its log alone, even if its own (possibly
  stale) configuration says it is a learner or not a member; the *candidate* counts only
  the voters of its configuration. A learner never campaigns and never counts toward a
  quorum. (Refusing would deadlock a group whose just-promoted learner has not yet
  received its promotion entry when the leader dies — the zone-failure path.)
- Leader lease (thesis §4.2.3 / §9.6): with check_quorum, a node that heard from a
  leader within the election timeout ignores (pre-)vote requests of higher terms, unless
  the request is a leadership transfer's forced election.
- A leader removed from the configuration keeps leading, without counting itself, until
  the removal commits; then it hands off (TimeoutNow to the most caught-up voter) and
  steps down (thesis §4.2.2).
- The vote is only cleared when the term changes, never on a role change (two votes in
  one term would break election safety).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from zonestore_node.raft.confchange import ConfChange, ConfChangeError, apply_change
from zonestore_node.raft.log import RaftLog
from zonestore_node.raft.messages import (
    CAMPAIGN_TRANSFER,
    NONE,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    entry_size,
)
from zonestore_node.raft.progress import Progress, ProgressState
from zonestore_node.raft.quorum import VoteResult, quorum_active, quorum_index, vote_result
from zonestore_node.raft.readonly import ReadOnly
from zonestore_node.raft.storage import (
    ErrCompacted,
    ErrSnapshotTemporarilyUnavailable,
    LogStorage,
)

MT = MessageType


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class ProposalDropped(Exception):
    """The proposal (or request) was not accepted: not leader, transferring, or a config
    change is still pending. Nothing was appended; the caller may retry elsewhere/later."""


@dataclass(frozen=True, slots=True)
class Config:
    """Tunables. Ticks are abstract: the driver decides how long one lasts.

    Invariant: ``heartbeat_tick < election_tick``.
    """

    id: str
    election_tick: int = 10
    heartbeat_tick: int = 1
    max_size_per_msg: int | None = 1 << 20  # entry bytes per AppendEntries (>= 1 entry)
    max_inflight_msgs: int = 256  # pipelined AppendEntries per follower
    max_inflight_bytes: int | None = None
    max_committed_size_per_ready: int | None = None
    check_quorum: bool = True
    pre_vote: bool = True
    applied: int = 0  # the applied_index the state machine restarts from
    # Tell followers of a new commit index at once with an (often empty) AppendEntries,
    # as etcd does; False lets it ride on the next AppendEntries or heartbeat, which
    # halves the messages per write at the cost of followers applying up to one
    # heartbeat later. Safety is the same either way (it only delays a message).
    eager_commit_broadcast: bool = True

    def validate(self) -> None:
        if not self.id:
            raise ValueError("config.id must be non-empty")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be positive")


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth logging and exporting when it changes."""

    lead: str
    role: Role


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once applied_index >= ``index``."""

    index: int
    request_ctx: bytes


class Raft:
    """One member's consensus state. Drive it through `node.Node`."""

    def __init__(self, config: Config, storage: LogStorage, rng: random.Random) -> None:
        config.validate()
        self.id = config.id
        self.rng = rng
        self.config = config
        self.log = RaftLog(storage, config.max_committed_size_per_ready)
        self.election_timeout = config.election_tick
        self.heartbeat_timeout = config.heartbeat_tick
        self.check_quorum = config.check_quorum
        self.pre_vote = config.pre_vote

        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout
        self.votes: dict[str, bool] = {}
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.read_only = ReadOnly()
        self.pending_reads: list[tuple[str, bytes]] = []  # waiting for a commit in our term
        self.prs: dict[str, Progress] = {}
        self.voters: frozenset[str] = frozenset()
        self.learners: frozenset[str] = frozenset()

        hs, conf = storage.initial_state()
        snap_index = storage.snapshot().metadata.index
        # (index, membership) for every configuration in the log after the snapshot; the
        # last one is in force (thesis §4.1: the latest configuration, committed or not).
        self.conf_history: list[tuple[int, ConfState]] = [(snap_index, conf)]
        if hs.term or hs.vote or hs.commit:
            if not (self.log.commit_index <= hs.commit <= self.log.last_index()):
                raise ValueError(f"hard state commit {hs.commit} outside the stored log")
            self.log.commit_to(hs.commit)
            self.term = hs.term
            self.vote = hs.vote
        if config.applied > self.log.applied_index:
            self.log.applied_to(config.applied)
        tail = self.log.slice(snap_index + 1, self.log.last_index() + 1)
        self._replay_conf(snap_index + 1, tail)
        self._set_conf(self.conf_history[-1][1])
        self.become_follower(self.term, NONE)

    # --- views ---

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.commit_index)

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    @property
    def conf_state(self) -> ConfState:
        return self.conf_history[-1][1]

    def conf_state_at(self, index: int) -> ConfState:
        """The membership in force after the entry at ``index`` (for snapshots)."""
        if index < self.conf_history[0][0]:
            raise ValueError(f"no configuration known before {self.conf_history[0][0]}")
        found = self.conf_history[0][1]
        for i, cs in self.conf_history:
            if i > index:
                break
            found = cs
        return found

    def promotable(self) -> bool:
        return self.id in self.voters

    # --- role changes ---

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE  # only a new term clears the vote
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.lead_transferee = NONE
        self.votes = {}
        last = self.log.last_index()
        for nid in list(self.prs):
            pr = self._new_progress(nid, last + 1)
            if nid == self.id:
                pr.match_index = last
            self.prs[nid] = pr
        self.pending_conf_index = 0
        self.read_only = ReadOnly()
        self.pending_reads = []

    def _reset_randomized_election_timeout(self) -> None:
        # §5.2: randomized in [election_timeout, 2 * election_timeout).
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )

    def _new_progress(self, nid: str, next_index: int) -> Progress:
        return Progress(
            next_index,
            self.config.max_inflight_msgs,
            self.config.max_inflight_bytes,
            is_learner=nid in self.learners,
        )

    def become_follower(self, term: int, lead: str) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def become_pre_candidate(self) -> None:
        # Thesis §9.6: a pre-candidate changes neither its term nor its vote.
        if self.role is Role.LEADER:
            raise AssertionError("leader cannot become pre-candidate")
        self.role = Role.PRE_CANDIDATE
        self.votes = {}
        self.lead = NONE
        self._reset_randomized_election_timeout()

    def become_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise AssertionError("leader cannot become candidate")
        self._reset(self.term + 1)  # §5.2: increment currentTerm, vote for self
        self.vote = self.id
        self.role = Role.CANDIDATE

    def become_leader(self) -> None:
        if self.role is Role.FOLLOWER:
            raise AssertionError("follower cannot become leader")
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        self.prs[self.id].become_replicate()
        # Any configuration entry in the log may be uncommitted: allow no new change
        # until it commits (thesis §4.1) — and until we commit an entry of our term.
        self.pending_conf_index = self.log.last_index()
        # Thesis §6.4 / paper §8: a no-op entry of our term to learn what is committed.
        self._append_entries([Entry(self.term, self.log.last_index() + 1)])
        self._bcast_append()

    # --- ticks ---

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.hup(transfer=False)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                # Thesis §6.2: step down if no majority was heard from in a timeout.
                self.prs[self.id].recent_active = True
                active = {nid for nid, pr in self.prs.items() if pr.recent_active}
                if not quorum_active(self.voters, active):
                    self.become_follower(self.term, NONE)
                    return
                for nid, pr in self.prs.items():
                    if nid != self.id:
                        pr.recent_active = False
            if self.lead_transferee:
                self._abort_leader_transfer()  # §3.10: give up after an election timeout
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    # --- elections ---

    def hup(self, transfer: bool) -> None:
        """Start an election (a pre-vote round first unless ``transfer``)."""
        if self.role is Role.LEADER or not self.promotable():
            return
        if self.pre_vote and not transfer:
            self._campaign(pre_vote=True, transfer=False)
        else:
            self._campaign(pre_vote=False, transfer=transfer)

    def _campaign(self, pre_vote: bool, transfer: bool) -> None:
        if pre_vote:
            self.become_pre_candidate()
            term = self.term + 1  # the term we would campaign in; not adopted yet
        else:
            self.become_candidate()
            term = self.term
        self.votes[self.id] = True
        if vote_result(self.voters, self.votes) is VoteResult.WON:
            if pre_vote:
                self._campaign(pre_vote=False, transfer=transfer)
            else:
                self.become_leader()
            return
        last = self.log.last_index()
        last_term = self.log.last_term()
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for v in sorted(self.voters):
            if v != self.id:
                self.msgs.append(
                    Message(
                        MT.REQUEST_VOTE,
                        v,
                        self.id,
                        term,
                        log_term=last_term,
                        index=last,
                        context=ctx,
                        pre_vote=pre_vote,
                    )
                )

    # --- the message entry point ---

    def step(self, m: Message) -> None:
        if m.term > self.term:
            if m.type is MT.REQUEST_VOTE:
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.election_timeout
                )
                if in_lease and not force:
                    return  # thesis §4.2.3: a leader is alive, ignore disruptive requests
            if m.type is MT.REQUEST_VOTE and m.pre_vote:
                pass  # §9.6: answering a pre-vote never changes our term
            elif m.type is MT.REQUEST_VOTE_RESPONSE and m.pre_vote and not m.reject:
                pass  # the future term of a granted pre-vote; adopted when we campaign
            elif m.type in (MT.APPEND_ENTRIES, MT.HEARTBEAT, MT.INSTALL_SNAPSHOT):
                self.become_follower(m.term, m.from_)  # §5.1: adopt the newer term
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and m.type in (
                MT.APPEND_ENTRIES,
                MT.HEARTBEAT,
            ):
                # A stale leader (e.g. back from a partition) learns our term and steps
                # down; without this it could stay leader forever under pre-vote.
                self._send(MT.APPEND_ENTRIES_RESPONSE, m.from_)
            elif m.type is MT.REQUEST_VOTE and m.pre_vote:
                self._send(MT.REQUEST_VOTE_RESPONSE, m.from_, reject=True, pre_vote=True)
            return  # §5.1: stale requests are rejected/ignored

        if m.type is MT.REQUEST_VOTE:
            self._handle_request_vote(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_request_vote(self, m: Message) -> None:
        # §5.2: at most one vote per term, first come first served ("or already voted for
        # this candidate": a retransmitted request gets the same answer). A pre-vote for a
        # future term binds nothing.
        can_vote = (
            self.vote == m.from_
            or (self.vote == NONE and self.lead == NONE)
            or (m.pre_vote and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):  # §5.4.1
            self._send(MT.REQUEST_VOTE_RESPONSE, m.from_, term=m.term, pre_vote=m.pre_vote)
            if not m.pre_vote:
                self.election_elapsed = 0
                self.vote = m.from_
        else:
            self._send(MT.REQUEST_VOTE_RESPONSE, m.from_, reject=True, pre_vote=m.pre_vote)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MT.APPEND_ENTRIES:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_append_entries(m)
        elif t is MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_heartbeat(m)
        elif t is MT.INSTALL_SNAPSHOT:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_snapshot(m)
        elif t is MT.TIMEOUT_NOW:
            self.hup(transfer=True)  # §3.10: start an election at once, skip pre-vote
        elif t is MT.READ_INDEX:
            if self.lead != NONE:
                self._send(MT.READ_INDEX, self.lead, context=m.context)
        elif t is MT.READ_INDEX_RESPONSE:
            self.read_states.append(ReadState(m.index, m.context))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t is MT.APPEND_ENTRIES:
            self.become_follower(m.term, m.from_)  # §5.2: a leader of our term exists
            self._handle_append_entries(m)
        elif t is MT.HEARTBEAT:
            self.become_follower(m.term, m.from_)
            self._handle_heartbeat(m)
        elif t is MT.INSTALL_SNAPSHOT:
            self.become_follower(m.term, m.from_)
            self._handle_snapshot(m)
        elif t is MT.REQUEST_VOTE_RESPONSE:
            if m.pre_vote != (self.role is Role.PRE_CANDIDATE):
                return
            self.votes.setdefault(m.from_, not m.reject)
            result = vote_result(self.voters, self.votes)
            if result is VoteResult.WON:
                if self.role is Role.PRE_CANDIDATE:
                    self._campaign(pre_vote=False, transfer=False)
                else:
                    self.become_leader()  # §5.2: votes from a majority
            elif result is VoteResult.LOST:
                self.become_follower(self.term, NONE)

    # --- follower side of replication ---

    def _handle_append_entries(self, m: Message) -> None:
        log = self.log
        if m.index < log.commit_index:
            self._send(MT.APPEND_ENTRIES_RESPONSE, m.from_, index=log.commit_index)
            return
        res = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if res is not None:
            last_new, written = res
            if written:
                self._replay_conf(written, m.entries)
            self._send(MT.APPEND_ENTRIES_RESPONSE, m.from_, index=last_new)
            return
        # §5.3 step 2 failed: reply false, with a hint to skip a whole term at once.
        hint_index = min(m.index, log.last_index())
        hint_index, hint_term = log.find_conflict_by_term(hint_index, m.log_term)
        self._send(
            MT.APPEND_ENTRIES_RESPONSE,
            m.from_,
            index=m.index,
            reject=True,
            reject_hint=hint_index,
            log_term=hint_term,
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(m.commit)
        self._send(MT.HEARTBEAT_RESPONSE, m.from_, context=m.context)

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        if self._restore(m.snapshot):
            self._send(MT.INSTALL_SNAPSHOT_RESPONSE, m.from_, index=self.log.last_index())
        else:
            self._send(MT.INSTALL_SNAPSHOT_RESPONSE, m.from_, index=self.log.commit_index)

    def _restore(self, snap: Snapshot) -> bool:
        meta = snap.metadata
        if meta.index <= self.log.commit_index:
            return False  # we already have (and committed) everything it covers
        if self.log.match_term(meta.index, meta.term):
            # Paper §7: "if an existing entry has the same index and term ... retain
            # the entries following it": just fast-forward the commit.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snap)  # discard the entire log
        self.conf_history = [(meta.index, meta.conf_state)]
        self._set_conf(meta.conf_state)
        return True

    # --- membership ---

    def _replay_conf(self, first_written: int, ents: tuple[Entry, ...] | list[Entry]) -> None:
        """Entries from ``first_written`` were (re)written: recompute the configuration."""
        hist = self.conf_history
        changed = False
        while len(hist) > 1 and hist[-1][0] >= first_written:
            hist.pop()  # truncated away: the configuration reverts (thesis §4.1)
            changed = True
        for e in ents:
            if e.type is EntryType.CONF_CHANGE and e.index >= first_written:
                try:
                    new = apply_change(hist[-1][1], ConfChange.from_bytes(e.data))
                except ConfChangeError:
                    continue  # deterministic no-op on every member
                hist.append((e.index, new))
                changed = True
        if changed:
            self._set_conf(hist[-1][1])

    def _set_conf(self, conf: ConfState) -> None:
        self.voters = conf.voters
        self.learners = conf.learners
        last = self.log.last_index()
        members = conf.voters | conf.learners | {self.id}
        for nid in list(self.prs):
            if nid not in members:
                del self.prs[nid]
        for nid in members:
            pr = self.prs.get(nid)
            if pr is None:
                pr = self._new_progress(nid, last + 1)
                pr.recent_active = True  # give a new member one timeout to answer
                if nid == self.id:
                    pr.match_index = last
                self.prs[nid] = pr
            pr.is_learner = nid in conf.learners
        if self.lead_transferee and self.lead_transferee not in conf.voters:
            self._abort_leader_transfer()

    def _maybe_hand_off_after_removal(self) -> None:
        """Thesis §4.2.2: a leader removed from the configuration steps down once the
        removal is committed, after nudging the most caught-up voter to take over."""
        if self.role is not Role.LEADER or self.id in self.voters:
            return
        if self.log.commit_index < self.conf_history[-1][0]:
            return
        best = max(sorted(self.voters), key=lambda v: self.prs[v].match_index)
        if self.prs[best].match_index == self.log.last_index():
            self._send(MT.TIMEOUT_NOW, best)
        self.become_follower(self.term, NONE)

    # --- leader side ---

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t is MT.READ_INDEX:
            self._read_index_leader(m.from_, m.context)
            return
        pr = self.prs.get(m.from_)
        if pr is None:
            return
        if t is MT.APPEND_ENTRIES_RESPONSE:
            pr.recent_active = True
            if m.reject:
                self._handle_append_reject(m, pr)
            else:
                self._handle_append_success(m.from_, pr, m.index)
        elif t is MT.INSTALL_SNAPSHOT_RESPONSE:
            pr.recent_active = True
            self._handle_append_success(m.from_, pr, m.index)
        elif t is MT.HEARTBEAT_RESPONSE:
            pr.recent_active = True
            pr.paused = False
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match_index < self.log.last_index():
                self._send_append(m.from_)
            if m.context:
                self._handle_read_ack(m.from_, m.context)

    def _handle_append_reject(self, m: Message, pr: Progress) -> None:
        next_probe = m.reject_hint
        if m.log_term > 0:
            # The follower's hint is (index, term) in *its* log; find where our log can
            # possibly match it.
            next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
        if pr.maybe_decrease_to(m.index, next_probe):
            if pr.state is ProgressState.REPLICATE:
                pr.become_probe()
            self._send_append(m.from_)

    def _handle_append_success(self, nid: str, pr: Progress, index: int) -> None:
        was_paused = pr.is_paused()
        if not pr.maybe_update(index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match_index >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(index)
        if self._maybe_commit() and self.config.eager_commit_broadcast:
            self._bcast_append()
        elif was_paused:
            self._send_append(nid)
        while self._send_append(nid, send_if_empty=False):
            pass
        if nid == self.lead_transferee and pr.match_index == self.log.last_index():
            self._send(MT.TIMEOUT_NOW, nid)  # §3.10: the target caught up
        self._maybe_hand_off_after_removal()

    def _maybe_commit(self) -> bool:
        """§5.3/§5.4.2: commit the highest index on a majority, if it is of our term."""
        prs = self.prs
        mci = quorum_index([prs[v].match_index for v in self.voters])
        if not self.log.maybe_commit(mci, self.term):
            return False
        if self.pending_reads:
            pending, self.pending_reads = self.pending_reads, []
            for from_, ctx in pending:
                self._read_index_leader(from_, ctx)
        return True

    def _append_entries(self, ents: list[Entry]) -> int:
        last = self.log.append(ents)
        for e in ents:
            if e.type is EntryType.CONF_CHANGE:
                self._replay_conf(ents[0].index, ents)
                break
        self.prs[self.id].maybe_update(last)
        self._maybe_commit()  # a single voter commits alone
        return last

    def _send_append(self, to: str, send_if_empty: bool = True) -> bool:
        """Send what ``to`` is missing, respecting flow control; False if nothing sent."""
        pr = self.prs[to]
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next_index - 1
        try:
            prev_term = log.term(prev)
            ents = log.entries_from(pr.next_index, self.config.max_size_per_msg)
        except ErrCompacted:
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self.msgs.append(
            Message(
                MT.APPEND_ENTRIES,
                to,
                self.id,
                self.term,
                log_term=prev_term,
                index=prev,
                commit=log.commit_index,
                entries=tuple(ents),
            )
        )
        if ents:
            size = sum(entry_size(e) for e in ents) if pr.inflights.max_bytes else 0
            pr.sent_entries(ents[-1].index, size)
        elif pr.state is ProgressState.PROBE:
            pr.paused = True
        return True

    def _send_snapshot(self, to: str, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snap = self.log.snapshot()
        except ErrSnapshotTemporarilyUnavailable:
            return False
        if snap.is_empty:
            raise AssertionError("log compacted but storage has no snapshot")
        pr.become_snapshot(snap.metadata.index)
        self._send(MT.INSTALL_SNAPSHOT, to, snapshot=snap)
        return True

    def _bcast_append(self) -> None:
        for nid in self.prs:
            if nid != self.id:
                self._send_append(nid)

    def _bcast_heartbeat(self) -> None:
        ctx = self.read_only.last_pending_context()
        commit = self.log.commit_index
        for nid, pr in self.prs.items():
            if nid != self.id:
                # Never tell a follower to commit past what it is known to hold.
                hb_commit = min(pr.match_index, commit)
                self._send(MT.HEARTBEAT, nid, commit=hb_commit, context=ctx)

    # --- leader-only requests ---

    def propose(self, datas: list[bytes]) -> int:
        """Append ``datas`` as NORMAL entries; returns the index of the last one."""
        self._check_can_propose()
        term, first = self.term, self.log.last_index() + 1
        ents = [Entry(term, first + i, EntryType.NORMAL, d) for i, d in enumerate(datas)]
        last = self._append_entries(ents)
        self._bcast_append()
        return last

    def propose_conf_change(self, change: ConfChange) -> int:
        self._check_can_propose()
        if self.pending_conf_index > self.log.commit_index:
            raise ProposalDropped("a configuration change is still uncommitted (thesis §4.1)")
        if self.log.term(self.log.commit_index) != self.term:
            raise ProposalDropped("leader has not yet committed an entry of its term")
        apply_change(self.conf_state, change)  # raises ConfChangeError if invalid
        index = self.log.last_index() + 1
        self._append_entries([Entry(self.term, index, EntryType.CONF_CHANGE, change.to_bytes())])
        self.pending_conf_index = index
        self._bcast_append()
        return index

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise ProposalDropped(f"not leader (leader is {self.lead or 'unknown'})")
        if self.lead_transferee:
            raise ProposalDropped(f"leadership transfer to {self.lead_transferee} in progress")

    def transfer_leadership(self, target: str) -> None:
        """Thesis §3.10: bring ``target`` up to date, then tell it to time out now."""
        if self.role is not Role.LEADER:
            raise ProposalDropped(f"not leader (leader is {self.lead or 'unknown'})")
        if target not in self.voters:
            raise ProposalDropped(f"{target} is not a voter")
        if target == self.lead_transferee:
            return
        if self.lead_transferee:
            self._abort_leader_transfer()
        if target == self.id:
            return
        self.election_elapsed = 0  # the transfer must finish within one election timeout
        self.lead_transferee = target
        if self.prs[target].match_index == self.log.last_index():
            self._send(MT.TIMEOUT_NOW, target)
        else:
            self._send_append(target)

    def _abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE

    def read_index(self, ctx: bytes) -> None:
        """Thesis §6.4: learn a commit_index that is safe to read at, into `read_states`."""
        if self.role is Role.LEADER:
            self._read_index_leader(self.id, ctx)
        elif self.lead != NONE:
            self._send(MT.READ_INDEX, self.lead, context=ctx)
        else:
            raise ProposalDropped("no known leader to confirm a read index")

    def _read_index_leader(self, from_: str, ctx: bytes) -> None:
        if self.log.term_or_zero(self.log.commit_index) != self.term:
            # §6.4 step 1: wait for the no-op of our term to commit.
            self.pending_reads.append((from_, ctx))
            return
        index = self.log.commit_index
        if self.voters == {self.id}:
            self._respond_read(from_, index, ctx)  # a single voter is its own quorum
            return
        if self.read_only.add_request(index, from_, ctx):
            self._handle_read_ack(self.id, ctx)
            self._bcast_heartbeat()  # §6.4 step 3: confirm we are still leader

    def _handle_read_ack(self, from_: str, ctx: bytes) -> None:
        acks = self.read_only.recv_ack(from_, ctx)
        if acks is None or not quorum_active(self.voters, acks):
            return
        for req in self.read_only.advance(ctx):
            self._respond_read(req.from_, req.index, req.context)

    def _respond_read(self, to: str, index: int, ctx: bytes) -> None:
        if to == self.id:
            self.read_states.append(ReadState(index, ctx))
        else:
            self._send(MT.READ_INDEX_RESPONSE, to, index=index, context=ctx)

    # --- transport feedback ---

    def report_unreachable(self, nid: str) -> None:
        pr = self.prs.get(nid)
        if self.role is Role.LEADER and pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, nid: str, failure: bool) -> None:
        pr = self.prs.get(nid)
        if self.role is not Role.LEADER or pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if failure:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.paused = True  # wait for a heartbeat response before probing again

    # --- helpers ---

    def _send(
        self,
        mtype: MessageType,
        to: str,
        *,
        term: int | None = None,
        log_term: int = 0,
        index: int = 0,
        commit: int = 0,
        reject: bool = False,
        reject_hint: int = 0,
        snapshot: Snapshot | None = None,
        context: bytes = b"",
        pre_vote: bool = False,
    ) -> None:
        self.msgs.append(
            Message(
                mtype,
                to,
                self.id,
                self.term if term is None else term,
                log_term=log_term,
                index=index,
                commit=commit,
                reject=reject,
                reject_hint=reject_hint,
                snapshot=snapshot,
                context=context,
                pre_vote=pre_vote,
            )
        )
