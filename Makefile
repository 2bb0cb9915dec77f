# docket: `make run` starts the server on the embedded store, `make test`
# runs every test with the race detector.
GO ?= go

.PHONY: run test build bench vet fmt

run:
	$(GO) run ./cmd/docket serve $(ARGS)

build:
	$(GO) build -o bin/docket ./cmd/docket

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...
	cd bench/compare && $(GO) vet ./... && $(GO) test -count=1 ./...

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./internal/engine/
	$(GO) run ./cmd/docket bench

fmt:
	gofmt -w $$(git ls-files '*.go')
