"""`make run` supervises its replicas: `zonestore run --replicas 3` (make run's own
command, on free ports and a temporary data folder) restarts a replica killed with
kill -9 — the leader, then a follower — while the official client keeps writing through
the other two; no acknowledged write is lost, and the killed replica catches up (lag 0
in `zonestore status`) by itself. `--restart never` still stops everything, and a
replica that cannot start (its port taken) is reported with the reason while the others
serve."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.cloud import datastore

from tests.integration.test_local_cluster import _free_run
from tests.jepsen.workloads import make_client

REPLICAS = 3
READY_S = 60.0
WRITES_RESUME_S = 2.0  # the bound: kill -9 of the leader to the next acknowledged write
CATCH_UP_S = 30.0


class Run:
    """`python -m zonestore_node.cli run` as a subprocess, its console in a file."""

    def __init__(
        self, tmp: Path, *extra: str, replicas: int = REPLICAS, data: Path | None = None
    ) -> None:
        self.tmp = tmp
        self.replicas = replicas
        self.client_port, self.admin_port, self.peer_port = (_free_run(replicas) for _ in range(3))
        self.data = data or tmp / "data"
        self.log_path = tmp / "run.log"
        self.extra = extra
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self._proc is not None, "start() first"
        return self._proc

    def start(self) -> Run:
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child's
        self._proc = subprocess.Popen(
            [
                sys.executable, "-m", "zonestore_node.cli", "run", "--replicas", str(self.replicas),
                "--client-port", str(self.client_port), "--admin-port", str(self.admin_port),
                "--peer-port", str(self.peer_port), "--data-dir", str(self.data), *self.extra,
            ],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        log.close()
        return self

    def console(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, deadline_s: float, *, alive: bool = True) -> re.Match[str]:
        deadline = time.monotonic() + deadline_s
        while True:
            found = re.search(pattern, self.console(), re.MULTILINE)
            if found:
                return found
            if alive:
                assert self.proc.poll() is None, self.console()
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.console()}"
            time.sleep(0.1)

    def node_id(self, i: int) -> str:
        return f"local-{i}"

    def client_addr(self, node_id: str) -> str:
        return f"127.0.0.1:{self.client_port + int(node_id.split('-')[1])}"

    def admin_addr(self, node_id: str) -> str:
        return f"127.0.0.1:{self.admin_port + int(node_id.split('-')[1])}"

    def status(self, node_id: str) -> str:
        """`zonestore status` against one replica, as a user runs it."""
        out = subprocess.run(
            [sys.executable, "-m", "zonestore_node.cli", "status", "--admin", self.admin_addr(node_id)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return out.stdout if out.returncode == 0 else ""

    def leader(self, among: list[str]) -> str:
        """The leader as `zonestore status` names it ("... leader local-N")."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for node_id in among:
                found = re.search(r", leader (local-\d+)\n", self.status(node_id))
                if found:
                    return found.group(1)
            time.sleep(0.1)
        raise AssertionError(f"no leader among {among}:\n{self.console()}")

    def lag(self, node_id: str, leader: str) -> str | None:
        """`node_id`'s LAG in the leader's `zonestore status` table."""
        for line in self.status(leader).splitlines():
            cells = line.replace(" * ", "  ").split()
            if cells and cells[0] == node_id and len(cells) >= 5:
                return cells[4]
        return None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=60)

    def close(self) -> None:
        if self._proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def run_factory(tmp_path: Path) -> Iterator[list[Run]]:
    runs: list[Run] = []
    yield runs
    for run in runs:
        run.close()


@dataclass
class Writer:
    """Puts new entities one after another through one replica, keeping what was
    acknowledged and when each acknowledged put was issued."""

    name: str
    client: datastore.Client
    acked: list[tuple[str, float, float]] = field(default_factory=list)  # key, issued, acked
    failures: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def loop(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            name = f"{self.name}-{n}"
            entity = datastore.Entity(self.client.key("Drill", name))
            entity.update({"n": n, "writer": self.name})
            issued = time.monotonic()
            try:
                self.client.put(entity, timeout=10)
            except Exception:  # a failed or ambiguous write is allowed
                self.failures += 1
                time.sleep(0.02)
                continue
            self.acked.append((name, issued, time.monotonic()))


def _kill_and_heal(run: Run, victim: str, project: str) -> tuple[list[str], float, float]:
    """kill -9 `victim` (pid from its pid file) while two writers go through the other
    two replicas; returns (acknowledged keys, kill -> first write issued after it and
    acknowledged, kill -> lag 0 in `zonestore status`)."""
    others = [run.node_id(i) for i in range(REPLICAS) if run.node_id(i) != victim]
    writers = [Writer(f"via-{o}", make_client(run.client_addr(o), project)) for o in others]
    threads = [threading.Thread(target=w.loop, daemon=True) for w in writers]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while not all(len(w.acked) >= 5 for w in writers):
            assert time.monotonic() < deadline, "the writers never got going"
            time.sleep(0.05)
        pid = int((run.data / f"{victim}.pid").read_text())
        stopped_before = len(re.findall(rf"{victim} \(pid \d+\) stopped", run.console()))
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()

        resumed = None
        while resumed is None:
            after = [
                acked for w in writers for (_, issued, acked) in w.acked if issued >= killed_at
            ]
            if after:
                resumed = min(after) - killed_at
            assert time.monotonic() - killed_at < 15, "no write succeeded after the kill"
            time.sleep(0.01)

        run.wait_for(rf"^zonestore run: {victim} \(pid {pid}\) stopped: killed by SIGKILL; "
                     r"restarting in 1 s$", CATCH_UP_S)  # fmt: skip
        assert (
            len(re.findall(rf"{victim} \(pid \d+\) stopped", run.console())) == stopped_before + 1
        )
        new_pid = int(
            run.wait_for(rf"^zonestore run: {victim} restarted \(pid (\d+)\)$", CATCH_UP_S)[1]
        )
        assert new_pid != pid
        assert int((run.data / f"{victim}.pid").read_text()) == new_pid
        leader = run.leader(others)
        while run.lag(victim, leader) != "0":
            assert time.monotonic() - killed_at < CATCH_UP_S, run.status(leader)
            time.sleep(0.1)
            leader = run.leader([*others, victim])
        caught_up = time.monotonic() - killed_at
        run.wait_for(
            rf"^zonestore run: {victim} caught up [\d.]+ s after restarting: applied index \d+ "
            r"reached leader local-\d's commit index \d+$",
            max(1.0, CATCH_UP_S - caught_up),
        )
    finally:
        for w in writers:
            w.stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert all(w.acked[-1][1] > killed_at for w in writers), "a writer stopped writing"
    return [key for w in writers for (key, _, _) in w.acked], resumed, caught_up


@pytest.mark.timeout(300)
def test_make_run_restarts_a_killed_leader_then_follower_while_writes_continue(
    tmp_path: Path, run_factory: list[Run], project: str
) -> None:
    run = Run(tmp_path).start()
    run_factory.append(run)
    run.wait_for("Press Ctrl-C to stop", READY_S)
    console = run.console()
    for i in range(REPLICAS):  # each replica's pid on its startup line, and in its pid file
        pid = int(run.wait_for(rf"^zonestore run: local-{i} started \(pid (\d+)\): ", 1)[1])
        assert int((run.data / f"local-{i}.pid").read_text()) == pid
    assert "restarted (pid" not in console

    ids = [run.node_id(i) for i in range(REPLICAS)]
    leader = run.leader(ids)
    acked, leader_resumed, leader_caught_up = _kill_and_heal(run, leader, project)
    new_leader = run.leader([i for i in ids if i != leader])
    follower = next(i for i in ids if i not in (leader, new_leader))
    more, follower_resumed, follower_caught_up = _kill_and_heal(run, follower, project)
    print(
        f"leader {leader} kill -9 -> first write {leader_resumed:.2f} s, caught up "
        f"{leader_caught_up:.1f} s; follower {follower} kill -9 -> first write "
        f"{follower_resumed:.2f} s, caught up {follower_caught_up:.1f} s"
    )
    assert leader_resumed < WRITES_RESUME_S
    assert follower_resumed < WRITES_RESUME_S

    # No acknowledged write is lost: all of them read back (strong reads), through the
    # replica that was killed first.
    reader = make_client(run.client_addr(leader), project)
    keys = [reader.key("Drill", name) for name in acked + more]
    found: dict[str, int] = {}
    for start in range(0, len(keys), 500):
        for entity in reader.get_multi(keys[start : start + 500]):
            found[entity.key.name] = entity["n"]
    missing = sorted(set(acked + more) - set(found))
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    assert all(found[name] == int(name.rsplit("-", 1)[1]) for name in found)

    assert run.stop() == 0
    assert not list(run.data.glob("*.pid"))


@pytest.mark.timeout(180)
def test_restart_never_stops_every_replica_when_one_exits(
    tmp_path: Path, run_factory: list[Run]
) -> None:
    run = Run(tmp_path, "--restart", "never").start()
    run_factory.append(run)
    run.wait_for("Press Ctrl-C to stop", READY_S)
    pid = int((run.data / "local-1.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    assert run.proc.wait(timeout=60) == 1
    console = run.console()
    assert f"local-1 (pid {pid}) stopped: killed by SIGKILL\n" in console
    assert "a replica exited; stopping the others (--restart never)" in console
    assert "restarted (pid" not in console
    for i in (0, 2):
        with (
            pytest.raises(OSError),
            socket.create_connection(("127.0.0.1", run.admin_port + i), timeout=2),
        ):
            pass


@pytest.mark.timeout(180)
def test_a_replica_whose_port_is_taken_is_reported_and_started_once_it_is_free(
    tmp_path: Path, run_factory: list[Run], project: str
) -> None:
    run = Run(tmp_path)
    run_factory.append(run)
    # local-2's admin port: the node binds it itself (a taken client port is the edge's
    # to retry, when zonestore-edge serves it, and the node stays up, not ready).
    taken = f"127.0.0.1:{run.admin_port + 2}"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", run.admin_port + 2))
        holder.listen()
        run.start()
        run.wait_for(
            rf"^zonestore run: local-2 \(pid \d+\) stopped before it was ready: exit status 1: "
            rf"admin port {taken} is taken by another process; .*address already in use.*; "
            r"restarting in 1 s$",
            READY_S,
        )
        # The other two serve meanwhile: a write through local-0, read back through local-1.
        run.leader(["local-0", "local-1"])
        writer = make_client(run.client_addr("local-0"), project)
        entity = datastore.Entity(writer.key("User", "John Doe"))
        entity.update({"name": "John Doe"})
        writer.put(entity)
        reader = make_client(run.client_addr("local-1"), project)
        assert reader.get(reader.key("User", "John Doe"))["name"] == "John Doe"
    # Freed, the port lets local-2 start on a later attempt; it catches up, and the
    # banner (which waits for every replica) comes.
    run.wait_for(r"^zonestore run: local-2 restarted \(pid \d+\)$", 60)
    run.wait_for(r"^zonestore run: local-2 caught up ", 60)
    run.wait_for("Press Ctrl-C to stop", 30)
    assert run.stop() == 0


@pytest.mark.timeout(120)
def test_run_exits_non_zero_when_no_replica_can_be_kept_running(
    tmp_path: Path, run_factory: list[Run]
) -> None:
    run = Run(tmp_path, replicas=1)
    run_factory.append(run)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", run.admin_port))
        holder.listen()
        assert run.start().proc.wait(timeout=90) == 1
    console = run.console()
    reported = re.findall(
        rf"local-0 \(pid \d+\) stopped before it was ready: exit status 1: admin port "
        rf"127.0.0.1:{run.admin_port} is taken by another process",
        console,
    )
    assert len(reported) == 3, console
    assert "no replica can be kept running" in console


@pytest.mark.timeout(180)
def test_the_readme_failover_recipe_works_as_written(
    tmp_path: Path, run_factory: list[Run]
) -> None:
    """The README's three lines, run by bash in a folder laid out like the repository
    (.venv, .zonestore-data); only the ports differ, through the variables the recipe
    reads (ZONESTORE_ADMIN is `zonestore status`'s default admin address)."""
    repo = Path(__file__).parents[3]
    found = re.search(r"Try a failover.*?```sh\n(.*?)```", (repo / "README.md").read_text(), re.S)
    assert found, "the README lost its failover recipe"
    recipe = found[1]
    assert len(recipe.strip().splitlines()) == 3
    (tmp_path / ".venv").symlink_to(repo / ".venv")
    run = Run(tmp_path, data=tmp_path / ".zonestore-data").start()
    run_factory.append(run)
    run.wait_for("Press Ctrl-C to stop", READY_S)
    leader = run.leader(["local-0"])
    env = {
        **os.environ,
        "ZONESTORE_ADMIN": run.admin_addr("local-0"),
        "DATASTORE_EMULATOR_HOST": run.client_addr("local-0"),
        "DATASTORE_DATASET": "demo",
        "GOOGLE_CLOUD_PROJECT": "demo",
        "DATASTORE_PROJECT_ID": "demo",
    }
    done = subprocess.run(
        ["bash", "-e", "-c", recipe], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Jane"
    killed = run.wait_for(r"^zonestore run: (local-\d) \(pid \d+\) stopped: killed by SIGKILL", 30)
    assert killed[1] == leader
    run.wait_for(rf"^zonestore run: {leader} restarted \(pid \d+\)$", CATCH_UP_S)
    run.wait_for(rf"^zonestore run: {leader} caught up ", CATCH_UP_S)
    assert run.stop() == 0
