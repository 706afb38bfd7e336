#!/usr/bin/env bash
# The push load alone, then with a hostile background (20 connections trickling 50 MB push
# bodies, 3 clients running 10,000-matcher flame graph queries back to back), RUNS times each,
# alternating so both see the same machine; prints each run's push and background lines.
#   tools/pushbench/background.sh [SECONDS=30] [RUNS=3] [CONCURRENCY=16]
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-30}
RUNS=${2:-3}
CONCURRENCY=${3:-16}
for run in $(seq "$RUNS"); do
  for mode in alone background; do
    flags=""
    if [[ $mode == background ]]; then flags="-slowloris 20 -heavy 3"; fi
    echo "== run $run: $mode"
    PUSHBENCH_FLAGS="$flags" tools/pushbench/run.sh "$DURATION" "$CONCURRENCY" 100 4 2>/dev/null |
      grep -E '^(push|query|background|server):'
  done
done
