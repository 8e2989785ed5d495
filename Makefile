# ferry's build, test and demo entry points. Run as root: the tests and the
# demo build network namespaces and load BPF programs.

GO ?= go
BIN := bin
GOFLAGS_TEST ?= -count=1 -timeout 30m

.PHONY: all deps generate check-generated build vet test test-unit test-vm demo \
	demo-baseline lab-clean clean

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
# lab end-to-end tests, then the privileged tests again in a VM on Debian 12's
# kernel when qemu is installed.
test: deps check-generated vet build
	$(GO) test $(GOFLAGS_TEST) ./...
	@if command -v qemu-system-x86_64 >/dev/null; then \
		$(MAKE) --no-print-directory test-vm; \
	else \
		echo "qemu-system-x86_64 is missing: skipping test-vm"; \
	fi

# The privileged tests in a qemu VM (no KVM needed) on the kernels in KERNEL,
# by default Debian 12's 6.1. scripts/vm.sh lists the settings.
test-vm: deps
	@bash scripts/vm.sh

demo: deps build
	$(GO) run ./test/demo -mode ferry -bin $(CURDIR)/$(BIN)

# The same checks on the hand-wired setup that ferry replaces.
demo-baseline: deps
	$(GO) run ./test/demo -mode baseline

.PHONY: bench bench-quick

# ferry against the hand-wired setup and a veth-pair ceiling on the namespace lab, in
# interleaved rounds; about 10 minutes. Not part of 'make test'. Rewrites
# docs/benchmarks.md.
bench: deps build
	$(GO) run ./test/bench -bin $(CURDIR)/$(BIN) -out docs/benchmarks.md

# The cross-node cases only, under 2 minutes. Fails when ferry is more than 20% slower
# than the baseline on cross-node throughput or latency.
bench-quick: deps build
	$(GO) run ./test/bench -quick -bin $(CURDIR)/$(BIN)

# Removes leftovers of lab runs that were killed before their teardown.
lab-clean:
	$(GO) run ./test/lab/cmd/ferrylab clean

clean:
	rm -rf $(BIN)
