"""Metadata queries: __namespace__, __kind__ and __property__.

Derived from the index keyspace, never stored: a skip scan reads the first entry under
a prefix, decodes the namespace / kind / property it belongs to, and seeks past every
other entry sharing it (`prefix_end`), so the cost is one seek per distinct name, not
one per entity.

    __namespace__  kind-index prefixes  K esc(project) esc(database) esc(namespace)
                   key (__namespace__, name) -- id 1 for the default namespace
    __kind__       K partition esc(kind)                   key (__kind__, name)
    __property__   P partition esc(kind) esc(property)     key (__kind__, k)/(__property__, p)
                   property_representation: the value types indexed (skip-scanned by
                   type tag): NULL, INT64 (integers, timestamps), BOOLEAN, STRING
                   (strings, blobs), DOUBLE, POINT, REFERENCE

Only `__key__` filters (ranges, equality, and ancestor for __property__) and key order
ascending apply, as in production. Results are rows for the executor's batch loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from zonestore_node.model import indexing, keys
from zonestore_node.model.errors import invalid
from zonestore_node.query import filters
from zonestore_node.query.planner import Spec
from zonestore_node.query.rows import Context, Row
from zonestore_node.storage import keycodec
from zonestore_node.storage.engine import Family
from zonestore_node.txn.command import ReadRange

NAMESPACE_KIND = "__namespace__"
KIND_KIND = "__kind__"
PROPERTY_KIND = "__property__"
KINDS = frozenset({NAMESPACE_KIND, KIND_KIND, PROPERTY_KIND})

REPRESENTATIONS = {
    keycodec.TAG_NULL: "NULL",
    keycodec.TAG_INT: "INT64",
    keycodec.TAG_BOOL: "BOOLEAN",
    keycodec.TAG_BOOL + 1: "BOOLEAN",
    keycodec.TAG_BYTES: "STRING",
    keycodec.TAG_DOUBLE: "DOUBLE",
    keycodec.TAG_GEO: "POINT",
    keycodec.TAG_KEY: "REFERENCE",
}


def check(spec: Spec) -> None:
    for branch in spec.branches:
        if branch.properties:
            raise invalid("Metadata queries can only filter on __key__.")
    if any(o.name != filters.KEY_PROPERTY or o.descending for o in spec.orders):
        raise invalid("Metadata queries can only be ordered by __key__ ascending.")
    if spec.projection:
        raise invalid("Metadata queries cannot project properties.")


def rows(ctx: Context) -> Iterator[Row]:
    spec = ctx.spec
    check(spec)
    if spec.kind == NAMESPACE_KIND:
        produced = _namespaces(ctx)
    elif spec.kind == KIND_KIND:
        produced = _kinds(ctx)
    else:
        produced = _properties(ctx)
    for path, entity in produced:
        encoded_path = keycodec.encode_path(path)
        if not any(filters.contains(b.key_ranges, encoded_path) for b in spec.branches):
            continue
        if spec.start.is_after(encoded_path):
            continue
        yield Row(encoded_path, encoded_path, None, entity)


def _first(ctx: Context, lo: bytes, hi: bytes) -> bytes | None:
    for version in ctx.store.scan(Family.INDEXES, lo, hi, ctx.read_ts):
        return version.encoded
    return None


def _skip_scan(ctx: Context, prefix: bytes, decode: Any) -> Iterator[tuple[Any, bytes]]:
    """Yield (decoded name, its whole prefix) once per distinct name under `prefix`."""
    hi = keycodec.prefix_end(prefix)
    ctx.tracker.extra.append(ReadRange(prefix, hi))
    lo = prefix
    while (found := _first(ctx, lo, hi)) is not None:
        name, end = decode(found, len(prefix))
        yield name, found[:end]
        lo = keycodec.prefix_end(found[:end])


def _unescape_str(buf: bytes, pos: int) -> tuple[str, int]:
    raw, end = keycodec.unescape(buf, pos)
    return raw.decode(), end


def _entity(spec: Spec, path: tuple[keycodec.PathElement, ...]) -> Any:
    entity = indexing.EntityPb()
    p = spec.partition
    entity.key.CopyFrom(keys.build(p.project, p.database, p.namespace, path))
    return entity


def _namespaces(ctx: Context) -> Iterator[tuple[tuple[keycodec.PathElement, ...], Any]]:
    p = ctx.spec.partition
    prefix = (
        indexing.KIND_INDEX
        + keycodec.escape(p.project.encode())
        + keycodec.escape(p.database.encode())
    )
    for namespace, _ in _skip_scan(ctx, prefix, _unescape_str):
        path: tuple[keycodec.PathElement, ...] = ((NAMESPACE_KIND, namespace or 1),)
        yield path, _entity(ctx.spec, path)


def _kinds(ctx: Context) -> Iterator[tuple[tuple[keycodec.PathElement, ...], Any]]:
    prefix = indexing.KIND_INDEX + ctx.spec.encoded_partition
    for kind, _ in _skip_scan(ctx, prefix, _unescape_str):
        path: tuple[keycodec.PathElement, ...] = ((KIND_KIND, kind),)
        yield path, _entity(ctx.spec, path)


def _properties(ctx: Context) -> Iterator[tuple[tuple[keycodec.PathElement, ...], Any]]:
    spec = ctx.spec
    prefix = indexing.PROPERTY_INDEX + spec.encoded_partition
    for kind, kind_prefix in _skip_scan(ctx, prefix, _unescape_str):
        kind_path = keycodec.encode_path_prefix(((KIND_KIND, kind),))
        if not any(
            filters.intersect(b.key_ranges, [(kind_path, keycodec.prefix_end(kind_path))])
            for b in spec.branches
        ):
            continue
        for name, name_prefix in _skip_scan(ctx, kind_prefix, _unescape_str):
            path: tuple[keycodec.PathElement, ...] = ((KIND_KIND, kind), (PROPERTY_KIND, name))
            entity = _entity(spec, path)
            if spec.result_kind == 1:  # FULL: the representations need a scan per type
                reps = entity.properties["property_representation"].array_value
                seen: list[str] = []
                for tag, _ in _skip_scan(ctx, name_prefix, _tag):
                    rep = REPRESENTATIONS.get(tag)
                    if rep is not None and rep not in seen:
                        seen.append(rep)
                for rep in sorted(seen):
                    reps.values.add().string_value = rep
            yield path, entity


def _tag(buf: bytes, pos: int) -> tuple[int, int]:
    return buf[pos], pos + 1
