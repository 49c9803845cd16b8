"""A real S3-compatible object store inside the run's network: versitygw (posix backend,
built by `make versitygw`) in the cluster's host namespace, listening on the API server's
address (10.244.0.1), which the pods (node pods and the operator's) reach through their
zone bridge and the test process through its route. Like the other host processes it
carries the run's marker and is stopped by the scenario (and swept with the run).

    with S3Gateway(cluster.workdir / "s3") as s3:
        s3.create_bucket("backups")
        secret = s3.secret("backup-keys", namespace)   # AWS_ACCESS_KEY_ID/SECRET keys
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from zonestore_e2e import network
from zonestore_e2e.cluster import ROOT, HostProcess

VERSITYGW_VERSION = "v1.8.0"
PORT = 9300
REGION = "us-east-1"


def binary() -> Path:
    default = ROOT / ".cache" / "bin" / f"versitygw-{VERSITYGW_VERSION}"
    path = Path(os.environ.get("ZONESTORE_VERSITYGW", "") or default)
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"versitygw not found at {path}: run `make versitygw`")
    return path


class S3Gateway:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.access_key = "zs" + secrets.token_hex(8)
        self.secret_key = secrets.token_hex(20)
        self.proc: HostProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{network.APISERVER_IP}:{PORT}"

    def start(self, timeout_s: float = 30.0) -> None:
        data = self.root / "buckets"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            str(binary()),
            "--port",
            f"{network.APISERVER_IP}:{PORT}",
            "--access",
            self.access_key,
            "--secret",
            self.secret_key,
            "--region",
            REGION,
            "--quiet",
            "posix",
            str(data),
        ]
        self.proc = HostProcess("versitygw", argv, self.root / "versitygw.log")
        self.proc.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise RuntimeError(f"versitygw exited: {self.proc.tail()}")
            try:
                with socket.create_connection((network.APISERVER_IP, PORT), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"versitygw not listening in {timeout_s}s: {self.proc.tail()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def store_args(self) -> dict[str, str]:
        """Keyword arguments of zonestore_node.backup.objstore.open_store."""
        return {
            "endpoint": self.endpoint,
            "region": REGION,
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
        }

    def secret(self, name: str, namespace: str) -> dict[str, Any]:
        """A Secret holding the keys the way spec.backup.credentials wants them."""

        def b64(text: str) -> str:
            return base64.b64encode(text.encode()).decode()

        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {
                "AWS_ACCESS_KEY_ID": b64(self.access_key),
                "AWS_SECRET_ACCESS_KEY": b64(self.secret_key),
            },
        }

    def __enter__(self) -> S3Gateway:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
