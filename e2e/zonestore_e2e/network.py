"""The e2e cluster's private network: namespaces, zone bridges, pod veths, partitions.

Everything lives in network namespaces whose names start with `zse2e-`, so one sweep
(`cleanup`) removes what any earlier run left, crashed or not: it SIGKILLs every process
inside those namespaces and deletes them; the root-side veth and its route go with them.
`Network.up()` begins with that sweep, so a Ctrl-C'd run never blocks the next one.

Addresses (see e2e/README.md for the picture):
    10.244.0.1   kube-apiserver (on lo of zse2e-host; never loopback: EndpointSlices
                 reject 127/8, and pods must reach it)
    10.244.0.2   cluster DNS
    10.244.255.1/30 root side of the veth to zse2e-host, .2 the host side
    10.244.<z+1>.0/24  zone z's bridge br-z<z> (.1 the bridge itself); node k of the
                 zone is .<200+k>, its pods take .<10+40k> .. .<49+40k>

The functions shell out to `ip` and `nft` (iproute2 and nftables from Debian): Python
3.11 has no setns/unshare, and these are the tools an operator would use by hand, so a
failing step prints a command anyone can re-run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence

PREFIX = "zse2e-"
HOST_NS = "zse2e-host"
NETNS_DIR = "/run/netns"  # where `ip netns` names namespaces (bind mounts of nsfs)
APISERVER_IP = "10.244.0.1"
DNS_IP = "10.244.0.2"
CLUSTER_CIDR = "10.244.0.0/16"
ROOT_VETH = "zse2e-root"
HOST_VETH = "eth-root"
ROOT_SIDE_IP = "10.244.255.1"
HOST_SIDE_IP = "10.244.255.2"
PODS_PER_NODE = 40


class NetworkError(RuntimeError):
    """A network command failed; the message holds the command and its stderr."""


def run(argv: Sequence[str], *, check: bool = True) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def host_argv(argv: Sequence[str]) -> list[str]:
    """`argv` run inside the cluster's host network namespace, in the caller's mount
    namespace. Not `ip netns exec`: that gives the program a mount namespace of its own
    (a slave copy), so a pod namespace a kubelet named there (`ip netns add` bind-mounts
    it under /run/netns) was, in the harness's mount namespace, only an empty file:
    `ip netns pids` found no process in it, so `cleanup` killed none of the pods still
    running at the end (the operator's pod outlived every run) and `signal_pods` froze
    nothing. nsenter execs the program: the Popen pid is the program's pid."""
    return ["nsenter", f"--net={NETNS_DIR}/{HOST_NS}", "--", *argv]


def bridge_name(zone_index: int) -> str:
    return f"br-z{zone_index}"


def bridge_ip(zone_index: int) -> str:
    return f"10.244.{zone_index + 1}.1"


def zone_subnet(zone_index: int) -> str:
    return f"10.244.{zone_index + 1}.0/24"


def node_ip(zone_index: int, node_index: int) -> str:
    return f"10.244.{zone_index + 1}.{200 + node_index}"


def pod_ip_range(zone_index: int, node_index: int) -> list[str]:
    """The pod addresses node `node_index` of the zone hands out: disjoint per node, so
    two kubelets on one bridge never need to agree on anything."""
    first = 10 + PODS_PER_NODE * node_index
    return [f"10.244.{zone_index + 1}.{i}" for i in range(first, first + PODS_PER_NODE)]


def _hex(uid: str) -> str:
    return uid.replace("-", "").lower()


def pod_netns_name(pod_uid: str) -> str:
    return f"{PREFIX}p-{_hex(pod_uid)[:12]}"


def veth_name(pod_uid: str) -> str:
    """Host end of a pod's veth; interface names are limited to 15 bytes."""
    return f"zv{_hex(pod_uid)[:12]}"


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    """The named network namespaces whose names start with `prefix`."""
    names = []
    for line in run(["ip", "netns", "list"]).splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(prefix):
            names.append(name)
    return names


def namespace_pids(netns: str) -> list[int]:
    out = run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def kill_namespace(netns: str) -> None:
    """SIGKILL every process in `netns`, then delete it (and the veths inside)."""
    for pid in namespace_pids(netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    run(["ip", "netns", "del", netns], check=False)


def cleanup() -> list[str]:
    """Remove every `zse2e-*` namespace, pods first; returns the names removed."""
    names = sorted(list_namespaces(), key=lambda n: n == HOST_NS)
    for name in names:
        kill_namespace(name)
    run(["ip", "link", "del", ROOT_VETH], check=False)
    return names


def attach_pod(netns: str, zone_index: int, ip: str, veth: str) -> None:
    """Create the pod's namespace with `eth0` = `ip`/24 on the zone's bridge."""
    if netns in list_namespaces():
        kill_namespace(netns)
    run(["ip", "netns", "add", netns])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])
    run(["ip", "-n", HOST_NS, "link", "del", veth], check=False)
    peer = ["peer", "name", "eth0", "netns", netns]
    run(["ip", "-n", HOST_NS, "link", "add", veth, "type", "veth", *peer])
    run(["ip", "-n", HOST_NS, "link", "set", veth, "master", bridge_name(zone_index), "up"])
    run(["ip", "-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0"])
    run(["ip", "-n", netns, "link", "set", "eth0", "up"])
    run(["ip", "-n", netns, "route", "add", "default", "via", bridge_ip(zone_index)])
    # The address may have belonged to an earlier pod: forget the host side's ARP entry
    # for it, or traffic goes to the old MAC until the entry expires.
    run(["ip", "-n", HOST_NS, "neigh", "flush", "to", ip], check=False)


def detach_pod(netns: str) -> None:
    """Kill whatever still runs in the pod's namespace and delete it."""
    kill_namespace(netns)


def _partition_table(zone_index: int) -> str:
    return f"zse2e_cut_z{zone_index}"


class Network:
    """The cluster network for `zones` zones. `up()` sweeps leftovers first."""

    def __init__(self, zones: int = 3) -> None:
        self.zones = zones

    def up(self) -> None:
        cleanup()
        run(["ip", "netns", "add", HOST_NS])
        h = ["ip", "-n", HOST_NS]
        run([*h, "link", "set", "lo", "up"])
        for addr in (APISERVER_IP, DNS_IP):
            run([*h, "addr", "add", f"{addr}/32", "dev", "lo"])
        run(host_argv(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
        peer = ["peer", "name", HOST_VETH, "netns", HOST_NS]
        run(["ip", "link", "add", ROOT_VETH, "type", "veth", *peer])
        run(["ip", "addr", "add", f"{ROOT_SIDE_IP}/30", "dev", ROOT_VETH])
        run(["ip", "link", "set", ROOT_VETH, "up"])
        run([*h, "addr", "add", f"{HOST_SIDE_IP}/30", "dev", HOST_VETH])
        run([*h, "link", "set", HOST_VETH, "up"])
        run(["ip", "route", "replace", CLUSTER_CIDR, "via", HOST_SIDE_IP])
        for z in range(self.zones):
            br = bridge_name(z)
            run([*h, "link", "add", br, "type", "bridge"])
            run([*h, "addr", "add", f"{bridge_ip(z)}/24", "dev", br])
            for k in range(4):
                run([*h, "addr", "add", f"{node_ip(z, k)}/24", "dev", br])
            run([*h, "link", "set", br, "up"])

    def down(self) -> None:
        cleanup()

    def cut_zone(self, zone_index: int) -> None:
        """Partition the zone: nothing crosses between its bridge and anything else
        (other zones, the API server, DNS, the operator, the test's clients). Traffic
        inside the zone (one bridge) still flows."""
        br = bridge_name(zone_index)
        table = _partition_table(zone_index)
        rules = (
            f"table inet {table} {{\n"
            f"  chain forward {{ type filter hook forward priority -10; policy accept;\n"
            f'    iifname "{br}" drop; oifname "{br}" drop; }}\n'
            f"  chain input {{ type filter hook input priority -10; policy accept;\n"
            f'    iifname "{br}" drop; }}\n'
            f"  chain output {{ type filter hook output priority -10; policy accept;\n"
            f'    oifname "{br}" drop; }}\n'
            f"}}\n"
        )
        self.heal_zone(zone_index)
        subprocess.run(host_argv(["nft", "-f", "-"]), input=rules, text=True, check=True)

    def heal_zone(self, zone_index: int) -> None:
        run(
            host_argv(["nft", "delete", "table", "inet", _partition_table(zone_index)]), check=False
        )

    def set_bridge(self, zone_index: int, up: bool) -> None:
        """A zone's bridge down: its pods lose the network entirely (a zone outage)."""
        state = "up" if up else "down"
        run(["ip", "-n", HOST_NS, "link", "set", bridge_name(zone_index), state])
