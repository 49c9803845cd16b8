"""The gRPC edge: google.datastore.v1.Datastore over cleartext HTTP/2 (grpc.aio).

Translates and nothing else: raw protobuf requests in (the message types shipped with
google-cloud-datastore, registered through generic handlers: no generated code, no
copied protos), calls into txn/ and query/, raw protobuf responses out. Domain errors
become gRPC statuses through the one table in api/errors.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.cloud.datastore_v1.types import datastore as ds
from google.protobuf.message import DecodeError

from zonestore_node.api import auth, errors, forward
from zonestore_node.api.metrics import Metrics
from zonestore_node.model import keys, limits, masks
from zonestore_node.model.errors import Code, DatastoreError, invalid
from zonestore_node.query import executor, explain, planner
from zonestore_node.query.outcome import QueryOutcome
from zonestore_node.replica.group import NotLeader
from zonestore_node.txn.service import DatastoreService, ReadSpec, Snapshot

SERVICE = "google.datastore.v1.Datastore"
# Composite indexes one request may have created before it is served: one per OR branch.
MAX_INDEX_ROUNDS = 32
log = logging.getLogger("zonestore.api")

Pb = Any


def micros_to_timestamp(target: Any, micros: int) -> None:
    target.seconds, rem = divmod(micros, 1_000_000)
    target.nanos = rem * 1000


def timestamp_to_micros(ts: Any) -> int:
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1000


def project_of(request: Any) -> tuple[str, str]:
    if not request.project_id:
        raise invalid("The request must name a project_id.")
    if request.database_id:
        keys.check_partition_name(request.database_id, "database_id")
    return request.project_id, request.database_id


def read_spec(read_options: Any) -> ReadSpec:
    """Python sends an empty read_options: what matters is which field of the oneof is set."""
    which = read_options.WhichOneof("consistency_type")
    if which is None:
        return ReadSpec()
    if which == "read_consistency":
        return ReadSpec(eventual=read_options.read_consistency == 2)  # EVENTUAL
    if which == "transaction":
        if not read_options.transaction:
            raise invalid("read_options.transaction is empty.")
        return ReadSpec(transaction=read_options.transaction)
    if which == "new_transaction":
        opts = read_options.new_transaction
        read_only = opts.WhichOneof("mode") == "read_only"
        read_ts = None
        if read_only and opts.read_only.HasField("read_time"):
            read_ts = timestamp_to_micros(opts.read_only.read_time)
        return ReadSpec(
            new_transaction=True,
            new_transaction_read_only=read_only,
            new_transaction_read_ts=read_ts,
        )
    return ReadSpec(read_ts=timestamp_to_micros(read_options.read_time))


class DatastoreApi:
    def __init__(
        self,
        service: DatastoreService,
        metrics: Metrics,
        forwarder: forward.Forwarder | None = None,
        index_policy: planner.IndexPolicy = planner.IndexPolicy.CREATE,
        token_auth: auth.TokenAuth | None = None,
    ) -> None:
        self.token_auth = token_auth  # None: open (local mode)
        self.service = service
        self.metrics = metrics
        self.forwarder = forwarder
        self.index_policy = index_policy

    # Lookup -----------------------------------------------------------------

    async def lookup(self, request: Pb, context: Any) -> Pb:
        project, database = project_of(request)
        mask = (
            masks.tree(masks.parse_paths(request.property_mask.paths))
            if request.HasField("property_mask")
            else None
        )
        result = await self.service.lookup(
            project, database, list(request.keys), read_spec(request.read_options)
        )
        response = LookupResponse()
        for found in result.found:
            er = response.found.add()
            er.entity.MergeFromString(found.entity)
            if mask is not None:
                masks.project(er.entity, mask)
            er.version = found.version
            micros_to_timestamp(er.create_time, found.create_ts)
            micros_to_timestamp(er.update_time, found.update_ts)
        for key in result.missing:
            er = response.missing.add()
            er.entity.key.CopyFrom(key)
            er.version = result.read_ts
        response.deferred.extend(result.deferred)
        if result.transaction:
            response.transaction = result.transaction
        micros_to_timestamp(response.read_time, result.read_ts)
        return response

    # Queries ------------------------------------------------------------------

    async def _run(self, request: Pb, query: Pb, run: Callable[..., Any]) -> tuple[Any, Any]:
        """Resolve the snapshot, run `run(store, project, database, namespace, query,
        read_ts, policy)` (creating a missing composite index first if the policy says
        so), and record what a read-write transaction read. Returns (outcome, snapshot)."""
        project, database = project_of(request)
        spec = read_spec(request.read_options)
        snap = await self.service.snapshot(project, database, spec)
        namespace = request.partition_id.namespace_id
        if namespace:
            keys.check_partition_name(namespace, "namespace")
        outcome, snap = await self._with_indexes(
            project,
            database,
            spec,
            snap,
            lambda read_ts: run(
                self.service.store, project, database, namespace, query, read_ts, self.index_policy
            ),
        )
        self.service.record_reads(snap, outcome.read_ranges, outcome.read_keys)
        return outcome, snap

    async def run_query(self, request: Pb, context: Any) -> Pb:
        if request.WhichOneof("query_type") == "gql_query":
            query = executor.parse_gql(request.gql_query)
        else:
            query = request.query
        mask = None
        if request.HasField("property_mask"):
            if query.projection:
                raise invalid("A projection query cannot have a property_mask.")
            mask = masks.tree(masks.parse_paths(request.property_mask.paths))
        outcome, snap, explained = await self._explained(request, query, executor.run_query)
        response = RunQueryResponse()
        response.batch.CopyFrom(outcome.batch)
        if mask is not None:  # after the filters, which see whole entities
            for result in response.batch.entity_results:
                masks.project(result.entity, mask)
        response.query.CopyFrom(query)
        micros_to_timestamp(response.batch.read_time, snap.read_ts)
        response.batch.snapshot_version = snap.read_ts
        if snap.new_transaction:
            response.transaction = snap.new_transaction
        if explained is not None:
            response.explain_metrics.CopyFrom(explained)
            if not request.explain_options.analyze:
                response.ClearField("batch")  # planned, not run: no results
        return response

    async def run_aggregation_query(self, request: Pb, context: Any) -> Pb:
        if request.WhichOneof("query_type") == "gql_query":
            aggregation = executor.parse_gql_aggregation(request.gql_query)
        else:
            aggregation = request.aggregation_query
        outcome, snap, explained = await self._explained(
            request, aggregation, executor.run_aggregation
        )
        response = RunAggregationQueryResponse()
        response.batch.CopyFrom(outcome.batch)
        response.query.CopyFrom(aggregation)
        micros_to_timestamp(response.batch.read_time, snap.read_ts)
        if snap.new_transaction:
            response.transaction = snap.new_transaction
        if explained is not None:
            response.explain_metrics.CopyFrom(explained)
            if not request.explain_options.analyze:
                response.ClearField("batch")  # planned, not run: no results
        return response

    async def _explained(
        self, request: Pb, query: Pb, run: Callable[..., Any]
    ) -> tuple[QueryOutcome, Snapshot, Any]:
        """`explain_options` (query.explain): without analyze the query is planned, not
        run; with analyze it runs and is timed. Returns (outcome, snapshot, the raw
        ExplainMetrics or None when the request did not ask)."""
        if not request.HasField("explain_options"):
            outcome, snap = await self._run(request, query, run)
            return outcome, snap, None
        analyze = request.explain_options.analyze
        started = time.perf_counter()
        outcome, snap = await self._run(
            request, query, functools.partial(run, plan_only=not analyze)
        )
        elapsed = time.perf_counter() - started
        return outcome, snap, explain.metrics(outcome, analyze=analyze, duration_seconds=elapsed)

    async def _with_indexes(
        self,
        project: str,
        database: str,
        spec: ReadSpec,
        snap: Snapshot,
        run: Callable[[int], QueryOutcome],
    ) -> tuple[QueryOutcome, Snapshot]:
        """Run a query; when it needs a composite index that does not exist, have the
        service create it (through the log) and run it again. A plain strong or eventual
        read takes a new snapshot, which sees the new index; a transaction or read_time
        keeps its snapshot, older than the index, and is served without it."""
        for _ in range(MAX_INDEX_ROUNDS):
            try:
                outcome = run(snap.read_ts)
            except planner.NeedsIndex as exc:
                await self.service.ensure_index(exc.definition)
                if spec == ReadSpec() or spec == ReadSpec(eventual=True):
                    snap = await self.service.snapshot(project, database, spec)
                continue
            for plan in outcome.plans:
                self.metrics.query_plans.labels(plan).inc()
            log.debug("query.plans plans=%s read_ts=%d", ",".join(outcome.plans), snap.read_ts)
            return outcome, snap
        raise DatastoreError(Code.INTERNAL, "The query kept asking for new indexes.")

    # Transactions --------------------------------------------------------------

    async def begin_transaction(self, request: Pb, context: Any) -> Pb:
        project, database = project_of(request)
        opts = request.transaction_options
        read_only = opts.WhichOneof("mode") == "read_only"
        read_ts = None
        if read_only and opts.read_only.HasField("read_time"):
            read_ts = timestamp_to_micros(opts.read_only.read_time)
        response = BeginTransactionResponse()
        response.transaction = await self.service.begin_transaction(
            project, database, read_only, read_ts
        )
        return response

    async def rollback(self, request: Pb, context: Any) -> Pb:
        project, database = project_of(request)
        self.service.rollback(project, database, request.transaction)
        return RollbackResponse()

    async def commit(self, request: Pb, context: Any) -> Pb:
        project, database = project_of(request)
        size = request.ByteSize()
        if size > limits.MAX_REQUEST_BYTES:
            # gRPC's receive limit is set 1 MiB higher so this message can be given.
            raise invalid(
                f"Request payload size exceeds the limit: {limits.MAX_REQUEST_BYTES} bytes "
                f"(this commit is {size} bytes)."
            )
        transactional = request.mode == 1  # TRANSACTIONAL
        which = request.WhichOneof("transaction_selector")
        transaction = request.transaction if which == "transaction" else None
        if which == "single_use_transaction":
            read_only = request.single_use_transaction.WhichOneof("mode") == "read_only"
            transaction = await self.service.begin_transaction(project, database, read_only, None)
            transactional = True
        elif request.mode == 0 and which is None:  # MODE_UNSPECIFIED
            raise invalid("Commit mode must be TRANSACTIONAL or NON_TRANSACTIONAL.")
        result = await self.service.commit(
            project, database, transaction, list(request.mutations), transactional=transactional
        )
        response = CommitResponse()
        for outcome in result.mutations:
            mr = response.mutation_results.add()
            if outcome.key is not None:
                mr.key.CopyFrom(outcome.key)
            mr.version = outcome.version
            if outcome.create_ts:
                micros_to_timestamp(mr.create_time, outcome.create_ts)
            micros_to_timestamp(mr.update_time, outcome.update_ts)
            mr.conflict_detected = outcome.conflict_detected
            mr.transform_results.extend(outcome.transform_results)
        response.index_updates = result.index_updates
        micros_to_timestamp(response.commit_time, result.commit_ts)
        return response

    # Ids -------------------------------------------------------------------------

    async def allocate_ids(self, request: Pb, context: Any) -> Pb:
        project, database = project_of(request)
        response = AllocateIdsResponse()
        response.keys.extend(await self.service.allocate_ids(project, database, list(request.keys)))
        return response

    async def reserve_ids(self, request: Pb, context: Any) -> Pb:
        project, database = project_of(request)
        await self.service.reserve_ids(project, database, list(request.keys))
        return ReserveIdsResponse()

    async def _forward(
        self, method: str, fn: Callable[[Pb, Any], Awaitable[Pb]], request: Pb, context: Any
    ) -> Pb | bytes:
        """Serve a request this replica could not take: relay it to the leader, or run it
        here once this replica becomes the ready leader (api/forward.py)."""
        if self.forwarder is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "This replica is not the leader.")
        assert self.forwarder is not None
        visited = forward.Visited(context)
        try:
            while True:
                addr = await self.forwarder.route()
                if addr is None:
                    try:
                        return await fn(request, context)
                    except NotLeader:
                        await asyncio.sleep(0.02)  # lost it again at once: route anew
                        continue
                if forward.Forwarder.hops(context) >= forward.MAX_HOPS:
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        "The leader changed while the request was relayed; retry it.",
                    )
                if visited.holds(addr):
                    await asyncio.sleep(0.02)  # it came through there: wait for the view
                    continue
                return await self.forwarder.forward(addr, method, request, context)
        except forward.NoLeader as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except grpc.aio.AioRpcError as exc:
            code, details = forward.relayed_status(method, exc)
            await context.abort(code, details)
        raise AssertionError("unreachable: abort raises")

    # Registration -----------------------------------------------------------------

    def _wrap(
        self, method: str, fn: Callable[[Pb, Any], Awaitable[Pb]]
    ) -> Callable[[Pb, Any], Awaitable[Pb]]:
        observe = self.metrics.observe_request

        async def handler(request: Pb, context: Any) -> Pb:
            started = time.perf_counter()
            code = "OK"
            # Marks every status as ours, so a relaying follower can tell our answers
            # from a broken connection (api/forward.py).
            context.set_trailing_metadata(forward.ANSWERED)
            try:
                if isinstance(request, Malformed):
                    raise invalid(f"The request is not a valid {request.type_name} message.")
                if self.token_auth is not None:
                    self.token_auth.check(
                        method,
                        request,
                        request.project_id,
                        request.database_id,
                        context.invocation_metadata(),
                    )
                return await fn(request, context)
            except NotLeader:
                code = "FORWARDED"
                return await self._forward(method, fn, request, context)
            except DatastoreError as exc:
                code = errors.status_of(exc.code).name
                await context.abort(errors.status_of(exc.code), exc.message)
                raise  # unreachable: abort raises
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
                log.exception("api.internal_error method=%s", method)
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
                )
                raise
            finally:
                observe(method, code, time.perf_counter() - started)

        return handler

    def handler(self) -> grpc.GenericRpcHandler:
        table = {
            "Lookup": (self.lookup, ds.LookupRequest, ds.LookupResponse),
            "RunQuery": (self.run_query, ds.RunQueryRequest, ds.RunQueryResponse),
            "RunAggregationQuery": (
                self.run_aggregation_query,
                ds.RunAggregationQueryRequest,
                ds.RunAggregationQueryResponse,
            ),
            "BeginTransaction": (
                self.begin_transaction,
                ds.BeginTransactionRequest,
                ds.BeginTransactionResponse,
            ),
            "Commit": (self.commit, ds.CommitRequest, ds.CommitResponse),
            "Rollback": (self.rollback, ds.RollbackRequest, ds.RollbackResponse),
            "AllocateIds": (self.allocate_ids, ds.AllocateIdsRequest, ds.AllocateIdsResponse),
            "ReserveIds": (self.reserve_ids, ds.ReserveIdsRequest, ds.ReserveIdsResponse),
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._wrap(name, fn),
                request_deserializer=_lenient(req.pb()),
                response_serializer=_serializer(resp.pb()),
            )
            for name, (fn, req, resp) in table.items()
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)


def _serializer(message_type: Any) -> Callable[[Any], bytes]:
    """Serialize a response message; bytes relayed from the leader pass through as-is."""

    def serialize(response: Any) -> bytes:
        if isinstance(response, bytes):
            return response
        raw: bytes = response.SerializeToString()
        return raw

    return serialize


class Malformed:
    """A request whose bytes do not parse. grpc turns a deserializer exception into
    UNKNOWN with the parser's text; this lets the handler answer INVALID_ARGUMENT."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def _lenient(message_type: Any) -> Callable[[bytes], Any]:
    parse = message_type.FromString
    name = message_type.DESCRIPTOR.full_name

    def deserialize(raw: bytes) -> Any:
        try:
            return parse(raw)
        except DecodeError:
            return Malformed(name)

    return deserialize


LookupResponse: Any = ds.LookupResponse.pb()
RunQueryResponse: Any = ds.RunQueryResponse.pb()
RunAggregationQueryResponse: Any = ds.RunAggregationQueryResponse.pb()
BeginTransactionResponse: Any = ds.BeginTransactionResponse.pb()
CommitResponse: Any = ds.CommitResponse.pb()
RollbackResponse: Any = ds.RollbackResponse.pb()
AllocateIdsResponse: Any = ds.AllocateIdsResponse.pb()
ReserveIdsResponse: Any = ds.ReserveIdsResponse.pb()

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", limits.MAX_REQUEST_BYTES + (1 << 20)),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.so_reuseport", 0),
]
