"""The image -> local program table: what "pulling" an image means for the process kubelet.

There is no container engine, so an image is never fetched: its repository is looked up
in `TABLE`, an explicit and deliberately small list, and the container's process runs on
the host with the image's environment (PATH first of all) and, when the pod gives no
`command`, the image's ENTRYPOINT/CMD as the Dockerfile declares them. An image that is
not listed fails the container the way an unpullable image does (`ErrImagePull`), so a
typo in a manifest is never silently run as something else.

Pure: no I/O. Imports nothing from the kubelet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(LookupError):
    """The image is not in the table; `reason` is the container's waiting reason."""

    reason = "ErrImagePull"


@dataclasses.dataclass(frozen=True, slots=True)
class ImageSpec:
    """What an image stands for locally. `bin_dir` is relative to the venv."""

    bin_dir: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    workdir: str = "/"


# Mirrors the Dockerfile: one Python package holds the node and the operator; the `node`
# target's ENTRYPOINT/CMD are the defaults (the operator chart always sets `command`).
TABLE: dict[str, ImageSpec] = {
    "zonestore/zonestore": ImageSpec(
        bin_dir="bin",
        entrypoint=("zonestore",),
        cmd=(
            "serve",
            "--client-addr",
            "0.0.0.0:8081",
            "--admin-addr",
            "0.0.0.0:9081",
            "--peer-addr",
            "0.0.0.0:7081",
        ),
        env=(
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PYTHONUNBUFFERED", "1"),
            ("ZONESTORE_DATA_DIR", "/var/lib/zonestore"),
            ("ZONESTORE_LOG_FORMAT", "json"),
        ),
    ),
    # The chart's `helm test` pod runs `sh -c '... wget ...'`: busybox's applets are the
    # host's own tools here (Debian's sh and wget), with no virtualenv on PATH.
    "busybox": ImageSpec(bin_dir="", entrypoint=("sh",), cmd=(), env=()),
    # Docker's official Node.js image: the host's `node` (Node.js 20, as the image's tag
    # 20 would be). An application pod names its script; the Node client it requires
    # comes from the script's own node_modules (node/tests/js), as an app image bundles it.
    "node": ImageSpec(bin_dir="", entrypoint=("node",), cmd=(), env=()),
}

# Registries that may prefix a listed repository (docker.io/zonestore/zonestore:0.1.0).
REGISTRIES = ("docker.io/", "index.docker.io/", "localhost/")


@dataclasses.dataclass(frozen=True, slots=True)
class Resolved:
    """An image resolved for one venv: the environment and argv a container starts with."""

    image: str
    repository: str
    image_id: str
    spec: ImageSpec
    venv: str

    def path(self) -> str:
        if not self.spec.bin_dir:
            return SYSTEM_PATH
        return f"{os.path.join(self.venv, self.spec.bin_dir)}:{SYSTEM_PATH}"

    def env(self) -> dict[str, str]:
        return {"PATH": self.path(), "HOME": "/root", **dict(self.spec.env)}

    def argv(self, command: list[str] | None, args: list[str] | None) -> list[str]:
        """Docker's rule: `command` replaces ENTRYPOINT (and drops CMD), `args` replaces CMD."""
        if command:
            return [*command, *(args or [])]
        return [*self.spec.entrypoint, *(args if args else self.spec.cmd)]


def repository(image: str) -> str:
    """`docker.io/zonestore/zonestore:0.1@sha256:...` -> `zonestore/zonestore`."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    for prefix in REGISTRIES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
    if name.startswith("library/"):
        name = name[len("library/") :]
    return name


def resolve(image: str, venv: str) -> Resolved:
    repo = repository(image)
    spec = TABLE.get(repo)
    if spec is None:
        known = ", ".join(sorted(TABLE))
        raise ImageError(
            f'image "{image}": repository "{repo}" is not in the e2e image table '
            f"(zonestore_e2e.images; known: {known})"
        )
    digest = hashlib.sha256(f"{repo}|{os.path.abspath(venv)}".encode()).hexdigest()
    return Resolved(image, repo, f"{repo}@sha256:{digest}", spec, venv)
