#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build-fuzz/) and runs each for
# SECONDS (default 20) over its seed corpus in fuzz/corpus/<name>/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
scripts/install-deps.sh
CC=clang scripts/build.sh build-fuzz -DVMTREE_FUZZ=ON -DBUILD_TESTING=OFF
shopt -s nullglob
ran=0
for f in build-fuzz/fuzz/fuzz_*; do
  name=$(basename "$f")
  corpus=fuzz/corpus/${name#fuzz_}
  work=$(mktemp -d)
  seeds=()
  [ -d "$corpus" ] && seeds=("$corpus")
  echo "fuzz: $name for ${secs}s"
  "$f" -max_total_time="$secs" -print_final_stats=1 "$work" "${seeds[@]}" 2>&1 | tail -n 3
  rm -rf "$work"
  ran=$((ran + 1))
done
echo "fuzz: $ran targets ran"
