"""Datastore's managed export format (LevelDB log records of onestore v3 entities) and
the `zonestore export` / `zonestore import` commands that move data in and out with it."""
