"""zonestore storage node: the Cloud Datastore v1 API on replicated MVCC storage.

Layers (imports point one way): api > txn | query > replica > raft | storage.
"""
