"""Object storage: one small interface over a local folder and S3-compatible storage.

    open_store("file:///var/backups/zs")              a folder (e.g. a mounted volume)
    open_store("s3://bucket/some/prefix",              S3 or anything that speaks it
               endpoint="http://127.0.0.1:9000", region="us-east-1")

Keys are relative to the URL's folder or prefix, `/`-separated, never absolute and never
with `..` segments. Every operation is synchronous and blocking (callers on an event loop
use `asyncio.to_thread`); an `ObjectStore` may be shared between threads.

Guarantees both backends give, and that backups and exports rely on:
- a `put*` is all or nothing: a reader sees the whole object or no object (the folder
  backend writes a hidden temporary file, fsyncs it and renames it; S3 publishes an
  object, or completes a multipart upload, atomically). A failed streaming put leaves no
  object behind (the S3 multipart upload is aborted).
- `list(prefix)` returns every object whose key starts with `prefix`, sorted by key.
- a missing object raises `ObjectNotFound` naming the key; any other failure raises
  `ObjectStoreError` naming the store and key.

S3 goes through boto3 (botocore signs; there is no hand-written signing here). Credentials
and settings come from the usual AWS places: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`, `AWS_PROFILE`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
`AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_S3`, or explicit arguments, which win. With an
endpoint (anything not AWS itself) requests use path-style addressing, and checksums are
sent only where S3 requires them, which S3-compatible servers accept.

This module imports nothing from zonestore: it moves bytes.
"""

from __future__ import annotations

import abc
import contextlib
import os
import posixpath
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

# Streaming reads and writes move data in chunks of this size.
CHUNK_SIZE = 1 << 20
# S3 multipart: objects larger than this go up in parts of PART_SIZE (S3's minimum part is
# 5 MiB, except the last one).
MULTIPART_THRESHOLD = 16 << 20
PART_SIZE = 16 << 20


class ObjectStoreError(Exception):
    """A storage operation failed; the message names the store and the key."""


class ObjectNotFound(ObjectStoreError):
    """The object does not exist."""

    def __init__(self, store: str, key: str) -> None:
        self.key = key
        super().__init__(f"object {key!r} not found in {store}")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str  # relative to the store's root
    size: int  # bytes


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or key.endswith("/"):
        raise ValueError(f"bad object key {key!r}: must be relative and name an object")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"bad object key {key!r}: empty, '.' or '..' segment")
    return key


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _chunks_of(reader: IO[bytes]) -> Iterator[bytes]:
    while chunk := reader.read(CHUNK_SIZE):
        yield chunk


class ObjectStore(abc.ABC):
    """A flat namespace of immutable objects under one root (folder or bucket prefix)."""

    url: str

    # -- writes ---------------------------------------------------------------------------
    @abc.abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the concatenation of `chunks` under `key` (replacing any object there);
        returns its size. All or nothing."""

    def put_bytes(self, key: str, data: bytes) -> None:
        self.put_stream(key, [data])

    def put_file(self, key: str, path: str | os.PathLike[str]) -> int:
        """Upload a local file (streamed; multipart on S3 when large). Returns its size."""
        with open(path, "rb") as reader:
            return self.put_stream(key, _chunks_of(reader))

    # -- reads ----------------------------------------------------------------------------
    @abc.abstractmethod
    def iter_chunks(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks, streamed. Raises ObjectNotFound before the first
        chunk when the object is missing."""

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))

    def get_file(self, key: str, path: str | os.PathLike[str]) -> int:
        """Download to a local file (written in place, then fsynced). Returns its size."""
        size = 0
        chunks = self.iter_chunks(key)
        with open(path, "wb") as writer:
            for chunk in chunks:
                writer.write(chunk)
                size += len(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        return size

    # -- metadata -------------------------------------------------------------------------
    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """The object's size, or None when it does not exist."""

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with `prefix` (a plain string prefix), by key."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under `prefix`; returns how many."""
        infos = self.list(prefix)
        for info in infos:
            self.delete(info.key)
        return len(infos)

    def close(self) -> None:  # noqa: B027 — optional hook
        """Release connections (optional)."""

    def __str__(self) -> str:
        return self.url


class FileStore(ObjectStore):
    """Objects as files under a folder; keys map to relative paths."""

    TMP_PREFIX = ".tmp-"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri().rstrip("/") + "/"  # url + key names an object

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).split("/"))

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.TMP_PREFIX, dir=path.parent)
        except OSError as exc:
            raise ObjectStoreError(f"cannot write {key!r} in {self.url}: {exc}") from exc
        size = 0
        try:
            with os.fdopen(fd, "wb") as writer:
                for chunk in chunks:  # the source's own errors pass through as they are
                    self._io(key, writer.write, chunk)
                    size += len(chunk)
                self._io(key, writer.flush)
                self._io(key, os.fsync, writer.fileno())
            self._io(key, os.replace, tmp, path)
            self._io(key, _fsync_dir, path.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return size

    def _io(self, key: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except OSError as exc:
            raise ObjectStoreError(f"cannot write {key!r} in {self.url}: {exc}") from exc

    def put_file(self, key: str, path: str | os.PathLike[str]) -> int:
        with open(path, "rb") as reader:
            return self.put_stream(key, _chunks_of(reader))

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            reader: BinaryIO = open(path, "rb")  # noqa: SIM115 — closed by the generator
        except FileNotFoundError:
            raise ObjectNotFound(self.url, key) from None
        except OSError as exc:
            raise ObjectStoreError(f"cannot read {key!r} in {self.url}: {exc}") from exc
        return self._read_all(reader)

    @staticmethod
    def _read_all(reader: BinaryIO) -> Iterator[bytes]:
        with reader:
            yield from _chunks_of(reader)

    def get_file(self, key: str, path: str | os.PathLike[str]) -> int:
        source = self._path(key)
        try:
            shutil.copyfile(source, path)
        except FileNotFoundError:
            if not source.exists():
                raise ObjectNotFound(self.url, key) from None
            raise
        with open(path, "rb+") as writer:
            os.fsync(writer.fileno())
        return os.path.getsize(path)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            stat = self._path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, stat.st_size)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        # Walk only the deepest folder that the prefix fully names.
        folder, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*folder.split("/")) if folder else self.root
        found: list[ObjectInfo] = []
        if not start.is_dir():
            return found
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(self.TMP_PREFIX):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        found.append(ObjectInfo(key, os.stat(os.path.join(dirpath, name)).st_size))
        found.sort(key=lambda info: info.key)
        return found

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        # Drop folders that the removal left empty (never the root).
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


class S3Store(ObjectStore):
    """Objects in an S3 bucket under a key prefix, through boto3."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        endpoint: str | None,
        region: str | None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
    ) -> None:
        import boto3  # imported here: a node without S3 destinations never loads it
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        endpoint = (
            endpoint
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )
        config_args: dict[str, Any] = {
            "retries": {"max_attempts": 5, "mode": "standard"},
            "connect_timeout": 10,
            "read_timeout": 60,
        }
        if endpoint:
            config_args["s3"] = {"addressing_style": "path"}
            config_args["request_checksum_calculation"] = "when_required"
            config_args["response_checksum_validation"] = "when_required"
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            region_name=region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1",
        )
        self._client: Any = session.client(
            "s3", endpoint_url=endpoint, config=Config(**config_args)
        )
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def _fail(self, op: str, key: str, exc: Exception) -> ObjectStoreError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            return ObjectNotFound(self.url, key)
        return ObjectStoreError(f"{op} {key!r} in {self.url} failed: {exc}")

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        full = self._key(key)
        buffer = bytearray()
        iterator = iter(chunks)
        # Small objects (the common case for manifests and segments): one PUT.
        for chunk in iterator:
            buffer += chunk
            if len(buffer) >= MULTIPART_THRESHOLD:
                return self._multipart(key, full, buffer, iterator)
        try:
            self._client.put_object(Bucket=self.bucket, Key=full, Body=bytes(buffer))
        except self._errors as exc:
            raise self._fail("put", key, exc) from exc
        return len(buffer)

    def _multipart(self, key: str, full: str, buffer: bytearray, rest: Iterator[bytes]) -> int:
        try:
            upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=full)[
                "UploadId"
            ]
        except self._errors as exc:
            raise self._fail("put", key, exc) from exc
        parts: list[dict[str, Any]] = []
        size = 0

        def send(data: bytes) -> None:
            number = len(parts) + 1
            answer = self._client.upload_part(
                Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=data
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})

        try:
            for chunk in rest:
                buffer += chunk
                while len(buffer) >= PART_SIZE:
                    send(bytes(buffer[:PART_SIZE]))
                    size += PART_SIZE
                    del buffer[:PART_SIZE]
            if buffer or not parts:
                send(bytes(buffer))
                size += len(buffer)
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=full, UploadId=upload_id
                )
            if isinstance(exc, self._errors):
                raise self._fail("put", key, exc) from exc
            raise
        return size

    def put_file(self, key: str, path: str | os.PathLike[str]) -> int:
        from boto3.s3.transfer import TransferConfig

        size = os.path.getsize(path)
        transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=PART_SIZE
        )
        try:
            self._client.upload_file(os.fspath(path), self.bucket, self._key(key), Config=transfer)
        except self._errors as exc:
            raise self._fail("put", key, exc) from exc
        except Exception as exc:  # boto3's S3UploadFailedError wraps the ClientError
            raise ObjectStoreError(f"put {key!r} in {self.url} failed: {exc}") from exc
        return size

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors as exc:
            raise self._fail("get", key, exc) from exc
        return self._stream(key, answer["Body"])

    def _stream(self, key: str, body: Any) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(CHUNK_SIZE)
        except self._errors as exc:
            raise self._fail("get", key, exc) from exc
        finally:
            body.close()

    def head(self, key: str) -> ObjectInfo | None:
        try:
            answer = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors as exc:
            error = self._fail("head", key, exc)
            if isinstance(error, ObjectNotFound):
                return None
            raise error from exc
        return ObjectInfo(key, int(answer["ContentLength"]))

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    found.append(ObjectInfo(item["Key"][len(self.prefix) :], int(item["Size"])))
        except self._errors as exc:
            raise self._fail("list", prefix or "(all)", exc) from exc
        found.sort(key=lambda info: info.key)
        return found

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors as exc:
            error = self._fail("delete", key, exc)
            if not isinstance(error, ObjectNotFound):
                raise error from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def open_store(
    url: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
) -> ObjectStore:
    """The store a URL names: `file:///abs/dir` or `s3://bucket[/prefix]`. Raises
    ValueError (with the reason) for anything else."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{url!r}: a file URL names a local folder: file:///abs/path")
        path = urllib.parse.unquote(parsed.path)
        if not path.startswith("/"):
            raise ValueError(f"{url!r}: the folder must be absolute (file:///abs/path)")
        return FileStore(Path(posixpath.normpath(path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"{url!r}: an S3 URL names a bucket: s3://bucket/prefix")
        return S3Store(
            parsed.netloc,
            urllib.parse.unquote(parsed.path),
            endpoint=endpoint,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
        )
    raise ValueError(f"{url!r}: unsupported destination; use file:///path or s3://bucket/prefix")
