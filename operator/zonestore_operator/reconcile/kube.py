"""The one module that talks to the Kubernetes API, through the official `kubernetes`
package's asyncio client (`kubernetes.aio`): plain JSON dicts in and out, no generated
model classes. Writes are server-side apply with field manager `zonestore-operator`,
so each pass sends the whole desired object and the API server keeps only the
difference; pods get JSON merge patches of their role label.

`Kube` is the gateway `observe` and `apply` use; tests pass a fake with the same methods.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import API_VERSION, KIND, PLURAL
from zonestore_operator.model.status import format_time
from zonestore_operator.resources.meta import MANAGER

_PLURALS = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "StatefulSet": "statefulsets",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Pod": "pods",
    "Secret": "secrets",
    "NetworkPolicy": "networkpolicies",
    "Certificate": "certificates",  # cert-manager.io
    "PodMonitor": "podmonitors",  # monitoring.coreos.com
    KIND: PLURAL,
    "DatastoreBackup": "datastorebackups",
    "ScheduledDatastoreBackup": "scheduleddatastorebackups",
}


class KubeError(RuntimeError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class KubeGateway(Protocol):
    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    async def list_nodes(self) -> list[dict[str, Any]]: ...
    async def list_statefulsets(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    async def get_datastore(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def apply(self, obj: Mapping[str, Any]) -> None: ...
    async def create(self, obj: Mapping[str, Any]) -> bool: ...
    async def set_pod_labels(
        self, namespace: str, pod: str, labels: Mapping[str, str | None]
    ) -> None: ...
    async def delete_pod(self, namespace: str, pod: str) -> None: ...
    async def force_delete_pod(self, namespace: str, pod: str, uid: str) -> bool: ...
    async def patch_status(self, ref: DatastoreRef, status: Mapping[str, Any]) -> None: ...
    async def post_event(
        self, ref: DatastoreRef, type_: str, reason: str, message: str
    ) -> None: ...


def object_path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    tail = f"/{name}" if name else ""
    return f"{base}{ns}/{_PLURALS[kind]}{tail}"


class Kube:
    """KubeGateway over `kubernetes.aio`. Create with `await Kube.connect()`."""

    def __init__(self, api: Any) -> None:
        self._api = api

    @classmethod
    async def connect(cls) -> Kube:
        from kubernetes.aio import client, config

        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            # KUBECONFIG as it is now: the client's own default froze it at import time.
            await config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.environ.get("KUBECONFIG")
            )
        return cls(client.ApiClient())

    async def close(self) -> None:
        await self._api.close()

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> Any:
        request = await self._api.param_serialize(
            method,
            path,
            query_params=list(query),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = await self._api.call_api(*request)
        data = await response.read()
        if not 200 <= response.status < 300:
            text = data.decode(errors="replace")[:500] if data else ""
            raise KubeError(f"{method} {path} answered {response.status}: {text}", response.status)
        return json.loads(data) if data else None

    async def _list(self, path: str, selector: str | None = None) -> list[dict[str, Any]]:
        query = [("labelSelector", selector)] if selector else []
        result = await self._request("GET", path, query=query)
        return list(result.get("items", [])) if isinstance(result, dict) else []

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return await self._list(object_path("v1", "Pod", namespace), selector)

    async def list_nodes(self) -> list[dict[str, Any]]:
        return await self._list("/api/v1/nodes")

    async def list_statefulsets(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return await self._list(object_path("apps/v1", "StatefulSet", namespace), selector)

    async def get_datastore(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result = await self._request("GET", object_path(API_VERSION, KIND, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result if isinstance(result, dict) else None

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """None only when it does not exist; any other failure raises."""
        try:
            result = await self._request("GET", object_path("v1", "Secret", namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result if isinstance(result, dict) else None

    async def create(self, obj: Mapping[str, Any]) -> bool:
        """POST `obj`; False when it already exists (409), never overwriting it."""
        md = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], md.get("namespace"))
        try:
            await self._request("POST", path, body=dict(obj), query=[("fieldManager", MANAGER)])
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def apply(self, obj: Mapping[str, Any]) -> None:
        md = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], md.get("namespace"), md["name"])
        await self._request(
            "PATCH",
            path,
            body=dict(obj),
            query=[("fieldManager", MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    async def set_pod_labels(
        self, namespace: str, pod: str, labels: Mapping[str, str | None]
    ) -> None:
        try:
            await self._request(
                "PATCH",
                object_path("v1", "Pod", namespace, pod),
                body={"metadata": {"labels": dict(labels)}},
                content_type="application/merge-patch+json",
            )
        except KubeError as exc:
            if exc.status != 404:  # a pod that vanished needs no label
                raise

    async def delete_pod(self, namespace: str, pod: str) -> None:
        try:
            await self._request("DELETE", object_path("v1", "Pod", namespace, pod))
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def force_delete_pod(self, namespace: str, pod: str, uid: str) -> bool:
        """DELETE with gracePeriodSeconds=0 (the API server removes the pod without the
        kubelet's confirmation), only if the pod is still the incarnation `uid`. False
        when there was nothing to do: gone already (404) or replaced (409)."""
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        try:
            await self._request("DELETE", object_path("v1", "Pod", namespace, pod), body=options)
        except KubeError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def patch_status(self, ref: DatastoreRef, status: Mapping[str, Any]) -> None:
        await self._request(
            "PATCH",
            object_path(API_VERSION, KIND, ref.namespace, ref.name) + "/status",
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    # Objects of any kind in _PLURALS (the backup handlers, zonestore_operator.backups).

    async def get_object(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
        """The object, or None when it does not exist."""
        try:
            return await self._request("GET", object_path(api_version, kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list_objects(
        self, api_version: str, kind: str, namespace: str, selector: str | None = None
    ) -> list[dict[str, Any]]:
        return await self._list(object_path(api_version, kind, namespace), selector)

    async def delete_object(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            await self._request("DELETE", object_path(api_version, kind, namespace, name))
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def patch_status_of(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        await self._request(
            "PATCH",
            object_path(api_version, kind, namespace, name) + "/status",
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    async def post_event(self, ref: DatastoreRef, type_: str, reason: str, message: str) -> None:
        involved = {"apiVersion": API_VERSION, "kind": KIND, "name": ref.name, "uid": ref.uid}
        await self.post_event_for(ref.namespace, involved, type_, reason, message)

    async def post_event_for(
        self,
        namespace: str,
        involved: Mapping[str, str],
        type_: str,
        reason: str,
        message: str,
    ) -> None:
        """An Event about `involved` ({apiVersion, kind, name, uid}) in `namespace`."""
        now = format_time(datetime.now(UTC))
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
            "involvedObject": {**involved, "namespace": namespace},
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": MANAGER},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": MANAGER,
        }
        await self._request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
