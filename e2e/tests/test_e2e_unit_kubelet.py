"""Unit tests of the process kubelet's pure parts: env and $(VAR), probes, status,
images, the IP allocator, volume payloads and the atomic file layout, the provisioner's
objects. No cluster, no network namespaces."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from zonestore_e2e import images, pods, provisioner, volumes

POD: dict[str, Any] = {
    "metadata": {
        "name": "store-0",
        "namespace": "ns1",
        "uid": "1111-2222",
        "labels": {"app": "store", "zone": "a"},
        "annotations": {"note": "x"},
    },
    "spec": {"nodeName": "z0-n0", "serviceAccountName": "sa", "subdomain": "peers"},
}
FACTS = pods.PodFacts.of(POD, "10.244.1.10", "10.244.1.200")


def _no(_name: str) -> None:
    return None


# ---------------------------------------------------------------- $(VAR)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "alpha"),
        ("x-$(A)-$(B)", "x-alpha-$(B)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("$A", "$A"),
        ("cost: 5$", "cost: 5$"),
        ("$(A", "$(A"),
        ("$()", "$()"),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert pods.expand(text, {"A": "alpha"}) == expected


def test_env_resolves_fields_refs_and_later_values_see_earlier_ones() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {
                "name": "ZONE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['zone']"}},
            },
            {"name": "ADV", "value": "$(POD_NAME).peers:$(PORT)"},
            {"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {
                "name": "OPT",
                "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": True}},
            },
        ],
    }
    env = pods.resolve_env(
        container,
        FACTS,
        {"PATH": "/bin"},
        lambda n: {"k": "v"} if n == "cm" else None,
        lambda n: {"pw": "secret"} if n == "s" else None,
    )
    assert env["PATH"] == "/bin"
    assert env["CM_k"] == "v"
    assert (env["POD_NAME"], env["NS"], env["UID"]) == ("store-0", "ns1", "1111-2222")
    assert (env["IP"], env["HOST"], env["NODE"]) == ("10.244.1.10", "10.244.1.200", "z0-n0")
    assert env["ZONE"] == "a"
    assert env["ADV"] == "store-0.peers:$(PORT)"
    assert (env["KEY"], env["PW"]) == ("v", "secret")
    assert "OPT" not in env


def test_env_with_a_missing_required_key_is_a_config_error() -> None:
    container = {
        "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]
    }
    with pytest.raises(pods.ConfigError, match="couldn't find key k"):
        pods.resolve_env(container, FACTS, {}, lambda _n: {}, _no)
    with pytest.raises(pods.ConfigError, match='configmap "cm" not found'):
        pods.resolve_env(container, FACTS, {}, _no, _no)


def test_env_from_missing_optional_source_is_skipped() -> None:
    container = {"envFrom": [{"secretRef": {"name": "s", "optional": True}}]}
    assert pods.resolve_env(container, FACTS, {}, _no, _no) == {}


def test_resource_field_ref_falls_back_to_node_allocatable_and_rounds_up() -> None:
    c = {"resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "250m"}}}
    alloc = {"cpu": "8"}
    assert (
        pods.resource_field_ref(c, {"resource": "limits.memory", "divisor": "1Mi"}, alloc) == "1024"
    )
    assert pods.resource_field_ref(c, {"resource": "requests.cpu"}, alloc) == "1"
    assert pods.resource_field_ref(c, {"resource": "limits.cpu"}, alloc) == "8"


# ---------------------------------------------------------------- probes


def _tracker(kind: pods.ProbeKind, **kw: int) -> pods.ProbeTracker:
    probe = {"httpGet": {"port": 80}, "periodSeconds": 5, "initialDelaySeconds": 3, **kw}
    return pods.ProbeTracker.start(kind, pods.ProbeSpec.of(probe), now=100.0)


def test_readiness_starts_failed_and_liveness_starts_succeeded() -> None:
    assert not _tracker(pods.ProbeKind.READINESS).result
    assert not _tracker(pods.ProbeKind.STARTUP).result
    assert _tracker(pods.ProbeKind.LIVENESS).result


def test_probe_waits_initial_delay_then_runs_every_period() -> None:
    t = _tracker(pods.ProbeKind.READINESS)
    assert not t.due(102.9)
    assert t.due(103.0)
    t.record(True, 103.0)
    assert not t.due(107.9)
    assert t.due(108.0)


def test_liveness_fails_only_after_failure_threshold_consecutive_failures() -> None:
    t = _tracker(pods.ProbeKind.LIVENESS, failureThreshold=3)
    assert not t.record(False, 1)
    assert not t.record(False, 2)
    assert not t.record(True, 3)  # a success resets the count
    assert not t.record(False, 4)
    assert not t.record(False, 5)
    assert t.record(False, 6)
    assert not t.result


def test_readiness_needs_success_threshold_successes() -> None:
    t = _tracker(pods.ProbeKind.READINESS, successThreshold=2)
    assert not t.record(True, 1)
    assert t.record(True, 2)
    assert t.result


def test_backoff_doubles_up_to_the_cap() -> None:
    b = pods.Backoff(base=1, cap=10)
    assert [b.delay(n) for n in range(6)] == [0, 1, 2, 4, 8, 10]


@pytest.mark.parametrize(
    ("policy", "code", "restart"),
    [
        (pods.RestartPolicy.ALWAYS, 0, True),
        (pods.RestartPolicy.ON_FAILURE, 0, False),
        (pods.RestartPolicy.ON_FAILURE, 1, True),
        (pods.RestartPolicy.NEVER, 1, False),
    ],
)
def test_restart_policy(policy: pods.RestartPolicy, code: int, restart: bool) -> None:
    assert pods.should_restart(policy, code) is restart


# ---------------------------------------------------------------- status


def _view(state: pods.State, code: int = 0, **kw: Any) -> pods.ContainerView:
    v = pods.ContainerView("c", "zonestore/zonestore:1", state=state, **kw)
    if state is pods.State.TERMINATED:
        v.terminated = pods.Terminated(code, pods.exit_reason(code), "s", "f", "proc://1")
    return v


def test_phase_follows_restart_policy() -> None:
    running = _view(pods.State.RUNNING)
    ok, bad = _view(pods.State.TERMINATED, 0), _view(pods.State.TERMINATED, 2)
    waiting = _view(pods.State.WAITING)
    never, always = pods.RestartPolicy.NEVER, pods.RestartPolicy.ALWAYS
    assert pods.pod_phase(never, False, False, [waiting]) == "Pending"
    assert pods.pod_phase(never, True, False, [waiting]) == "Pending"
    assert pods.pod_phase(never, True, False, [running, ok]) == "Running"
    assert pods.pod_phase(never, True, False, [ok]) == "Succeeded"
    assert pods.pod_phase(never, True, False, [ok, bad]) == "Failed"
    assert pods.pod_phase(always, True, False, [bad]) == "Running"
    assert pods.pod_phase(never, False, True, [waiting]) == "Failed"
    crashlooping = _view(pods.State.WAITING, restart_count=3)
    assert pods.pod_phase(always, True, False, [crashlooping]) == "Running"


def test_container_status_carries_state_last_state_and_id() -> None:
    v = _view(pods.State.RUNNING, pid=42, started_at="t0", restart_count=1, ready=True)
    v.started = True
    v.last = pods.Terminated(137, "Error", "a", "b", "proc://41", signal=9)
    s = v.status()
    assert s["state"] == {"running": {"startedAt": "t0"}}
    assert s["lastState"]["terminated"]["exitCode"] == 137
    assert s["containerID"] == "proc://42"
    assert (s["ready"], s["started"], s["restartCount"]) == (True, True, 1)
    w = _view(pods.State.WAITING, reason="ErrImagePull", message="nope").status()
    assert w["state"] == {"waiting": {"reason": "ErrImagePull", "message": "nope"}}


def test_conditions_keep_transition_time_while_status_holds() -> None:
    first = pods.conditions([], {"Ready": False}, "t1")
    same = pods.conditions(first, {"Ready": False}, "t2")
    flipped = pods.conditions(same, {"Ready": True}, "t3")
    assert same[0]["lastTransitionTime"] == "t1"
    assert flipped[0] == {
        "type": "Ready",
        "status": "True",
        "lastProbeTime": None,
        "lastTransitionTime": "t3",
    }


def test_pod_conditions_ready_needs_every_container_ready_and_the_gates() -> None:
    ready = _view(pods.State.RUNNING, ready=True)
    not_ready = _view(pods.State.RUNNING)
    kw: dict[str, Any] = {"sandbox_ready": True, "initialized": True, "now": "t"}
    conds = {c["type"]: c["status"] for c in pods.pod_conditions(POD, containers=[ready], **kw)}
    assert conds == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    both = pods.pod_conditions(POD, containers=[ready, not_ready], **kw)
    assert {c["type"]: c["status"] for c in both}["Ready"] == "False"
    gated = {**POD, "spec": {**POD["spec"], "readinessGates": [{"conditionType": "x/y"}]}}
    conds2 = {c["type"]: c["status"] for c in pods.pod_conditions(gated, containers=[ready], **kw)}
    assert (conds2["ContainersReady"], conds2["Ready"]) == ("True", "False")


def test_hosts_file_names_the_statefulset_pod_by_its_fqdn() -> None:
    text = pods.hosts_file(POD, "10.244.1.10")
    assert "10.244.1.10\tstore-0.peers.ns1.svc.cluster.local\tstore-0" in text
    assert "127.0.0.1\tlocalhost" in text


# ---------------------------------------------------------------- mounts


def test_mount_plan_orders_parents_first() -> None:
    plan = pods.mount_plan(
        [pods.Mount("/s/b", "/etc/z/b"), pods.Mount("/s/a", "/etc/z")], stages=["/state/st"]
    )
    assert [m.target for m in plan] == ["/etc/z", "/etc/z/b"]


def test_mount_plan_stages_sources_a_target_would_hide() -> None:
    mounts = [pods.Mount("/tmp/state/empty", "/tmp"), pods.Mount("/tmp/pv/1", "/var/lib/data")]
    plan = pods.mount_plan(mounts, stages=["/tmp/state/stage", "/run/stage"])
    assert [(m.source, m.target) for m in plan[:2]] == [
        ("/tmp/state/empty", "/run/stage/0"),
        ("/tmp/pv/1", "/run/stage/1"),
    ]
    assert [(m.source, m.target) for m in plan[2:]] == [
        ("/run/stage/0", "/tmp"),
        ("/run/stage/1", "/var/lib/data"),
    ]


def test_wrapper_script_binds_read_only_and_execs() -> None:
    script = pods.wrapper_script(
        [
            pods.Mount("/src dir", "/etc/x", read_only=True),
            pods.Mount("/h", "/etc/hosts", is_file=True),
        ],
        "store-0",
        "/",
    )
    assert "mount --bind '/src dir' /etc/x" in script
    assert "mount -o remount,bind,ro /etc/x" in script
    assert "hostname store-0" in script
    assert script.endswith('exec "$@"')


# ---------------------------------------------------------------- images


def test_listed_image_maps_onto_the_venv() -> None:
    r = images.resolve("docker.io/zonestore/zonestore:0.1.0", "/venv")
    assert r.repository == "zonestore/zonestore"
    assert r.env()["PATH"].startswith("/venv/bin:")
    assert r.argv(None, None)[0] == "zonestore"
    assert r.argv(None, ["version"]) == ["zonestore", "version"]
    assert r.argv(["python", "-m", "x"], ["--y"]) == ["python", "-m", "x", "--y"]
    assert r.image_id.startswith("zonestore/zonestore@sha256:")


def test_unknown_image_is_an_image_pull_error() -> None:
    with pytest.raises(images.ImageError, match="not in the e2e image table") as e:
        images.resolve("alpine:3.20", "/venv")
    assert e.value.reason == "ErrImagePull"


def test_busybox_is_the_hosts_shell_tools() -> None:
    r = images.resolve("busybox:1.36", "/venv")
    assert r.env()["PATH"] == images.SYSTEM_PATH
    assert r.argv(["/bin/sh", "-c", "true"], None) == ["/bin/sh", "-c", "true"]


def test_node_is_the_hosts_node_js() -> None:
    r = images.resolve("docker.io/library/node:20", "/venv")
    assert r.repository == "node"
    assert r.env()["PATH"] == images.SYSTEM_PATH
    assert r.argv(None, ["app.js"]) == ["node", "app.js"]


@pytest.mark.parametrize(
    "image",
    [
        "zonestore/zonestore",
        "zonestore/zonestore:1@sha256:ab",
        "localhost:5000/zonestore/zonestore:1",
    ],
)
def test_repository_strips_tags_digests_and_registries(image: str) -> None:
    repo = images.repository(image)
    assert repo.endswith("zonestore/zonestore")


# ---------------------------------------------------------------- IP allocator


def test_ip_allocator_is_stable_persistent_and_reuses_freed_addresses(tmp_path: Path) -> None:
    path = str(tmp_path / "ipam.json")
    a = pods.IpAllocator(path, ["10.0.0.1", "10.0.0.2"])
    assert a.allocate("u1") == "10.0.0.1"
    assert a.allocate("u1") == "10.0.0.1"
    assert a.allocate("u2") == "10.0.0.2"
    with pytest.raises(pods.ConfigError):
        a.allocate("u3")
    b = pods.IpAllocator(path, ["10.0.0.1", "10.0.0.2"])  # a restarted kubelet
    assert b.get("u2") == "10.0.0.2"
    b.release("u1")
    assert b.allocate("u3") == "10.0.0.1"


# ---------------------------------------------------------------- volumes


def _secret(**data: str) -> dict[str, bytes]:
    return volumes.decoded(
        {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}, secret=True
    )


def test_secret_volume_items_and_modes() -> None:
    vol = {
        "name": "tls",
        "secret": {
            "secretName": "s",
            "defaultMode": 0o440,
            "items": [
                {"key": "tls.crt", "path": "certs/tls.crt"},
                {"key": "k", "path": "k", "mode": 0o400},
            ],
        },
    }
    payload = volumes.source_payload(
        vol, FACTS, _no, lambda _n: _secret(**{"tls.crt": "C", "k": "K", "other": "O"}), str
    )
    assert payload == {
        "certs/tls.crt": volumes.File(b"C", 0o440),
        "k": volumes.File(b"K", 0o400),
    }


def test_missing_secret_fails_unless_optional() -> None:
    vol: dict[str, Any] = {"name": "x", "secret": {"secretName": "s"}}
    with pytest.raises(volumes.VolumeError, match='secret "s" not found'):
        volumes.source_payload(vol, FACTS, _no, _no, str)
    vol["secret"]["optional"] = True
    assert volumes.source_payload(vol, FACTS, _no, _no, str) == {}


def test_projected_service_account_volume() -> None:
    vol = {
        "name": "kube-api-access",
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }
    payload = volumes.source_payload(
        vol, FACTS, lambda _n: {"ca.crt": b"CA"}, _no, lambda sat: f"tok-{sat['expirationSeconds']}"
    )
    assert payload == {
        "token": volumes.File(b"tok-3607", 0o644),
        "ca.crt": volumes.File(b"CA", 0o644),
        "namespace": volumes.File(b"ns1", 0o644),
    }


def test_write_atomic_uses_the_data_symlink_layout_and_swaps(tmp_path: Path) -> None:
    target = str(tmp_path / "vol")
    assert volumes.write_atomic(
        target, {"a": volumes.File(b"1", 0o440), "d/b": volumes.File(b"2", 0o644)}
    )
    assert os.path.islink(os.path.join(target, "..data"))
    assert os.readlink(os.path.join(target, "a")) == "..data/a"
    assert Path(target, "d", "b").read_bytes() == b"2"
    assert os.stat(os.path.join(target, "a")).st_mode & 0o777 == 0o440
    first = os.readlink(os.path.join(target, "..data"))
    assert not volumes.write_atomic(
        target, {"a": volumes.File(b"1", 0o440), "d/b": volumes.File(b"2", 0o644)}
    )
    assert volumes.write_atomic(target, {"a": volumes.File(b"new", 0o440)})
    second = os.readlink(os.path.join(target, "..data"))
    assert second != first
    assert not os.path.exists(os.path.join(target, first))
    assert not os.path.lexists(os.path.join(target, "d"))
    assert Path(target, "a").read_bytes() == b"new"


def test_write_atomic_rejects_paths_that_escape(tmp_path: Path) -> None:
    with pytest.raises(volumes.VolumeError):
        volumes.write_atomic(str(tmp_path / "v"), {"../x": volumes.File(b"", 0o644)})


def test_pvc_path_reads_local_or_host_path() -> None:
    assert volumes.pvc_path({"spec": {"local": {"path": "/r/n/pv"}}}) == "/r/n/pv"
    assert volumes.pvc_path({"spec": {"hostPath": {"path": "/h"}}}) == "/h"
    with pytest.raises(volumes.VolumeError):
        volumes.pvc_path({"metadata": {"name": "x"}, "spec": {"nfs": {}}})


# ---------------------------------------------------------------- provisioner


PVC: dict[str, Any] = {
    "metadata": {
        "name": "data-store-0",
        "namespace": "ns1",
        "uid": "abc",
        "annotations": {provisioner.SELECTED_NODE: "z0-n1"},
    },
    "spec": {
        "storageClassName": provisioner.CLASS,
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
    },
}


def test_provisioner_creates_a_local_pv_pinned_to_the_selected_node() -> None:
    assert provisioner.wants_volume(PVC)
    pv = provisioner.persistent_volume(PVC, "/root/pv")
    assert pv["metadata"]["name"] == "pvc-abc"
    assert pv["spec"]["local"]["path"] == "/root/pv/z0-n1/pvc-abc"
    assert pv["spec"]["capacity"] == {"storage": "1Gi"}
    term = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert (term["key"], term["values"]) == ("kubernetes.io/hostname", ["z0-n1"])
    assert pv["spec"]["claimRef"]["uid"] == "abc"


def test_provisioner_ignores_unplaced_bound_or_foreign_claims() -> None:
    unplaced = {**PVC, "metadata": {**PVC["metadata"], "annotations": {}}}
    bound = {**PVC, "spec": {**PVC["spec"], "volumeName": "pv1"}}
    foreign = {**PVC, "spec": {**PVC["spec"], "storageClassName": "other"}}
    assert not any(provisioner.wants_volume(p) for p in (unplaced, bound, foreign))


def test_storage_class_is_default_and_waits_for_first_consumer() -> None:
    sc = provisioner.storage_class()
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"


def test_ip_allocator_does_not_reuse_a_released_address_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "ipam.json")
    pool = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    a = pods.IpAllocator(path, pool)
    assert a.allocate("u1") == "10.0.0.1"
    a.release("u1")
    assert a.allocate("u2") == "10.0.0.2"  # not .1 again
    b = pods.IpAllocator(path, pool)  # the cursor survives a restart
    assert b.allocate("u3") == "10.0.0.3"
    assert b.allocate("u4") == "10.0.0.1"  # wraps round to the free one


def test_ip_allocator_reads_the_first_file_format(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    path.write_text('{"u1": "10.0.0.2"}')
    a = pods.IpAllocator(str(path), ["10.0.0.1", "10.0.0.2"])
    assert a.get("u1") == "10.0.0.2"
    assert a.allocate("u2") == "10.0.0.1"


def test_the_kubelet_hands_the_harness_run_marker_on() -> None:
    from zonestore_e2e import cluster, kubelet

    assert kubelet.RUN_MARKER == cluster.RUN_MARKER


def test_run_processes_finds_a_process_carrying_the_marker_and_kill_survivors_ends_it() -> None:
    import os
    import subprocess
    import sys
    import uuid

    from zonestore_e2e import cluster

    run_id = uuid.uuid4().hex
    env = {**os.environ, cluster.RUN_MARKER: run_id}
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ours = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env=env, start_new_session=True
    )
    try:
        assert list(cluster.run_processes(run_id)) == [ours.pid]
        assert list(cluster.kill_survivors(run_id)) == [ours.pid]
        assert ours.wait(5) == -9
        assert cluster.run_processes(run_id) == {}
        assert other.poll() is None  # another run's (or nobody's) process is left alone
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()
