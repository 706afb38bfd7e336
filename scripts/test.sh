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

section "cargo test"
cargo test --all-targets

section "go test (tests/gocheck)"
if compgen -G "tests/gocheck/*_test.go" >/dev/null; then
  (cd tests/gocheck && go test ./...)
else
  echo "no Go tests in tests/gocheck"
fi

section "all tests passed"
