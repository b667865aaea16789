# spin-broker: a message broker for finite-state-machine work.
# `make help` lists the targets.

GO      ?= go
# make run ADDR=localhost:9090 DB=/tmp/broker.db; unset, serve's defaults
# (localhost:8080, ./spinbroker.db) or SPINBROKER_ADDR / SPINBROKER_DB apply.
DB      ?=
ADDR    ?=
FUZZTIME ?= 30s
# Every fuzz target, as package:Target.
FUZZ_TARGETS := \
	./internal/httpapi:FuzzRequest \
	./internal/httpapi:FuzzDecode \
	./internal/httpapi:FuzzCheckKeys \
	./internal/httpapi:FuzzReadableEscapes \
	./internal/httpapi:FuzzIndentFits \
	./internal/httpapi:FuzzQuery \
	./internal/httpapi:FuzzHeaders \
	./internal/httpapi:FuzzSafeNext \
	./internal/httpapi:FuzzRoute \
	./internal/store:FuzzCursor \
	./internal/jsonenc:FuzzCommand \
	./cmd/spinbroker:FuzzParseKV \
	./cmd/spinbroker:FuzzTableCells \
	./cmd/spinbroker:FuzzNotBefore \
	./cmd/spinbroker:FuzzLifetime \
	.:FuzzValidate \
	.:FuzzParseDuration \
	.:FuzzTruncate \
	./agent:FuzzDecode \
	./client:FuzzEvents \
	./client:FuzzDecodeError \
	./internal/hostpath:FuzzConfinement \
	./internal/hostpath:FuzzQcow2Size \
	./internal/hostpath:FuzzHandlers \
	./internal/emulation:FuzzRenderUnit \
	./internal/emulation:FuzzVMConfig \
	./internal/emulation:FuzzQMP

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: build ## Start a broker on localhost:8080 with an embedded SQLite database (./spinbroker.db); ADDR=, DB= to change them
	bin/spinbroker serve $(if $(ADDR),--addr $(ADDR)) $(if $(DB),--db $(DB))

# The binaries say which build they are (--version, /metrics): the commit,
# stamped from git when there is one (-buildvcs=auto, whatever GOFLAGS
# says), and a version a packager gives as VERSION=v1.2.3.
BUILDFLAGS := -buildvcs=auto $(if $(VERSION),-ldflags "-X github.com/spin-broker/spinbroker/internal/version.version=$(VERSION)")

.PHONY: build
build: ## Build spinbroker, sa-host-path and sa-emulation into ./bin (VERSION=v1.2.3 to name a release)
	$(GO) build $(BUILDFLAGS) -o bin/ ./cmd/...

.PHONY: deps
deps: ## Install what the tests need and the machine lacks (Chromium, QEMU, curl, jq, systemd-analyze)
	@bash scripts/install-test-deps.sh

.PHONY: test
test: deps ## Run every test, with the race detector
	$(GO) test -race -shuffle=on -count=1 -timeout 30m ./...
	cd bench/peers && $(GO) test -race -count=1 -timeout 10m ./...

.PHONY: test-long
test-long: ## The model test with more seeds and steps (no race detector)
	$(GO) test -count=1 -run TestModel ./internal/store -seeds 20 -steps 10000 -timeout 60m

.PHONY: lint
lint: ## go vet, gofmt, staticcheck, and a build for macOS, FreeBSD and Windows
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	for os in darwin freebsd windows; do GOOS=$$os GOARCH=amd64 $(GO) build -o /dev/null ./... || exit 1; done
	cd bench/peers && $(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: the files above need formatting"; exit 1; }
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 30s)
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test $$pkg -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) || exit 1; \
	done

.PHONY: bench
bench: ## Store benchmarks (next at 1k/100k/1M backlogs, full cycle, claim cycle)
	$(GO) test ./internal/store -run '^$$' -bench . -benchtime 3000x -count 3

.PHONY: bench-peers
bench-peers: ## spin-broker beside River and goqite in one run, with the ratios
	bash scripts/bench-peers.sh

.PHONY: clean
clean: ## Remove build output
	rm -rf bin
