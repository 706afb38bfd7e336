#!/usr/bin/env bash
# `make run`: Pyrite with something to show. Builds Pyrite and the demo service
# (deploy/demo, Go, standard library only), starts the demo on a free loopback port, then
# `pyrite serve --config deploy/demo/pyrite.yaml`, which scrapes the demo's five Go profiles
# every 10 s and Pyrite's own CPU profile every 15 s. Ctrl-C (or SIGTERM) stops both; Pyrite
# flushes its head first. Data goes to ./data, as with `pyrite serve` on its defaults.
#
# Environment:
#   PYRITE_LISTEN        Pyrite's listen address (default 0.0.0.0:4040)
#   PYRITE_RUN_PROFILE   cargo profile Pyrite is built with (default release; tests use dev
#                        to reuse the dependencies `cargo test` built)
#   CARGO, CARGO_TARGET_DIR   as for cargo; the demo binary goes to $CARGO_TARGET_DIR/demo
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf 'run-demo: %s\n' "$*" >&2; }
die() {
  printf 'run-demo: ERROR: %s\n' "$*" >&2
  exit 1
}

listen="${PYRITE_LISTEN:-0.0.0.0:4040}"
profile="${PYRITE_RUN_PROFILE:-release}"
cargo="${CARGO:-cargo}"
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$target_dir" in /*) ;; *) target_dir="$ROOT/$target_dir" ;; esac
# cargo's "dev" profile builds into target/debug; every other profile into its own name.
case "$profile" in dev) profile_dir=debug ;; *) profile_dir="$profile" ;; esac

# What deploy/demo/pyrite.yaml reads: the targets of its two file_sd jobs.
demo_dir="$ROOT/data/demo"
targets_dir="$demo_dir/targets"

command -v go >/dev/null 2>&1 || die "'go' not found on PATH: the demo service is a Go program (deploy/demo)"

log "building the demo service (deploy/demo)"
demo_bin="$target_dir/demo/pyrite-demo"
mkdir -p "$(dirname "$demo_bin")"
(cd deploy/demo && go build -o "$demo_bin" .)

log "building pyrite ($profile profile)"
"$cargo" build --profile "$profile" --bin pyrite
pyrite_bin="$target_dir/$profile_dir/pyrite"
[ -x "$pyrite_bin" ] || die "cargo built no $pyrite_bin"

demo_pid=""
pyrite_pid=""
# Stops Pyrite first (so its last scrapes land and it flushes), then the demo. Safe to run twice.
stop() {
  trap - INT TERM EXIT
  if [ -n "$pyrite_pid" ] && kill -0 "$pyrite_pid" 2>/dev/null; then
    kill -TERM "$pyrite_pid" 2>/dev/null || true
  fi
  if [ -n "$pyrite_pid" ]; then wait "$pyrite_pid" 2>/dev/null || true; fi
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill -TERM "$demo_pid" 2>/dev/null || true
  fi
  if [ -n "$demo_pid" ]; then wait "$demo_pid" 2>/dev/null || true; fi
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

mkdir -p "$targets_dir"
addr_file="$demo_dir/demo.addr"
rm -f "$addr_file"
"$demo_bin" -listen 127.0.0.1:0 -addr-file "$addr_file" &
demo_pid=$!
for _ in $(seq 100); do
  [ -s "$addr_file" ] && break
  kill -0 "$demo_pid" 2>/dev/null || die "the demo service exited at start"
  sleep 0.1
done
[ -s "$addr_file" ] || die "the demo service wrote no address to $addr_file within 10 s"
demo_address="$(tr -d '[:space:]' <"$addr_file")"

# Pyrite scrapes itself where it listens; a wildcard address is reached on loopback.
listen_host="${listen%:*}"
listen_port="${listen##*:}"
case "$listen_host" in
  0.0.0.0 | "") self_host=127.0.0.1 ;;
  "[::]") self_host="[::1]" ;;
  *) self_host="$listen_host" ;;
esac
# Written whole then renamed: file discovery never reads half a file.
write_targets() {
  printf '[{"targets": ["%s"]}]\n' "$2" >"$targets_dir/$1.tmp"
  mv "$targets_dir/$1.tmp" "$targets_dir/$1"
}
write_targets pyrite-demo.json "$demo_address"
write_targets pyrite.json "$self_host:$listen_port"

"$pyrite_bin" serve --config deploy/demo/pyrite.yaml --listen "$listen" &
pyrite_pid=$!

if command -v curl >/dev/null 2>&1; then
  for _ in $(seq 300); do
    if curl -fsS -o /dev/null "http://$self_host:$listen_port/ready" 2>/dev/null; then
      log "Pyrite is ready: http://localhost:$listen_port/ (demo service: http://$demo_address/debug/pprof/);" \
        "flame graphs of service_name=\"pyrite-demo\" within a minute. Ctrl-C stops both."
      break
    fi
    kill -0 "$pyrite_pid" 2>/dev/null || break
    sleep 0.2
  done
fi

# Returns when Pyrite exits by itself (its status is the script's) or a trapped signal arrives.
status=0
wait "$pyrite_pid" || status=$?
pyrite_pid=""
stop
exit "$status"
