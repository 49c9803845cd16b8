"""The fault network itself: the proxy's delay is latency (not a cut, nor a rate limit),
the namespace mode's nftables rules say what each fault claims, and a partition in
namespaces cuts client requests and followers' relays too, not only Raft links."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.harness import Cluster
from tests.jepsen import netns
from tests.jepsen.workloads import make_client
from tests.netproxy import ProxyHub


def _echo_server() -> tuple[socket.socket, int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return server, int(server.getsockname()[1])


def _round_trip(port: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        started = time.monotonic()
        conn.sendall(b"ping")
        assert conn.recv(16) == b"ping"
        return time.monotonic() - started


def test_proxy_delay_holds_each_chunk_back_both_ways_and_heal_ends_it() -> None:
    server, port = _echo_server()
    hub = ProxyHub()
    try:
        proxy = hub.link("a", "b", port)
        assert _round_trip(proxy) < 0.1
        hub.delay("b", 0.15)  # the destination's delay applies to the link too
        assert 0.3 <= _round_trip(proxy) < 0.6  # one chunk each way
        assert hub.cut_links() == ["delay b 150ms"]
        hub.heal()
        assert _round_trip(proxy) < 0.1
    finally:
        hub.close()
        server.close()


def test_proxy_delay_is_latency_not_a_rate_limit() -> None:
    """Chunks sent back to back arrive back to back, each one delay late."""
    server, port = _echo_server()
    hub = ProxyHub()
    try:
        proxy = hub.link("a", "b", port)
        hub.delay("a", 0.2)
        with socket.create_connection(("127.0.0.1", proxy), timeout=5) as conn:
            started = time.monotonic()
            for _ in range(10):
                conn.sendall(b"x" * 100)
                time.sleep(0.02)
            got = 0
            while got < 1000:
                got += len(conn.recv(65536))
            assert time.monotonic() - started < 1.0  # serialised it would be >= 4 s
    finally:
        hub.close()
        server.close()


def _rules(net: netns.Network) -> list[str]:
    text = net._rules()
    return [line.strip() for line in text.splitlines() if "saddr" in line or "daddr" in line]


def test_namespace_rules_for_each_fault(tmp_path: Path) -> None:
    net = netns.Network(["n0", "n1", "n2"], tmp_path)
    control = _rules(net)
    assert control == [
        "ip saddr 10.245.255.1 tcp dport 9081 accept",
        "ip daddr 10.245.255.1 tcp sport 9081 accept",
    ]
    net._drop("n0", "n1")
    assert _rules(net)[2:] == ["ip saddr 10.245.0.10 ip daddr 10.245.0.11 drop"]
    net._drops.clear()
    net._loss["n2"] = 30
    assert _rules(net)[2:] == [
        "ip saddr 10.245.0.12 numgen random mod 100 < 30 drop",
        "ip daddr 10.245.0.12 numgen random mod 100 < 30 drop",
    ]


def test_namespace_partition_puts_clients_on_one_side(tmp_path: Path) -> None:
    net = netns.Network(["n0", "n1", "n2", "n3", "n4"], tmp_path)
    net._write_rules = lambda: None  # type: ignore[method-assign]
    net.partition([{"n0", "n1"}, {"n2", "n3", "n4"}], clients_with=1)
    drops = set(net._drops)
    assert ("n0", "n2") in drops and ("n4", "n1") in drops and ("n2", "n3") not in drops
    assert ("client", "n0") in drops and ("n1", "client") in drops
    assert not {("client", n) for n in ("n2", "n3", "n4")} & drops


@pytest.mark.integration
@pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))
def test_isolating_a_follower_in_namespaces_cuts_its_clients_and_its_relay(
    tmp_path: Path,
) -> None:
    """The proxy mode's known gap, closed: cut off, a follower can no longer relay a
    client's write to the leader (the leader's client port is unreachable from it), and
    the test's clients can no longer reach it; a client of the leader still writes."""
    net = netns.Network(["n0", "n1", "n2"], tmp_path / "net")
    net.up()
    cluster = Cluster(tmp_path, 3, network=net)
    try:
        cluster.start()
        leader = cluster.leader(timeout=30)
        follower = next(n for n in cluster.nodes if n is not leader)
        via_follower = make_client(follower.client_addr, "net")
        entity = via_follower.entity(via_follower.key("K", "a"))
        entity["v"] = 1
        via_follower.put(entity, timeout=10)  # relayed to the leader
        # A bridge: the follower still hears from the other follower, not the leader; its
        # relay (to the leader's client port) is cut like its Raft link.
        net.cut_pair(follower.node_id, leader.node_id)
        with pytest.raises(Exception, match=r"Deadline|Unavailable|deadline"):
            via_follower.put(entity, timeout=3)
        net.heal()
        net.isolate(follower.node_id)
        with pytest.raises(Exception, match=r"Deadline|Unavailable|deadline"):
            via_follower.put(entity, timeout=3)
        assert cluster.status(follower)["role"] != "leader"  # admin still reachable
        via_leader = make_client(leader.client_addr, "net")
        entity["v"] = 2
        via_leader.put(entity, timeout=10)
        net.heal()
        entity["v"] = 3
        via_follower.put(entity, timeout=20)
    finally:
        cluster.stop()
        net.down()
    assert netns.namespaces() == []
