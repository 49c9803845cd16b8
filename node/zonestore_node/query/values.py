"""Index value encodings back to protobuf `Value`s (projection results).

The inverse of `model.indexing.encode_value` for the scalars an index holds.
"""

from __future__ import annotations

from typing import Any

from google.cloud.datastore_v1.types import entity as entity_types

from zonestore_node.model import keys
from zonestore_node.storage import keycodec

ValuePb: Any = entity_types.Value.pb()


def fill(target: Any, encoded: bytes) -> None:
    """Set the `Value` message `target` from one encoded index value."""
    tag = encoded[0]
    if tag == keycodec.TAG_NULL:
        target.null_value = 0
    elif tag == keycodec.TAG_INT:
        number = keycodec.decode_int(encoded, 1)
        if encoded[9] == keycodec.SUB_TIMESTAMP:
            seconds, rem = divmod(number, 1_000_000)
            target.timestamp_value.seconds = seconds
            target.timestamp_value.nanos = rem * 1000
        else:
            target.integer_value = number
    elif tag in (keycodec.TAG_BOOL, keycodec.TAG_BOOL + 1):
        target.boolean_value = tag == keycodec.TAG_BOOL + 1
    elif tag == keycodec.TAG_BYTES:
        raw, pos = keycodec.unescape(encoded, 1)
        if encoded[pos] == keycodec.SUB_STRING:
            target.string_value = raw.decode()
        else:
            target.blob_value = raw
    elif tag == keycodec.TAG_DOUBLE:
        target.double_value = keycodec.decode_double(encoded, 1)
    elif tag == keycodec.TAG_GEO:
        target.geo_point_value.latitude = keycodec.decode_double(encoded, 1)
        target.geo_point_value.longitude = keycodec.decode_double(encoded, 9)
    elif tag == keycodec.TAG_KEY:
        project, database, namespace, path, _ = keycodec.decode_key(encoded, 1)
        target.key_value.CopyFrom(keys.build(project, database, namespace, path))
    else:
        raise keycodec.DecodeError(f"unknown index value tag {tag:#x}")
