"""One real cluster per test session; every scenario gets a Kubernetes namespace of its own,
and a failing scenario prints its objects, events and the processes' logs.

The environment needs root, iproute2, nftables and the control-plane binaries that
`make e2e` builds (e2e/build-control-plane.sh). When one is missing the session fails
with what is missing: these tests are part of `make test` and never skip themselves.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from zonestore_e2e import diagnostics
from zonestore_e2e.cluster import (
    RUN_MARKER,
    Cluster,
    Timeout,
    kill_survivors,
    running_cluster,
    wait_for,
)
from zonestore_e2e.install import HELM, OPERATOR_NS, InstallError, install_operator

_counter = itertools.count()


def _preflight() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces)")
    for tool in ("ip", "nft", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            missing.append(f"`{tool}` on PATH")
    if not HELM or not Path(HELM).exists():
        missing.append("helm (ZONESTORE_HELM; `make tools` builds it)")
    return missing


EXTERNAL_KUBECONFIG = os.environ.get("ZSE2E_KUBECONFIG")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "process_cluster: needs the process cluster's levers (kubelets, bridges, pod IPs "
        "routable from the test); deselected against an external cluster (make e2e-kind)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not EXTERNAL_KUBECONFIG:
        return
    dropped = [i for i in items if i.get_closest_marker("process_cluster")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if not i.get_closest_marker("process_cluster")]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if EXTERNAL_KUBECONFIG:
        from zonestore_e2e.external import ExternalCluster

        external = ExternalCluster(Path(EXTERNAL_KUBECONFIG), tmp_path_factory.mktemp("external"))
        try:
            install_operator(external)  # type: ignore[arg-type]
        except InstallError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield external  # type: ignore[misc]
        return
    missing = _preflight()
    if missing:
        pytest.fail("the e2e environment needs: " + ", ".join(missing), pytrace=False)
    # Every process the run starts inherits this marker (the kubelets hand it to the
    # containers too), so the session's end can tell whether any of them survived.
    run_id = uuid.uuid4().hex
    os.environ[RUN_MARKER] = run_id
    try:
        with running_cluster() as c:
            print(f"\ncluster ready: {c.timings}")
            try:
                install_operator(c)
            except InstallError as exc:
                pytest.fail(f"{exc}\n{diagnostics.dump_namespace(c, OPERATOR_NS)}", pytrace=False)
            yield c
    finally:
        # The harness ends everything it started, on success, failure and Ctrl-C (pytest
        # runs this teardown for a KeyboardInterrupt too). A survivor is a harness bug:
        # killed here, and the session fails naming it.
        survivors = kill_survivors(run_id)
        del os.environ[RUN_MARKER]
        assert not survivors, "processes of the run outlived the cluster's teardown: " + "; ".join(
            f"{pid}: {cmd}" for pid, cmd in sorted(survivors.items())
        )


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of the scenario's own, enforcing the `restricted` Pod Security
    Standard, so every pod the operator makes is admitted (or refused) by the real
    PodSecurity admission."""
    raw = f"e2e-{next(_counter)}-{request.node.name.removeprefix('test_')}".lower()
    name = re.sub(r"[^a-z0-9-]+", "-", raw)[:50].strip("-")
    with cluster.api() as api:
        client.CoreV1Api(api).create_namespace(
            {
                "metadata": {
                    "name": name,
                    "labels": {
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/enforce-version": "latest",
                    },
                }
            }
        )
    yield name
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(diagnostics.dump_namespace(cluster, name))
        print(diagnostics.dump_namespace(cluster, OPERATOR_NS))
        print(cluster.describe_processes())
    # Whatever the scenario broke is mended before the next one, and its pods go, so
    # the next scenario has the two cores to itself.
    cluster.restore_all()
    with cluster.api() as api:
        core = client.CoreV1Api(api)
        core.delete_namespace(name)
        try:
            wait_for(
                f"pods of {name} gone",
                lambda: not core.list_namespaced_pod(name).items,
                120,
                1.0,
            )
        except Timeout as exc:
            print(f"warning: {exc}")


@pytest.fixture
def api(cluster: Cluster) -> Iterator[Any]:
    with cluster.api() as a:
        yield a
