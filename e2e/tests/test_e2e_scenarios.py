"""The operator and the storage nodes on a real control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler built from the Kubernetes modules), pods run by
the process kubelets, three zones of two Nodes each.

Budgets are named constants: a scenario fails when one is exceeded, and prints the
figures it measured either way (run with -s to see them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from typing import Any

import pytest
from kubernetes import client

from zonestore_e2e import install, workload
from zonestore_e2e.cluster import ROOT, Cluster, wait_for
from zonestore_e2e.datastores import DatastoreHandle, manifest

# Budgets (seconds).
READY_BUDGET = 240  # a new Datastore from `create` to Ready with a leader
WRITES_RESUME_BUDGET = 30  # zone lost -> first acknowledged write
DEGRADED_BUDGET = 90  # zone lost -> status says so
RESTORED_BUDGET = 240  # zone lost -> three healthy voters outside that zone
HEAL_BUDGET = 240  # fault removed -> every member healthy again
FORCE_DELETE_BUDGET = 180  # zone lost -> its pod, stuck Terminating, force-deleted
ROLL_BUDGET = 300  # spec change -> every pod replaced and Ready

PROJECT = "e2e"
# Cluster start and the helm install count against the first test.
pytestmark = pytest.mark.timeout(1200)


def _report(name: str, writer: workload.SteadyWriter | None = None, **figures: Any) -> None:
    text = " ".join(
        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"\n[e2e figures] {name}: {text}")
    for problem in writer.problems() if writer is not None else []:
        print(f"[e2e figures]   not acknowledged: {problem}")


def _new(cluster: Cluster, namespace: str, name: str = "zs", **spec: Any) -> DatastoreHandle:
    ds = DatastoreHandle(cluster, namespace, name)
    ds.create(manifest(name, namespace, **spec))
    return ds


def _put_get(addr: str, project: str, key_name: str) -> Any:
    from google.cloud import datastore

    c = workload.make_client(addr, project)
    entity = datastore.Entity(c.key("E2E", key_name))  # type: ignore[attr-defined]
    entity.update({"name": key_name, "via": addr})
    c.put(entity, timeout=15)  # type: ignore[attr-defined]
    return c.get(c.key("E2E", key_name), timeout=15)  # type: ignore[attr-defined]


def _events(cluster: Cluster, namespace: str, reason: str, names: set[str]) -> list[str]:
    """Messages of `reason` Events in `namespace` that name one of `names`."""
    with cluster.api() as api:
        events: list[Any] = client.CoreV1Api(api).list_namespaced_event(namespace).items
    return [
        e.message
        for e in events
        if e.reason == reason and any(n in (e.message or "") for n in names)
    ]


def _resumed(writer: workload.SteadyWriter, since: float) -> bool:
    """Writes flow again: the latest ack is under 1.5 s old, and the longest gap since
    the fault ended at least 2 s ago (so it is not still growing)."""
    acked = writer.acked()
    if not acked:
        return False
    now = time.monotonic()
    _, end = writer.outage(since)
    return now - acked[-1].end < 1.5 and end > since and now - end > 2


def _voters_outside(ds: DatastoreHandle, zone: str, count: int) -> list[dict[str, Any]] | None:
    healthy = [v for v in ds.healthy_voters() if v.get("zone") != zone]
    return healthy if len(healthy) >= count else None


@pytest.mark.process_cluster
def test_install_and_clients(cluster: Cluster, namespace: str, api: Any) -> None:
    """A three-zone Datastore becomes Ready; its objects are as specified; both official
    clients write and read through its pods."""
    t0 = time.monotonic()
    ds = _new(cluster, namespace)
    status = ds.wait_ready(READY_BUDGET)
    _report("install", ready_s=time.monotonic() - t0)

    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    policy = client.PolicyV1Api(api)
    sets = {s.metadata.name: s for s in apps.list_namespaced_stateful_set(namespace).items}
    assert sorted(sets) == ["zs-zone-a", "zs-zone-b", "zs-zone-c"]
    for zone in ("zone-a", "zone-b", "zone-c"):
        sts = sets[f"zs-{zone}"]
        terms = sts.spec.template.spec.affinity.node_affinity
        expr = terms.required_during_scheduling_ignored_during_execution.node_selector_terms[0]
        assert expr.match_expressions[0].values == [zone]
        assert sts.spec.update_strategy.type == "OnDelete"
        assert sts.metadata.owner_references[0].kind == "Datastore"
    pods = ds.pods()
    assert sorted(p.zone for p in pods) == ["zone-a", "zone-b", "zone-c"], pods
    assert all(p.ready for p in pods), pods
    services = {s.metadata.name: s for s in core.list_namespaced_service(namespace).items}
    assert {"zs", "zs-peers", "zs-leader", "zs-readonly"} <= set(services)
    assert services["zs-peers"].spec.cluster_ip == "None"
    pdb = policy.read_namespaced_pod_disruption_budget("zs-voters", namespace)
    assert pdb.spec.selector.match_labels
    # Status: three healthy voters, one per zone, and the leader is one of them.
    voters = ds.healthy_voters()
    assert sorted(v["zone"] for v in voters) == ["zone-a", "zone-b", "zone-c"], status
    assert status["leader"] in {v["pod"] for v in voters}
    # The PVCs were bound by the local provisioner on the pod's node.
    pvcs = core.list_namespaced_persistent_volume_claim(namespace).items
    assert len(pvcs) == 3 and all(c.status.phase == "Bound" for c in pvcs)

    # Python client, through every pod (followers forward writes to the leader).
    for pod in pods:
        got = _put_get(pod.client_addr, PROJECT, f"py-{pod.name}")
        assert got is not None and got["name"] == f"py-{pod.name}"
    # Node client: the seed snippet, unmodified, through a follower.
    follower = next(p for p in pods if p.name != status["leader"])
    env = {
        **os.environ,
        "DATASTORE_EMULATOR_HOST": follower.client_addr,
        "DATASTORE_PROJECT_ID": PROJECT,
    }
    js = ROOT / "node" / "tests" / "js"
    out = subprocess.run(
        ["node", "seed.js"], cwd=js, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "User name: John Doe" in out.stdout
    # ... and the Python client sees the Node client's write through another pod.
    other = next(p for p in pods if p.name == status["leader"])
    c = workload.make_client(other.client_addr, PROJECT)
    user = c.get(c.key("User", "John Doe"))  # type: ignore[attr-defined]
    assert user is not None and user["email"] == "john.doe@example.com"


def _steady(
    ds: DatastoreHandle, project: str, exclude: tuple[str, ...] = ()
) -> workload.SteadyWriter:
    cache: dict[str, Any] = {"at": 0.0, "addrs": []}

    def targets() -> list[str]:
        # Re-read the ready pods at most every 2 s (the API server is on the same 2 cores).
        if time.monotonic() - cache["at"] > 2:
            with contextlib.suppress(Exception):  # keep the last list while the API is busy
                cache["addrs"] = ds.client_addrs(exclude)
            cache["at"] = time.monotonic()
        return list(cache["addrs"])

    writer = workload.SteadyWriter(project, targets)
    writer.start()
    return writer


@pytest.mark.process_cluster
def test_zone_outage_and_recovery(cluster: Cluster, namespace: str) -> None:
    """The leader's zone dies under a steady write load: its kubelets stop (Nodes go
    NotReady), its pods freeze, its bridge goes down. Writes resume through the other
    zones, no acknowledged write is lost, the status reports the zone, and the operator
    restores three voters in the healthy zones. Then the zone comes back and the group
    returns to one voter per zone."""
    ds = _new(cluster, namespace)
    ds.wait_ready(READY_BUDGET)
    leader = ds.leader_pod()
    assert leader is not None
    victim = leader.zone
    project = f"outage-{uuid.uuid4().hex[:6]}"
    writer = _steady(ds, project, exclude=(victim,))
    wait_for("some acknowledged writes before the fault", lambda: len(writer.acked()) >= 20, 60)

    victim_pods = [p.uid for p in ds.pods() if p.zone == victim]
    victim_names = {p.name for p in ds.pods() if p.zone == victim}
    t_fault = time.monotonic()
    cluster.signal_kubelets(victim, signal.SIGKILL)
    cluster.signal_pods(victim_pods, signal.SIGSTOP)
    cluster.network.set_bridge(cluster.zone_index(victim), up=False)

    wait_for(
        "writes to resume after the zone loss",
        lambda: _resumed(writer, t_fault),
        WRITES_RESUME_BUDGET + 10,
    )

    def zone_reported() -> bool:
        zones = {z["name"]: z for z in ds.status().get("zones", [])}
        return ds.condition("ZoneDegraded") == "True" and zones.get(victim, {}).get("state") in (
            "Down",
            "Failed",
        )

    wait_for(f"status reporting {victim} down", zone_reported, DEGRADED_BUDGET)
    degraded = time.monotonic() - t_fault
    wait_for(
        "three healthy voters outside the lost zone",
        lambda: _voters_outside(ds, victim, 3),
        RESTORED_BUDGET,
        1.0,
    )
    restored = time.monotonic() - t_fault
    # The lost zone's pod was evicted (NoExecute taint) and sits Terminating on a Node
    # whose kubelet is gone; the operator force-deletes it so the StatefulSet can make a
    # new one when the zone returns.
    wait_for(
        f"a PodForceDeleted event for {sorted(victim_names)}",
        lambda: _events(cluster, namespace, "PodForceDeleted", victim_names),
        FORCE_DELETE_BUDGET,
        1.0,
    )
    force_deleted = time.monotonic() - t_fault
    writer.stop()
    gap_start, gap_end = writer.outage(t_fault)
    counts = writer.counts()
    missing = workload.audit(ds.client_addrs((victim,))[0], project, writer.acked())
    _report(
        "zone outage",
        writer,
        writes_resumed_s=gap_end - t_fault,
        longest_gap_s=gap_end - gap_start,
        status_degraded_s=degraded,
        fault_tolerance_restored_s=restored,
        stuck_pod_force_deleted_s=force_deleted,
        lost=len(missing),
        **counts,
    )
    assert missing == [], f"acknowledged writes lost: {missing[:20]}"
    assert gap_end - t_fault <= WRITES_RESUME_BUDGET

    # Recovery: the zone's network and kubelets come back; its frozen pods resume.
    t_heal = time.monotonic()
    cluster.network.set_bridge(cluster.zone_index(victim), up=True)
    cluster.signal_pods(victim_pods, signal.SIGCONT)
    cluster.restart_kubelets(victim)

    def rebalanced() -> bool:
        st = ds.status()
        voters = ds.healthy_voters()
        zones = sorted(v["zone"] for v in voters)
        conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
        return zones == ["zone-a", "zone-b", "zone-c"] and conds.get("ZoneDegraded") == "False"

    wait_for("one healthy voter per zone after recovery", rebalanced, HEAL_BUDGET, 1.0)
    _report("zone recovery", rebalanced_s=time.monotonic() - t_heal)


@pytest.mark.process_cluster
def test_zone_partition_and_heal(cluster: Cluster, namespace: str) -> None:
    """The leader's zone is cut off (its pods keep running; its kubelets are paused so
    their Nodes go NotReady as they would behind a real partition). The rest elects a
    leader and takes writes; after the heal every member is healthy and nothing
    acknowledged is lost."""
    ds = _new(cluster, namespace, failover={"zoneTimeoutSeconds": 600})
    ds.wait_ready(READY_BUDGET)
    leader = ds.leader_pod()
    assert leader is not None
    victim = leader.zone
    project = f"partition-{uuid.uuid4().hex[:6]}"
    writer = _steady(ds, project, exclude=(victim,))
    wait_for("acknowledged writes before the partition", lambda: len(writer.acked()) >= 20, 60)
    t_cut = time.monotonic()
    cluster.network.cut_zone(cluster.zone_index(victim))
    cluster.signal_kubelets(victim, signal.SIGSTOP)
    wait_for(
        "writes to resume during the partition",
        lambda: _resumed(writer, t_cut),
        WRITES_RESUME_BUDGET + 10,
    )
    wait_for(
        "a new leader outside the cut zone",
        lambda: (p := ds.leader_pod()) is not None and p.zone != victim,
        60,
    )
    t_heal = time.monotonic()
    cluster.network.heal_zone(cluster.zone_index(victim))
    cluster.signal_kubelets(victim, signal.SIGCONT)
    wait_for(
        "all three voters healthy after the heal",
        lambda: len(ds.healthy_voters()) == 3 and ds.condition("Ready") == "True",
        HEAL_BUDGET,
        1.0,
    )
    healed = time.monotonic() - t_heal
    writer.stop()
    gap_start, gap_end = writer.outage(t_cut)
    missing = workload.audit(ds.client_addrs()[0], project, writer.acked())
    _report(
        "zone partition",
        writer,
        writes_resumed_s=gap_end - t_cut,
        longest_gap_s=gap_end - gap_start,
        healed_s=healed,
        lost=len(missing),
        **writer.counts(),
    )
    assert missing == []


@pytest.mark.process_cluster
def test_rolling_upgrade_under_load(cluster: Cluster, namespace: str) -> None:
    """A changed pod template rolls every pod (learners, followers, the leader last)
    while a client writes; no acknowledged write is lost."""
    ds = _new(cluster, namespace)
    ds.wait_ready(READY_BUDGET)
    before = {p.name: p.uid for p in ds.pods()}
    project = f"roll-{uuid.uuid4().hex[:6]}"
    writer = _steady(ds, project)
    wait_for("acknowledged writes before the update", lambda: len(writer.acked()) >= 20, 60)
    t0 = time.monotonic()
    ds.patch_spec({"podAnnotations": {"e2e.zonestore.io/rev": "2"}})

    def rolled() -> bool:
        pods = ds.pods()
        return (
            len(pods) == 3
            and all(p.ready and not p.deleting for p in pods)
            and all(before.get(p.name) != p.uid for p in pods)
            and ds.condition("Ready") == "True"
        )

    wait_for("every pod replaced and Ready", rolled, ROLL_BUDGET, 1.0)
    rolled_s = time.monotonic() - t0
    writer.stop()
    missing = workload.audit(ds.client_addrs()[0], project, writer.acked())
    counts = writer.counts()
    _report(
        "rolling upgrade",
        writer,
        rolled_s=rolled_s,
        longest_gap_s=writer.longest_gap(t0),
        lost=len(missing),
        **counts,
    )
    assert missing == []
    assert counts["acked"] > 20


@pytest.mark.process_cluster
def test_scale_out_and_in(cluster: Cluster, namespace: str) -> None:
    """replicasPerZone 1 -> 2 adds a learner per zone (voters stay 3); back to 1 removes
    them from the group and their pods."""
    ds = _new(cluster, namespace)
    ds.wait_ready(READY_BUDGET)
    ds.patch_spec({"replicasPerZone": 2})

    def scaled_out() -> bool:
        members = ds.status().get("members", [])
        learners = [m for m in members if m.get("membership") == "Learner" and m.get("healthy")]
        return len(ds.ready_pods()) == 6 and len(learners) == 3 and len(ds.healthy_voters()) == 3

    wait_for("six pods: three voters and three learners", scaled_out, READY_BUDGET, 1.0)
    got = _put_get(ds.client_addrs()[0], PROJECT, "after-scale-out")
    assert got is not None
    ds.patch_spec({"replicasPerZone": 1})

    def scaled_in() -> bool:
        members = ds.status().get("members", [])
        return len(ds.pods()) == 3 and len(members) == 3 and len(ds.healthy_voters()) == 3

    wait_for("back to three members and three pods", scaled_in, READY_BUDGET, 1.0)


@pytest.mark.process_cluster
def test_delete_keeps_volumes(cluster: Cluster, namespace: str, api: Any) -> None:
    """Deleting the Datastore garbage-collects what it owns (StatefulSets, pods,
    Services) and keeps the PVCs (pvcRetentionPolicy.whenDeleted: Retain)."""
    ds = _new(cluster, namespace)
    ds.wait_ready(READY_BUDGET)
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    ds.delete()

    def collected() -> bool:
        return (
            not apps.list_namespaced_stateful_set(namespace).items
            and not core.list_namespaced_pod(namespace).items
            and not [s for s in core.list_namespaced_service(namespace).items]
        )

    wait_for("owned objects garbage-collected", collected, 120, 1.0)
    pvcs = core.list_namespaced_persistent_volume_claim(namespace).items
    assert len(pvcs) == 3, [c.metadata.name for c in pvcs]


def test_helm_test_hook(cluster: Cluster) -> None:
    """The chart's own `helm test` passes against the installed release."""
    proc = install.helm(
        cluster, "test", install.RELEASE, "-n", install.OPERATOR_NS, "--timeout", "120s"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
