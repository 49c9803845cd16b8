"""Builders for a Datastore's security objects: the certificate and token Secrets, the
cert-manager Certificates (issuer certManager), and the NetworkPolicy of its node pods.

Secrets and their keys (all owned by the Datastore, deleted with it):
  <name>-ca           Opaque             ca.crt, ca.key   the operator's CA; never mounted
  <name>-peer-tls     kubernetes.io/tls  tls.crt, tls.key, ca.crt   peer mutual TLS
  <name>-client-tls   kubernetes.io/tls  tls.crt, tls.key, ca.crt   client API TLS (unless
                                                          clientTLS.secretName names yours)
  <name>-admin-token  Opaque             token            64 hex chars (32 random bytes)
  <name>-client-tokens Opaque            token, tokens    clientAuth mode Tokens without
                                                          tokensSecretName: one read-write
                                                          token (64 hex chars) for every
                                                          project and database, and the
                                                          node's --auth-tokens file, which
                                                          holds only its sha256

The NetworkPolicy (`<name>-nodes`, ingress only) lets in:
  peer port    the Datastore's own pods
  admin port   the operator's pods (label app.kubernetes.io/name=zonestore-operator, the
               Helm chart's, in the operator's namespace when it is known) and Prometheus
               (networkPolicy.monitoring*Selector: /metrics is served on the admin port)
  client port  networkPolicy.client*Selector; neither set: the Datastore's namespace
Kubelet probes are not affected: traffic from the pod's own node is always allowed.

Pure: randomness comes in as `entropy`. May import `model` and `resources` only.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import DatastoreSpec, LabelSelector
from zonestore_operator.resources import meta
from zonestore_operator.resources.certs import Entropy, KeyPair

CLUSTER_DOMAIN = "cluster.local"
# The Helm chart's selector label for the operator's pods (templates/_helpers.tpl).
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "zonestore-operator"}
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
ADMIN_TOKEN = "token"
ADMIN_TOKEN_BYTES = 32
CLIENT_TOKEN = "token"  # the bearer token applications send
CLIENT_TOKENS_FILE = "tokens"  # the node's --auth-tokens file (sha256 hashes only)
CLIENT_TOKEN_BYTES = 32
CLIENT_TOKEN_GRANT = "default"  # the grant's name in the file (node logs and errors)

TYPE_TLS = "kubernetes.io/tls"
TYPE_OPAQUE = "Opaque"
CERT_MANAGER_API = "cert-manager.io/v1"


def _service_names(service: str, namespace: str) -> list[str]:
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{CLUSTER_DOMAIN}",
    ]


def peer_dns_names(ref: DatastoreRef, spec: DatastoreSpec) -> list[str]:
    """Every pod's name under the headless Service (`<pod>.<name>-peers.<ns>.svc`, the
    address replicas dial), the wildcard over it (replacement and scaled-up pods), and
    the same under the cluster domain, plus the Service's own names."""
    peers = meta.peers_service_name(ref)
    domain = f"{peers}.{ref.namespace}.svc"
    pods = [
        meta.pod_name(ref, zone, i) for zone in spec.zones for i in range(spec.replicas_per_zone)
    ]
    return [
        f"*.{domain}",
        f"*.{domain}.{CLUSTER_DOMAIN}",
        *(f"{pod}.{domain}" for pod in pods),
        *(f"{pod}.{domain}.{CLUSTER_DOMAIN}" for pod in pods),
        *_service_names(peers, ref.namespace),
    ]


def client_dns_names(ref: DatastoreRef, spec: DatastoreSpec) -> list[str]:
    """The client Services (all, leader, readonly) and every pod directly."""
    peers = meta.peers_service_name(ref)
    return [
        *_service_names(meta.client_service_name(ref), ref.namespace),
        *_service_names(meta.leader_service_name(ref), ref.namespace),
        *_service_names(meta.readonly_service_name(ref), ref.namespace),
        f"*.{peers}.{ref.namespace}.svc",
        f"*.{peers}.{ref.namespace}.svc.{CLUSTER_DOMAIN}",
    ]


def secret(
    ref: DatastoreRef, name: str, component: str, data: Mapping[str, bytes], type_: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta.object_meta(ref, name, component),
        "type": type_,
        "data": {k: base64.b64encode(v).decode() for k, v in sorted(data.items())},
    }


def decode_data(raw: Mapping[str, Any] | None) -> dict[str, bytes]:
    """A Secret's `data` as bytes (what `secret` encodes); undecodable entries dropped."""
    out: dict[str, bytes] = {}
    for k, v in (raw or {}).items():
        try:
            out[str(k)] = base64.b64decode(v, validate=True)
        except (ValueError, TypeError):
            continue
    return out


def ca_secret(ref: DatastoreRef, ca: KeyPair) -> dict[str, Any]:
    return secret(
        ref,
        meta.ca_secret_name(ref),
        "ca",
        {CA_CERT: ca.cert_pem, CA_KEY: ca.key_pem},
        TYPE_OPAQUE,
    )


def tls_secret(
    ref: DatastoreRef, name: str, component: str, leaf: KeyPair, ca_cert_pem: bytes
) -> dict[str, Any]:
    return secret(
        ref,
        name,
        component,
        {TLS_CERT: leaf.cert_pem, TLS_KEY: leaf.key_pem, CA_CERT: ca_cert_pem},
        TYPE_TLS,
    )


def admin_token_secret(ref: DatastoreRef, entropy: Entropy) -> dict[str, Any]:
    token = entropy(ADMIN_TOKEN_BYTES).hex().encode()
    return secret(
        ref, meta.admin_token_secret_name(ref), "admin-token", {ADMIN_TOKEN: token}, TYPE_OPAQUE
    )


def client_tokens_file(token: str) -> bytes:
    """The node's token file (zonestore_node.api.auth) granting `token` read-write access
    to every project and database. YAML, written by hand so that it is byte-stable."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    return (
        "# zonestore --auth-tokens file, generated by the zonestore operator. The token\n"
        "# itself is under the key 'token' of this Secret; add grants below if you like:\n"
        "# the operator never rewrites this Secret.\n"
        "tokens:\n"
        f"  - name: {CLIENT_TOKEN_GRANT}\n"
        f"    token_sha256: {digest}\n"
        '    projects: ["*"]\n'
        '    databases: ["*"]\n'
        "    access: write\n"
    ).encode()


def client_tokens_secret(
    ref: DatastoreRef, spec: DatastoreSpec, entropy: Entropy
) -> dict[str, Any]:
    token = entropy(CLIENT_TOKEN_BYTES).hex()
    return secret(
        ref,
        meta.client_tokens_secret_name(ref, spec),
        "client-tokens",
        {CLIENT_TOKEN: token.encode(), CLIENT_TOKENS_FILE: client_tokens_file(token)},
        TYPE_OPAQUE,
    )


def certificate(
    ref: DatastoreRef,
    spec: DatastoreSpec,
    name: str,
    secret_name: str,
    dns_names: Sequence[str],
    component: str,
) -> dict[str, Any]:
    """A cert-manager Certificate (issuer certManager): cert-manager writes tls.crt,
    tls.key and (for CA-backed issuers) ca.crt into `secret_name` and renews it
    `rotateBeforeExpiry` before it expires, with a fresh key each time."""
    certs = spec.security.certificates
    issuer = certs.cert_manager_issuer_ref
    assert issuer is not None  # parse_spec requires it for certManager
    return {
        "apiVersion": CERT_MANAGER_API,
        "kind": "Certificate",
        "metadata": meta.object_meta(ref, name, component),
        "spec": {
            "secretName": secret_name,
            "secretTemplate": {"labels": meta.labels(ref, component)},
            "dnsNames": list(dns_names),
            "duration": f"{int(certs.validity.total_seconds())}s",
            "renewBefore": f"{int(certs.rotate_before_expiry.total_seconds())}s",
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["digital signature", "key agreement", "server auth", "client auth"],
            "issuerRef": {"name": issuer.name, "kind": issuer.kind, "group": issuer.group},
        },
    }


def _peer(
    namespace_selector: LabelSelector | None, pod_selector: LabelSelector | None
) -> dict[str, Any]:
    peer: dict[str, Any] = {}
    if namespace_selector is not None:
        peer["namespaceSelector"] = dict(namespace_selector)
    if pod_selector is not None:
        peer["podSelector"] = dict(pod_selector)
    return peer


def _port(port: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port}]


def network_policy(
    ref: DatastoreRef, spec: DatastoreSpec, operator_namespace: str | None
) -> dict[str, Any]:
    """`operator_namespace` None (unknown): operator pods are matched in any namespace."""
    np = spec.security.network_policy
    operator: dict[str, Any] = {"podSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)}}
    operator["namespaceSelector"] = (
        {"matchLabels": {NAMESPACE_NAME_LABEL: operator_namespace}} if operator_namespace else {}
    )
    admin_from = [operator]
    if np.monitoring_namespace_selector is not None or np.monitoring_pod_selector is not None:
        admin_from.append(_peer(np.monitoring_namespace_selector, np.monitoring_pod_selector))
    if np.client_namespace_selector is None and np.client_pod_selector is None:
        client_from: list[dict[str, Any]] = [
            {"podSelector": {}}
        ]  # every pod of the Datastore's namespace
    else:
        client_from = [_peer(np.client_namespace_selector, np.client_pod_selector)]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta.object_meta(ref, meta.network_policy_name(ref), "network-policy"),
        "spec": {
            "podSelector": {"matchLabels": meta.selector_labels(ref)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "ports": _port(spec.ports.peer),
                    "from": [{"podSelector": {"matchLabels": meta.selector_labels(ref)}}],
                },
                {"ports": _port(spec.ports.admin), "from": admin_from},
                {"ports": _port(spec.ports.client), "from": client_from},
            ],
        },
    }
