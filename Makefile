# workos-emailer build, test and demo. `make help` lists the targets.
GO       ?= go
BIN      := bin/workos-emailer
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
PREFIX   ?= /usr/local

.PHONY: help build test vet fmt-check fuzz demo e2e tools clean install uninstall bench

help:
	@echo "make build   - build $(BIN)"
	@echo "make test    - vet, format check, unit and integration tests (race detector), short fuzzing"
	@echo "make demo    - run the whole pipeline against a simulated WorkOS; emails land in demo-out/outbox"
	@echo "make bench   - benchmark the pipeline against the fakes and the naive loop, and a backfill under WorkOS's rate limits (BENCH_FLAGS='-quick', '-markdown', '-scenarios limits'; see BENCHMARKS.md)"
	@echo "make e2e     - crash suite (SIGKILL), store faults, SES v2 emulator, WorkOS OpenAPI conformance, preview gallery (needs npm, chromium)"
	@echo "make tools   - install the test tools (SES emulator, WorkOS OpenAPI spec, html-validate) into .tools/node_modules"
	@echo "make install - binary, systemd units, README and docs/, and the sample config if none (PREFIX=$(PREFIX), DESTDIR)"
	@echo "make uninstall - remove what install put in place except config and state"
	@echo "make clean   - remove build and demo output"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/workos-emailer

vet:
	$(GO) vet ./...
	$(GO) vet -tags nodemo ./cmd/workos-emailer

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Each fuzz target runs briefly; `go test -fuzz` takes one target at a time. The budget is a
# count of inputs, not a duration: with a duration, Go 1.26's fuzz coordinator can report its
# own stop as "context deadline exceeded" (golang/go#75804, fixed in Go 1.27) and fail a run
# that found nothing. 20000 inputs take a few seconds per target.
FUZZ_TIME ?= 20000x
fuzz:
	$(GO) test ./worker -run '^$$' -fuzz '^FuzzParseEvent$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./mailer -run '^$$' -fuzz '^FuzzParseRecipient$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./mailer -run '^$$' -fuzz '^FuzzRenderEscapes$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./sendapi -run '^$$' -fuzz '^FuzzDecodeRequest$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./internal/sealed -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./sesfeedback -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZ_TIME)

# The tests' JSON goes through cmd/testreport, which prints what go test prints and ends with a
# line naming every skipped test and why; go test's own exit status is kept.
test: vet fmt-check
	@mkdir -p bin && $(GO) build -o bin/testreport ./cmd/testreport
	@{ $(GO) test -race -count=1 -json ./...; echo $$? > bin/.test-status; } | bin/testreport && [ "$$(cat bin/.test-status)" = 0 ]
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

# The benchmark (cmd/bench, not part of the release binary) re-executes itself for every run so
# each measures a fresh process; results go to stdout, progress to stderr. BENCHMARKS.md says
# what it measures.
BENCH_FLAGS ?=
bench:
	@$(GO) build -o bin/bench ./cmd/bench
	@bin/bench $(BENCH_FLAGS)

clean:
	rm -rf bin demo-out outbox

# Installed paths. Units go to $(PREFIX)/lib/systemd/system (/usr/local/lib/systemd/system by
# default), which systemd searches for units the administrator installs; /etc/systemd/system
# stays free for the operator's own overrides (systemctl edit), which uninstall never touches.
# Packagers set PREFIX=/usr. The units are rewritten to the installed paths.
BINDIR     ?= $(PREFIX)/bin
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DOCDIR     ?= $(PREFIX)/share/doc/workos-emailer
SYSCONFDIR ?= /etc
UNITS      := workos-emailer.service workos-emailer@.service

# install builds the binary only if it is missing, so `make build && sudo make install` works
# where root has no Go toolchain.
install:
	@test -x $(BIN) || $(MAKE) build BIN=$(BIN)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/workos-emailer
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/workos-emailer
	for u in $(UNITS); do \
		sed -e 's#/usr/local/bin/workos-emailer#$(BINDIR)/workos-emailer#g' \
		    -e 's#/usr/local/share/doc/workos-emailer#$(DOCDIR)#g' \
		    -e 's#/etc/workos-emailer/#$(SYSCONFDIR)/workos-emailer/#g' \
		    deploy/$$u > $(DESTDIR)$(UNITDIR)/$$u.tmp && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.tmp && \
		mv $(DESTDIR)$(UNITDIR)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	@# The README links into docs/: install it beside the README so the links resolve.
	install -d $(DESTDIR)$(DOCDIR)/docs
	install -m 0644 docs/*.md $(DESTDIR)$(DOCDIR)/docs/
	@# The config holds no secrets and must be readable by the service's dynamic user; an
	@# existing one is the operator's and is never overwritten. It names the unit's
	@# StateDirectory store, so operator commands run from a shell find the same file.
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/workos-emailer/config.yaml ]; then \
		echo "kept existing $(DESTDIR)$(SYSCONFDIR)/workos-emailer/config.yaml"; \
	else \
		sed -e 's#^  \# path: ./workos-emailer.db$$#  path: /var/lib/workos-emailer/state.db#' config.yaml \
			> $(DESTDIR)$(SYSCONFDIR)/workos-emailer/config.yaml && \
		chmod 0644 $(DESTDIR)$(SYSCONFDIR)/workos-emailer/config.yaml && \
		echo "installed sample $(DESTDIR)$(SYSCONFDIR)/workos-emailer/config.yaml: edit mailer.from"; \
	fi
	@echo "next: put WORKOS_API_KEY=... in $(SYSCONFDIR)/workos-emailer/env (mode 0600), then"
	@echo "      systemctl daemon-reload && systemctl enable --now workos-emailer"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/workos-emailer $(DESTDIR)$(DOCDIR)/README.md
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$$u; done
	rm -f $(DESTDIR)$(DOCDIR)/docs/*.md
	-rmdir $(DESTDIR)$(DOCDIR)/docs 2>/dev/null
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null
	@echo "kept $(SYSCONFDIR)/workos-emailer and the state in /var/lib/workos-emailer"
