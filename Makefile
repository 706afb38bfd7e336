# Pyrite developer entry points. `make test` is what CI runs (.ci/run).
CARGO ?= cargo

.PHONY: run test fmt lint bench fuzz gocheck agents ui

## run: Pyrite (release build, UI built first) and the demo service it scrapes (deploy/demo);
## Ctrl-C stops both. Pyrite alone on its defaults: cargo run --release -- serve
run: ui
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

## fuzz: AFL++ over the six fuzz targets, FUZZ_SECONDS each (default 40; BENCHMARKS.md "Fuzzing")
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

## ui: the web UI (ui/ → ui/dist, embedded by the next cargo build): npm ci when the lockfile
## changed, the Vite build when a source did
ui: ui/dist/index.html

UI_SOURCES := $(shell find ui/src ui/icons -type f 2>/dev/null) ui/index.html ui/vite.config.ts ui/tsconfig.json ui/package.json

ui/node_modules/.pyrite-lock: ui/package-lock.json
	cd ui && npm ci --no-audit --no-fund --loglevel=error
	cp ui/package-lock.json $@

ui/dist/index.html: ui/node_modules/.pyrite-lock $(UI_SOURCES)
	cd ui && npm run --silent build
