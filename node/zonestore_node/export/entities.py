"""Entities between the two encodings: google.datastore.v1 `Entity` (what zonestore
serves) and the legacy onestore v3 `EntityProto` (what a managed export holds).

The mapping is the one Google's own converter applies (App Engine SDK, datastore_pbs),
checked against the Firestore emulator's exports:

    v1 value                     v3 Property (value field; meaning)
    null                         empty value
    boolean / integer / double   booleanValue / int64Value / doubleValue
    timestamp                    int64Value in microseconds; GD_WHEN (7)
    string                       stringValue (UTF-8)
    blob                         stringValue; BYTESTRING (16) indexed, BLOB (14) not
    key                          ReferenceValue group (app, path elements, name_space)
    geo point                    PointValue group (x = latitude, y = longitude); GEORSS_POINT
    entity                       stringValue = serialized EntityProto; ENTITY_PROTO (19)
    array [a, b]                 one Property per element, multiple = true
    array []                     one Property, empty value; EMPTY_LIST (24)
    exclude_from_indexes         the Property sits in raw_property instead of property
    any other v1 meaning         Property.meaning, unchanged

Keys: a v3 Reference carries the app (the project id; "s~"/"e~" prefixes of App Engine
app ids are dropped on the way in), the namespace and the path; the entity group is the
path's first element. An embedded entity without a key gets an empty Reference.

The converters take and return raw protobuf messages (the v1 types shipped with
google-cloud-datastore, `.pb()`), never proto-plus wrappers: they run once per entity of
an import or export. Imports nothing of zonestore beyond `export.onestore`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.cloud.datastore_v1.types import entity as v1

from zonestore_node.export import onestore as o

V1Entity: Any = v1.Entity.pb()
V1Value: Any = v1.Value.pb()
V1Key: Any = v1.Key.pb()

# RFC 3339's range (0001-01-01 .. 9999-12-31), in microseconds: a GD_WHEN int64 outside
# it stays an integer (with v1 meaning 7), as Google's converter does.
_MIN_TIMESTAMP_US = -62_135_596_800_000_000
_MAX_TIMESTAMP_US = 253_402_300_799_999_999


class ConversionError(ValueError):
    """An entity that cannot be represented in the other encoding."""


def project_of_app(app: str) -> str:
    """An App Engine app id ("s~proj", "e~proj", "dev~proj") names the project after "~"."""
    return app.split("~", 1)[1] if "~" in app else app


@dataclass(frozen=True, slots=True)
class Target:
    """Where imported keys go: keys of `source_app` (any app when it is None) are moved to
    this project and database; keys of other apps keep theirs."""

    project: str
    database: str = ""
    source_app: str | None = None


# ---------------------------------------------------------------------------- v1 -> v3


def _reference_into(key: Any, path_elements: Any, ref: Any) -> None:
    """Fills a v3 Reference or ReferenceValue from a v1 Key (shared field names)."""
    ref.app = key.partition_id.project_id.encode()
    if key.partition_id.namespace_id:
        ref.name_space = key.partition_id.namespace_id.encode()
    if key.partition_id.database_id:
        ref.database_id = key.partition_id.database_id.encode()
    for element in key.path:
        out = path_elements.add()
        out.type = element.kind.encode()
        which = element.WhichOneof("id_type")
        if which == "id":
            out.id = element.id
        elif which == "name":
            out.name = element.name.encode()


def _key_to_reference(key: Any, ref: Any) -> None:
    ref.path.SetInParent()
    _reference_into(key, ref.path.element, ref)


def _entity_to_v3(entity: Any, out: Any) -> None:
    if entity.HasField("key"):
        _key_to_reference(entity.key, out.key)
        group = out.entity_group
        group.SetInParent()
        if out.key.path.element:
            group.element.add().CopyFrom(out.key.path.element[0])
    else:
        out.key.app = b""
        out.key.path.SetInParent()
        out.entity_group.SetInParent()
    for name, value in entity.properties.items():
        encoded_name = name.encode()
        if value.WhichOneof("value_type") == "array_value":
            elements = value.array_value.values
            if not elements:
                prop = (out.raw_property if value.exclude_from_indexes else out.property).add()
                prop.meaning = o.MEANING_EMPTY_LIST
                prop.name = encoded_name
                prop.multiple = False
                prop.value.SetInParent()
                continue
            for element in elements:
                prop = (out.raw_property if element.exclude_from_indexes else out.property).add()
                _value_to_property(encoded_name, True, element, prop)
        else:
            prop = (out.raw_property if value.exclude_from_indexes else out.property).add()
            _value_to_property(encoded_name, False, value, prop)


def _value_to_property(name: bytes, multiple: bool, value: Any, prop: Any) -> None:
    prop.name = name
    prop.multiple = multiple
    pv = prop.value
    pv.SetInParent()
    meaning: int | None = value.meaning or None
    which = value.WhichOneof("value_type")
    if which == "null_value" or which is None:
        pass
    elif which == "boolean_value":
        pv.booleanValue = value.boolean_value
    elif which == "integer_value":
        pv.int64Value = value.integer_value
        if meaning == o.MEANING_GD_WHEN:
            prop.meaning = o.MEANING_GD_WHEN
            meaning = None
    elif which == "double_value":
        pv.doubleValue = value.double_value
    elif which == "timestamp_value":
        ts = value.timestamp_value
        pv.int64Value = ts.seconds * 1_000_000 + ts.nanos // 1000
        prop.meaning = o.MEANING_GD_WHEN
    elif which == "string_value":
        pv.stringValue = value.string_value.encode()
    elif which == "blob_value":
        pv.stringValue = value.blob_value
        if meaning == o.V1_MEANING_ZLIB:
            prop.meaning_uri = o.URI_MEANING_ZLIB
        if meaning != o.MEANING_BYTESTRING:
            prop.meaning = o.MEANING_BLOB if value.exclude_from_indexes else o.MEANING_BYTESTRING
            meaning = None
    elif which == "key_value":
        ref = pv.referencevalue
        _reference_into(value.key_value, ref.pathelement, ref)
    elif which == "entity_value":
        if meaning == o.V1_MEANING_USER:
            _user_to_v3(value.entity_value, pv.uservalue)
        else:
            embedded = o.EntityProto()
            _entity_to_v3(value.entity_value, embedded)
            pv.stringValue = embedded.SerializeToString()
            prop.meaning = o.MEANING_ENTITY_PROTO
        meaning = None
    elif which == "geo_point_value":
        pv.pointvalue.x = value.geo_point_value.latitude
        pv.pointvalue.y = value.geo_point_value.longitude
        if meaning != o.V1_MEANING_POINT_WITHOUT_V3_MEANING:
            prop.meaning = o.MEANING_GEORSS_POINT
        meaning = None
    else:  # array_value inside an array: v1 forbids it, v3 cannot hold it
        raise ConversionError(f"property {name.decode()!r}: an array inside an array")
    if meaning is not None:
        prop.meaning = meaning


def _user_to_v3(entity: Any, user: Any) -> None:
    props = entity.properties
    user.email = props["email"].string_value.encode() if "email" in props else b""
    user.auth_domain = props["auth_domain"].string_value.encode() if "auth_domain" in props else b""
    user.gaiaid = props["internal_id"].integer_value if "internal_id" in props else 0
    for v1_name, v3_name in (
        ("user_id", "obfuscated_gaiaid"),
        ("federated_identity", "federated_identity"),
        ("federated_provider", "federated_provider"),
    ):
        if v1_name in props:
            setattr(user, v3_name, props[v1_name].string_value.encode())


def to_entity_proto(entity: Any) -> Any:
    """A v1 Entity (raw pb) as a v3 EntityProto."""
    out = o.EntityProto()
    _entity_to_v3(entity, out)
    return out


def encode(entity: Any) -> bytes:
    """A v1 Entity (raw pb) as the bytes of one export record."""
    data: bytes = to_entity_proto(entity).SerializeToString()
    return data


# ---------------------------------------------------------------------------- v3 -> v1


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise ConversionError(f"{what} is not valid UTF-8") from exc


def _partition(app: bytes, name_space: bytes, database_id: bytes, target: Target, pid: Any) -> None:
    source = _utf8(app, "an app id")
    if target.source_app is None or source == target.source_app:
        pid.project_id = target.project
        pid.database_id = target.database
    else:
        pid.project_id = project_of_app(source)
        pid.database_id = _utf8(database_id, "a database id")
    if name_space:
        pid.namespace_id = _utf8(name_space, "a namespace")


def _path_into(elements: Any, key: Any, kind_attr: str, id_attr: str, name_attr: str) -> None:
    for element in elements:
        out = key.path.add()
        out.kind = _utf8(getattr(element, kind_attr), "a kind")
        if element.HasField(id_attr):
            out.id = getattr(element, id_attr)
        elif element.HasField(name_attr):
            out.name = _utf8(getattr(element, name_attr), "a key name")


def reference_to_key(ref: Any, target: Target, key: Any) -> None:
    _partition(ref.app, ref.name_space, ref.database_id, target, key.partition_id)
    _path_into(ref.path.element, key, "type", "id", "name")


def _entity_to_v1(proto: Any, target: Target, out: Any) -> None:
    if proto.HasField("key") and proto.key.app:
        reference_to_key(proto.key, target, out.key)
    props = out.properties
    for indexed, group in ((True, proto.property), (False, proto.raw_property)):
        for prop in group:
            name = _utf8(prop.name, "a property name")
            if prop.multiple:
                value = props[name]
                if value.WhichOneof("value_type") != "array_value":
                    value.array_value.SetInParent()
                _property_to_value(prop, indexed, target, value.array_value.values.add())
            else:
                value = props[name]
                value.Clear()
                _property_to_value(prop, indexed, target, value)


def _property_to_value(prop: Any, indexed: bool, target: Target, value: Any) -> None:
    pv = prop.value
    meaning: int | None = prop.meaning or None
    zlib = prop.meaning_uri == o.URI_MEANING_ZLIB and pv.HasField("stringValue")
    if meaning == o.MEANING_EMPTY_LIST:
        value.array_value.SetInParent()
        meaning = None
    elif pv.HasField("booleanValue"):
        value.boolean_value = pv.booleanValue
    elif pv.HasField("int64Value"):
        micros = pv.int64Value
        if meaning == o.MEANING_GD_WHEN and _MIN_TIMESTAMP_US <= micros <= _MAX_TIMESTAMP_US:
            seconds, rem = divmod(micros, 1_000_000)
            value.timestamp_value.seconds = seconds
            value.timestamp_value.nanos = rem * 1000
            meaning = None
        else:
            value.integer_value = micros
    elif pv.HasField("doubleValue"):
        value.double_value = pv.doubleValue
    elif pv.HasField("referencevalue"):
        ref = pv.referencevalue
        _partition(ref.app, ref.name_space, ref.database_id, target, value.key_value.partition_id)
        _path_into(ref.pathelement, value.key_value, "type", "id", "name")
    elif pv.HasField("stringValue"):
        raw = pv.stringValue
        if meaning == o.MEANING_ENTITY_PROTO:
            embedded = o.EntityProto()
            embedded.ParseFromString(raw)
            _entity_to_v1(embedded, target, value.entity_value)
            meaning = None
        elif zlib or meaning in (o.MEANING_BLOB, o.MEANING_BYTESTRING):
            value.blob_value = raw
            if indexed or meaning == o.MEANING_BLOB:
                meaning = None
        else:
            try:
                value.string_value = raw.decode()
            except UnicodeDecodeError:
                value.blob_value = raw
                if meaning != o.MEANING_INDEX_VALUE:
                    meaning = None
    elif pv.HasField("pointvalue"):
        if meaning != o.MEANING_GEORSS_POINT:
            value.meaning = o.V1_MEANING_POINT_WITHOUT_V3_MEANING
        value.geo_point_value.latitude = pv.pointvalue.x
        value.geo_point_value.longitude = pv.pointvalue.y
        meaning = None
    elif pv.HasField("uservalue"):
        _user_to_v1(pv.uservalue, value.entity_value)
        value.meaning = o.V1_MEANING_USER
        meaning = None
    else:
        value.null_value = 0
    if zlib:
        value.meaning = o.V1_MEANING_ZLIB
    elif meaning:
        value.meaning = meaning
    if not indexed and value.WhichOneof("value_type") != "array_value":
        value.exclude_from_indexes = True  # v1 allows the flag on an array's elements only


def _user_to_v1(user: Any, entity: Any) -> None:
    props = entity.properties
    props["email"].string_value = _utf8(user.email, "a user email")
    props["email"].exclude_from_indexes = True
    props["auth_domain"].string_value = _utf8(user.auth_domain, "a user auth domain")
    props["auth_domain"].exclude_from_indexes = True
    if user.gaiaid:
        props["internal_id"].integer_value = user.gaiaid
        props["internal_id"].exclude_from_indexes = True
    for v3_name, v1_name in (
        ("obfuscated_gaiaid", "user_id"),
        ("federated_identity", "federated_identity"),
        ("federated_provider", "federated_provider"),
    ):
        if user.HasField(v3_name):
            props[v1_name].string_value = _utf8(getattr(user, v3_name), f"a user {v1_name}")
            props[v1_name].exclude_from_indexes = True


def from_entity_proto(proto: Any, target: Target) -> Any:
    """A v3 EntityProto as a v1 Entity (raw pb) in the target's project and database."""
    out = V1Entity()
    _entity_to_v1(proto, target, out)
    return out


def decode(record: bytes, target: Target) -> Any:
    """The bytes of one export record as a v1 Entity (raw pb)."""
    proto = o.EntityProto()
    proto.ParseFromString(record)
    if not proto.HasField("key") or not proto.key.path.element:
        raise ConversionError("an exported entity without a key")
    return from_entity_proto(proto, target)


def app_of(record: bytes) -> str:
    """The app id the record's key names (to tell the export's own project)."""
    proto = o.EntityProto()
    proto.ParseFromString(record)
    return _utf8(proto.key.app, "an app id")
