"""An Elle-style checker for list-append transaction histories (Kingsbury & Alvaro,
"Elle: inferring isolation anomalies from experimental observations", 2020).

A transaction is an `Op` with `f == "txn"` whose `value` is its micro-operations as
asked and whose `result` is them as observed: `("r", key, None)` / `("r", key, [1, 2])`
reads a whole list, `("append", key, 3)` appends an element. Elements are unique per
key, so every read names the transactions whose appends it saw, and the longest read of
a key gives that key's version order (every other read must be a prefix of it). `key`
says how the transaction read: "strong" (linearizable, in real-time order) or
"eventual" (a read-only snapshot of some committed prefix: serializable, but it may be
stale, so nothing has to precede it in real time).

From the version orders the checker infers dependencies between transactions (Adya):
  ww  T1 appended the element just before T2's in a key's order (T2 overwrote T1);
  wr  T2 read a list whose last element T1 appended (T2 saw T1's write);
  rw  T1 read a list that T2's append extended next (T1 did not see T2: anti-dependency);
  rt  T1 completed before T2 was invoked (real time; only into strong transactions,
      since eventual reads may be stale, but out of every transaction: no read sees
      the future).
and looks for cycles, classified by the weakest edges that suffice:
  G0        a cycle of ww edges only (dirty write)
  G1c       ww and wr edges (circular information flow)
  G-single  exactly one rw edge (read skew, lost update)
  G2        more than one rw edge (write skew)
and, with rt edges, the same names suffixed "-realtime" (e.g. a stale read is
G-single-realtime: serializable, not strict serializable).

Beside cycles, anomalies seen directly in reads:
  G1a              a read saw an element whose transaction failed (aborted read)
  G1b              a read saw a transaction's intermediate state: an element that
                   transaction followed by another append to the same key
  incompatible-order  two reads of a key where neither is a prefix of the other
  duplicate        an element twice in one read
  garbage          an element no transaction ever appended (invented data)
  lost-append      an acknowledged append missing from the final read of its key
  future-read      a read saw an append whose transaction was invoked after the
                   read completed (reported through the rt-cycle too; kept here for
                   eventual reads, whose history has no other constraint)

Pure: histories in, a verdict out; it must not import the workloads or the cluster.
Cost is linear in the history plus one SCC pass (Tarjan) per anomaly class.
"""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.jepsen.history import Op, Status

WW, WR, RW, RT = "ww", "wr", "rw", "rt"
# Classes in order of strength; each allows the edges of those before it.
CLASSES: list[tuple[str, frozenset[str]]] = [
    ("G0", frozenset({WW})),
    ("G1c", frozenset({WW, WR})),
    ("G2", frozenset({WW, WR, RW})),
    ("realtime", frozenset({WW, WR, RW, RT})),
]
_RANK = {WW: 0, WR: 1, RW: 2, RT: 3}


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: str
    detail: str
    ops: tuple[Op, ...] = ()
    cycle: tuple[tuple[int, str], ...] = ()  # (transaction index, edge to the next)

    def explain(self) -> str:
        lines = [f"{self.kind}: {self.detail}"]
        lines += [f"    {op}" for op in self.ops]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Verdict:
    valid: bool
    anomalies: list[Anomaly] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def kinds(self) -> set[str]:
        return {a.kind for a in self.anomalies}

    def smallest(self) -> Anomaly | None:
        """The anomaly with the fewest transactions involved (the easiest to read)."""
        if not self.anomalies:
            return None
        return min(self.anomalies, key=lambda a: (len(a.ops) or 1, a.kind))

    def explain(self) -> str:
        head = "ok" if self.valid else f"INVALID {sorted(self.kinds)}"
        lines = [f"{head} {self.stats}"]
        for a in self.anomalies[:10]:
            lines.append("  " + a.explain().replace("\n", "\n  "))
        return "\n".join(lines)


def _mops(op: Op) -> list[tuple[str, Any, Any]]:
    source = op.result if op.status is Status.OK and op.result is not None else op.value
    return [(str(m[0]), m[1], m[2]) for m in source]


def _reads(op: Op) -> Iterator[tuple[Any, list[Any]]]:
    if op.status is not Status.OK:
        return
    for f, k, v in _mops(op):
        if f == "r" and v is not None:
            yield k, list(v)


def _appends(op: Op) -> Iterator[tuple[Any, Any]]:
    for f, k, v in _mops(op):
        if f == "append":
            yield k, v


def check(
    ops: Iterable[Op],
    final: dict[Any, list[Any]] | None = None,
    realtime: bool = True,
) -> Verdict:
    """Judge a list-append history. `final` maps keys to a strong read taken after every
    operation finished (for lost appends); it also joins the version orders."""
    history = [op for op in ops if op.f == "txn"]
    anomalies: list[Anomaly] = []
    writer: dict[tuple[Any, Any], int] = {}  # (key, element) -> index of its txn
    failed_writer: dict[tuple[Any, Any], int] = {}
    appends_by_txn: dict[int, dict[Any, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for i, op in enumerate(history):
        for k, v in _appends(op):
            if op.status is Status.FAIL:
                failed_writer[(k, v)] = i
            else:
                writer[(k, v)] = i
                appends_by_txn[i][k].append(v)

    # Version orders: the longest read of each key; every read a prefix of it.
    longest: dict[Any, list[Any]] = {}
    sources: list[tuple[Any, list[Any], Op | None]] = [
        (k, v, txn) for txn in history for k, v in _reads(txn)
    ]
    sources += [(k, list(v), None) for k, v in (final or {}).items()]
    for k, seen, reader in sources:
        where = "a read" if reader is not None else "the final read"
        if len(set(seen)) != len(seen):
            dup = sorted({x for x in seen if seen.count(x) > 1}, key=repr)
            anomalies.append(
                Anomaly("duplicate", f"key {k!r}: {dup} twice in {where}", _some(reader))
            )
        for x in seen:
            if (k, x) in failed_writer and (k, x) not in writer:
                aborted = history[failed_writer[(k, x)]]
                anomalies.append(
                    Anomaly(
                        "G1a",
                        f"key {k!r}: read {x!r} appended by a failed txn",
                        (aborted, *_some(reader)),
                    )
                )
            elif (k, x) not in writer:
                anomalies.append(
                    Anomaly("garbage", f"key {k!r}: read {x!r}, never appended", _some(reader))
                )
        if seen:
            last = seen[-1]
            wl = writer.get((k, last))
            if wl is not None and reader is not None and history[wl] is not reader:
                mine = appends_by_txn[wl][k]
                if last in mine and mine.index(last) < len(mine) - 1:
                    anomalies.append(
                        Anomaly(
                            "G1b",
                            f"key {k!r}: read ends at {last!r}, an intermediate append",
                            (history[wl], reader),
                        )
                    )
        current = longest.get(k, [])
        if len(seen) > len(current):
            current, seen = seen, current
            longest[k] = current
        if seen != current[: len(seen)]:
            anomalies.append(
                Anomaly(
                    "incompatible-order",
                    f"key {k!r}: {seen} is not a prefix of {current}",
                    _some(reader),
                )
            )

    # Acknowledged appends missing from the final read.
    if final is not None:
        for (k, x), wi in writer.items():
            op = history[wi]
            if op.status is Status.OK and k in final and x not in final[k]:
                anomalies.append(
                    Anomaly(
                        "lost-append", f"key {k!r}: acknowledged {x!r} not in the final read", (op,)
                    )
                )

    # Dependency graph. Nodes 0..n-1 are transactions; n.. are real-time barriers.
    n = len(history)
    edges: dict[int, dict[int, str]] = defaultdict(dict)

    def add(a: int, b: int, kind: str) -> None:
        if a == b:
            return
        old = edges[a].get(b)
        if old is None or _RANK[kind] < _RANK[old]:
            edges[a][b] = kind

    for k, order in longest.items():
        for x, y in itertools.pairwise(order):
            a, b = writer.get((k, x)), writer.get((k, y))
            if a is not None and b is not None:
                add(a, b, WW)
    for i, op in enumerate(history):
        for k, seen in _reads(op):
            if seen:
                a = writer.get((k, seen[-1]))
                if a is not None:
                    add(a, i, WR)
            order = longest.get(k, [])
            if len(seen) < len(order) and seen == order[: len(seen)]:
                b = writer.get((k, order[len(seen)]))
                if b is not None:
                    add(i, b, RW)
    # Own appends read back inside a transaction are not dependencies; the version
    # order already places them. (A txn reading its own append adds no edge: a == b.)

    barrier_of: dict[int, int] = {}
    if realtime:
        completes = sorted({op.complete for op in history if op.status is Status.OK})
        index = {t: n + j for j, t in enumerate(completes)}
        for j in range(len(completes) - 1):
            add(n + j, n + j + 1, RT)
        for i, op in enumerate(history):
            if op.status is Status.OK:
                add(i, index[op.complete], RT)
                barrier_of[i] = index[op.complete]
            if op.key == "eventual" or not completes:
                continue  # may be stale: nothing need precede it in real time
            # the latest completion strictly before this invocation
            lo, hi = 0, len(completes)
            while lo < hi:
                mid = (lo + hi) // 2
                if completes[mid] < op.invoke:
                    lo = mid + 1
                else:
                    hi = mid
            if lo > 0:
                add(n + lo - 1, i, RT)
        # A read never sees an append invoked after the read completed; for eventual
        # reads this is their only real-time constraint, so say it plainly.
        for i, op in enumerate(history):
            if op.status is not Status.OK:
                continue
            for k, seen in _reads(op):
                for x in seen:
                    wj = writer.get((k, x))
                    if wj is not None and wj != i and history[wj].invoke > op.complete:
                        anomalies.append(
                            Anomaly(
                                "future-read",
                                f"key {k!r}: read {x!r} before its append was invoked",
                                (op, history[wj]),
                            )
                        )

    seen_cycles: set[frozenset[int]] = set()
    for name, allowed in CLASSES:
        for cycle in _cycles(edges, allowed, n):
            members = frozenset(i for i, _ in cycle if i < n)
            if members in seen_cycles:
                continue
            seen_cycles.add(members)
            kinds = [kind for _, kind in cycle]
            anomalies.append(_classify(name, cycle, kinds, history, n))

    oks = sum(op.status is Status.OK for op in history)
    stats = {
        "txns": len(history),
        "ok": oks,
        "info": sum(op.status is Status.INFO for op in history),
        "keys": len(longest),
        "edges": sum(len(v) for v in edges.values()),
    }
    return Verdict(not anomalies, anomalies, stats)


def _some(op: Op | None) -> tuple[Op, ...]:
    return () if op is None else (op,)


def _classify(
    name: str, cycle: list[tuple[int, str]], kinds: list[str], history: list[Op], n: int
) -> Anomaly:
    rws = kinds.count(RW)
    if name == "G0":
        kind = "G0"
    elif name == "G1c":
        kind = "G1c"
    else:
        kind = "G-single" if rws == 1 else ("G2" if rws > 1 else "G1c")
        if name == "realtime":
            kind += "-realtime"
    shown = [(i, k) for i, k in cycle if i < n]
    path = " -> ".join(f"T{i}" for i, _ in shown) + f" -> T{shown[0][0]}" if shown else ""
    txn_edges = [k for k in kinds if k != RT] + ([RT] if RT in kinds else [])
    detail = f"cycle {path} via {', '.join(txn_edges)}"
    return Anomaly(kind, detail, tuple(history[i] for i, _ in shown), tuple(shown))


def _cycles(
    edges: dict[int, dict[int, str]], allowed: frozenset[str], n: int
) -> list[list[tuple[int, str]]]:
    """One short cycle per strongly connected component of the graph restricted to
    `allowed` edges, each as [(node, kind of the edge leaving it)]."""
    out: list[list[tuple[int, str]]] = []
    for scc in _sccs(edges, allowed):
        if len(scc) < 2:
            continue
        start = min((i for i in scc if i < n), default=min(scc))
        cycle = _shortest_cycle(edges, allowed, scc, start)
        if cycle:
            out.append(cycle)
    return out


def _shortest_cycle(
    edges: dict[int, dict[int, str]], allowed: frozenset[str], scc: set[int], start: int
) -> list[tuple[int, str]]:
    parent: dict[int, tuple[int, str]] = {}
    queue = deque([start])
    visited = {start}
    while queue:
        node = queue.popleft()
        for nxt, kind in edges.get(node, {}).items():
            if kind not in allowed or nxt not in scc:
                continue
            if nxt == start:
                path = [(node, kind)]
                while node != start:
                    prev, k = parent[node]
                    path.append((prev, k))
                    node = prev
                return list(reversed(path))
            if nxt not in visited:
                visited.add(nxt)
                parent[nxt] = (node, kind)
                queue.append(nxt)
    return []


def _sccs(edges: dict[int, dict[int, str]], allowed: frozenset[str]) -> list[set[int]]:
    """Tarjan's algorithm, iterative (histories are long; Python's stack is not)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    out: list[set[int]] = []
    counter = 0
    nodes = set(edges) | {b for targets in edges.values() for b in targets}
    for root in sorted(nodes):
        if root in index:
            continue
        work: list[tuple[int, Iterator[int]]] = []
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work.append((root, _succ(edges, allowed, root)))
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, _succ(edges, allowed, nxt)))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.add(w)
                    if w == node:
                        break
                out.append(component)
    return out


def _succ(edges: dict[int, dict[int, str]], allowed: frozenset[str], node: int) -> Iterator[int]:
    return (b for b, kind in edges.get(node, {}).items() if kind in allowed)
