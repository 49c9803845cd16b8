"""`zonestore backup create|list|verify|delete` and `zonestore restore`.

    zonestore backup create --admin HOST:PORT --to URL
    zonestore backup list URL [--all]
    zonestore backup verify URL/ID
    zonestore backup delete URL/ID
    zonestore restore --from URL [--backup ID] [--to-time RFC3339 | --to-latest] --data-dir DIR

URL is `file:///abs/folder` or `s3://bucket/prefix`; for S3 the endpoint and region come
from --endpoint/--region or AWS_ENDPOINT_URL/AWS_REGION, the credentials from the usual
AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE).
Registered in zonestore_node/cli.py's build_parser; every failure is one line on stderr
and exit status 1 (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

from zonestore_node.backup import catalog, objstore

COMMANDS = ("backup", "restore")
_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


def _store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--endpoint",
        default=os.environ.get("ZONESTORE_S3_ENDPOINT", ""),
        help="S3-compatible endpoint URL (default: AWS_ENDPOINT_URL, else AWS itself)",
    )
    p.add_argument("--region", default="", help="S3 region (default: AWS_REGION)")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = sub.add_parser("backup", help="base backups to a folder or S3 (create, list, ...)")
    bsub = backup.add_subparsers(dest="backup_action", required=True)
    create = bsub.add_parser("create", help="back up a running group (from a follower)")
    create.add_argument(
        "--admin",
        default=os.environ.get("ZONESTORE_ADMIN", "127.0.0.1:9081"),
        help="admin address of any replica of the group",
    )
    create.add_argument(
        "--admin-token-file",
        default=os.environ.get("ZONESTORE_ADMIN_TOKEN_FILE", ""),
        help="file holding the admin token (when the node requires one)",
    )
    create.add_argument("--to", required=True, metavar="URL", help="file:///dir or s3://b/p")
    create.add_argument("--parallel", type=int, default=4, help="files uploaded at a time")
    create.add_argument(
        "--max-rate",
        default=os.environ.get("ZONESTORE_BACKUP_MAX_RATE", "64MB"),
        metavar="SIZE",
        help="read at most SIZE per second from the source replica, e.g. 64MB, 200MiB; "
        "0: no limit (default 64MB: an unpaced copy takes CPU and disk from the writes)",
    )
    _store_flags(create)
    listing = bsub.add_parser("list", help="the complete backups at a destination")
    listing.add_argument("url", metavar="URL")
    listing.add_argument("--all", action="store_true", help="show incomplete uploads too")
    listing.add_argument("--json", action="store_true", help="print JSON")
    _store_flags(listing)
    for name, text in (
        ("verify", "re-read every object of a backup and check its checksum"),
        ("delete", "delete a backup (complete or not)"),
    ):
        action = bsub.add_parser(name, help=text)
        action.add_argument("target", metavar="URL/ID")
        _store_flags(action)

    restore = sub.add_parser(
        "restore", help="build the data folder of a NEW group from a backup (and archive)"
    )
    restore.add_argument("--from", dest="source", required=True, metavar="URL")
    restore.add_argument("--backup", default="", metavar="ID", help="default: the newest fit")
    when = restore.add_mutually_exclusive_group()
    when.add_argument("--to-time", default="", metavar="RFC3339", help="e.g. 2026-12-06T07:30:00Z")
    when.add_argument(
        "--to-latest", action="store_true", help="the newest archived commit (the default)"
    )
    restore.add_argument("--data-dir", required=True, help="the new node's data folder")
    restore.add_argument(
        "--node-id",
        default=os.environ.get("ZONESTORE_NODE_ID", "local-0"),
        help="the id the restored node will serve with (zonestore serve --node-id)",
    )
    _store_flags(restore)


def _open(url: str, args: argparse.Namespace) -> objstore.ObjectStore:
    return objstore.open_store(url, endpoint=args.endpoint or None, region=args.region or None)


def split_target(target: str) -> tuple[str, str]:
    """URL/ID -> (URL, ID)."""
    url, _, backup_id = target.rstrip("/").rpartition("/")
    if not _ID.match(backup_id) or not url:
        raise ValueError(
            f"{target!r}: want URL/ID, e.g. s3://bucket/prefix/20261206T073000Z-1a2b3c4d "
            "(ids from `zonestore backup list URL`)"
        )
    if url.endswith(":/") or url.endswith(":"):  # file:///ID is a folder, not an id
        raise ValueError(f"{target!r}: want URL/ID")
    return url, backup_id


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        if args.command == "restore":
            from zonestore_node.backup.restore import run_cli

            return run_cli(args, _open(args.source, args))
        if args.backup_action == "create":
            return _create(args)
        if args.backup_action == "list":
            return _list(args)
        url, backup_id = split_target(args.target)
        store = _open(url, args)
        if args.backup_action == "verify":
            manifest = catalog.verify(store, backup_id)
            print(
                f"backup {backup_id} is intact: {len(manifest.files)} objects, "
                f"{manifest.total_bytes} bytes, state as of "
                f"{catalog.rfc3339(manifest.commit_ts)} (index {manifest.applied_index})"
            )
            return 0
        removed = catalog.delete(store, backup_id)
        print(f"deleted backup {backup_id} ({removed} objects)")
        return 0
    except ValueError as exc:
        print(f"zonestore {args.command}: {exc}", file=sys.stderr)
        return 2
    except (catalog.BackupError, objstore.ObjectStoreError) as exc:
        print(f"zonestore {args.command}: {exc}", file=sys.stderr)
        return 1


def _create(args: argparse.Namespace) -> int:
    from zonestore_node.backup import base

    token = ""
    if args.admin_token_file:
        try:
            token = Path(args.admin_token_file).read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the admin token file: {exc}") from exc
    max_rate = _rate(args.max_rate)
    store = _open(args.to, args)
    result = base.create(base.AdminClient(token), args.admin, store, args.parallel, max_rate)
    manifest = result.manifest
    print(
        f"backup {manifest.backup_id} complete: {len(manifest.files)} files, "
        f"{manifest.total_bytes} bytes from {manifest.source_node} in {result.seconds:.1f} s "
        f"({result.mb_per_s:.1f} MB/s); state as of {catalog.rfc3339(manifest.commit_ts)} "
        f"(index {manifest.applied_index})"
    )
    return 0


def _rate(text: str) -> int | None:
    """--max-rate: bytes per second, None for 0 (no limit)."""
    from zonestore_node.storage import memory

    try:
        rate = memory.parse_size(text)
    except memory.BudgetError as exc:
        raise ValueError(f"--max-rate {exc}") from None
    return rate or None


def _list(args: argparse.Namespace) -> int:
    store = _open(args.url, args)
    listing = catalog.list_backups(store)
    if args.json:
        body = {"backups": [catalog.describe(m) for m in listing.complete]}
        if args.all:
            body["incomplete"] = listing.incomplete  # type: ignore[assignment]
        print(json.dumps(body, indent=2))
        return 0
    rows = [("ID", "COMMIT TIME", "INDEX", "BYTES", "GROUP", "STATUS")]
    for m in listing.complete:
        rows.append(
            (
                m.backup_id,
                catalog.rfc3339(m.commit_ts),
                str(m.applied_index),
                str(m.total_bytes),
                m.group_id or "-",
                "complete",
            )
        )
    if args.all:
        rows += [(i, "-", "-", "-", "-", "incomplete") for i in listing.incomplete]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def archive_flags(p: argparse.ArgumentParser) -> None:
    """`--archive-to` and its delay, on `zonestore serve` and `zonestore run`."""
    p.add_argument(
        "--archive-to",
        default=os.environ.get("ZONESTORE_ARCHIVE_TO", ""),
        metavar="URL",
        help="continuous archiving for point-in-time restore: the leader ships committed "
        "log entries to URL (file:///dir or s3://bucket/prefix; S3 settings from AWS_*)",
    )
    p.add_argument(
        "--archive-max-delay-seconds",
        type=float,
        default=float(os.environ.get("ZONESTORE_ARCHIVE_MAX_DELAY", "60")),
        help="an archive segment is uploaded at the latest this long after its first entry",
    )


def archive_args(args: argparse.Namespace) -> list[str]:
    """The flags `zonestore run` passes on to every replica."""
    if not args.archive_to:
        return []
    return [
        "--archive-to",
        args.archive_to,
        "--archive-max-delay-seconds",
        str(args.archive_max_delay_seconds),
    ]


def archive_config(args: argparse.Namespace) -> dict[str, object]:
    """NodeConfig fields from the flags; a bad URL is refused as a configuration error."""
    from zonestore_node.server import ConfigError

    if args.archive_to:
        try:
            objstore.open_store(args.archive_to).close()
        except ValueError as exc:
            raise ConfigError(f"--archive-to: {exc}") from exc
        if not args.archive_max_delay_seconds > 0:
            raise ConfigError("--archive-max-delay-seconds must be above 0")
    return {
        "archive_to": args.archive_to,
        "archive_max_delay_seconds": args.archive_max_delay_seconds,
    }
