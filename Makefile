# lastcall: drain a Kubernetes node before the cloud takes it away.

SHELL       := /bin/bash
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X github.com/lastcall/lastcall/pkg/version.Version=$(VERSION)
GO          ?= go
BIN         := bin
IMAGE       ?= lastcall:$(VERSION)
PLATFORMS   ?= linux/amd64,linux/arm64
TEST_TIMEOUT ?= 40m

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/lastcall
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/lastcall ./cmd/lastcall

.PHONY: tools
tools: ## Build (or reuse from the cache) etcd, the Kubernetes control plane, kwok and amazon-ec2-metadata-mock
	$(GO) run ./test/tools/build

.PHONY: vet
vet: ## Check formatting and run go vet
	@unformatted=$$(gofmt -l cmd pkg providers test); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted" >&2; exit 1; fi
	$(GO) vet ./...

.PHONY: test
test: vet tools ## Run every test, unit and integration (real control plane and emulators), under -race
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

.PHONY: demo
demo: tools ## Run lastcall end to end: a spot notice drains a node of a local control plane
	$(GO) run ./test/demo

.PHONY: bench
bench: tools ## Run the benchmarks against the local control plane and print their table
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./test/bench/

.PHONY: image
image: ## Build the container image for $(PLATFORMS) (needs docker buildx)
	docker buildx build --platform $(PLATFORMS) --build-arg VERSION=$(VERSION) -t $(IMAGE) .

.PHONY: clean
clean: ## Remove build output (the tool cache stays: see LASTCALL_CACHE_DIR)
	rm -rf $(BIN)
