"""The README's "Backups and point-in-time recovery" commands (Operations runbook), run by
bash as written in a folder laid out like the repository (.venv), against a group of
three archiving to ./.zonestore-backups. Only the example time of `--to-time` becomes a
real one between two commits, and the restored node's ports free ones."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backup import history, support
from tests.harness import Cluster, NodeProcess, free_port
from zonestore_node.backup import catalog, objstore

REPO = Path(__file__).parents[3]
EXAMPLE_TIME = "2026-12-06T07:30:00.000000Z"


def recipe() -> list[str]:
    text = REPO.joinpath("README.md").read_text()
    runbook = text[text.index("## Operations runbook") :]
    found = re.search(r"### Backups and point-in-time recovery.*?```sh\n(.*?)```", runbook, re.S)
    assert found, "the README lost its backup recipe"
    return found[1].strip().splitlines()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    url = (tmp_path / ".zonestore-backups").as_uri()
    c = Cluster(
        tmp_path / "group", 3, extra=["--archive-to", url, "--archive-max-delay-seconds", "0.5"]
    )
    c.start()
    yield c
    c.stop()


def bash(lines: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run the lines; output through a file, not a pipe (a command put in the background
    with `&` keeps its copy of a pipe open)."""
    out = cwd / "recipe.out"
    with open(out, "w") as sink:
        done = subprocess.run(
            ["bash", "-e", "-c", "\n".join(lines)],
            cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, timeout=300,
        )  # fmt: skip
    text = out.read_text()
    assert done.returncode == 0, text
    return text


def test_the_readme_backup_and_point_in_time_recipe_works_as_written(
    cluster: Cluster, tmp_path: Path
) -> None:
    lines = recipe()
    first_restore = next(i for i, line in enumerate(lines) if " restore " in line)
    setup, restores = lines[:first_restore], lines[first_restore:]
    assert any(EXAMPLE_TIME in line for line in restores), "the example time changed"
    assert restores[-1].endswith("&"), "the recipe no longer serves the restored folder"
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    env = {**os.environ, "ZONESTORE_ADMIN": cluster.nodes[0].admin_addr}
    env.pop("ZONESTORE_ARCHIVE_TO", None)
    writes = history.History()
    writes.write(cluster.leader(), range(1, 31), 30, delete_share=0)
    out = bash(setup, tmp_path, env)
    assert "complete" in out and "is intact" in out, out
    writes.write(cluster.leader(), range(1, 31), 40)
    store = objstore.open_store((tmp_path / ".zonestore-backups").as_uri())
    history.wait_archived(store, "", writes.events[-1][0])
    lo, hi = writes.events[50][0], writes.events[51][0]
    target = (lo + hi) // 2
    client_port, admin_port, peer_port = free_port(), free_port(), free_port()
    restores = [
        line.replace(EXAMPLE_TIME, catalog.rfc3339(target))
        .replace("127.0.0.1:8091", f"127.0.0.1:{client_port}")
        .replace("127.0.0.1:9091", f"127.0.0.1:{admin_port}")
        .replace("127.0.0.1:7091", f"127.0.0.1:{peer_port}")
        for line in restores
    ]
    # The same shell session as the lines above: `dest` is still set.
    assert setup[0].startswith("dest=")
    bash([setup[0], *restores, 'echo "$!" > serve.pid'], tmp_path, env)
    pid = int((tmp_path / "serve.pid").read_text())
    served = NodeProcess(tmp_path, node_id="restored-0", ports=(client_port, admin_port))
    try:
        _wait_ready(served)  # started by the recipe, not by the harness
        assert history.read_state(served, writes.ids) == writes.state_at(writes.events[-1][0])
    finally:
        os.kill(pid, signal.SIGTERM)
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "data").symlink_to(tmp_path / ".zonestore-earlier")
    earlier = support.serve_restored(tmp_path / "earlier")
    try:
        assert history.read_state(earlier, writes.ids) == writes.state_at(target)
    finally:
        earlier.stop()


def _wait_ready(node: NodeProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{node.admin_addr}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the restored node did not become ready"
        time.sleep(0.1)
