"""The node pod template against the Kubernetes "restricted" Pod Security Standard
(https://kubernetes.io/docs/concepts/security/pod-security-standards/), checked rule by
rule here rather than trusted to an admission controller, plus the Secret mounts and
the node flags that point into them."""

from __future__ import annotations

from typing import Any

import pytest

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import parse_spec
from zonestore_operator.resources import statefulset

REF = DatastoreRef(name="orders", namespace="shop", uid="u")
ZONES = ["zone-a", "zone-b", "zone-c"]
SPECS = {
    "default": parse_spec({"zones": ZONES}),
    "everything": parse_spec(
        {
            "zones": ZONES,
            "security": {
                "clientTLS": {"enabled": True},
                "clientAuth": {
                    "mode": "Tokens",
                    "tokensSecretName": "orders-tokens",
                    "tokensSecretKey": "t.yaml",
                },
            },
        }
    ),
    "nothing": parse_spec(
        {
            "zones": ZONES,
            "security": {
                "peerTLS": {"enabled": False},
                "clientAuth": {"mode": "None"},
                "networkPolicy": {"enabled": False},
            },
        }
    ),
}
# Baseline + restricted: the volume types a restricted pod may use.
ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
                         "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID",
                         "SYS_CHROOT"}  # fmt: skip


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Every rule of the restricted profile (v1.30) the pod spec breaks."""
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    containers = [
        *pod.get("initContainers", []),
        *pod.get("containers", []),
        *pod.get("ephemeralContainers", []),
    ]
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            out.append(f"{flag} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if kinds - ALLOWED_VOLUMES:
            out.append(f"volume {volume['name']} is of type {sorted(kinds)}")
    for sysctl in psc.get("sysctls", []):
        out.append(f"sysctl {sysctl['name']}")
    if psc.get("runAsUser") == 0:
        out.append("pod runs as uid 0")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    for c in containers:
        name = c["name"]
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        if not (sc.get("runAsNonRoot") is True or psc.get("runAsNonRoot") is True):
            out.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsNonRoot") is False:
            out.append(f"{name}: runAsNonRoot false")
        if sc.get("runAsUser") == 0:
            out.append(f"{name}: runs as uid 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: adds capabilities {caps['add']}")
        if set(caps.get("add") or []) - BASELINE_CAPABILITIES:
            out.append(f"{name}: adds non-baseline capabilities")
        if (sc.get("procMount") or "Default") != "Default":
            out.append(f"{name}: procMount")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            out.append(f"{name}: AppArmor unconfined")
        se = sc.get("seLinuxOptions") or {}
        if se.get("type") not in (None, "", "container_t", "container_init_t", "container_kvm_t"):
            out.append(f"{name}: seLinux type")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                out.append(f"{name}: hostPort {port['hostPort']}")
    return out


def _pod(name: str) -> dict[str, Any]:
    return statefulset.statefulset(REF, SPECS[name], "zone-a", 1)["spec"]["template"]["spec"]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_node_pod_meets_the_restricted_pod_security_standard(name: str) -> None:
    assert restricted_violations(_pod(name)) == []


def test_the_checker_catches_each_kind_of_violation() -> None:
    pod = _pod("default")
    pod["hostNetwork"] = True
    pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    sc = pod["containers"][0]["securityContext"]
    sc.update(privileged=True, allowPrivilegeEscalation=True, runAsNonRoot=False)
    sc["capabilities"] = {"add": ["SYS_ADMIN"]}
    sc["seccompProfile"] = {"type": "Unconfined"}
    pod["securityContext"]["runAsNonRoot"] = False
    found = " ".join(restricted_violations(pod))
    for needle in (
        "hostNetwork",
        "hostPath",
        "privileged",
        "allowPrivilegeEscalation",
        "runAsNonRoot",
        "seccompProfile",
        "drop ALL",
        "adds capabilities",
    ):
        assert needle in found, needle


def test_root_filesystem_is_read_only_and_tmp_is_an_empty_dir() -> None:
    pod = _pod("default")
    [container] = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] != 0


@pytest.mark.parametrize("name", sorted(SPECS))
def test_secrets_are_mounted_read_only_as_whole_volumes_so_updates_reach_the_node(
    name: str,
) -> None:
    pod = _pod(name)
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in pod["containers"][0]["volumeMounts"]:
        volume = volumes.get(mount["name"])
        if volume is not None and "secret" in volume:
            assert mount["readOnly"] is True
            assert "subPath" not in mount  # a subPath mount never sees a rotation
            assert volume["secret"]["defaultMode"] == 0o440


def test_every_file_flag_points_into_a_mounted_secret() -> None:
    pod = _pod("everything")
    [container] = pod["containers"]
    args = container["args"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret_of = {
        m["mountPath"]: volumes[m["name"]]["secret"]["secretName"]
        for m in container["volumeMounts"]
        if m["name"] in volumes and "secret" in volumes[m["name"]]
    }
    expected = {
        "--admin-token-file": ("orders-admin-token", "token"),
        "--peer-tls-cert": ("orders-peer-tls", "tls.crt"),
        "--peer-tls-key": ("orders-peer-tls", "tls.key"),
        "--peer-tls-ca": ("orders-peer-tls", "ca.crt"),
        "--client-tls-cert": ("orders-client-tls", "tls.crt"),
        "--client-tls-key": ("orders-client-tls", "tls.key"),
        "--auth-tokens": ("orders-tokens", "t.yaml"),
    }
    for flag, (secret, key) in expected.items():
        path = args[args.index(flag) + 1]
        directory, file = path.rsplit("/", 1)
        assert (secret_of[directory], file) == (secret, key), flag
    assert "--client-tls-ca" not in args  # clients authenticate with tokens, not certs


def test_without_peer_tls_or_client_security_only_the_admin_token_is_passed() -> None:
    args = _pod("nothing")["containers"][0]["args"]
    flags = [a for a in args if a.startswith("--") and ("tls" in a or "token" in a or "auth" in a)]
    assert flags == ["--admin-token-file"]
