"""zonestore_node.raft: the pure Raft consensus core (etcd raft's shape), no I/O.

Nothing in this package imports other zonestore_node packages, reads a clock, touches
a socket or a file, starts a thread or uses the global RNG. The driver contract
(persist, then send, then apply, then advance) is written in `node`.

Modules: `node` (Node, Ready — the API), `core` (the Raft state machine), `log`,
`progress`, `quorum`, `readonly`, `confchange`, `storage` (LogStorage, MemoryStorage),
`messages` (values and wire format).
"""

from zonestore_node.raft.confchange import ConfChange, ConfChangeError, ConfChangeOp
from zonestore_node.raft.core import Config, ProposalDropped, ReadState, Role, SoftState
from zonestore_node.raft.messages import (
    NONE,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
    WireError,
    from_wire,
    to_wire,
)
from zonestore_node.raft.node import Node, PeerStatus, Ready, Status
from zonestore_node.raft.progress import ProgressState
from zonestore_node.raft.storage import (
    ErrCompacted,
    ErrSnapshotOutOfDate,
    ErrSnapshotTemporarilyUnavailable,
    ErrUnavailable,
    LogStorage,
    MemoryStorage,
    StorageError,
    bootstrap_log,
)

__all__ = [
    "NONE",
    "ConfChange",
    "ConfChangeError",
    "ConfChangeOp",
    "ConfState",
    "Config",
    "Entry",
    "EntryType",
    "ErrCompacted",
    "ErrSnapshotOutOfDate",
    "ErrSnapshotTemporarilyUnavailable",
    "ErrUnavailable",
    "HardState",
    "LogStorage",
    "MemoryStorage",
    "Message",
    "MessageType",
    "Node",
    "PeerStatus",
    "ProgressState",
    "ProposalDropped",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMetadata",
    "SoftState",
    "Status",
    "StorageError",
    "WireError",
    "bootstrap_log",
    "from_wire",
    "to_wire",
]
