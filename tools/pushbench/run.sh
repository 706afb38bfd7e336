#!/usr/bin/env bash
# The push load benchmark: a release `pyrite serve` (defaults, no scraping) taking pushes from
# tools/pushbench through the official push.v1 connect client while a querier asks for a 5-minute
# flame graph every second; the server's CPU and RSS are read from /proc as in scrapebench.
#   tools/pushbench/run.sh [SECONDS=60] [CONCURRENCY=16] [SERVICES=100] [TENANTS=4]
# PUSHBENCH_FLAGS adds pushbench flags (e.g. "-slowloris 20 -heavy 3", see background.sh);
# PYRITE_PROFILE=debug uses the test build instead of a release one.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-60}
CONCURRENCY=${2:-16}
SERVICES=${3:-100}
TENANTS=${4:-4}
PORT=${PYRITE_PORT:-4042}

PROFILE=${PYRITE_PROFILE:-release}
if [[ $PROFILE == release ]]; then cargo build --release --bin pyrite >&2; else cargo build --bin pyrite >&2; fi
(cd tools/pushbench && GOFLAGS=-mod=mod go build -o ../../target/pushbench/pushbench .)
work=$(mktemp -d)
cleanup() { kill "${pyrite_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

printf 'scrape_configs: []\n' >"$work/pyrite.yaml"
RUST_LOG=warn target/$PROFILE/pyrite serve --config "$work/pyrite.yaml" --listen "127.0.0.1:$PORT" --data-dir "$work/data" 2>"$work/pyrite.log" &
pyrite_pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done

ticks() { awk '{print $14 + $15}' "/proc/$pyrite_pid/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$pyrite_pid/status"; }
hz=$(getconf CLK_TCK)
start_ticks=$(ticks)
start_s=$(date +%s.%N)
target/pushbench/pushbench -url "http://127.0.0.1:$PORT" -corpus ../shared/corpus/files \
  -duration "${DURATION}s" -concurrency "$CONCURRENCY" -services "$SERVICES" -tenants "$TENANTS" ${PUSHBENCH_FLAGS:-} &
bench_pid=$!
rss_sum=0; rss_n=0; rss_max=0
while kill -0 "$bench_pid" 2>/dev/null; do
  r=$(rss_kib); rss_sum=$((rss_sum + r)); rss_n=$((rss_n + 1)); if (( r > rss_max )); then rss_max=$r; fi
  sleep 1
done
wait "$bench_pid"
end_ticks=$(ticks)
end_s=$(date +%s.%N)
awk -v d0="$start_s" -v d1="$end_s" -v c0="$start_ticks" -v c1="$end_ticks" -v hz="$hz" -v rs="$rss_sum" -v rn="$rss_n" -v rm="$rss_max" 'BEGIN {
  secs = d1 - d0; cpu = (c1 - c0) / hz;
  printf "server: cpu=%.2fs (%.0f%% of one core) rss_avg=%.1fMiB rss_max=%.1fMiB\n", cpu, 100 * cpu / secs, rs / rn / 1024, rm / 1024
}'
if grep -q -E 'ERROR|panicked' "$work/pyrite.log"; then
  echo "server log has errors:" >&2; grep -E 'ERROR|panicked' "$work/pyrite.log" | head >&2
fi
