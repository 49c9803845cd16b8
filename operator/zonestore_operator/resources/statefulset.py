"""The per-zone StatefulSet: `replicas` node pods pinned to one zone.

- Node affinity (required) to `spec.topologyKey` = zone; pod anti-affinity (preferred) on
  the hostname among this Datastore's pods, so replicas of a zone land on different nodes
  when they can but a zone with fewer nodes still runs.
- `updateStrategy: OnDelete`: the operator decides when each pod restarts (learners
  first, the leader last after moving leadership), not the StatefulSet controller.
- `podManagementPolicy: Parallel`: a pod that cannot start must not block its siblings
  (OrderedReady would stall bootstrap, which needs every initial member up).
- The container runs `zonestore serve` through a two-line shell wrapper whose only job is
  to choose between bootstrapping and `--join`: a pod bootstraps only when the ConfigMap
  says the group is new and the pod is one of the initial members. Everything else about
  the command line is fixed here, in the builder, and tested.
- Security (spec.security): Secrets are mounted read-only as whole volumes, never with
  subPath, so the kubelet's atomic update reaches the node, which reloads the files
  (certificate rotation needs no restart):
    /etc/zonestore/peer-tls     <name>-peer-tls    --peer-tls-cert/--peer-tls-key/--peer-tls-ca
    /etc/zonestore/admin        <name>-admin-token --admin-token-file
    /etc/zonestore/client-tls   client TLS Secret  --client-tls-cert/--client-tls-key
    /etc/zonestore/auth         clientAuth Secret  --auth-tokens (mode Tokens, the default)
  The generated `<name>-client-tokens` is mounted with only its `tokens` file projected:
  the plaintext token (key `token`) is for applications and never reaches the node pods.
  The pod meets the "restricted" Pod Security Standard: non-root user 65532 (fsGroup
  too, so the data volume and the 0440 Secret files are readable), no privilege
  escalation, every capability dropped, RuntimeDefault seccomp, read-only root
  filesystem with an emptyDir at /tmp.
- Backups (resources.backup): --archive-to and the object store's AWS_* environment
  when spec.backup.archiving is on; the `zonestore restore` init container in the first
  zone when spec.bootstrap.recovery is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import DatastoreSpec
from zonestore_operator.resources import backup, memory, meta, security

DATA_DIR = "/var/lib/zonestore"
CONTAINER = "zonestore"
VOLUME = "data"
USER_ID = 65532  # the image's non-root user (the chart runs the operator as the same)

PEER_TLS_DIR = "/etc/zonestore/peer-tls"
ADMIN_TOKEN_DIR = "/etc/zonestore/admin"
CLIENT_TLS_DIR = "/etc/zonestore/client-tls"
AUTH_TOKENS_DIR = "/etc/zonestore/auth"
TMP_DIR = "/tmp"
SECRET_MODE = 0o440  # owner root, group fsGroup: readable by the node, by nobody else

# Chooses --join unless the group is being bootstrapped and this pod is an initial member.
# ZONESTORE_INITIAL_CLUSTER and ZONESTORE_CLUSTER_STATE come from the ConfigMap.
BOOT_SCRIPT = """\
join=--join
if [ "$ZONESTORE_CLUSTER_STATE" = new ]; then
  case ",$ZONESTORE_INITIAL_CLUSTER" in *",$POD_NAME="*) join= ;; esac
fi
exec "$@" $join
"""


def serve_command(ref: DatastoreRef, spec: DatastoreSpec, zone: str) -> list[str]:
    """The node's command line; `$(VAR)` is expanded by the kubelet from the env."""
    ports = spec.ports
    advertise = f"$(POD_NAME).{meta.peers_service_name(ref)}.{ref.namespace}.svc:{ports.peer}"
    return [
        "zonestore",
        "serve",
        "--node-id",
        "$(POD_NAME)",
        "--zone",
        zone,
        "--data-dir",
        DATA_DIR,
        "--client-addr",
        f"0.0.0.0:{ports.client}",
        "--admin-addr",
        f"0.0.0.0:{ports.admin}",
        "--peer-addr",
        f"0.0.0.0:{ports.peer}",
        "--advertise-peer-addr",
        advertise,
        "--initial-cluster",
        "$(ZONESTORE_INITIAL_CLUSTER)",
        *security_args(spec),
        *memory.budget_args(spec),
        *backup.archive_args(spec),
    ]


def security_args(spec: DatastoreSpec) -> list[str]:
    """The node flags for spec.security; paths point into the Secret volumes."""
    sec = spec.security
    args = ["--admin-token-file", f"{ADMIN_TOKEN_DIR}/{security.ADMIN_TOKEN}"]
    if sec.peer_tls:
        args += [
            "--peer-tls-cert",
            f"{PEER_TLS_DIR}/{security.TLS_CERT}",
            "--peer-tls-key",
            f"{PEER_TLS_DIR}/{security.TLS_KEY}",
            "--peer-tls-ca",
            f"{PEER_TLS_DIR}/{security.CA_CERT}",
        ]
    if sec.client_tls.enabled:
        args += [
            "--client-tls-cert",
            f"{CLIENT_TLS_DIR}/{security.TLS_CERT}",
            "--client-tls-key",
            f"{CLIENT_TLS_DIR}/{security.TLS_KEY}",
        ]
    if sec.client_auth.enabled:
        args += ["--auth-tokens", f"{AUTH_TOKENS_DIR}/{_tokens_file_key(spec)}"]
    return args


def runs_peer_tls(pod: Mapping[str, Any]) -> bool | None:
    """Whether a node pod (a raw Pod object) was started with peer TLS: its zonestore
    container passes --peer-tls-cert. None: no such container (not one of ours)."""
    for container in (pod.get("spec") or {}).get("containers") or ():
        if isinstance(container, Mapping) and container.get("name") == CONTAINER:
            return "--peer-tls-cert" in (container.get("args") or ())
    return None


def _tokens_file_key(spec: DatastoreSpec) -> str:
    auth = spec.security.client_auth
    return security.CLIENT_TOKENS_FILE if auth.operator_tokens else auth.tokens_secret_key


def _secret_volume(name: str, secret_name: str) -> dict[str, Any]:
    return {"name": name, "secret": {"secretName": secret_name, "defaultMode": SECRET_MODE}}


def volumes(ref: DatastoreRef, spec: DatastoreSpec) -> tuple[list[Any], list[Any]]:
    """(pod volumes, container mounts) besides the data claim."""
    sec = spec.security
    vols: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        _secret_volume("admin-token", meta.admin_token_secret_name(ref)),
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": TMP_DIR},
        {"name": "admin-token", "mountPath": ADMIN_TOKEN_DIR, "readOnly": True},
    ]
    if sec.peer_tls:
        vols.append(_secret_volume("peer-tls", meta.peer_tls_secret_name(ref)))
        mounts.append({"name": "peer-tls", "mountPath": PEER_TLS_DIR, "readOnly": True})
    if sec.client_tls.enabled:
        vols.append(_secret_volume("client-tls", meta.client_tls_secret_name(ref, spec)))
        mounts.append({"name": "client-tls", "mountPath": CLIENT_TLS_DIR, "readOnly": True})
    if sec.client_auth.enabled:
        tokens = _secret_volume("auth-tokens", meta.client_tokens_secret_name(ref, spec))
        if sec.client_auth.operator_tokens:
            key = security.CLIENT_TOKENS_FILE
            tokens["secret"]["items"] = [{"key": key, "path": key}]
        vols.append(tokens)
        mounts.append({"name": "auth-tokens", "mountPath": AUTH_TOKENS_DIR, "readOnly": True})
    return vols, mounts


POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": USER_ID,
    "runAsGroup": USER_ID,
    "fsGroup": USER_ID,
    "fsGroupChangePolicy": "OnRootMismatch",
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "privileged": False,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _env(ref: DatastoreRef, zone: str) -> list[dict[str, Any]]:
    cm = meta.configmap_name(ref)
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "ZONESTORE_ZONE", "value": zone},
        {"name": "ZONESTORE_DATA_DIR", "value": DATA_DIR},
        {
            "name": "ZONESTORE_INITIAL_CLUSTER",
            "valueFrom": {"configMapKeyRef": {"name": cm, "key": "initial-cluster"}},
        },
        {
            "name": "ZONESTORE_CLUSTER_STATE",
            "valueFrom": {"configMapKeyRef": {"name": cm, "key": "cluster-state"}},
        },
        # The root filesystem is read-only: no bytecode files, home and temp in /tmp.
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        {"name": "HOME", "value": TMP_DIR},
    ]


def _probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def pod_labels(ref: DatastoreRef, spec: DatastoreSpec, zone: str) -> dict[str, str]:
    # User labels first: ours win, so a podLabels entry cannot break the selectors.
    return {**spec.pod_labels, **meta.labels(ref), meta.L_ZONE: zone}


def pod_annotations(spec: DatastoreSpec) -> dict[str, str]:
    out = dict(spec.pod_annotations)
    if spec.monitoring.scrape_annotations:
        out.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(spec.ports.admin),
                "prometheus.io/path": "/metrics",
            }
        )
    return out


def statefulset(ref: DatastoreRef, spec: DatastoreSpec, zone: str, replicas: int) -> dict[str, Any]:
    """The StatefulSet for `zone` with `replicas` pods (the planner decides the count:
    spec.replicasPerZone, plus replacements during a failover, plus any pod still
    holding a vote that must be demoted before it may go)."""
    selector = {**meta.selector_labels(ref), meta.L_ZONE: zone}
    ports = spec.ports
    extra_volumes, extra_mounts = volumes(ref, spec)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy.value,
        "command": ["/bin/sh", "-c", BOOT_SCRIPT, "zonestore-boot"],
        "args": serve_command(ref, spec, zone),
        "env": [*_env(ref, zone), *backup.archive_env(spec)],
        "ports": [
            {"name": "client", "containerPort": ports.client, "protocol": "TCP"},
            {"name": "admin", "containerPort": ports.admin, "protocol": "TCP"},
            {"name": "peer", "containerPort": ports.peer, "protocol": "TCP"},
        ],
        "readinessProbe": _probe("/readyz", ports.admin, period=5, failures=3),
        "livenessProbe": _probe("/healthz", ports.admin, period=10, failures=6),
        "startupProbe": _probe("/healthz", ports.admin, period=5, failures=60),
        "volumeMounts": [{"name": VOLUME, "mountPath": DATA_DIR}, *extra_mounts],
        "securityContext": dict(CONTAINER_SECURITY_CONTEXT),
    }
    if spec.resources:
        container["resources"] = {k: dict(v) for k, v in spec.resources.items()}
    restore = backup.restore_init_container(ref, spec, zone, container, DATA_DIR)
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage.size}},
    }
    if spec.storage.storage_class_name:
        claim_spec["storageClassName"] = spec.storage.storage_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta.object_meta(
            ref, meta.statefulset_name(ref, zone), meta.COMPONENT_NODE, {meta.L_ZONE: zone}
        ),
        "spec": {
            "serviceName": meta.peers_service_name(ref),
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": spec.pvc_retention.when_deleted.value,
                "whenScaled": spec.pvc_retention.when_scaled.value,
            },
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": pod_labels(ref, spec, zone),
                    "annotations": pod_annotations(spec),
                },
                "spec": {
                    "serviceAccountName": meta.service_account_name(ref),
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": dict(POD_SECURITY_CONTEXT),
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {
                                                "key": spec.topology_key,
                                                "operator": "In",
                                                "values": [zone],
                                            }
                                        ]
                                    }
                                ]
                            }
                        },
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "labelSelector": {"matchLabels": selector},
                                        "topologyKey": "kubernetes.io/hostname",
                                    },
                                }
                            ]
                        },
                    },
                    **({"initContainers": [restore]} if restore else {}),
                    "containers": [container],
                    "volumes": extra_volumes,
                },
            },
            "volumeClaimTemplates": [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": VOLUME, "labels": selector},
                    "spec": claim_spec,
                }
            ],
        },
    }
