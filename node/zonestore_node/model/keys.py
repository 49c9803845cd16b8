"""Datastore keys: validation, partition normalization and their encoded bytes.

Works on the raw protobuf `Key` messages that ship with google-cloud-datastore (raw, not
proto-plus: the proto-plus wrappers cost ~10x per access on hot paths). The Node client
sends keys with an empty partition; the request's project and database fill it here, so
that every stored and returned key carries a complete partition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from google.cloud.datastore_v1.types import entity as entity_types

from zonestore_node.model import limits
from zonestore_node.model.errors import invalid
from zonestore_node.storage import keycodec

KeyPb: Any = entity_types.Key.pb()
PartitionPb: Any = entity_types.PartitionId.pb()


@dataclass(frozen=True, slots=True)
class Partition:
    project: str
    database: str
    namespace: str

    def encoded(self) -> bytes:
        return keycodec.encode_partition(self.project, self.database, self.namespace)


def _reserved(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def check_name(name: str, what: str, *, allow_reserved: bool = False) -> None:
    if not name:
        raise invalid(f"The {what} is empty.")
    if len(name.encode()) > limits.MAX_KEY_STRING_BYTES:
        raise invalid(f"The {what} is longer than {limits.MAX_KEY_STRING_BYTES} bytes.")
    if not allow_reserved and _reserved(name):
        raise invalid(f'The {what} "{name}" is reserved.')


# Namespaces and database ids: production's character set and length.
_PARTITION_NAME = re.compile(r"[0-9A-Za-z._-]{0,100}")


def check_partition_name(name: str, what: str) -> None:
    """A namespace or database id: `[0-9A-Za-z._-]{0,100}`, never `__...__` (reserved
    for metadata; the metadata queries name such kinds, never such partitions)."""
    if not _PARTITION_NAME.fullmatch(name):
        if len(name.encode()) > limits.MAX_NAMESPACE_BYTES:
            raise invalid(f"The {what} is longer than {limits.MAX_NAMESPACE_BYTES} bytes.")
        raise invalid(f'The {what} "{name}" does not match [0-9A-Za-z._-]{{0,100}}.')
    if _reserved(name):
        raise invalid(f'The {what} "{name}" is reserved.')


def string_size(text: str) -> int:
    """A string's storage size (the storage-size page): its UTF-8 bytes + 1."""
    return len(text.encode()) + 1


def key_size(key: Any) -> int:
    """A key's storage size: its namespace's string size (0 for the default), every
    kind and name's string size and 8 per integer id, plus 16."""
    namespace = key.partition_id.namespace_id
    size = 16 + (string_size(namespace) if namespace else 0)
    for element in key.path:
        size += string_size(element.kind)
        size += 8 if element.WhichOneof("id_type") == "id" else string_size(element.name)
    return size


_CHECKED_LABELS: set[str] = set()


def check_label(name: str, what: str) -> None:
    """`check_name` for kinds and property names (reserved names refused), memoized:
    a workload repeats a handful of them on every entity; key names are unique and go
    through `check_name` itself."""
    if name in _CHECKED_LABELS:
        return
    check_name(name, what)
    if len(_CHECKED_LABELS) < 4096:
        _CHECKED_LABELS.add(name)


def normalize(key: Any, project: str, database: str, *, allow_incomplete: bool = False) -> Any:
    """Validate `key` in place and fill its partition from the request.

    Returns the key. Raises INVALID_ARGUMENT for what production rejects: a foreign
    project or database, an empty or over-long path, reserved or empty kinds and names,
    id 0, incomplete elements other than the last (or the last, unless
    `allow_incomplete`), a key over 6 KiB (`key_size`). Negative ids are accepted, as
    production accepts them (the reference calls them discouraged); 0 is not an id.
    """
    partition = key.partition_id
    if partition.project_id and partition.project_id != project:
        raise invalid(
            f'Mismatched project: key is in "{partition.project_id}", request in "{project}".'
        )
    if partition.database_id and partition.database_id != database:
        raise invalid(
            f'Mismatched database: key is in "{partition.database_id}", request in "{database}".'
        )
    partition.project_id = project
    partition.database_id = database
    _check_path(key, allow_incomplete)
    return key


def normalize_reference(
    key: Any, project: str, database: str, *, allow_incomplete: bool = False
) -> Any:
    """Validate, in place, a key held in a property value (or an embedded entity's key).

    Unlike an entity's own key it may point into another project or database, as
    production and Google's emulator allow; only an empty partition (the Node client
    sends one) is filled from the request.
    """
    partition = key.partition_id
    if not partition.project_id:
        partition.project_id = project
        partition.database_id = database
    _check_path(key, allow_incomplete)
    return key


def _check_path(key: Any, allow_incomplete: bool) -> None:
    partition = key.partition_id
    size = 16  # the key's storage size, as `key_size` counts it
    if partition.namespace_id:
        check_partition_name(partition.namespace_id, "namespace")
        size += string_size(partition.namespace_id)
    path = key.path
    if not path:
        raise invalid("A key must have at least one path element.")
    if len(path) > limits.MAX_PATH_ELEMENTS:
        raise invalid(f"A key path has more than {limits.MAX_PATH_ELEMENTS} elements.")
    last = len(path) - 1
    for i, element in enumerate(path):
        check_label(element.kind, "key path element kind")
        size += len(element.kind) + 1  # ASCII kinds; non-ASCII corrected below
        kind_of_id = element.WhichOneof("id_type")
        if kind_of_id == "id":
            if element.id == 0:
                raise invalid("Key path element id must not be 0.")
            size += 8
        elif kind_of_id == "name":
            check_name(element.name, "key path element name")
            size += len(element.name) + 1
        elif i != last or not allow_incomplete:
            raise invalid(f"Key path element must not be incomplete: [{element.kind}: ].")
    # Character counts under-count only non-ASCII text: measure bytes near the limit.
    if size * 4 > limits.MAX_KEY_BYTES and (size := key_size(key)) > limits.MAX_KEY_BYTES:
        raise invalid(f"The key is {size} bytes, over the {limits.MAX_KEY_BYTES}-byte limit.")


def is_complete(key: Any) -> bool:
    return key.path[-1].WhichOneof("id_type") is not None


def path_of(key: Any) -> tuple[keycodec.PathElement, ...]:
    return tuple((e.kind, e.id if e.WhichOneof("id_type") == "id" else e.name) for e in key.path)


def partition_of(key: Any) -> Partition:
    p = key.partition_id
    return Partition(p.project_id, p.database_id, p.namespace_id)


def encode(key: Any) -> bytes:
    """The entity key bytes of a complete, normalized key."""
    p = key.partition_id
    return keycodec.encode_key(p.project_id, p.database_id, p.namespace_id, path_of(key))


def decode(encoded: bytes) -> Any:
    """A Key message from entity key bytes."""
    project, database, namespace, path, _ = keycodec.decode_key(encoded)
    return build(project, database, namespace, path)


def build(
    project: str, database: str, namespace: str, path: tuple[keycodec.PathElement, ...]
) -> Any:
    key = KeyPb()
    key.partition_id.project_id = project
    if database:
        key.partition_id.database_id = database
    if namespace:
        key.partition_id.namespace_id = namespace
    for kind, ident in path:
        element = key.path.add()
        element.kind = kind
        if isinstance(ident, int):
            element.id = ident
        else:
            element.name = ident
    return key
