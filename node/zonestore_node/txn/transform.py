"""Property transforms (google.datastore.v1.PropertyTransform): checked on the leader,
evaluated in apply.

Why apply evaluates them, on every replica, and not the leader before proposing: a
transform reads the entity's current value (increment, maximum, array union...). Commands
are pipelined, so the value the leader could read at evaluation may already be stale by
the time the command takes its place in the log: two concurrent increments would both
read 5 and both write 6. Evaluated in apply, in log order, against the entity as every
earlier command left it, the read and the write are one atomic step at the command's
position in the log, for non-transactional commits and transactions alike — so a
transform needs no entry in a transaction's read set (it never reads the snapshot) and
two transactions incrementing one counter both commit, each adding its amount, as in
production. The log carries the recipe, which holds everything it needs: the operands,
and REQUEST_TIME is the command's commit_ts (captured before proposing, the same for
every transform of the commit, as the API promises within a transaction), truncated to
milliseconds as documented. The arithmetic is Python's int and IEEE 754 double, the same
on every replica.

Semantics, from the field documentation (datastore_v1/types/datastore.py):
- increment: int + int saturates at the int64 bounds; if either is a double both are
  doubles (IEEE 754). A property that is missing or not a number becomes the operand.
- maximum / minimum: the larger / smaller operand, with its type; equivalent operands
  (3 and 3.0; 0, 0.0 and -0.0) leave the stored value; NaN with anything is NaN; a
  missing or non-numeric property becomes the operand.
- append_missing_elements / remove_all_from_array: numbers compare by value across
  types, NaN equals NaN, null equals null; a property that is missing or not an array
  becomes the empty array first. Their transform result is null.
- set_to_server_value REQUEST_TIME: the commit time (ms precision).
The result of the others is the property's new value. Paths are dotted (model/masks.py);
missing intermediate entities are created.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from google.cloud.datastore_v1.types import datastore as ds

from zonestore_node.model import indexing, limits, masks
from zonestore_node.model.errors import invalid

TransformPb: Any = ds.PropertyTransform.pb()
ValuePb: Any = indexing.ValuePb
INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
REQUEST_TIME = 1
_NUMERIC = ("integer_value", "double_value")


def check(transforms: Sequence[Any], project: str, database: str) -> tuple[bytes, ...]:
    """Validate a mutation's transforms (INVALID_ARGUMENT) and serialize them for the log."""
    if len(transforms) > limits.MAX_TRANSFORMS_PER_ENTITY:
        raise invalid(
            f"A mutation may have at most {limits.MAX_TRANSFORMS_PER_ENTITY} property "
            f"transforms, not {len(transforms)}."
        )
    out = []
    for t in transforms:
        path = masks.parse_path(t.property) if t.property else ()
        if not path:
            raise invalid("A property transform must name a property.")
        for name in path:
            if name.startswith("__") and name.endswith("__"):
                raise invalid(f'The property transform on "{t.property}" names a reserved one.')
        which = t.WhichOneof("transform_type")
        if which is None:
            raise invalid(f'The property transform on "{t.property}" has no transform.')
        if which == "set_to_server_value":
            if t.set_to_server_value != REQUEST_TIME:
                raise invalid(f'The property transform on "{t.property}": unknown server value.')
        elif which in ("increment", "maximum", "minimum"):
            if getattr(t, which).WhichOneof("value_type") not in _NUMERIC:
                raise invalid(
                    f'The {which} transform on "{t.property}" needs an integer or double value.'
                )
        else:
            probe = indexing.EntityPb()
            probe.properties[path[-1]].array_value.CopyFrom(getattr(t, which))
            indexing.check_properties(probe, project, database)
        out.append(t.SerializeToString())
    return tuple(out)


def apply_all(entity: Any, transforms: Sequence[bytes], commit_ts: int) -> list[Any]:
    """Apply serialized transforms to `entity` in place, in order; their results."""
    results = []
    for raw in transforms:
        t = TransformPb.FromString(raw)
        path = masks.parse_path(t.property)
        parent = masks.parent_for_write(entity, path, "property transform")
        name = path[-1]
        current = parent.properties.get(name)
        which = t.WhichOneof("transform_type")
        result = ValuePb()
        if which == "set_to_server_value":
            new = _request_time(commit_ts)
            result.CopyFrom(new)
        elif which in ("increment", "maximum", "minimum"):
            new = _numeric(which, current, getattr(t, which))
            result.CopyFrom(new)
        else:
            new = _array(which == "append_missing_elements", current, getattr(t, which).values)
            result.null_value = 0
            which = "array"
        if current is not None and current.exclude_from_indexes and which != "array":
            new.exclude_from_indexes = True  # the stored value's flag stays (not arrays')
        parent.properties[name].CopyFrom(new)
        results.append(result)
    return results


def _request_time(commit_ts: int) -> Any:
    millis = commit_ts // 1000
    value = ValuePb()
    value.timestamp_value.seconds, rest = divmod(millis, 1000)
    value.timestamp_value.nanos = rest * 1_000_000
    return value


def _number(value: Any) -> int | float:
    return (
        int(value.integer_value)
        if value.WhichOneof("value_type") == "integer_value"
        else (float(value.double_value))
    )


def _of(number: int | float) -> Any:
    value = ValuePb()
    if isinstance(number, int):
        value.integer_value = number
    else:
        value.double_value = number
    return value


def _numeric(which: str, current: Any | None, operand: Any) -> Any:
    given = _number(operand)
    if current is None or current.WhichOneof("value_type") not in _NUMERIC:
        return _of(given)
    stored = _number(current)
    if which == "increment":
        if isinstance(stored, int) and isinstance(given, int):
            return _of(max(INT64_MIN, min(INT64_MAX, stored + given)))
        return _of(float(stored) + float(given))
    if isinstance(stored, float) and math.isnan(stored):
        return _of(stored)
    if isinstance(given, float) and math.isnan(given):
        return _of(given)
    if stored == given:  # equivalent (3 and 3.0, every zero): the stored value stays
        return _of(stored)
    if which == "maximum":
        return _of(given if given > stored else stored)
    return _of(given if given < stored else stored)


def _identity(value: Any) -> tuple[Any, ...]:
    """Equality for array transforms: numbers by value across types, NaN equal to NaN,
    null to null; other values by type and content (index flags aside)."""
    which = value.WhichOneof("value_type")
    if which in _NUMERIC:
        number = _number(value)
        if isinstance(number, float) and math.isnan(number):
            return ("nan",)
        return ("number", number)
    if which == "null_value":
        return ("null",)
    copy = ValuePb()
    copy.CopyFrom(value)
    copy.exclude_from_indexes = False
    copy.meaning = 0
    return (which, copy.SerializeToString(deterministic=True))


def _array(append: bool, current: Any | None, operands: Sequence[Any]) -> Any:
    new = ValuePb()
    new.array_value.SetInParent()
    if current is not None and current.WhichOneof("value_type") == "array_value":
        new.array_value.CopyFrom(current.array_value)
    elements = new.array_value.values
    if append:
        present = {_identity(v) for v in elements}
        for operand in operands:
            identity = _identity(operand)
            if identity not in present:
                present.add(identity)
                elements.add().CopyFrom(operand)
    else:
        removed = {_identity(v) for v in operands}
        kept = [v for v in elements if _identity(v) not in removed]
        if len(kept) != len(elements):
            copies = []
            for v in kept:
                c = ValuePb()
                c.CopyFrom(v)
                copies.append(c)
            del elements[:]
            for c in copies:
                elements.add().CopyFrom(c)
    return new
