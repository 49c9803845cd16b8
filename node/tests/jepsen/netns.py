"""The Jepsen cluster's own network: one namespace per replica, a host namespace that
routes between them, and nftables rules there for partitions and packet loss.

Names start with `zsj-` (the e2e suite's are `zse2e-`), so `sweep()` removes whatever an
earlier run left, crashed or not; `up()` begins with it and `down()` ends with it. The
commands are e2e/zonestore_e2e/network.py's (`run`, `kill_namespace`), imported.

Addresses, routed point to point (Calico's layout) rather than bridged:
    10.245.255.1/30  the root namespace's end of the veth to zsj-host (the test process,
                     its clients and its admin calls), .2 the host end; the root
                     namespace routes 10.245.0.0/16 through it
    10.245.0.1       the host end of every replica's veth (zsjv<i>), the replicas'
                     gateway
    10.245.0.<10+i>  replica i (namespace zsj-n<i>), eth0, /32 with a route to the host

Routed, not bridged, because then every packet between two replicas, and between the
test's clients and a replica, crosses one IP forward hook in the host namespace: one
nftables chain (`inet zsj`, hook forward) sees all of it. On a bridge the replicas'
traffic would be switched and bypass that hook (br_netfilter is not loaded here). The
table is rewritten whole, atomically, at every change; an empty rule set means healed.

Every replica listens on the same ports of its own address (client 8081, admin 9081,
peer 7081). The test process's admin calls (from 10.245.255.1 to port 9081) are the
harness's control channel, like Jepsen's SSH: no rule drops them, so the nemesis can
still find the leader during a partition; client requests (port 8081) are dropped like
any other traffic. A replica's Raft messages go through a fault proxy in its own
namespace (`python -m tests.netproxy`, one process per replica, from its own address, so
partitions still apply) that can delay them; followers relay client requests to the
leader's address directly.

Needs root, `ip` and `nft`. Run inside e2e/isolated.sh (`make chaos` and the bounded
suite do when they can) and even the root namespace's veth and route exist only in a
private network namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from zonestore_e2e.network import kill_namespace, list_namespaces, run

PREFIX = "zsj-"
HOST_NS = "zsj-host"
ROOT_VETH = "zsj-root"
HOST_VETH = "eth-root"
ROOT_SIDE_IP = "10.245.255.1"
HOST_SIDE_IP = "10.245.255.2"
GATEWAY_IP = "10.245.0.1"
CIDR = "10.245.0.0/16"
TABLE = "zsj"
CLIENT_PORT, ADMIN_PORT, PEER_PORT = 8081, 9081, 7081
PROXY_BASE_PORT = 17000  # replica i's proxy to replica j listens on 127.0.0.1:17000+j
NODE_DIR = Path(__file__).resolve().parents[2]  # node/, where `tests` imports from


def available() -> str | None:
    """Why the namespace mode cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"no `{tool}` (iproute2 / nftables; `make control-plane` installs nft)"
    return None


def namespaces() -> list[str]:
    return list_namespaces(PREFIX)


def sweep() -> list[str]:
    """Remove every `zsj-*` namespace (replicas first, their processes SIGKILLed), the
    root veth and route (they go with the host namespace, deleted explicitly anyway)."""
    names = sorted(namespaces(), key=lambda n: n == HOST_NS)
    for name in names:
        kill_namespace(name)
    run(["ip", "link", "del", ROOT_VETH], check=False)
    return names


def _in(netns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


class Network:
    """The namespaces of replicas `ids`; the same methods as netproxy.ProxyHub for the
    nemesis (`isolate`, `cut`, `cut_pair`, `partition`, `heal`, `cut_links`, `delay`),
    plus `loss`."""

    def __init__(self, ids: list[str], state_dir: Path) -> None:
        self.ids = list(ids)
        self.state_dir = state_dir
        self.delay_file = state_dir / "delays.json"
        self._drops: list[tuple[str, str]] = []  # (from, to) address pairs dropped
        self._loss: dict[str, int] = {}  # replica -> percent of its packets dropped
        self._described: list[str] = []
        self._proxies: list[subprocess.Popen[bytes]] = []

    # Placement (tests.harness.Cluster asks) --------------------------------------

    def netns(self, nid: str) -> str:
        return f"{PREFIX}{nid}"

    def address(self, nid: str) -> str:
        return f"10.245.0.{10 + self.ids.index(nid)}"

    def peer_route(self, src: str, dst: str) -> str:
        """Where `src` dials to reach `dst`'s peer port: its own proxy to `dst`."""
        return f"127.0.0.1:{PROXY_BASE_PORT + self.ids.index(dst)}"

    # Life cycle ------------------------------------------------------------------

    def up(self) -> None:
        sweep()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._write_delays({})
        h = ["ip", "-n", HOST_NS]
        run(["ip", "netns", "add", HOST_NS])
        run([*h, "link", "set", "lo", "up"])
        run(_in(HOST_NS, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
        run(["ip", "link", "add", ROOT_VETH, "type", "veth", "peer", "name", HOST_VETH,
             "netns", HOST_NS])  # fmt: skip
        run(["ip", "addr", "add", f"{ROOT_SIDE_IP}/30", "dev", ROOT_VETH])
        run(["ip", "link", "set", ROOT_VETH, "up"])
        run([*h, "addr", "add", f"{HOST_SIDE_IP}/30", "dev", HOST_VETH])
        run([*h, "link", "set", HOST_VETH, "up"])
        run(["ip", "route", "replace", CIDR, "via", HOST_SIDE_IP])
        for i, nid in enumerate(self.ids):
            ns, veth, ip = self.netns(nid), f"zsjv{i}", self.address(nid)
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run([*h, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
            run([*h, "addr", "add", f"{GATEWAY_IP}/32", "dev", veth])
            run([*h, "link", "set", veth, "up"])
            run([*h, "route", "add", f"{ip}/32", "dev", veth])
            run(["ip", "-n", ns, "addr", "add", f"{ip}/32", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            run(["ip", "-n", ns, "route", "add", GATEWAY_IP, "dev", "eth0"])
            run(["ip", "-n", ns, "route", "add", "default", "via", GATEWAY_IP])
        self._write_rules()
        for nid in self.ids:
            self._start_proxy(nid)

    def _start_proxy(self, nid: str) -> None:
        links = [
            f"{nid}>{dst}=127.0.0.1:{PROXY_BASE_PORT + j}>{self.address(dst)}:{PEER_PORT}"
            for j, dst in enumerate(self.ids)
            if dst != nid
        ]
        log = open(self.state_dir / f"proxy-{nid}.log", "ab")  # noqa: SIM115 - the child's
        env = {**os.environ, "PYTHONPATH": str(NODE_DIR), "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "tests.netproxy", "--delays", str(self.delay_file), *links]
        self._proxies.append(
            subprocess.Popen(_in(self.netns(nid), argv), stdout=log, stderr=log, env=env)
        )
        log.close()

    def down(self) -> None:
        for proc in self._proxies:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        self._proxies.clear()
        sweep()

    # Faults ------------------------------------------------------------------------

    def _drop(self, src: str, dst: str) -> None:
        """Packets from `src` to `dst` (replica ids, or "client" for the test process)."""
        self._drops.append((src, dst))

    def _ip(self, who: str) -> str:
        return ROOT_SIDE_IP if who == "client" else self.address(who)

    def _rules(self) -> str:
        lines = [
            # The control channel: the harness's admin calls and their answers.
            f"ip saddr {ROOT_SIDE_IP} tcp dport {ADMIN_PORT} accept",
            f"ip daddr {ROOT_SIDE_IP} tcp sport {ADMIN_PORT} accept",
        ]
        lines += [f"ip saddr {self._ip(s)} ip daddr {self._ip(d)} drop" for s, d in self._drops]
        for nid, percent in sorted(self._loss.items()):
            ip = self.address(nid)
            lines += [
                f"ip saddr {ip} numgen random mod 100 < {percent} drop",
                f"ip daddr {ip} numgen random mod 100 < {percent} drop",
            ]
        body = "\n    ".join(lines)
        return (
            f"add table inet {TABLE}\ndelete table inet {TABLE}\n"
            f"table inet {TABLE} {{\n  chain forward {{\n"
            f"    type filter hook forward priority 0; policy accept;\n    {body}\n  }}\n}}\n"
        )

    def _write_rules(self) -> None:
        subprocess.run(
            _in(HOST_NS, ["nft", "-f", "-"]), input=self._rules(), text=True, check=True,
            capture_output=True,
        )  # fmt: skip

    def rules(self) -> str:
        """The rule set in force, as nft prints it."""
        return run(_in(HOST_NS, ["nft", "list", "table", "inet", TABLE]))

    def isolate(self, node: str) -> None:
        """Nothing in or out of `node`: other replicas, relays, the test's clients."""
        for other in [*self.ids, "client"]:
            if other != node:
                self._drop(node, other)
                self._drop(other, node)
        self._described.append(f"isolate {node}")
        self._write_rules()

    def cut(self, src: str, dst: str) -> None:
        """One way: packets from `src` to `dst` vanish (including TCP acknowledgements of
        what `dst` sends, as in a real one-way fault); `dst`'s packets still arrive."""
        self._drop(src, dst)
        self._described.append(f"{src}->{dst}")
        self._write_rules()

    def cut_pair(self, a: str, b: str) -> None:
        self._drop(a, b)
        self._drop(b, a)
        self._described.append(f"{a}<->{b}")
        self._write_rules()

    def partition(self, groups: list[set[str]], clients_with: int | None = None) -> None:
        """Cut every pair of replicas not in one group; a replica in no group is cut off
        from all. The test's clients reach only group `clients_with` (None: every
        replica)."""
        side = {node: i for i, group in enumerate(groups) for node in group}
        for a in self.ids:
            for b in self.ids:
                if a != b and (a not in side or b not in side or side[a] != side[b]):
                    self._drop(a, b)
            if clients_with is not None and side.get(a) != clients_with:
                self._drop(a, "client")
                self._drop("client", a)
        where = "everywhere" if clients_with is None else f"with {sorted(groups[clients_with])}"
        self._described.append(f"partition {[sorted(g) for g in groups]}, clients {where}")
        self._write_rules()

    def loss(self, node: str, percent: int) -> None:
        """Drop `percent` (1-99) of the packets to and from `node`, at random."""
        self._loss[node] = percent
        self._described.append(f"loss {node} {percent}%")
        self._write_rules()

    def delay(self, node: str, seconds: float) -> None:
        """Every chunk on `node`'s Raft links (to and from it) held back `seconds`."""
        delays = json.loads(self.delay_file.read_text() or "{}")
        self._write_delays({**delays, node: seconds})
        self._described.append(f"delay {node} {seconds * 1000:.0f}ms")

    def _write_delays(self, delays: dict[str, float]) -> None:
        """Replaced whole (the proxies never read half a file), then given the proxies
        their polling interval to pick it up."""
        tmp = self.delay_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(delays) + "\n")
        os.replace(tmp, self.delay_file)
        time.sleep(0.1)

    def cut_links(self) -> list[str]:
        return list(self._described)

    def heal(self) -> None:
        self._drops.clear()
        self._loss.clear()
        self._described.clear()
        self._write_rules()
        self._write_delays({})
