"""Backups, restores and continuous archiving (issue 16), and the object storage layer
(objstore) that managed export/import shares."""
