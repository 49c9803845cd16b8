"""`zonestore export` and `zonestore import`: the managed export format from the command
line (registered in cli.py's build_parser).

    zonestore export --admin HOST:PORT --to DIR_OR_URL [--project P] [--kinds K,..]
                     [--namespaces N,..]
    zonestore import --admin HOST:PORT --from PATH/x.overall_export_metadata
                     [--project P] [--kinds K,..] [--namespaces N,..]

`--admin` is any replica's admin address (the replica's client address is read from its
/admin/status); `--token-file` and `--tls-ca` reach a client port that wants a token or
serves TLS. The project defaults to DATASTORE_PROJECT_ID, GOOGLE_CLOUD_PROJECT or
DATASTORE_DATASET for an export, and to the project the export's keys name for an
import. Destinations and sources: a folder, file:///folder or s3://bucket/prefix (the
S3 endpoint and credentials from the usual AWS_* variables, or --s3-endpoint). Progress
goes to stderr; the last line on stdout says where the export is (for `import --from`).
Exit status: 0 done, 1 stopped (the message says where and why), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from zonestore_node.backup import objstore

COMMANDS = ("export", "import")


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--admin",
            default=os.environ.get("ZONESTORE_ADMIN", "127.0.0.1:9081"),
            help="admin address of any replica (default 127.0.0.1:9081)",
        )
        p.add_argument(
            "--admin-token-file",
            default=os.environ.get("ZONESTORE_ADMIN_TOKEN_FILE", ""),
            help="file holding the admin token (when the node requires one)",
        )
        p.add_argument(
            "--token-file",
            default=os.environ.get("ZONESTORE_CLIENT_TOKEN_FILE", ""),
            help="file holding a client token (nodes run with --auth-tokens)",
        )
        p.add_argument(
            "--tls-ca",
            default=os.environ.get("ZONESTORE_CLIENT_TLS_CA", ""),
            help="CA (PEM) of the client port's certificate, when it serves TLS",
        )
        p.add_argument("--project", default="", help="the project (see the defaults above)")
        p.add_argument("--database", default="", help="the database id (default: the default)")
        p.add_argument("--kinds", type=_names, default=None, help="only these kinds: K1,K2")
        p.add_argument(
            "--namespaces",
            type=_names,
            default=None,
            help="only these namespaces: N1,N2 ('(default)' for the default namespace)",
        )
        p.add_argument(
            "--s3-endpoint", default=None, help="S3-compatible endpoint URL (else AWS_ENDPOINT_URL)"
        )
        p.add_argument("--quiet", action="store_true", help="no progress lines")

    exp = sub.add_parser("export", help="export entities in Datastore's managed export format")
    exp.add_argument("--to", required=True, help="a folder, file:///folder or s3://bucket/prefix")
    common(exp)
    imp = sub.add_parser("import", help="import a managed export (gcloud datastore export)")
    imp.add_argument(
        "--from",
        dest="source",
        required=True,
        help="the *.overall_export_metadata file (a path, file:// or s3:// URL)",
    )
    common(imp)


def _store(url: str, endpoint: str | None) -> objstore.ObjectStore:
    """A folder (created if missing) or a store URL."""
    if "://" not in url:
        path = Path(url).resolve()
        path.mkdir(parents=True, exist_ok=True)
        url = path.as_uri()
    return objstore.open_store(url, endpoint=endpoint)


def main(args: Any) -> int:
    from zonestore_node.export import transfer  # grpc and the Datastore types: only when used

    token = ""
    if args.admin_token_file:
        try:
            token = Path(args.admin_token_file).read_text().strip()
        except OSError as exc:
            print(f"zonestore: cannot read the admin token file: {exc}", file=sys.stderr)
            return 2
    client_token = ""
    tls_ca: bytes | None = None
    try:
        if args.token_file:
            client_token = Path(args.token_file).read_text().strip()
        if args.tls_ca:
            tls_ca = Path(args.tls_ca).read_bytes()
    except OSError as exc:
        print(f"zonestore: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    progress = transfer.Progress(args.command, out=open(os.devnull, "w") if args.quiet else None)  # noqa: SIM115
    try:
        address = transfer.client_address(args.admin, token)
        node = transfer.Node(address, client_token, tls_ca)
        try:
            if args.command == "export":
                project = (
                    args.project
                    or os.environ.get("DATASTORE_PROJECT_ID")
                    or os.environ.get("GOOGLE_CLOUD_PROJECT")
                    or os.environ.get("DATASTORE_DATASET")
                )
                if not project:
                    print(
                        "zonestore export: name the project: --project P (or set "
                        "DATASTORE_PROJECT_ID)",
                        file=sys.stderr,
                    )
                    return 2
                try:
                    store = _store(args.to, args.s3_endpoint)
                except (ValueError, OSError) as exc:
                    print(f"zonestore export: {exc}", file=sys.stderr)
                    return 2
                result = transfer.export_entities(
                    node,
                    store,
                    project,
                    args.database,
                    kinds=args.kinds,
                    namespaces=args.namespaces,
                    progress=progress,
                )
                print(
                    f"exported {result.entities:,} entities of project {project} at read time "
                    f"{result.read_time_us} us in {result.seconds:.1f} s",
                    file=sys.stderr,
                )
                print(result.url)
                return 0
            try:
                store, key = transfer.split_location(args.source)
            except ValueError as exc:
                print(f"zonestore import: {exc}", file=sys.stderr)
                return 2
            imported = transfer.import_entities(
                node,
                store,
                key,
                project=args.project or None,
                database=args.database,
                kinds=args.kinds,
                namespaces=args.namespaces,
                progress=progress,
            )
            print(
                f"imported {imported.entities:,} entities into project {imported.project or '-'} "
                f"in {imported.seconds:.1f} s"
                + (f" ({imported.skipped:,} left out by the filters)" if imported.skipped else ""),
                file=sys.stderr,
            )
            return 0
        finally:
            node.close()
    except (transfer.TransferError, objstore.ObjectStoreError) as exc:
        print(f"zonestore {args.command}: {exc}", file=sys.stderr)
        return 1
