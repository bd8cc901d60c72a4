# weft — see README.md. Everything runs as root for the namespace tests/demo.
GO      ?= go
BIN     := bin
PKGS    := ./...
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/weftmesh/weft/internal/version.Version=$(VERSION)

.PHONY: build test soak demo demo-down bench lint clean deps

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/weft ./cmd/weft
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/weft-cni ./cmd/weft-cni

deps:
	bash scripts/deps.sh
	bash scripts/deps-cri.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) mod tidy -diff

test: deps lint build
	$(GO) test -race -count=1 -timeout 25m $(PKGS)

# The chaos soak (test/soak_test.go): SOAK_SECS, SOAK_HOSTS, SOAK_SEED (a
# failure prints the seed to replay); RACE=1 builds the peers with -race.
soak: build
	WEFT_RACE=$(RACE) SOAK_SECS=$${SOAK_SECS:-300} $(GO) test $(if $(RACE),-race) -count=1 -timeout 60m -run '^TestSoak$$' -v ./test/

demo: build
	bash scripts/demo.sh up

demo-down:
	bash scripts/demo.sh down

bench: build
	bash scripts/bench.sh

clean:
	rm -rf $(BIN)
