"""The Admin API: google.datastore.admin.v1.DatastoreAdmin and google.longrunning.Operations.

ExportEntities and ImportEntities start a long-running operation and answer at once;
the work is export/transfer.py's `export_entities` / `import_entities`, run in a thread
against this node's own client port (the caller's `authorization` is passed on, so the
Datastore API checks the same token as for any read or write). Their progress (entities,
bytes) is the operation's metadata as production gives it (`ExportEntitiesMetadata`,
`ImportEntitiesMetadata`: `common.state`, start and end time, `progress_entities`,
`progress_bytes`); the result is `ExportEntitiesResponse.output_url` (the
`*.overall_export_metadata` file) or Empty, a failure a google.rpc.Status naming what
went wrong (a damaged record: the file and byte offset).

Operations live in the memory of the node that started them (the edge hands the Admin
API to the replica that receives it, node/edge/PROTOCOL.md): GetOperation, ListOperations,
CancelOperation and DeleteOperation must reach that node, and a restart forgets them (an
export or import is not resumed: an import is rerun, it upserts). CancelOperation stops
the work at its next entity (export: no overall metadata is written, so the export is
visibly incomplete; import: the entities committed before stay).

The index methods serve the composite index registry (model/indexing.py): the indexes
index.yaml declares, --auto-index creates, or CreateIndex asked for. Indexes are
registered for every project alike; vector indexes (index.yaml's vectorConfig), which
v1's Index message cannot describe, are not listed. CreateIndex and DeleteIndex go
through the leader's log (the edge relays them there) and are done when they answer: the
index is backfilled, or gone with its entries, by then.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
from google.cloud.datastore_admin_v1.types import datastore_admin as da
from google.cloud.datastore_admin_v1.types import index as ix
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2
from google.rpc import status_pb2

from zonestore_node.api import auth, errors, forward
from zonestore_node.api.datastore import Malformed, _lenient, _serializer, micros_to_timestamp
from zonestore_node.api.metrics import Metrics
from zonestore_node.backup import objstore
from zonestore_node.export import transfer
from zonestore_node.model import indexing
from zonestore_node.model.errors import Code, DatastoreError, invalid
from zonestore_node.replica.group import NotLeader
from zonestore_node.txn.service import DatastoreService

SERVICE = "google.datastore.admin.v1.DatastoreAdmin"
OPERATIONS = "google.longrunning.Operations"
KEPT_OPERATIONS = 1000  # finished operations beyond this are forgotten, oldest first
log = logging.getLogger("zonestore.admin_api")

Pb = Any
State: TypeAlias = da.CommonMetadata.State
Type: TypeAlias = da.OperationType
WRITES = frozenset({"ImportEntities", "CreateIndex", "DeleteIndex"})


class Cancelled(Exception):
    """CancelOperation was called: the work stops at its next entity."""


class _Progress(transfer.Progress):
    """transfer.Progress that feeds an operation's metadata and obeys its cancel."""

    def __init__(self, label: str, cancel: threading.Event) -> None:
        super().__init__(label, out=None)
        self.cancel = cancel

    def add(self, entities: int, nbytes: int) -> None:
        if self.cancel.is_set():
            raise Cancelled
        super().add(entities, nbytes)

    def print(self) -> None:
        log.info("admin.progress %s", self.line())


@dataclass(eq=False)
class Operation:
    """One long-running operation. `progress` is written by the worker thread (ints,
    read whole); everything else only on the event loop."""

    name: str
    project: str
    op_type: Type
    metadata_type: Any  # the raw metadata message class
    filter: Any = None  # raw EntityFilter, or None
    output_url_prefix: str = ""
    input_url: str = ""
    index_id: str = ""
    start_us: int = field(default_factory=lambda: int(time.time() * 1e6))
    end_us: int = 0
    state: State = State.PROCESSING
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: _Progress | None = None
    response: Any = None  # raw message once SUCCESSFUL
    error: status_pb2.Status | None = None
    task: asyncio.Task[None] | None = None

    @property
    def done(self) -> bool:
        return self.state in (State.SUCCESSFUL, State.FAILED, State.CANCELLED)

    def finish(self, state: State, response: Any = None, error: Any = None) -> None:
        self.state, self.response, self.error = state, response, error
        self.end_us = int(time.time() * 1e6)

    def to_pb(self) -> Any:
        md = self.metadata_type()
        common = md.common
        micros_to_timestamp(common.start_time, self.start_us)
        if self.end_us:
            micros_to_timestamp(common.end_time, self.end_us)
        common.operation_type = self.op_type.value
        common.state = self.state.value
        if self.progress is not None:
            md.progress_entities.work_completed = self.progress.entities
            md.progress_bytes.work_completed = self.progress.bytes
        if self.filter is not None:
            md.entity_filter.CopyFrom(self.filter)
        if self.op_type is Type.EXPORT_ENTITIES:
            md.output_url_prefix = self.output_url_prefix
        elif self.op_type is Type.IMPORT_ENTITIES:
            md.input_url = self.input_url
        else:
            md.index_id = self.index_id
        op = operations_pb2.Operation(name=self.name, done=self.done)
        op.metadata.Pack(md)
        if self.error is not None:
            op.error.CopyFrom(self.error)
        elif self.response is not None:
            op.response.Pack(self.response)
        return op


def _status(code: grpc.StatusCode, message: str) -> status_pb2.Status:
    return status_pb2.Status(code=code.value[0], message=message)


def _project_of_name(name: str) -> str:
    """The project of `projects/P/operations/ID` or `projects/P`."""
    parts = name.split("/")
    if len(parts) < 2 or parts[0] != "projects" or not parts[1]:
        raise invalid(f"{name!r} is not an operation name (projects/PROJECT/operations/ID).")
    return parts[1]


def output_store(prefix: str) -> tuple[objstore.ObjectStore, str]:
    """The store an export's `output_url_prefix` names (`file:///abs/folder` on the
    node's disk, `s3://bucket[/prefix]`) and the URL its keys are written under.
    INVALID_ARGUMENT for anything else (gs:// included)."""
    if not prefix:
        raise invalid("output_url_prefix is required: s3://BUCKET[/PREFIX] or file:///FOLDER.")
    if prefix.startswith("gs://"):
        raise invalid(
            f"output_url_prefix {prefix!r}: zonestore writes to S3-compatible storage "
            "(s3://BUCKET[/PREFIX]) or the node's disk (file:///FOLDER), not gs://."
        )
    try:
        store = objstore.open_store(prefix)
    except ValueError as exc:
        raise invalid(f"output_url_prefix: {exc}") from None
    return store, store.url.rstrip("/")


def _definition(index: Any) -> indexing.CompositeDefinition:
    """A CreateIndexRequest's Index as a composite index definition."""
    if index.ancestor == ix.Index.AncestorMode.ANCESTOR_MODE_UNSPECIFIED.value:
        raise invalid("index.ancestor must be NONE or ALL_ANCESTORS.")
    columns = []
    for prop in index.properties:
        if prop.direction == ix.Index.Direction.DIRECTION_UNSPECIFIED.value:
            raise invalid(
                f"index property {prop.name!r}: direction must be ASCENDING or DESCENDING."
            )
        columns.append(
            indexing.Column(prop.name, prop.direction == ix.Index.Direction.DESCENDING.value)
        )
    definition = indexing.CompositeDefinition(
        index.kind, index.ancestor == ix.Index.AncestorMode.ALL_ANCESTORS.value, tuple(columns)
    )
    definition.check()
    return definition


def _index_pb(project: str, index: indexing.CompositeIndex) -> Any:
    out = IndexPb(
        project_id=project,
        index_id=str(index.index_id),
        kind=index.definition.kind,
        state=ix.Index.State.READY.value,
        ancestor=(
            ix.Index.AncestorMode.ALL_ANCESTORS if index.definition.ancestor
            else ix.Index.AncestorMode.NONE
        ).value,
    )  # fmt: skip
    for column in index.definition.columns:
        prop = out.properties.add()
        prop.name = column.name
        prop.direction = (
            ix.Index.Direction.DESCENDING if column.descending else ix.Index.Direction.ASCENDING
        ).value
    return out


class DatastoreAdminApi:
    """Serves both services; `client_target` is this node's own client port (where the
    export and import threads read and write), `tls_ca` its CA when it speaks TLS."""

    def __init__(
        self,
        service: DatastoreService,
        metrics: Metrics,
        client_target: str,
        forwarder: forward.Forwarder | None = None,
        token_auth: auth.TokenAuth | None = None,
        tls_ca: bytes | None = None,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.client_target = client_target
        self.forwarder = forwarder
        self.token_auth = token_auth
        self.tls_ca = tls_ca
        self.operations: collections.OrderedDict[str, Operation] = collections.OrderedDict()

    # Export and import ----------------------------------------------------------------

    def _start(self, op: Operation, work: Callable[[], Any]) -> Any:
        self.operations[op.name] = op
        self._forget_old()
        op.task = asyncio.get_running_loop().create_task(self._run(op, work))
        log.info("admin.operation_started name=%s type=%s", op.name, op.op_type.name)
        return op.to_pb()

    async def _run(self, op: Operation, work: Callable[[], Any]) -> None:
        try:
            response = await asyncio.to_thread(work)
        except Cancelled:
            op.finish(State.CANCELLED, error=_status(grpc.StatusCode.CANCELLED, "cancelled"))
        except transfer.TransferError as exc:
            # A damaged or incomplete export is the input's fault; the rest is the group's.
            bad_input = isinstance(exc.__context__, transfer._InputError)
            code = grpc.StatusCode.INVALID_ARGUMENT if bad_input else grpc.StatusCode.UNAVAILABLE
            op.finish(State.FAILED, error=_status(code, str(exc)))
        except objstore.ObjectStoreError as exc:
            op.finish(State.FAILED, error=_status(grpc.StatusCode.UNAVAILABLE, str(exc)))
        except Exception as exc:
            log.exception("admin.operation_failed name=%s", op.name)
            op.finish(
                State.FAILED,
                error=_status(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"),
            )
        else:
            op.finish(State.SUCCESSFUL, response=response)
        log.info("admin.operation_done name=%s state=%s", op.name, op.state.name)

    def _forget_old(self) -> None:
        finished = [name for name, op in self.operations.items() if op.done]
        for name in finished[: max(0, len(self.operations) - KEPT_OPERATIONS)]:
            del self.operations[name]

    def _node(self, context: Any) -> transfer.Node:
        token = auth.bearer(context.invocation_metadata()) or ""
        return transfer.Node(self.client_target, token, self.tls_ca)

    @staticmethod
    def _filter(entity_filter: Any) -> tuple[list[str] | None, list[str] | None]:
        kinds = list(entity_filter.kinds) or None
        namespaces = list(entity_filter.namespace_ids) or None
        return kinds, namespaces

    async def export_entities(self, request: Pb, context: Any) -> Pb:
        project = request.project_id
        store, url = output_store(request.output_url_prefix)
        kinds, namespaces = self._filter(request.entity_filter)
        op = self._new(project, Type.EXPORT_ENTITIES, ExportMetadata, request.entity_filter)
        op.output_url_prefix = request.output_url_prefix
        node = self._node(context)
        progress = op.progress = _Progress("export " + op.name, op.cancel)

        def work() -> Any:
            try:
                result = transfer.export_entities(
                    node, store, project, getattr(request, "database_id", ""),
                    kinds=kinds, namespaces=namespaces, progress=progress,
                )  # fmt: skip
            finally:
                node.close()
            return ExportResponse(output_url=f"{url}/{result.overall_key}")

        return self._start(op, work)

    async def import_entities(self, request: Pb, context: Any) -> Pb:
        project = request.project_id
        if not request.input_url:
            raise invalid("input_url is required: the *.overall_export_metadata file.")
        if request.input_url.startswith("gs://"):
            raise invalid(f"input_url {request.input_url!r}: use s3:// or file://, not gs://.")
        try:
            store, key = transfer.split_location(request.input_url)
        except (transfer.TransferError, ValueError) as exc:
            raise invalid(f"input_url: {exc}") from None
        kinds, namespaces = self._filter(request.entity_filter)
        op = self._new(project, Type.IMPORT_ENTITIES, ImportMetadata, request.entity_filter)
        op.input_url = request.input_url
        node = self._node(context)
        progress = op.progress = _Progress("import " + op.name, op.cancel)

        def work() -> Any:
            try:
                transfer.import_entities(
                    node, store, key, project=project, database=getattr(request, "database_id", ""),
                    kinds=kinds, namespaces=namespaces, progress=progress,
                )  # fmt: skip
            finally:
                node.close()
            return empty_pb2.Empty()

        return self._start(op, work)

    def _new(self, project: str, op_type: Type, md_type: Any, entity_filter: Any) -> Operation:
        name = f"projects/{project}/operations/{secrets.token_hex(12)}"
        return Operation(name, project, op_type, md_type, entity_filter)

    # Indexes ---------------------------------------------------------------------------

    def _registry(self) -> indexing.Registry:
        return indexing.load_registry(self.service.store.engine)

    def _composites(self) -> list[indexing.CompositeIndex]:
        """The registry's composite indexes by id (vector indexes, which v1's Index cannot
        describe, left out)."""
        found = [i for i in self._registry().indexes if not i.definition.vector]
        return sorted(found, key=lambda i: i.index_id)

    def _find(self, index_id: str) -> indexing.CompositeIndex:
        found = next((i for i in self._composites() if str(i.index_id) == index_id), None)
        if found is None:
            raise DatastoreError(Code.NOT_FOUND, f"There is no index {index_id!r}.")
        return found

    async def list_indexes(self, request: Pb, context: Any) -> Pb:
        if request.filter:
            raise invalid("ListIndexes takes no filter here.")
        indexes = self._composites()
        start = int(request.page_token) if request.page_token.isdigit() else 0
        if request.page_token and not request.page_token.isdigit():
            raise invalid(f"page_token {request.page_token!r} is not one this server gave.")
        end = start + request.page_size if request.page_size > 0 else len(indexes)
        response = ListIndexesResponse()
        for index in indexes[start:end]:
            response.indexes.append(_index_pb(request.project_id, index))
        if end < len(indexes):
            response.next_page_token = str(end)
        return response

    async def get_index(self, request: Pb, context: Any) -> Pb:
        return _index_pb(request.project_id, self._find(request.index_id))

    async def create_index(self, request: Pb, context: Any) -> Pb:
        definition = _definition(request.index)
        if self._registry().find(definition) is not None:
            raise DatastoreError(Code.ALREADY_EXISTS, "The index already exists.")
        self.service.group.check_leader()  # NotLeader: relayed to the leader
        op = self._new(request.project_id, Type.CREATE_INDEX, IndexMetadata, None)
        await self.service.ensure_index(definition)
        created = self._registry().find(definition)
        assert created is not None
        op.index_id = str(created.index_id)
        op.finish(State.SUCCESSFUL, response=_index_pb(request.project_id, created))
        self.operations[op.name] = op
        self._forget_old()
        return op.to_pb()

    async def delete_index(self, request: Pb, context: Any) -> Pb:
        """Done when it answers: the index is unregistered and its entries deleted. An
        index that index.yaml declares comes back at the next start."""
        index = self._find(request.index_id)
        self.service.group.check_leader()  # NotLeader: relayed to the leader
        op = self._new(request.project_id, Type.DELETE_INDEX, IndexMetadata, None)
        op.index_id = request.index_id
        await self.service.drop_index(index.index_id)
        deleted = _index_pb(request.project_id, index)
        deleted.state = ix.Index.State.DELETING.value
        op.finish(State.SUCCESSFUL, response=deleted)
        self.operations[op.name] = op
        self._forget_old()
        return op.to_pb()

    # Operations ------------------------------------------------------------------------

    def _operation(self, name: str) -> Operation:
        _project_of_name(name)
        op = self.operations.get(name)
        if op is None:
            raise DatastoreError(
                Code.NOT_FOUND,
                f"There is no operation {name!r} on this node (operations live on the node "
                "that started them, until it restarts).",
            )
        return op

    async def get_operation(self, request: Pb, context: Any) -> Pb:
        return self._operation(request.name).to_pb()

    async def list_operations(self, request: Pb, context: Any) -> Pb:
        project = _project_of_name(request.name)
        if request.filter:
            raise invalid("ListOperations takes no filter here.")
        ops = [op for op in self.operations.values() if op.project == project]
        if request.page_token and not request.page_token.isdigit():
            raise invalid(f"page_token {request.page_token!r} is not one this server gave.")
        start = int(request.page_token or 0)
        end = start + request.page_size if request.page_size > 0 else len(ops)
        response = operations_pb2.ListOperationsResponse()
        response.operations.extend(op.to_pb() for op in ops[start:end])
        if end < len(ops):
            response.next_page_token = str(end)
        return response

    async def cancel_operation(self, request: Pb, context: Any) -> Pb:
        op = self._operation(request.name)
        if not op.done:
            op.cancel.set()
            op.state = State.CANCELLING
        return empty_pb2.Empty()

    async def delete_operation(self, request: Pb, context: Any) -> Pb:
        """Forgets the operation (as google.longrunning says: it is not cancelled)."""
        self._operation(request.name)
        del self.operations[request.name]
        return empty_pb2.Empty()

    async def close(self) -> None:
        """Cancel the running operations (at shutdown)."""
        for op in self.operations.values():
            op.cancel.set()
        tasks = [op.task for op in self.operations.values() if op.task and not op.task.done()]
        if tasks:  # each stops at its next entity; a thread blocked longer is left behind
            await asyncio.wait(tasks, timeout=10)
        if self.forwarder is not None:
            await self.forwarder.close()

    # Registration -----------------------------------------------------------------------

    def methods(self) -> list[tuple[str, str, Callable[[Pb, Any], Awaitable[Pb]], Any, Any]]:
        """(service, method, handler, request class, response class) in the edge's wire
        order (node/edge/PROTOCOL.md: 8 onwards)."""
        ops = operations_pb2
        return [
            (SERVICE, "ExportEntities", self.export_entities, ExportRequest, ops.Operation),
            (SERVICE, "ImportEntities", self.import_entities, ImportRequest, ops.Operation),
            (SERVICE, "CreateIndex", self.create_index, CreateIndexRequest, ops.Operation),
            (SERVICE, "DeleteIndex", self.delete_index, DeleteIndexRequest, ops.Operation),
            (SERVICE, "GetIndex", self.get_index, GetIndexRequest, IndexPb),
            (SERVICE, "ListIndexes", self.list_indexes, ListIndexesRequest, ListIndexesResponse),
            (OPERATIONS, "GetOperation", self.get_operation, ops.GetOperationRequest, ops.Operation),
            (OPERATIONS, "ListOperations", self.list_operations, ops.ListOperationsRequest,
             ops.ListOperationsResponse),
            (OPERATIONS, "CancelOperation", self.cancel_operation, ops.CancelOperationRequest,
             empty_pb2.Empty),
            (OPERATIONS, "DeleteOperation", self.delete_operation, ops.DeleteOperationRequest,
             empty_pb2.Empty),
        ]  # fmt: skip

    def wrapped(self) -> list[tuple[str, str, Callable[[Pb, Any], Awaitable[Pb]], Any, Any]]:
        """methods() with auth, the error table and metrics around each handler."""
        return [(s, m, self._wrap(s, m, fn), req, resp) for s, m, fn, req, resp in self.methods()]

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """The generic handlers of both services, for the grpc.aio server (--edge off)."""
        by_service: dict[str, dict[str, Any]] = {SERVICE: {}, OPERATIONS: {}}
        for service, method, fn, req, resp in self.wrapped():
            by_service[service][method] = grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=_lenient(req), response_serializer=_serializer(resp)
            )
        return [grpc.method_handlers_generic_handler(s, h) for s, h in by_service.items()]

    def _check(self, method: str, request: Pb, context: Any) -> None:
        if self.token_auth is None:
            return
        project = getattr(request, "project_id", "") or _project_of_name(request.name)
        database = getattr(request, "database_id", "")
        grant = self.token_auth.check(
            method, request, project, database, context.invocation_metadata()
        )
        if grant.access is auth.Access.READ and method in WRITES:
            raise auth.Denied(
                False, f"Token '{grant.name}' is read-only; {method} needs write access."
            )

    def _wrap(
        self, service: str, method: str, fn: Callable[[Pb, Any], Awaitable[Pb]]
    ) -> Callable[[Pb, Any], Awaitable[Pb]]:
        observe = self.metrics.observe_request
        label = (
            "Operations/" if service == OPERATIONS else "DatastoreAdmin/"
        ) + method  # as the edge

        async def handler(request: Pb, context: Any) -> Pb:
            started = time.perf_counter()
            code = "OK"
            context.set_trailing_metadata(forward.ANSWERED)
            try:
                if isinstance(request, Malformed):
                    raise invalid(f"The request is not a valid {request.type_name} message.")
                if hasattr(request, "project_id") and not request.project_id:
                    raise invalid("The request must name a project_id.")
                self._check(method, request, context)
                return await fn(request, context)
            except NotLeader:
                code = "FORWARDED"
                return await self._forward(method, fn, request, context)
            except DatastoreError as exc:
                code = errors.status_of(exc.code).name
                await context.abort(errors.status_of(exc.code), exc.message)
                raise
            except auth.Denied as exc:
                status = (
                    grpc.StatusCode.UNAUTHENTICATED
                    if exc.unauthenticated
                    else grpc.StatusCode.PERMISSION_DENIED
                )
                code = status.name
                await context.abort(status, exc.message)
                raise
            except errors.Unimplemented as exc:
                code = "UNIMPLEMENTED"
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, str(exc))
                raise
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                code = "INTERNAL"
                log.exception("admin.internal_error method=%s", method)
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
                )
                raise
            finally:
                observe(label, code, time.perf_counter() - started)

        return handler

    async def _forward(
        self, method: str, fn: Callable[[Pb, Any], Awaitable[Pb]], request: Pb, context: Any
    ) -> Pb | bytes:
        """CreateIndex on a follower: the leader's (the edge relays it; behind grpc.aio,
        api/forward.py's Forwarder for this service)."""
        if self.forwarder is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "This replica is not the leader.")
        assert self.forwarder is not None
        try:
            addr = await self.forwarder.route()
            if addr is None:
                return await fn(request, context)
            return await self.forwarder.forward(addr, method, request, context)
        except forward.NoLeader as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except grpc.aio.AioRpcError as exc:
            code, details = forward.relayed_status(method, exc)
            await context.abort(code, details)
        raise AssertionError("unreachable: abort raises")


ExportRequest: Any = da.ExportEntitiesRequest.pb()
ImportRequest: Any = da.ImportEntitiesRequest.pb()
ExportResponse: Any = da.ExportEntitiesResponse.pb()
ExportMetadata: Any = da.ExportEntitiesMetadata.pb()
ImportMetadata: Any = da.ImportEntitiesMetadata.pb()
IndexMetadata: Any = da.IndexOperationMetadata.pb()
CreateIndexRequest: Any = da.CreateIndexRequest.pb()
DeleteIndexRequest: Any = da.DeleteIndexRequest.pb()
GetIndexRequest: Any = da.GetIndexRequest.pb()
ListIndexesRequest: Any = da.ListIndexesRequest.pb()
ListIndexesResponse: Any = da.ListIndexesResponse.pb()
IndexPb: Any = ix.Index.pb()
