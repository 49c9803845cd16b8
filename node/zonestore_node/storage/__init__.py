"""zonestore_node.storage."""
