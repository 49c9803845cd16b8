"""supervisor.py's pure parts: the restart backoff (1 s doubling to 30 s, reset after a
minute of service) on an injected clock, how an exit is described, the reason read from
a replica's last output, and the probe for ports another process holds."""

from __future__ import annotations

import socket
from pathlib import Path

from zonestore_node import supervisor


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_starts_at_one_second_and_doubles_up_to_thirty() -> None:
    clock = FakeClock()
    backoff = supervisor.Backoff(clock)
    delays = []
    for _ in range(8):
        backoff.started()
        clock.now += 2.0  # a short run: crashes soon after starting
        delays.append(backoff.exited())
        clock.now += delays[-1]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_backoff_resets_once_a_replica_has_served_for_a_minute() -> None:
    clock = FakeClock()
    backoff = supervisor.Backoff(clock)
    for _ in range(4):
        backoff.started()
        clock.now += 1.0
        backoff.exited()
    backoff.started()
    clock.now += 59.9  # not quite a minute: the backoff keeps growing
    assert backoff.exited() == 16.0
    backoff.started()
    clock.now += 60.0
    assert backoff.exited() == 1.0
    backoff.started()
    clock.now += 0.5
    assert backoff.exited() == 2.0


def test_backoff_does_not_reset_on_time_spent_waiting_between_starts() -> None:
    clock = FakeClock()
    backoff = supervisor.Backoff(clock)
    backoff.started()
    assert backoff.exited() == 1.0
    clock.now += 3600.0  # waiting is not serving
    backoff.started()
    assert backoff.exited() == 2.0


def test_exits_are_described_by_signal_or_status() -> None:
    assert supervisor.describe_exit(-9) == "killed by SIGKILL"
    assert supervisor.describe_exit(1) == "exit status 1"
    assert supervisor.describe_exit(75) == "exit status 75 (its storage failed)"


def test_the_reason_is_the_exception_that_ended_the_traceback() -> None:
    port_taken = [
        "E1206 add_port.cc:83] Failed to add port to server: ... Address already in use)\n",
        "Traceback (most recent call last):\n",
        '  File "server.py", line 298, in serve\n',
        "    bound = server.add_insecure_port(self.config.client_addr)\n",
        "RuntimeError: Failed to bind to address 127.0.0.1:40647; set GRPC_VERBOSITY=debug\n",
    ]
    assert supervisor.failure_reason(port_taken).startswith(
        "RuntimeError: Failed to bind to address 127.0.0.1:40647"
    )
    locked = [
        "Traceback (most recent call last):\n",
        "    self._db = rocksdict.Rdict(\n",
        "Exception: IO error: While lock file: /d/local-0/db/LOCK: Resource temporarily "
        "unavailable\n",
    ]
    assert "LOCK: Resource temporarily unavailable" in supervisor.failure_reason(locked)
    in_a_group = [
        "  + Exception Group Traceback (most recent call last):\n",
        '    |   File "server.py", line 300, in serve\n',
        "    | OSError: [Errno 98] error while attempting to bind on address "
        "('127.0.0.1', 40719): address already in use\n",
        "    +------------------------------------\n",
    ]
    assert supervisor.failure_reason(in_a_group).startswith("OSError: [Errno 98] error while")
    storage = ["2026 INFO node.serving\n", "2026 ERROR storage.failed op=sync error=EIO\n", "\n"]
    assert supervisor.failure_reason(storage) == "2026 ERROR storage.failed op=sync error=EIO"
    assert supervisor.failure_reason([]) == ""


def test_a_port_another_process_listens_on_is_reported_taken() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        spec = supervisor.ReplicaSpec(
            node_id="local-0",
            command=("true",),
            data_dir=Path("/nonexistent"),
            client_addr=f"127.0.0.1:{port}",
            admin_addr="127.0.0.1:0",
            peer_addr="",
        )
        assert supervisor.taken_ports(spec) == [
            f"client port 127.0.0.1:{port} is taken by another process"
        ]
    assert supervisor.taken_ports(spec) == []
