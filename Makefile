# antnode: see README.md. Every target works on a fresh clone with Go >= 1.26.
GO       ?= go
BIN      := bin/antnode
FUZZTIME ?= 10s
PKGS     := ./...

.PHONY: all build test demo bench lint fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/antnode

# The test command of README.md and CI: vet, then every test with the race
# detector.
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

demo: build
	BIN=./$(BIN) bash scripts/demo.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Run every Fuzz target for FUZZTIME each (CI runs them briefly).
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

clean:
	rm -rf bin
