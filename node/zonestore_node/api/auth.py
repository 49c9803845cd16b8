"""Client access control: bearer tokens, each with a scope (projects, databases, access).

The official clients send `authorization: Bearer <token>` metadata when they hold
credentials. A token file (`--auth-tokens`, YAML or JSON) lists what each token may do,
and holds only SHA-256 hashes of the tokens, never the tokens themselves:

    - name: reporting                  # who: appears in logs and error messages
      token_sha256: 9f86d08...          # hex sha256 of the token's UTF-8 bytes
      projects: ["shop"]                # or ["*"]
      databases: ["*"]                  # "" or "(default)" is the default database
      access: read                      # read | write (write includes read)

(a top-level mapping `{"tokens": [...]}` works too). The file is read at start (a file
that does not parse stops the node) and read again when it changes on disk, so a
mounted Secret can be updated without a restart; a changed file that does not parse
is logged and the previous grants stay.

`check` is called by the gRPC edge after parsing, before any work: no token or an
unknown token is UNAUTHENTICATED; a token outside its scope is PERMISSION_DENIED.
Writes are: a Commit with mutations, AllocateIds, ReserveIds, and beginning a
read-write transaction (BeginTransaction, or `new_transaction` in read options).
Hashes are compared in constant time, against every grant (no early exit).

Imports nothing from zonestore and no grpc: the edge maps `Denied` to a status.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zonestore_node.filewatch import RELOAD_EVERY_S, Watched

log = logging.getLogger("zonestore.auth")

DEFAULT_DATABASE_NAMES = frozenset({"", "(default)"})


class Access(enum.Enum):
    READ = "read"
    WRITE = "write"


class Denied(Exception):
    """`unauthenticated`: no valid token (UNAUTHENTICATED); else PERMISSION_DENIED."""

    def __init__(self, unauthenticated: bool, message: str) -> None:
        super().__init__(message)
        self.unauthenticated = unauthenticated
        self.message = message


@dataclass(frozen=True, slots=True)
class Grant:
    name: str
    token_sha256: bytes  # 32 bytes
    projects: frozenset[str]  # "*" for all
    databases: frozenset[str]  # "*" for all; "" is the default database
    access: Access

    def covers_project(self, project: str) -> bool:
        return "*" in self.projects or project in self.projects

    def covers_database(self, database: str) -> bool:
        if "*" in self.databases:
            return True
        if database in DEFAULT_DATABASE_NAMES:
            return bool(self.databases & DEFAULT_DATABASE_NAMES)
        return database in self.databases


def _strings(entry: dict[str, Any], field: str, where: str) -> frozenset[str]:
    value = entry.get(field, ["*"] if field == "databases" else None)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f'{where}: {field} must be a non-empty list of strings (or ["*"])')
    return frozenset(value)


def parse_grants(text: str) -> list[Grant]:
    """Parse a token file (YAML is a superset of JSON). Raises ValueError on anything odd."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"the token file does not parse: {exc}") from None
    if isinstance(doc, dict):
        doc = doc.get("tokens")
    if not isinstance(doc, list):
        raise ValueError("the token file must hold a list of tokens (or {tokens: [...]})")
    grants = []
    for i, entry in enumerate(doc):
        where = f"token #{i + 1}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be a mapping")
        if "token" in entry:
            raise ValueError(f"{where}: holds a plaintext token; store only token_sha256")
        name = str(entry.get("name") or where)
        digest = str(entry.get("token_sha256", "")).strip().lower()
        try:
            raw = bytes.fromhex(digest)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError(f"{name}: token_sha256 must be 64 hex digits")
        access = entry.get("access", "read")
        try:
            level = Access(access)
        except ValueError:
            raise ValueError(f"{name}: access must be read or write, not {access!r}") from None
        grants.append(
            Grant(
                name,
                raw,
                _strings(entry, "projects", name),
                _strings(entry, "databases", name),
                level,
            )
        )
    return grants


def hash_token(token: str) -> str:
    """What goes into `token_sha256` for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def needs_write(method: str, request: Any) -> bool:
    """Whether serving `request` writes (or may: a read-write transaction)."""
    if method in ("AllocateIds", "ReserveIds"):
        return True
    if method == "Commit":
        return len(request.mutations) > 0
    if method == "BeginTransaction":
        return bool(request.transaction_options.WhichOneof("mode") != "read_only")
    if method in ("Lookup", "RunQuery", "RunAggregationQuery"):
        options = request.read_options
        if options.WhichOneof("consistency_type") == "new_transaction":
            return bool(options.new_transaction.WhichOneof("mode") != "read_only")
    return False


class TokenAuth:
    """The grants of one token file, read again when the file changes."""

    def __init__(
        self,
        path: Path,
        reload_every: float = RELOAD_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        # a bad file stops the node; a bad update keeps the previous grants
        self._grants = Watched([path], lambda: parse_grants(path.read_text()), "auth.tokens",
                               reload_every, clock)  # fmt: skip
        log.info("auth.tokens_loaded tokens=%d file=%s", len(self.grants), path)

    @property
    def grants(self) -> list[Grant]:
        return self._grants.current()

    def identify(self, token: str | None) -> Grant:
        if token is None:
            raise Denied(
                True,
                "This server requires authentication: send 'authorization: Bearer <token>' "
                "metadata (configure the client with credentials).",
            )
        digest = hashlib.sha256(token.encode()).digest()
        found: Grant | None = None
        for grant in self.grants:  # every grant is compared: no early exit
            if hmac.compare_digest(digest, grant.token_sha256) and found is None:
                found = grant
        if found is None:
            raise Denied(True, "The bearer token is not valid.")
        return found

    def check(self, method: str, request: Any, project: str, database: str, metadata: Any) -> Grant:
        grant = self.identify(bearer(metadata))
        if not project:
            return grant  # the handler refuses a request without a project_id
        if not grant.covers_project(project):
            raise Denied(False, f"Token '{grant.name}' has no access to project '{project}'.")
        if not grant.covers_database(database):
            shown = database or "(default)"
            raise Denied(
                False,
                f"Token '{grant.name}' has no access to database '{shown}' of project '{project}'.",
            )
        if grant.access is Access.READ and needs_write(method, request):
            raise Denied(False, f"Token '{grant.name}' is read-only; {method} needs write access.")
        return grant
