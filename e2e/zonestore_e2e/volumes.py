"""Volume contents and their on-disk layout, as the kubelet writes them.

Owns: turning Secret/ConfigMap/downward API/projected sources into a payload
(relative path -> bytes and mode), and `write_atomic`, the kubelet's AtomicWriter
layout, so a program watching a mounted directory sees one consistent switch:

    <dir>/..2026_01_02_03_04_05.123456789/<files>   one timestamped copy per update
    <dir>/..data -> ..2026_01_02_...                 swapped with rename(2): atomic
    <dir>/<name> -> ..data/<name>                    one link per top-level entry

Fetching the objects (and service-account tokens) is the kubelet's job; this module
does no network I/O and imports nothing from it.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any

from zonestore_e2e import pods

DATA_DIR = "..data"
DEFAULT_MODE = 0o644


@dataclasses.dataclass(frozen=True, slots=True)
class File:
    data: bytes
    mode: int


Payload = dict[str, File]


class VolumeError(ValueError):
    """The volume cannot be set up (missing object or key that is not optional)."""


def decoded(obj: Mapping[str, Any], *, secret: bool) -> dict[str, bytes]:
    """A Secret's or ConfigMap's data as bytes (Secrets are base64 on the wire)."""
    out: dict[str, bytes] = {}
    if secret:
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v)
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = str(v).encode()
    else:
        for k, v in (obj.get("data") or {}).items():
            out[k] = str(v).encode()
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v)
    return out


def _keyed(
    data: dict[str, bytes] | None,
    source: Mapping[str, Any],
    default_mode: int,
    what: str,
) -> Payload:
    """The shared Secret/ConfigMap rule: all keys, or only `items` (key, path, mode);
    a missing object or item key is an error unless the source is optional."""
    optional = bool(source.get("optional"))
    if data is None:
        if optional:
            return {}
        raise VolumeError(f"{what} not found")
    items = source.get("items")
    if not items:
        return {k: File(v, default_mode) for k, v in data.items()}
    out: Payload = {}
    for item in items:
        key = item["key"]
        if key not in data:
            if optional:
                continue
            raise VolumeError(f"{what}: key {key!r} not found")
        out[item.get("path") or key] = File(data[key], int(item.get("mode", default_mode)))
    return out


def downward_payload(
    items: list[Mapping[str, Any]],
    facts: pods.PodFacts,
    default_mode: int,
    container_of: Callable[[str], Mapping[str, Any]] | None = None,
    node_allocatable: Mapping[str, str] | None = None,
) -> Payload:
    out: Payload = {}
    for item in items:
        mode = int(item.get("mode", default_mode))
        if "fieldRef" in item:
            value = pods.field_ref(facts, item["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in item:
            ref = item["resourceFieldRef"]
            container = container_of(ref.get("containerName", "")) if container_of else {}
            value = pods.resource_field_ref(container, ref, node_allocatable or {})
        else:
            raise VolumeError(f"downwardAPI item {item.get('path')}: no fieldRef")
        out[item["path"]] = File(value.encode(), mode)
    return out


# Fetchers the kubelet provides; each returns None for a missing object.
Fetch = Callable[[str], dict[str, bytes] | None]
TokenFetch = Callable[[Mapping[str, Any]], str]


def projected_payload(
    source: Mapping[str, Any],
    facts: pods.PodFacts,
    configmaps: Fetch,
    secrets: Fetch,
    token: TokenFetch,
) -> Payload:
    """A `projected` volume: its sources merged into one directory."""
    mode = int(source.get("defaultMode", DEFAULT_MODE))
    out: Payload = {}
    for s in source.get("sources") or []:
        if "secret" in s:
            ref = s["secret"]
            out.update(_keyed(secrets(ref["name"]), ref, mode, f'secret "{ref["name"]}"'))
        elif "configMap" in s:
            ref = s["configMap"]
            out.update(_keyed(configmaps(ref["name"]), ref, mode, f'configmap "{ref["name"]}"'))
        elif "downwardAPI" in s:
            out.update(downward_payload(s["downwardAPI"].get("items") or [], facts, mode))
        elif "serviceAccountToken" in s:
            sat = s["serviceAccountToken"]
            out[sat["path"]] = File(token(sat).encode(), mode)
        else:
            raise VolumeError(f"projected source {sorted(s)} is not supported")
    return out


def source_payload(
    volume: Mapping[str, Any],
    facts: pods.PodFacts,
    configmaps: Fetch,
    secrets: Fetch,
    token: TokenFetch,
) -> Payload | None:
    """The payload of a file-backed volume, or None for volumes that are directories."""
    if "secret" in volume:
        src = volume["secret"]
        mode = int(src.get("defaultMode", DEFAULT_MODE))
        name = src.get("secretName", "")
        return _keyed(secrets(name), src, mode, f'secret "{name}"')
    if "configMap" in volume:
        src = volume["configMap"]
        mode = int(src.get("defaultMode", DEFAULT_MODE))
        name = src.get("name", "")
        return _keyed(configmaps(name), src, mode, f'configmap "{name}"')
    if "downwardAPI" in volume:
        src = volume["downwardAPI"]
        mode = int(src.get("defaultMode", DEFAULT_MODE))
        return downward_payload(src.get("items") or [], facts, mode)
    if "projected" in volume:
        return projected_payload(volume["projected"], facts, configmaps, secrets, token)
    return None


def current(target: str) -> Payload:
    """What `target` holds now (through ..data), for change detection."""
    data = os.path.join(target, DATA_DIR)
    out: Payload = {}
    if not os.path.isdir(data):
        return out
    for root, _dirs, files in os.walk(data):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, data)] = File(fh.read(), os.stat(path).st_mode & 0o7777)
    return out


def write_atomic(target: str, payload: Payload, now: float | None = None) -> bool:
    """Make `target` hold exactly `payload`, switching atomically; returns False when
    it already did (no new timestamped directory, no event for watchers)."""
    os.makedirs(target, exist_ok=True)
    if os.path.isdir(os.path.join(target, DATA_DIR)) and current(target) == payload:
        return False
    for rel in payload:
        if rel.startswith("..") or os.path.isabs(rel) or ".." in rel.split("/"):
            raise VolumeError(f"invalid volume file path {rel!r}")
    t = time.time() if now is None else now
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S", time.gmtime(t)) + f".{time.time_ns() % 10**9:09d}"
    new = os.path.join(target, stamp)
    os.makedirs(new)
    for rel, f in payload.items():
        path = os.path.join(new, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(f.data)
        os.chmod(path, f.mode)
    os.chmod(new, 0o755)
    link = os.path.join(target, DATA_DIR)
    old = os.readlink(link) if os.path.islink(link) else None
    tmp_link = os.path.join(target, "..data_tmp")
    if os.path.lexists(tmp_link):
        os.unlink(tmp_link)
    os.symlink(stamp, tmp_link)
    os.replace(tmp_link, link)
    tops = {rel.split("/", 1)[0] for rel in payload}
    for top in tops:
        user = os.path.join(target, top)
        if not os.path.lexists(user):
            os.symlink(os.path.join(DATA_DIR, top), user)
    for entry in os.listdir(target):
        if entry.startswith(".."):
            continue
        if entry not in tops and os.path.islink(os.path.join(target, entry)):
            os.unlink(os.path.join(target, entry))
    if old and old != stamp:
        shutil.rmtree(os.path.join(target, old), ignore_errors=True)
    return True


def pvc_path(pv: Mapping[str, Any]) -> str:
    """The host directory behind a bound PersistentVolume (local or hostPath)."""
    spec = pv.get("spec", {})
    for kind in ("local", "hostPath"):
        if kind in spec and spec[kind].get("path"):
            return str(spec[kind]["path"])
    raise VolumeError(
        f'persistentvolume "{pv.get("metadata", {}).get("name")}" is neither local nor hostPath'
    )
