"""kopf wiring. Every handler calls the same idempotent `reconcile` for one Datastore:
create/update/resume on the Datastore, any event on its pods, and a timer. Handlers for
the same Datastore never overlap (a lock per Datastore) and bursts coalesce (an event
that arrives while a pass is waiting is absorbed by that pass).

Settings: progress and diff-base in annotations under `zonestore.io` (so structural
pruning of status cannot drop them), our own finalizer name, peering for operator HA
(name `zonestore-operator`), watch timeouts so a silent watch stream is re-opened, and
the operator's Prometheus metrics on ZONESTORE_OPERATOR_METRICS_PORT (default 9090).
DatastoreBackup and ScheduledDatastoreBackup handlers: zonestore_operator.backups.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf
import prometheus_client

from zonestore_operator import backups
from zonestore_operator.adminclient import AdminClient
from zonestore_operator.model.spec import GROUP, PLURAL, VERSION
from zonestore_operator.reconcile.kube import Kube
from zonestore_operator.reconcile.loop import reconcile
from zonestore_operator.resources import meta

PREFIX = "zonestore.io"
TIMER_INTERVAL_S = float(os.environ.get("ZONESTORE_OPERATOR_INTERVAL", "10"))
# The operator's own namespace (downward API in the chart): the Datastores'
# NetworkPolicies admit the operator's pods from there only.
OPERATOR_NAMESPACE = os.environ.get("ZONESTORE_OPERATOR_POD_NAMESPACE") or None
log = logging.getLogger("zonestore_operator")


class _Runtime:
    kube: Kube | None = None
    admin: AdminClient | None = None
    locks: dict[tuple[str, str], asyncio.Lock] = {}
    waiting: set[tuple[str, str]] = set()


async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.peering.name = "zonestore-operator"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.posting.level = logging.WARNING
    # A fresh start (also a second operator in one process, as the handler tests run it)
    # keeps no lock bound to an earlier event loop.
    _Runtime.locks, _Runtime.waiting = {}, set()
    _Runtime.kube = await Kube.connect()
    _Runtime.admin = AdminClient()
    port = int(os.environ.get("ZONESTORE_OPERATOR_METRICS_PORT", "9090"))
    if port:
        prometheus_client.start_http_server(port)


async def shutdown(**_: Any) -> None:
    if _Runtime.admin is not None:
        await _Runtime.admin.close()
    if _Runtime.kube is not None:
        await _Runtime.kube.close()


async def reconcile_named(namespace: str, name: str) -> None:
    """Run one pass for namespace/name unless one is already waiting to run."""
    key = (namespace, name)
    if key in _Runtime.waiting:
        return
    lock = _Runtime.locks.setdefault(key, asyncio.Lock())
    _Runtime.waiting.add(key)
    async with lock:
        _Runtime.waiting.discard(key)
        kube, admin = _Runtime.kube, _Runtime.admin
        if kube is None or admin is None:
            raise kopf.TemporaryError("operator is still starting", delay=5)
        body = await kube.get_datastore(namespace, name)  # fresh: status is our memory
        if body is None:
            _Runtime.locks.pop(key, None)
            return
        outcome = await reconcile(body, kube, admin, operator_namespace=OPERATOR_NAMESPACE)
        if outcome.error:
            log.warning("reconcile.error datastore=%s/%s error=%s", namespace, name, outcome.error)


async def datastore_changed(namespace: str, name: str, **_: Any) -> None:
    await reconcile_named(namespace, name)


async def datastore_tick(namespace: str, name: str, **_: Any) -> None:
    await reconcile_named(namespace, name)


async def pod_event(labels: dict[str, str], namespace: str, **_: Any) -> None:
    instance = labels.get(meta.L_INSTANCE)
    if instance:
        await reconcile_named(namespace, instance)


def register(
    registry: kopf.OperatorRegistry | None = None,
    *,
    interval: float = TIMER_INTERVAL_S,
    initial_delay: float = 2.0,
) -> None:
    """Attach the handlers to `registry` (kopf's default one when None; tests pass their own
    with a short timer). Plain calls rather than decorators: kopf ships no type
    information, and this keeps mypy strict useful here."""
    kopf.on.startup(registry=registry)(configure)
    kopf.on.cleanup(registry=registry)(shutdown)
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(GROUP, VERSION, PLURAL, registry=registry)(datastore_changed)
    kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=interval,
        initial_delay=initial_delay,
        registry=registry,
    )(datastore_tick)
    kopf.on.event(
        "",
        "v1",
        "pods",
        labels={meta.L_NAME: meta.APP, meta.L_MANAGED_BY: meta.MANAGER},
        registry=registry,
    )(pod_event)
    backups.register(registry, lambda: _Runtime.kube)


register()
