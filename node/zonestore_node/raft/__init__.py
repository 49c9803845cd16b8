"""zonestore_node.raft."""
