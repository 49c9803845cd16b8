"""zonestore_node.model."""
