#!/usr/bin/env bash
# Bounded coverage-guided fuzzing of Pyrite's untrusted-input parsers with AFL++ (cargo-afl,
# stable toolchain):  fuzz/run.sh [seconds-per-target] [target...]
#
# Installs cargo-afl 0.18.2 if missing (its install builds AFL++), builds the targets
# instrumented, writes the seeds (seed.sh), runs each target for the given seconds (default 40)
# and prints its stats. Exits non-zero if a target found a crash (each crash's path and the
# target's panic on replay are printed; the inputs stay under fuzz/out/<target>/default/crashes)
# or if AFL++ itself failed. Hangs are listed but do not fail the run.
# Every build and run is niced (PYRITE_FUZZ_NICE, default 15): the machine may be shared.
# PYRITE_FUZZ_SKIP_BUILD=1 fuzzes the targets already built (e.g. to replay a run).
set -euo pipefail

FUZZ="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$FUZZ"
seconds="${1:-40}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pprof wal block folded selector otlp)
nice_cmd=(nice -n "${PYRITE_FUZZ_NICE:-15}")
# Outside the clone by default, so CI runs on one machine reuse the instrumented build (a cold
# one is tens of minutes; a warm one rebuilds only what changed).
target_dir="${CARGO_TARGET_DIR:-${PYRITE_FUZZ_TARGET_DIR:-$HOME/.cache/pyrite/fuzz-target}}"
# cargo-afl builds every crate with one codegen unit at opt-level 3 by default: over an hour
# for Pyrite's tree on 2 cores. Opt-level 1 builds several times faster and still runs tens of
# thousands of execs per target in CI's bounded runs; set AFL_OPT_LEVEL=3 for long campaigns.
export AFL_OPT_LEVEL="${AFL_OPT_LEVEL:-1}"
export CARGO_TARGET_DIR="$target_dir"

step() { printf '\n--> %s\n' "$*"; }
elapsed() { echo $(( $(date +%s) - $1 ))s; }

step "cargo-afl"
started=$(date +%s)
if ! cargo afl --version 2>/dev/null | grep -q '^cargo-afl 0\.18\.2 '; then
  "${nice_cmd[@]}" cargo install cargo-afl --version 0.18.2 --locked
fi
# The install builds AFL++ for the current toolchain; `config --build` does when it did not.
if ! config_out="$("${nice_cmd[@]}" cargo afl config --build 2>&1)"; then
  grep -q 'already built' <<<"$config_out" || { echo "$config_out"; exit 1; }
fi
cargo afl --version
echo "cargo-afl and AFL++ ready in $(elapsed "$started")"

if [ -n "${PYRITE_FUZZ_SKIP_BUILD:-}" ]; then
  step "build skipped (PYRITE_FUZZ_SKIP_BUILD): fuzzing the targets already in $target_dir/release"
else
  step "build targets (cargo afl build --release)"
  started=$(date +%s)
  # A cold instrumented build of this tree can take longer than a CI run can spare: past
  # PYRITE_FUZZ_BUILD_TIMEOUT (35 min) the run says so loudly and stops without fuzzing, and the
  # next run resumes the build from the cache above.
  build_status=0
  timeout "${PYRITE_FUZZ_BUILD_TIMEOUT:-35m}" "${nice_cmd[@]}" cargo afl build --release --bins || build_status=$?
  if [ "$build_status" -eq 124 ]; then
    echo "WARNING: the instrumented build did not finish within ${PYRITE_FUZZ_BUILD_TIMEOUT:-35m};"
    echo "WARNING: no fuzz target ran this time (the build resumes from $target_dir next run)."
    exit 0
  fi
  [ "$build_status" -eq 0 ] || exit "$build_status"
  echo "built in $(elapsed "$started")"
fi

step "seeds"
./seed.sh

failed=0
summary=()
for target in "${targets[@]}"; do
  step "fuzz $target for ${seconds}s"
  out="$FUZZ/out/$target"
  rm -rf "$out"
  mkdir -p "$out"
  status=0
  # No backtraces under AFL++: symbolizing one takes longer than its timeout.
  PYRITE_FUZZ_SCRATCH="$out/scratch" RUST_BACKTRACE=0 \
    AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1 \
    "${nice_cmd[@]}" cargo afl fuzz -V "$seconds" -i "seeds/$target" -o "$out" "$target_dir/release/$target" \
    >"$out/afl.log" 2>&1 || status=$?
  rm -rf "$out/scratch"
  stats="$out/default/fuzzer_stats"
  if [ "$status" -ne 0 ] || [ ! -f "$stats" ]; then
    echo "afl-fuzz failed for $target (exit $status); the end of $out/afl.log:"
    tail -n 30 "$out/afl.log"
    failed=1
    summary+=("$(printf '%-9s afl-fuzz failed' "$target")")
    continue
  fi
  stat() { awk -F' *: *' -v key="$1" '$1 == key { print $2 }' "$stats"; }
  line="$(printf '%-9s %4ss  execs %9s (%s/s)  corpus %5s  edges %s/%s (%s)  crashes %s  hangs %s' \
    "$target" "$(stat run_time)" "$(stat execs_done)" "$(stat execs_per_sec)" "$(stat corpus_count)" \
    "$(stat edges_found)" "$(stat total_edges)" "$(stat bitmap_cvg)" "$(stat saved_crashes)" "$(stat saved_hangs)")"
  echo "$line"
  summary+=("$line")
  for hang in "$out"/default/hangs/id:*; do
    [ -e "$hang" ] && echo "hang (not a failure): $hang"
  done
  for crash in "$out"/default/crashes/id:*; do
    [ -e "$crash" ] || continue
    failed=1
    echo "CRASH: $crash"
    echo "  replay: $target_dir/release/$target < '$crash'"
    (RUST_BACKTRACE=0 "$target_dir/release/$target" <"$crash" 2>&1 || true) | grep -v '^$' | head -n 12 | sed 's/^/  /'
  done
done

step "summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "fuzzing found crashes or failed (see above); make each crash a regression test"
  exit 1
fi
echo "no crashes"
