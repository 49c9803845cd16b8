"""A real S3-compatible server on loopback for tests: versitygw with its posix backend.

versitygw (Apache-2.0, github.com/versity/versitygw) is built from the Go module proxy by
`make versitygw` into .cache/bin/versitygw-<version> (about 3.5 min cold on 2 cores);
`make test` depends on it and passes its path in ZONESTORE_VERSITYGW. Run by hand, the
tests look for the cached binary at the default path.

    with S3Server(tmp_path) as s3:          # or the `s3_server` fixture
        store = objstore.open_store(s3.url("bucket-a", "prefix"), **s3.store_args())
        env = s3.env()                       # AWS_* variables for a CLI subprocess

Each server gets a free loopback port, its own folder and random root credentials, and
is stopped (and its folder left to pytest's tmp_path) on exit.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.harness import free_port

VERSITYGW_VERSION = "v1.8.0"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = REPO / ".cache" / "bin" / f"versitygw-{VERSITYGW_VERSION}"


def binary() -> Path:
    path = Path(os.environ.get("ZONESTORE_VERSITYGW", "") or DEFAULT_BINARY)
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            f"versitygw not found at {path}: run `make versitygw` (it builds from the Go "
            "module proxy into .cache/bin) or set ZONESTORE_VERSITYGW"
        )
    return path


class S3Server:
    """One versitygw process serving buckets from a folder."""

    region = "us-east-1"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.access_key = "zs" + secrets.token_hex(8)
        self.secret_key = secrets.token_hex(20)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "versitygw.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        data = self.root / "buckets"
        data.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            [
                str(binary()),
                "--port",
                f"127.0.0.1:{self.port}",
                "--access",
                self.access_key,
                "--secret",
                self.secret_key,
                "--region",
                self.region,
                "--quiet",
                "posix",
                str(data),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith(("ROOT_", "VGW_"))},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"versitygw exited with {self.proc.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"versitygw not listening in {timeout}s: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # What clients need ------------------------------------------------------------------

    def store_args(self) -> dict[str, Any]:
        """Keyword arguments for objstore.open_store."""
        return {
            "endpoint": self.endpoint,
            "region": self.region,
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
        }

    def env(self) -> dict[str, str]:
        """The usual AWS variables, for a subprocess (the CLI) to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def url(self, bucket: str, prefix: str = "") -> str:
        return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
