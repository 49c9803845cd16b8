"""zonestore_node.replica."""
