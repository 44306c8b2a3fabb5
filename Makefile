# recommender: learn least-privilege Cilium network policy from Hubble flows.
SHELL := /usr/bin/env bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.Version=$(VERSION)
BIN := bin/recommender
IMAGE ?= recommender:$(VERSION)

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the static recommender binary into bin/
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/recommender

.PHONY: test
test: ## Run every test (installs and caches etcd, kube-apiserver, hubble CLI)
	bash scripts/test.sh

.PHONY: bench
bench: ## Run the benchmarks and print one benchstat-friendly table
	bash scripts/bench.sh

.PHONY: eval
eval: ## Learn policies from a generated week, score them on later days and attacks (README table)
	go run ./hack/eval

.PHONY: demo
demo: build ## Recommend policies from the bundled recorded flows into out/
	$(BIN) recommend --flows testdata/flows/starwars.jsonl --flows testdata/flows/boutique.jsonl --out out

.PHONY: testdata
testdata: ## Regenerate testdata/flows from the deterministic generator
	go run ./hack/genflows -out testdata/flows

.PHONY: lint
lint: ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	go vet ./...
	go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

.PHONY: docker
docker: ## Build the container image (needs a Docker engine)
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

.PHONY: deploy
deploy: ## Apply deploy/ to the current kubectl context
	kubectl apply -k deploy/

.PHONY: docs
docs: ## Regenerate docs/flags.md and docs/metrics.md from the code
	go test ./cmd/recommender -run TestFlagsDocUpToDate -update && go test ./pkg/daemon -run TestMetricsDocUpToDate -update
