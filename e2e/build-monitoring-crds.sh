#!/usr/bin/env bash
# Generate the Prometheus Operator CRDs (ServiceMonitor, PodMonitor, PrometheusRule, ...)
# that the chart's optional monitoring objects need, so the e2e suite can dry-run them on
# the real API server. They are generated from the Prometheus Operator's Go API types
# (module github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring) with
# controller-gen, the generator upstream uses, both from the Go module proxy at pinned
# versions. Output: .cache/k8s/monitoring-crds/*.yaml (git-ignored; reused when present).
set -euo pipefail

PROM_OPERATOR_VERSION=${PROM_OPERATOR_VERSION:-v0.79.2}
CONTROLLER_TOOLS_VERSION=${CONTROLLER_TOOLS_VERSION:-v0.17.2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${MONITORING_CRDS_DIR:-$ROOT/.cache/k8s/monitoring-crds}
WORK=$ROOT/.cache/k8s/monitoring-crds-src

if [ -f "$OUT/monitoring.coreos.com_podmonitors.yaml" ]; then
    exit 0
fi
start=$(date +%s)
mkdir -p "$WORK" "$OUT.tmp"
cd "$WORK"
rm -f go.mod go.sum
go mod init zonestore.local/monitoringcrds >/dev/null 2>&1
cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
)
GO
if ! go get "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring@$PROM_OPERATOR_VERSION" \
    "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION" >go-get.log 2>&1; then
    cat go-get.log >&2
    exit 1
fi
go build -o controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen
API=$(go list -m -f '{{.Dir}}' github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring)
(cd "$API" && "$WORK/controller-gen" crd:allowDangerousTypes=true,crdVersions=v1 \
    paths=./v1/... output:crd:dir="$OUT.tmp")
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
echo "build-monitoring-crds: $(ls "$OUT" | wc -l) CRDs in $(($(date +%s) - start)) s"
