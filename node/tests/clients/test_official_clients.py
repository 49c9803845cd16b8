"""The official Java and Go clients, unmodified, against zonestore: the seed document's
write-then-read of a `User`, a filtered query, a transaction and the error of an insert
of an existing entity, through DATASTORE_EMULATOR_HOST, against a single replica and
against `make run`'s three.

Java (google-cloud-datastore 2.37.0) speaks its default transport, protobuf over
HTTP/1.1 to `/v1/projects/{project}:{method}`: the edge's REST front door
(node/edge/rest.go). Go (cloud.google.com/go/datastore) speaks gRPC. Each program
(node/tests/java, node/tests/goclient) plays the three scenarios in one process and
prints one JSON line; `make java-client go-client` builds them into .cache (this module
runs it: quick when they are up to date). A missing toolchain fails, never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import NodeProcess
from tests.integration.test_local_cluster import _free_run

ROOT = Path(__file__).resolve().parents[3]
CACHE = ROOT / ".cache"
JAVA_CLASSPATH = f"{CACHE / 'java' / 'java-client-paths-1.jar'}:{CACHE / 'java' / 'lib' / '*'}"
GO_CLIENT = CACHE / "bin" / "zonestore-goclient"
REPLICAS = 3
EXPECTED = {
    "seed": {"name": "John Doe", "email": "john.doe@example.com"},
    "query": {"rows": [2, 4]},
    "transaction": {"afterCommit": 70, "afterRollback": 70},
}
_runs = iter(range(1_000_000))


@pytest.fixture(scope="session")
def official_clients() -> None:
    """Build both programs (and the edge that serves Java's REST) once per session."""
    missing = [tool for tool in ("make", "go", "mvn", "java") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"the official-client tests need {', '.join(missing)} on PATH (JDK 17 + Maven, Go)"
        )
    out = subprocess.run(
        ["make", "--no-print-directory", "-s", "edge", "java-client", "go-client"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert out.returncode == 0, f"make java-client go-client failed:\n{out.stdout}\n{out.stderr}"


def run_client(language: str, addr: str) -> dict[str, Any]:
    """Run one official client's program against `addr` in a project of its own; the
    JSON line it printed."""
    project = f"{language}{next(_runs)}-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATASTORE_", "GOOGLE_CLOUD"))}
    env.update(DATASTORE_EMULATOR_HOST=addr, DATASTORE_PROJECT_ID=project)
    env.update(METADATA_SERVER_DETECTION="none")
    command = (
        ["java", "-cp", JAVA_CLASSPATH, "zonestore.ClientPaths"]
        if language == "java"
        else [str(GO_CLIENT)]
    )
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{language} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    lines = out.stdout.strip().splitlines()
    assert lines, f"{language} printed nothing:\n{out.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def assert_scenarios_pass(result: dict[str, Any]) -> None:
    for name, expected in EXPECTED.items():
        assert result[name] == expected, f"{name}: {result[name]}"
    # An insert of an existing entity: ALREADY_EXISTS (6) as each client reports it; for
    # Java, parsed from the REST error body (a google.rpc.Status) by RemoteRpc.
    errors = result["errors"]
    assert errors["code"] == 6, errors
    assert "already exists" in errors["message"], errors
    if "transport" in result:  # Java: the default, HTTP, was the transport used
        assert result["transport"] == "HttpTransportOptions"
        assert errors["reason"] == "ALREADY_EXISTS", errors


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """`make run`'s cluster (`zonestore run --replicas 3`) on moved ports and data dir;
    the client address of each replica."""
    folder = tmp_path_factory.mktemp("run")
    client_port, admin_port, peer_port = (_free_run(REPLICAS) for _ in range(3))
    log_path = folder / "run.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child's
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "zonestore_node.cli", "run", "--replicas", str(REPLICAS),
            "--client-port", str(client_port), "--admin-port", str(admin_port),
            "--peer-port", str(peer_port), "--data-dir", str(folder / "data"),
        ],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    log.close()
    try:
        deadline = time.monotonic() + 90
        while "Press Ctrl-C to stop" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "the local cluster never said it was ready"
            time.sleep(0.2)
        yield [f"127.0.0.1:{client_port + i}" for i in range(REPLICAS)]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("language", ["java", "go"])
def test_official_client_writes_reads_queries_and_transacts_on_one_replica(
    official_clients: None, node: NodeProcess, language: str
) -> None:
    assert_scenarios_pass(run_client(language, node.client_addr))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("replica", [0, REPLICAS - 1])
@pytest.mark.parametrize("language", ["java", "go"])
def test_official_client_writes_reads_queries_and_transacts_through_make_runs_cluster(
    official_clients: None, local_cluster: list[str], language: str, replica: int
) -> None:
    assert_scenarios_pass(run_client(language, local_cluster[replica]))
