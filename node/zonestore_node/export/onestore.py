"""The message types of Datastore's managed export files, as protobuf classes built at
import time from descriptors written out here (nothing generated, nothing downloaded).

Three schemas, each taken field for field from its source:

- `EntityProto` and its parts: App Engine's legacy entity encoding (onestore v3,
  `storage/onestore/v3/entity.proto`; the field numbers are those of the SDK's
  `entity_pb` and the Firestore emulator's `OnestoreEntity`). Proto2 with *groups*
  (`Path.Element`, `PropertyValue.PointValue/UserValue/ReferenceValue`): the wire format
  byte for byte. Fields the original marks `required` are `optional` here so a partial
  message never raises; writers set them explicitly (proto2 keeps presence, so an
  explicit `multiple: false` or an empty `value` is serialized, as Google writes them).
- `Backup` (`apphosting/ext/datastore_admin/backup.proto`): each folder's
  `*.export_metadata` file (a bare serialized message, not log-framed).
- `OverallExportMetadata` with `SingleExportMetadataPointer` and `EntitySetSpec`
  (`apphosting/client/admin_jobs_v3/*.proto`): the `*.overall_export_metadata` file,
  which is a LevelDB log of two records: the version string `b"3"`, then this message.

Serialization order is field-number order, which is also the order Google's writers
use, so the same fields give the same bytes. Imports nothing of zonestore.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_OPT = _F.LABEL_OPTIONAL
_REP = _F.LABEL_REPEATED

# Property.meaning values (entity.proto's Property.Meaning) the conversion relies on.
MEANING_GD_WHEN = 7  # int64 microseconds that are a timestamp
MEANING_GEORSS_POINT = 9  # a PointValue that is a geographical point
MEANING_BLOB = 14  # bytes, unindexed
MEANING_TEXT = 15  # long text, unindexed
MEANING_BYTESTRING = 16  # bytes, indexed (short)
MEANING_INDEX_VALUE = 18  # a projection's index value
MEANING_ENTITY_PROTO = 19  # stringValue holds a serialized EntityProto (embedded entity)
MEANING_EMPTY_LIST = 24  # an empty array
# v1-only meanings (google.datastore.v1 Value.meaning) with no v3 meaning of their own.
V1_MEANING_USER = 20  # an entity value that is a v3 UserValue
V1_MEANING_ZLIB = 22  # blob whose v3 meaning_uri is "ZLIB"
V1_MEANING_POINT_WITHOUT_V3_MEANING = 23  # a PointValue without GEORSS_POINT
URI_MEANING_ZLIB = b"ZLIB"
OVERALL_METADATA_VERSION = b"3"

# EntitySetSpec enums.
KIND_ONE = 1
KIND_ALL = 2
NAMESPACE_DEFAULT = 1
NAMESPACE_ONE = 2
NAMESPACE_ALL = 3


def _field(
    msg: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    ftype: int,
    label: int = _OPT,
    type_name: str = "",
) -> None:
    f = msg.field.add(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name


def _group(
    parent: descriptor_pb2.DescriptorProto,
    type_name: str,
    number: int,
    label: int,
    scope: str,
) -> descriptor_pb2.DescriptorProto:
    """A proto2 group: a nested type and a TYPE_GROUP field named after it, lower-cased."""
    nested = parent.nested_type.add(name=type_name)
    _field(parent, type_name.lower(), number, _F.TYPE_GROUP, label, f"{scope}.{type_name}")
    return nested


def _onestore_file() -> descriptor_pb2.FileDescriptorProto:
    pkg = "zonestore.export.onestore_v3"
    fd = descriptor_pb2.FileDescriptorProto(
        name="zonestore/export/onestore_v3.proto", package=pkg, syntax="proto2"
    )
    b, i64, s, d = _F.TYPE_BYTES, _F.TYPE_INT64, _F.TYPE_BOOL, _F.TYPE_DOUBLE
    i32 = _F.TYPE_INT32

    pv = fd.message_type.add(name="PropertyValue")
    scope = f".{pkg}.PropertyValue"
    _field(pv, "int64Value", 1, i64)
    _field(pv, "booleanValue", 2, s)
    _field(pv, "stringValue", 3, b)
    _field(pv, "doubleValue", 4, d)
    point = _group(pv, "PointValue", 5, _OPT, scope)
    _field(point, "x", 6, d)
    _field(point, "y", 7, d)
    user = _group(pv, "UserValue", 8, _OPT, scope)
    for name, number, ftype in (
        ("email", 9, b),
        ("auth_domain", 10, b),
        ("nickname", 11, b),
        ("gaiaid", 18, i64),
        ("obfuscated_gaiaid", 19, b),
        ("federated_identity", 21, b),
        ("federated_provider", 22, b),
    ):
        _field(user, name, number, ftype)
    ref = _group(pv, "ReferenceValue", 12, _OPT, scope)
    _field(ref, "app", 13, b)
    element = _group(ref, "PathElement", 14, _REP, f"{scope}.ReferenceValue")
    _field(element, "type", 15, b)
    _field(element, "id", 16, i64)
    _field(element, "name", 17, b)
    _field(ref, "name_space", 20, b)
    _field(ref, "database_id", 23, b)

    prop = fd.message_type.add(name="Property")
    _field(prop, "meaning", 1, i32)  # an enum in entity.proto; int32 keeps unknown values
    _field(prop, "meaning_uri", 2, b)
    _field(prop, "name", 3, b)
    _field(prop, "multiple", 4, s)
    _field(prop, "value", 5, _F.TYPE_MESSAGE, type_name=f".{pkg}.PropertyValue")
    _field(prop, "stashed", 6, i32)
    _field(prop, "computed", 7, s)

    path = fd.message_type.add(name="Path")
    path_element = _group(path, "Element", 1, _REP, f".{pkg}.Path")
    _field(path_element, "type", 2, b)
    _field(path_element, "id", 3, i64)
    _field(path_element, "name", 4, b)

    reference = fd.message_type.add(name="Reference")
    _field(reference, "app", 13, b)
    _field(reference, "path", 14, _F.TYPE_MESSAGE, type_name=f".{pkg}.Path")
    _field(reference, "name_space", 20, b)
    _field(reference, "database_id", 23, b)

    entity = fd.message_type.add(name="EntityProto")
    _field(entity, "kind", 4, i32)
    _field(entity, "kind_uri", 5, b)
    _field(entity, "key", 13, _F.TYPE_MESSAGE, type_name=f".{pkg}.Reference")
    _field(entity, "property", 14, _F.TYPE_MESSAGE, _REP, f".{pkg}.Property")
    _field(entity, "raw_property", 15, _F.TYPE_MESSAGE, _REP, f".{pkg}.Property")
    _field(entity, "entity_group", 16, _F.TYPE_MESSAGE, type_name=f".{pkg}.Path")
    _field(entity, "owner", 17, b)  # a User message; carried as opaque bytes
    return fd


def _metadata_file() -> descriptor_pb2.FileDescriptorProto:
    pkg = "zonestore.export.metadata"
    fd = descriptor_pb2.FileDescriptorProto(
        name="zonestore/export/metadata.proto", package=pkg, syntax="proto2"
    )
    s, i64, boolean, e = _F.TYPE_STRING, _F.TYPE_INT64, _F.TYPE_BOOL, _F.TYPE_INT32

    backup = fd.message_type.add(name="Backup")
    _field(backup, "backup_info", 1, _F.TYPE_MESSAGE, type_name=f".{pkg}.BackupInfo")
    _field(backup, "kind_info", 2, _F.TYPE_MESSAGE, _REP, f".{pkg}.KindBackupInfo")
    info = fd.message_type.add(name="BackupInfo")
    _field(info, "backup_name", 1, s)
    _field(info, "start_timestamp", 2, i64)
    _field(info, "end_timestamp", 3, i64)
    kind_info = fd.message_type.add(name="KindBackupInfo")
    _field(kind_info, "kind", 1, s)
    _field(kind_info, "file", 2, s, _REP)
    _field(kind_info, "entity_schema", 3, _F.TYPE_BYTES)  # EntitySchema; not written
    _field(kind_info, "is_partial", 4, boolean)

    spec = fd.message_type.add(name="EntitySetSpec")
    _field(spec, "kind_type", 1, e)  # enums KindType / NamespaceType, as int32
    _field(spec, "kind", 2, s)
    _field(spec, "namespace_type", 3, e)
    _field(spec, "namespace", 4, s)
    pointer = fd.message_type.add(name="SingleExportMetadataPointer")
    _field(pointer, "entity_set_spec", 1, _F.TYPE_MESSAGE, type_name=f".{pkg}.EntitySetSpec")
    _field(pointer, "export_metadata_file", 2, s)
    _field(pointer, "num_entities", 3, i64)
    _field(pointer, "num_bytes", 4, i64)
    overall = fd.message_type.add(name="OverallExportMetadata")
    _field(
        overall, "export_pointers", 1, _F.TYPE_MESSAGE, _REP, f".{pkg}.SingleExportMetadataPointer"
    )
    return fd


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_onestore_file())
_pool.Add(_metadata_file())


def _cls(full_name: str) -> Any:
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(full_name))


EntityProto: Any = _cls("zonestore.export.onestore_v3.EntityProto")
Property: Any = _cls("zonestore.export.onestore_v3.Property")
PropertyValue: Any = _cls("zonestore.export.onestore_v3.PropertyValue")
Reference: Any = _cls("zonestore.export.onestore_v3.Reference")
Path: Any = _cls("zonestore.export.onestore_v3.Path")
Backup: Any = _cls("zonestore.export.metadata.Backup")
OverallExportMetadata: Any = _cls("zonestore.export.metadata.OverallExportMetadata")
