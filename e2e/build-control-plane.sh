#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler and etcd from the
# Kubernetes Go modules at a pinned version, into a git-ignored cache folder.
#
# Why a wrapper module: k8s.io/kubernetes requires its ~33 staging modules at v0.0.0 and
# maps them with `replace => ./staging/...` lines, which a consumer never sees, so
# `go install k8s.io/kubernetes/cmd/...@v1.x` cannot work. A throw-away main module that
# requires k8s.io/kubernetes and replaces every staging module with its published
# v0.x.y twin builds the real binaries with plain `go build`. The staging list is read
# from that version's own go.mod, never hard-coded.
#
# Idempotent: when all four binaries exist for the version, it does nothing. Nothing it
# builds is committed (.cache/ is git-ignored).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)
PATCH=$(echo "$K8S_VERSION" | cut -d. -f3)
STAGING_VERSION=v0.${MINOR}.${PATCH}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${E2E_CACHE:-$ROOT/.cache/k8s/$K8S_VERSION}
BIN=$CACHE/bin
SRC=$CACHE/src
PROGRAMS="kube-apiserver kube-controller-manager kube-scheduler etcd"

have_all() {
    for p in $PROGRAMS; do [ -x "$BIN/$p" ] || return 1; done
}
if have_all; then
    exit 0
fi

start=$(date +%s)
mkdir -p "$BIN" "$SRC"
cd "$SRC"
rm -f go.mod go.sum
go mod init zonestore.local/k8sbins >/dev/null 2>&1

# The version's own go.mod, verbatim, replaces included.
MODFILE=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
STAGING=$(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$MODFILE")
if [ -z "$STAGING" ]; then
    echo "build-control-plane: no staging replaces found in $MODFILE" >&2
    exit 1
fi
go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
for m in $STAGING; do go mod edit -replace="$m=$m@$STAGING_VERSION"; done
# A dependency's godebug line is ignored; carry upstream's runtime defaults over.
GODEBUG_DEFAULT=$(sed -n 's/^godebug \(default=go1\.[0-9]*\)$/\1/p' "$MODFILE")
if [ -n "$GODEBUG_DEFAULT" ]; then go mod edit -godebug="$GODEBUG_DEFAULT"; fi
for t in kube-apiserver kube-controller-manager kube-scheduler; do
    go mod edit -tool="k8s.io/kubernetes/cmd/$t"
done
# etcd from the same module graph: the version this Kubernetes release was tested with.
mkdir -p cmd/etcd
cat >cmd/etcd/main.go <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
go mod tidy

STAMP="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
STAMP="$STAMP -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$MINOR"
STAMP="$STAMP -X k8s.io/component-base/version.gitTreeState=clean"
STAMP="$STAMP -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
STAMP="$STAMP -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$MINOR"
CGO_ENABLED=0 go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags "-s -w $STAMP" \
    -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    ./cmd/etcd
"$BIN/kube-apiserver" --version
echo "build-control-plane: built $PROGRAMS for $K8S_VERSION in $(($(date +%s) - start)) s"
