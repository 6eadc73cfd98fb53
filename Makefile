# egressd's build and test entry points. `make test` is the whole suite and
# is exactly what .ci/run calls; it fails (never skips) when something it
# needs, such as a Docker engine, is missing.

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: build test lint unit e2e fuzz hardening bench run

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/egressd ./cmd/egressd

run:
	$(GO) run ./cmd/egressd serve

test:
	./scripts/test

lint:
	./scripts/test lint

unit:
	./scripts/test unit

e2e:
	./scripts/test e2e

fuzz:
	./scripts/test fuzz

hardening:
	./scripts/test hardening

bench:
	./benchmarks/run
