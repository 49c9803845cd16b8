"""The operator chart, installed for real with helm: CRDs from the chart's crds/, the
operator as a pod on the process kubelets, running under the chart's own RBAC."""

from __future__ import annotations

import os
import shutil
import subprocess

from zonestore_e2e.cluster import ROOT, ApiAccess

HELM = os.environ.get("ZONESTORE_HELM") or shutil.which("helm") or ""
CHART = ROOT / "charts" / "zonestore-operator"
OPERATOR_NS = "zonestore-system"
RELEASE = "zonestore-operator"


class InstallError(RuntimeError):
    pass


def helm(
    cluster: ApiAccess, *args: str, timeout_s: float = 240
) -> subprocess.CompletedProcess[str]:
    argv = [HELM, *args, "--kubeconfig", str(cluster.admin_kubeconfig)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)


def install_operator(cluster: ApiAccess) -> None:
    """Into a namespace that enforces the `restricted` Pod Security Standard: the
    operator's pod and the chart's test pod must pass the real PodSecurity admission."""
    status, body = cluster.request(
        "POST",
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": OPERATOR_NS,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
        },
    )
    if status not in (201, 409):
        raise InstallError(f"namespace {OPERATOR_NS}: {status} {body}")
    proc = helm(
        cluster,
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        OPERATOR_NS,
        "--set",
        "reconcileIntervalSeconds=3",
        "--set",
        "verbose=true",
        "--wait",
        "--timeout",
        "180s",
    )
    if proc.returncode != 0:
        raise InstallError(
            f"helm install failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
