"""objstore: the same contract on a folder and on a real S3-compatible server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.objstore_server import S3Server
from zonestore_node.backup import objstore


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[objstore.ObjectStore]:
    if request.param == "file":
        yield objstore.open_store((tmp_path / "store").as_uri())
        return
    server: S3Server = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    store = objstore.open_store(server.url(bucket, "some/prefix"), **server.store_args())
    yield store
    store.close()


def test_put_get_list_head_delete_round_trip(store: objstore.ObjectStore) -> None:
    store.put_bytes("a/one.txt", b"first")
    store.put_bytes("a/two.txt", b"second!")
    store.put_bytes("b/three.txt", b"")
    assert store.get_bytes("a/one.txt") == b"first"
    assert [(i.key, i.size) for i in store.list("a/")] == [("a/one.txt", 5), ("a/two.txt", 7)]
    assert [i.key for i in store.list()] == ["a/one.txt", "a/two.txt", "b/three.txt"]
    assert [i.key for i in store.list("a/t")] == ["a/two.txt"]
    assert store.head("a/two.txt") == objstore.ObjectInfo("a/two.txt", 7)
    assert store.head("a/missing") is None
    assert store.exists("b/three.txt")
    store.delete("a/one.txt")
    store.delete("a/one.txt")  # deleting a missing object is fine
    assert not store.exists("a/one.txt")
    assert store.delete_prefix("") == 2
    assert store.list() == []


def test_missing_object_is_named(store: objstore.ObjectStore) -> None:
    with pytest.raises(objstore.ObjectNotFound, match="nothing/here"):
        store.get_bytes("nothing/here")


def test_large_streams_go_up_in_parts_and_come_back_whole(
    store: objstore.ObjectStore, tmp_path: Path
) -> None:
    block = os.urandom(1 << 20)
    total = objstore.MULTIPART_THRESHOLD + objstore.PART_SIZE + 12345  # three parts

    def chunks() -> Iterator[bytes]:
        sent = 0
        while sent < total:
            piece = block[: min(len(block), total - sent)]
            sent += len(piece)
            yield piece

    assert store.put_stream("big/stream", chunks()) == total
    assert store.head("big/stream") == objstore.ObjectInfo("big/stream", total)
    out = tmp_path / "out"
    assert store.get_file("big/stream", out) == total
    assert out.read_bytes() == b"".join(chunks())
    source = tmp_path / "source"
    source.write_bytes(out.read_bytes()[: objstore.MULTIPART_THRESHOLD + 1])
    assert store.put_file("big/file", source) == source.stat().st_size
    assert store.get_bytes("big/file") == source.read_bytes()


def test_a_failed_streaming_put_leaves_no_object(store: objstore.ObjectStore) -> None:
    def broken() -> Iterator[bytes]:
        yield os.urandom(objstore.MULTIPART_THRESHOLD)  # past the first part
        yield b"x" * 10
        raise OSError("the source went away")

    with pytest.raises(OSError, match="went away"):
        store.put_stream("half", broken())
    assert not store.exists("half")
    assert store.list() == []


def test_bad_urls_and_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        objstore.open_store("ftp://host/x")
    with pytest.raises(ValueError, match="local folder"):
        objstore.open_store("file://relative/x")
    with pytest.raises(ValueError, match="bucket"):
        objstore.open_store("s3:///prefix")
    store = objstore.open_store(tmp_path.as_uri())
    for key in ("../escape", "/abs", "a//b", "dir/"):
        with pytest.raises(ValueError, match="bad object key"):
            store.put_bytes(key, b"x")
