"""Planning for DatastoreBackup and ScheduledDatastoreBackup: pure functions from what the
object says and what the operator sees to the next step, in the same level-based style
as reconcile.plan (running one again after its step took effect plans nothing more).

A DatastoreBackup goes Pending -> Running -> Completed | Failed, and a finished one is
never touched again. The backup itself runs in the operator's process
(zonestore_operator.backups); a Running backup that this process is not running was
interrupted by an operator restart: its upload never got a manifest, so
`zonestore backup list` does not show it as complete, and the object says Failed with
that reason (a new DatastoreBackup takes a new backup).

A ScheduledDatastoreBackup creates one DatastoreBackup per cron fire time (missed fires
collapse into the newest), named `<schedule>-<YYYYMMDDHHMM>` so two operator passes
cannot create two, and deletes the completed ones retention no longer keeps.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from zonestore_operator.model import backup as model
from zonestore_operator.model.spec import ObjectStore, SpecError, parse_spec
from zonestore_operator.model.status import format_time, parse_time


class StepKind(enum.Enum):
    NOTHING = "Nothing"  # finished, or running here
    WAIT = "Wait"  # not yet possible (the Datastore has no leader): try again later
    START = "Start"  # write `status` (Running), then take the backup into `store`
    FAIL = "Fail"  # write `status` (Failed, with the reason)


@dataclass(frozen=True, slots=True)
class BackupStep:
    kind: StepKind
    status: model.BackupStatus | None = None
    store: ObjectStore | None = None
    reason: str = ""


def plan_backup(
    raw_spec: Any,
    raw_status: Mapping[str, Any] | None,
    datastore: Mapping[str, Any] | None,
    running_here: bool,
    now: datetime,
) -> BackupStep:
    status = model.parse_backup_status(raw_status)
    if status.phase in (model.BackupPhase.COMPLETED, model.BackupPhase.FAILED):
        return BackupStep(StepKind.NOTHING)
    if status.phase is model.BackupPhase.RUNNING:
        if running_here:
            return BackupStep(StepKind.NOTHING)
        return _fail(
            status,
            "the operator restarted while this backup ran; the partial upload was never "
            "marked complete (backup list does not show it): create a new DatastoreBackup",
            now,
        )
    try:
        spec = model.parse_backup_spec(raw_spec)
    except SpecError as exc:
        return _fail(status, str(exc), now)
    if datastore is None:
        return _fail(status, f"Datastore {spec.datastore!r} not found in this namespace", now)
    try:
        ds_spec = parse_spec(datastore.get("spec"), str(datastore["metadata"]["name"]))
    except SpecError as exc:
        return _fail(status, f"Datastore {spec.datastore}: {exc}", now)
    store = spec.destination or ds_spec.backup.store
    if store is None:
        return _fail(
            status,
            f"no destination: set spec.destination here or spec.backup.destination on "
            f"Datastore {spec.datastore}",
            now,
        )
    if not (datastore.get("status") or {}).get("leader"):
        return BackupStep(
            StepKind.WAIT, reason=f"waiting for Datastore {spec.datastore} to elect a leader"
        )
    running = model.BackupStatus(
        phase=model.BackupPhase.RUNNING, started_at=now, destination=store.destination
    )
    return BackupStep(StepKind.START, status=running, store=store)


def _fail(status: model.BackupStatus, reason: str, now: datetime) -> BackupStep:
    failed = replace(status, phase=model.BackupPhase.FAILED, stopped_at=now, reason=reason)
    return BackupStep(StepKind.FAIL, status=failed, reason=reason)


def completed(
    running: model.BackupStatus,
    backup_id: str,
    commit_time: str,
    size_bytes: int,
    source: str,
    now: datetime,
) -> model.BackupStatus:
    return replace(
        running,
        phase=model.BackupPhase.COMPLETED,
        stopped_at=now,
        backup_id=backup_id,
        commit_time=commit_time,
        size_bytes=size_bytes,
        source_pod=source.split(".", 1)[0].split(":", 1)[0],  # pod.peers.ns.svc:port
    )


def failed(running: model.BackupStatus, reason: str, now: datetime) -> model.BackupStatus:
    return replace(running, phase=model.BackupPhase.FAILED, stopped_at=now, reason=reason)


# -- schedules ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduleStep:
    create: dict[str, Any] | None  # a DatastoreBackup to create
    delete: tuple[str, ...]  # DatastoreBackups retention deletes (with their objects)
    status: dict[str, Any]  # the schedule's status patch
    error: str = ""  # a bad spec: reported in the status, nothing else done


def plan_schedule(
    schedule: Mapping[str, Any],
    children: Sequence[Mapping[str, Any]],
    now: datetime,
) -> ScheduleStep:
    """`children`: the DatastoreBackups labelled with this schedule."""
    md = schedule["metadata"]
    raw_status = schedule.get("status") or {}
    try:
        spec = model.parse_schedule_spec(schedule.get("spec"))
    except SpecError as exc:
        invalid = {"conditions": [_condition("Valid", False, "InvalidSpec", str(exc), now)]}
        return ScheduleStep(None, (), invalid, error=str(exc))
    done = []
    for child in children:
        st = model.parse_backup_status(child.get("status"))
        if st.phase is model.BackupPhase.COMPLETED and st.stopped_at is not None:
            done.append(model.Kept(str(child["metadata"]["name"]), st.stopped_at))
    delete = tuple(model.expired_backups(done, spec.keep_last, spec.max_age, now))
    status: dict[str, Any] = {
        "conditions": [_condition("Valid", True, "Scheduled", f"on '{spec.schedule}' UTC", now)]
    }
    newest = max((k.stopped_at for k in done), default=None)
    if newest is not None:
        status["lastSuccessfulTime"] = format_time(newest)
    create = None
    last = parse_time(raw_status.get("lastScheduleTime")) or parse_time(md.get("creationTimestamp"))
    due = spec.cron.latest_due(last, now) if last is not None and not spec.suspend else None
    if due is not None:
        name = model.scheduled_backup_name(str(md["name"]), due)
        create = {
            "apiVersion": model.API_VERSION,
            "kind": model.BACKUP_KIND,
            "metadata": {
                "name": name,
                "namespace": md["namespace"],
                "labels": {model.L_SCHEDULE: md["name"], model.L_DATASTORE: spec.datastore},
                "ownerReferences": [
                    {
                        "apiVersion": model.API_VERSION,
                        "kind": model.SCHEDULE_KIND,
                        "name": md["name"],
                        "uid": md["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {"datastore": spec.datastore},
        }
        status["lastScheduleTime"] = format_time(due)
        status["lastBackup"] = name
    return ScheduleStep(create, delete, status)


def _condition(kind: str, value: bool, reason: str, message: str, now: datetime) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if value else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": format_time(now),
    }
