# The commands the README names. Every target sets up what it needs, idempotently:
# a virtualenv in .venv (rebuilt when pyproject.toml changes) and the Node client
# under node/tests/js/node_modules (rebuilt when its lockfile changes).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JS := node/tests/js
JS_STAMP := $(JS)/node_modules/.installed
REPLICAS ?= 3
ARGS ?=

.PHONY: run test lint unit bench setup clean-data tools promtool fuse faketime versitygw edge java-client go-client jepsen e2e e2e-clean e2e-kind control-plane chaos

# Tools the chart and alert tests run. helm is built from the Go module proxy into
# .cache/bin (git-ignored; one file per version, so a bump rebuilds): ~3.5 min cold on 2
# CPUs, about a minute with Go's build cache warm. promtool comes from Debian's prometheus
# package (~15 s; without systemd no server is started).
TOOLS := $(abspath .cache/bin)
HELM_VERSION := v3.16.4
HELM := $(TOOLS)/helm-$(HELM_VERSION)
PROMTOOL := /usr/bin/promtool

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_STAMP)

setup: $(STAMP) $(JS_STAMP)

$(HELM):
	mkdir -p $(TOOLS)/gobin
	GOBIN=$(TOOLS)/gobin go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv $(TOOLS)/gobin/helm $@

$(PROMTOOL):
	apt-cache policy prometheus | grep -q 'Candidate: [0-9]' || apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null

# The Jepsen suite's power-loss disk (node/tests/jepsen/powerfs.py): libfuse 2 and
# fusermount from Debian, fusepy in the virtualenv; each installed only when missing.
fuse: $(STAMP)
	ldconfig -p | grep -q 'libfuse\.so\.2' && command -v fusermount >/dev/null || { \
	  apt-cache policy fuse | grep -q 'Candidate: [0-9]' || apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fuse libfuse2 >/dev/null; }
	$(PY) -c 'import fuse' 2>/dev/null || $(PY) -m pip install -q fusepy==3.0.1

# The clock nemesis's libfaketime 0.9.12 (Debian ships 0.9.10, whose sleep breaks Python
# under DONT_FAKE_MONOTONIC), built from Debian's source into .cache/faketime once.
FAKETIME_LIB := .cache/faketime/0.9.12-nopthread/libfaketime.so.1

faketime: $(FAKETIME_LIB)

$(FAKETIME_LIB): $(STAMP)
	cd node && ../$(PY) -m tests.jepsen.faketime

# A real S3-compatible server for the backup/export tests (node/tests/objstore_server.py):
# versitygw (Apache-2.0, posix backend) built from the Go module proxy into .cache/bin:
# ~3.5 min cold on 2 cores (measured 3:34, 84 MB binary), seconds with Go's caches warm.
VERSITYGW_VERSION := v1.8.0
VERSITYGW := $(TOOLS)/versitygw-$(VERSITYGW_VERSION)

$(VERSITYGW):
	mkdir -p $(TOOLS)/gobin
	GOBIN=$(TOOLS)/gobin go install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)
	mv $(TOOLS)/gobin/versitygw $@

versitygw: $(VERSITYGW)

# zonestore-edge, the client port's server (node/edge, Go; its modules from the Go module
# proxy, Go's build cache in ~/.cache/go-build): rebuilt when a source changes (~1 min cold,
# seconds warm). `zonestore serve` finds it in .cache/bin; without it the node serves gRPC
# from Python (--edge off).
EDGE := $(TOOLS)/zonestore-edge
EDGE_SRC := $(filter-out %_test.go,$(wildcard node/edge/*.go)) node/edge/go.mod node/edge/go.sum

$(EDGE): $(EDGE_SRC)
	mkdir -p $(TOOLS)
	cd node/edge && go build -trimpath -o $(EDGE).tmp . && mv $(EDGE).tmp $(EDGE)

edge: $(EDGE)

# The official Java and Go clients' programs for node/tests/clients: the Java one (Maven,
# google-cloud-datastore from Maven Central) into .cache/java with its local repository in
# .cache/m2, the Go one into .cache/bin; each rebuilt when its sources change.
JAVA_CLIENT := .cache/java/java-client-paths-1.jar
GO_CLIENT := $(TOOLS)/zonestore-goclient

$(JAVA_CLIENT): node/tests/java/pom.xml $(wildcard node/tests/java/src/main/java/zonestore/*.java)
	mvn -q -B -Dmaven.repo.local=$(abspath .cache/m2) -f node/tests/java/pom.xml package
	touch $@

$(GO_CLIENT): $(wildcard node/tests/goclient/*.go) node/tests/goclient/go.mod node/tests/goclient/go.sum
	mkdir -p $(TOOLS)
	cd node/tests/goclient && go build -trimpath -o $(GO_CLIENT).tmp . && mv $(GO_CLIENT).tmp $(GO_CLIENT)

java-client: $(JAVA_CLIENT)

go-client: $(GO_CLIENT)

tools: $(HELM) $(PROMTOOL) fuse faketime $(VERSITYGW)

# The e2e control plane (issue 6): kube-apiserver, kube-controller-manager,
# kube-scheduler and etcd built with `go build` from the Kubernetes modules at a pinned
# version into .cache/k8s/<version>/bin (git-ignored, reused when present). nftables
# cuts zones apart in the e2e network.
K8S_VERSION := v1.36.3
K8S_BIN := $(abspath .cache/k8s/$(K8S_VERSION)/bin)
NFT := /usr/sbin/nft

$(K8S_BIN)/.built: e2e/build-control-plane.sh
	K8S_VERSION=$(K8S_VERSION) bash e2e/build-control-plane.sh
	touch $@

$(NFT):
	apt-cache policy nftables | grep -q 'Candidate: [0-9]' || apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables >/dev/null

# The Prometheus Operator's CRDs, generated from its Go API types with controller-gen, so
# the e2e suite can dry-run the chart's ServiceMonitor/PodMonitor/PrometheusRule.
MONITORING_CRDS := $(abspath .cache/k8s/monitoring-crds)

$(MONITORING_CRDS)/.built: e2e/build-monitoring-crds.sh
	bash e2e/build-monitoring-crds.sh
	touch $@

control-plane: $(K8S_BIN)/.built $(MONITORING_CRDS)/.built $(NFT)

promtool: $(PROMTOOL)

run: $(STAMP) $(EDGE)
	$(PY) -m zonestore_node.cli run --replicas $(REPLICAS) $(ARGS)

lint: $(STAMP) $(EDGE)
	cd node/edge && go vet ./...
	$(VENV)/bin/ruff check node operator bench e2e
	$(VENV)/bin/ruff format --check node operator bench e2e
	$(VENV)/bin/mypy

# The Jepsen-style suite (node/tests/jepsen) runs in a network and mount namespace of
# its own when root (e2e/isolated.sh): the replicas' namespaces, the route to them and
# their nftables rules then exist only inside it. Without root it runs on loopback
# (cuttable proxies) in the same session as everything else.
JEPSEN_TESTS := node/tests/jepsen
ISOLATED := $(if $(filter 0,$(shell id -u)),unshare --net --mount --propagation private e2e/isolated.sh)
JEPSEN_ARGS ?=

test: setup lint tools control-plane $(EDGE) $(JAVA_CLIENT) $(GO_CLIENT)
	cd node/edge && go test -count=1 ./...
	ZONESTORE_HELM=$(HELM) ZONESTORE_PROMTOOL=$(PROMTOOL) ZONESTORE_VERSITYGW=$(VERSITYGW) $(PY) -m pytest -q $(if $(ISOLATED),--ignore=$(JEPSEN_TESTS)) $(ARGS)
	$(if $(ISOLATED),$(ISOLATED) $(PY) -m pytest -q $(JEPSEN_TESTS) $(JEPSEN_ARGS))
	$(MAKE) --no-print-directory e2e

# The scenarios on the real control plane (e2e/README.md). Needs root (network
# namespaces). The run lives in a network, mount and PID namespace of its own
# (e2e/isolated.sh, its init): nothing outlives it, and a process that would have fails
# the run. `make e2e-clean` sweeps what a run outside that wrapper (pytest by hand) may
# have left.
e2e: setup tools control-plane
	unshare --net --mount --pid --fork --kill-child --mount-proc --propagation private \
		e2e/isolated.sh env ZONESTORE_HELM=$(HELM) \
		ZSE2E_BIN=$(K8S_BIN) ZSE2E_MONITORING_CRDS=$(MONITORING_CRDS) \
		$(PY) -m pytest -q -s e2e/tests $(E2E_ARGS)

e2e-clean: setup
	$(PY) -c 'from zonestore_e2e import network; print("removed:", network.cleanup())'
	rm -rf .cache/e2e

# The API-level scenarios against a kind cluster, for machines with Docker and kind
# (e2e/kind.sh). Not run here: these machines have no container engine.
e2e-kind: setup tools $(MONITORING_CRDS)/.built
	ZONESTORE_HELM=$(HELM) ZSE2E_MONITORING_CRDS=$(MONITORING_CRDS) bash e2e/kind.sh $(E2E_ARGS)

bench: setup $(EDGE)
	$(PY) -m bench.run $(ARGS)
	$(PY) -m zonestore_node.export.bench
	$(PY) -m zonestore_node.backup.bench --million
	$(PY) -m zonestore_node.backup.writecost
	$(PY) -m bench.vectors

clean-data:
	rm -rf .zonestore-data

# The long form of the fault-injection suite (node/tests/jepsen): more seeds, longer runs.
jepsen: setup fuse faketime
	$(ISOLATED) env JEPSEN_SEEDS=$${JEPSEN_SEEDS:-1,2,3,4,5} JEPSEN_MIXES=$${JEPSEN_MIXES:-crash,partition,admin,all} JEPSEN_SECONDS=$${JEPSEN_SECONDS:-60} $(PY) -m pytest -q -s node/tests/jepsen $(ARGS)

# One long Jepsen-style run, or the replay of a seed: `make chaos SEED=42 TIME=120 MIX=all`
# (no SEED: a fresh random one, printed; REPLICAS=5 for five, e.g. MIX=split). History, fault timeline, verdict and node logs
# go to .cache/jepsen/<timestamp>-seed<N>-<mix>/ (printed at the end); a failure prints
# the smallest anomaly.
SEED ?=
TIME ?= 60
MIX ?= all

chaos: setup fuse faketime
	$(ISOLATED) env PYTHONPATH=node $(PY) -m tests.jepsen.chaos $(if $(SEED),--seed $(SEED)) --time $(TIME) --mix $(MIX) --replicas $(REPLICAS)
