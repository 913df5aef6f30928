#!/usr/bin/env bash
# Configures and builds vmtree.  Usage: scripts/build.sh [BUILD_DIR] [cmake args...]
# The CLI lands in BUILD_DIR/bin/vmtree, guests in BUILD_DIR/guests/NAME.elf.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
