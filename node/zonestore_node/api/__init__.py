"""zonestore_node.api."""
