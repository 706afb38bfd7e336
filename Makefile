# Pyrite developer entry points. `make test` is what CI runs (.ci/run).
CARGO ?= cargo

.PHONY: run test fmt lint bench fuzz gocheck agents

## run: Pyrite (release build) and the demo service it scrapes (deploy/demo); Ctrl-C stops both.
## Pyrite alone on its defaults: cargo run --release -- serve
run:
	CARGO="$(CARGO)" scripts/run-demo.sh

## test: everything CI checks: deps, fmt, clippy, Rust tests, Go checker tests
test:
	scripts/test.sh

## fmt: format all Rust code in place
fmt:
	$(CARGO) fmt --all

## lint: clippy on every target, warnings are errors
lint:
	$(CARGO) clippy --all-targets -- -D warnings

## bench: criterion benchmarks
bench:
	$(CARGO) bench

## fuzz: AFL++ over the five fuzz targets, FUZZ_SECONDS each (default 40; BENCHMARKS.md "Fuzzing")
fuzz:
	fuzz/run.sh $(or $(FUZZ_SECONDS),40)

## gocheck: build the Go pprof checker into target/gocheck/gocheck
gocheck:
	mkdir -p target/gocheck
	cd tests/gocheck && go build -o ../../target/gocheck/gocheck .

## agents: the real Pyroscope agents (Python, Rust, Node.js) against a real server
agents:
	scripts/install-deps.sh
	$(CARGO) test --test agents -- --nocapture
