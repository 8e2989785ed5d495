# ferry's build, test and demo entry points. Run as root: the tests and the
# demo build network namespaces and load BPF programs.

GO ?= go
BIN := bin
GOFLAGS_TEST ?= -count=1 -timeout 30m

.PHONY: all deps generate check-generated build vet test test-unit demo demo-baseline \
	lab-clean clean

all: build

deps:
	@sh scripts/deps.sh

# Regenerates the bpf2go output (Go bindings and BPF objects) from bpf/ and headers/.
generate: deps
	cd pkg/datapath && $(GO) generate ./

check-generated: deps
	@sh scripts/check-generated.sh

build: deps
	$(GO) build -o $(BIN)/ ./cmd/ferry ./cmd/ferryd ./cmd/ferryctl

vet:
	$(GO) vet ./...

# Unit tests only: privileged tests skip themselves when not root.
test-unit:
	$(GO) test $(GOFLAGS_TEST) -short ./...

# Everything: stale generated code, vet, unit tests, privileged tests and the
# lab end-to-end tests.
test: deps check-generated vet build
	$(GO) test $(GOFLAGS_TEST) ./...

demo: deps build
	$(GO) run ./test/demo -mode ferry -bin $(CURDIR)/$(BIN)

# The same checks on the hand-wired setup that ferry replaces.
demo-baseline: deps
	$(GO) run ./test/demo -mode baseline

# Removes leftovers of lab runs that were killed before their teardown.
lab-clean:
	$(GO) run ./test/lab/cmd/ferrylab clean

clean:
	rm -rf $(BIN)
