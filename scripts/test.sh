#!/usr/bin/env bash
# Installs dependencies, builds and runs the whole test suite.
#   scripts/test.sh            normal build in build/, every test but the `slow` label
#   scripts/test.sh --asan     ASan+UBSan build in build-asan/
#   scripts/test.sh --slow     also the `slow` label
# Tests labelled `kvm` need /dev/kvm and are reported as skipped (with the
# reason printed) where it is absent.  Tests labelled `rados` run against a
# single-node Ceph cluster on 127.0.0.1 that ctest starts and stops (the
# daemons are installed here: install-deps.sh --ceph).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=build
cmake_args=()
ctest_args=(-LE slow)
for a in "$@"; do
  case "$a" in
    --asan) dir=build-asan; cmake_args+=(-DVMTREE_SANITIZE=ON) ;;
    --slow) ctest_args=() ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "test.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

scripts/install-deps.sh --ceph
scripts/build.sh "$dir" "${cmake_args[@]}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$dir"
rc=0
ctest --output-on-failure -j"$(nproc)" "${ctest_args[@]}" || rc=$?
# Skipped suites print why; ctest keeps that in its log only: say it here.
if grep -q "^SKIP" Testing/Temporary/LastTest.log 2>/dev/null; then
  echo "Why tests were skipped:"
  grep -h "^SKIP" Testing/Temporary/LastTest.log | sort | uniq -c
fi
exit $rc
