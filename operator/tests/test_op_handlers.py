"""The kopf wiring of handlers.py, run for real (kopf.testing.KopfRunner, in its own thread
and event loop) against a fake API server (kmock, see kubefake.py) on loopback: a created
Datastore gets its objects by server-side apply, a status and Events; the timer runs
passes; pod events run passes; a deleted Datastore is released and left alone; a bad
spec is reported in a condition while the operator keeps running.

Each test registers the handlers on a registry of its own, with the timer interval the
test needs. Waiting is polling the fake server's state under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
from kopf.testing import KopfRunner
from kubefake import FakeApiServer, declare, kubeconfig

from zonestore_operator import handlers

pytestmark = [pytest.mark.kmock(cls=FakeApiServer), pytest.mark.timeout(30)]

NS = "ns"
DATASTORES = kmock.resource("zonestore.io/v1alpha1/datastores")
PODS = kmock.resource("v1/pods")
STATEFULSETS = kmock.resource("apps/v1/statefulsets")
EVENTS = kmock.resource("v1/events")
DEADLINE_S = 15.0  # generous: a loaded 2-core machine runs a pass in about a second


def _datastore(name: str = "ds", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "zonestore.io/v1alpha1",
        "kind": "Datastore",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"zones": ["a", "b", "c"], "replicasPerZone": 1, "voters": 3, **spec},
    }


async def _until(check: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def fake(kmock: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeApiServer:
    declare(kmock)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", str(kmock.url))))
    monkeypatch.setenv("ZONESTORE_OPERATOR_METRICS_PORT", "0")
    return kmock


@contextlib.asynccontextmanager
async def _operator(interval: float = 60.0) -> AsyncIterator[KopfRunner]:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, interval=interval, initial_delay=interval)
    kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)  # as the default registry has
    runner = KopfRunner(["run", "--standalone", "--all-namespaces"], registry=registry, timeout=10)
    runner.__enter__()
    try:
        yield runner
    finally:
        # The fake server runs on this loop: let it serve while the operator stops.
        await asyncio.to_thread(runner.__exit__, None, None, None)
    assert runner.exit_code == 0, runner.output


async def _create(fake: FakeApiServer, body: dict[str, Any]) -> None:
    async with fake.post(f"/apis/zonestore.io/v1alpha1/namespaces/{NS}/datastores", json=body) as r:
        assert r.status < 300, await r.text()


def _obj(fake: FakeApiServer, resource: kmock.resource, name: str) -> Any:
    key = (resource, NS, name)
    return fake.objects[key] if key in fake.objects and not fake.objects[key].deleted else None


def _writes(fake: FakeApiServer, path_tail: str = "") -> list[kmock.Request]:
    return [
        r
        for r in fake
        if r.method.value in ("PATCH", "POST", "DELETE") and r.url.path.endswith(path_tail)
    ]


def _status_patches(fake: FakeApiServer) -> int:
    return len(_writes(fake, "/datastores/ds/status"))


def _handled(fake: FakeApiServer) -> bool:
    """kopf stored its diff-base: the create/update handler (one pass) returned."""
    ds = _obj(fake, DATASTORES, "ds")
    annotations = ds.get("metadata", {}).get("annotations", {}) if ds else {}
    return "zonestore.io/last-handled-configuration" in annotations


def _condition(fake: FakeApiServer, kind: str) -> dict[str, Any] | None:
    ds = _obj(fake, DATASTORES, "ds")
    conditions = (ds.get("status") or {}).get("conditions", []) if ds else []
    return next((c for c in conditions if c["type"] == kind), None)


def _event_reasons(fake: FakeApiServer) -> list[str]:
    return [r.data["reason"] for r in _writes(fake, f"/namespaces/{NS}/events")]


def _pod(name: str, zone: str, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {
                "app.kubernetes.io/name": "zonestore",
                "app.kubernetes.io/instance": "ds",
                "app.kubernetes.io/component": "node",
                "app.kubernetes.io/managed-by": "zonestore-operator",
                "zonestore.io/zone": zone,
            },
            **metadata,
        },
        "spec": {"nodeName": f"node-{zone}"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


async def test_a_created_datastore_gets_its_objects_by_apply_a_status_and_events(
    fake: FakeApiServer,
) -> None:
    await _create(fake, _datastore())
    async with _operator():
        await _until(lambda: _handled(fake), "the create handler to finish")

    ds = _obj(fake, DATASTORES, "ds")
    assert "zonestore.io/finalizer" in ds["metadata"]["finalizers"]  # for the timer
    for zone in "abc":
        (apply,) = _writes(fake, f"/statefulsets/ds-{zone}")
        assert apply.headers["Content-Type"] == "application/apply-patch+yaml"
        assert dict(apply.params) == {"fieldManager": "zonestore-operator", "force": "true"}
        sts = _obj(fake, STATEFULSETS, f"ds-{zone}")
        assert sts["spec"]["replicas"] == 1
        (owner,) = sts["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "Datastore",
            "ds",
            ds["metadata"]["uid"],
        )
    status = ds["status"]
    assert (status["observedGeneration"], status["phase"]) == (1, "Pending")
    assert _condition(fake, "Progressing")["reason"] == "Scaling"  # no StatefulSet seen yet
    assert [z["name"] for z in status["zones"]] == ["a", "b", "c"]
    events = [r.data for r in _writes(fake, f"/namespaces/{NS}/events")]
    assert {e["reason"] for e in events} >= {"CAIssued", "CertificateIssued"}
    assert all(e["involvedObject"]["uid"] == ds["metadata"]["uid"] for e in events)


async def test_the_timer_runs_a_pass_every_interval(fake: FakeApiServer) -> None:
    await _create(fake, _datastore())
    async with _operator(interval=0.2):
        await _until(lambda: _handled(fake), "the create handler to finish")
        after_create = _status_patches(fake)
        await _until(lambda: _status_patches(fake) >= after_create + 2, "two timer passes")


async def test_a_pod_event_runs_a_pass(fake: FakeApiServer) -> None:
    await _create(fake, _datastore())
    async with _operator(interval=60):  # no timer tick within the test
        await _until(lambda: _handled(fake), "the create handler to finish")
        before = _status_patches(fake)
        async with fake.post(f"/api/v1/namespaces/{NS}/pods", json=_pod("ds-a-0", "a")) as r:
            assert r.status < 300

        def counted() -> bool:
            ds = _obj(fake, DATASTORES, "ds")
            zones = {z["name"]: z for z in ds["status"]["zones"]}
            return _status_patches(fake) > before and zones["a"]["replicas"] == 1

        await _until(counted, "a pass that sees the new pod")


async def test_a_deleted_datastore_is_released_and_no_pass_writes_for_it(
    fake: FakeApiServer,
) -> None:
    await _create(fake, _datastore())
    async with _operator(interval=0.2):
        await _until(lambda: _handled(fake), "the create handler to finish")
        await _until(lambda: _status_patches(fake) >= 2, "a timer pass")
        async with fake.delete(f"/apis/zonestore.io/v1alpha1/namespaces/{NS}/datastores/ds") as r:
            assert r.status < 300
        await _until(lambda: _obj(fake, DATASTORES, "ds") is None, "kopf to drop its finalizer")
        writes = len(_writes(fake))
        # A pod event for the deleted Datastore finds no body and does nothing.
        async with fake.post(f"/api/v1/namespaces/{NS}/pods", json=_pod("ds-a-0", "a")) as r:
            assert r.status < 300
        await asyncio.sleep(1.0)  # five timer intervals: a timer still running would write
        assert [r.url.path for r in _writes(fake)[writes:]] == [f"/api/v1/namespaces/{NS}/pods"]


async def test_a_bad_spec_is_reported_in_a_condition_and_the_operator_keeps_running(
    fake: FakeApiServer,
) -> None:
    await _create(fake, _datastore(voters=4))
    async with _operator():
        await _until(lambda: _handled(fake), "the create handler to finish")
        ready = _condition(fake, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert "spec.voters must be odd" in ready["message"]
        assert _event_reasons(fake) == ["InvalidSpec"]
        assert _writes(fake, "/statefulsets/ds-a") == []
        # Fixing the spec is an update: the next pass reconciles.
        fix = {"spec": {"voters": 3}}
        path = f"/apis/zonestore.io/v1alpha1/namespaces/{NS}/datastores/ds"
        async with fake.patch(
            path, json=fix, headers={"Content-Type": "application/merge-patch+json"}
        ) as r:
            assert r.status < 300
        await _until(lambda: _writes(fake, "/statefulsets/ds-a"), "the StatefulSets")
        await _until(
            lambda: _condition(fake, "Ready")["reason"] != "InvalidSpec", "the condition to clear"
        )


async def test_force_delete_sends_grace_zero_with_the_uid_and_tolerates_a_replaced_pod(
    fake: FakeApiServer,
) -> None:
    from kubernetes.aio import client

    from zonestore_operator.reconcile.kube import Kube

    async with fake.post(f"/api/v1/namespaces/{NS}/pods", json=_pod("ds-c-0", "c")) as r:
        uid = (await r.json())["metadata"]["uid"]
    # Terminating, and no kubelet will ever confirm it.
    fake.objects[PODS, NS, "ds-c-0"].patch(
        {"metadata": {"deletionTimestamp": "2030-01-01T12:00:00Z"}}
    )
    kube = Kube(client.ApiClient(client.Configuration(host=str(fake.url).rstrip("/"))))
    try:
        assert await kube.force_delete_pod(NS, "ds-c-0", "some-older-uid") is False  # 409
        assert _obj(fake, PODS, "ds-c-0") is not None
        assert await kube.force_delete_pod(NS, "ds-c-0", uid) is True
        assert _obj(fake, PODS, "ds-c-0") is None
        assert await kube.force_delete_pod(NS, "ds-c-0", uid) is False  # 404: gone already
    finally:
        await kube.close()
    deletes = [r for r in fake if r.method.value == "DELETE"]
    assert [r.url.path for r in deletes] == [f"/api/v1/namespaces/{NS}/pods/ds-c-0"] * 3
    assert deletes[1].data == {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": uid},
    }
