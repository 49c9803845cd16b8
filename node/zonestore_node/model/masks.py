"""Property paths and property masks (google.datastore.v1.PropertyMask) over raw Entity
messages: the read projection of Lookup and RunQuery, and the write merge of
`Mutation.property_mask`.

A path is property names joined by dots, `a.b` naming property `b` inside the entity
value of property `a`; a name holding a dot or a backslash escapes it with a backslash
(`a\\.b` is the one property "a.b"). A path never reaches into an array value.

Read (`project`): every property not named by a path is removed; `a.b` keeps `a` with
only `b` inside it (and drops `a` when it is not an entity value or has no `b`). The
key always stays; `__key__` in a mask names nothing more.

Write (`merge`): start from the stored entity (or an empty one with the mutation's key
when there is none); for each path, the mutation's value at that path replaces the
stored one, and a path the mutation's entity lacks deletes that property. Properties of
the mutation's entity outside the mask are not written (zonestore's reading of "only
properties referenced in the mask are updated"). Missing or non-entity intermediates on
the way to a written path become entity values. A pure function of its inputs: apply
runs it on every replica against the entity as the log orders it.

Imports only model/ (values): query/, txn/ and api/ all use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from zonestore_node.model import indexing
from zonestore_node.model.errors import invalid

KEY_PROPERTY = "__key__"
Path = tuple[str, ...]
# name -> None (the whole property) or the sub-tree of paths below it
Tree = dict[str, "Tree | None"]


def parse_path(path: str) -> Path:
    """Split a dotted path, honouring backslash escapes; INVALID_ARGUMENT if malformed."""
    if not path:
        raise invalid("A property mask path must not be empty.")
    names: list[str] = []
    current: list[str] = []
    escaped = False
    for char in path:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ".":
            names.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise invalid(f'The property path "{path}" ends in an unfinished escape.')
    names.append("".join(current))
    if any(not name for name in names):
        raise invalid(f'The property path "{path}" has an empty property name.')
    return tuple(names)


def _reserved(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def parse_paths(paths: Iterable[str]) -> list[Path]:
    """Every path of a mask, validated: no empty names, no reserved names but a lone
    `__key__` (which is dropped: the key is always there)."""
    out: list[Path] = []
    for raw in paths:
        path = parse_path(raw)
        if path == (KEY_PROPERTY,):
            continue
        for name in path:
            if _reserved(name):
                raise invalid(f'The property mask path "{raw}" names a reserved property.')
        out.append(path)
    return out


def tree(paths: Iterable[Path]) -> Tree:
    """The paths as a tree; a path covering another (`a` and `a.b`) wins."""
    root: Tree = {}
    for path in sorted(paths, key=len):
        node: Tree | None = root
        for i, name in enumerate(path):
            assert node is not None
            if name in node and node[name] is None:
                break  # an ancestor path already takes the whole property
            if i == len(path) - 1:
                node[name] = None
                break
            child = node.setdefault(name, {})
            node = child
    return root


def project(entity: Any, mask: Tree) -> None:
    """Keep, in place, only the properties the mask names (the key stays)."""
    props = entity.properties
    for name in list(props):
        if name not in mask:
            del props[name]
            continue
        sub = mask[name]
        if sub is None:
            continue
        value = props[name]
        if value.WhichOneof("value_type") != "entity_value":
            del props[name]
            continue
        project(value.entity_value, sub)
        if not value.entity_value.properties:
            del props[name]


def _get(entity: Any, path: Path) -> Any | None:
    """The value at `path`, or None where the path leads nowhere."""
    for name in path[:-1]:
        value = entity.properties.get(name)
        if value is None or value.WhichOneof("value_type") != "entity_value":
            return None
        entity = value.entity_value
    return entity.properties.get(path[-1])


def parent_for_write(entity: Any, path: Path, what: str) -> Any:
    """The entity holding `path`'s last property, made so (intermediate entity values
    created or replaced) for a write. A path through an array value is INVALID_ARGUMENT."""
    for name in path[:-1]:
        value = entity.properties[name]  # upb map: creates an empty Value if missing
        which = value.WhichOneof("value_type")
        if which == "array_value":
            raise invalid(f'The {what} path "{".".join(path)}" goes through an array value.')
        if which != "entity_value":
            exclude = value.exclude_from_indexes
            value.Clear()
            value.entity_value.SetInParent()
            value.exclude_from_indexes = exclude
        entity = value.entity_value
    return entity


def _delete(entity: Any, path: Path) -> None:
    for name in path[:-1]:
        value = entity.properties.get(name)
        if value is None or value.WhichOneof("value_type") != "entity_value":
            return
        entity = value.entity_value
    if path[-1] in entity.properties:
        del entity.properties[path[-1]]


def merge(current: Any | None, given: Any, paths: Sequence[Path]) -> Any:
    """The entity a masked write stores (see the module docstring): a new message."""
    result = indexing.EntityPb()
    if current is not None:
        result.CopyFrom(current)
    result.key.CopyFrom(given.key)
    for path in paths:
        value = _get(given, path)
        if value is None:
            _delete(result, path)
        else:
            parent_for_write(result, path, "property mask").properties[path[-1]].CopyFrom(value)
    return result
