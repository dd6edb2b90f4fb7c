# lastcall: drain a Kubernetes node before the cloud takes it away.

SHELL       := /bin/bash
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X github.com/lastcall/lastcall/pkg/version.Version=$(VERSION)
GO          ?= go
BIN         := bin
IMAGE       ?= lastcall:$(VERSION)
PLATFORMS   ?= linux/amd64,linux/arm64
# make dist also builds the agent for Windows nodes; no image is built for it.
DIST_PLATFORMS ?= $(PLATFORMS),windows/amd64
# The kubectl plugin runs where kubectl does: operators' laptops too.
PLUGIN_PLATFORMS ?= $(PLATFORMS),darwin/amd64,darwin/arm64,windows/amd64
TEST_TIMEOUT ?= 40m
FUZZTIME    ?= 30s
# make test fuzzes a count of inputs, not a time: Go 1.26's fuzz coordinator
# can fail a target with a bare "context deadline exceeded" as a -fuzztime
# duration ends on a busy machine (golang/go#75804); a count has no deadline.
FUZZTIME_SHORT ?= 5000x
# The packages whose parsers are fuzzed; every func FuzzX(f *testing.F) in
# their tests is a target.
FUZZ_PKGS   := ./providers/aws/messages ./providers/aws/imds ./providers/gce ./providers/azure ./pkg/app
DEB_PACKAGES := prometheus
comma       := ,

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/lastcall and the kubectl plugin bin/kubectl-lastcall
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/lastcall ./cmd/lastcall
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/kubectl-lastcall ./cmd/kubectl-lastcall

.PHONY: dist
dist: ## Cross-compile bin/linux-{amd64,arm64}/lastcall, as the image does, and bin/windows-amd64/lastcall.exe; the kubectl plugin for linux, darwin and windows
	@for p in $(subst $(comma), ,$(DIST_PLATFORMS)); do \
	  os=$${p%/*}; arch=$${p#*/}; ext=; [ "$$os" = windows ] && ext=.exe; \
	  echo "lastcall $$os/$$arch"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/$$os-$$arch/lastcall$$ext ./cmd/lastcall || exit 1; \
	done
	@for p in $(subst $(comma), ,$(PLUGIN_PLATFORMS)); do \
	  os=$${p%/*}; arch=$${p#*/}; ext=; [ "$$os" = windows ] && ext=.exe; \
	  echo "kubectl-lastcall $$os/$$arch"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/$$os-$$arch/kubectl-lastcall$$ext ./cmd/kubectl-lastcall || exit 1; \
	done

# The product's packages, which must build and vet for Windows nodes too.
PRODUCT_PKGS := ./cmd/... ./pkg/... ./providers/...

.PHONY: cross
cross: ## Build the agent for windows/amd64, and the kubectl plugin for darwin/arm64 and windows/amd64; go vet the product's packages for Windows
	CGO_ENABLED=0 GOOS=windows GOARCH=amd64 $(GO) build -trimpath -o /dev/null ./cmd/lastcall ./cmd/kubectl-lastcall
	CGO_ENABLED=0 GOOS=darwin GOARCH=arm64 $(GO) build -trimpath -o /dev/null ./cmd/kubectl-lastcall
	GOOS=windows GOARCH=amd64 $(GO) vet $(PRODUCT_PKGS)

.PHONY: debs
debs: ## Install the Debian packages the tests use (prometheus: promtool and the scrape test), if missing
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing Debian packages: $(DEB_PACKAGES)"; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES) >/dev/null || \
	  { echo "could not install $(DEB_PACKAGES) with apt-get; install them and retry" >&2; exit 1; }; \
	fi

.PHONY: tools
tools: debs ## Build (or reuse from the cache) etcd, the Kubernetes control plane, kwok, amazon-ec2-metadata-mock and Helm; install Prometheus
	$(GO) run ./test/tools/build

.PHONY: manifests
manifests: ## Render the plain manifests under deploy/ from the chart
	$(GO) run ./test/chart/manifests

.PHONY: chart-docs
chart-docs: ## Write charts/lastcall/README.md from values.yaml with helm-docs
	$(GO) run ./test/chart/readme

.PHONY: lint-chart
lint-chart: ## Lint the Helm chart
	$(GO) test -count=1 -run 'TestLint|TestSchema|TestTemplateMatrix' ./test/chart/

.PHONY: vet
vet: ## Check formatting and run go vet
	@unformatted=$$(gofmt -l cmd pkg providers test); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted" >&2; exit 1; fi
	$(GO) vet ./...

.PHONY: test
test: vet cross tools fuzz-short ## Run every test, unit and integration (real control plane and emulators), under -race; fuzz each parser briefly
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

# fuzz-each runs every fuzz target of $(FUZZ_PKGS) for $(1), one go test
# per target (-fuzz takes one). What the fuzzer finds interesting stays in
# its cache ($(GOCACHE)/fuzz); only a failing input is written, to the
# package's testdata/fuzz/, to be kept as a regression seed once fixed.
define fuzz-each
	@set -e; for pkg in $(FUZZ_PKGS); do \
	  for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(f \*testing\.F).*/\1/p' $$pkg/*_test.go); do \
	    echo "$$pkg $$target ($(1))"; \
	    $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(1) $$pkg; \
	  done; \
	done
endef

.PHONY: fuzz
fuzz: ## Fuzz every parser (AWS messages and IMDS, GCE, Azure, flags), FUZZTIME=30s per target
	$(call fuzz-each,$(FUZZTIME))

.PHONY: fuzz-short
fuzz-short: ## Fuzz every parser for FUZZTIME_SHORT=5000x inputs per target, as make test does
	$(call fuzz-each,$(FUZZTIME_SHORT))

.PHONY: demo
demo: tools ## Run lastcall end to end: a spot notice drains a node of a local control plane
	$(GO) run ./test/demo

.PHONY: bench
bench: tools ## Run the benchmarks against the local control plane and print their table
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 120m ./test/bench/

.PHONY: image
image: ## Build the container image for $(PLATFORMS) (needs docker buildx)
	docker buildx build --platform $(PLATFORMS) --build-arg VERSION=$(VERSION) -t $(IMAGE) .

.PHONY: clean
clean: ## Remove build output (the tool cache stays: see LASTCALL_CACHE_DIR)
	rm -rf $(BIN)
