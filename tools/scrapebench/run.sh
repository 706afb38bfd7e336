#!/usr/bin/env bash
# The scraping benchmark: a release `pyrite serve` scraping TARGETS simulated Go targets
# (scrapebench, serving corpus profiles) every 15 s with the five default profiles, measured
# from /proc: CPU = (utime + stime) ticks over the run, RSS sampled every 5 s.
#   tools/scrapebench/run.sh [TARGETS=200] [SECONDS=360] [WARMUP=30]
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGETS=${1:-200}
DURATION=${2:-360}
WARMUP=${3:-30}
BASE_PORT=${BASE_PORT:-20000}
PORT=${PYRITE_PORT:-4041}

cargo build --release --bin pyrite >&2
(cd tools/scrapebench && go build -o ../../target/scrapebench/scrapebench .)
work=$(mktemp -d)
cleanup() { kill "${bench_pid:-}" "${pyrite_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

target/scrapebench/scrapebench -corpus ../shared/corpus/files -base-port "$BASE_PORT" -targets "$TARGETS" 2>"$work/bench.log" &
bench_pid=$!
{
  echo "scrape_configs:"
  echo "  - job_name: bench"
  echo "    scrape_interval: 15s"
  echo "    static_configs:"
  echo "      - labels: { service_name: bench }"
  echo "        targets:"
  for ((i = 0; i < TARGETS; i++)); do echo "          - 127.0.0.1:$((BASE_PORT + i))"; done
} >"$work/pyrite.yaml"
sleep 1
RUST_LOG=warn target/release/pyrite serve --config "$work/pyrite.yaml" --listen "127.0.0.1:$PORT" --data-dir "$work/data" 2>"$work/pyrite.log" &
pyrite_pid=$!
sleep "$WARMUP"

ticks() { awk '{print $14 + $15}' "/proc/$pyrite_pid/stat"; }
user_ticks() { awk '{print $14}' "/proc/$pyrite_pid/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$pyrite_pid/status"; }
hz=$(getconf CLK_TCK)
start_ticks=$(ticks)
start_user=$(user_ticks)
start_s=$(date +%s.%N)
rss_sum=0; rss_n=0; rss_max=0
end=$(( $(date +%s) + DURATION ))
while (( $(date +%s) < end )); do
  r=$(rss_kib); rss_sum=$((rss_sum + r)); rss_n=$((rss_n + 1)); if (( r > rss_max )); then rss_max=$r; fi
  sleep 5
done
end_ticks=$(ticks)
end_user=$(user_ticks)
end_s=$(date +%s.%N)
metrics=$(curl -s "http://127.0.0.1:$PORT/metrics")
up=$(grep -c '^pyrite_scrape_up{.*} 1$' <<<"$metrics" || true)
down=$(grep -c '^pyrite_scrape_up{.*} 0$' <<<"$metrics" || true)
failures=$(grep '^pyrite_scrape_failures_total' <<<"$metrics" | awk '{s += $2} END {print s + 0}' || true)
awk -v t="$TARGETS" -v d0="$start_s" -v d1="$end_s" -v c0="$start_ticks" -v c1="$end_ticks" -v hz="$hz" -v u0="$start_user" -v u1="$end_user" \
    -v rs="$rss_sum" -v rn="$rss_n" -v rm="$rss_max" -v up="$up" -v down="$down" -v f="$failures" 'BEGIN {
  secs = d1 - d0; cpu = (c1 - c0) / hz;
  printf "targets=%d window=%.0fs cpu=%.2fs (%.2f%% of one core; user %.2fs, system %.2fs) rss_avg=%.1fMiB rss_max=%.1fMiB up=%d down=%d failures=%d\n",
    t, secs, cpu, 100 * cpu / secs, (u1 - u0) / hz, cpu - (u1 - u0) / hz, rs / rn / 1024, rm / 1024, up, down, f
}'
grep -c "scrape failed" "$work/pyrite.log" | sed 's/^/scrape-failure log lines: /' || true
