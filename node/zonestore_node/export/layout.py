"""Where a managed export keeps what: folder and file names, and the two metadata files.

    <name>/<name>.overall_export_metadata        LevelDB log: b"3", OverallExportMetadata
    <name>/<ns>/<kinds>/<ns>_<kinds>.export_metadata    Backup (a bare message)
    <name>/<ns>/<kinds>/output-0, output-1, ...          LevelDB logs of EntityProto

    <ns>     all_namespaces | default_namespace | namespace_<N>
    <kinds>  all_kinds | kind_<K>

One folder per entity set the export was asked for (Google's exporter and the Firestore
emulator name them this way: no filter gives all_namespaces/all_kinds; `--kinds A,B`
gives all_namespaces/kind_A and .../kind_B; `--namespaces` gives a namespace_ folder per
namespace). Paths inside the metadata are relative to the file that names them; a full
URL (gs://...) is read as its last segments, so an export copied out of a bucket imports
from wherever it now lives. Imports nothing of zonestore beyond export/.
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass
from typing import Any

from zonestore_node.export import onestore as o
from zonestore_node.export import records

OVERALL_SUFFIX = ".overall_export_metadata"
METADATA_SUFFIX = ".export_metadata"
DEFAULT_NAMESPACE_NAMES = ("", "(default)")


class BadExport(ValueError):
    """Metadata that does not describe an export."""


@dataclass(frozen=True, slots=True)
class EntitySet:
    """What one folder holds: one namespace or all (namespace None), one kind or all."""

    namespace: str | None = None
    kind: str | None = None

    @property
    def folder(self) -> str:
        if self.namespace is None:
            ns = "all_namespaces"
        elif self.namespace == "":
            ns = "default_namespace"
        else:
            ns = f"namespace_{self.namespace}"
        kinds = "all_kinds" if self.kind is None else f"kind_{self.kind}"
        return f"{ns}/{kinds}"

    @property
    def metadata_key(self) -> str:
        ns, kinds = self.folder.split("/")
        return f"{self.folder}/{ns}_{kinds}{METADATA_SUFFIX}"

    def holds(self, namespace: str, kind: str) -> bool:
        return (self.namespace is None or self.namespace == namespace) and (
            self.kind is None or self.kind == kind
        )

    def spec(self, spec: Any) -> None:
        if self.kind is None:
            spec.kind_type = o.KIND_ALL
        else:
            spec.kind_type = o.KIND_ONE
            spec.kind = self.kind
        if self.namespace is None:
            spec.namespace_type = o.NAMESPACE_ALL
        elif self.namespace == "":
            spec.namespace_type = o.NAMESPACE_DEFAULT
        else:
            spec.namespace_type = o.NAMESPACE_ONE
            spec.namespace = self.namespace

    @staticmethod
    def from_spec(s: Any) -> EntitySet:
        kind = s.kind if s.kind_type == o.KIND_ONE else None
        ns_type = s.namespace_type
        if ns_type == o.NAMESPACE_DEFAULT:
            namespace: str | None = ""
        elif ns_type == o.NAMESPACE_ONE:
            namespace = s.namespace
        else:
            namespace = None
        return EntitySet(namespace, kind)


def entity_sets(namespaces: list[str] | None, kinds: list[str] | None) -> list[EntitySet]:
    """The folders an export with these filters writes (None: no filter)."""
    ns_list: list[str | None] = [None] if namespaces is None else list(namespaces)
    kind_list: list[str | None] = [None] if kinds is None else list(kinds)
    return [EntitySet(ns, kind) for ns in ns_list for kind in kind_list]


def normalize_namespace(name: str) -> str:
    return "" if name in DEFAULT_NAMESPACE_NAMES else name


@dataclass(frozen=True, slots=True)
class Pointer:
    """One entry of the overall metadata: an entity set and its export_metadata file."""

    entity_set: EntitySet
    metadata_key: str  # relative to the overall metadata's folder
    num_entities: int
    num_bytes: int


def relative(path: str, segments: int) -> str:
    """A path from the metadata, made relative: a URL keeps its last `segments` parts."""
    if "://" in path or path.startswith("/"):
        parts = [p for p in path.split("/") if p]
        return "/".join(parts[-segments:])
    return posixpath.normpath(path)


def encode_overall(pointers: list[Pointer]) -> bytes:
    message = o.OverallExportMetadata()
    for pointer in pointers:
        entry = message.export_pointers.add()
        pointer.entity_set.spec(entry.entity_set_spec)
        entry.export_metadata_file = pointer.metadata_key
        entry.num_entities = pointer.num_entities
        entry.num_bytes = pointer.num_bytes
    out = io.BytesIO()
    writer = records.Writer(out)
    writer.write(o.OVERALL_METADATA_VERSION)
    writer.write(message.SerializeToString())
    return out.getvalue()


def decode_overall(data: bytes, name: str) -> list[Pointer]:
    try:
        found = [record for _, record in records.read_records(io.BytesIO(data))]
    except records.CorruptRecord as exc:
        raise BadExport(f"{name}: {exc}") from None
    if len(found) != 2 or found[0] != o.OVERALL_METADATA_VERSION:
        raise BadExport(
            f"{name}: not an overall export metadata file (expected the version record "
            f"{o.OVERALL_METADATA_VERSION!r} and one message, found {len(found)} records)"
        )
    message = o.OverallExportMetadata()
    try:
        message.ParseFromString(found[1])
    except Exception as exc:  # DecodeError
        raise BadExport(f"{name}: cannot parse the metadata message: {exc}") from None
    return [
        Pointer(
            EntitySet.from_spec(p.entity_set_spec),
            relative(p.export_metadata_file, 3),
            p.num_entities,
            p.num_bytes,
        )
        for p in message.export_pointers
    ]


def encode_backup(
    name: str, start_us: int, end_us: int, entity_set: EntitySet, files: list[str]
) -> bytes:
    backup = o.Backup()
    backup.backup_info.backup_name = name
    backup.backup_info.start_timestamp = start_us
    backup.backup_info.end_timestamp = end_us
    info = backup.kind_info.add()
    info.kind = entity_set.kind or ""
    info.file.extend(files)
    data: bytes = backup.SerializeToString()
    return data


def decode_backup(data: bytes, name: str) -> list[str]:
    """The output files an export_metadata file names, relative to its folder."""
    backup = o.Backup()
    try:
        backup.ParseFromString(data)
    except Exception as exc:  # DecodeError
        raise BadExport(f"{name}: cannot parse the export metadata: {exc}") from None
    return [relative(f, 1) for info in backup.kind_info for f in info.file]
