"""Workloads driven through the official Python client, recording every operation.

Each worker thread owns one `datastore.Client` bound to one replica (any replica takes
any request) and records each operation's invocation and completion in a shared
`Recorder`. What an error means is decided in one place, `outcome()`:

* a read that fails changed nothing: `fail`, whatever the error;
* a mutation fails definitely (`fail`) when the node says it did not apply it:
  INVALID_ARGUMENT, ALREADY_EXISTS, NOT_FOUND, FAILED_PRECONDITION, ABORTED (a commit's
  read set is validated when the log entry is applied, so ABORTED is a decided outcome),
  UNIMPLEMENTED, and UNAVAILABLE whose message names a path on which nothing was
  proposed: "it was not applied" (txn/service.py `_replicate`, a proposal overwritten
  by a new leader), "no leader is known" (api/forward.py `route`, raised before
  relaying), "relayed; retry it" (hop limit, before relaying), "not the leader", and
  gRPC's "failed to connect to all addresses" (the channel never had a connection, so
  the request was never sent, whether by the client or by a relaying follower);
* every other failure of a mutation is ambiguous (`info`): DEADLINE_EXCEEDED (the
  client's deadline, or the node's 30 s commit timeout), and any other UNAVAILABLE —
  a follower relays the leader's transport error with its own code (api/datastore.py
  `_forward`), so "Socket closed" or "Connection reset" may come after the leader
  received, proposed and even applied the commit — plus INTERNAL, UNKNOWN, CANCELLED.

Calls use no client-side retry, so each recorded operation is exactly one attempt.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import datastore

from tests.jepsen.history import Recorder, Status

NO_RETRY = Retry(predicate=lambda exc: False)
TIMEOUT_S = 5.0

DEFINITE_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.PERMISSION_DENIED,
}
NOT_SENT_UNAVAILABLE = (
    "it was not applied",
    "no leader is known",
    "relayed; retry it",
    "not the leader",
    "failed to connect to all addresses",
)


def outcome(exc: BaseException, mutating: bool) -> Status:
    """fail = certainly not applied; info = may or may not have been applied."""
    if not mutating:
        return Status.FAIL
    code = getattr(exc, "grpc_status_code", None)
    if code in DEFINITE_CODES:
        return Status.FAIL
    if code is grpc.StatusCode.UNAVAILABLE and any(s in str(exc) for s in NOT_SENT_UNAVAILABLE):
        return Status.FAIL
    return Status.INFO


ERRORS = (gexc.GoogleAPICallError, gexc.RetryError, grpc.RpcError)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:160]}"


def make_client(addr: str, project: str) -> datastore.Client:
    """The client reads the emulator address at construction: build clients on one
    thread before the workers start."""
    os.environ["DATASTORE_EMULATOR_HOST"] = addr
    return datastore.Client(project=project)


class CommitTimes:
    """Wraps a client's API object to keep the last CommitResponse's `commit_time` (the
    official client drops it): one per client, and each worker owns its client."""

    def __init__(self, client: datastore.Client) -> None:
        self._api = client._datastore_api
        client._datastore_api_internal = self
        self.last: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        self.last = None
        response = self._api.commit(*args, **kwargs)
        pb = getattr(response, "_pb", response)
        if pb.HasField("commit_time"):
            self.last = pb.commit_time.seconds * 1_000_000 + pb.commit_time.nanos // 1000
        return response


@dataclass
class Worker:
    """A thread running one workload's operations until told to stop."""

    name: str
    body: Callable[[Worker], None]
    client: datastore.Client
    process: int
    rng: random.Random
    stop: threading.Event
    thread: threading.Thread | None = None
    crashes: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.body(self)
        except Exception as exc:  # a bug in the workload itself: report it
            self.crashes.append(repr(exc))

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(timeout=60)

    def new_process(self) -> None:
        """After an ambiguous outcome the old logical process may still be running, as
        in Jepsen: continue as a fresh one."""
        self.process += 1000


def backoff(status: Status) -> None:
    if status is not Status.OK:
        time.sleep(0.05)


# Registers -------------------------------------------------------------------------


class Registers:
    """Single-entity registers (kind `Reg`, property `v`): strong read, blind write
    (upsert), and compare-and-set as a transaction (read, compare, write, commit).
    Keys rotate every `ops_per_key` operations so each key's history stays short enough
    to search; `active` keys are in use at a time. Written values are unique."""

    KIND = "Reg"

    def __init__(self, recorder: Recorder, ops_per_key: int = 120, active: int = 3) -> None:
        self.recorder = recorder
        self.ops_per_key = ops_per_key
        self.active = active
        self._lock = threading.Lock()
        self._started = 0
        self._next_value = 0
        self._last_seen: dict[str, Any] = {}

    def _pick(self, rng: random.Random) -> tuple[str, int]:
        with self._lock:
            generation = self._started // self.ops_per_key
            self._started += 1
            self._next_value += 1
            return f"r{generation}-{rng.randrange(self.active)}", self._next_value

    def keys(self) -> list[str]:
        with self._lock:
            generations = self._started // self.ops_per_key + 1
        return [f"r{g}-{i}" for g in range(generations) for i in range(self.active)]

    def step(self, w: Worker) -> None:
        name, value = self._pick(w.rng)
        key = w.client.key(self.KIND, name)
        kind = w.rng.choices(["read", "eread", "write", "cas"], weights=[4, 2, 3, 3])[0]
        rec = self.recorder
        t0 = rec.invoke()
        if kind == "eread":
            # Served by the replica this worker talks to, at what it has applied: may be
            # stale, never invented (checkers.check_eventual_registers).
            try:
                entity = w.client.get(key, eventual=True, retry=NO_RETRY, timeout=TIMEOUT_S)
            except ERRORS as exc:
                rec.complete(w.process, "eread", name, None, Status.FAIL, t0, error=describe(exc))
                backoff(Status.FAIL)
                return
            seen = None if entity is None else entity["v"]
            rec.complete(w.process, "eread", name, None, Status.OK, t0, result=seen)
            return
        if kind == "read":
            try:
                entity = w.client.get(key, retry=NO_RETRY, timeout=TIMEOUT_S)
            except ERRORS as exc:
                rec.complete(w.process, "read", name, None, Status.FAIL, t0, error=describe(exc))
                backoff(Status.FAIL)
                return
            seen = None if entity is None else entity["v"]
            with self._lock:
                self._last_seen[name] = seen
            rec.complete(w.process, "read", name, None, Status.OK, t0, result=seen)
            return
        if kind == "write":
            entity = datastore.Entity(key)
            entity["v"] = value
            try:
                w.client.put(entity, retry=NO_RETRY, timeout=TIMEOUT_S)
            except ERRORS as exc:
                status = outcome(exc, mutating=True)
                rec.complete(w.process, "write", name, value, status, t0, error=describe(exc))
                if status is Status.INFO:
                    w.new_process()
                backoff(status)
                return
            rec.complete(w.process, "write", name, value, Status.OK, t0)
            return
        with self._lock:
            expected = self._last_seen.get(name)
        self._cas(w, key, name, expected, value, t0)

    def _cas(self, w: Worker, key: Any, name: str, expected: Any, new: int, t0: int) -> None:
        rec = self.recorder
        txn = w.client.transaction()
        committing = False
        try:
            txn.begin(retry=NO_RETRY, timeout=TIMEOUT_S)
            entity = w.client.get(key, transaction=txn, retry=NO_RETRY, timeout=TIMEOUT_S)
            current = None if entity is None else entity["v"]
            if current != expected:
                rec.complete(w.process, "cas", name, (expected, new), Status.FAIL, t0,
                             error=f"compare: found {current!r}")  # fmt: skip
                with self._lock:
                    self._last_seen[name] = current
                self._rollback(txn)
                return
            replacement = datastore.Entity(key)
            replacement["v"] = new
            txn.put(replacement)
            committing = True
            txn.commit(retry=NO_RETRY, timeout=TIMEOUT_S)
        except ERRORS as exc:
            status = outcome(exc, mutating=committing)
            rec.complete(w.process, "cas", name, (expected, new), status, t0, error=describe(exc))
            if status is Status.INFO:
                w.new_process()
            if not committing:
                self._rollback(txn)
            backoff(status)
            return
        rec.complete(w.process, "cas", name, (expected, new), Status.OK, t0)
        with self._lock:
            self._last_seen[name] = new

    @staticmethod
    def _rollback(txn: Any) -> None:
        try:
            if txn.id is not None:
                txn.rollback(retry=NO_RETRY, timeout=TIMEOUT_S)
        except (*ERRORS, ValueError):
            pass  # an abandoned transaction expires on its own


# Bank ------------------------------------------------------------------------------


class Bank:
    """`accounts` accounts (kind `Acct`, property `balance`) starting at `initial` each.
    Transfers move a random amount between two accounts in a read-write transaction,
    never below zero; reads take every account in one read-only transaction."""

    KIND = "Acct"

    def __init__(self, recorder: Recorder, accounts: int = 5, initial: int = 100) -> None:
        self.recorder = recorder
        self.names = [f"acct-{i}" for i in range(accounts)]
        self.initial = initial

    @property
    def total(self) -> int:
        return self.initial * len(self.names)

    def setup(self, client: datastore.Client) -> None:
        entities = []
        for name in self.names:
            entity = datastore.Entity(client.key(self.KIND, name))
            entity["balance"] = self.initial
            entities.append(entity)
        client.put_multi(entities, timeout=30)

    def step(self, w: Worker) -> None:
        roll = w.rng.random()
        if roll < 0.35:
            self.read(w)
        elif roll < 0.5:
            self.eventual_read(w)
        else:
            self.transfer(w)

    def eventual_read(self, w: Worker) -> None:
        """Every account in one eventual Lookup: the replica reads at one applied commit
        timestamp (txn/service.py `snapshot`), so even a stale answer is a whole
        committed state: all accounts at the constant total, or none (before setup)."""
        rec = self.recorder
        t0 = rec.invoke()
        keys = [w.client.key(self.KIND, n) for n in self.names]
        try:
            found = w.client.get_multi(keys, eventual=True, retry=NO_RETRY, timeout=TIMEOUT_S)
        except ERRORS as exc:
            rec.complete(w.process, "eread", "bank", None, Status.FAIL, t0, error=describe(exc))
            backoff(Status.FAIL)
            return
        balances = {e.key.name: e["balance"] for e in found}
        rec.complete(w.process, "eread", "bank", None, Status.OK, t0, result=balances)

    def read(self, w: Worker) -> None:
        rec = self.recorder
        t0 = rec.invoke()
        txn = w.client.transaction(read_only=True)
        try:
            txn.begin(retry=NO_RETRY, timeout=TIMEOUT_S)
            keys = [w.client.key(self.KIND, n) for n in self.names]
            found = w.client.get_multi(keys, transaction=txn, retry=NO_RETRY, timeout=TIMEOUT_S)
        except ERRORS as exc:
            rec.complete(w.process, "read", "bank", None, Status.FAIL, t0, error=describe(exc))
            Registers._rollback(txn)
            backoff(Status.FAIL)
            return
        balances = {e.key.name: e["balance"] for e in found}
        rec.complete(w.process, "read", "bank", None, Status.OK, t0, result=balances)
        Registers._rollback(txn)

    def transfer(self, w: Worker) -> None:
        rec = self.recorder
        src, dst = w.rng.sample(self.names, 2)
        amount = w.rng.randint(1, 30)
        value = (src, dst, amount)
        t0 = rec.invoke()
        txn = w.client.transaction()
        committing = False
        try:
            txn.begin(retry=NO_RETRY, timeout=TIMEOUT_S)
            keys = [w.client.key(self.KIND, src), w.client.key(self.KIND, dst)]
            found = w.client.get_multi(keys, transaction=txn, retry=NO_RETRY, timeout=TIMEOUT_S)
            by_name = {e.key.name: e for e in found}
            if len(by_name) != 2 or by_name[src]["balance"] < amount:
                rec.complete(w.process, "transfer", "bank", value, Status.FAIL, t0,
                             error="insufficient funds")  # fmt: skip
                Registers._rollback(txn)
                return
            by_name[src]["balance"] -= amount
            by_name[dst]["balance"] += amount
            txn.put(by_name[src])
            txn.put(by_name[dst])
            committing = True
            txn.commit(retry=NO_RETRY, timeout=TIMEOUT_S)
        except ERRORS as exc:
            status = outcome(exc, mutating=committing)
            rec.complete(w.process, "transfer", "bank", value, status, t0, error=describe(exc))
            if not committing:
                Registers._rollback(txn)
            backoff(status)
            return
        rec.complete(w.process, "transfer", "bank", value, Status.OK, t0)


# Sets ------------------------------------------------------------------------------


class Sets:
    """Unique inserts (kind `Elem`, one entity per element, a Datastore `insert`
    mutation, so a duplicate would be refused with ALREADY_EXISTS)."""

    KIND = "Elem"

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._lock = threading.Lock()
        self._next = 0

    def attempted(self) -> list[str]:
        return [op.value for op in self.recorder.snapshot() if op.f == "add"]

    def step(self, w: Worker) -> None:
        if w.rng.random() < 0.08:
            self.eventual_read(w)
            return
        with self._lock:
            self._next += 1
            name = f"e{self._next}"
        rec = self.recorder
        t0 = rec.invoke()
        entity = datastore.Entity(w.client.key(self.KIND, name))
        entity["n"] = self._next
        batch = w.client.batch()
        try:
            batch.begin()
            batch.put(entity)
            mutation = batch.mutations[-1]
            mutation.insert = mutation.upsert  # the client has no insert(); oneof: replaces
            batch.commit(retry=NO_RETRY, timeout=TIMEOUT_S)
        except ERRORS as exc:
            status = outcome(exc, mutating=True)
            rec.complete(w.process, "add", "set", name, status, t0, error=describe(exc))
            if status is Status.INFO:
                w.new_process()
            backoff(status)
            return
        rec.complete(w.process, "add", "set", name, Status.OK, t0)

    def eventual_read(self, w: Worker) -> None:
        """A keys-only eventual query of every element: may miss recent inserts, must
        hold nothing that was not attempted (or that was refused)."""
        rec = self.recorder
        t0 = rec.invoke()
        query = w.client.query(kind=self.KIND)
        query.keys_only()
        try:
            names = sorted(
                e.key.name for e in query.fetch(eventual=True, retry=NO_RETRY, timeout=TIMEOUT_S)
            )
        except ERRORS as exc:
            rec.complete(w.process, "eread", "set", None, Status.FAIL, t0, error=describe(exc))
            backoff(Status.FAIL)
            return
        rec.complete(w.process, "eread", "set", None, Status.OK, t0, result=names)


# List append -------------------------------------------------------------------------


class ListAppend:
    """Elle's list-append workload (checked by `elle`): entities of kind `List` hold a
    list property `vals`. A transaction reads some keys and appends a unique element to
    others (read the list in the transaction, put it back one longer: the commit's read
    set makes a concurrent append abort it). One operation in five is an eventual
    multi-key read outside any transaction (one Lookup: one snapshot of what the
    replica applied). Keys rotate every `txns_per_key` transactions, `active` at a time,
    so lists stay short."""

    KIND = "List"

    def __init__(self, recorder: Recorder, txns_per_key: int = 150, active: int = 4) -> None:
        self.recorder = recorder
        self.txns_per_key = txns_per_key
        self.active = active
        self._lock = threading.Lock()
        self._started = 0
        self._next_value = 0
        self._times: dict[int, CommitTimes] = {}

    def keys(self) -> list[str]:
        with self._lock:
            generations = self._started // self.txns_per_key + 1
        return [f"l{g}-{i}" for g in range(generations) for i in range(self.active)]

    def _plan(self, rng: random.Random, eventual: bool) -> list[tuple[str, str, Any]]:
        with self._lock:
            generation = self._started // self.txns_per_key
            self._started += 1
            names = [f"l{generation}-{i}" for i in range(self.active)]
            chosen = rng.sample(names, rng.randint(1, 3))
            mops: list[tuple[str, str, Any]] = []
            for name in chosen:
                if eventual or rng.random() < 0.5:
                    mops.append(("r", name, None))
                if not eventual and (rng.random() < 0.5 or not mops or mops[-1][1] != name):
                    self._next_value += 1
                    mops.append(("append", name, self._next_value))
            return mops

    def step(self, w: Worker) -> None:
        eventual = w.rng.random() < 0.2
        mops = self._plan(w.rng, eventual)
        rec = self.recorder
        consistency = "eventual" if eventual else "strong"
        asked = [list(m) for m in mops]
        names = sorted({name for _, name, _ in mops})
        keys = {n: w.client.key(self.KIND, n) for n in names}
        t0 = rec.invoke()
        if eventual:
            try:
                found = w.client.get_multi(
                    list(keys.values()), eventual=True, retry=NO_RETRY, timeout=TIMEOUT_S
                )
            except ERRORS as exc:
                rec.complete(w.process, "txn", consistency, asked, Status.FAIL, t0,
                             error=describe(exc))  # fmt: skip
                backoff(Status.FAIL)
                return
            lists = {e.key.name: list(e["vals"]) for e in found}
            result = [[f, n, lists.get(n, [])] for f, n, _ in mops]
            rec.complete(w.process, "txn", consistency, asked, Status.OK, t0, result=result)
            return
        times = self._times.get(id(w.client))
        if times is None:
            times = self._times[id(w.client)] = CommitTimes(w.client)
        txn = w.client.transaction()
        committing = False
        try:
            txn.begin(retry=NO_RETRY, timeout=TIMEOUT_S)
            found = w.client.get_multi(
                list(keys.values()), transaction=txn, retry=NO_RETRY, timeout=TIMEOUT_S
            )
            lists = {e.key.name: list(e["vals"]) for e in found}
            result = []
            for f, n, v in mops:
                if f == "r":
                    result.append(["r", n, list(lists.get(n, []))])
                else:
                    result.append(["append", n, v])
            written: dict[str, list[int]] = {}
            for f, n, v in mops:
                if f == "append":
                    written[n] = [*written.get(n, lists.get(n, [])), v]
            for n, vals in written.items():
                entity = datastore.Entity(keys[n])
                entity["vals"] = vals
                txn.put(entity)
            committing = bool(written)
            txn.commit(retry=NO_RETRY, timeout=TIMEOUT_S)
        except ERRORS as exc:
            status = outcome(exc, mutating=committing)
            rec.complete(w.process, "txn", consistency, asked, status, t0, error=describe(exc))
            if status is Status.INFO:
                w.new_process()
            if not committing:
                Registers._rollback(txn)
            backoff(status)
            return
        rec.complete(w.process, "txn", consistency, asked, Status.OK, t0, result=result,
                     commit_ts=times.last if committing else None)  # fmt: skip
