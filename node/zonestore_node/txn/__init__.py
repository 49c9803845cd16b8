"""zonestore_node.txn."""
