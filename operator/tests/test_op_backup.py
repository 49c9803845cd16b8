"""Backups on the operator's side (issue 16), pure parts: Datastore.spec.backup and
spec.bootstrap.recovery parsed and validated; the DatastoreBackup and
ScheduledDatastoreBackup CRDs (crds/backups.yaml) structural, with printer columns and
defaults that agree with the parsers; the node pods' --archive-to and S3 environment;
the recovery's restore init container and its group of one; the DatastoreBackup step
planner; schedules (cron, due times, names) and retention. The running system is
e2e/tests/test_e2e_backup.py."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import crdschema
import pytest
import yaml
from conftest import REPO

from zonestore_operator import backups
from zonestore_operator.model import backup as model
from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import SpecError, parse_spec
from zonestore_operator.reconcile import backups as planner
from zonestore_operator.resources import backup as podbackup
from zonestore_operator.resources import config, meta, statefulset

REF = DatastoreRef(name="orders", namespace="shop", uid="uid-1")
ZONES = ["zone-a", "zone-b", "zone-c"]
T0 = datetime(2026, 12, 6, 7, 30, tzinfo=UTC)
S3 = {
    "destination": "s3://zs-backups/orders",
    "endpoint": "http://minio.storage:9000",
    "region": "eu-west-1",
    "credentials": {"secretName": "backup-keys"},
}


def _crds() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((REPO / "crds" / "backups.yaml").read_text())
    return {d["spec"]["names"]["kind"]: d for d in docs}


def _schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = _crds()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


# -- Datastore.spec.backup / spec.bootstrap.recovery ---------------------------------------


def test_backup_spec_names_the_store_credentials_and_archiving() -> None:
    spec = parse_spec(
        {"zones": ZONES, "backup": {**S3, "archiving": {"enabled": True, "maxDelaySeconds": 5}}}
    )
    store = spec.backup.store
    assert store is not None
    assert (store.destination, store.endpoint, store.region, store.credentials_secret) == (
        "s3://zs-backups/orders",
        "http://minio.storage:9000",
        "eu-west-1",
        "backup-keys",
    )
    assert spec.backup.archiving and spec.backup.archive_max_delay_seconds == 5
    assert spec.recovery is None
    assert spec.backup.max_rate == "64M"  # backup create's own default, unset here


@pytest.mark.parametrize(
    ("max_rate", "paced"),
    [("64M", 64_000_000), ("200Mi", 200 << 20), ("1.5G", 1_500_000_000), ("0", None)],
)
def test_backup_max_rate_is_a_quantity_handed_to_backup_create_in_bytes(
    max_rate: str, paced: int | None, crd_schema: dict
) -> None:
    raw = {"zones": ZONES, "backup": {**S3, "maxRate": max_rate}}
    assert crdschema.validate(crd_schema["properties"]["spec"], raw) == []
    assert backups.rate_bytes(parse_spec(raw).backup.max_rate) == paced


@pytest.mark.parametrize("bad", ["fast", "64MB", "-1", "64 M"])
def test_a_max_rate_that_is_no_quantity_is_refused_by_the_crd_and_the_operator(
    bad: str, crd_schema: dict
) -> None:
    raw = {"zones": ZONES, "backup": {**S3, "maxRate": bad}}
    assert crdschema.validate(crd_schema["properties"]["spec"], raw) != []
    with pytest.raises(SpecError, match=r"spec\.backup\.maxRate must be a quantity"):
        parse_spec(raw)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"backup": {"archiving": {"enabled": True}}}, "archiving.enabled needs"),
        ({"backup": {"destination": "http://x/y"}}, "spec.backup.destination must be"),
        ({"backup": {"destination": "file://relative"}}, "spec.backup.destination must be"),
        (
            {"bootstrap": {"recovery": {"source": {"destination": "s3://b/p"}, "backupID": "x"}}},
            "backupID must be an id",
        ),
        (
            {
                "bootstrap": {
                    "recovery": {
                        "source": {"destination": "s3://bb/p"},
                        "targetTime": "2026-12-06 07:30",
                    }
                }
            },
            "targetTime must be an RFC 3339 time",
        ),
        (
            {"bootstrap": {"recovery": {"targetTime": "2026-12-06T07:30:00Z"}}},
            "source.destination is required",
        ),
    ],
)
def test_bad_backup_and_recovery_specs_are_refused_naming_the_field(
    extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({"zones": ZONES, **extra})


def test_the_crd_refuses_what_the_parser_refuses(crd_schema: dict) -> None:
    spec = crd_schema["properties"]["spec"]
    rules = " ".join(r["rule"] for r in spec["properties"]["backup"]["x-kubernetes-validations"])
    assert "has(self.destination)" in rules
    recovery = spec["properties"]["bootstrap"]["properties"]["recovery"]["properties"]
    assert recovery["targetTime"]["format"] == "date-time"
    manifest = {
        "apiVersion": "zonestore.io/v1alpha1",
        "kind": "Datastore",
        "metadata": {"name": "x"},
        "spec": {"zones": ["a"], "backup": {"destination": "ftp://nope"}},
    }
    errors = crdschema.validate(crd_schema, crdschema.apply_defaults(crd_schema, manifest))
    assert any(".spec.backup.destination" in e for e in errors), errors


# -- the node pods -------------------------------------------------------------------------


def _container(spec_raw: dict[str, Any], zone: str = "zone-a") -> dict[str, Any]:
    spec = parse_spec(spec_raw)
    sts = statefulset.statefulset(REF, spec, zone, 1)
    [container] = sts["spec"]["template"]["spec"]["containers"]
    return container


def test_archiving_passes_archive_to_and_the_store_environment_to_every_node() -> None:
    raw = {"zones": ZONES, "backup": {**S3, "archiving": {"enabled": True, "maxDelaySeconds": 7}}}
    for zone in ZONES:
        container = _container(raw, zone)
        args = container["args"]
        at = args.index("--archive-to")
        assert args[at : at + 4] == [
            "--archive-to",
            "s3://zs-backups/orders",
            "--archive-max-delay-seconds",
            "7",
        ]
        env = {e["name"]: e for e in container["env"]}
        assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.storage:9000"
        assert env["AWS_REGION"]["value"] == "eu-west-1"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "backup-keys", "key": key}


def test_a_destination_without_archiving_changes_nothing_in_the_pods() -> None:
    container = _container({"zones": ZONES, "backup": S3})
    assert "--archive-to" not in container["args"]
    assert not any(e["name"].startswith("AWS_") for e in container["env"])


RECOVERY = {
    "zones": ZONES,
    "bootstrap": {
        "recovery": {
            "source": S3,
            "backupID": "20261206T073000Z-1a2b3c4d",
            "targetTime": "2026-12-06T08:00:00.250Z",
        }
    },
}


def test_recovery_restores_in_the_first_zones_init_container_only() -> None:
    spec = parse_spec(RECOVERY)
    pods = {
        zone: statefulset.statefulset(REF, spec, zone, 1)["spec"]["template"]["spec"]
        for zone in ZONES
    }
    assert "initContainers" not in pods["zone-b"] and "initContainers" not in pods["zone-c"]
    [init] = pods["zone-a"]["initContainers"]
    assert init["command"][-2:] == ["orders-zone-a-0", statefulset.DATA_DIR]
    assert init["args"] == [
        "zonestore",
        "restore",
        "--from",
        "s3://zs-backups/orders",
        "--backup",
        "20261206T073000Z-1a2b3c4d",
        "--to-time",
        "2026-12-06T08:00:00.250Z",
        "--data-dir",
        statefulset.DATA_DIR,
        "--node-id",
        "$(POD_NAME)",
    ]
    [node] = pods["zone-a"]["containers"]
    assert init["volumeMounts"] == node["volumeMounts"]
    assert init["securityContext"] == node["securityContext"]
    env = {e["name"] for e in init["env"]}
    assert {"POD_NAME", "ZONESTORE_CLUSTER_STATE", "AWS_ACCESS_KEY_ID"} <= env


def test_a_recovery_bootstraps_a_group_of_one_and_the_others_join() -> None:
    spec = parse_spec(RECOVERY)
    assert meta.bootstrap_members(REF, spec) == ["orders-zone-a-0"]
    cm = config.configmap(REF, spec, bootstrapped=False)
    assert cm["data"]["initial-cluster"].count("=") == 1
    assert meta.bootstrap_members(REF, parse_spec({"zones": ZONES})) == [
        "orders-zone-a-0",
        "orders-zone-b-0",
        "orders-zone-c-0",
    ]


def _run_restore_script(tmp_path: Any, pod: str, state: str, db_file: bool) -> str:
    data = tmp_path / "data"
    (data / "db").mkdir(parents=True, exist_ok=True)
    if db_file:
        (data / "db" / "CURRENT").write_text("x")
    marker = tmp_path / "ran"
    out = subprocess.run(
        [
            "/bin/sh",
            "-c",
            podbackup.RESTORE_SCRIPT,
            "zonestore-restore",
            "orders-zone-a-0",
            str(data),
            "/bin/sh",
            "-c",
            f"echo restored > {marker}",
        ],
        env={"POD_NAME": pod, "ZONESTORE_CLUSTER_STATE": state, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    ran = marker.exists()
    marker.unlink(missing_ok=True)
    return ("ran" if ran else "skipped") + out.stdout


def test_the_restore_step_runs_once_in_the_first_pod_of_a_new_group(tmp_path: Any) -> None:
    assert _run_restore_script(tmp_path, "orders-zone-a-0", "new", db_file=False) == "ran"
    assert _run_restore_script(tmp_path, "orders-zone-a-1", "new", db_file=False) == "skipped"
    assert _run_restore_script(tmp_path, "orders-zone-a-0", "existing", False) == "skipped"
    kept = _run_restore_script(tmp_path, "orders-zone-a-0", "new", db_file=True)
    assert kept.startswith("skipped") and "already holds a database" in kept


# -- the backup CRDs -----------------------------------------------------------------------


def test_backup_crds_are_in_the_datastore_group_with_status_and_printer_columns() -> None:
    crds = _crds()
    assert sorted(crds) == ["DatastoreBackup", "ScheduledDatastoreBackup"]
    for kind, crd in crds.items():
        assert crd["spec"]["group"] == "zonestore.io"
        [version] = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
        schema = version["schema"]["openAPIV3Schema"]
        assert crdschema.structural_problems(schema) == [], kind
    columns = [
        c["name"]
        for c in crds["DatastoreBackup"]["spec"]["versions"][0]["additionalPrinterColumns"]
    ]
    assert columns == ["Datastore", "Phase", "Commit Time", "Backup", "Bytes", "Age"]
    phases = _schema("DatastoreBackup")["properties"]["status"]["properties"]["phase"]["enum"]
    assert phases == [p.value for p in model.BackupPhase]
    sched = [
        c["name"]
        for c in crds["ScheduledDatastoreBackup"]["spec"]["versions"][0]["additionalPrinterColumns"]
    ]
    assert {"Schedule", "Suspend", "Last Schedule", "Last Successful"} <= set(sched)


def test_a_backup_status_fits_its_schema() -> None:
    schema = _schema("DatastoreBackup")
    running = model.BackupStatus(
        phase=model.BackupPhase.RUNNING, started_at=T0, destination="s3://b/p"
    )
    done = planner.completed(
        running, "20261206T073000Z-1a2b3c4d", "2026-12-06T07:30:00.123456Z", 4096,
        "orders-zone-b-0.orders-peers.shop.svc:9081", T0 + timedelta(seconds=9),
    )  # fmt: skip
    body = {"apiVersion": "zonestore.io/v1alpha1", "kind": "DatastoreBackup",
            "metadata": {"name": "b"}, "spec": {"datastore": "orders"},
            "status": done.to_dict()}  # fmt: skip
    assert crdschema.validate(schema, body) == []
    assert done.to_dict()["sourcePod"] == "orders-zone-b-0"
    assert model.parse_backup_status(done.to_dict()) == done


def test_schedule_defaults_agree_with_the_parser() -> None:
    schema = _schema("ScheduledDatastoreBackup")
    raw = {"datastore": "orders", "schedule": "0 3 * * *"}
    defaulted = crdschema.apply_defaults(schema["properties"]["spec"], raw)
    assert model.parse_schedule_spec(defaulted) == model.parse_schedule_spec(raw)
    assert model.parse_schedule_spec(raw).keep_last == 7


# -- a DatastoreBackup's steps -------------------------------------------------------------


def _datastore(leader: str | None = "orders-zone-a-0", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "orders", "namespace": "shop", "uid": "u"},
        "spec": {"zones": ZONES, **spec},
        "status": {"leader": leader} if leader else {},
    }


def test_a_new_backup_starts_into_the_datastores_destination() -> None:
    step = planner.plan_backup({"datastore": "orders"}, None, _datastore(backup=S3), False, T0)
    assert step.kind is planner.StepKind.START
    assert step.store is not None and step.store.destination == S3["destination"]
    assert step.status is not None and step.status.phase is model.BackupPhase.RUNNING
    assert step.status.started_at == T0


def test_a_backup_destination_overrides_the_datastores() -> None:
    override = {"destination": "file:///mnt/backups"}
    step = planner.plan_backup(
        {"datastore": "orders", "destination": override}, {}, _datastore(backup=S3), False, T0
    )
    assert step.store is not None and step.store.destination == "file:///mnt/backups"


@pytest.mark.parametrize(
    ("spec", "datastore", "reason"),
    [
        ({"datastore": "orders"}, None, "Datastore 'orders' not found"),
        ({"datastore": "orders"}, _datastore(), "no destination"),
        ({}, _datastore(backup=S3), "spec.datastore must name"),
    ],
)
def test_a_backup_that_cannot_run_fails_with_the_reason(
    spec: dict[str, Any], datastore: dict[str, Any] | None, reason: str
) -> None:
    step = planner.plan_backup(spec, None, datastore, False, T0)
    assert step.kind is planner.StepKind.FAIL and reason in step.reason
    assert step.status is not None and step.status.phase is model.BackupPhase.FAILED
    assert step.status.to_dict()["reason"] == step.reason


def test_a_backup_waits_for_a_leader() -> None:
    step = planner.plan_backup(
        {"datastore": "orders"}, None, _datastore(None, backup=S3), False, T0
    )
    assert step.kind is planner.StepKind.WAIT and "leader" in step.reason


def test_finished_backups_are_left_alone_and_an_interrupted_one_fails() -> None:
    ds = _datastore(backup=S3)
    for phase in ("Completed", "Failed"):
        step = planner.plan_backup({"datastore": "orders"}, {"phase": phase}, ds, False, T0)
        assert step.kind is planner.StepKind.NOTHING
    running = {"phase": "Running", "startedAt": "2026-12-06T07:00:00Z"}
    assert planner.plan_backup({"datastore": "orders"}, running, ds, True, T0).kind is (
        planner.StepKind.NOTHING
    )
    step = planner.plan_backup({"datastore": "orders"}, running, ds, False, T0)
    assert step.kind is planner.StepKind.FAIL and "restarted" in step.reason


# -- schedules and retention ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("0 3 * * *", T0, datetime(2026, 12, 7, 3, 0, tzinfo=UTC)),
        ("*/15 * * * *", T0, datetime(2026, 12, 6, 7, 45, tzinfo=UTC)),
        ("30 7 * * *", T0, datetime(2026, 12, 7, 7, 30, tzinfo=UTC)),  # strictly after
        ("0 0 1 * *", T0, datetime(2027, 1, 1, tzinfo=UTC)),
        ("0 12 * * 1", T0, datetime(2026, 12, 7, 12, 0, tzinfo=UTC)),  # Monday
        ("0 12 * * 7", T0, datetime(2026, 12, 6, 12, 0, tzinfo=UTC)),  # 7 = Sunday
        ("0 0 13 * 5", T0, datetime(2026, 12, 11, 0, 0, tzinfo=UTC)),  # 13th OR Friday
        ("5-10/5 1,2 * * *", T0, datetime(2026, 12, 7, 1, 5, tzinfo=UTC)),
    ],
)
def test_cron_next_fire_time(expr: str, after: datetime, expected: datetime) -> None:
    assert model.Cron.parse(expr).next_after(after) == expected


@pytest.mark.parametrize(
    "expr", ["0 3 * *", "61 * * * *", "* 24 * * *", "a * * * *", "*/0 * * * *"]
)
def test_bad_cron_expressions_are_refused(expr: str) -> None:
    with pytest.raises(SpecError, match=r"spec\.schedule"):
        model.Cron.parse(expr)


def _schedule(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "nightly",
            "namespace": "shop",
            "uid": "s-uid",
            "creationTimestamp": "2026-12-05T00:00:00Z",
        },
        "spec": {"datastore": "orders", "schedule": "0 3 * * *", **spec},
        "status": {},
    }


def _child(name: str, phase: str, stopped: datetime) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {"phase": phase, "stoppedAt": stopped.strftime("%Y-%m-%dT%H:%M:%SZ")},
    }


def test_a_due_schedule_creates_one_owned_backup_named_by_its_time() -> None:
    step = planner.plan_schedule(_schedule(), [], T0)  # 03:00 on the 5th's next day passed
    assert step.create is not None
    assert step.create["metadata"]["name"] == "nightly-202612060300"
    assert step.create["metadata"]["labels"][model.L_SCHEDULE] == "nightly"
    assert step.create["metadata"]["ownerReferences"][0]["uid"] == "s-uid"
    assert step.create["spec"] == {"datastore": "orders"}
    assert step.status["lastScheduleTime"] == "2026-12-06T03:00:00Z"
    # Once recorded, the same fire time is not due again (the planner's fixpoint).
    again = _schedule()
    again["status"] = step.status
    assert planner.plan_schedule(again, [], T0).create is None


def test_a_suspended_schedule_creates_nothing_but_still_prunes() -> None:
    children = [_child(f"nightly-{i}", "Completed", T0 - timedelta(days=i)) for i in range(1, 4)]
    step = planner.plan_schedule(_schedule(suspend=True, retention={"keepLast": 2}), children, T0)
    assert step.create is None
    assert step.delete == ("nightly-3",)
    assert step.status["lastSuccessfulTime"] == "2026-12-05T07:30:00Z"


def test_retention_by_age_keeps_the_newest_and_ignores_unfinished_backups() -> None:
    children = [
        _child("old-1", "Completed", T0 - timedelta(hours=50)),
        _child("old-2", "Completed", T0 - timedelta(hours=30)),
        _child("new", "Completed", T0 - timedelta(hours=1)),
        _child("failed", "Failed", T0 - timedelta(hours=90)),
        _child("running", "Running", T0 - timedelta(hours=90)),
    ]
    step = planner.plan_schedule(_schedule(retention={"maxAgeHours": 24}), children, T0)
    assert sorted(step.delete) == ["old-1", "old-2"]
    only_old = [_child("old-1", "Completed", T0 - timedelta(hours=50))]
    assert (
        planner.plan_schedule(_schedule(retention={"maxAgeHours": 24}), only_old, T0).delete == ()
    )


def test_a_bad_schedule_is_reported_and_does_nothing() -> None:
    step = planner.plan_schedule(_schedule(schedule="every night"), [], T0)
    assert step.create is None and step.delete == () and "five fields" in step.error
    assert step.status["conditions"][0]["status"] == "False"


# -- a recovered group grows to spec.voters ------------------------------------------------


@pytest.mark.parametrize("failover", [True, False], ids=["failover-on", "failover-off"])
def test_a_recovered_group_of_one_adds_and_promotes_the_other_replicas(failover: bool) -> None:
    from simcluster import REF as SIM_REF
    from simcluster import T0 as SIM_T0
    from simcluster import SimCluster

    from zonestore_operator.model.status import DatastoreStatus

    spec = parse_spec({**RECOVERY, "zones": ["a", "b", "c"], "failover": {"enabled": failover}})
    sim = SimCluster.healthy(spec)
    [restored] = meta.bootstrap_members(SIM_REF, spec)
    sim.members = {restored: sim.members[restored]}  # the others start with --join
    status = sim.converge(DatastoreStatus(), SIM_T0)
    voters = sorted(n for n, m in sim.members.items() if m.membership.value == "voter")
    assert voters == ["ds-a-0", "ds-b-0", "ds-c-0"]
    assert [a for a, _ in sim.log] == ["AddLearner", "AddLearner", "Promote", "Promote"]
    assert sim.leader == restored and status.leader == restored


def test_the_readme_backup_examples_fit_the_crds_and_parse(crd_schema: dict) -> None:
    kubernetes = (REPO / "README.md").read_text().split("\n## Kubernetes\n", 1)[1]
    section = kubernetes.split("### Backups and point-in-time recovery", 1)[1]
    section = section.split("\n### ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```yaml\n")[1:]]
    docs = [d for b in blocks for d in yaml.safe_load_all(b)]
    assert len(docs) == 4
    fragment, backup_now, nightly, restored = docs
    ds = {"zones": ZONES, **fragment["spec"]}
    parsed = parse_spec(ds)
    assert parsed.backup.archiving and parsed.backup.store is not None
    assert backups.rate_bytes(parsed.backup.max_rate) == 64_000_000
    assert model.parse_backup_spec(backup_now["spec"]).datastore == "demo"
    assert model.parse_schedule_spec(nightly["spec"]).max_age == timedelta(hours=336)
    recovery = parse_spec(restored["spec"], "demo-restored").recovery
    assert recovery is not None and recovery.target_time == "2026-12-06T07:30:00Z"
    for doc, schema in (
        (backup_now, _schema("DatastoreBackup")),
        (nightly, _schema("ScheduledDatastoreBackup")),
        (restored, crd_schema),
    ):
        defaulted = crdschema.apply_defaults(schema, doc)
        assert crdschema.validate(schema, defaulted) == [], doc["kind"]
