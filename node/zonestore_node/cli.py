"""The `zonestore` command: `serve` runs one node; `run` starts a local cluster; `status`,
`members` and `transfer-leader` wrap the admin API of a running replica group.

`zonestore run` is what `make run` calls: replicas on loopback as separate processes
(client API on 127.0.0.1:8081.., admin/metrics HTTP on 127.0.0.1:9081..), data under
one folder that survives restarts; it prints the DATASTORE_EMULATOR_HOST to use,
restarts a replica that exits (supervisor.py) and stops them all cleanly on Ctrl-C.
Flags fall back to ZONESTORE_* environment variables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from zonestore_node import logs, supervisor
from zonestore_node.backup import cli as backup_cli
from zonestore_node.export import command as export_cli
from zonestore_node.storage import memory


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run one storage node")
    p.add_argument("--node-id", default=_env("ZONESTORE_NODE_ID", "local-0"))
    p.add_argument("--zone", default=_env("ZONESTORE_ZONE", "local"))
    p.add_argument("--data-dir", default=_env("ZONESTORE_DATA_DIR", ".zonestore-data/local-0"))
    p.add_argument("--client-addr", default=_env("ZONESTORE_CLIENT_ADDR", "127.0.0.1:8081"))
    p.add_argument("--admin-addr", default=_env("ZONESTORE_ADMIN_ADDR", "127.0.0.1:9081"))
    p.add_argument(
        "--peer-addr",
        default=_env("ZONESTORE_PEER_ADDR", ""),
        help="where to listen for the other replicas (empty: a group of one)",
    )
    p.add_argument(
        "--advertise-peer-addr",
        default=_env("ZONESTORE_ADVERTISE_PEER_ADDR", ""),
        help="how the other replicas reach this one (default: --peer-addr)",
    )
    p.add_argument(
        "--initial-cluster",
        default=_env("ZONESTORE_INITIAL_CLUSTER", ""),
        help="founding voters, id=host:port,...; ignored once the data folder holds a log",
    )
    p.add_argument(
        "--join",
        action="store_true",
        default=_env("ZONESTORE_JOIN", "") == "1",
        help="start empty and wait for the leader to add this replica (as a learner)",
    )
    p.add_argument("--tick-ms", type=float, default=float(_env("ZONESTORE_TICK_MS", "50")))
    p.add_argument(
        "--snapshot-every",
        type=int,
        default=int(_env("ZONESTORE_SNAPSHOT_EVERY", "20000")),
        help="applied entries between automatic snapshots",
    )
    p.add_argument(
        "--unsafe-local-reads",
        action="store_true",
        default=_env("ZONESTORE_UNSAFE_LOCAL_READS", "") == "1",
        help="TEST ONLY: serve strong reads locally without ReadIndex (breaks linearizability)",
    )
    p.add_argument(
        "--follower-reads",
        choices=("on", "off"),
        default=_env("ZONESTORE_FOLLOWER_READS", "on"),
        help="a follower serves strong (linearizable) reads itself after asking the leader "
        "for a read index (on, the default), or relays them to the leader (off)",
    )
    p.add_argument(
        "--snapshot-keep",
        type=int,
        default=int(_env("ZONESTORE_SNAPSHOT_KEEP", "5000")),
        help="log entries kept behind a snapshot for followers catching up by log",
    )
    p.add_argument(
        "--retention-seconds",
        type=float,
        default=float(_env("ZONESTORE_RETENTION_SECONDS", "3600")),
        help="how long old versions stay readable with read_time (at least 3600 in production)",
    )
    p.add_argument(
        "--max-clock-offset-seconds",
        type=float,
        default=float(_env("ZONESTORE_MAX_CLOCK_OFFSET", "0.5")),
        help="a replica whose wall clock is further than this from the median of its "
        "group's clocks stamps commits with the median instead",
    )
    p.add_argument(
        "--gc-interval-seconds", type=float, default=float(_env("ZONESTORE_GC_INTERVAL", "60"))
    )
    p.add_argument(
        "--log-format", choices=["text", "json"], default=_env("ZONESTORE_LOG_FORMAT", "text")
    )
    p.add_argument(
        "--auto-index",
        choices=["true", "false", "fallback"],
        default=_env("ZONESTORE_AUTO_INDEX", "true"),
        help="a query needing a missing composite index: create it (true); refuse it with "
        "FAILED_PRECONDITION like production (false); sort in memory (fallback)",
    )
    p.add_argument(
        "--index-yaml",
        default=_env("ZONESTORE_INDEX_YAML", ""),
        help="Datastore index.yaml whose composite indexes the leader creates at start",
    )
    p.add_argument(
        "--legacy-limits",
        action="store_true",
        default=_env("ZONESTORE_LEGACY_LIMITS", "") == "1",
        help="refuse a Commit of over 500 mutations, as the old limits page said "
        "(production now caps only its bytes: 10 MiB)",
    )
    edge_flags(p)
    memory_flag(p)
    backup_cli.archive_flags(p)
    sec = p.add_argument_group("security (README: Security)")
    for side, what in (("peer", "between replicas (mutual TLS)"), ("client", "on the client API")):
        for part in ("cert", "key", "ca"):
            env = f"ZONESTORE_{side.upper()}_TLS_{part.upper()}"
            sec.add_argument(
                f"--{side}-tls-{part}", default=_env(env, ""), help=f"TLS {part} file {what}"
            )
    sec.add_argument(
        "--auth-tokens",
        default=_env("ZONESTORE_AUTH_TOKENS", ""),
        help="YAML/JSON file of bearer-token hashes and scopes; set: clients must authenticate",
    )
    sec.add_argument(
        "--admin-token-file",
        default=_env("ZONESTORE_ADMIN_TOKEN_FILE", ""),
        help="file holding the token every /admin/* request must bear",
    )
    sec.add_argument(
        "--admin-insecure",
        action="store_true",
        default=_env("ZONESTORE_ADMIN_INSECURE", "") == "1",
        help="serve an open admin API on a non-loopback address (not recommended)",
    )


def edge_flags(p: argparse.ArgumentParser) -> None:
    """The client port's server (api/edgeproc.py) and the emulator's reset."""
    p.add_argument(
        "--edge",
        choices=["auto", "on", "off"],
        default=_env("ZONESTORE_EDGE", "auto"),
        help="serve the client port through zonestore-edge (gRPC + REST, Go) when its binary "
        "is found (auto), always (on), or with Python's grpc.aio server (off)",
    )
    p.add_argument(
        "--edge-binary",
        default=_env("ZONESTORE_EDGE_BINARY", ""),
        help="the zonestore-edge binary (default: beside python, on $PATH, .cache/bin)",
    )
    p.add_argument(
        "--allow-reset",
        action="store_true",
        default=_env("ZONESTORE_ALLOW_RESET", "") == "1",
        help="TEST ONLY: POST /reset on the client port deletes all data (the emulator's)",
    )


def memory_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--memory-budget",
        default=_env("ZONESTORE_MEMORY_BUDGET", ""),
        help="RocksDB's block cache and memtables together, e.g. 512MiB or 2GiB "
        f"(default {memory.format_size(memory.DEFAULT_BUDGET)}; the operator passes half "
        "the pod's memory limit)",
    )


def memory_budget(args: argparse.Namespace, command: str) -> memory.Budget:
    """The --memory-budget flag; a bad one ends the command with a usage error (2)."""
    try:
        return memory.Budget.parse(args.memory_budget)
    except memory.BudgetError as exc:
        print(f"zonestore {command}: --memory-budget {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run a local cluster on loopback")
    p.add_argument("--replicas", type=int, default=int(_env("ZONESTORE_REPLICAS", "3")))
    p.add_argument("--host", default=_env("ZONESTORE_HOST", "127.0.0.1"))
    p.add_argument("--client-port", type=int, default=int(_env("ZONESTORE_CLIENT_PORT", "8081")))
    p.add_argument("--admin-port", type=int, default=int(_env("ZONESTORE_ADMIN_PORT", "9081")))
    p.add_argument("--peer-port", type=int, default=int(_env("ZONESTORE_PEER_PORT", "7081")))
    p.add_argument("--data-dir", default=_env("ZONESTORE_DATA_DIR", ".zonestore-data"))
    p.add_argument(
        "--restart",
        choices=[r.value for r in supervisor.Restart],
        default=_env("ZONESTORE_RESTART", "always"),
        help="a replica that exits: restart it after a backoff (always), or stop them all "
        "and exit 1 (never)",
    )
    p.add_argument("--legacy-limits", action="store_true", help="passed to every replica")
    memory_flag(p)
    edge_flags(p)
    backup_cli.archive_flags(p)


def parse_cluster(spec: str) -> tuple[tuple[str, str], ...]:
    members = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        node_id, sep, addr = item.partition("=")
        if not sep or not node_id or ":" not in addr:
            raise SystemExit(f"zonestore: bad --initial-cluster entry {item!r}: want id=host:port")
        members.append((node_id, addr))
    return tuple(members)


def run_cluster(args: argparse.Namespace) -> int:
    if args.replicas < 1 or args.replicas % 2 == 0:
        print(
            f"zonestore run: --replicas must be odd (1, 3, 5...), got {args.replicas}: "
            "an even group tolerates no more failures than the odd one below it.",
            file=sys.stderr,
        )
        return 2
    budget = memory_budget(args, "run")
    data = Path(args.data_dir)
    ids = [f"local-{i}" for i in range(args.replicas)]
    peers = ",".join(f"{ids[i]}={args.host}:{args.peer_port + i}" for i in range(args.replicas))
    specs: list[supervisor.ReplicaSpec] = []
    for i in range(args.replicas):
        client = f"{args.host}:{args.client_port + i}"
        admin = f"{args.host}:{args.admin_port + i}"
        cmd = [
            sys.executable, "-m", "zonestore_node.cli", "serve",
            "--node-id", ids[i], "--zone", f"zone-{chr(ord('a') + i % 3)}",
            "--data-dir", str(data / ids[i]),
            "--client-addr", client, "--admin-addr", admin,
            "--edge", args.edge, *(["--edge-binary", args.edge_binary] if args.edge_binary else []),
            *(["--allow-reset"] if args.allow_reset else []),
            *backup_cli.archive_args(args),
            *(["--legacy-limits"] if args.legacy_limits else []),
            "--memory-budget", memory.format_size(budget.total),
        ]  # fmt: skip
        if args.replicas > 1:
            cmd += ["--peer-addr", f"{args.host}:{args.peer_port + i}", "--initial-cluster", peers]
        specs.append(
            supervisor.ReplicaSpec(
                node_id=ids[i],
                command=tuple(cmd),
                data_dir=data / ids[i],
                client_addr=client,
                admin_addr=admin,
                peer_addr=f"{args.host}:{args.peer_port + i}" if args.replicas > 1 else "",
            )
        )
    return supervisor.run(specs, supervisor.Restart(args.restart), pid_dir=data)


def admin_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def with_admin(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--admin",
            default=_env("ZONESTORE_ADMIN", "127.0.0.1:9081"),
            help="admin address of any replica (mutations follow the leader)",
        )
        p.add_argument(
            "--admin-token-file",
            default=_env("ZONESTORE_ADMIN_TOKEN_FILE", ""),
            help="file holding the admin token (when the node requires one)",
        )
        return p

    with_admin(sub.add_parser("status", help="show a replica's view of the group"))
    members = with_admin(sub.add_parser("members", help="list or change members"))
    msub = members.add_subparsers(dest="action")
    add = msub.add_parser("add", help="add a learner")
    add.add_argument("id")
    add.add_argument("peer_address")
    add.add_argument("--zone", default="")
    msub.add_parser("promote", help="promote a learner to voter").add_argument("id")
    msub.add_parser("remove", help="remove a member").add_argument("id")
    for action in msub.choices.values():  # --admin after the action works too
        action.add_argument("--admin", default=argparse.SUPPRESS)
        action.add_argument("--admin-token-file", default=argparse.SUPPRESS)
    transfer = with_admin(sub.add_parser("transfer-leader", help="hand leadership to a voter"))
    transfer.add_argument("target")
    with_admin(sub.add_parser("snapshot", help="take a snapshot and compact the log"))


_admin_token = ""  # set by run_admin from --admin-token-file


def _admin_call(addr: str, method: str, path: str, body: object = None) -> tuple[int, object]:
    """One admin request; a 421 from a follower is followed once, to the leader."""
    for _ in range(2):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if _admin_token:
            request.add_header("Authorization", f"Bearer {_admin_token}")
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            payload = json.loads(exc.read() or b"{}")
            if exc.code == 421 and payload.get("leader_admin_address"):
                addr = payload["leader_admin_address"]
                continue
            return exc.code, payload
    return 421, {"error": "the leader moved twice; retry"}


def run_admin(args: argparse.Namespace) -> int:
    global _admin_token
    if args.admin_token_file:
        try:
            _admin_token = Path(args.admin_token_file).read_text().strip()
        except OSError as exc:
            print(f"zonestore: cannot read the admin token file: {exc}", file=sys.stderr)
            return 2
    try:
        if args.command == "status":
            code, payload = _admin_call(args.admin, "GET", "/admin/status")
            if code == 200 and isinstance(payload, dict):
                print(_format_status(payload))
                return 0
        elif args.command == "members":
            if args.action is None:
                code, payload = _admin_call(args.admin, "GET", "/admin/status")
                if code == 200 and isinstance(payload, dict):
                    print(_format_members(payload))
                    return 0
            elif args.action == "add":
                body = {"id": args.id, "peer_address": args.peer_address, "zone": args.zone}
                code, payload = _admin_call(args.admin, "POST", "/admin/members", body)
            elif args.action == "promote":
                code, payload = _admin_call(args.admin, "POST", f"/admin/members/{args.id}/promote")
            else:
                code, payload = _admin_call(args.admin, "DELETE", f"/admin/members/{args.id}")
        elif args.command == "transfer-leader":
            code, payload = _admin_call(
                args.admin, "POST", "/admin/leader", {"target": args.target}
            )
        else:
            code, payload = _admin_call(args.admin, "POST", "/admin/snapshot")
    except OSError as exc:
        print(f"zonestore: cannot reach the admin API at {args.admin}: {exc}", file=sys.stderr)
        return 1
    if code == 401:
        print(
            "zonestore: the admin API wants a token: --admin-token-file FILE "
            "(or ZONESTORE_ADMIN_TOKEN_FILE)",
            file=sys.stderr,
        )
    print(json.dumps(payload, indent=2))
    return 0 if code == 200 else 1


def _format_members(status: dict[str, Any]) -> str:
    rows = [("ID", "ROLE", "ZONE", "MATCH", "LAG", "HEALTHY", "PEER")]
    for m in status.get("members", []):
        rows.append(
            (
                str(m["id"]) + (" *" if m["id"] == status.get("leader") else ""),
                str(m["role"]),
                str(m.get("zone") or "-"),
                str(m.get("match_index", "-")),
                str(m.get("lag") if m.get("lag") is not None else "-"),
                str(m.get("healthy") if m.get("healthy") is not None else "-"),
                str(m.get("peer_address") or "-"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _format_status(status: dict[str, Any]) -> str:
    head = (
        f"node {status['node_id']} (zone {status.get('zone') or '-'}): {status['role']}, "
        f"term {status['term']}, leader {status.get('leader') or 'unknown'}\n"
        f"commit index {status['commit_index']}, applied index {status['applied_index']}, "
        f"ready {status.get('ready')}\n"
    )
    if status.get("member") is False:
        voters = [str(m["id"]) for m in status.get("members", []) if m.get("role") == "voter"]
        head += (
            f"NOT A MEMBER: {status['node_id']} is not in the configuration of the group in "
            f"its data folder (voters: {', '.join(voters) or 'none yet'}); it waits for the "
            f"leader to add it (zonestore members add {status['node_id']})\n"
        )
    return head + _format_members(status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zonestore")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser(sub)
    run_parser(sub)
    admin_parsers(sub)
    backup_cli.add_parsers(sub)
    export_cli.register(sub)
    sub.add_parser(
        "hash-token", help="read a token on stdin, print its token_sha256 for --auth-tokens"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "hash-token":
        import hashlib

        print(hashlib.sha256(sys.stdin.read().strip().encode()).hexdigest())
        return 0
    if args.command in ("status", "members", "transfer-leader", "snapshot"):
        return run_admin(args)
    if args.command in backup_cli.COMMANDS:
        return backup_cli.run(args)
    if args.command in export_cli.COMMANDS:
        return export_cli.main(args)
    if args.command == "serve":
        from zonestore_node import server

        logs.setup(args.log_format)
        if not args.max_clock_offset_seconds > 0:
            raise SystemExit("zonestore: --max-clock-offset-seconds must be above 0")
        budget = memory_budget(args, "serve")
        try:
            config = server.NodeConfig(
                node_id=args.node_id,
                zone=args.zone,
                data_dir=Path(args.data_dir),
                client_addr=args.client_addr,
                admin_addr=args.admin_addr,
                retention_seconds=args.retention_seconds,
                max_clock_offset_seconds=args.max_clock_offset_seconds,
                gc_interval_seconds=args.gc_interval_seconds,
                peer_addr=args.peer_addr,
                advertise_peer_addr=args.advertise_peer_addr,
                initial_cluster=parse_cluster(args.initial_cluster),
                join=args.join,
                tick_seconds=args.tick_ms / 1000.0,
                snapshot_every=args.snapshot_every,
                snapshot_keep=args.snapshot_keep,
                unsafe_local_reads=args.unsafe_local_reads,
                follower_reads=args.follower_reads == "on",
                auto_index=args.auto_index,
                index_yaml=Path(args.index_yaml) if args.index_yaml else None,
                peer_tls_cert=args.peer_tls_cert,
                peer_tls_key=args.peer_tls_key,
                peer_tls_ca=args.peer_tls_ca,
                client_tls_cert=args.client_tls_cert,
                client_tls_key=args.client_tls_key,
                client_tls_ca=args.client_tls_ca,
                auth_tokens=Path(args.auth_tokens) if args.auth_tokens else None,
                admin_token_file=Path(args.admin_token_file) if args.admin_token_file else None,
                admin_insecure=args.admin_insecure,
                legacy_limits=args.legacy_limits,
                edge=args.edge,
                edge_binary=args.edge_binary,
                allow_reset=args.allow_reset,
                memory_budget=budget.total,
                **backup_cli.archive_config(args),  # type: ignore[arg-type]
            )
            server.check_security(config)
            server.check_edge(config)
        except server.ConfigError as exc:
            print(f"zonestore serve: {exc}", file=sys.stderr)
            return 2
        try:
            server.run(config)
        except server.ConfigError as exc:  # found once the data folder is open
            print(f"zonestore serve: {exc}", file=sys.stderr)
            return 2
        return 0
    return run_cluster(args)


if __name__ == "__main__":
    sys.exit(main())
