"""Identity of the Datastore being reconciled: what owner references and names need."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DatastoreRef:
    name: str
    namespace: str
    uid: str
    generation: int = 0

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DatastoreRef:
        meta = body.get("metadata", {})
        return cls(
            name=str(meta["name"]),
            namespace=str(meta.get("namespace", "default")),
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation", 0) or 0),
        )
