"""kopf wiring and I/O for DatastoreBackup and ScheduledDatastoreBackup (issue 16).

The backup runs in the operator's own process, not in a Job: the operator already holds
each Datastore's admin token and reaches the node pods' admin API, and it needs the
result (backup id, commit time, size) for the status, which a Job could hand back only
through its logs. `zonestore_node.backup.base.create` (the code behind
`zonestore backup create`) runs in a worker thread, against a follower's pod address
when the Datastore has one (the leader keeps serving writes unburdened); the S3 keys
come from the Secret named in the destination, read when the backup starts.

What to do is decided by reconcile.backups (pure); this module reads the objects,
executes the step and writes status, Events and the metric
zonestore_operator_backup_last_success_timestamp_seconds. A backup that is running
when the operator stops is reported Failed by the next operator (reconcile.backups).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from zonestore_operator import metrics
from zonestore_operator.model import backup as model
from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import GROUP, VERSION, ObjectStore, SpecError, parse_spec
from zonestore_operator.reconcile import backups as planner
from zonestore_operator.reconcile.kube import Kube
from zonestore_operator.resources import backup as podbackup
from zonestore_operator.resources import meta, security

log = logging.getLogger("zonestore_operator.backups")
SCHEDULE_INTERVAL_S = 20.0
WAIT_RETRY_S = 5.0

Runtime = Callable[[], Kube | None]


class _State:
    running: set[tuple[str, str]] = set()


def _now() -> datetime:
    return datetime.now(UTC)


def _involved(body: Mapping[str, Any]) -> dict[str, str]:
    md = body["metadata"]
    return {
        "apiVersion": model.API_VERSION,
        "kind": str(body.get("kind", model.BACKUP_KIND)),
        "name": str(md["name"]),
        "uid": str(md.get("uid", "")),
    }


def record_success(namespace: str, datastore: str, commit_time: str | None) -> None:
    """Raise the per-Datastore gauge to this backup's commit time (never lower it)."""
    from zonestore_node.backup import catalog

    if not commit_time:
        return
    try:
        seconds = catalog.parse_rfc3339(commit_time) / 1e6
    except ValueError:
        return
    gauge = metrics.BACKUP_LAST_SUCCESS.labels(namespace=namespace, datastore=datastore)
    if seconds > gauge._value.get():
        gauge.set(seconds)


async def _secret(kube: Kube, namespace: str, name: str) -> dict[str, bytes]:
    raw = await kube.get_secret(namespace, name)
    if raw is None:
        raise RuntimeError(f"Secret {namespace}/{name} not found")
    return security.decode_data(raw.get("data"))


async def open_store(kube: Kube, namespace: str, store: ObjectStore) -> Any:
    """The zonestore_node object store for `store`, keys read from its Secret."""
    from zonestore_node.backup import objstore

    keys: dict[str, bytes] = {}
    if store.credentials_secret:
        keys = await _secret(kube, namespace, store.credentials_secret)
        missing = [k for k in (podbackup.ACCESS_KEY, podbackup.SECRET_KEY) if k not in keys]
        if missing:
            raise RuntimeError(
                f"Secret {store.credentials_secret} lacks the key(s) {', '.join(missing)}"
            )
    return objstore.open_store(
        store.destination,
        endpoint=store.endpoint,
        region=store.region,
        access_key_id=keys[podbackup.ACCESS_KEY].decode() if keys else None,
        secret_access_key=keys[podbackup.SECRET_KEY].decode() if keys else None,
    )


async def _source_address(kube: Kube, datastore: Mapping[str, Any]) -> str:
    """A healthy follower's admin address (pod IP), else the leader's."""
    ref = DatastoreRef.from_body(datastore)
    spec = parse_spec(datastore.get("spec"), ref.name)
    status = datastore.get("status") or {}
    pods = {
        p["metadata"]["name"]: (p.get("status") or {}).get("podIP")
        for p in await kube.list_pods(ref.namespace, meta.selector_string(ref))
    }
    members = status.get("members") or []
    order = [m["pod"] for m in members if m.get("healthy") and m.get("role") == "Follower"]
    order.append(str(status.get("leader") or ""))
    for pod in order:
        if pods.get(pod):
            return f"{pods[pod]}:{spec.ports.admin}"
    raise RuntimeError("no replica of the Datastore has a pod address yet")


def rate_bytes(max_rate: str) -> int | None:
    """spec.backup.maxRate in bytes/s for `base.create`; None: no limit ("0")."""
    from zonestore_operator.resources.memory import quantity_bytes

    return quantity_bytes(max_rate) or None


async def _take(
    kube: Kube, datastore: Mapping[str, Any], store_ref: ObjectStore
) -> tuple[str, str, int, str]:
    """(backup id, commit time, bytes, source) of a new base backup."""
    from zonestore_node.backup import base, catalog

    ref = DatastoreRef.from_body(datastore)
    max_rate = rate_bytes(parse_spec(datastore.get("spec"), ref.name).backup.max_rate)
    token_data = await _secret(kube, ref.namespace, meta.admin_token_secret_name(ref))
    token = token_data.get(security.ADMIN_TOKEN, b"").decode().strip()
    addr = await _source_address(kube, datastore)
    store = await open_store(kube, ref.namespace, store_ref)
    try:
        result = await asyncio.to_thread(
            base.create, base.AdminClient(token), addr, store, base.PARALLEL_UPLOADS, max_rate
        )
    finally:
        store.close()
    m = result.manifest
    return m.backup_id, catalog.rfc3339(m.commit_ts), m.total_bytes, result.source


async def backup_changed(runtime: Runtime, namespace: str, name: str) -> None:
    kube = runtime()
    if kube is None:
        raise kopf.TemporaryError("operator is still starting", delay=WAIT_RETRY_S)
    body = await kube.get_object(model.API_VERSION, model.BACKUP_KIND, namespace, name)
    if body is None:
        return
    raw_spec = body.get("spec") or {}
    status = model.parse_backup_status(body.get("status"))
    if status.phase is model.BackupPhase.COMPLETED:
        record_success(namespace, str(raw_spec.get("datastore", "")), status.commit_time)
        return
    ds_name = raw_spec.get("datastore")
    datastore = await kube.get_datastore(namespace, ds_name) if isinstance(ds_name, str) else None
    key = (namespace, name)
    step = planner.plan_backup(
        raw_spec, body.get("status"), datastore, key in _State.running, _now()
    )
    involved = _involved(body)

    async def write(st: model.BackupStatus) -> None:
        await kube.patch_status_of(
            model.API_VERSION, model.BACKUP_KIND, namespace, name, st.to_dict()
        )

    if step.kind is planner.StepKind.WAIT:
        raise kopf.TemporaryError(step.reason, delay=WAIT_RETRY_S)
    if step.kind is planner.StepKind.FAIL and step.status is not None:
        await write(step.status)
        await kube.post_event_for(namespace, involved, "Warning", "BackupFailed", step.reason)
        metrics.BACKUPS.labels(result="failed").inc()
        return
    if step.kind is not planner.StepKind.START or step.status is None or step.store is None:
        return
    assert datastore is not None
    running = step.status
    _State.running.add(key)
    try:
        await write(running)
        await kube.post_event_for(
            namespace,
            involved,
            "Normal",
            "BackupStarted",
            f"backing up Datastore {ds_name} to {step.store.destination}",
        )
        try:
            backup_id, commit_time, size, source = await _take(kube, datastore, step.store)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:900]
            log.warning("backup.failed backup=%s/%s reason=%s", namespace, name, reason)
            await write(planner.failed(running, reason, _now()))
            await kube.post_event_for(namespace, involved, "Warning", "BackupFailed", reason)
            metrics.BACKUPS.labels(result="failed").inc()
            return
        done = planner.completed(running, backup_id, commit_time, size, source, _now())
        await write(done)
        record_success(namespace, str(ds_name), commit_time)
        metrics.BACKUPS.labels(result="completed").inc()
        message = f"backup {backup_id} of {ds_name}: {size} bytes, state as of {commit_time}"
        await kube.post_event_for(namespace, involved, "Normal", "BackupCompleted", message)
        log.info("backup.completed backup=%s/%s id=%s", namespace, name, backup_id)
    finally:
        _State.running.discard(key)


async def _prune(kube: Kube, namespace: str, body: Mapping[str, Any], child: str) -> None:
    """Delete one expired backup's objects, then its DatastoreBackup."""
    from zonestore_node.backup import catalog

    obj = await kube.get_object(model.API_VERSION, model.BACKUP_KIND, namespace, child)
    if obj is None:
        return
    status = model.parse_backup_status(obj.get("status"))
    ds_name = str((obj.get("spec") or {}).get("datastore", ""))
    datastore = await kube.get_datastore(namespace, ds_name)
    store_ref = None
    if datastore is not None:
        try:
            store_ref = parse_spec(datastore.get("spec"), ds_name).backup.store
        except SpecError:
            store_ref = None
    if store_ref is None or store_ref.destination != status.destination or not status.backup_id:
        await kube.post_event_for(
            namespace,
            _involved(body),
            "Warning",
            "RetentionSkipped",
            f"cannot reach the destination of {child} (Datastore {ds_name} gone or its "
            "destination changed): delete its objects by hand with zonestore backup delete",
        )
        return
    store = await open_store(kube, namespace, store_ref)
    try:
        await asyncio.to_thread(catalog.delete, store, status.backup_id)
    finally:
        store.close()
    await kube.delete_object(model.API_VERSION, model.BACKUP_KIND, namespace, child)
    await kube.post_event_for(
        namespace,
        _involved(body),
        "Normal",
        "BackupPruned",
        f"retention deleted {child} (backup {status.backup_id})",
    )


async def schedule_tick(runtime: Runtime, namespace: str, name: str) -> None:
    kube = runtime()
    if kube is None:
        return
    body = await kube.get_object(model.API_VERSION, model.SCHEDULE_KIND, namespace, name)
    if body is None:
        return
    children = await kube.list_objects(
        model.API_VERSION, model.BACKUP_KIND, namespace, f"{model.L_SCHEDULE}={name}"
    )
    step = planner.plan_schedule(body, children, _now())
    if step.create is not None and await kube.create(step.create):
        await kube.post_event_for(
            namespace,
            _involved(body),
            "Normal",
            "BackupScheduled",
            f"created DatastoreBackup {step.create['metadata']['name']}",
        )
    for child in step.delete:
        try:
            await _prune(kube, namespace, body, child)
        except Exception as exc:
            log.warning("backup.prune_failed backup=%s/%s error=%s", namespace, child, exc)
    await kube.patch_status_of(model.API_VERSION, model.SCHEDULE_KIND, namespace, name, step.status)


def register(registry: kopf.OperatorRegistry | None, runtime: Runtime) -> None:
    """Attach the backup handlers (called by handlers.register)."""

    async def on_backup(namespace: str, name: str, **_: Any) -> None:
        await backup_changed(runtime, namespace, name)

    async def on_schedule(namespace: str, name: str, **_: Any) -> None:
        await schedule_tick(runtime, namespace, name)

    for on in (kopf.on.resume, kopf.on.create):
        on(GROUP, VERSION, model.BACKUP_PLURAL, registry=registry)(on_backup)
    kopf.timer(
        GROUP,
        VERSION,
        model.SCHEDULE_PLURAL,
        interval=SCHEDULE_INTERVAL_S,
        initial_delay=1.0,
        registry=registry,
    )(on_schedule)
