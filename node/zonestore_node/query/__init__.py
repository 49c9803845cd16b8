"""zonestore_node.query."""
