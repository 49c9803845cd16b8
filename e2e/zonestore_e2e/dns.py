"""Cluster DNS for `*.svc.cluster.local`, answered from Services and EndpointSlices.

Run as `python -m zonestore_e2e.dns --listen 10.244.0.2:53 --kubeconfig <admin>` inside
the host namespace. Pods get `resolv_conf(namespace)` (the kubelet bind-mounts it), so a
pod resolves names the way it would against CoreDNS: search list, `ndots:5`.

Records (A only, TTL `TTL_S`):
    <svc>.<ns>.svc.cluster.local             ready endpoint addresses of the Service
    <hostname>.<svc>.<ns>.svc.cluster.local  that endpoint's address (`hostname` field of
                                             a ready endpoint: StatefulSet pods under
                                             their headless Service)
    kubernetes.default.svc.cluster.local     the API server's real address
Other names under cluster.local get NXDOMAIN; names elsewhere get REFUSED (there is no
upstream resolver: the cluster network has no way out, and a test must not depend on
one). A Service that exists but has no ready endpoint answers NOERROR with no records.

Fidelity gap: there is no kube-proxy, so ClusterIPs do not route. A ClusterIP Service
name therefore answers with its ready endpoint addresses, like a headless one, instead
of the ClusterIP; clients get the same pods, without the virtual IP in between.

The name table is pure (`build_table` from Service/EndpointSlice dicts, `NameTable.
lookup`, `respond` from request bytes to reply bytes) and unit-tested; the watch and the
sockets around it are thin. Imports dnslib and the e2e API client; nothing of the
kubelet or the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import ipaddress
import logging
import signal
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
from dnslib import QTYPE, RCODE, RR, SOA, A, DNSRecord  # type: ignore[import-untyped]

from zonestore_e2e import kubelet_api, network

log = logging.getLogger("zonestore_e2e.dns")

CLUSTER_DOMAIN = "cluster.local"
NAMESERVER_IP = network.DNS_IP
APISERVER_IP = network.APISERVER_IP
TTL_S = 5
UDP_PAYLOAD_DEFAULT = 512
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
WATCH_RETRY_S = 1.0

ObjectKey = tuple[str, str]  # (namespace, name)


def resolv_conf(namespace: str) -> str:
    """The resolv.conf a pod in `namespace` gets, as the kubelet writes it for
    dnsPolicy ClusterFirst (search list and ndots as CoreDNS clusters use)."""
    return (
        f"nameserver {NAMESERVER_IP}\n"
        f"search {namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
        "options ndots:5\n"
    )


class Rcode(enum.Enum):
    NOERROR = RCODE.NOERROR
    NXDOMAIN = RCODE.NXDOMAIN
    REFUSED = RCODE.REFUSED


@dataclass(frozen=True, slots=True)
class Answer:
    """What a name resolves to. `addresses` is empty for NXDOMAIN/REFUSED and for a name
    that exists without a ready address (NOERROR, no data)."""

    rcode: Rcode
    addresses: tuple[str, ...] = ()


def _normalize(name: str) -> str:
    return name.rstrip(".").lower()


def _in_cluster_domain(name: str) -> bool:
    return name == CLUSTER_DOMAIN or name.endswith("." + CLUSTER_DOMAIN)


@dataclass(frozen=True, slots=True)
class NameTable:
    """Fully qualified name (lower case, no trailing dot) -> its A records, sorted.
    A name present with no addresses exists (NOERROR, no data)."""

    records: Mapping[str, tuple[str, ...]]

    def lookup(self, qname: str) -> Answer:
        name = _normalize(qname)
        if not _in_cluster_domain(name):
            return Answer(Rcode.REFUSED)
        addresses = self.records.get(name)
        if addresses is None:
            return Answer(Rcode.NXDOMAIN)
        return Answer(Rcode.NOERROR, addresses)


def _sorted_ips(ips: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(ips), key=ipaddress.ip_address))


def _key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def build_table(
    services: Iterable[Mapping[str, Any]],
    slices: Iterable[Mapping[str, Any]],
    apiserver_ip: str = APISERVER_IP,
) -> NameTable:
    """The name table for these Services and EndpointSlices (API dicts, as listed).

    An endpoint counts when `conditions.ready` is true or absent (the API says absent
    means ready). `publishNotReadyAddresses` needs no handling here: the EndpointSlice
    controller already reports such endpoints ready. Slices of a Service that does not
    exist (yet, or any more) are ignored, as CoreDNS does. ExternalName Services are not
    served (no CNAMEs here).
    """
    known: set[ObjectKey] = set()
    for svc in services:
        if (svc.get("spec") or {}).get("type") == "ExternalName":
            continue
        known.add(_key(svc))
    by_service: dict[ObjectKey, list[str]] = {k: [] for k in known}
    by_hostname: dict[str, list[str]] = {}
    for es in slices:
        if es.get("addressType") != "IPv4":
            continue
        ns = _key(es)[0]
        svc_name = ((es.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not svc_name or (ns, svc_name) not in known:
            continue
        for endpoint in es.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            addresses = [str(a) for a in endpoint.get("addresses") or []]
            by_service[(ns, svc_name)].extend(addresses)
            hostname = endpoint.get("hostname")
            if hostname:
                fqdn = f"{hostname}.{svc_name}.{ns}.svc.{CLUSTER_DOMAIN}".lower()
                by_hostname.setdefault(fqdn, []).extend(addresses)
    records: dict[str, tuple[str, ...]] = {
        f"{name}.{ns}.svc.{CLUSTER_DOMAIN}".lower(): _sorted_ips(ips)
        for (ns, name), ips in by_service.items()
    }
    records.update((fqdn, _sorted_ips(ips)) for fqdn, ips in by_hostname.items())
    # Answered before the first list finishes, so pods can reach the API at any time.
    records[f"kubernetes.default.svc.{CLUSTER_DOMAIN}"] = (apiserver_ip,)
    return NameTable(records)


class ClusterState:
    """Services and EndpointSlices as last seen by the watches; `table()` derives the
    name table (rebuilt per change: e2e clusters hold tens of objects, not thousands)."""

    KINDS = ("services", "endpointslices")

    def __init__(self, apiserver_ip: str = APISERVER_IP) -> None:
        self.apiserver_ip = apiserver_ip
        self._objects: dict[str, dict[ObjectKey, Mapping[str, Any]]] = {k: {} for k in self.KINDS}
        self._table = build_table((), (), apiserver_ip)

    def replace(self, kind: str, items: Iterable[Mapping[str, Any]]) -> None:
        """A fresh list: forget what the old watch showed."""
        self._objects[kind] = {_key(o): o for o in items}
        self._rebuild()

    def apply(self, kind: str, event_type: str, obj: Mapping[str, Any]) -> None:
        if event_type == "DELETED":
            self._objects[kind].pop(_key(obj), None)
        elif event_type in ("ADDED", "MODIFIED"):
            self._objects[kind][_key(obj)] = obj
        else:
            return
        self._rebuild()

    def table(self) -> NameTable:
        return self._table

    def _rebuild(self) -> None:
        self._table = build_table(
            self._objects["services"].values(),
            self._objects["endpointslices"].values(),
            self.apiserver_ip,
        )


def _soa() -> Any:
    return RR(
        CLUSTER_DOMAIN,
        QTYPE.SOA,
        ttl=TTL_S,
        rdata=SOA(
            f"ns.dns.{CLUSTER_DOMAIN}",
            f"hostmaster.{CLUSTER_DOMAIN}",
            (1, 7200, 1800, 86400, TTL_S),
        ),
    )


def respond(table: NameTable, request: bytes, *, udp: bool = False) -> bytes | None:
    """Reply bytes for one DNS request (None for garbage, which is dropped). Over UDP a
    reply larger than the client's payload size (512, or its EDNS0 size) is sent
    truncated (TC) so the client retries over TCP."""
    try:
        query = DNSRecord.parse(request)
    except Exception:  # dnslib raises a variety of errors on malformed input
        return None
    reply = query.reply(ra=0)
    if len(query.questions) != 1:
        reply.header.rcode = RCODE.FORMERR
        return bytes(reply.pack())
    question = query.questions[0]
    answer = table.lookup(str(question.qname))
    reply.header.rcode = answer.rcode.value
    if answer.rcode is Rcode.REFUSED:
        reply.header.aa = 0
        return bytes(reply.pack())
    if answer.rcode is Rcode.NOERROR and question.qtype in (QTYPE.A, QTYPE.ANY):
        for ip in answer.addresses:
            reply.add_answer(RR(question.qname, QTYPE.A, ttl=TTL_S, rdata=A(ip)))
    if not reply.rr:
        # NXDOMAIN or no data: the SOA tells caches how long to remember it.
        reply.add_auth(_soa())
    packed = bytes(reply.pack())
    if udp:
        limit = UDP_PAYLOAD_DEFAULT
        for rr in query.ar:  # an EDNS0 OPT record carries the client's size in its class
            if rr.rtype == QTYPE.OPT:
                limit = max(limit, int(rr.rclass))
        if len(packed) > limit:
            packed = bytes(reply.truncate().pack())
    return packed


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, table: Callable[[], NameTable]) -> None:
        self._table = table
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's UDP transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reply = respond(self._table(), data, udp=True)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)


class DnsServer:
    """UDP and TCP on one address, answering from `table()` (called per query, so a
    rebuilt table takes effect at once)."""

    def __init__(self, table: Callable[[], NameTable]) -> None:
        self._table = table
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Bind both; returns the port (UDP picks it when `port` is 0, TCP follows)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self._table), local_addr=(host, port)
        )
        self._udp = transport
        bound = int(transport.get_extra_info("sockname")[1])
        self._tcp = await asyncio.start_server(self._serve_tcp, host, bound)
        return bound

    async def aclose(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = respond(self._table(), await reader.readexactly(length))
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


_WATCH_PATHS = {
    "services": "/api/v1/services",
    "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices",
}


async def _watch(
    api: kubelet_api.Api, kind: str, state: ClusterState, synced: asyncio.Event
) -> None:
    """Keep `state` current for `kind`; the API client relists after 410s and drops."""
    while True:
        try:
            async for event_type, obj in api.watch(_WATCH_PATHS[kind]):
                if event_type == "SYNC":
                    state.replace(kind, obj.get("items") or [])
                    log.info("dns.synced kind=%s objects=%d", kind, len(obj.get("items") or []))
                    synced.set()
                else:
                    state.apply(kind, event_type, obj)
        except (kubelet_api.ApiError, aiohttp.ClientError, OSError, TimeoutError) as e:
            # Keep answering from the last table; relist when the API is back.
            log.warning("dns.watch_failed kind=%s error=%r", kind, e)
        await asyncio.sleep(WATCH_RETRY_S)


async def run(host: str, port: int, kubeconfig: str) -> None:
    """Serve until cancelled (SIGTERM/SIGINT cancel it via `main`)."""
    state = ClusterState()
    server = DnsServer(state.table)
    bound = await server.start(host, port)
    log.info("dns.serving listen=%s:%d", host, bound)
    with tempfile.TemporaryDirectory(prefix="zse2e-dns-") as tmp:
        async with kubelet_api.api(kubeconfig, tmp) as api:
            try:
                async with asyncio.TaskGroup() as tg:
                    events = {kind: asyncio.Event() for kind in ClusterState.KINDS}
                    for kind, event in events.items():
                        tg.create_task(_watch(api, kind, state, event), name=f"watch-{kind}")
                    for event in events.values():
                        await event.wait()
                    log.info("dns.ready records=%d", len(state.table().records))
            finally:
                await server.aclose()


def _parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zonestore_e2e.dns", description=__doc__)
    parser.add_argument("--listen", type=_parse_listen, default=(NAMESERVER_IP, 53))
    parser.add_argument("--kubeconfig", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    host, port = args.listen

    async def _main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run(host, port, args.kubeconfig)
        log.info("dns.stopped")

    asyncio.run(_main())
    return 0


if __name__ == "__main__":
    sys.exit(main())
