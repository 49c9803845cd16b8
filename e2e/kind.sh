#!/usr/bin/env bash
# make e2e-kind: the e2e suite against a kind cluster, for machines with Docker.
# NOT RUN on the machines this project is built on (no container engine): written to
# the kind and Docker documentation, unverified here.
#
# Creates (or reuses) the kind cluster `zonestore-e2e` with three labelled zones, builds
# the node/operator image from the Dockerfile as zonestore/zonestore:0.1.0 (the chart's
# and the CRD's default), loads it into the cluster, and runs the scenarios that need
# only the API (schema and chart validation, the helm install, helm test). The fault
# scenarios need the process cluster's levers (kubelets, bridges, routable pod IPs) and
# are deselected (marker process_cluster). KEEP=1 keeps the cluster afterwards.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=zonestore-e2e
IMAGE=zonestore/zonestore:0.1.0
for tool in docker kind; do
    if ! command -v "$tool" >/dev/null; then
        echo "make e2e-kind needs $tool on PATH (and a running Docker engine)" >&2
        exit 2
    fi
done
docker info >/dev/null 2>&1 || { echo "make e2e-kind: no Docker engine answers" >&2; exit 2; }
if ! kind get clusters | grep -qx "$NAME"; then
    kind create cluster --name "$NAME" --config "$ROOT/e2e/kind-config.yaml" --wait 120s
fi
docker build --target node -t "$IMAGE" "$ROOT"
kind load docker-image --name "$NAME" "$IMAGE"
KUBECONFIG_FILE=$(mktemp)
trap 'rm -f "$KUBECONFIG_FILE"; [ "${KEEP:-}" = 1 ] || kind delete cluster --name "$NAME"' EXIT
kind get kubeconfig --name "$NAME" >"$KUBECONFIG_FILE"
ZSE2E_KUBECONFIG=$KUBECONFIG_FILE "$ROOT/.venv/bin/python" -m pytest -q -s "$ROOT/e2e/tests" "$@"
