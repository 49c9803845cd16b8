"""Application pods: a one-shot Pod in a scenario's namespace, as an application team
would run a client, and its outcome (phase, exit code, log). The pod meets the
`restricted` Pod Security Standard, so the scenario namespaces admit it.

The process kubelets serve no logs endpoint: the log is read from the file the pod's
kubelet keeps (`<workdir>/nodes/<node>/logs/<ns>_<pod>_<uid>/<container>.log`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zonestore_e2e.cluster import Cluster, wait_for

CONTAINER = "app"


@dataclass(frozen=True)
class Outcome:
    phase: str
    exit_code: int | None
    log: str


def pod_manifest(
    name: str,
    namespace: str,
    image: str,
    command: list[str],
    env: dict[str, str],
    working_dir: str | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "command": command,
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if working_dir:
        container["workingDir"] = working_dir
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
        },
    }


def _log(cluster: Cluster, pod: dict[str, Any]) -> str:
    meta = pod["metadata"]
    node = str(pod["spec"]["nodeName"])
    folder = f"{meta['namespace']}_{meta['name']}_{meta['uid']}"
    path: Path = cluster.workdir / "nodes" / node / "logs" / folder / f"{CONTAINER}.log"
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"


def run_to_completion(cluster: Cluster, manifest: dict[str, Any], timeout_s: float) -> Outcome:
    """Create the pod, wait until it Succeeded or Failed, return what it left."""
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    pods = f"/api/v1/namespaces/{namespace}/pods"
    code, answer = cluster.request("POST", pods, manifest)
    if code != 201:
        raise AssertionError(f"pod {namespace}/{name} not created: {code} {answer}")

    def finished() -> dict[str, Any] | None:
        code, pod = cluster.request("GET", f"{pods}/{name}")
        phase = (pod.get("status") or {}).get("phase") if code == 200 else None
        return pod if phase in ("Succeeded", "Failed") else None

    pod = wait_for(f"pod {namespace}/{name} to finish", finished, timeout_s, 1.0)
    exit_code = None
    for status in pod["status"].get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if status["name"] == CONTAINER and terminated is not None:
            exit_code = int(terminated["exitCode"])
    return Outcome(str(pod["status"]["phase"]), exit_code, _log(cluster, pod))
