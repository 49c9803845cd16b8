"""What backups add to the node pods (the StatefulSet builder calls these):

- archiving (spec.backup.archiving): `--archive-to URL --archive-max-delay-seconds N` on
  `zonestore serve`, with the object store's settings in the AWS_* environment the node's
  S3 client reads (endpoint, region, and the keys from the credentials Secret by
  secretKeyRef, so they never appear in the pod spec);
- recovery (spec.bootstrap.recovery): an init container in the first zone's pods that
  runs `zonestore restore` into the data volume, only in the group's first pod, only
  while the ConfigMap says the group is new, and only when the volume holds no database
  yet (a restarted pod keeps what it restored or has since written). The restored
  folder is a group of one whose only voter is that pod (meta.bootstrap_members); the
  other pods start with --join and are added as learners by the operator.
"""

from __future__ import annotations

from typing import Any

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import DatastoreSpec, ObjectStore
from zonestore_operator.resources import meta

ACCESS_KEY = "AWS_ACCESS_KEY_ID"
SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
RESTORE_CONTAINER = "restore"

# argv: $0 = name, $1 = the pod that restores, $2 = data folder, then the restore command.
RESTORE_SCRIPT = """\
first=$1 data=$2
shift 2
if [ "$ZONESTORE_CLUSTER_STATE" != new ] || [ "$POD_NAME" != "$first" ]; then
  exit 0
fi
if [ -n "$(ls -A "$data/db" 2>/dev/null)" ]; then
  echo "restore: $data/db already holds a database; not restoring again"
  exit 0
fi
exec "$@"
"""


def store_env(store: ObjectStore) -> list[dict[str, Any]]:
    """AWS_* variables for `store` (nothing for a file:// destination without them)."""
    env: list[dict[str, Any]] = []
    if store.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": store.endpoint})
    if store.region:
        env.append({"name": "AWS_REGION", "value": store.region})
    if store.credentials_secret:
        for key in (ACCESS_KEY, SECRET_KEY):
            ref = {"name": store.credentials_secret, "key": key}
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return env


def archive_args(spec: DatastoreSpec) -> list[str]:
    store = spec.backup.store
    if not spec.backup.archiving or store is None:
        return []
    return [
        "--archive-to",
        store.destination,
        "--archive-max-delay-seconds",
        str(spec.backup.archive_max_delay_seconds),
    ]


def archive_env(spec: DatastoreSpec) -> list[dict[str, Any]]:
    store = spec.backup.store
    return store_env(store) if spec.backup.archiving and store is not None else []


def restore_command(spec: DatastoreSpec, data_dir: str) -> list[str]:
    recovery = spec.recovery
    assert recovery is not None
    argv = ["zonestore", "restore", "--from", recovery.source.destination]
    if recovery.backup_id:
        argv += ["--backup", recovery.backup_id]
    argv += ["--to-time", recovery.target_time] if recovery.target_time else ["--to-latest"]
    return [*argv, "--data-dir", data_dir, "--node-id", "$(POD_NAME)"]


def restore_init_container(
    ref: DatastoreRef,
    spec: DatastoreSpec,
    zone: str,
    base: dict[str, Any],
    data_dir: str,
) -> dict[str, Any] | None:
    """The init container for `zone`'s pods, or None (no recovery, or not the zone of
    the restoring pod). `base` is the node container: image, env, mounts and security
    context are the same."""
    if spec.recovery is None or zone != spec.zones[0]:
        return None
    first = meta.pod_name(ref, zone, 0)
    container = {
        "name": RESTORE_CONTAINER,
        "image": base["image"],
        "imagePullPolicy": base["imagePullPolicy"],
        "command": ["/bin/sh", "-c", RESTORE_SCRIPT, "zonestore-restore", first, data_dir],
        "args": restore_command(spec, data_dir),
        "env": [
            *(e for e in base["env"] if not e["name"].startswith("AWS_")),  # archive's
            *store_env(spec.recovery.source),
        ],
        "volumeMounts": base["volumeMounts"],
        "securityContext": base["securityContext"],
    }
    if "resources" in base:
        container["resources"] = base["resources"]
    return container
