# docket: `make run` starts the server on the embedded store with the demo
# queue and the PDF app, `make test` runs every test with the race detector.
GO ?= go

.PHONY: run setup test build bench vet fmt

run: setup
	$(GO) run ./cmd/docket serve --app pdf $(ARGS)

# The PDF app's programs (pdftoppm, pdfinfo, tesseract with English data),
# installed with apt-get when one is missing.
setup:
	scripts/install-pdf-tools.sh

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
