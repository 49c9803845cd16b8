"""Export and import between a running zonestore group and a managed export, through the
group's own Datastore API (google.datastore.v1 over gRPC, raw protobuf messages).

Export is consistent at one read time: the first query (namespaces, a strong read)
fixes `read_time`, and every later query reads at it, so the export shows the group as
it was at that instant, whatever commits meanwhile (the read time must stay inside the
node's version retention, an hour by default). Entities go out kind by kind in key order,
framed as LevelDB records into `output-N` objects written all or nothing; each folder's
`export_metadata` follows its outputs, and the `overall_export_metadata` comes last, so
an export without it is incomplete.

Import streams: records are read a block at a time, decoded, and sent as UPSERT
mutations in non-transactional commits of at most MAX_BATCH_MUTATIONS mutations and
MAX_BATCH_BYTES bytes (under the node's 10 MiB request and transaction caps), a few
commits in flight. Memory stays bounded by the batches in flight, whatever the export's
size. Each commit is atomic and an upsert, so a rerun writes the same entities again
(idempotent) and a stopped import resumes by running it again. A damaged record stops
the import after the entities before it are committed, naming the file and the record's
byte offset; no entity is half-written.
"""

from __future__ import annotations

import collections
import contextlib
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from google.cloud.datastore_v1.types import datastore as ds
from google.cloud.datastore_v1.types import query as q
from google.protobuf.message import DecodeError

from zonestore_node.backup import objstore
from zonestore_node.export import entities, layout, records

SERVICE = "/google.datastore.v1.Datastore/"
# Per commit: well under the node's 10 MiB request and transaction caps, and 500
# mutations (the legacy cap some nodes run with, --legacy-limits).
MAX_BATCH_MUTATIONS = 500
MAX_BATCH_BYTES = 4 << 20
COMMITS_IN_FLIGHT = 4
# An output file is closed at this size and the next one begun.
OUTPUT_FILE_BYTES = 128 << 20
RETRIED_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)
RETRIES = 8
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]

RunQueryRequest: Any = ds.RunQueryRequest.pb()
RunQueryResponse: Any = ds.RunQueryResponse.pb()
CommitRequest: Any = ds.CommitRequest.pb()
CommitResponse: Any = ds.CommitResponse.pb()
NOT_FINISHED = q.QueryResultBatch.MoreResultsType.NOT_FINISHED.value


class TransferError(Exception):
    """An export or import that stopped; the message says where and why."""


class _InputError(TransferError):
    """The export being imported is damaged or incomplete (not the node's doing)."""


# ------------------------------------------------------------------------------ the node


def client_address(admin: str, token: str = "") -> str:
    """The client (gRPC) address of the replica whose admin address this is."""
    request = urllib.request.Request(f"http://{admin}/admin/status")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise TransferError(
                f"the admin API at {admin} wants a token: --admin-token-file FILE"
            ) from None
        raise TransferError(f"the admin API at {admin} answered {exc.code}") from None
    except OSError as exc:
        raise TransferError(f"cannot reach the admin API at {admin}: {exc}") from None
    for member in status.get("members", []):
        if member.get("id") == status.get("node_id") and member.get("client_address"):
            return str(member["client_address"])
    raise TransferError(f"the replica at {admin} does not report its client address")


class Node:
    """The Datastore API of one replica (any replica serves any request)."""

    def __init__(self, address: str, token: str = "", tls_ca: bytes | None = None) -> None:
        """`token`: sent as `authorization: Bearer` (nodes run with --auth-tokens);
        `tls_ca`: PEM of the CA that signed the client port's certificate (client TLS)."""
        self.address = address
        if tls_ca is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=tls_ca)
            self.channel = grpc.secure_channel(address, credentials, options=GRPC_OPTIONS)
        else:
            self.channel = grpc.insecure_channel(address, options=GRPC_OPTIONS)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._run_query = self.channel.unary_unary(
            SERVICE + "RunQuery",
            request_serializer=RunQueryRequest.SerializeToString,
            response_deserializer=RunQueryResponse.FromString,
        )
        self.commit = self.channel.unary_unary(
            SERVICE + "Commit",
            request_serializer=CommitRequest.SerializeToString,
            response_deserializer=CommitResponse.FromString,
        )

    def close(self) -> None:
        self.channel.close()

    def run_query(self, request: Any) -> Any:
        for attempt in range(RETRIES):
            try:
                return self._run_query(request, timeout=120, metadata=self.metadata)
            except grpc.RpcError as exc:
                if exc.code() not in RETRIED_CODES or attempt == RETRIES - 1:
                    raise TransferError(
                        f"query failed at {self.address}: {exc.code().name}: {exc.details()}"
                    ) from None
                time.sleep(min(0.1 * 2**attempt, 3.0))
        raise AssertionError("unreachable")


# ------------------------------------------------------------------------------ progress


class Progress:
    """Entities, bytes and rate, printed at most once a `interval` seconds."""

    def __init__(self, label: str, out: IO[str] | None = None, interval: float = 1.0) -> None:
        self.label = label
        self.out = out if out is not None else sys.stderr
        self.interval = interval
        self.entities = 0
        self.bytes = 0
        self.started = time.monotonic()
        self._last = self.started

    def add(self, entities: int, nbytes: int) -> None:
        self.entities += entities
        self.bytes += nbytes
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.print()

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.entities / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        return (
            f"{self.label}: {self.entities:,} entities, {self.bytes / (1 << 20):,.1f} MiB, "
            f"{self.rate():,.0f} entities/s"
        )

    def print(self) -> None:
        print(self.line(), file=self.out, flush=True)


# ------------------------------------------------------------------------------ export


@dataclass
class ExportResult:
    overall_key: str  # relative to the store's root
    url: str  # the overall metadata's full location
    entities: int
    bytes: int
    read_time_us: int
    seconds: float


def _query(project: str, database: str, namespace: str, kind: str, read_time_us: int) -> Any:
    request = RunQueryRequest()
    request.project_id = project
    request.database_id = database
    request.partition_id.project_id = project
    request.partition_id.database_id = database
    request.partition_id.namespace_id = namespace
    request.query.kind.add().name = kind
    if read_time_us:
        seconds, rem = divmod(read_time_us, 1_000_000)
        request.read_options.read_time.seconds = seconds
        request.read_options.read_time.nanos = rem * 1000
    return request


def _scan(node: Node, request: Any) -> Iterator[Any]:
    """Every entity of a query, batch after batch (cursors), at the request's read time."""
    while True:
        batch = node.run_query(request).batch
        for result in batch.entity_results:
            yield result.entity
        if batch.more_results != NOT_FINISHED or not batch.entity_results:
            return
        request.query.start_cursor = batch.end_cursor


def _metadata_names(node: Node, request: Any) -> tuple[list[str], int]:
    names: list[str] = []
    response_read_time = 0
    while True:
        response = node.run_query(request)
        batch = response.batch
        if not response_read_time:
            ts = batch.read_time
            response_read_time = ts.seconds * 1_000_000 + ts.nanos // 1000
        for result in batch.entity_results:
            element = result.entity.key.path[-1]
            names.append(element.name if element.WhichOneof("id_type") == "name" else "")
        if batch.more_results != NOT_FINISHED or not batch.entity_results:
            return names, response_read_time
        request.query.start_cursor = batch.end_cursor


def _export_name(now: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    return f"{stamp}_{int(now * 1_000_000) % 100_000:05d}"


class _Peekable:
    def __init__(self, it: Iterator[Any]) -> None:
        self._it = it
        self._head: collections.deque[Any] = collections.deque()

    def exhausted(self) -> bool:
        if self._head:
            return False
        try:
            self._head.append(next(self._it))
        except StopIteration:
            return True
        return False

    def __next__(self) -> Any:
        if self._head:
            return self._head.popleft()
        return next(self._it)

    def __iter__(self) -> _Peekable:
        return self


def export_entities(
    node: Node,
    store: objstore.ObjectStore,
    project: str,
    database: str = "",
    *,
    kinds: list[str] | None = None,
    namespaces: list[str] | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Write the project's entities (the filtered kinds and namespaces) as a managed
    export under `<name>/` in the store; returns where its overall metadata is."""
    started = time.time()
    progress = progress or Progress("export")
    name = name or _export_name(started)
    ns_request = _query(project, database, "", "__namespace__", 0)
    all_namespaces, read_time_us = _metadata_names(node, ns_request)
    if namespaces is not None:
        wanted = [layout.normalize_namespace(n) for n in namespaces]
        chosen = [n for n in all_namespaces if n in wanted]
    else:
        chosen = all_namespaces
    kinds_of: dict[str, list[str]] = {}
    for namespace in chosen:
        found, _ = _metadata_names(
            node, _query(project, database, namespace, "__kind__", read_time_us)
        )
        kinds_of[namespace] = [k for k in found if not k.startswith("__")]
    sets = layout.entity_sets(
        None if namespaces is None else [layout.normalize_namespace(n) for n in namespaces],
        kinds,
    )
    pointers: list[layout.Pointer] = []
    for entity_set in sets:
        folder = f"{name}/{entity_set.folder}"

        def entities_of(es: layout.EntitySet = entity_set) -> Iterator[Any]:
            for namespace in chosen:
                for kind in kinds_of[namespace]:
                    if es.holds(namespace, kind):
                        request = _query(project, database, namespace, kind, read_time_us)
                        yield from _scan(node, request)

        source = _Peekable(entities_of())
        files: list[str] = []
        counts = [0, 0]  # entities, bytes of this set

        def framed(source: _Peekable = source, counts: list[int] = counts) -> Iterator[bytes]:
            sink = _Chunks()
            writer = records.Writer(sink)  # type: ignore[arg-type]
            while writer.offset < OUTPUT_FILE_BYTES and not source.exhausted():
                before = writer.offset
                writer.write(entities.encode(next(source)))
                counts[0] += 1
                counts[1] += writer.offset - before
                progress.add(1, writer.offset - before)
                if sink.size >= objstore.CHUNK_SIZE:
                    yield sink.take()
            if sink.size:
                yield sink.take()

        while True:
            key = f"output-{len(files)}"
            store.put_stream(f"{folder}/{key}", framed())
            files.append(key)
            if source.exhausted():
                break
        ended = time.time()
        store.put_bytes(
            f"{name}/{entity_set.metadata_key}",
            layout.encode_backup(name, int(started * 1e6), int(ended * 1e6), entity_set, files),
        )
        pointers.append(layout.Pointer(entity_set, entity_set.metadata_key, counts[0], counts[1]))
    overall_key = f"{name}/{name}{layout.OVERALL_SUFFIX}"
    store.put_bytes(overall_key, layout.encode_overall(pointers))
    progress.print()
    return ExportResult(
        overall_key,
        where(store, overall_key),
        progress.entities,
        progress.bytes,
        read_time_us,
        time.time() - started,
    )


class _Chunks:
    """A write-only sink that hands its bytes over in chunks."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self._parts.append(data)
        self.size += len(data)
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts = []
        self.size = 0
        return data


# ------------------------------------------------------------------------------ import


class _ChunkReader:
    """A read(n) file over an object's chunks (so records are read a block at a time)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()

    def read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data


@dataclass
class ImportResult:
    entities: int
    bytes: int
    project: str
    seconds: float
    skipped: int = 0  # records the filters left out
    files: list[str] = field(default_factory=list)


class _Committer:
    """Sends UPSERT batches, a few commits in flight; retries what is safe to retry."""

    def __init__(self, node: Node, project: str, database: str, progress: Progress) -> None:
        self.node = node
        self.project = project
        self.database = database
        self.progress = progress
        self.in_flight: collections.deque[tuple[Any, Any, int, int]] = collections.deque()
        self.request = self._new()
        self.batch_bytes = 0

    def _new(self) -> Any:
        request = CommitRequest()
        request.project_id = self.project
        request.database_id = self.database
        request.mode = ds.CommitRequest.Mode.NON_TRANSACTIONAL.value
        return request

    def add(self, entity: Any) -> None:
        size = entity.ByteSize()
        if self.request.mutations and (
            len(self.request.mutations) >= MAX_BATCH_MUTATIONS
            or self.batch_bytes + size > MAX_BATCH_BYTES
        ):
            self.send()
        self.request.mutations.add().upsert.CopyFrom(entity)
        self.batch_bytes += size

    def send(self) -> None:
        if not self.request.mutations:
            return
        while len(self.in_flight) >= COMMITS_IN_FLIGHT:
            self._settle()
        request = self.request
        future = self.node.commit.future(request, timeout=120, metadata=self.node.metadata)
        self.in_flight.append((future, request, len(request.mutations), self.batch_bytes))
        self.request = self._new()
        self.batch_bytes = 0

    def _settle(self) -> None:
        future, request, count, nbytes = self.in_flight.popleft()
        attempt = 0
        while True:
            try:
                future.result()
                break
            except grpc.RpcError as exc:
                code = exc.code()
                if code in RETRIED_CODES and attempt < RETRIES:
                    time.sleep(min(0.1 * 2**attempt, 3.0))
                    attempt += 1
                    future = self.node.commit.future(
                        request, timeout=120, metadata=self.node.metadata
                    )
                    continue
                first = request.mutations[0].upsert.key
                raise TransferError(
                    f"a commit of {count} entities (from {_key_text(first)}) failed: "
                    f"{code.name}: {exc.details()}"
                ) from None
        self.progress.add(count, nbytes)

    def flush(self) -> None:
        self.send()
        while self.in_flight:
            self._settle()

    def abandon(self) -> None:
        """After a failed commit: wait for the other commits in flight, send nothing more."""
        for future, *_ in self.in_flight:
            with contextlib.suppress(grpc.RpcError):  # the first failure is the one reported
                future.result()
        self.in_flight.clear()


def _key_text(key: Any) -> str:
    path = "/".join(
        f"{e.kind}:{e.name if e.WhichOneof('id_type') == 'name' else e.id}" for e in key.path
    )
    ns = key.partition_id.namespace_id
    return f"{ns + ':' if ns else ''}{path}"


def where(store: objstore.ObjectStore, key: str) -> str:
    """How to name an object to a person: a plain path for a folder, else its URL."""
    if isinstance(store, objstore.FileStore):
        return str(store.root.joinpath(*key.split("/")))
    return f"{store.url.rstrip('/')}/{key}"


def split_location(location: str) -> tuple[objstore.ObjectStore, str]:
    """`PATH/x.overall_export_metadata`, `file:///...`, `s3://bucket/...`: the store of its
    folder and the key of the file in it. A folder holding one such file names it too."""
    if "://" not in location:
        path = Path(location).resolve()
        if path.is_dir():
            found = sorted(path.glob(f"*{layout.OVERALL_SUFFIX}"))
            if len(found) != 1:
                raise TransferError(
                    f"{location}: expected one *{layout.OVERALL_SUFFIX} file in the folder, "
                    f"found {len(found)}"
                )
            path = found[0]
        return objstore.open_store(path.parent.as_uri()), path.name
    folder, _, key = location.rstrip("/").rpartition("/")
    if not key.endswith(layout.OVERALL_SUFFIX):
        raise TransferError(f"{location}: name the *{layout.OVERALL_SUFFIX} file")
    return objstore.open_store(folder), key


def import_entities(
    node: Node,
    store: objstore.ObjectStore,
    overall_key: str,
    *,
    project: str | None = None,
    database: str = "",
    kinds: list[str] | None = None,
    namespaces: list[str] | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Upsert the export's entities (the filtered kinds and namespaces) into `project`
    (by default the project the export's keys name)."""
    started = time.time()
    progress = progress or Progress("import")
    try:
        overall = store.get_bytes(overall_key)
    except objstore.ObjectNotFound:
        raise TransferError(f"{where(store, overall_key)}: no such file") from None
    try:
        pointers = layout.decode_overall(overall, overall_key)
    except layout.BadExport as exc:
        raise TransferError(str(exc)) from None
    base = overall_key.rpartition("/")[0]
    wanted_ns = None if namespaces is None else {layout.normalize_namespace(n) for n in namespaces}
    wanted_kinds = None if kinds is None else set(kinds)
    committer: _Committer | None = None
    target: entities.Target | None = None
    skipped = 0
    done_files: list[str] = []

    def join(*parts: str) -> str:
        return "/".join(p for p in parts if p)

    try:
        for pointer in pointers:
            es = pointer.entity_set
            if wanted_ns is not None and es.namespace is not None and es.namespace not in wanted_ns:
                continue
            if wanted_kinds is not None and es.kind is not None and es.kind not in wanted_kinds:
                continue
            metadata_key = join(base, pointer.metadata_key)
            try:
                files = layout.decode_backup(store.get_bytes(metadata_key), metadata_key)
            except objstore.ObjectNotFound:
                raise _InputError(
                    f"{metadata_key}: no such file (the export is incomplete)"
                ) from None
            except layout.BadExport as exc:
                raise _InputError(str(exc)) from None
            folder = metadata_key.rpartition("/")[0]
            for file in files:
                file_key = join(folder, file)
                try:
                    reader = _ChunkReader(store.iter_chunks(file_key))
                except objstore.ObjectNotFound:
                    raise _InputError(
                        f"{file_key}: no such file (the export is incomplete)"
                    ) from None
                offset = 0
                try:
                    for at, record in records.read_records(reader):  # type: ignore[arg-type]
                        offset = at
                        if target is None:
                            app = entities.app_of(record)
                            target = entities.Target(
                                project or entities.project_of_app(app), database, app
                            )
                            committer = _Committer(node, target.project, database, progress)
                        assert committer is not None
                        entity = entities.decode(record, target)
                        key = entity.key
                        if (
                            wanted_ns is not None and key.partition_id.namespace_id not in wanted_ns
                        ) or (wanted_kinds is not None and key.path[-1].kind not in wanted_kinds):
                            skipped += 1
                            continue
                        committer.add(entity)
                except records.CorruptRecord as exc:
                    raise _InputError(
                        f"{where(store, file_key)}: {exc.reason} at record byte offset {exc.offset}"
                    ) from None
                except (entities.ConversionError, DecodeError) as exc:
                    raise _InputError(
                        f"{where(store, file_key)}: the record at byte offset "
                        f"{offset} is not an entity: {exc}"
                    ) from None
                done_files.append(file_key)
        if committer is not None:
            committer.flush()
    except _InputError as failure:
        # Commit every entity read before the damage, so a rerun has less to redo.
        if committer is not None:
            try:
                committer.flush()
            except TransferError as commit_failure:
                raise TransferError(f"{failure}; and {commit_failure}") from None
        raise TransferError(
            f"{failure}\nimport stopped: {progress.entities:,} entities before it are "
            "imported; fix the input and run the import again (it upserts, so entities "
            "already imported are simply written again)"
        ) from None
    except TransferError:
        if committer is not None:
            committer.abandon()
        raise
    progress.print()
    return ImportResult(
        progress.entities,
        progress.bytes,
        target.project if target else (project or ""),
        time.time() - started,
        skipped,
        done_files,
    )
