"""Invariant checkers for the bank and set workloads, and for eventual reads of the
registers (pure: histories in, verdicts out).

bank: every completed read of all accounts sees every account, the constant total and no
negative balance (transfers are serializable transactions, so no snapshot may see money
created, destroyed or overdrawn). Eventual reads (`eread`) too: the node serves one at a
single applied commit timestamp, a committed state, so it sees either every account
(before setup committed: none) at the total, never a half-applied transfer.
set: every acknowledged insert is in the final read; nothing is there that was never
attempted; an insert whose outcome was unknown may be either. An eventual read may miss
any insert, but holds only elements attempted before the read completed and never one
whose insert was refused.
registers, eventual reads: a value read must have been written (write or cas, not
refused) by an operation invoked before the read completed, or be None (absent); any
older value is allowed (stale), an invented or refused one is not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.jepsen.history import Op, Status


@dataclass(frozen=True, slots=True)
class Verdict:
    valid: bool
    problems: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    def explain(self) -> str:
        head = "ok" if self.valid else "INVALID"
        return "\n".join([f"{head} {self.stats}", *(f"  {p}" for p in self.problems[:20])])


def check_bank(ops: Iterable[Op], accounts: list[str], total: int) -> Verdict:
    ops = list(ops)
    problems = []
    reads = 0
    for op in ops:
        if op.f not in ("read", "eread") or op.status is not Status.OK:
            continue
        reads += 1
        balances: dict[str, int] = op.result
        if op.f == "eread" and not balances:
            continue  # a replica that has not applied the setup yet: the empty state
        if sorted(balances) != sorted(accounts):
            problems.append(f"read sees accounts {sorted(balances)}: {op}")
        elif sum(balances.values()) != total:
            problems.append(f"read totals {sum(balances.values())}, not {total}: {op}")
        elif any(b < 0 for b in balances.values()):
            problems.append(f"read sees a negative balance: {op}")
    transfers = [op for op in ops if op.f == "transfer"]
    ereads = [op for op in ops if op.f == "eread"]
    stats = {
        "reads": reads,
        "eventual_reads": sum(op.status is Status.OK for op in ereads),
        "transfers_ok": sum(op.status is Status.OK for op in transfers),
    }
    return Verdict(not problems, problems, stats)


def check_set(ops: Iterable[Op], final: set[str], where: str = "final read") -> Verdict:
    ops = list(ops)
    adds = [op for op in ops if op.f == "add"]
    acked = {op.value for op in adds if op.status is Status.OK}
    failed = {op.value for op in adds if op.status is Status.FAIL}
    attempted = {op.value for op in adds}
    lost = sorted(acked - final)
    phantom = sorted(final - attempted)
    resurrected = sorted(final & failed)
    problems = []
    if lost:
        problems.append(f"{where}: {len(lost)} acknowledged inserts missing: {lost[:10]}")
    if phantom:
        problems.append(f"{where}: {len(phantom)} elements never attempted: {phantom[:10]}")
    if resurrected:
        problems.append(
            f"{where}: {len(resurrected)} inserts reported as failed are present: "
            f"{resurrected[:10]} — " + "; ".join(str(o) for o in adds if o.value in resurrected[:3])
        )
    first_invoke = {op.value: op.invoke for op in adds}
    ereads = 0
    for op in ops:
        if op.f != "eread" or op.status is not Status.OK:
            continue
        ereads += 1
        seen = set(op.result)
        invented = sorted(x for x in seen if first_invoke.get(x, op.complete + 1) > op.complete)
        refused = sorted(seen & failed)
        if invented:
            problems.append(f"eventual read holds {invented[:10]}, not attempted by then: {op}")
        if refused:
            problems.append(f"eventual read holds refused inserts {refused[:10]}: {op}")
    stats = {
        "eventual_reads": ereads,
        "attempted": len(attempted),
        "acked": len(acked),
        "failed": len(failed),
        "unknown": len(attempted) - len(acked) - len(failed),
        "final": len(final),
        "lost": len(lost),
    }
    return Verdict(not problems, problems, stats)


def check_eventual_registers(ops: Iterable[Op]) -> Verdict:
    """Eventual register reads: stale is fine, invented or refused is not (see above)."""
    ops = list(ops)
    written: dict[tuple[object, object], list[Op]] = {}
    for op in ops:
        if op.f == "write":
            written.setdefault((op.key, op.value), []).append(op)
        elif op.f == "cas":
            written.setdefault((op.key, op.value[1]), []).append(op)
    problems = []
    reads = 0
    for op in ops:
        if op.f != "eread" or op.status is not Status.OK or op.result is None:
            continue
        reads += 1
        writers = written.get((op.key, op.result), [])
        if not writers:
            problems.append(f"eventual read of a value never written: {op}")
        elif all(w.status is Status.FAIL for w in writers):
            problems.append(f"eventual read of a refused write: {op}; {writers[0]}")
        elif all(w.invoke > op.complete for w in writers if w.status is not Status.FAIL):
            problems.append(f"eventual read of a write invoked after it: {op}; {writers[0]}")
    stats = {"eventual_reads": sum(op.f == "eread" and op.status is Status.OK for op in ops)}
    return Verdict(not problems, problems, stats)


def check_commit_timestamps(ops: Iterable[Op], final: dict[str, list[object]]) -> Verdict:
    """Commit timestamps (the leader's hybrid clock, carried in the log entry) must agree
    with the order the history shows, whoever led and whatever its wall clock said:
    * real time: a commit acknowledged before another was invoked has the smaller
      timestamp (timestamps monotonic across leader changes);
    * version order: along each list's final order, the appending transactions'
      timestamps increase (a snapshot at a timestamp sees a prefix of the log).
    Takes list-append transactions whose `commit_ts` was kept."""
    stamped = [op for op in ops if op.status is Status.OK and op.commit_ts is not None]
    problems: list[str] = []
    by_complete = sorted(stamped, key=lambda op: op.complete)
    j = 0
    best: Op | None = None  # the highest-stamped commit completed so far
    for op in sorted(stamped, key=lambda op: op.invoke):
        while j < len(by_complete) and by_complete[j].complete < op.invoke:
            done = by_complete[j]
            if best is None or (done.commit_ts or 0) > (best.commit_ts or 0):
                best = done
            j += 1
        if best is not None and (op.commit_ts or 0) <= (best.commit_ts or 0):
            problems.append(
                f"commit_ts {op.commit_ts} not above {best.commit_ts} of a commit acknowledged "
                f"before it began: {best} then {op}"
            )
    writer: dict[tuple[str, object], Op] = {}
    for op in stamped:
        for m in op.value:
            if m[0] == "append":
                writer[(m[1], m[2])] = op
    for key, order in final.items():
        last: Op | None = None
        for element in order:
            appender = writer.get((key, element))
            if appender is None:
                continue
            if (
                last is not None
                and appender is not last
                and (appender.commit_ts or 0) <= (last.commit_ts or 0)
            ):
                problems.append(
                    f"key {key!r}: {element!r} appended at {appender.commit_ts}, after an element "
                    f"appended at {last.commit_ts}: {last} then {appender}"
                )
            last = appender
    stats = {"stamped_commits": len(stamped)}
    return Verdict(not problems, problems, stats)


def check_commit_times_follow_real_time(
    ops: Iterable[Op], started_us: int, ended_us: int, tolerance_us: int
) -> Verdict:
    """Commit timestamps stay within `tolerance_us` of the real time of the run, however
    far one replica's wall clock is skewed: a leader whose clock jumps ahead must not
    stamp commits in the future (the hybrid clock never goes back, so one such stamp
    would hold every later commit there), nor one whose clock is behind in the past.
    `started_us`/`ended_us`: the test's own wall clock around the run."""
    stamped = [op for op in ops if op.status is Status.OK and op.commit_ts is not None]
    early = [op for op in stamped if (op.commit_ts or 0) < started_us - tolerance_us]
    late = [op for op in stamped if (op.commit_ts or 0) > ended_us + tolerance_us]
    problems = [
        f"commit_ts {op.commit_ts} is {(started_us - (op.commit_ts or 0)) / 1e6:.1f}s before "
        f"the run began: {op}"
        for op in early[:3]
    ] + [
        f"commit_ts {op.commit_ts} is {((op.commit_ts or 0) - ended_us) / 1e6:.1f}s after "
        f"the run ended: {op}"
        for op in late[:3]
    ]
    stats = {"stamped_commits": len(stamped), "early": len(early), "late": len(late)}
    return Verdict(not problems, problems, stats)
