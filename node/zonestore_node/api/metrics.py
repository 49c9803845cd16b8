"""Prometheus metrics of one node, in a registry of its own (no global state)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
)


class Metrics:
    def __init__(self, node_id: str = "", zone: str = "") -> None:
        self.registry = CollectorRegistry()
        labels = {"replica": node_id, "zone": zone}
        self.requests = Counter(
            "zonestore_requests",
            "Datastore API requests by method and gRPC status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "zonestore_request_duration_seconds",
            "Datastore API request latency by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.info = Gauge(
            "zonestore_node_info",
            "Static facts about this node.",
            list(labels),
            registry=self.registry,
        )
        self.info.labels(**labels).set(1)
        self.entities = Gauge(
            "zonestore_entities", "Live entities (estimate).", registry=self.registry
        )
        self.versions = Gauge(
            "zonestore_versions",
            "Stored entity versions, live and garbage (estimate).",
            registry=self.registry,
        )
        self.storage_bytes = Gauge(
            "zonestore_storage_bytes",
            "Bytes used by RocksDB (SST files and memtables).",
            registry=self.registry,
        )
        self.gc_runs = Counter("zonestore_gc_runs", "Version GC passes.", registry=self.registry)
        self.gc_deleted = Counter(
            "zonestore_gc_deleted_versions", "Versions removed by GC.", registry=self.registry
        )
        self.commit_groups = Counter(
            "zonestore_commit_groups", "Group commits (one fsync each).", registry=self.registry
        )
        self.group_size = Histogram(
            "zonestore_commit_group_size",
            "Commands per group commit.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.fsync_latency = Histogram(
            "zonestore_fsync_duration_seconds",
            "WAL fdatasync latency.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.open_transactions = Gauge(
            "zonestore_open_transactions", "Open transactions on this node.", registry=self.registry
        )
        self.aborts = Counter(
            "zonestore_transaction_aborts", "Commits aborted by a conflict.", registry=self.registry
        )

        self.raft_term = Gauge("zonestore_raft_term", "Current Raft term.", registry=self.registry)
        self.raft_role = Gauge(
            "zonestore_raft_role",
            "1 for the role this replica has now.",
            ["role"],
            registry=self.registry,
        )
        self.raft_commit_index = Gauge(
            "zonestore_raft_commit_index",
            "Highest log index known committed.",
            registry=self.registry,
        )
        self.raft_applied_index = Gauge(
            "zonestore_raft_applied_index", "Highest log index applied.", registry=self.registry
        )
        self.raft_leader_changes = Counter(
            "zonestore_raft_leader_changes",
            "Leader changes seen by this replica.",
            registry=self.registry,
        )
        self.raft_follower_lag = Gauge(
            "zonestore_raft_follower_lag_entries",
            "On the leader: entries each member is behind the commit index.",
            ["member"],
            registry=self.registry,
        )
        self.raft_members = Gauge(
            "zonestore_raft_members",
            "Members of the replica group by role, as this replica's configuration says.",
            ["role"],
            registry=self.registry,
        )
        self.raft_voter = Gauge(
            "zonestore_raft_voter",
            "1 when this replica is a voter, 0 for a learner.",
            registry=self.registry,
        )
        self.proposal_latency = Histogram(
            "zonestore_proposal_duration_seconds",
            "From proposing a commit to its result on the leader (replicated and applied).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.snapshots_sent = Gauge(
            "zonestore_raft_snapshots_sent",
            "Snapshots streamed to other replicas since start.",
            registry=self.registry,
        )
        self.snapshots_received = Gauge(
            "zonestore_raft_snapshots_received",
            "Snapshots installed since start.",
            registry=self.registry,
        )
        self.clock_offset = Gauge(
            "zonestore_clock_offset_seconds",
            "The median of the group's wall clocks minus this replica's (positive: behind).",
            registry=self.registry,
        )
        self.clock_corrections = Gauge(
            "zonestore_clock_corrections",
            "Timestamps taken from the group's median clock because this replica's wall "
            "clock was off by more than the maximum offset, since start.",
            registry=self.registry,
        )
        self.forwarded = Counter(
            "zonestore_forwarded_requests",
            "Requests this replica relayed to the leader.",
            ["method"],
            registry=self.registry,
        )

        self.query_plans = Counter(
            "zonestore_query_plans",
            "Query branches run, by plan (key, join, ordered, sorted, composite).",
            ["plan"],
            registry=self.registry,
        )

        # Continuous archiving (backup/archive.py), set by the archiver while it leads
        # (alert ZonestoreArchiveLagging); 0 with archiving off.
        self.archive_lag = Gauge(
            "zonestore_archive_lag_seconds",
            "How long the oldest committed log entry not yet archived has waited "
            "(0: all archived, or not the leader).",
            registry=self.registry,
        )
        self.archive_last_commit = Gauge(
            "zonestore_archive_last_commit_timestamp_seconds",
            "Commit time of the newest archived commit (restorable up to here).",
            registry=self.registry,
        )
        self.archive_segments = Counter(
            "zonestore_archive_segments", "Archive segments uploaded.", registry=self.registry
        )
        self.archive_bytes = Counter(
            "zonestore_archive_bytes", "Bytes of archive segments uploaded.", registry=self.registry
        )
        self.archive_failures = Counter(
            "zonestore_archive_upload_failures",
            "Archive segment uploads that failed (retried).",
            registry=self.registry,
        )
        self.archive_gaps = Counter(
            "zonestore_archive_gaps",
            "Committed entries that could not be archived (buffer overflow or a compacted "
            "log): point-in-time recovery cannot cross them.",
            registry=self.registry,
        )

        # Series that alerts take rate() of must exist from the start: rate() cannot see
        # the step from "absent" to 1, so the first abort would go unnoticed.
        self.requests.labels("Commit", "ABORTED")
        self._request_children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def observe_sync(self, seconds: float, entries: int) -> None:
        self.fsync_latency.observe(seconds)
        if entries:
            self.group_size.observe(entries)

    def observe_request(self, method: str, code: str, seconds: float) -> None:
        children = self._request_children.get((method, code))
        if children is None:
            # labels() hashes and locks on every call; a node sees a few dozen
            # (method, code) pairs, so their series are looked up once.
            if code == "FORWARDED":
                children = (self.forwarded.labels(method), None)
            else:
                children = (self.requests.labels(method, code), self.latency.labels(method))
            self._request_children[(method, code)] = children
        count, latency = children
        count.inc()
        if latency is None:
            return
        if code == "ABORTED" and method == "Commit":
            self.aborts.inc()
        latency.observe(seconds)
