"""DatastoreBackup and ScheduledDatastoreBackup (crds/backups.yaml) as frozen values:
their specs parsed and validated like the Datastore's (`SpecError` naming the field),
the backup's status and its round trip to the CR's `status` dict, and the five-field
cron schedule (UTC) a ScheduledDatastoreBackup runs on.

Imports only model.spec (the object-store reference is the Datastore's).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from zonestore_operator.model.spec import GROUP, VERSION, ObjectStore, SpecError, parse_store
from zonestore_operator.model.status import format_time, parse_time

BACKUP_KIND = "DatastoreBackup"
BACKUP_PLURAL = "datastorebackups"
SCHEDULE_KIND = "ScheduledDatastoreBackup"
SCHEDULE_PLURAL = "scheduleddatastorebackups"
API_VERSION = f"{GROUP}/{VERSION}"
# Label on the DatastoreBackups a schedule creates (retention lists them by it).
L_SCHEDULE = "zonestore.io/schedule"
L_DATASTORE = "zonestore.io/datastore"


class BackupPhase(enum.Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"


@dataclass(frozen=True, slots=True)
class BackupSpec:
    datastore: str
    destination: ObjectStore | None = None  # None: the Datastore's spec.backup


def parse_backup_spec(raw_spec: Any) -> BackupSpec:
    if not isinstance(raw_spec, Mapping):
        raise SpecError("spec must be an object")
    datastore = raw_spec.get("datastore")
    if not isinstance(datastore, str) or not datastore:
        raise SpecError("spec.datastore must name a Datastore in this namespace")
    raw_dest = raw_spec.get("destination")
    dest = parse_store(raw_dest, "spec.destination") if raw_dest is not None else None
    return BackupSpec(datastore=datastore, destination=dest)


@dataclass(frozen=True, slots=True)
class BackupStatus:
    """Invariants: Completed has backup_id, commit_time and stopped_at; Failed has a
    reason and stopped_at; Running has started_at."""

    phase: BackupPhase = BackupPhase.PENDING
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    commit_time: str | None = None  # RFC 3339 with microseconds, as the manifest says
    backup_id: str | None = None
    destination: str | None = None
    size_bytes: int | None = None
    source_pod: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "phase": self.phase.value,
            "startedAt": format_time(self.started_at) if self.started_at else None,
            "stoppedAt": format_time(self.stopped_at) if self.stopped_at else None,
            "commitTime": self.commit_time,
            "backupID": self.backup_id,
            "destination": self.destination,
            "sizeBytes": self.size_bytes,
            "sourcePod": self.source_pod,
            "reason": self.reason,
        }
        out = {k: v for k, v in fields.items() if v is not None}
        done = self.phase is BackupPhase.COMPLETED
        reason = {
            BackupPhase.PENDING: "Pending",
            BackupPhase.RUNNING: "Running",
            BackupPhase.COMPLETED: "Completed",
            BackupPhase.FAILED: "Failed",
        }[self.phase]
        moment = self.stopped_at or self.started_at or datetime.now(UTC)
        out["conditions"] = [
            {
                "type": "Completed",
                "status": "True" if done else "False",
                "reason": reason,
                "message": (
                    f"backup {self.backup_id} as of {self.commit_time}"
                    if done
                    else self.reason or f"backup {reason.lower()}"
                ),
                "lastTransitionTime": format_time(moment),
            }
        ]
        return out


def parse_backup_status(raw: Mapping[str, Any] | None) -> BackupStatus:
    raw = raw or {}
    try:
        phase = BackupPhase(raw.get("phase") or "Pending")
    except ValueError:
        phase = BackupPhase.PENDING
    size = raw.get("sizeBytes")
    return BackupStatus(
        phase=phase,
        started_at=parse_time(raw.get("startedAt")),
        stopped_at=parse_time(raw.get("stoppedAt")),
        commit_time=raw.get("commitTime") or None,
        backup_id=raw.get("backupID") or None,
        destination=raw.get("destination") or None,
        size_bytes=size if isinstance(size, int) else None,
        source_pod=raw.get("sourcePod") or None,
        reason=raw.get("reason") or None,
    )


# -- cron ---------------------------------------------------------------------------------

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12))
_STEP = re.compile(r"^(\*|\d+(?:-\d+)?)(?:/(\d+))?$")


def _field(text: str, name: str, lo: int, hi: int) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        match = _STEP.match(part)
        if match is None:
            raise SpecError(f"spec.schedule: bad {name} field {text!r}")
        span, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = lo, hi
        else:
            first_text, _, last_text = span.partition("-")
            first = int(first_text)
            last = int(last_text) if last_text else (hi if step_text else first)
        if not lo <= first <= last <= hi or step < 1:
            raise SpecError(f"spec.schedule: {name} {part!r} is outside {lo}-{hi}")
        out.update(range(first, last + 1, step))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Cron:
    """Five cron fields in UTC: minute hour day-of-month month day-of-week (0 or 7 =
    Sunday). As in cron, when both day fields are restricted a day matching either runs."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        parts = text.split()
        if len(parts) != 5:
            raise SpecError(
                f"spec.schedule must have five fields (minute hour day month weekday), got {text!r}"
            )
        minutes, hours, days, months = (
            _field(p, name, lo, hi) for p, (name, lo, hi) in zip(parts, _FIELDS, strict=False)
        )
        weekdays = frozenset(d % 7 for d in _field(parts[4], "day of week", 0, 7))
        return cls(minutes, hours, days, months, weekdays, parts[2] == "*", parts[4] == "*")

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after `moment` (None within 5 years: '0 0 31 2 *')."""
        start = moment.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        for _ in range(366 * 5):
            if self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        candidate = day.replace(hour=hour, minute=minute)
                        if candidate >= start:
                            return candidate
            day += timedelta(days=1)
        return None

    def latest_due(self, last: datetime, now: datetime) -> datetime | None:
        """The newest fire time in (last, now], or None. Missed runs collapse into one."""
        due = self.next_after(last)
        if due is None or due > now:
            return None
        for _ in range(10_000):  # bounded: after a long outage a later tick goes on
            following = self.next_after(due)
            if following is None or following > now:
                break
            due = following
        return due


# -- ScheduledDatastoreBackup --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    datastore: str
    cron: Cron
    schedule: str
    suspend: bool = False
    keep_last: int = 7
    max_age: timedelta | None = None


def parse_schedule_spec(raw_spec: Any) -> ScheduleSpec:
    if not isinstance(raw_spec, Mapping):
        raise SpecError("spec must be an object")
    datastore = raw_spec.get("datastore")
    if not isinstance(datastore, str) or not datastore:
        raise SpecError("spec.datastore must name a Datastore in this namespace")
    schedule = raw_spec.get("schedule")
    if not isinstance(schedule, str):
        raise SpecError("spec.schedule must be a cron expression such as '0 3 * * *'")
    suspend = raw_spec.get("suspend", False)
    if not isinstance(suspend, bool):
        raise SpecError(f"spec.suspend must be true or false, got {suspend!r}")
    retention = raw_spec.get("retention") or {}
    if not isinstance(retention, Mapping):
        raise SpecError("spec.retention must be an object")
    keep = retention.get("keepLast", 7)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise SpecError(f"spec.retention.keepLast must be an integer of at least 1, got {keep!r}")
    hours = retention.get("maxAgeHours")
    if hours is not None and (isinstance(hours, bool) or not isinstance(hours, int) or hours < 1):
        raise SpecError(
            f"spec.retention.maxAgeHours must be an integer of at least 1, got {hours!r}"
        )
    return ScheduleSpec(
        datastore=datastore,
        cron=Cron.parse(schedule),
        schedule=schedule,
        suspend=suspend,
        keep_last=keep,
        max_age=timedelta(hours=hours) if hours is not None else None,
    )


@dataclass(frozen=True, slots=True)
class Kept:
    """A completed backup a schedule made, as retention sees it."""

    name: str
    stopped_at: datetime


def expired_backups(
    completed: list[Kept], keep_last: int, max_age: timedelta | None, now: datetime
) -> list[str]:
    """Names of the completed backups retention deletes: all but the newest `keep_last`,
    and those older than `max_age`, never the newest one."""
    newest_first = sorted(completed, key=lambda k: k.stopped_at, reverse=True)
    doomed = [k.name for k in newest_first[keep_last:]]
    if max_age is not None:
        doomed += [
            k.name
            for k in newest_first[1:keep_last]
            if now - k.stopped_at > max_age and k.name not in doomed
        ]
    return doomed


def scheduled_backup_name(schedule: str, due: datetime) -> str:
    return f"{schedule}-{due.astimezone(UTC):%Y%m%d%H%M}"
