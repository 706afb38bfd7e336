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

# Fill the Go module cache for the Go test modules (tests/gocheck: the pprof checker;
# tests/compat: Pyroscope's official clients; tests/otlp: the OpenTelemetry Collector's OTLP
# profiles client), so later builds need no network.
warm_go_modules() {
  local module
  for module in tests/gocheck tests/compat tests/otlp; do
    log "go mod download ($module)"
    (cd "$ROOT/$module" && go mod download)
  done
}

# Real profiling agents for tests/agents.rs, kept under target/agents (ignored by git, kept
# between runs): pinned versions, each step skipped when it is already done.
AGENTS_DIR="$ROOT/target/agents"
PYROSCOPE_IO_VERSION=1.4.0

# pyroscope-io (the Python agent, a native wheel) in a venv: no system or --user site touched.
install_python_agent() {
  require_cmd python3 "Install Python 3.9+ (tests/agents/python needs it)."
  local venv="$AGENTS_DIR/venv" have=""
  if [ -x "$venv/bin/python" ]; then
    have="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("pyroscope-io"))' 2>/dev/null || true)"
  fi
  if [ "$have" = "$PYROSCOPE_IO_VERSION" ]; then
    log "pyroscope-io $have (venv $venv)"
    return 0
  fi
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  log "venv $venv: pip install pyroscope-io==$PYROSCOPE_IO_VERSION"
  mkdir -p "$AGENTS_DIR"
  python3 -m venv --clear "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "pyroscope-io==$PYROSCOPE_IO_VERSION"
}

# @pyroscope/nodejs as pinned by tests/agents/node/package-lock.json (npm ci only when it changed).
install_node_agent() {
  require_cmd node "Install Node.js 20.20.2+ (tests/agents/node needs it)."
  require_cmd npm "Install npm (tests/agents/node needs it)."
  local dir="$ROOT/tests/agents/node" stamp sum
  stamp="$dir/node_modules/.pyrite-lock.sha256"
  sum="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
    log "@pyroscope/nodejs installed (tests/agents/node)"
    return 0
  fi
  log "npm ci (tests/agents/node)"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$sum" >"$stamp"
}

# The pyroscope-rs agent (tests/agents/rust-agent), built once into target/agents/rust.
build_rust_agent() {
  log "cargo build tests/agents/rust-agent"
  CARGO_TARGET_DIR="$AGENTS_DIR/rust" cargo build --release --locked --quiet \
    --manifest-path "$ROOT/tests/agents/rust-agent/Cargo.toml"
}

# The web UI test (tests/ui.rs): Debian's Chromium driven by playwright-core (pinned in
# tests/ui/package-lock.json; it never downloads a browser of its own).
install_ui_browser() {
  apt_install chromium
  require_cmd node "Install Node.js 20+ (tests/ui needs it)."
  local lock="$ROOT/tests/ui/package-lock.json" stamp="$ROOT/tests/ui/node_modules/.lock-stamp"
  if [ -f "$stamp" ] && cmp -s "$lock" "$stamp"; then
    return 0
  fi
  log "npm ci (tests/ui)"
  (cd "$ROOT/tests/ui" && npm ci --no-audit --no-fund --silent)
  cp "$lock" "$stamp"
}

# tests/s3.rs starts ../shared/tools/micro-ceph.sh itself (it apt-installs Ceph when missing)
# and signs its bucket creation with curl.
check_s3_tools() {
  apt_install curl
}

# tests/alerts.rs checks and unit-tests deploy/alerts with Prometheus's own promtool;
# tests/recording_rules.rs runs the prometheus server (remote-write receiver) from the same package.
install_promtool() {
  apt_install prometheus
}

main() {
  check_rust
  check_go
  warm_go_modules
  install_python_agent
  install_node_agent
  build_rust_agent
  install_ui_browser
  check_s3_tools
  install_promtool
  log "ok"
}

main "$@"
