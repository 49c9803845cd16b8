"""Invariant checkers for the bank and set workloads (pure: histories in, verdicts out).

bank: every completed read of all accounts sees every account, the constant total and no
negative balance (transfers are serializable transactions, so no snapshot may see money
created, destroyed or overdrawn).
set: every acknowledged insert is in the final read; nothing is there that was never
attempted; an insert whose outcome was unknown may be either.
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
    problems = []
    reads = 0
    for op in ops:
        if op.f != "read" or op.status is not Status.OK:
            continue
        reads += 1
        balances: dict[str, int] = op.result
        if sorted(balances) != sorted(accounts):
            problems.append(f"read sees accounts {sorted(balances)}: {op}")
        elif sum(balances.values()) != total:
            problems.append(f"read totals {sum(balances.values())}, not {total}: {op}")
        elif any(b < 0 for b in balances.values()):
            problems.append(f"read sees a negative balance: {op}")
    transfers = [op for op in ops if op.f == "transfer"] if isinstance(ops, list) else []
    stats = {"reads": reads, "transfers_ok": sum(op.status is Status.OK for op in transfers)}
    return Verdict(not problems, problems, stats)


def check_set(ops: Iterable[Op], final: set[str], where: str = "final read") -> Verdict:
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
    stats = {
        "attempted": len(attempted),
        "acked": len(acked),
        "failed": len(failed),
        "unknown": len(attempted) - len(acked) - len(failed),
        "final": len(final),
    }
    return Verdict(not problems, problems, stats)
