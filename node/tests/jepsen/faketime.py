"""libfaketime for the `clock` nemesis, built by the harness from Debian's source.

Debian bookworm ships libfaketime 0.9.10, which breaks the node it is meant to test: with
DONT_FAKE_MONOTONIC=1, Python 3.11's `time.sleep()` (an absolute CLOCK_MONOTONIC
clock_nanosleep) fails with EINVAL, and a three-replica cluster under it managed 6
puts/s. 0.9.12 fixes that. Debian's pool serves its source (the orig tarball of a later
release), so this module downloads it once, checks its SHA-256, builds only the preload
library (without FAKE_PTHREAD: `_without_fake_pthread`) with the machine's cc and
make, and keeps it in `.cache/faketime/<version>-nopthread/`
(git-ignored; reused). `make faketime` runs it; `make test`, `make jepsen` and
`make chaos` depend on that target.

A replica under it (`env()`) has a wall clock that follows a timestamp file ("+0",
"+2h", "-90s", ...), re-read once its copy is over `CACHE_S` old (a change shows within
two seconds); its monotonic clock stays real
(DONT_FAKE_MONOTONIC), so Raft ticks, timeouts and sleeps are unaffected while the hybrid
commit clock, the retention horizon and every C library's CLOCK_REALTIME move.

    python -m tests.jepsen.faketime        # build if missing; print the library's path
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "0.9.12"
URL = f"http://deb.debian.org/debian/pool/main/f/faketime/faketime_{VERSION}.orig.tar.gz"
SHA256 = "4fc32218697c052adcdc5ee395581f2554ca56d086ac817ced2be0d6f1f8a9fa"
REPO = Path(__file__).resolve().parents[3]
BUILD = f"{VERSION}-nopthread"  # the cache folder: version and build flavour
LIBRARY = REPO / ".cache" / "faketime" / BUILD / "libfaketime.so.1"
CACHE_S = 1  # how stale a replica's view of its timestamp file may be


def library() -> Path | None:
    """The built preload library, or None when `make faketime` has not run."""
    return LIBRARY if LIBRARY.is_file() else None


def build(target: Path = LIBRARY) -> Path:
    """Download, verify and build the preload library (idempotent)."""
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="faketime-") as tmp:
        archive = Path(tmp) / "faketime.tar.gz"
        with urllib.request.urlopen(URL, timeout=60) as response:
            archive.write_bytes(response.read())
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != SHA256:
            raise RuntimeError(f"{URL}: sha256 {digest}, expected {SHA256}")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        source = Path(tmp) / f"libfaketime-{VERSION}" / "src"
        _without_fake_pthread(source)
        subprocess.run(
            ["make", "-s", "-C", str(source), "libfaketime.so.1"],
            check=True,
            capture_output=True,
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_suffix(".tmp")
        shutil.copy2(source / "libfaketime.so.1", staged)
        staged.replace(target)
    return target


def _without_fake_pthread(source: Path) -> None:
    """Build without FAKE_PTHREAD: its pthread_cond_timedwait wrapper slowed CPython's
    GIL hand-off fourfold (two CPU-bound threads: 0.37 s -> 1.50 s), and a replica under
    it served a third of the operations. Nothing here needs faked condition-variable
    timeouts. pthread.h is still needed, so its include no longer depends on the flag."""
    makefile = source / "Makefile"
    text = makefile.read_text()
    if " -DFAKE_PTHREAD " not in text:
        raise RuntimeError(f"{makefile}: no -DFAKE_PTHREAD to remove")
    makefile.write_text(text.replace(" -DFAKE_PTHREAD ", " ", 1))
    code = source / "libfaketime.c"
    text = code.read_text()
    guard = "#if defined PTHREAD_SINGLETHREADED_TIME || defined FAKE_PTHREAD\n#include <pthread.h>"
    if guard not in text:
        raise RuntimeError(f"{code}: the pthread.h include guard moved")
    code.write_text(text.replace(guard, "#if 1\n#include <pthread.h>", 1))


def env(clock_file: Path, lib: Path) -> dict[str, str]:
    """The environment of a replica whose wall clock follows `clock_file`."""
    return {
        "LD_PRELOAD": str(lib),
        "FAKETIME_TIMESTAMP_FILE": str(clock_file),
        "FAKETIME_CACHE_DURATION": str(CACHE_S),
        "DONT_FAKE_MONOTONIC": "1",
    }


def main() -> int:
    try:
        print(build())
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        print(f"faketime: cannot build libfaketime {VERSION}: {exc} {detail!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
