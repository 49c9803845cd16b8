"""What a replica reports about its group: the admin API's status and the metrics.

`StatusMixin` is a part of `RaftGroup` (replica/group.py). Must not import
replica/group.py (it imports this).
"""

from __future__ import annotations

import time
from typing import Any

from zonestore_node.raft.node import Node
from zonestore_node.replica.config import GroupConfig
from zonestore_node.replica.membership import PeerInfo
from zonestore_node.replica.transport import Transport
from zonestore_node.txn.clock import ClockGuard


class StatusMixin:
    """The status report, for `RaftGroup`."""

    # State owned by RaftGroup (see its __init__).
    config: GroupConfig
    node: Node
    transport: Transport
    clock_guard: ClockGuard | None
    applied_index: int
    applied_ts: int
    group_id: str
    peers: dict[str, PeerInfo]

    def status(self) -> dict[str, Any]:
        st = self.node.status()
        now = time.time()
        members = []
        conf = st.conf_state
        for member in sorted(conf.members()):
            info = self.peers.get(member, PeerInfo())
            progress = st.progress.get(member)
            match = progress.match_index if progress else 0
            members.append(
                {
                    "id": member,
                    "peer_address": self.transport.addresses.get(
                        member,
                        self.config.advertise_peer_addr if member == self.config.node_id else "",
                    ),
                    "client_address": info.client_addr,
                    "admin_address": info.admin_addr,
                    "zone": info.zone,
                    "role": "voter" if member in conf.voters else "learner",
                    "match_index": match,
                    "lag": max(0, st.commit_index - match) if progress else None,
                    "last_contact_ms": int((now - info.last_contact) * 1000)
                    if info.last_contact
                    else None,
                    "healthy": True
                    if member == self.config.node_id
                    else (bool(progress.recent_active) if progress else None),
                }
            )
        role = st.role.value
        if self.config.node_id not in conf.voters:
            role = "learner"  # a learner, or a joining replica not yet added
        return {
            "node_id": self.config.node_id,
            "zone": self.config.zone,
            "role": role,
            "term": st.term,
            "leader": st.lead or None,
            "commit_index": st.commit_index,
            "applied_index": self.applied_index,
            "last_index": st.last_index,
            "applied_ts": self.applied_ts,
            "group_id": self.group_id,
            # False: not in the configuration this replica holds (waits to be added).
            "member": self.config.node_id in conf.voters or self.config.node_id in conf.learners,
            "clock_offset_ms": (
                self.clock_guard.offset_us() / 1000 if self.clock_guard is not None else 0.0
            ),
            "members": members,
        }
