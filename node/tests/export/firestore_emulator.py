"""Google's Firestore emulator in Datastore mode, as a test partner: started on a free
loopback port (optionally importing an export at start), exporting on request.

The emulator ships with the Cloud SDK (component cloud-firestore-emulator, Java). Tests
that need it and cannot find it fail saying so: they are the proof that the export
format is Google's, so they are never skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.harness import free_port

START_TIMEOUT_S = 90.0


def launcher() -> Path:
    candidates = []
    gcloud = shutil.which("gcloud")
    if gcloud:
        candidates.append(Path(os.path.realpath(gcloud)).parents[1])
    candidates.append(Path("/usr/lib/google-cloud-sdk"))
    for sdk in candidates:
        path = sdk / "platform" / "cloud-firestore-emulator" / "cloud_firestore_emulator"
        if path.is_file():
            return path
    raise RuntimeError(
        "Google's Firestore emulator is not installed: these tests need it (gcloud "
        "components install cloud-firestore-emulator, or apt-get install "
        "google-cloud-cli-firestore-emulator) and Java"
    )


class FirestoreEmulator:
    def __init__(self, folder: Path, import_data: Path | None = None) -> None:
        if shutil.which("java") is None:
            raise RuntimeError("Java is not installed: Google's Firestore emulator needs it")
        self.folder = folder
        self.port = free_port()
        self.log_path = folder / "firestore-emulator.log"
        args = [
            str(launcher()),
            "start",
            "--database-mode=datastore-mode",
            "--host=127.0.0.1",
            f"--port={self.port}",
        ]
        if import_data is not None:
            args.append(f"--import-data={import_data}")
        folder.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _wait(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Firestore emulator exited: {self.log()}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/", timeout=1) as r:
                    if r.read().strip() == b"Ok":
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Firestore emulator did not start: {self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def export(self, project: str, directory: Path) -> Path:
        """The emulator's own export (POST :export); returns its overall metadata file."""
        directory.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {"database": f"projects/{project}/databases/", "export_directory": str(directory)}
        ).encode()
        request = urllib.request.Request(
            f"http://{self.address}/emulator/v1/projects/{project}:export",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
        found = sorted(directory.rglob("*.overall_export_metadata"))
        if len(found) != 1:
            raise RuntimeError(f"the emulator's export left {found} in {directory}")
        return found[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(os.getpgid(self.proc.pid), signal.SIGKILL)
        self.proc.wait(timeout=30)
