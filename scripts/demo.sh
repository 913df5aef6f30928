#!/usr/bin/env bash
# The vmtree demo: installs dependencies, builds, then boots guests on KVM
# and shows their consoles and a dirty-page report.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh build
V=build/bin/vmtree
G=build/guests

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "boot the hello guest (64-bit long mode, ring 3 workload, COM1 console)"
$V run $G/hello.elf --mem 64M

step "run the counter guest: a deterministic checksum every step"
$V run $G/counter.elf --mem 64M --cmdline "steps=5 every=1"

step "run the dirtier guest (8 MiB region, 2 vCPUs) with a dirty-page report every 100 ms"
$V run $G/dirtier.elf --mem 256M --vcpus 2 --dirty-report=100 \
   --cmdline "pages=2048 vcpus=2 spin=2000000 mark=50 passes=200 fill=text"

step "the same with the KVM dirty ring instead of the bitmap"
$V run $G/dirtier.elf --mem 256M --vcpus 2 --dirty-report=100 --dirty-mode ring \
   --cmdline "pages=2048 vcpus=2 spin=2000000 mark=50 passes=200 fill=text"
