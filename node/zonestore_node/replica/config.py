"""How one replica of a group is set up: its identity, addresses and Raft timing."""

from __future__ import annotations

from dataclasses import dataclass, field

from zonestore_node.replica.transport import TlsFiles

SNAPSHOT_EVERY = 20_000
SNAPSHOT_KEEP = 5_000
# The log is mirrored in memory (replica/raftlog.py), so it is bounded in bytes too: a
# snapshot once this much was applied since the last one, and at most KEEP_BYTES of
# applied entries kept behind it for followers just behind (20,000 imports of 500
# entities held ~250 MiB before). A follower further behind than KEEP_BYTES gets a whole
# snapshot, and so would the archiver (reading every second) record a gap: at the ~1-2
# MB/s a node applies, 64 MiB is about a minute of a bulk import.
SNAPSHOT_BYTES = 64 << 20
SNAPSHOT_KEEP_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class GroupConfig:
    node_id: str
    zone: str
    peer_addr: str  # where this replica listens for peers
    advertise_peer_addr: str  # how peers reach it
    client_addr: str
    admin_addr: str
    initial_cluster: dict[str, str] = field(
        default_factory=dict
    )  # founding voters: id -> peer addr
    join: bool = False  # start empty and wait to be added by the leader
    tick_seconds: float = 0.05
    election_tick: int = 10  # ticks: 0.5-1 s randomized
    heartbeat_tick: int = 1
    snapshot_every: int = SNAPSHOT_EVERY
    snapshot_keep: int = SNAPSHOT_KEEP
    snapshot_bytes: int = SNAPSHOT_BYTES
    snapshot_keep_bytes: int = SNAPSHOT_KEEP_BYTES
    # TEST ONLY: serve strong reads from whatever this replica has applied, with no
    # ReadIndex round and on followers too. A deliberately broken build, for showing that
    # the consistency tests catch stale reads. Never set it in production.
    unsafe_local_reads: bool = False
    # Strong reads on a follower: ask the leader for a read index (thesis §6.4.1), wait
    # until this replica has applied it, read here. False: followers refuse strong reads
    # (NotLeader) and the edge relays them to the leader.
    follower_reads: bool = True
    # Mutual TLS between replicas (replica/transport.py); None: cleartext.
    peer_tls: TlsFiles | None = None
