"""A fake Kubernetes API server for the handler tests: kmock's KubernetesEmulator (an
in-memory object store served over HTTP, with lists and watch streams) taught the few
things a real API server does that the operator relies on:

- server-side apply (PATCH with `application/apply-patch+yaml`) creates a missing object;
- POST fills `metadata.name` from `generateName` (Events), and `uid`, `generation`,
  `creationTimestamp`; every write bumps `resourceVersion`;
- DELETE honours `preconditions.uid` (409 on a mismatch) and `gracePeriodSeconds: 0`
  (the object goes at once, even when it was already Terminating).

Everything else is kmock's: merge patches, finalizers holding a deletion, discovery of
the resources declared in `RESOURCES`. The server plays no controller: nothing creates
pods for a StatefulSet; tests put the pods and nodes they need in place.
"""

from __future__ import annotations

import datetime
import itertools
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kmock
import yaml

VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}
RESOURCES: dict[str, kmock.ResourceInfo] = {
    "zonestore.io/v1alpha1/datastores": kmock.ResourceInfo(
        kind="Datastore", namespaced=True, verbs=VERBS, subresources={"status", "scale"}
    ),
    # kopf watches these two to notice new resources and namespaces.
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs=VERBS
    ),
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs=VERBS),
    "v1/pods": kmock.ResourceInfo(kind="Pod", namespaced=True, verbs=VERBS),
    "v1/nodes": kmock.ResourceInfo(kind="Node", namespaced=False, verbs=VERBS),
    "v1/secrets": kmock.ResourceInfo(kind="Secret", namespaced=True, verbs=VERBS),
    "v1/configmaps": kmock.ResourceInfo(kind="ConfigMap", namespaced=True, verbs=VERBS),
    "v1/services": kmock.ResourceInfo(kind="Service", namespaced=True, verbs=VERBS),
    "v1/serviceaccounts": kmock.ResourceInfo(kind="ServiceAccount", namespaced=True, verbs=VERBS),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True, verbs=VERBS),
    "apps/v1/statefulsets": kmock.ResourceInfo(kind="StatefulSet", namespaced=True, verbs=VERBS),
    "policy/v1/poddisruptionbudgets": kmock.ResourceInfo(
        kind="PodDisruptionBudget", namespaced=True, verbs=VERBS
    ),
    "networking.k8s.io/v1/networkpolicies": kmock.ResourceInfo(
        kind="NetworkPolicy", namespaced=True, verbs=VERBS
    ),
}


def _header(request: kmock.Request, name: str) -> str:
    for key, value in request.headers.items():
        if key.lower() == name.lower():
            return value
    return ""


class FakeApiServer(kmock.KubernetesEmulator):
    """KubernetesEmulator plus the API-server behaviour listed in the module docstring."""

    _versions = itertools.count(1)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # (namespace, name) of every object deleted with gracePeriodSeconds=0.
        self.forced: list[tuple[str, str]] = []

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and isinstance(request.data, dict):
            await self._before(request, request.data)
        return await super()._handle(request)

    async def _before(self, request: kmock.Request, data: dict[str, Any]) -> None:
        assert request.resource is not None
        key = (request.resource, request.namespace, request.name)
        if request.action == kmock.action.DELETE:
            await self._delete(request, data, key)
            return
        md = data.setdefault("metadata", {})
        if request.action == kmock.action.CREATE:
            if not md.get("name") and md.get("generateName"):
                md["name"] = md["generateName"] + uuid.uuid4().hex[:5]
            md.setdefault("uid", str(uuid.uuid4()))
            md.setdefault("generation", 1)
            md.setdefault("creationTimestamp", _now())
            md["resourceVersion"] = str(next(self._versions))
        elif request.action == kmock.action.UPDATE:
            md["resourceVersion"] = str(next(self._versions))
            apply = _header(request, "Content-Type").startswith("application/apply-patch")
            if apply and (key not in self.objects or self.objects[key].deleted):
                async with self._lock:
                    created = dict(data, metadata=dict(md, uid=str(uuid.uuid4())))
                    self.objects[key] = created
                    await self._buses[request.resource].put({"type": "ADDED", "object": created})

    async def _delete(self, request: kmock.Request, options: Mapping[str, Any], key: Any) -> None:
        if key not in self.objects or self.objects[key].deleted:
            return  # kmock answers 404
        current = self.objects[key].raw
        want_uid = (options.get("preconditions") or {}).get("uid")
        if want_uid and want_uid != current.get("metadata", {}).get("uid"):
            raise kmock.KubernetesError(
                status=409, reason="Conflict", message="Precondition failed: UID in precondition"
            )
        if options.get("gracePeriodSeconds") == 0:
            # Forced: the object goes now, Terminating or not (kmock would leave a
            # Terminating object alone, waiting for a kubelet that never comes).
            async with self._lock:
                self.objects[key].patch({"metadata": {"deletionTimestamp": None}})
            self.forced.append((key[1], key[2]))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def declare(server: kmock.KubernetesEmulator) -> None:
    for name, info in RESOURCES.items():
        server.resources[name] = info


def kubeconfig(path: Path, url: str) -> Path:
    """A kubeconfig pointing at the fake server (kopf's login and the operator's own
    client both read KUBECONFIG)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "fake", "user": {"token": "fake-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(config))
    return path
