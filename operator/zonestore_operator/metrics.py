"""The operator's own Prometheus metrics, served on /metrics by `handlers` at startup."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "zonestore_operator_reconciles_total", "Reconcile passes by result", ["result"]
)
ERRORS = Counter(
    "zonestore_operator_reconcile_errors_total", "Reconcile passes that raised", ["kind"]
)
MEMBER_ACTIONS = Counter(
    "zonestore_operator_member_actions_total", "Membership changes made", ["action"]
)
FAILOVERS = Counter(
    "zonestore_operator_failovers_total", "Zones declared failed (failover started)"
)
MEMBERS = Gauge(
    "zonestore_operator_members",
    "Replicas by state, per Datastore",
    ["namespace", "datastore", "state"],
)
DURATION = Histogram("zonestore_operator_reconcile_seconds", "Reconcile pass duration")
# Set when a DatastoreBackup completes, and from every Completed one when the operator
# starts (kopf resumes them), so a restart does not forget it. Alert:
# ZonestoreBackupTooOld (monitoring/alerts.yaml).
BACKUP_LAST_SUCCESS = Gauge(
    "zonestore_operator_backup_last_success_timestamp_seconds",
    "Commit time of the newest completed DatastoreBackup, per Datastore (Unix seconds)",
    ["namespace", "datastore"],
)
BACKUPS = Counter(
    "zonestore_operator_backups_total", "DatastoreBackups finished, by result", ["result"]
)
