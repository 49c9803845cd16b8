"""The e2e local-volume provisioner: node-local directories as PersistentVolumes.

    python -m zonestore_e2e.provisioner --kubeconfig PATH --root DIR

Owns the StorageClass `zonestore-e2e-local` (the default class, WaitForFirstConsumer,
reclaim Delete). The scheduler picks a node for a pod with an unbound claim and writes it
into the claim's `volume.kubernetes.io/selected-node` annotation; this program then
creates the directory DIR/<node>/<pv-name> and a `local` PV pinned to that node
(nodeAffinity kubernetes.io/hostname) and pre-bound to the claim (claimRef), and the PV
controller completes the binding. The directory lives as long as the PV: data survives
pod restarts and re-creation on the same node. A Released PV of this class with reclaim
policy Delete loses its directory, then the PV object.

Runs with an administrator's kubeconfig (it acts for the cluster, not for a node).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
from collections.abc import Mapping
from typing import Any

import aiohttp

from zonestore_e2e.kubelet_api import Api, ApiError

log = logging.getLogger("provisioner")

CLASS = "zonestore-e2e-local"
PROVISIONER = "zonestore.io/e2e-local"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"


def storage_class() -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
    }


def pv_name(pvc: Mapping[str, Any]) -> str:
    return f"pvc-{pvc['metadata']['uid']}"


def wants_volume(pvc: Mapping[str, Any]) -> bool:
    """A claim of our class, placed by the scheduler, not bound yet."""
    meta, spec = pvc.get("metadata", {}), pvc.get("spec", {})
    return (
        spec.get("storageClassName") == CLASS
        and bool((meta.get("annotations") or {}).get(SELECTED_NODE))
        and not spec.get("volumeName")
        and not meta.get("deletionTimestamp")
    )


def persistent_volume(pvc: Mapping[str, Any], root: str) -> dict[str, Any]:
    meta, spec = pvc["metadata"], pvc["spec"]
    node = meta["annotations"][SELECTED_NODE]
    name = pv_name(pvc)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": CLASS,
            "local": {"path": os.path.join(root, node, name)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        }
                    ]
                }
            },
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }


def releasable(pv: Mapping[str, Any]) -> bool:
    meta, spec = pv.get("metadata", {}), pv.get("spec", {})
    return (
        (meta.get("annotations") or {}).get(PROVISIONED_BY) == PROVISIONER
        and pv.get("status", {}).get("phase") == "Released"
        and spec.get("persistentVolumeReclaimPolicy") == "Delete"
    )


def inside(path: str, root: str) -> bool:
    """Only directories this provisioner made are ever removed."""
    return os.path.realpath(path).startswith(os.path.realpath(root) + os.sep)


class Provisioner:
    def __init__(self, api: Api, root: str) -> None:
        self.api = api
        self.root = root

    async def ensure_class(self) -> None:
        try:
            await self.api.create("/apis/storage.k8s.io/v1/storageclasses", storage_class())
            log.info("provisioner.class_created name=%s", CLASS)
        except ApiError as e:
            if e.status != 409:
                raise

    async def provision(self, pvc: Mapping[str, Any]) -> None:
        pv = persistent_volume(pvc, self.root)
        path = pv["spec"]["local"]["path"]
        os.makedirs(path, exist_ok=True)
        try:
            await self.api.create("/api/v1/persistentvolumes", pv)
            log.info(
                "provisioner.created pv=%s claim=%s/%s path=%s",
                pv["metadata"]["name"],
                pvc["metadata"]["namespace"],
                pvc["metadata"]["name"],
                path,
            )
        except ApiError as e:
            if e.status != 409:
                raise

    async def release(self, pv: Mapping[str, Any]) -> None:
        path = pv["spec"].get("local", {}).get("path", "")
        if path and inside(path, self.root):
            await asyncio.to_thread(shutil.rmtree, path, True)
        name = pv["metadata"]["name"]
        try:
            await self.api.delete(f"/api/v1/persistentvolumes/{name}")
            log.info("provisioner.deleted pv=%s path=%s", name, path)
        except ApiError as e:
            if e.status != 404:
                raise

    async def watch_claims(self) -> None:
        async for etype, obj in self.api.watch("/api/v1/persistentvolumeclaims"):
            items = obj.get("items") or [] if etype == "SYNC" else [obj]
            if etype == "DELETED":
                continue
            for pvc in items:
                if wants_volume(pvc):
                    await self._guard(self.provision(pvc))

    async def watch_volumes(self) -> None:
        async for etype, obj in self.api.watch("/api/v1/persistentvolumes"):
            items = obj.get("items") or [] if etype == "SYNC" else [obj]
            if etype == "DELETED":
                continue
            for pv in items:
                if releasable(pv):
                    await self._guard(self.release(pv))

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as e:
            log.warning("provisioner.failed error=%s", e)

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            try:
                await self.ensure_class()
                break
            except (ApiError, aiohttp.ClientError, OSError) as e:
                log.warning("provisioner.class_failed error=%s", e)
                await asyncio.sleep(1.0)
        tasks = [
            asyncio.create_task(self._forever(self.watch_claims)),
            asyncio.create_task(self._forever(self.watch_volumes)),
        ]
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _forever(self, fn: Any) -> None:
        while True:
            try:
                await fn()
            except (ApiError, aiohttp.ClientError, OSError) as e:
                log.warning("provisioner.watch_failed error=%s", e)
                await asyncio.sleep(1.0)


async def amain(args: argparse.Namespace) -> None:
    root = args.root
    api = Api(args.kubeconfig, os.path.join(root, ".auth"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Provisioner(api, root).run(stop)
    finally:
        await api.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m zonestore_e2e.provisioner")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--root", required=True)
    args = p.parse_args(argv)
    args.root = os.path.abspath(args.root)
    os.makedirs(args.root, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s provisioner %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
