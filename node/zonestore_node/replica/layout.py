"""What the replica group writes beside the Raft log, and the frame kinds it sends.

Keys in the META family (the Raft log's own live under b"raft/", replica/raftlog.py):

    raft/applied   _U64x2(applied_index, applied_ts), written in the batch that applies
    raft/peers     msgpack {id: [peer addr, zone]}: members added at run time
    group/id       the group's identity (state, so a snapshot carries it)

A log entry's payload is b"" (a new leader's no-op) or COMMIT_PREFIX + a command
(txn/command.py). Peers exchange FRAME_RAFT frames (a Raft message) and FRAME_SNAP
frames (a snapshot chunk, replica/snapshots.py). Imports nothing of the package.
"""

from __future__ import annotations

import struct

from zonestore_node.storage.engine import Family

APPLIED_KEY = b"raft/applied"
COMMIT_PREFIX = b"C"
FRAME_RAFT = 1
FRAME_SNAP = 2
PEERS_KEY = b"raft/peers"
# The group's identity: state (so a snapshot carries it to a new replica), written by
# `zonestore restore` (backup/restore.py); empty for groups founded without one.
GROUP_ID_KEY = b"group/id"
# The families holding the state machine: what a snapshot carries.
STATE_FAMILIES = (Family.ENTITIES, Family.INDEXES, Family.META)
# The value at APPLIED_KEY: applied index, applied commit timestamp.
APPLIED_VALUE = struct.Struct(">QQ")
