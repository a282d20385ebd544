# workos-emailer build, test and demo. `make help` lists the targets.
GO       ?= go
BIN      := bin/workos-emailer
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
PREFIX   ?= /usr/local

.PHONY: help build test vet fmt-check fuzz demo e2e tools clean

help:
	@echo "make build   - build $(BIN)"
	@echo "make test    - vet, format check, unit and integration tests (race detector), short fuzzing"
	@echo "make demo    - run the whole pipeline against a simulated WorkOS; emails land in demo-out/outbox"
	@echo "make e2e     - crash suite (SIGKILL), store faults, SES v2 emulator, WorkOS OpenAPI conformance (needs npm)"
	@echo "make tools   - install the e2e tools (SES emulator, WorkOS OpenAPI spec) into .tools/node_modules"
	@echo "make clean   - remove build and demo output"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/workos-emailer

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Each fuzz target runs briefly; `go test -fuzz` takes one target at a time.
FUZZ_TIME ?= 5s
fuzz:
	$(GO) test ./worker -run '^$$' -fuzz '^FuzzParseEventData$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./mailer -run '^$$' -fuzz '^FuzzParseRecipient$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./mailer -run '^$$' -fuzz '^FuzzRenderEscapes$$' -fuzztime $(FUZZ_TIME)

test: vet fmt-check
	$(GO) test -race -count=1 ./...
	$(MAKE) fuzz

# Third-party test tools from npm, pinned by .tools/package-lock.json, installed next to the
# lock file and ignored by git.
TOOLS_STAMP := .tools/node_modules/.package-lock.json
tools: $(TOOLS_STAMP)
$(TOOLS_STAMP): .tools/package.json .tools/package-lock.json
	cd .tools && npm ci --no-audit --no-fund --loglevel=error

# The crash suite builds the daemon with -tags failpoint and kills it with SIGKILL; E2E_SEED
# replays a run, E2E_EVENTS and E2E_KILLS size it. REQUIRE_E2E_TOOLS turns a missing tool into a
# failure instead of a skip.
E2E_FLAGS ?= -v
e2e: tools
	REQUIRE_E2E_TOOLS=1 $(GO) test -tags e2e -count=1 -timeout 30m $(E2E_FLAGS) ./e2e

demo:
	$(GO) run ./cmd/workos-emailer demo --dir demo-out

clean:
	rm -rf bin demo-out outbox
