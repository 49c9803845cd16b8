"""Sample a server process with py-spy during a cell and summarise where its time goes.

py-spy is optional (`pip install py-spy`); without it `--profile` is refused up front.
`record --format raw` writes collapsed stacks ("frame;frame;leaf count"), each frame
"function (file:line)"; the summary lists the top frames by self samples (the leaf)
and by inclusive samples (anywhere on the stack), with file:line.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    return subprocess.Popen(
        [
            exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
            "--rate", "250", "--format", "raw", "--output", str(output), "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _short(frame: str) -> str:
    """Trim the site-packages / repo prefix so file:line stays readable."""
    for marker in ("site-packages/", "/node/", "/lib/python3.11/"):
        if marker in frame:
            head, _, tail = frame.partition("(")
            path = tail.rsplit(marker, 1)[-1]
            return f"{head}({path}"
    return frame


def summarise(raw: Path, top: int = 15) -> list[str]:
    if not raw.exists():
        return ["(no samples written)"]
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f]
        total += count
        leaf = frames[-1] if frames else "?"
        self_time[leaf] += count
        for frame in set(frames):
            inclusive[frame] += count
    if total == 0:
        return ["(no samples)"]
    lines = [f"{total} samples of the busy threads (py-spy leaves out idle ones)", "", "self:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in self_time.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top + 10)]
    return lines
