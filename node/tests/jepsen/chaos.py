"""`make chaos`: one long Jepsen-style run, or the replay of a seed, outside pytest.

    PYTHONPATH=node python -m tests.jepsen.chaos --seed 42 --time 120 --mix all --replicas 5

The run's folder (history.jsonl, timeline.jsonl, verdict.json, report.txt, node logs)
is `<out>/<UTC timestamp>-seed<N>-<mix>/`, printed at the end. Exit status 0 when every
checker accepts the history, 1 otherwise (the report ends with the smallest anomaly).
A seed fixes the fault schedule and the workers' choices; thread timing still differs
from run to run, so a replay repeats the faults, not the exact interleaving.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from tests.jepsen import nemesis, runner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="default: a fresh random one")
    parser.add_argument("--time", type=float, default=60.0, help="seconds of faults")
    parser.add_argument("--mix", default="all", choices=sorted(nemesis.MIXES))
    parser.add_argument("--replicas", type=int, default=3, choices=[3, 5])
    parser.add_argument("--out", type=Path, default=Path(".cache/jepsen"))
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1, 1 << 31)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = (args.out / f"{stamp}-seed{seed}-{args.mix}-r{args.replicas}").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    print(
        f"chaos: seed={seed} mix={args.mix} time={args.time:g}s replicas={args.replicas} "
        f"network={runner.network_mode()} folder={folder}",
        flush=True,
    )
    report = runner.run(
        folder / "cluster", seed, args.mix, args.time, out=folder, replicas=args.replicas
    )
    print(report.render())
    print(f"chaos: {'VALID' if report.valid else 'INVALID'}; artifacts in {folder}")
    return 0 if report.valid else 1


if __name__ == "__main__":
    sys.exit(main())
