#!/usr/bin/env bash
# Installs (or checks for) what Pyrite's tests need on a fresh Debian machine.
# Idempotent: safe to run before every test run; steps that are already done are quick no-ops.
#
# The machine image is expected to provide go, cargo (rustup, with rustfmt and clippy), node
# and python3; toolchains cannot be downloaded here, so a missing one is a clear failure,
# not an install attempt. Debian packages may be installed with `apt_install` (registries:
# Debian, crates.io, the Go module proxy, npm, PyPI).
#
# To add a dependency, write a function and call it from main():
#   later: apt_install chromium  (UI screenshots), npm packages for ui/, micro-ceph (S3 tests)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf 'install-deps: %s\n' "$*"; }
die() {
  printf 'install-deps: ERROR: %s\n' "$*" >&2
  exit 1
}

# require_cmd NAME HINT: fail with HINT unless NAME is on PATH.
require_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH. $2"
}

# apt_install PKG...: install the Debian packages not installed yet (runs apt-get update once).
APT_UPDATED=0
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    "${sudo[@]}" apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
}

check_rust() {
  require_cmd cargo "Install Rust 1.95+ with rustup (https://rustup.rs) and add ~/.cargo/bin to PATH."
  cargo fmt --version >/dev/null 2>&1 || die "rustfmt missing: rustup component add rustfmt"
  cargo clippy --version >/dev/null 2>&1 || die "clippy missing: rustup component add clippy"
  log "$(cargo --version)"
}

check_go() {
  require_cmd go "Install Go 1.26+ (https://go.dev/dl) and add its bin/ to PATH (tests/gocheck needs it)."
  log "$(go version)"
}

# Fill the Go module cache for tests/gocheck, so later builds need no network.
warm_go_modules() {
  log "go mod download (tests/gocheck)"
  (cd "$ROOT/tests/gocheck" && go mod download)
}

main() {
  check_rust
  check_go
  warm_go_modules
  log "ok"
}

main "$@"
