"""Backup and point-in-time recovery through the operator (issue 16), on the real control
plane: a Datastore archives to a real S3 server (versitygw in the run's network,
zonestore_e2e.objectstore) and is backed up by a DatastoreBackup while a steady writer
runs; then it is deleted, and a new Datastore recovers from the backup and the archive to
a target time in the middle of the writes. Checked by content: every write acknowledged
before the target is there with its value, nothing written after it is.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client

from zonestore_e2e import workload
from zonestore_e2e.cluster import Cluster, wait_for
from zonestore_e2e.datastores import GROUP, VERSION, DatastoreHandle, manifest
from zonestore_e2e.objectstore import S3Gateway

READY_BUDGET = 240  # a Datastore from create to Ready
BACKUP_BUDGET = 120  # DatastoreBackup created -> Completed
ARCHIVE_BUDGET = 60  # the archive holds commits past the target time
RECOVERED_BUDGET = 300  # recovered Datastore created -> Ready with three voters
MAX_DELAY_S = 2  # spec.backup.archiving.maxDelaySeconds
BUCKET = "zs-e2e"

pytestmark = pytest.mark.timeout(1200)


def _rfc3339(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _backup_object(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    with cluster.api() as api:
        obj: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "datastorebackups", name
        )
    return dict(obj)


def _writer(ds: DatastoreHandle, project: str) -> workload.SteadyWriter:
    cache: dict[str, Any] = {"at": 0.0, "addrs": []}

    def targets() -> list[str]:
        if time.monotonic() - cache["at"] > 2:
            with contextlib.suppress(Exception):  # keep the last list while the API is busy
                cache["addrs"] = ds.client_addrs()
            cache["at"] = time.monotonic()
        return list(cache["addrs"])

    writer = workload.SteadyWriter(project, targets)
    writer.start()
    return writer


def _archived_until(s3: S3Gateway, prefix: str) -> int:
    """The newest commit timestamp (µs) the archive under s3://BUCKET/prefix holds."""
    from zonestore_node.backup import archive, catalog, objstore

    store = objstore.open_store(f"s3://{BUCKET}/{prefix}", **s3.store_args())
    try:
        groups = {m.group_id for m in catalog.list_backups(store).complete}
        return max((s.last_ts for g in groups for s in archive.list_segments(store, g)), default=0)
    finally:
        store.close()


@pytest.mark.process_cluster
def test_backup_under_load_then_recover_a_new_datastore_to_a_point_in_time(
    cluster: Cluster, namespace: str
) -> None:
    t_start = time.monotonic()
    wall_offset = time.time() - time.monotonic()
    with S3Gateway(cluster.workdir / f"s3-{namespace}") as s3:
        s3.create_bucket(BUCKET)
        with cluster.api() as api:
            client.CoreV1Api(api).create_namespaced_secret(
                namespace, s3.secret("backup-keys", namespace)
            )
        store = {
            "destination": f"s3://{BUCKET}/{namespace}",
            "endpoint": s3.endpoint,
            "region": "us-east-1",
            "credentials": {"secretName": "backup-keys"},
        }
        source = DatastoreHandle(cluster, namespace, "src")
        source.create(
            manifest(
                "src",
                namespace,
                backup={**store, "archiving": {"enabled": True, "maxDelaySeconds": MAX_DELAY_S}},
            )
        )
        source.wait_ready(READY_BUDGET)
        t_ready = time.monotonic()
        project = f"pitr-{uuid.uuid4().hex[:6]}"
        writer = _writer(source, project)
        try:
            wait_for("acknowledged writes before the backup", lambda: len(writer.acked()) >= 30, 60)

            # A backup while the writer runs.
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "DatastoreBackup",
                "metadata": {"name": "before-the-target", "namespace": namespace},
                "spec": {"datastore": "src"},
            }
            with cluster.api() as api:
                client.CustomObjectsApi(api).create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "datastorebackups", body
                )
            acked_at_backup = len(writer.acked())

            def completed() -> dict[str, Any] | None:
                status = _backup_object(cluster, namespace, "before-the-target").get("status")
                if status and status.get("phase") == "Failed":
                    raise AssertionError(f"the backup failed: {status}")
                return status if status and status.get("phase") == "Completed" else None

            status = wait_for("the DatastoreBackup Completed", completed, BACKUP_BUDGET, 1.0)
            t_backup = time.monotonic()
            assert len(writer.acked()) > acked_at_backup, "no write acknowledged during the backup"
            assert status["backupID"] and status["sizeBytes"] > 0, status
            assert status["destination"] == store["destination"]
            assert status["sourcePod"].startswith("src-"), status
            assert status["conditions"][0]["status"] == "True"

            # The target: a moment after the backup, with writes on both sides of it.
            wait_for(
                "writes after the backup", lambda: len(writer.acked()) >= acked_at_backup + 60, 60
            )
            target_wall = time.time()
            target_acked = len(writer.acked())
            wait_for(
                "writes after the target", lambda: len(writer.acked()) >= target_acked + 40, 60
            )
        finally:
            writer.stop()
        target = _rfc3339(target_wall)
        target_us = int(target_wall * 1_000_000)
        wait_for(
            "the archive to hold commits past the target",
            lambda: _archived_until(s3, namespace) > target_us,
            ARCHIVE_BUDGET,
            1.0,
        )

        with cluster.api() as api:
            events = client.CoreV1Api(api).list_namespaced_event(namespace).items
        reasons = {(e.involved_object.name, e.reason) for e in events}
        assert ("before-the-target", "BackupCompleted") in reasons, reasons

        # The source goes away; a new Datastore recovers to the target.
        source.delete()
        wait_for("the source Datastore's pods gone", lambda: not source.pods(), 120, 1.0)
        recovered = DatastoreHandle(cluster, namespace, "restored")
        t_recover = time.monotonic()
        recovered.create(
            manifest(
                "restored",
                namespace,
                bootstrap={"recovery": {"source": store, "targetTime": target}},
            )
        )
        recovered.wait_ready(RECOVERED_BUDGET)
        wait_for("three healthy voters", lambda: len(recovered.healthy_voters()) == 3, 120, 1.0)
        t_recovered = time.monotonic()

        # By content: each key is there exactly when it was written at or before the target.
        addr = recovered.client_addrs()[0]
        c = workload.make_client(addr, project)
        highest = writer.outcomes[-1].n
        found: dict[int, Any] = {}
        for lo in range(1, highest + 1, 500):
            keys = [c.key(workload.KIND, n) for n in range(lo, min(lo + 500, highest + 1))]  # type: ignore[attr-defined]
            for entity in c.get_multi(keys, timeout=30):  # type: ignore[attr-defined]
                found[entity.key.id] = entity
        before = [o for o in writer.acked() if o.end + wall_offset < target_wall]
        after = [o for o in writer.outcomes if o.start + wall_offset > target_wall]
        missing = [o.n for o in before if o.n not in found]
        extra = [o.n for o in after if o.n in found]
        assert before and after, "the target must split the writes"
        assert not missing, f"acknowledged before the target but not recovered: {missing[:20]}"
        assert not extra, f"written after the target but recovered: {extra[:20]}"
        for n, entity in found.items():
            assert entity["n"] == n, entity
            assert entity["at"] <= target_wall, f"Seq/{n} was written at {entity['at']}, after"
        # The recovered group is a new group that takes writes.
        got = workload.make_client(addr, project)
        from google.cloud import datastore

        fresh = datastore.Entity(got.key("After", "recovery"))  # type: ignore[attr-defined]
        fresh["ok"] = True
        got.put(fresh, timeout=15)  # type: ignore[attr-defined]
        assert got.get(got.key("After", "recovery"), timeout=15)["ok"] is True  # type: ignore[attr-defined]

    print(
        f"\n[e2e figures] backup_pitr: source_ready_s={t_ready - t_start:.1f} "
        f"backup_s={t_backup - t_ready:.1f} recovered_ready_s={t_recovered - t_recover:.1f} "
        f"acked_before_target={len(before)} written_after_target={len(after)} "
        f"recovered_keys={len(found)} backup_bytes={status['sizeBytes']} "
        f"total_s={time.monotonic() - t_start:.1f}"
    )


def test_backup_crds_on_the_api_server_and_a_schedule_that_fires(
    cluster: Cluster, namespace: str
) -> None:
    """The API server applies the backup fields' defaults and refuses what the CEL rules
    and patterns refuse; a DatastoreBackup's spec is immutable. A ScheduledDatastoreBackup firing every minute creates a DatastoreBackup
    owned by it, which fails (its Datastore does not exist) with the reason and an Event."""
    with cluster.api() as api:
        custom = client.CustomObjectsApi(api)

        def create(plural: str, body: dict[str, Any], dry_run: str | None = "All") -> Any:
            return custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, body, dry_run=dry_run
            )

        created = create("datastores", manifest("defaults", namespace))
        assert created["spec"]["backup"]["archiving"] == {"enabled": False, "maxDelaySeconds": 60}
        assert created["spec"]["bootstrap"] == {}
        bad = {
            "archiving without a destination": {"backup": {"archiving": {"enabled": True}}},
            "an http destination": {"backup": {"destination": "http://x/y"}},
            "a recovery without a source": {"bootstrap": {"recovery": {"backupID": "x"}}},
        }
        for what, patch in bad.items():
            with pytest.raises(client.ApiException) as info:
                create("datastores", manifest("bad", namespace, **patch))
            assert info.value.status == 422, (what, info.value.body)

        ghost = {"apiVersion": f"{GROUP}/{VERSION}", "metadata": {"namespace": namespace}}
        with pytest.raises(client.ApiException) as info:
            create("datastorebackups", {**ghost, "kind": "DatastoreBackup",
                                        "metadata": {"name": "x"}, "spec": {}})  # fmt: skip
        assert info.value.status == 422
        with pytest.raises(client.ApiException) as info:
            create("scheduleddatastorebackups", {**ghost, "kind": "ScheduledDatastoreBackup",
                   "metadata": {"name": "x"},
                   "spec": {"datastore": "ghost", "schedule": "nightly"}})  # fmt: skip
        assert info.value.status == 422

        schedule = {
            **ghost,
            "kind": "ScheduledDatastoreBackup",
            "metadata": {"name": "every-minute", "namespace": namespace},
            "spec": {"datastore": "ghost", "schedule": "* * * * *"},
        }
        made = create("scheduleddatastorebackups", schedule, dry_run=None)
        assert made["spec"]["retention"] == {"keepLast": 7} and made["spec"]["suspend"] is False

        def fired() -> dict[str, Any] | None:
            items = custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "datastorebackups"
            )["items"]
            done = [b for b in items if (b.get("status") or {}).get("phase") == "Failed"]
            return done[0] if done else None

        backup = wait_for("the schedule's DatastoreBackup, failed", fired, 150, 2.0)
        md = backup["metadata"]
        assert md["name"].startswith("every-minute-")
        assert md["ownerReferences"][0]["uid"] == made["metadata"]["uid"]
        assert "Datastore 'ghost' not found" in backup["status"]["reason"]
        assert backup["status"]["conditions"][0]["status"] == "False"
        with pytest.raises(client.ApiException) as info:
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "datastorebackups", md["name"],
                {"spec": {"datastore": "other"}},
            )  # fmt: skip
        assert info.value.status == 422 and "immutable" in str(info.value.body)
        sched = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "scheduleddatastorebackups", "every-minute"
        )
        assert sched["status"]["lastBackup"] == md["name"]
        events = client.CoreV1Api(api).list_namespaced_event(namespace).items
        reasons = {(e.involved_object.name, e.reason) for e in events}
        assert (md["name"], "BackupFailed") in reasons, reasons
        assert ("every-minute", "BackupScheduled") in reasons, reasons
