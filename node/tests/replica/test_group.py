"""Replica groups on loopback, in one event loop: replication, apply, reads, failover."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest

from tests.harness import free_port
from zonestore_node.model import keys
from zonestore_node.model.indexing import EntityPb
from zonestore_node.raft import messages as rmsg
from zonestore_node.replica.group import (
    GroupConfig,
    NotLeader,
    OutcomeUnknown,
    RaftGroup,
    hand_off_target,
)
from zonestore_node.replica.walsync import SyncPolicy, SyncThread
from zonestore_node.storage import mvcc
from zonestore_node.storage.engine import Engine, Family
from zonestore_node.txn import apply
from zonestore_node.txn.clock import HybridClock
from zonestore_node.txn.command import CommitCommand, Op, Write


def _write(name: str, value: int, commit_ts: int) -> CommitCommand:
    key = keys.build("p", "", "", (("K", name),))
    entity = EntityPb()
    entity.key.CopyFrom(key)
    entity.properties["v"].integer_value = value
    return CommitCommand(
        commit_ts, (Write(Op.UPSERT, keys.encode(key), entity.SerializeToString()),)
    )


class Member:
    def __init__(self, group: RaftGroup, engine: Engine) -> None:
        self.group = group
        self.engine = engine
        self.task: asyncio.Task[None] | None = None

    def value(self, name: str) -> int | None:
        key = keys.build("p", "", "", (("K", name),))
        version = self.group.store.get(Family.ENTITIES, keys.encode(key), self.group.read_ts())
        if version is None:
            return None
        _, entity = apply.decode_entity(version.payload)
        return int(entity.properties["v"].integer_value)


def _make(tmp: Path, node_id: str, cluster: dict[str, str], seed: int, **config: int) -> Member:
    engine = Engine(tmp / node_id)
    group = RaftGroup(
        GroupConfig(
            node_id=node_id,
            zone="z",
            peer_addr=cluster[node_id],
            advertise_peer_addr=cluster[node_id],
            client_addr="",
            admin_addr="",
            initial_cluster=cluster,
            tick_seconds=0.02,
            **config,  # type: ignore[arg-type]
        ),
        engine,
        mvcc.Store(engine),
        apply.apply,
        CommitCommand.decode,
        HybridClock(),
        random.Random(seed),
        touches=apply.touches,
    )
    return Member(group, engine)


@asynccontextmanager
async def cluster(tmp: Path, n: int, **config: int) -> AsyncIterator[list[Member]]:
    ids = [f"n{i}" for i in range(n)]
    addrs = {i: f"127.0.0.1:{free_port()}" for i in ids}
    members = [_make(tmp, i, addrs, seed, **config) for seed, i in enumerate(ids)]
    for m in members:
        m.task = asyncio.create_task(m.group.run())
    try:
        yield members
    finally:
        for m in members:
            m.group.close()
        for m in members:
            if m.task is not None:
                await asyncio.wait_for(m.task, 5)
            m.engine.close()


async def leader_of(members: list[Member], timeout: float = 5.0) -> Member:
    async with asyncio.timeout(timeout):
        while True:
            for m in members:
                if m.group.is_leader and m.group._leader_ready.is_set():
                    return m
            await asyncio.sleep(0.02)


async def names_leader(member: Member, leader: Member, timeout: float = 5.0) -> None:
    """Wait until `member` has heard that `leader` leads."""
    async with asyncio.timeout(timeout):
        while member.group.leader != leader.group.config.node_id:
            await asyncio.sleep(0.02)


async def test_a_group_of_one_commits_and_applies(tmp_path: Path) -> None:
    async with cluster(tmp_path, 1) as (solo,):
        leader = await leader_of([solo])
        result = await leader.group.submit(_write("a", 1, leader.group.clock.now()))
        assert result.error is None
        assert solo.value("a") == 1
        barrier = leader.group.read_barrier()
        assert barrier.done()  # one voter: no ReadIndex round to wait for
        assert barrier.result() >= result.commit_ts


def _big_write(name: str, size: int, commit_ts: int) -> CommitCommand:
    key = keys.build("p", "", "", (("K", name),))
    entity = EntityPb()
    entity.key.CopyFrom(key)
    entity.properties["v"].integer_value = size
    entity.properties["pad"].blob_value = b"x" * size
    entity.properties["pad"].exclude_from_indexes = True
    return CommitCommand(
        commit_ts, (Write(Op.UPSERT, keys.encode(key), entity.SerializeToString()),)
    )


async def test_the_log_held_in_memory_is_bounded_in_bytes_not_only_in_entries(
    tmp_path: Path,
) -> None:
    """Large commands trigger a snapshot by the bytes applied since the last one, and
    compaction keeps at most snapshot_keep_bytes of applied entries (the entry counts are
    far from their limits); followers still converge."""
    limits = {"snapshot_bytes": 64 << 10, "snapshot_keep_bytes": 16 << 10}
    async with cluster(tmp_path, 3, **limits) as members:
        leader = await leader_of(members)
        for i in range(40):  # 40 commands of ~4 KiB: 160 KiB in all
            result = await leader.group.submit(_big_write(f"b{i}", 4096, leader.group.clock.now()))
            assert result.error is None
        async with asyncio.timeout(5):
            while any(m.group.applied_index < leader.group.applied_index for m in members):
                await asyncio.sleep(0.02)
        for m in members:
            storage = m.group.storage
            assert storage.snapshot().metadata.index > 0, "no snapshot was taken by size"
            assert m.group.applied_index < 100  # the entry-count limits were not reached
            held = sum(
                len(e.data)
                for e in storage.entries(storage.first_index(), m.group.applied_index + 1)
            )
            # Kept behind the snapshot (<= 16 KiB + one entry) plus applied since (< 64 KiB).
            assert held < (16 << 10) + 4200 + (64 << 10), held
            assert storage.first_index() > 10, "nothing was compacted"
            assert m.value("b39") == 4096


async def test_three_replicas_apply_the_same_writes_in_the_same_order(tmp_path: Path) -> None:
    async with cluster(tmp_path, 3) as members:
        leader = await leader_of(members)
        futures = [
            leader.group.submit(_write(f"k{i % 5}", i, leader.group.clock.now())) for i in range(50)
        ]
        results = await asyncio.gather(*futures)
        assert all(r.error is None for r in results)
        async with asyncio.timeout(5):
            while any(m.group.applied_index < leader.group.applied_index for m in members):
                await asyncio.sleep(0.02)
        for m in members:
            assert [m.value(f"k{j}") for j in range(5)] == [45, 46, 47, 48, 49]


async def test_commands_applied_in_one_ready_see_each_others_writes(tmp_path: Path) -> None:
    """Commands on distinct keys share a RocksDB batch; a command touching a key that an
    earlier one in the batch wrote must still read that write (the batch is written
    first)."""
    async with cluster(tmp_path, 1) as (solo,):
        leader = await leader_of([solo])
        group = leader.group
        first = [group.submit(_write(f"k{i}", i, group.clock.now())) for i in range(5)]
        again = group.submit(_write("k0", 100, group.clock.now()))
        upsert = _write("k1", 7, group.clock.now())
        w = upsert.writes[0]
        refused = group.submit(
            CommitCommand(upsert.commit_ts, (Write(Op.INSERT, w.encoded, w.entity),))
        )
        results = await asyncio.gather(*first, again, refused)
        assert [r.error for r in results[:6]] == [None] * 6
        assert results[5].writes[0].create_ts == results[0].commit_ts  # saw the first k0
        assert results[6].error is not None  # k1 already exists: written in the same Ready
        assert solo.value("k0") == 100
        assert [solo.value(f"k{i}") for i in range(1, 5)] == [1, 2, 3, 4]


def test_touches_names_what_a_command_reads() -> None:
    plain = _write("a", 1, 10)
    assert apply.touches(plain) == frozenset({plain.writes[0].encoded})
    with_ids = CommitCommand(10, plain.writes, id_high_water=5)
    ids_only = CommitCommand(11, (), id_high_water=6)
    assert apply.touches(with_ids) & apply.touches(ids_only)  # type: ignore[operator]
    assert apply.touches(CommitCommand(10, plain.writes, read_ts=5)) is None


async def test_followers_refuse_proposals_and_name_the_leader(tmp_path: Path) -> None:
    async with cluster(tmp_path, 3) as members:
        leader = await leader_of(members)
        follower = next(m for m in members if m is not leader)
        await names_leader(follower, leader)
        with pytest.raises(NotLeader) as info:
            follower.group.submit(_write("x", 1, 1))
        assert info.value.leader == leader.group.config.node_id


async def test_linearizable_read_barrier_returns_the_latest_commit(tmp_path: Path) -> None:
    async with cluster(tmp_path, 3) as members:
        leader = await leader_of(members)
        ts = leader.group.clock.now()
        await leader.group.submit(_write("r", 7, ts))
        read_ts = await asyncio.wait_for(leader.group.read_barrier(), 5)
        assert read_ts >= ts


async def test_a_new_leader_is_elected_when_the_leader_stops_and_keeps_every_commit(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, 3) as members:
        leader = await leader_of(members)
        for i in range(10):
            await leader.group.submit(_write("c", i, leader.group.clock.now()))
        leader.group.close()
        assert leader.task is not None
        await asyncio.wait_for(leader.task, 5)
        rest = [m for m in members if m is not leader]
        new_leader = await leader_of(rest, timeout=10)
        assert new_leader is not leader
        result = await new_leader.group.submit(_write("c", 100, new_leader.group.clock.now()))
        assert result.error is None
        for m in rest:
            async with asyncio.timeout(5):
                while m.value("c") != 100:
                    await asyncio.sleep(0.02)


async def test_the_sync_thread_hands_back_each_result_and_error() -> None:
    outcomes: list[float | Exception] = [0.25, OSError("EIO"), 0.5]

    def sync() -> float:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    thread = SyncThread(sync)
    try:
        assert await thread() == 0.25
        with pytest.raises(OSError, match="EIO"):
            await thread()
        assert await thread() == 0.5
    finally:
        thread.close()


def test_the_sync_runs_inline_only_while_readies_are_small_and_syncs_short() -> None:
    policy = SyncPolicy()
    # One client: one entry per Ready, fast disk -> inline, Ready after Ready.
    for _ in range(20):
        assert policy.inline(1)
        policy.observe(0.0003)
    # Concurrent writers: a Ready of several entries moves it to the thread at once.
    decisions = []
    for _ in range(5):
        decisions.append(policy.inline(6))
        policy.observe(0.0003)
    assert decisions == [False] * 5
    # Two entries now and then among single ones stays inline.
    assert [policy.inline(n) for n in (1, 1, 1, 1, 1, 1, 1, 1, 1, 1)][-1]
    assert policy.inline(2)
    # Quiet again: back inline once the average falls.
    for _ in range(30):
        quiet = policy.inline(1)
        policy.observe(0.0003)
    assert quiet
    # A slow disk: never inline, however small the Readies.
    for _ in range(10):
        policy.inline(1)
        policy.observe(0.05)
    assert not policy.inline(1)


async def test_a_quiet_group_syncs_inline_and_a_busy_one_in_the_thread(tmp_path: Path) -> None:
    async with cluster(tmp_path, 1) as (solo,):
        leader = await leader_of([solo])
        group = leader.group
        before = group._sync_policy.inline_syncs
        for i in range(5):
            await group.submit(_write(f"q{i}", i, group.clock.now()))
        assert group._sync_policy.inline_syncs >= before + 5
        group._sync_policy.entries = 10.0  # as after a burst of concurrent writers
        before = group._sync_policy.inline_syncs
        await group.submit(_write("busy", 1, group.clock.now()))
        assert group._sync_policy.inline_syncs == before
        assert leader.value("busy") == 1 and leader.value("q4") == 4


async def test_followers_serve_strong_reads_after_a_read_index_from_the_leader(
    tmp_path: Path,
) -> None:
    """Thesis §6.4.1: a follower's read point covers every write acknowledged before the
    read began; both followers' rounds run at once at the leader without mixing."""
    async with cluster(tmp_path, 3) as members:
        leader = await leader_of(members)
        followers = [m for m in members if m is not leader]
        for f in followers:
            await names_leader(f, leader)
        for i in range(5):
            result = await leader.group.submit(_write("r", i, leader.group.clock.now()))
            acked_ts = result.commit_ts
            points = await asyncio.gather(*(f.group.read_barrier() for f in followers))
            for f, point in zip(followers, points, strict=True):
                assert point >= acked_ts
                assert f.group.applied_index >= leader.group.applied_index - 1
                assert f.value("r") == i  # read at the replica's applied state
        # Many reads at once from both followers: every one completes.
        many = [f.group.read_barrier() for f in followers for _ in range(20)]
        async with asyncio.timeout(5):
            assert len(await asyncio.gather(*many)) == 40


async def test_without_follower_reads_a_follower_refuses_strong_reads(tmp_path: Path) -> None:
    async with cluster(tmp_path, 3, follower_reads=False) as members:
        leader = await leader_of(members)
        follower = next(m for m in members if m is not leader)
        with pytest.raises(NotLeader):
            follower.group.read_barrier()


async def test_a_follower_read_round_follows_a_new_leader(tmp_path: Path) -> None:
    """A round sent to a leader that lost office goes again to the next one."""
    async with cluster(tmp_path, 3) as members:
        leader = await leader_of(members)
        follower = next(m for m in members if m is not leader)
        await names_leader(follower, leader)
        target = next(m for m in members if m is not leader and m is not follower)
        leader.group.close()  # the old leader stops answering
        assert leader.task is not None
        await asyncio.wait_for(leader.task, 5)
        pending = follower.group.read_barrier()
        # The old leader never answers; the round must not hang: it ends as soon as the
        # follower hears of the election (NotLeader: the edge waits for the next leader
        # and sends the read again) or is answered by the next leader.
        async with asyncio.timeout(5):
            with suppress(NotLeader):
                await pending
        new_leader = await leader_of([follower, target], timeout=10)
        reader = follower if follower is not new_leader else target
        await names_leader(reader, new_leader)
        result = await new_leader.group.submit(_write("x", 7, new_leader.group.clock.now()))
        async with asyncio.timeout(5):
            assert await reader.group.read_barrier() >= result.commit_ts
        assert reader.value("x") == 7
        leader.task = None  # already stopped


async def test_a_proposal_a_snapshot_covered_has_an_unknown_outcome(tmp_path: Path) -> None:
    """Its index was applied by a snapshot, not by an entry it could be matched with: it
    may have committed (replicated before its leader lost office), so never 'not
    applied' (ProposalLost, which clients take as safe to retry)."""
    async with cluster(tmp_path, 1) as (solo,):
        leader = await leader_of([solo])
        group = leader.group
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        covered = group.applied_index  # as if a snapshot had installed up to here
        group._pending[covered] = (group.node.raft.term, future, None)
        await group.submit(_write("a", 1, group.clock.now()))
        with pytest.raises(OutcomeUnknown):
            await future


def _snapshot_message(index: int) -> rmsg.Message:
    meta = rmsg.SnapshotMetadata(index=index, term=1, conf_state=rmsg.ConfState(frozenset({"n0"})))
    return rmsg.Message(
        type=rmsg.MessageType.INSTALL_SNAPSHOT, to="n0", from_="n1", term=1,
        snapshot=rmsg.Snapshot(metadata=meta),
    )  # fmt: skip


def _stagings(folder: Path) -> int:
    return len(list(folder.glob("snapshot-incoming-*")))


def _stream(group: RaftGroup, index: int, value: bytes) -> None:
    """The chunks a leader sends for the snapshot at `index`: one row, then the end."""
    group._on_snapshot_chunk("n1", [index, 7, 0, Family.ENTITIES.value, [[b"row", value]], False])
    group._on_snapshot_chunk("n1", [index, 7, 1, Family.META.value, [], True])


async def test_a_resent_snapshot_leaves_the_staged_copy_a_pending_install_names(
    tmp_path: Path,
) -> None:
    """The leader resends a snapshot while the follower has yet to install the first copy
    (jepsen split r5: the resend's first chunk discarded the staging the pending Ready was
    about to restore, and the group died with "snapshot 800 is not staged")."""
    member = _make(tmp_path, "n0", {"n0": f"127.0.0.1:{free_port()}"}, 1)
    group = member.group
    try:
        _stream(group, 40, b"first")
        message = _snapshot_message(40)
        assert group._staged_for(message)  # stepped: its Ready restores index 40
        group._on_snapshot_chunk(
            "n1", [40, 7, 0, Family.ENTITIES.value, [[b"row", b"resend"]], False]
        )
        _stream(group, 80, b"newer")  # a newer one completes meanwhile
        assert message.snapshot is not None
        batch = group.engine.batch()
        group._restore(message.snapshot, batch)
        group.engine.write(batch)
        assert group.engine.get(Family.ENTITIES, b"row") == b"first"
        group._after_restore(message.snapshot)
        assert sorted(group._staged) == [80]  # the installed copy is gone, the newer kept
        assert _stagings(tmp_path) == 1
    finally:
        group.close()
        member.engine.close()


async def test_a_snapshot_stream_with_a_gap_is_dropped_not_staged(tmp_path: Path) -> None:
    member = _make(tmp_path, "n0", {"n0": f"127.0.0.1:{free_port()}"}, 1)
    group = member.group
    try:
        group._on_snapshot_chunk("n1", [40, 7, 0, Family.ENTITIES.value, [[b"a", b"1"]], False])
        group._on_snapshot_chunk("n1", [40, 7, 2, Family.META.value, [], True])  # seq 1 lost
        assert not group._staged_for(_snapshot_message(40))
        assert _stagings(tmp_path) == 0
        _stream(group, 40, b"again")  # the resend is staged
        assert group._staged_for(_snapshot_message(40))
    finally:
        group.close()
        member.engine.close()


def test_a_graceful_stop_hands_off_to_a_follower_heard_from_just_before_check_quorum_reset() -> (
    None
):
    """Check-quorum clears every follower's recent_active once per election timeout; a
    SIGTERM in that gap found no candidate and stopped without handing off (seen in CI)."""
    progress = {"n0": (50, True), "n1": (49, False), "n2": (50, False)}
    voters = {"n1", "n2"}
    now = 1000.0
    # Both answered 50 ms ago: the most caught-up one wins though neither is recent_active.
    assert hand_off_target(progress, voters, {"n1": now - 0.05, "n2": now - 0.05}, now, 1.0) == "n2"
    # n2 has been silent for longer than an election timeout: n1 it is.
    assert hand_off_target(progress, voters, {"n1": now - 0.05, "n2": now - 5.0}, now, 1.0) == "n1"
    # Nobody alive: no hand-off (the stop goes on without one).
    assert hand_off_target(progress, voters, {}, now, 1.0) is None
    # recent_active alone still counts, and learners and the leader itself never do.
    assert hand_off_target({"n1": (10, True), "n3": (99, True)}, voters, {}, now, 1.0) == "n1"
