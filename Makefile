# weft — see README.md. Everything runs as root for the namespace tests/demo.
GO      ?= go
BIN     := bin
PKGS    := ./...
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/weftmesh/weft/internal/version.Version=$(VERSION)

IMAGE   ?= docker.io/weftmesh/weft:latest

.PHONY: scale-real build image kube-bins test soak scale demo demo-down bench lint clean deps

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/weft ./cmd/weft
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/weft-cni ./cmd/weft-cni
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/weft-datapath ./cmd/weft-datapath

# The container image (deploy/weft.yaml): static weft, weft-cni and weft-datapath on an
# empty base, a docker-archive tarball for `ctr images import` or
# `docker load`; no Docker daemon, no registry; reproducible.
image:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(BIN)/image/weft ./cmd/weft
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(BIN)/image/weft-cni ./cmd/weft-cni
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(BIN)/image/weft-datapath ./cmd/weft-datapath
	$(GO) run -ldflags "$(LDFLAGS)" ./internal/cmd/mkimage -o $(BIN)/weft-image.tar -tag $(IMAGE) $(BIN)/image/weft $(BIN)/image/weft-cni $(BIN)/image/weft-datapath

deps:
	bash scripts/deps.sh
	bash scripts/deps-cri.sh
	bash scripts/deps-kube.sh

# Kubernetes v1.37.2 for the real-cluster tests, built from the Go module
# proxy into a cache outside the checkout (${WEFT_K8S_CACHE:-/var/cache/weft/
# k8s-v1.37.2}): 12-18 min once, milliseconds after.
kube-bins:
	bash scripts/kube-build.sh

# The real-cluster tests (test/kubebed, test/kube) run after the others,
# one package at a time: a cluster loads the 2 cores, and the test beds of
# the other packages time gossip and failure detection.
KUBE_PKGS := ./test/kubebed/ ./test/kube/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) mod tidy -diff

test: deps lint build kube-bins
	$(GO) test -race -count=1 -timeout 25m $$($(GO) list $(PKGS) | grep -v -e '/test/kube$$' -e '/test/kubebed$$' -e '/internal/sim$$')
	$(GO) test -count=1 -timeout 10m ./internal/sim/
	$(GO) test -count=1 -p 1 -timeout 30m $(KUBE_PKGS)

# The chaos soak (test/soak_test.go): SOAK_SECS, SOAK_HOSTS, SOAK_SEED (a
# failure prints the seed to replay); RACE=1 builds the peers with -race.
soak: build
	WEFT_RACE=$(RACE) SOAK_SECS=$${SOAK_SECS:-300} $(GO) test $(if $(RACE),-race) -count=1 -timeout 60m -run '^TestSoak$$' -v ./test/

# The scale simulator (internal/sim): complete peers in one process on a
# fake kernel, in virtual time (a testing/synctest bubble per size, so a
# test); SCALE_N sizes; writes results/scale/{table.md,scale.svg,results.json}:
# the protocol's times, and apart the wall and CPU time the simulation cost.
SCALE_N ?= 200,1000
scale:
	WEFT_SCALE=1 $(GO) test -count=1 -timeout 0 -run '^TestScale$$' -v ./internal/sim/cmd/scale -args -n $(SCALE_N) -out $(CURDIR)/results/scale $(SCALE_FLAGS)

# Real secure peers on the test bed (test/scale_real_test.go): SCALE_REAL
# peers, each launched with one random earlier PEER; logs the convergence,
# idle CPU/RSS and failure-detection figures. Too slow for make test.
SCALE_REAL ?= 40
scale-real: build
	WEFT_SCALE_REAL=$(SCALE_REAL) $(GO) test -count=1 -timeout 30m -run '^TestScaleReal$$' -v ./test/

demo: build
	bash scripts/demo.sh up

demo-down:
	bash scripts/demo.sh down

bench: build
	bash scripts/bench.sh

clean:
	rm -rf $(BIN)
