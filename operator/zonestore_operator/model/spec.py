"""The Datastore spec as frozen values, parsed from the custom resource's `spec` dict.

`parse_spec` applies the same defaults as the CRD's schema (crds/datastore.yaml) and the
same validations as its CEL rules, so that a spec that reached the API server and one read
from a file (tests, dry runs) give the same `DatastoreSpec`. Errors name the field and say
what is wrong: `SpecError("spec.voters must be odd, got 4")`.

One CEL rule is deliberately not mirrored: clientAuth mode Tokens without clientTLS. The
CRD refuses it only for objects entering that state (a transition rule); a Datastore
created when Tokens was the default keeps it, and the operator must go on running it
(reporting ClientAuthUsable=False, reconcile.plan) rather than refuse its spec.

Imports nothing from the rest of the operator.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

GROUP = "zonestore.io"
VERSION = "v1alpha1"
KIND = "Datastore"
PLURAL = "datastores"
API_VERSION = f"{GROUP}/{VERSION}"

DEFAULT_IMAGE = "zonestore/zonestore:0.1.0"
DEFAULT_TOPOLOGY_KEY = "topology.kubernetes.io/zone"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")
# metadata.name + "-" + zone + "-NN" must stay a valid pod name and leave room for the
# StatefulSet controller's revision label (63 chars): the CRD bounds name+zone at 50.
MAX_NAME_PLUS_ZONE = 50


class SpecError(ValueError):
    """A Datastore spec that cannot be reconciled; the message names the field."""


class UpdateStrategy(enum.Enum):
    ROLLING_UPDATE = "RollingUpdate"
    ON_DELETE = "OnDelete"


class RetentionPolicy(enum.Enum):
    RETAIN = "Retain"
    DELETE = "Delete"


class PullPolicy(enum.Enum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


@dataclass(frozen=True, slots=True)
class Ports:
    client: int = 8081
    admin: int = 9081
    peer: int = 7081


@dataclass(frozen=True, slots=True)
class Storage:
    size: str = "10Gi"
    storage_class_name: str | None = None


@dataclass(frozen=True, slots=True)
class Failover:
    enabled: bool = True
    zone_timeout_seconds: int = 60
    max_automatic_replacements: int = 1
    # A learner whose lag (leader's last index - its match index) is at most this many
    # entries is caught up: promotable to voter.
    catch_up_lag_entries: int = 100


@dataclass(frozen=True, slots=True)
class PvcRetention:
    when_deleted: RetentionPolicy = RetentionPolicy.RETAIN
    when_scaled: RetentionPolicy = RetentionPolicy.RETAIN


@dataclass(frozen=True, slots=True)
class Monitoring:
    scrape_annotations: bool = True
    pod_monitor: bool = False


DEFAULT_VALIDITY = timedelta(hours=2160)  # 90 days
DEFAULT_ROTATE_BEFORE = timedelta(hours=720)  # 30 days


class CertIssuer(enum.Enum):
    SELF_SIGNED = "selfSigned"  # the operator's own CA per Datastore
    CERT_MANAGER = "certManager"  # cert-manager Certificate objects


@dataclass(frozen=True, slots=True)
class IssuerRef:
    """A cert-manager issuer (`certificates.certManagerIssuerRef`)."""

    name: str
    kind: str = "Issuer"
    group: str = "cert-manager.io"


@dataclass(frozen=True, slots=True)
class Certificates:
    """Invariant: rotate_before_expiry < validity (else every pass would reissue)."""

    issuer: CertIssuer = CertIssuer.SELF_SIGNED
    cert_manager_issuer_ref: IssuerRef | None = None
    validity: timedelta = DEFAULT_VALIDITY
    rotate_before_expiry: timedelta = DEFAULT_ROTATE_BEFORE


@dataclass(frozen=True, slots=True)
class ClientTLS:
    enabled: bool = False
    # A kubernetes.io/tls Secret the user provides (tls.crt, tls.key); None: the
    # operator issues one (`<name>-client-tls`).
    secret_name: str | None = None


class ClientAuthMode(enum.Enum):
    TOKENS = "Tokens"  # clients must send a bearer token (over client TLS)
    NONE = "None"  # the default: no client auth, for the official clients through
    # DATASTORE_EMULATOR_HOST (credential-less); the NetworkPolicy gates the client port


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """Bearer tokens for the client API.

    mode None (the default): no client auth; a tokensSecretName is then an error (the
    spec would say two things). mode Tokens with no tokensSecretName: the operator
    generates `<name>-client-tokens` (one read-write token for every project and
    database)."""

    mode: ClientAuthMode = ClientAuthMode.NONE
    tokens_secret_name: str | None = None
    tokens_secret_key: str = "tokens"

    @property
    def enabled(self) -> bool:
        return self.mode is ClientAuthMode.TOKENS

    @property
    def operator_tokens(self) -> bool:
        """The operator generates (once) and mounts the tokens Secret."""
        return self.enabled and self.tokens_secret_name is None


# A Kubernetes label selector ({matchLabels, matchExpressions}), passed through.
LabelSelector = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    enabled: bool = True
    # Who may reach the client port. Both None: pods of the Datastore's own namespace.
    client_namespace_selector: LabelSelector | None = None
    client_pod_selector: LabelSelector | None = None
    # Who may scrape /metrics on the admin port. Both None: nobody but the operator.
    monitoring_namespace_selector: LabelSelector | None = None
    monitoring_pod_selector: LabelSelector | None = None


@dataclass(frozen=True, slots=True)
class Security:
    peer_tls: bool = True
    client_tls: ClientTLS = field(default_factory=ClientTLS)
    certificates: Certificates = field(default_factory=Certificates)
    client_auth: ClientAuth = field(default_factory=ClientAuth)
    network_policy: NetworkPolicy = field(default_factory=NetworkPolicy)

    @property
    def operator_ca(self) -> bool:
        """The operator runs a CA of its own for this Datastore."""
        return self.certificates.issuer is CertIssuer.SELF_SIGNED and (
            self.peer_tls or self.operator_client_tls
        )

    @property
    def operator_client_tls(self) -> bool:
        """Client TLS with a certificate the operator (or cert-manager) provides."""
        return self.client_tls.enabled and self.client_tls.secret_name is None


@dataclass(frozen=True, slots=True)
class ObjectStore:
    """Where backups and archived log segments live (spec.backup, a DatastoreBackup's
    destination, spec.bootstrap.recovery.source). `destination` is `s3://bucket/prefix`
    or `file:///abs/folder` (a folder the operator and the node pods both see). S3 keys
    come from the Secret `credentials_secret` (keys AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY), the endpoint and region from here or the environment."""

    destination: str
    endpoint: str | None = None
    region: str | None = None
    credentials_secret: str | None = None


DEFAULT_BACKUP_MAX_RATE = "64M"  # zonestore backup create's default, as a quantity
_RATE = re.compile(r"^[0-9]+(\.[0-9]+)?(k|M|G|T|Ki|Mi|Gi|Ti)?$")


@dataclass(frozen=True, slots=True)
class Backup:
    """spec.backup. Archiving (the nodes' --archive-to) needs a store."""

    store: ObjectStore | None = None
    archiving: bool = False
    archive_max_delay_seconds: int = 60
    max_rate: str = DEFAULT_BACKUP_MAX_RATE  # a quantity; "0": no limit


@dataclass(frozen=True, slots=True)
class Recovery:
    """spec.bootstrap.recovery: the group starts from `zonestore restore` of a backup
    (the newest fit unless `backup_id`) replayed up to `target_time` (RFC 3339; None:
    the newest archived commit)."""

    source: ObjectStore
    backup_id: str | None = None
    target_time: str | None = None


@dataclass(frozen=True, slots=True)
class DatastoreSpec:
    """A validated spec. Invariants: `voters` is odd, 1 <= voters <= total_replicas,
    zones are unique DNS labels."""

    zones: tuple[str, ...]
    image: str = DEFAULT_IMAGE
    image_pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    topology_key: str = DEFAULT_TOPOLOGY_KEY
    replicas_per_zone: int = 1
    voters: int = 3
    preferred_leader_zone: str | None = None
    storage: Storage = field(default_factory=Storage)
    # Pod-style requests/limits, passed through to the container unchanged.
    resources: Mapping[str, Mapping[str, str | int]] = field(default_factory=dict)
    ports: Ports = field(default_factory=Ports)
    failover: Failover = field(default_factory=Failover)
    update_strategy: UpdateStrategy = UpdateStrategy.ROLLING_UPDATE
    pvc_retention: PvcRetention = field(default_factory=PvcRetention)
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    monitoring: Monitoring = field(default_factory=Monitoring)
    security: Security = field(default_factory=Security)
    backup: Backup = field(default_factory=Backup)
    recovery: Recovery | None = None

    @property
    def total_replicas(self) -> int:
        return len(self.zones) * self.replicas_per_zone

    @property
    def quorum(self) -> int:
        """Votes needed to commit: a majority of the voters."""
        return self.voters // 2 + 1


def _obj(raw: Any, path: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SpecError(f"{path} must be an object, got {type(raw).__name__}")
    return raw


def _int(raw: Mapping[str, Any], key: str, path: str, default: int, lo: int, hi: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{path}.{key} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise SpecError(f"{path}.{key} must be between {lo} and {hi}, got {value}")
    return value


def _bool(raw: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise SpecError(f"{path}.{key} must be true or false, got {value!r}")
    return value


def _str(raw: Mapping[str, Any], key: str, path: str, default: str | None) -> str | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise SpecError(f"{path}.{key} must be a non-empty string, got {value!r}")
    return value


E = TypeVar("E", bound=enum.Enum)


def _enum(raw: Mapping[str, Any], key: str, path: str, kind: type[E], default: E) -> E:
    value = raw.get(key, default.value)
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in kind)
        raise SpecError(f"{path}.{key} must be one of {allowed}; got {value!r}") from None


def _string_map(raw: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    value = _obj(raw.get(key), f"{path}.{key}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise SpecError(f"{path}.{key} must map strings to strings; {k!r}: {v!r} is not")
        out[k] = v
    return out


_DURATION = re.compile(r"^(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?$")


def _duration(raw: Mapping[str, Any], key: str, path: str, default: timedelta) -> timedelta:
    """A Go duration of hours, minutes and seconds ("2160h", "1h30m"), as CEL's
    duration() and cert-manager read it."""
    value = raw.get(key)
    if value is None:
        return default
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not value or match is None:
        raise SpecError(f"{path}.{key} must be a duration such as 720h or 90m, got {value!r}")
    h, m, s = (int(g or 0) for g in match.groups())
    return timedelta(hours=h, minutes=m, seconds=s)


def _selector(raw: Mapping[str, Any], key: str, path: str) -> LabelSelector | None:
    value = raw.get(key)
    if value is None:
        return None
    selector = _obj(value, f"{path}.{key}")
    unknown = set(selector) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise SpecError(f"{path}.{key} has unknown fields: {', '.join(sorted(unknown))}")
    return dict(selector)


def _client_auth(raw: Mapping[str, Any], path: str) -> ClientAuth:
    auth = ClientAuth(
        mode=_enum(raw, "mode", path, ClientAuthMode, ClientAuthMode.NONE),
        tokens_secret_name=_str(raw, "tokensSecretName", path, None),
        tokens_secret_key=_str(raw, "tokensSecretKey", path, "tokens") or "tokens",
    )
    if not auth.enabled and auth.tokens_secret_name is not None:
        raise SpecError(
            f"{path}.tokensSecretName must not be set when mode is None "
            "(set mode: Tokens to use your tokens Secret)"
        )
    return auth


def parse_security(raw_security: Any) -> Security:
    p = "spec.security"
    raw = _obj(raw_security, p)
    peer = _obj(raw.get("peerTLS"), f"{p}.peerTLS")
    client = _obj(raw.get("clientTLS"), f"{p}.clientTLS")
    certs = _obj(raw.get("certificates"), f"{p}.certificates")
    auth = _obj(raw.get("clientAuth"), f"{p}.clientAuth")
    netpol = _obj(raw.get("networkPolicy"), f"{p}.networkPolicy")
    cp = f"{p}.certificates"
    issuer = _enum(certs, "issuer", cp, CertIssuer, CertIssuer.SELF_SIGNED)
    ref_raw = certs.get("certManagerIssuerRef")
    issuer_ref = None
    if ref_raw is not None:
        rp = f"{cp}.certManagerIssuerRef"
        ref = _obj(ref_raw, rp)
        issuer_ref = IssuerRef(
            name=_str(ref, "name", rp, None) or "",
            kind=_str(ref, "kind", rp, "Issuer") or "Issuer",
            group=_str(ref, "group", rp, "cert-manager.io") or "cert-manager.io",
        )
        if not issuer_ref.name:
            raise SpecError(f"{rp}.name is required")
        if issuer_ref.kind not in ("Issuer", "ClusterIssuer"):
            raise SpecError(f"{rp}.kind must be Issuer or ClusterIssuer, got {issuer_ref.kind!r}")
    if issuer is CertIssuer.CERT_MANAGER and issuer_ref is None:
        raise SpecError(f"{cp}.certManagerIssuerRef is required when issuer is certManager")
    validity = _duration(certs, "validity", cp, DEFAULT_VALIDITY)
    rotate = _duration(certs, "rotateBeforeExpiry", cp, DEFAULT_ROTATE_BEFORE)
    if validity < timedelta(hours=1):
        raise SpecError(f"{cp}.validity must be at least 1h")
    if rotate >= validity:
        raise SpecError(f"{cp}.rotateBeforeExpiry must be shorter than {cp}.validity")
    np = f"{p}.networkPolicy"
    return Security(
        peer_tls=_bool(peer, "enabled", f"{p}.peerTLS", True),
        client_tls=ClientTLS(
            enabled=_bool(client, "enabled", f"{p}.clientTLS", False),
            secret_name=_str(client, "secretName", f"{p}.clientTLS", None),
        ),
        certificates=Certificates(
            issuer=issuer,
            cert_manager_issuer_ref=issuer_ref,
            validity=validity,
            rotate_before_expiry=rotate,
        ),
        client_auth=_client_auth(auth, f"{p}.clientAuth"),
        network_policy=NetworkPolicy(
            enabled=_bool(netpol, "enabled", np, True),
            client_namespace_selector=_selector(netpol, "clientNamespaceSelector", np),
            client_pod_selector=_selector(netpol, "clientPodSelector", np),
            monitoring_namespace_selector=_selector(netpol, "monitoringNamespaceSelector", np),
            monitoring_pod_selector=_selector(netpol, "monitoringPodSelector", np),
        ),
    )


_STORE_URL = re.compile(r"^(s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/.*)?|file:///.*)$")
_BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE
)


def parse_store(raw_store: Any, path: str) -> ObjectStore:
    """An object store reference ({destination, endpoint, region, credentials})."""
    raw = _obj(raw_store, path)
    destination = _str(raw, "destination", path, None)
    if destination is None:
        raise SpecError(f"{path}.destination is required (s3://bucket/prefix or file:///dir)")
    if not _STORE_URL.match(destination):
        raise SpecError(
            f"{path}.destination must be s3://bucket/prefix or file:///abs/folder, "
            f"got {destination!r}"
        )
    creds = _obj(raw.get("credentials"), f"{path}.credentials")
    return ObjectStore(
        destination=destination,
        endpoint=_str(raw, "endpoint", path, None),
        region=_str(raw, "region", path, None),
        credentials_secret=_str(creds, "secretName", f"{path}.credentials", None),
    )


def parse_backup(raw_backup: Any) -> Backup:
    p = "spec.backup"
    raw = _obj(raw_backup, p)
    store = parse_store(raw, p) if raw.get("destination") is not None else None
    arch = _obj(raw.get("archiving"), f"{p}.archiving")
    archiving = _bool(arch, "enabled", f"{p}.archiving", False)
    if archiving and store is None:
        raise SpecError(f"{p}.archiving.enabled needs {p}.destination")
    max_rate = _str(raw, "maxRate", p, DEFAULT_BACKUP_MAX_RATE) or DEFAULT_BACKUP_MAX_RATE
    if not _RATE.match(max_rate):
        raise SpecError(
            f"{p}.maxRate must be a quantity such as 64M, 200Mi or 0 (no limit), got {max_rate!r}"
        )
    return Backup(
        store=store,
        archiving=archiving,
        archive_max_delay_seconds=_int(arch, "maxDelaySeconds", f"{p}.archiving", 60, 1, 3600),
        max_rate=max_rate,
    )


def parse_recovery(raw_bootstrap: Any) -> Recovery | None:
    p = "spec.bootstrap.recovery"
    raw = _obj(_obj(raw_bootstrap, "spec.bootstrap").get("recovery"), p)
    if not raw:
        return None
    backup_id = _str(raw, "backupID", p, None)
    if backup_id is not None and not _BACKUP_ID.match(backup_id):
        raise SpecError(
            f"{p}.backupID must be an id from `zonestore backup list` "
            f"(like 20261206T073000Z-1a2b3c4d), got {backup_id!r}"
        )
    target = _str(raw, "targetTime", p, None)
    if target is not None and not _RFC3339.match(target):
        raise SpecError(
            f"{p}.targetTime must be an RFC 3339 time with a zone, such as "
            f"2026-12-06T07:30:00Z, got {target!r}"
        )
    return Recovery(
        source=parse_store(raw.get("source"), f"{p}.source"),
        backup_id=backup_id,
        target_time=target,
    )


def parse_spec(raw_spec: Mapping[str, Any] | None, name: str = "") -> DatastoreSpec:
    """Parse, default and validate `spec`; raise `SpecError` naming the first bad field.

    `name` is the Datastore's metadata.name, used to check derived child-name lengths.
    """
    raw = _obj(raw_spec, "spec")
    p = "spec"

    zones_raw = raw.get("zones")
    if not isinstance(zones_raw, list) or not zones_raw:
        raise SpecError("spec.zones must list at least one zone name")
    zones: list[str] = []
    for i, zone in enumerate(zones_raw):
        if not isinstance(zone, str) or not _DNS_LABEL.match(zone) or len(zone) > 40:
            raise SpecError(
                f"spec.zones[{i}] must be a lowercase DNS label of at most 40 characters, got {zone!r}"
            )
        if zone in zones:
            raise SpecError(f"spec.zones must not repeat a zone; {zone!r} appears twice")
        if name and len(name) + len(zone) > MAX_NAME_PLUS_ZONE:
            raise SpecError(
                f"metadata.name {name!r} plus zone {zone!r} exceed {MAX_NAME_PLUS_ZONE} characters"
            )
        zones.append(zone)

    replicas_per_zone = _int(raw, "replicasPerZone", p, 1, 1, 15)
    voters = _int(raw, "voters", p, 3, 1, 15)
    if voters % 2 == 0:
        raise SpecError(
            f"spec.voters must be odd, got {voters} "
            f"({voters} voters tolerate no more failures than {voters - 1})"
        )
    total = len(zones) * replicas_per_zone
    if voters > total:
        raise SpecError(
            f"spec.voters ({voters}) must not exceed the total replica count "
            f"({len(zones)} zones x {replicas_per_zone} replicasPerZone = {total})"
        )

    preferred = _str(raw, "preferredLeaderZone", p, None)
    if preferred is not None and preferred not in zones:
        raise SpecError(f"spec.preferredLeaderZone {preferred!r} is not one of spec.zones")

    st = _obj(raw.get("storage"), "spec.storage")
    size = _str(st, "size", "spec.storage", "10Gi") or "10Gi"
    if not _QUANTITY.match(size):
        raise SpecError(f"spec.storage.size must be a quantity such as 10Gi, got {size!r}")
    storage = Storage(
        size=size, storage_class_name=_str(st, "storageClassName", "spec.storage", None)
    )

    res = _obj(raw.get("resources"), "spec.resources")
    resources: dict[str, dict[str, str | int]] = {}
    for section in ("requests", "limits"):
        if section in res:
            values = _obj(res[section], f"spec.resources.{section}")
            resources[section] = {str(k): v for k, v in values.items()}
    unknown = set(res) - {"requests", "limits"}
    if unknown:
        raise SpecError(f"spec.resources has unknown fields: {', '.join(sorted(unknown))}")

    pr = _obj(raw.get("ports"), "spec.ports")
    ports = Ports(
        client=_int(pr, "client", "spec.ports", 8081, 1, 65535),
        admin=_int(pr, "admin", "spec.ports", 9081, 1, 65535),
        peer=_int(pr, "peer", "spec.ports", 7081, 1, 65535),
    )
    if len({ports.client, ports.admin, ports.peer}) != 3:
        raise SpecError("spec.ports must be three different ports")

    fo = _obj(raw.get("failover"), "spec.failover")
    failover = Failover(
        enabled=_bool(fo, "enabled", "spec.failover", True),
        zone_timeout_seconds=_int(fo, "zoneTimeoutSeconds", "spec.failover", 60, 0, 86400),
        max_automatic_replacements=_int(fo, "maxAutomaticReplacements", "spec.failover", 1, 0, 15),
        catch_up_lag_entries=_int(fo, "catchUpLagEntries", "spec.failover", 100, 0, 2**62),
    )

    us = _obj(raw.get("updateStrategy"), "spec.updateStrategy")
    pvc = _obj(raw.get("pvcRetentionPolicy"), "spec.pvcRetentionPolicy")
    mon = _obj(raw.get("monitoring"), "spec.monitoring")

    return DatastoreSpec(
        zones=tuple(zones),
        image=_str(raw, "image", p, DEFAULT_IMAGE) or DEFAULT_IMAGE,
        image_pull_policy=_enum(raw, "imagePullPolicy", p, PullPolicy, PullPolicy.IF_NOT_PRESENT),
        topology_key=_str(raw, "topologyKey", p, DEFAULT_TOPOLOGY_KEY) or DEFAULT_TOPOLOGY_KEY,
        replicas_per_zone=replicas_per_zone,
        voters=voters,
        preferred_leader_zone=preferred,
        storage=storage,
        resources=resources,
        ports=ports,
        failover=failover,
        update_strategy=_enum(
            us, "type", "spec.updateStrategy", UpdateStrategy, UpdateStrategy.ROLLING_UPDATE
        ),
        pvc_retention=PvcRetention(
            when_deleted=_enum(
                pvc,
                "whenDeleted",
                "spec.pvcRetentionPolicy",
                RetentionPolicy,
                RetentionPolicy.RETAIN,
            ),
            when_scaled=_enum(
                pvc,
                "whenScaled",
                "spec.pvcRetentionPolicy",
                RetentionPolicy,
                RetentionPolicy.RETAIN,
            ),
        ),
        pod_labels=_string_map(raw, "podLabels", p),
        pod_annotations=_string_map(raw, "podAnnotations", p),
        monitoring=Monitoring(
            scrape_annotations=_bool(mon, "scrapeAnnotations", "spec.monitoring", True),
            pod_monitor=_bool(mon, "podMonitor", "spec.monitoring", False),
        ),
        security=parse_security(raw.get("security")),
        backup=parse_backup(raw.get("backup")),
        recovery=parse_recovery(raw.get("bootstrap")),
    )
