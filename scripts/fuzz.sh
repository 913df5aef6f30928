#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build-fuzz/) and runs each for
# SECONDS (default 20) over its seed corpus in fuzz/corpus/<name>/, as many
# at once as there are CPUs (FUZZ_JOBS overrides).  Fails when any target
# finds a crash, a leak or undefined behaviour (its log is printed whole).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
case "$secs" in
  ''|*[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, not '$secs'" >&2; exit 2 ;;
esac
jobs=${FUZZ_JOBS:-$(nproc)}
scripts/install-deps.sh
CC=clang scripts/build.sh build-fuzz -DVMTREE_FUZZ=ON -DBUILD_TESTING=OFF
shopt -s nullglob
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# Runs one target; its log goes to $logs/NAME.log, its status to $logs/NAME.rc.
run_one() {
  local f=$1 name corpus work rc=0
  name=$(basename "$f")
  corpus=fuzz/corpus/${name#fuzz_}
  work=$(mktemp -d)
  local seeds=()
  [ -d "$corpus" ] && seeds=("$corpus")
  "$f" -max_total_time="$secs" -print_final_stats=1 "$work" "${seeds[@]}" \
    >"$logs/$name.log" 2>&1 || rc=$?
  echo "$rc" >"$logs/$name.rc"
  rm -rf "$work"
}

targets=(build-fuzz/fuzz/fuzz_*)
[ ${#targets[@]} -gt 0 ] || { echo "fuzz.sh: no targets in build-fuzz/fuzz" >&2; exit 1; }
echo "fuzz: ${#targets[@]} targets, ${secs}s each, $jobs at once"
running=0
for f in "${targets[@]}"; do
  run_one "$f" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait

failed=0
for f in "${targets[@]}"; do
  name=$(basename "$f")
  rc=$(cat "$logs/$name.rc" 2>/dev/null || echo "no status")
  if [ "$rc" = 0 ]; then
    echo "fuzz: $name: $(grep -E '^stat::number_of_executed_units' "$logs/$name.log" |
      awk '{print $2}') runs, no finding"
  else
    echo "fuzz: $name FAILED (exit $rc); its log:"
    cat "$logs/$name.log"
    failed=$((failed + 1))
  fi
done
echo "fuzz: ${#targets[@]} targets ran, $failed failed"
[ "$failed" -eq 0 ]
