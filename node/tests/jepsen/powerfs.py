"""A FUSE file system that loses what was not fsynced when it "loses power": the
`power` fault's disk (LazyFS-style, in Python over fusepy and libfuse 2).

Every operation passes through to a backing directory at once, so the replica reads
what it wrote. Per file, the file system remembers its state at the last fsync or
fdatasync: the size then, and the old bytes of every region overwritten since (an undo
log; appends, almost all that RocksDB writes, need none). Unmounting is the power
cut: the daemon then puts every file back as it was at its last sync (undo in reverse
order, truncate to the synced size; a file never synced since it was created ends
empty) and exits, printing what it dropped. Mounting again is the power coming back.

The model, stated: file data is durable only through fsync/fdatasync of that file; names
(create, rename, unlink, link, mkdir) are durable at once (as if every directory were
fsynced; RocksDB fsyncs its directory after each of these anyway), and a never-synced
file keeps its name but not its bytes, which on ext4 is a legal state after a crash.
Hard links share their inode, not their tracking; RocksDB links only synced, immutable
table files (checkpoints). The kernel may cache pages and attributes of a mounted
file, so the power cut is always an unmount: the restarted replica sees only disk.

Live faults, for as long as they are set (`PowerDisk.set_faults`, which writes their
names into the control file CONTROL at the root of the mount; the write returns once the
daemon has them, and a power cycle clears them):
    full   every write, create, mkdir and growing truncate fails with ENOSPC, and statfs
           reports no space left: a full disk, without filling a real one;
    eio    every fsync/fdatasync (files and directories) fails with EIO and makes nothing
           durable: a failing device. A replica must stop rather than acknowledge.

Run as its own process (`PowerDisk` does):
    python -m tests.jepsen.powerfs BACKING MOUNTPOINT

Needs /dev/fuse, libfuse2 and fusermount (Debian `fuse`) and fusepy; `make fuse` (part
of `make test` and `make chaos`) installs them. Single-threaded on purpose: the undo log
needs no lock, and every operation is a short local system call.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def available() -> str | None:
    """Why a power-loss disk cannot be mounted here, or None when it can."""
    if os.geteuid() != 0:
        return "FUSE mounts need root here"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if shutil.which("fusermount") is None:
        return "no fusermount (Debian package fuse; `make fuse`)"
    try:
        import fuse  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"fusepy or libfuse2 missing (`make fuse`): {exc}"
    return None


@dataclass(slots=True)
class _Tracked:
    synced_size: int  # invariant: the file's bytes [0, synced_size) are as synced, after undo
    undo: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, old bytes)


CONTROL = "/.powerfs-faults"
FAULTS = ("full", "eio")


def _operations(root: str) -> Any:
    from fuse import FuseOSError, Operations

    class PowerLossFs(Operations):  # type: ignore[misc]
        def __init__(self) -> None:
            self.root = root
            self.files: dict[str, _Tracked] = {}
            self.faults: set[str] = set()  # live faults (see CONTROL)

        def _fault(self, name: str, error: int) -> None:
            if name in self.faults:
                raise FuseOSError(error)

        def _full(self, path: str) -> str:
            return os.path.join(self.root, path.lstrip("/"))

        def __call__(self, op: str, *args: Any) -> Any:
            if not hasattr(self, op):
                raise FuseOSError(errno.EFAULT)
            try:
                return getattr(self, op)(*args)
            except OSError as exc:
                raise FuseOSError(exc.errno or errno.EIO) from exc

        # Tracking ------------------------------------------------------------------

        def _track(self, path: str) -> _Tracked:
            state = self.files.get(path)
            if state is None:  # unchanged since mounted (or since its last sync)
                try:
                    size = os.lstat(self._full(path)).st_size
                except FileNotFoundError:
                    size = 0
                state = self.files[path] = _Tracked(size)
            return state

        def _save_old(self, path: str, offset: int, length: int) -> None:
            """Keep the synced bytes that [offset, offset + length) is about to change."""
            state = self._track(path)
            end = min(offset + length, state.synced_size)
            if end <= offset:
                return
            with open(self._full(path), "rb") as f:
                f.seek(offset)
                old = f.read(end - offset)
            if old:
                state.undo.append((offset, old))

        def power_loss(self) -> dict[str, int]:
            """Every file back to its last sync."""
            files = dropped = 0
            for path, state in self.files.items():
                full = self._full(path)
                try:
                    size = os.lstat(full).st_size
                except FileNotFoundError:
                    continue
                if not state.undo and size == state.synced_size:
                    continue
                files += 1
                dropped += max(0, size - state.synced_size) + sum(len(b) for _, b in state.undo)
                fd = os.open(full, os.O_WRONLY)
                try:
                    for offset, old in reversed(state.undo):
                        os.pwrite(fd, old, offset)
                    os.ftruncate(fd, state.synced_size)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self.files.clear()
            return {"files_reverted": files, "bytes_dropped": dropped}

        # Names ---------------------------------------------------------------------

        def access(self, path: str, mode: int) -> None:
            if not os.access(self._full(path), mode):
                raise FuseOSError(errno.EACCES)

        def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
            st = os.lstat(self._full(path))
            keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink",
                    "st_size", "st_uid", "st_blocks")  # fmt: skip
            return {k: getattr(st, k) for k in keys}

        def readdir(self, path: str, fh: Any) -> list[str]:
            return [".", "..", *os.listdir(self._full(path))]

        def readlink(self, path: str) -> str:
            return os.readlink(self._full(path))

        def mkdir(self, path: str, mode: int) -> None:
            self._fault("full", errno.ENOSPC)
            os.mkdir(self._full(path), mode)

        def rmdir(self, path: str) -> None:
            os.rmdir(self._full(path))

        def unlink(self, path: str) -> None:
            os.unlink(self._full(path))
            self.files.pop(path, None)

        def rename(self, old: str, new: str) -> None:
            os.rename(self._full(old), self._full(new))
            self.files.pop(new, None)
            state = self.files.pop(old, None)
            if state is not None:
                self.files[new] = state

        def link(self, target: str, source: str) -> None:
            os.link(self._full(source), self._full(target))

        def symlink(self, target: str, source: str) -> None:
            os.symlink(source, self._full(target))

        def chmod(self, path: str, mode: int) -> None:
            os.chmod(self._full(path), mode)

        def chown(self, path: str, uid: int, gid: int) -> None:
            os.chown(self._full(path), uid, gid)

        def utimens(self, path: str, times: Any = None) -> None:
            os.utime(self._full(path), times)

        def statfs(self, path: str) -> dict[str, Any]:
            sv = os.statvfs(self._full(path))
            keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                    "f_files", "f_flag", "f_frsize", "f_namemax")  # fmt: skip
            stats = {k: getattr(sv, k) for k in keys}
            if "full" in self.faults:
                stats["f_bavail"] = stats["f_bfree"] = 0
            return stats

        # Data ----------------------------------------------------------------------

        def create(self, path: str, mode: int, fi: Any = None) -> int:
            if path == CONTROL:
                return os.open(self._full(path), os.O_RDWR | os.O_CREAT, mode)
            self._fault("full", errno.ENOSPC)
            fd = os.open(self._full(path), os.O_RDWR | os.O_CREAT, mode)
            self.files[path] = _Tracked(0)  # a new file: nothing of it is synced yet
            return fd

        def open(self, path: str, flags: int) -> int:
            return os.open(self._full(path), flags)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return os.pread(fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            if path == CONTROL:
                self.faults = set(data.decode().split()) & set(FAULTS)
                return len(data)
            self._fault("full", errno.ENOSPC)
            self._save_old(path, offset, len(data))
            return os.pwrite(fh, data, offset)

        def truncate(self, path: str, length: int, fh: Any = None) -> None:
            if path == CONTROL:
                return
            if length > os.lstat(self._full(path)).st_size:
                self._fault("full", errno.ENOSPC)
            state = self._track(path)
            if length < state.synced_size:
                self._save_old(path, length, state.synced_size - length)
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                os.truncate(self._full(path), length)

        def fsync(self, path: str, datasync: int, fh: int) -> None:
            self._fault("eio", errno.EIO)
            # The model, not the backing disk, decides what survives: no real fsync.
            self.files[path] = _Tracked(os.fstat(fh).st_size)

        def fsyncdir(self, path: str, datasync: int, fh: Any) -> None:
            self._fault("eio", errno.EIO)

        def flush(self, path: str, fh: int) -> None:
            return None  # close(2) is not a sync

        def release(self, path: str, fh: int) -> None:
            os.close(fh)

    return PowerLossFs()


def main(argv: list[str]) -> int:
    from fuse import FUSE

    backing, mountpoint = argv
    ops = _operations(os.path.abspath(backing))
    FUSE(ops, mountpoint, foreground=True, nothreads=True)
    # Unmounted: the power is cut.
    print(json.dumps({"power_loss": ops.power_loss()}), flush=True)
    return 0


class PowerDisk:
    """One replica's data directory on a power-loss file system."""

    def __init__(self, backing: Path, mountpoint: Path, log: Path) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.losses: list[dict[str, int]] = []

    def mount(self, timeout: float = 10.0) -> None:
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child process
        node_dir = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(node_dir), os.environ.get("PYTHONPATH")) if p)}  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.jepsen.powerfs", str(self.backing),
             str(self.mountpoint)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        out.close()
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"powerfs did not mount {self.mountpoint}: {self._tail()}")
            time.sleep(0.02)

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def unmount(self, timeout: float = 20.0) -> dict[str, int]:
        """Cut the power: unmount (nothing may use the mount any more), wait for the
        daemon to put back the last synced state; what it dropped."""
        if self.proc is None:
            return {}
        if os.path.ismount(self.mountpoint):
            done = subprocess.run(["fusermount", "-u", str(self.mountpoint)], check=False)
            if done.returncode != 0:
                subprocess.run(["fusermount", "-u", "-z", str(self.mountpoint)], check=False)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        loss: dict[str, int] = {}
        for line in self._tail().splitlines():
            if line.startswith('{"power_loss"'):
                loss = json.loads(line)["power_loss"]
        self.losses.append(loss)
        return loss

    def set_faults(self, *names: str) -> None:
        """Set the live faults (none: clear them); in force when this returns."""
        unknown = set(names) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown disk faults {sorted(unknown)}")
        with open(self.mountpoint / CONTROL.lstrip("/"), "w") as f:
            f.write(" ".join(names) or " ")  # an empty write would never reach the daemon

    def power_cycle(self) -> dict[str, int]:
        """Power off (losing what was not synced) and on again."""
        loss = self.unmount()
        self.mount()
        return loss


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
