"""One storage node process: wires storage, the commit group, the service and both edges.

Lifecycle: open RocksDB, start the commit group, serve gRPC and HTTP, run background
upkeep (version GC, transaction expiry) until SIGTERM/SIGINT; then stop accepting
requests, let in-flight ones finish (grace period), drain the commit group so every
acknowledged write is synced, and close RocksDB. Every task is owned by one TaskGroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import ipaddress
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from google.cloud.datastore_v1.types import datastore as ds_types
from google.cloud.datastore_v1.types import entity as entity_types

from zonestore_node.api import admin_api, auth, edgeproc, http
from zonestore_node.api.admin import AdminApi
from zonestore_node.api.datastore import GRPC_OPTIONS, SERVICE, DatastoreApi
from zonestore_node.api.forward import Forwarder
from zonestore_node.api.handoff import EdgeMetricsCollector, EdgeRelay, HandoffServer, RelayToEdge
from zonestore_node.api.metrics import Metrics
from zonestore_node.backup import archive
from zonestore_node.model import indexing
from zonestore_node.model.errors import DatastoreError
from zonestore_node.query import planner
from zonestore_node.replica.group import GroupConfig, NotLeader, RaftGroup
from zonestore_node.replica.transport import TlsFiles, split_addr
from zonestore_node.storage import memory, mvcc
from zonestore_node.storage.engine import Engine, Family
from zonestore_node.txn import apply, command
from zonestore_node.txn.clock import ClockGuard, HybridClock
from zonestore_node.txn.ids import IdAllocator
from zonestore_node.txn.service import DatastoreService

log = logging.getLogger("zonestore.node")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str
    zone: str
    data_dir: Path
    client_addr: str = "127.0.0.1:8081"
    admin_addr: str = "127.0.0.1:9081"
    peer_addr: str = ""  # empty: a group of one, no peer port
    advertise_peer_addr: str = ""
    initial_cluster: tuple[tuple[str, str], ...] = ()  # founding voters: (id, peer address)
    join: bool = False
    tick_seconds: float = 0.05
    snapshot_every: int = 20_000
    snapshot_keep: int = 5_000
    unsafe_local_reads: bool = False  # TEST ONLY, see GroupConfig
    follower_reads: bool = True  # see GroupConfig
    # A replica is ready to serve reads when its applied index is this close to the commit.
    ready_lag_entries: int = 1000
    retention_seconds: float = 3600.0
    gc_interval_seconds: float = 60.0
    # A replica whose wall clock is this far from the median of its group's clocks
    # stamps commits by the median (txn/clock.ClockGuard; retention always follows the
    # earliest clock it hears).
    max_clock_offset_seconds: float = 0.5
    shutdown_grace_seconds: float = 5.0
    auto_index: str = "true"  # planner.IndexPolicy value
    index_yaml: Path | None = None  # composite indexes the leader ensures at start
    # Security (README "Security"): empty means off.
    peer_tls_cert: str = ""
    peer_tls_key: str = ""
    peer_tls_ca: str = ""
    client_tls_cert: str = ""
    client_tls_key: str = ""
    client_tls_ca: str = ""  # set: clients must present a certificate it signed
    auth_tokens: Path | None = None
    admin_token_file: Path | None = None
    admin_insecure: bool = False  # serve an open admin API on a non-loopback address
    legacy_limits: bool = False  # the old 500-mutation cap per Commit (model/limits.py)
    # The client port (api/edgeproc.py): "auto" serves it through zonestore-edge when the
    # binary is found, "on" requires it, "off" serves it with grpc.aio in this process.
    edge: str = "off"
    edge_binary: str = ""
    allow_reset: bool = False  # POST /reset (the emulator's) may delete all data
    # Continuous archiving (backup/archive.py): while this replica leads, committed log
    # entries go to this URL (file:///dir or s3://bucket/prefix); empty: off.
    archive_to: str = ""
    archive_max_delay_seconds: float = 60.0
    # RocksDB's block cache + memtables of this process, in bytes (storage/memory.py).
    memory_budget: int = memory.DEFAULT_BUDGET


class ConfigError(ValueError):
    """The node's configuration is refused; the message says what to change."""


def is_loopback(addr: str) -> bool:
    host, _ = split_addr(addr)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def self_client_target(config: NodeConfig) -> str:
    """Where this node reaches its own client port (the Admin API's exports and imports):
    loopback for a wildcard listener; with client TLS the advertised address, which the
    certificate names."""
    if config.client_tls_cert:
        return advertised(config.client_addr, config.advertise_peer_addr)
    host, port = split_addr(config.client_addr)
    if host in ("", "0.0.0.0"):
        return f"127.0.0.1:{port}"
    if host == "::":
        return f"[::1]:{port}"
    return config.client_addr


def advertised(listen_addr: str, advertise_peer_addr: str) -> str:
    """How other replicas reach a listener: a wildcard host (0.0.0.0, ::, empty) is
    replaced by the advertised peer host (a pod's DNS name), since followers relay to
    the leader's client address and the admin API points at the leader's admin address.
    """
    host, port = split_addr(listen_addr)
    peer_host = split_addr(advertise_peer_addr)[0] if advertise_peer_addr else ""
    if host in ("", "0.0.0.0", "::") and peer_host:
        return f"{peer_host}:{port}"
    return listen_addr


def peer_tls_files(config: NodeConfig) -> TlsFiles | None:
    given = [config.peer_tls_cert, config.peer_tls_key, config.peer_tls_ca]
    if not any(given):
        return None
    if not all(given):
        raise ConfigError("peer TLS needs all of --peer-tls-cert, --peer-tls-key, --peer-tls-ca")
    return TlsFiles(config.peer_tls_cert, config.peer_tls_key, config.peer_tls_ca)


def check_security(config: NodeConfig) -> None:
    """Refuse configurations that would expose the node by accident."""
    peer_tls_files(config)  # all three files or none
    if bool(config.client_tls_cert) != bool(config.client_tls_key):
        raise ConfigError("client TLS needs both --client-tls-cert and --client-tls-key")
    if config.client_tls_ca and not config.client_tls_cert:
        raise ConfigError("--client-tls-ca needs --client-tls-cert and --client-tls-key")
    if config.client_tls_cert and config.peer_addr and not config.peer_tls_ca:
        raise ConfigError(
            "client TLS in a replicated group needs peer TLS (--peer-tls-*): followers "
            "relay requests to the leader over TLS and verify it against the cluster CA"
        )
    if (
        config.admin_token_file is None
        and not config.admin_insecure
        and not is_loopback(config.admin_addr)
    ):
        raise ConfigError(
            f"the admin API would listen on {config.admin_addr} with no token: give "
            "--admin-token-file (a file holding the token), listen on a loopback address, "
            "or pass --admin-insecure to serve it open anyway"
        )


def client_credentials(config: NodeConfig) -> grpc.ServerCredentials | None:
    if not config.client_tls_cert:
        return None
    key = Path(config.client_tls_key).read_bytes()
    cert = Path(config.client_tls_cert).read_bytes()
    roots = None
    if config.client_tls_ca:
        # Replicas relaying to the leader present their peer certificates.
        roots = Path(config.client_tls_ca).read_bytes()
        if config.peer_tls_ca:
            roots += b"\n" + Path(config.peer_tls_ca).read_bytes()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=roots, require_client_auth=roots is not None
    )


def forward_credentials(config: NodeConfig) -> grpc.ChannelCredentials | None:
    if not config.client_tls_cert or not config.peer_tls_ca:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=Path(config.peer_tls_ca).read_bytes(),
        private_key=Path(config.peer_tls_key).read_bytes(),
        certificate_chain=Path(config.peer_tls_cert).read_bytes(),
    )


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        check_security(config)  # before anything is opened
        self.token_auth = auth.TokenAuth(config.auth_tokens) if config.auth_tokens else None
        self.admin_token = (
            http.AdminToken(config.admin_token_file) if config.admin_token_file else None
        )
        self.client_credentials = client_credentials(config)
        memory.configure(memory.Budget(config.memory_budget))
        self.engine = Engine(config.data_dir / "db")
        self.store = mvcc.Store(self.engine)
        self.clock_guard = ClockGuard(int(config.max_clock_offset_seconds * 1_000_000))
        self.group = RaftGroup(
            GroupConfig(
                node_id=config.node_id,
                zone=config.zone,
                peer_addr=config.peer_addr,
                advertise_peer_addr=config.advertise_peer_addr or config.peer_addr,
                client_addr=advertised(config.client_addr, config.advertise_peer_addr),
                admin_addr=advertised(config.admin_addr, config.advertise_peer_addr),
                initial_cluster=dict(config.initial_cluster),
                join=config.join,
                tick_seconds=config.tick_seconds,
                snapshot_every=config.snapshot_every,
                snapshot_keep=config.snapshot_keep,
                unsafe_local_reads=config.unsafe_local_reads,
                follower_reads=config.follower_reads,
                peer_tls=peer_tls_files(config),
            ),
            self.engine,
            self.store,
            apply.Applier(),
            command.decode,
            HybridClock(self.clock_guard.now_us),
            touches=apply.touches,
            clock_guard=self.clock_guard,
        )
        self._check_membership()
        self.service = DatastoreService(self.store, self.group, IdAllocator(self.engine))
        self.service.retention_us = int(config.retention_seconds * 1_000_000)
        self.service.legacy_limits = config.legacy_limits
        self.service.horizon_wall_us = self.clock_guard.earliest_us
        self.metrics = Metrics(config.node_id, config.zone)
        self.archiver = archive.for_node(
            config.archive_to, self.group, self.metrics, config.archive_max_delay_seconds
        )
        self.edge_binary = find_edge(config)
        self.forwarder: Forwarder = (
            EdgeRelay()
            if self.edge_binary is not None
            else Forwarder(
                SERVICE, self._leader_client_addr, self._serves_here, forward_credentials(config)
            )
        )
        self.group.on_sync = self.metrics.observe_sync
        self.service.on_replicated = self.metrics.proposal_latency.observe
        self.api = DatastoreApi(
            self.service,
            self.metrics,
            self.forwarder,
            planner.IndexPolicy(config.auto_index),
            token_auth=self.token_auth,
        )
        # The Admin API (google.datastore.admin.v1 and its operations) on the client port.
        self.datastore_admin = admin_api.DatastoreAdminApi(
            self.service,
            self.metrics,
            self_client_target(config),
            EdgeRelay()
            if self.edge_binary is not None
            else Forwarder(
                admin_api.SERVICE,
                self._leader_client_addr,
                self._serves_here,
                forward_credentials(config),
            ),
            token_auth=self.token_auth,
            # The client port's certificate is the cluster CA's (as api/forward.py trusts it).
            tls_ca=(
                Path(config.peer_tls_ca or config.client_tls_cert).read_bytes()
                if config.client_tls_cert
                else None
            ),
        )
        self.edge: edgeproc.EdgeProcess | None = None
        self.handoff: HandoffServer | None = None
        if self.edge_binary is not None:
            self.handoff = HandoffServer(
                self.api,
                admin=self.datastore_admin,
                reset=self.reset_data if config.allow_reset else None,
                reset_refusal="reset is disabled: the node runs without --allow-reset",
                # The edge hands strong reads to this node even on a follower: it
                # serves them after a ReadIndex from the leader (or answers NOT_LEADER
                # for a transaction's, which the edge then relays).
                local_reads=config.unsafe_local_reads or config.follower_reads,
            )
            # The edge relays, and counts zonestore_forwarded_requests itself.
            self.metrics.registry.unregister(self.metrics.forwarded)
            self.metrics.registry.register(EdgeMetricsCollector(self.handoff))
        # Read (and refused when malformed) before anything starts.
        self.declared_indexes: list[indexing.CompositeDefinition] = []
        if config.index_yaml is not None:
            self.declared_indexes = indexing.parse_index_yaml(config.index_yaml.read_text())
        self.started = time.time()
        self._stopping = asyncio.Event()
        self.ready = False
        self._last_groups = 0
        self._last_leader_changes = 0

    def _check_membership(self) -> None:
        """A replica outside its folder's configuration waits for a leader to add it:
        say so at start, and refuse when no leader ever can (a restored folder served
        with another --node-id, or no --peer-addr to be reached at)."""
        outsider = self.group.outsider()
        if outsider is None:
            return
        advice = outsider.advice(str(self.config.data_dir))
        if outsider.hopeless:
            self.engine.close()
            raise ConfigError(f"{outsider.describe()}; {outsider.why_hopeless}: {advice}")
        log.warning(
            "replica.not_a_member node=%s voters=%s learners=%s: %s; it waits for the "
            "leader to add it (zonestore members add %s), or %s",
            outsider.node_id,
            ",".join(outsider.voters),
            ",".join(outsider.learners) or "-",
            outsider.describe(),
            outsider.node_id,
            advice,
        )

    def _leader_client_addr(self) -> str | None:
        """Where to forward: None while no other replica is known to lead (an election,
        or this replica handing leadership over), and the forwarder waits."""
        group = self.group
        if not group.leader or group.leader == self.config.node_id:
            return None
        return group.leader_client_addr()

    def _serves_here(self) -> bool:
        try:
            self.group.check_leader()
        except NotLeader:
            return False
        return True

    def is_ready(self) -> bool:
        """Serving: started, a leader is known, and this replica has applied nearly all
        that is committed (a replica far behind would serve stale eventual reads)."""
        if not self.ready or not self.group.leader:
            return False
        if self.handoff is not None and (
            not self.handoff.edge_ready or (self.edge is not None and self.edge.failing)
        ):
            return False
        commit = self.group.node.raft.log.commit_index
        return commit - self.group.applied_index <= self.config.ready_lag_entries

    def status(self) -> dict[str, Any]:
        status = self.group.status()
        status["ready"] = self.is_ready()
        return status

    def refresh_metrics(self) -> None:
        stats = self.group.stats
        m = self.metrics
        m.commit_groups.inc(stats.groups - self._last_groups)
        self._last_groups = stats.groups
        m.raft_leader_changes.inc(stats.leader_changes - self._last_leader_changes)
        self._last_leader_changes = stats.leader_changes
        m.open_transactions.set(len(self.service.transactions))
        m.storage_bytes.set(self.engine.approximate_size())
        status = self.group.node.status()
        m.raft_term.set(status.term)
        for role in ("leader", "follower", "candidate", "pre_candidate"):
            m.raft_role.labels(role).set(1 if status.role.value == role else 0)
        m.raft_commit_index.set(status.commit_index)
        conf = status.conf_state
        m.raft_members.labels("voter").set(len(conf.voters))
        m.raft_members.labels("learner").set(len(conf.learners))
        m.raft_voter.set(1 if self.config.node_id in conf.voters else 0)
        m.raft_applied_index.set(self.group.applied_index)
        m.snapshots_sent.set(self.group.snapshots_sent)
        m.snapshots_received.set(self.group.snapshots_received)
        m.clock_offset.set(self.clock_guard.offset_us() / 1e6)
        m.clock_corrections.set(self.clock_guard.corrections)
        for member, progress in status.progress.items():
            m.raft_follower_lag.labels(member).set(
                max(0, status.commit_index - progress.match_index)
            )

    def stop(self) -> None:
        self._stopping.set()

    async def serve(self) -> None:
        server: Any
        if self.handoff is not None:
            server = EdgeFront(self, self.handoff)
        else:
            server = grpc.aio.server(options=GRPC_OPTIONS)
            server.add_generic_rpc_handlers((self.api.handler(), *self.datastore_admin.handlers()))
            if self.client_credentials is not None:
                bound = server.add_secure_port(self.config.client_addr, self.client_credentials)
            else:
                bound = server.add_insecure_port(self.config.client_addr)
            if not bound:
                raise OSError(f"cannot listen on {self.config.client_addr}")
        runner = web.AppRunner(
            http.build_app(
                self.metrics,
                self.status,
                self.is_ready,
                self.refresh_metrics,
                AdminApi(self.group),
                admin_token=self.admin_token,
            ),
            access_log=None,
        )
        await runner.setup()
        host, port = split_addr(self.config.admin_addr)
        site = web.TCPSite(runner, host or "0.0.0.0", port)
        try:
            async with asyncio.TaskGroup() as tasks:
                group_task = tasks.create_task(self.group.run(), name="commit-group")
                upkeep = tasks.create_task(self._upkeep(), name="upkeep")
                archiving = (
                    tasks.create_task(self.archiver.run(), name="archive")
                    if self.archiver
                    else None
                )
                declared = tasks.create_task(self._ensure_declared_indexes(), name="index-yaml")
                await server.start()
                await site.start()
                self.ready = True
                log.info(
                    "node.serving node=%s client=%s admin=%s data=%s",
                    self.config.node_id,
                    self.config.client_addr,
                    self.config.admin_addr,
                    self.config.data_dir,
                )
                await self._stopping.wait()
                self.ready = False
                log.info("node.stopping grace=%ss", self.config.shutdown_grace_seconds)
                # A leader hands over first: its successor leads before this replica's
                # connections close, and the followers' relays go on to it.
                successor = await self.group.hand_off_leadership(HAND_OFF_TIMEOUT_S)
                if successor is not None:
                    log.info("node.handed_off leader=%s", successor)
                    # Drain: this replica's view names the successor now (hand-off's
                    # contract), the others' as soon as they hear of it (each edge is
                    # told in the pass of its replica's loop that sees the change). A
                    # call they relay here meanwhile must find the port open and be
                    # relayed on, not be refused (their edges fail a refused relay at
                    # once, as for a dead leader).
                    await asyncio.sleep(min(HAND_OFF_DRAIN_S, self.config.shutdown_grace_seconds))
                await server.stop(self.config.shutdown_grace_seconds)
                await self.datastore_admin.close()
                upkeep.cancel()
                if self.archiver is not None and archiving is not None:
                    archiving.cancel()
                    await self.archiver.close()  # ships what it buffered (committed)
                declared.cancel()
                self.group.close()
                await group_task
                await self.forwarder.close()
        finally:
            await runner.cleanup()
            self.engine.close()
            log.info("node.stopped node=%s", self.config.node_id)

    async def reset_data(self) -> None:
        """POST /reset (--allow-reset only): delete every live entity, through the log
        like any delete (indexes, ids and history are kept). The leader's work: a
        follower answers NOT_LEADER and its edge asks the leader's."""
        try:
            self.group.check_leader()
        except NotLeader:
            raise RelayToEdge from None
        keys: dict[tuple[str, str], list[Any]] = {}
        read_ts = self.group.read_ts()
        for version in self.store.scan(Family.ENTITIES, b"", b"\xff" * 8, read_ts):
            key = _Entity.FromString(apply.split_payload(version.payload)[1]).key
            keys.setdefault((key.partition_id.project_id, key.partition_id.database_id), []).append(
                key
            )
        for (project, database), found in keys.items():
            for start in range(0, len(found), 500):
                mutations = []
                for key in found[start : start + 500]:
                    mutation = _Mutation()
                    mutation.delete.CopyFrom(key)
                    mutations.append(mutation)
                await self.service.commit(project, database, None, mutations, transactional=False)
        log.info("node.reset entities=%d", sum(len(v) for v in keys.values()))

    async def _ensure_declared_indexes(self) -> None:
        """index.yaml: once this replica is the ready leader, create every declared index
        that does not exist yet (idempotent; any replica's file may do it, once)."""
        if not self.declared_indexes:
            return
        while True:
            await self.group.wait_leader_ready()
            try:
                for definition in self.declared_indexes:
                    await self.service.ensure_index(definition)
            except (NotLeader, DatastoreError) as exc:
                log.info("index.yaml_retry reason=%s", exc)
                await asyncio.sleep(0.5)
                continue
            log.info("index.yaml_ready indexes=%d", len(self.declared_indexes))
            return

    async def _upkeep(self) -> None:
        """Expire abandoned transactions; garbage-collect versions past retention."""
        last_gc = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            self.service.transactions.expire()
            if time.monotonic() - last_gc >= self.config.gc_interval_seconds:
                last_gc = time.monotonic()
                await self.collect_garbage()

    async def collect_garbage(self) -> int:
        # read_time reads older than this are refused (service.retention_horizon), and
        # a read at the newest commit sees only the newest version of each key, kept.
        horizon = self.service.retention_horizon()
        # Never collect what an open transaction may still read.
        horizon = min([horizon, *(t.read_ts for t in self.service.transactions.open())])
        if horizon <= 0:
            return 0
        deleted = 0
        for family in (Family.ENTITIES, Family.INDEXES):
            start: bytes | None = b""
            while start is not None:
                batch, start, _ = self.store.collect(family, start, horizon, 2000)
                deleted += batch.count
                self.engine.write(batch)
                await asyncio.sleep(0)  # let requests through between chunks
        self.metrics.gc_runs.inc()
        self.metrics.gc_deleted.inc(deleted)
        if deleted:
            log.info("gc.collected versions=%d horizon=%d", deleted, horizon)
        return deleted


HAND_OFF_TIMEOUT_S = 2.0  # a leader's wait for its successor on a graceful stop
# After a hand-off, how long the client port stays open before it closes: far above the
# others' views' lag behind this one's (ms), far below a pod's termination grace (30 s).
HAND_OFF_DRAIN_S = 0.5
_Entity: Any = entity_types.Entity.pb()
_Mutation: Any = ds_types.Mutation.pb()


def find_edge(config: NodeConfig) -> Path | None:
    """The zonestore-edge binary to serve the client port with, or None (grpc.aio)."""
    if config.edge == "off":
        return None
    try:
        binary = edgeproc.find_binary(config.edge_binary)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    if binary is None:
        if config.edge == "on":
            raise ConfigError(
                f"--edge on: no {edgeproc.BINARY} binary found; build it with "
                f"`{edgeproc.BUILD_HINT}` or give --edge-binary"
            )
        log.warning(
            "edge.missing binary=%s: serving gRPC from Python (slower, no REST); build it "
            "with `%s`",
            edgeproc.BINARY,
            edgeproc.BUILD_HINT,
        )
    return binary


def check_edge(config: NodeConfig) -> None:
    """Refuse an --edge-binary that is not there (before anything starts)."""
    if config.edge != "off":
        try:
            edgeproc.find_binary(config.edge_binary)
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from None


def edge_args(config: NodeConfig, socket_path: str) -> list[str]:
    """zonestore-edge's command line from the node's flags."""
    args = ["--listen", config.client_addr, "--node-socket", socket_path]
    args += ["--grace", f"{config.shutdown_grace_seconds}s"]
    if config.client_tls_cert:
        args += ["--tls-cert", config.client_tls_cert, "--tls-key", config.client_tls_key]
        if config.client_tls_ca:
            # Replicas relaying to the leader present their peer certificates.
            cas = [config.client_tls_ca] + ([config.peer_tls_ca] if config.peer_tls_ca else [])
            args += ["--tls-client-ca", ",".join(cas)]
        if config.peer_tls_ca:
            args += ["--relay-ca", config.peer_tls_ca]
            args += ["--relay-cert", config.peer_tls_cert, "--relay-key", config.peer_tls_key]
    return args


def socket_folder(data_dir: Path) -> Path:
    """A private folder (mode 0700) for the hand-off socket: a new temporary one, or in
    the data folder where there is no writable temporary folder (a pod's read-only root
    filesystem; its data volume's path is short enough for a Unix socket)."""
    try:
        return Path(tempfile.mkdtemp(prefix="zonestore-edge-"))
    except OSError:
        folder = data_dir.resolve() / "edge"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        (folder / "node.sock").unlink(missing_ok=True)  # left by a killed node
        return folder


class EdgeFront:
    """The client port served by zonestore-edge: the hand-off socket, the edge process
    and the leader address published to it (the grpc.aio server's start/stop shape)."""

    def __init__(self, node: Node, handoff: HandoffServer) -> None:
        self.node = node
        self.handoff = handoff
        self.folder = socket_folder(node.config.data_dir)
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        node = self.node
        path = str(self.folder / "node.sock")
        await self.handoff.start(path)
        assert node.edge_binary is not None
        node.edge = edgeproc.EdgeProcess(node.edge_binary, edge_args(node.config, path))
        self.tasks = [asyncio.create_task(node.edge.run(), name="edge")]
        self._publish_leader()
        node.group.on_pass = self._publish_leader

    def _publish_leader(self) -> None:
        """Tell the edge who leads. Called after every pass of the replica's driver loop,
        where the view changes (a frame goes out only when it did): polling it instead
        woke an idle replica 100 times a second."""
        node = self.node
        self.handoff.publish_leader(node._serves_here(), node._leader_client_addr() or "")

    async def stop(self, grace: float) -> None:
        self.node.group.on_pass = None
        if self.node.edge is not None:
            await self.node.edge.stop(grace)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.handoff.close()
        if self.folder.name == "edge":
            (self.folder / "node.sock").unlink(missing_ok=True)
        else:
            shutil.rmtree(self.folder, ignore_errors=True)


def event_loop_factory(config: NodeConfig) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop, unless peer TLS is on or ZONESTORE_LOOP=asyncio asks for the standard loop.

    Every gRPC call crosses the event loop several times (grpc.aio's poller thread hands
    each completion over), and uvloop's cheaper callbacks, futures and wakeups cut the
    server CPU of a unary call by ~15% on these machines. Its TLS upgrade of an accepted
    connection fails mutual TLS 1.3 handshakes (uvloop 0.23: the client times out, the
    server sees ConnectionResetError), so a node with peer TLS keeps the standard loop.
    """
    if os.environ.get("ZONESTORE_LOOP", "uvloop") == "asyncio" or peer_tls_files(config):
        return asyncio.new_event_loop
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def dump_stacks() -> None:
    """SIGUSR1: write every thread's stack and every asyncio task's await point to
    stderr (the node's log), for a replica that is alive but not making progress."""
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    for task in asyncio.all_tasks():
        # The whole await chain (task.get_stack() gives a coroutine's outermost frame
        # only, and print_stack() fails on frames without a line number: grpc's).
        lines = []
        awaiting: Any = task.get_coro()
        while awaiting is not None:
            frame = getattr(awaiting, "cr_frame", None) or getattr(awaiting, "gi_frame", None)
            if frame is not None:
                code = frame.f_code
                lines.append(f"    {code.co_filename}:{frame.f_lineno or '?'} in {code.co_name}\n")
            awaiting = getattr(awaiting, "cr_await", None) or getattr(
                awaiting, "gi_yieldfrom", None
            )
        sys.stderr.write(f"task {task.get_name()}:\n{''.join(lines)}")
    sys.stderr.flush()


def tune_gc() -> None:
    """The serving process's garbage collector: what start-up built (modules, classes,
    functions: ~80,000 objects) is frozen out of its reach, and a young collection
    runs every 7,000 allocations instead of 700.

    Measured under a put_multi load through the edge (4 in flight, 10 s): collections
    took 613 ms before and 73 after, and the full collections of before (~45 ms each, a
    pause for every request in flight) no longer came; CPU per call did not move beyond
    the noise. Cycles are rare here: reference counting frees almost everything, so the
    larger young generation holds little for long."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(7_000)


def run(config: NodeConfig) -> None:
    async def main() -> None:
        node = Node(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, node.stop)
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGUSR1, dump_stacks)
        await node.serve()

    tune_gc()
    runner = asyncio.Runner(loop_factory=event_loop_factory(config))
    # "{pid}" in the path keeps the profiles of several local replicas apart.
    profile_path = os.environ.get("ZONESTORE_PROFILE", "").replace("{pid}", str(os.getpid()))
    if not profile_path:
        with runner:
            runner.run(main())
        return
    # Development aid: cProfile the whole node and write pstats on shutdown. (py-spy
    # attaches too: `py-spy record --gil --pid N` shows what holds the GIL.)
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        with runner:
            runner.run(main())
    finally:
        profiler.disable()
        profiler.dump_stats(profile_path)
