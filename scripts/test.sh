#!/usr/bin/env bash
# Pyrite's full test suite, as CI runs it (`make test`, called by .ci/run):
# deps, rustfmt, clippy, the Go pprof checker, cargo tests, then Go tests.
#
# Rust tests find the Go checker through PYRITE_GOCHECK (see tests/gocheck/main.go).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

section() { printf '\n==> %s\n' "$*"; }

section "install deps"
scripts/install-deps.sh

# Before any cargo step: build.rs embeds ui/dist into the binary the tests run.
section "web UI (make ui)"
make ui

section "cargo fmt --check"
cargo fmt --all -- --check

section "cargo clippy"
cargo clippy --all-targets -- -D warnings

section "build Go pprof checker"
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$target_dir" in /*) ;; *) target_dir="$ROOT/$target_dir" ;; esac
gocheck_bin="$target_dir/gocheck/gocheck"
mkdir -p "$(dirname "$gocheck_bin")"
(cd tests/gocheck && go vet ./... && go build -o "$gocheck_bin" .)
export PYRITE_GOCHECK="$gocheck_bin"
echo "PYRITE_GOCHECK=$PYRITE_GOCHECK"

section "go vet (tests/compat)"
(cd tests/compat && go vet ./...)

section "go vet (tests/otlp)"
(cd tests/otlp && go vet ./...)

section "go vet (deploy/demo, the service make run scrapes)"
(cd deploy/demo && go vet ./...)

section "cargo test"
cargo test --all-targets

# Bounded coverage-guided fuzzing (fuzz/run.sh, BENCHMARKS.md "Fuzzing"): each of the six
# targets for PYRITE_FUZZ_SECONDS (0 skips); a crash fails the run.
fuzz_seconds="${PYRITE_FUZZ_SECONDS:-40}"
if [ "$fuzz_seconds" -gt 0 ]; then
  section "fuzz (AFL++, ${fuzz_seconds}s per target)"
  fuzz/run.sh "$fuzz_seconds"
fi

section "go test (tests/gocheck)"
if compgen -G "tests/gocheck/*_test.go" >/dev/null; then
  (cd tests/gocheck && go test ./...)
else
  echo "no Go tests in tests/gocheck"
fi

section "all tests passed"
