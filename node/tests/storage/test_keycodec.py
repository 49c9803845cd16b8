"""Property tests: the encodings round-trip and preserve Datastore's order."""

from __future__ import annotations

import math
import struct

from hypothesis import given
from hypothesis import strategies as st

from zonestore_node.storage import keycodec

names = st.text(min_size=1, max_size=12)
idents = st.one_of(st.integers(min_value=1, max_value=(1 << 63) - 1), names)
paths = st.lists(st.tuples(names, idents), min_size=1, max_size=4).map(tuple)
int64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)


def _ident_order(ident: int | str) -> tuple[int, object]:
    return (0, ident) if isinstance(ident, int) else (1, ident.encode())


def _path_order(path: tuple[tuple[str, int | str], ...]) -> list[tuple[bytes, tuple[int, object]]]:
    return [(kind.encode(), _ident_order(ident)) for kind, ident in path]


@given(st.binary())
def test_escaped_strings_round_trip(raw: bytes) -> None:
    encoded = keycodec.escape(raw) + b"tail"
    assert keycodec.unescape(encoded, 0) == (raw, len(encoded) - 4)


@given(st.binary(), st.binary())
def test_escaped_strings_sort_like_the_raw_bytes(a: bytes, b: bytes) -> None:
    assert (keycodec.escape(a) < keycodec.escape(b)) == (a < b)


@given(int64, int64)
def test_integers_sort_numerically(a: int, b: int) -> None:
    assert (keycodec.value_int(a) < keycodec.value_int(b)) == (a < b)
    assert keycodec.decode_value(keycodec.value_int(a), 0)[0] == a


@given(st.floats(allow_nan=True), st.floats(allow_nan=True))
def test_doubles_sort_numerically_with_nan_first(a: float, b: float) -> None:
    ea, eb = keycodec.value_double(a), keycodec.value_double(b)
    if math.isnan(a) or math.isnan(b):
        if math.isnan(a) and not math.isnan(b):
            assert ea < eb
        return
    if a == b:  # -0.0 and 0.0 are equal in value but may encode differently
        return
    assert (ea < eb) == (a < b)
    decoded = keycodec.decode_value(ea, 0)[0]
    assert struct.pack(">d", decoded) == struct.pack(">d", a)


@given(paths, paths)
def test_keys_sort_by_path_elements_with_ids_before_names(p: tuple, q: tuple) -> None:  # type: ignore[type-arg]
    a = keycodec.encode_key("proj", "", "ns", p)
    b = keycodec.encode_key("proj", "", "ns", q)
    assert (a < b) == (_path_order(p) < _path_order(q))
    assert keycodec.decode_key(a)[3] == p


@given(paths, paths)
def test_a_parent_sorts_before_its_children_and_shares_their_prefix(p: tuple, q: tuple) -> None:  # type: ignore[type-arg]
    child = p + q
    prefix = keycodec.encode_path_prefix(p)
    assert keycodec.encode_path(child).startswith(prefix)
    assert keycodec.encode_path(p) < keycodec.encode_path(child)


@given(
    paths,
    st.integers(min_value=0, max_value=(1 << 63)),
    st.integers(min_value=0, max_value=(1 << 63)),
)
def test_newer_versions_of_a_key_sort_first(p: tuple, t1: int, t2: int) -> None:  # type: ignore[type-arg]
    encoded = keycodec.encode_key("proj", "db", "", p)
    v1, v2 = keycodec.versioned(encoded, t1), keycodec.versioned(encoded, t2)
    assert (v1 < v2) == (t1 > t2)
    assert keycodec.split_versioned(v1) == (encoded, t1)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    int64,
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.tuples(st.just("ts"), int64),
    st.tuples(
        st.just("geo"),
        st.floats(min_value=-90, max_value=90),
        st.floats(min_value=-180, max_value=180),
    ),
    st.tuples(st.just("key"), st.just("p"), st.just(""), st.just(""), paths),
)


def encode(v: object) -> bytes:
    if v is None:
        return keycodec.value_null()
    if isinstance(v, bool):
        return keycodec.value_bool(v)
    if isinstance(v, int):
        return keycodec.value_int(v)
    if isinstance(v, float):
        return keycodec.value_double(v)
    if isinstance(v, str):
        return keycodec.value_string(v)
    if isinstance(v, bytes):
        return keycodec.value_blob(v)
    assert isinstance(v, tuple)
    if v[0] == "ts":
        return keycodec.value_timestamp(v[1])
    if v[0] == "geo":
        return keycodec.value_geo(v[1], v[2])
    return keycodec.value_key(v[1], v[2], v[3], v[4])


def datastore_order(v: object) -> tuple:  # type: ignore[type-arg]
    """Datastore's cross-type order, written naively: the model the codec must match."""
    if v is None:
        return (0,)
    if isinstance(v, bool):
        return (2, v)
    if isinstance(v, int):
        return (1, v, 0)
    if isinstance(v, float):
        return (4, v)
    if isinstance(v, str):
        return (3, v.encode(), 1)
    if isinstance(v, bytes):
        return (3, v, 0)
    assert isinstance(v, tuple)
    if v[0] == "ts":
        return (1, v[1], 1)
    if v[0] == "geo":
        return (5, v[1], v[2])
    return (6, _path_order(v[4]))


@given(scalars, scalars)
def test_index_values_follow_datastores_cross_type_order(a: object, b: object) -> None:
    oa, ob = datastore_order(a), datastore_order(b)
    if isinstance(a, float) and isinstance(b, float) and a == b:
        return
    if oa == ob:
        return
    assert (encode(a) < encode(b)) == (oa < ob)


@given(scalars)
def test_index_values_round_trip_and_are_prefix_free(v: object) -> None:
    raw = encode(v)
    decoded, end = keycodec.decode_value(raw + b"\x07rest", 0)
    assert end == len(raw)
    if isinstance(v, float) and v == 0.0:
        return
    assert decoded == v


@given(st.binary(max_size=6), st.binary(max_size=6))
def test_inverted_encodings_sort_in_reverse(a: bytes, b: bytes) -> None:
    ea, eb = keycodec.value_blob(a), keycodec.value_blob(b)
    if a != b:
        assert (keycodec.invert(ea) < keycodec.invert(eb)) == (a > b)


@given(st.binary(min_size=1, max_size=6), st.binary(max_size=4))
def test_prefix_end_bounds_every_extension(prefix: bytes, tail: bytes) -> None:
    end = keycodec.prefix_end(prefix)
    assert prefix + tail < end
    assert prefix < end
