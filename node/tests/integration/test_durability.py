"""Acknowledged writes survive kill -9, SIGTERM and restarts.

Several writer threads each own a few keys and rewrite them with increasing values,
recording client-side the last value the node acknowledged and the last one attempted.
After the node dies and restarts, every key must hold a value between the two: nothing
acknowledged is lost, and nothing is invented.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from google.cloud import datastore

from tests.harness import NodeProcess
from tests.integration.support import datastore_client

PROJECT = "durable"
WRITERS = 6
KEYS_PER_WRITER = 5


@dataclass
class Ledger:
    """Per key: the last value acknowledged and the last one sent (maybe applied)."""

    acked: dict[str, int] = field(default_factory=dict)
    attempted: dict[str, int] = field(default_factory=dict)
    inserted: list[str] = field(default_factory=list)  # names of acked one-shot inserts
    lock: threading.Lock = field(default_factory=threading.Lock)


def write_load(node: NodeProcess, ledger: Ledger, stop: threading.Event) -> list[threading.Thread]:
    def writer(w: int) -> None:
        client = datastore_client(node.client_addr, PROJECT)
        value = 0
        while not stop.is_set():
            value += 1
            name = f"w{w}-k{value % KEYS_PER_WRITER}"
            batch = []
            entity = datastore.Entity(client.key("Counter", name))
            entity["value"] = value
            batch.append(entity)
            one_shot = datastore.Entity(client.key("Event", f"w{w}-{value}"))
            one_shot["value"] = value
            batch.append(one_shot)
            with ledger.lock:
                ledger.attempted[name] = value
            try:
                client.put_multi(batch, timeout=10)
            except Exception:
                return  # the node went away: whatever was in flight is unknown
            with ledger.lock:
                ledger.acked[name] = value
                ledger.inserted.append(f"w{w}-{value}")

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(WRITERS)]
    for t in threads:
        t.start()
    return threads


def check_ledger(node: NodeProcess, ledger: Ledger) -> None:
    client = datastore_client(node.client_addr, PROJECT)
    assert ledger.acked, "the load acknowledged nothing: the test proved nothing"
    names = sorted(ledger.attempted)
    stored = {
        e.key.name: e["value"] for e in client.get_multi([client.key("Counter", n) for n in names])
    }
    for name in names:
        acked = ledger.acked.get(name, 0)
        if acked:
            assert name in stored, f"acknowledged write to {name} lost"
        got = stored.get(name, 0)
        assert acked <= got <= ledger.attempted[name], (name, acked, got)
    for start in range(0, len(ledger.inserted), 1000):
        chunk = ledger.inserted[start : start + 1000]
        missing: list[Any] = []
        client.get_multi([client.key("Event", n) for n in chunk], missing=missing)
        assert not missing, f"{len(missing)} acknowledged inserts lost, e.g. {missing[0].key}"


def run_load_then(node: NodeProcess, seconds: float, end: str) -> tuple[Ledger, int | None]:
    ledger = Ledger()
    stop = threading.Event()
    threads = write_load(node, ledger, stop)
    time.sleep(seconds)
    code: int | None = None
    if end == "kill":
        node.kill()
    else:
        code = node.stop()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    return ledger, code


def test_every_acknowledged_write_survives_kill_9_during_a_write_load(
    fresh_node: NodeProcess,
) -> None:
    ledger, _ = run_load_then(fresh_node, 2.5, "kill")
    assert len(ledger.inserted) > 50
    fresh_node.restart()
    check_ledger(fresh_node, ledger)
    # And the restarted node takes writes again.
    client = datastore_client(fresh_node.client_addr, PROJECT)
    client.put(datastore.Entity(client.key("After", 1)))
    assert client.get(client.key("After", 1)) is not None


def test_sigterm_during_a_write_load_exits_0_and_keeps_every_acknowledged_write(
    fresh_node: NodeProcess,
) -> None:
    ledger, code = run_load_then(fresh_node, 2.0, "term")
    assert code == 0, fresh_node.log_tail()
    fresh_node.restart()
    check_ledger(fresh_node, ledger)


def test_data_survives_a_normal_restart(fresh_node: NodeProcess) -> None:
    client = datastore_client(fresh_node.client_addr, PROJECT)
    entities = []
    for i in range(20):
        entity = datastore.Entity(client.key("Keep", i + 1), exclude_from_indexes=("blob",))
        entity.update({"i": i, "blob": bytes([i]) * 1000})
        entities.append(entity)
    client.put_multi(entities)
    client.delete(client.key("Keep", 1))
    db2 = datastore_client(fresh_node.client_addr, PROJECT, database="db2", namespace="n")
    db2.put(datastore.Entity(db2.key("Keep", "x")))
    assert fresh_node.stop() == 0
    fresh_node.restart()
    client = datastore_client(fresh_node.client_addr, PROJECT)
    got = client.get_multi([e.key for e in entities])
    assert sorted(e["i"] for e in got) == list(range(1, 20))
    assert all(e["blob"] == bytes([e["i"]]) * 1000 for e in got)
    db2 = datastore_client(fresh_node.client_addr, PROJECT, database="db2", namespace="n")
    assert db2.get(db2.key("Keep", "x")) is not None
