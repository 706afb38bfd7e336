#!/usr/bin/env bash
# Writes the seed corpora into fuzz/seeds/<target>/ from ../shared/corpus (or $PYRITE_CORPUS):
# small pprof files, blocks and WAL segments made from them, small folded files, and
# hand-written folded and selector inputs (see src/bin/seed.rs). Generated on each run, never
# committed: the corpus's licences differ and its README asks to read it in place.
# Expects the targets built (run.sh builds them first).
set -euo pipefail

FUZZ="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
corpus="${PYRITE_CORPUS:-$FUZZ/../../shared/corpus}"
target_dir="${CARGO_TARGET_DIR:-$FUZZ/target}"
"$target_dir/release/seed" "$corpus" "$FUZZ/seeds"
for dir in "$FUZZ"/seeds/*/; do
  printf '%-10s %3d files %7d bytes\n' "$(basename "$dir")" "$(find "$dir" -type f | wc -l)" \
    "$(find "$dir" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
done
