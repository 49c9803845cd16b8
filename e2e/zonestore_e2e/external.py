"""A cluster someone else runs — a kind cluster for `make e2e-kind` — reached through its
kubeconfig. It has the API access of the process cluster but none of its levers (no
kubelets to kill, no bridges to cut, pod IPs not routable from the test process), so the
scenarios marked `process_cluster` are deselected against it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from zonestore_e2e.cluster import ApiAccess, NodeSpec

ZONE_LABEL = "topology.kubernetes.io/zone"


class ExternalCluster(ApiAccess):
    def __init__(self, kubeconfig: Path, workdir: Path) -> None:
        super().__init__()
        self._kubeconfig = kubeconfig
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._server, self._cert, self._ca = self._credentials_from(kubeconfig)
        self.nodes: list[NodeSpec] = []
        self.zones: tuple[str, ...] = ()
        self.refresh_nodes()

    @property
    def admin_kubeconfig(self) -> Path:
        return self._kubeconfig

    def endpoint(self) -> tuple[str, tuple[str, str], str]:
        return self._server, self._cert, self._ca

    def _credentials_from(self, path: Path) -> tuple[str, tuple[str, str], str]:
        """The current context's server, client certificate and CA, as files."""
        cfg: Any = yaml.safe_load(path.read_text())
        ctx_name = cfg["current-context"]
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])

        def file_of(entry: dict[str, Any], key: str, name: str) -> str:
            if f"{key}-data" in entry:
                out = self.workdir / name
                out.write_bytes(base64.b64decode(entry[f"{key}-data"]))
                out.chmod(0o600)
                return str(out)
            return str(entry[key])

        return (
            str(cluster["server"]),
            (
                file_of(user, "client-certificate", "client.crt"),
                file_of(user, "client-key", "client.key"),
            ),
            file_of(cluster, "certificate-authority", "ca.crt"),
        )

    def refresh_nodes(self) -> None:
        status, listing = self.request("GET", "/api/v1/nodes")
        if status != 200:
            raise RuntimeError(f"listing nodes failed: {status} {listing}")
        zoned = sorted(
            (n["metadata"]["labels"][ZONE_LABEL], n["metadata"]["name"])
            for n in listing["items"]
            if ZONE_LABEL in n["metadata"].get("labels", {})
        )
        self.zones = tuple(sorted({z for z, _ in zoned}))
        self.nodes = [
            NodeSpec(name, zone, self.zones.index(zone), i) for i, (zone, name) in enumerate(zoned)
        ]

    def restore_all(self) -> None:
        """Nothing to mend: no fault levers are pulled on an external cluster."""

    def describe_processes(self) -> str:
        return "(external cluster: process logs are the cluster's own, e.g. `kind export logs`)"
