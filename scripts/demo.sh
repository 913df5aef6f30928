#!/usr/bin/env bash
# The vmtree demo: installs dependencies, builds, then boots guests on KVM
# and shows their consoles and a dirty-page report.
# With --no-build, uses the build in $VMTREE_BUILD_DIR (default build/) as
# it is: the test suite runs the demo that way (test_demo).
set -euo pipefail
cd "$(dirname "$0")/.."

B=${VMTREE_BUILD_DIR:-build}
if [ "${1:-}" != "--no-build" ]; then
  scripts/install-deps.sh
  scripts/build.sh "$B"
fi
V=$B/bin/vmtree
G=$B/guests

# Every step below runs guests: without a usable /dev/kvm there is no demo.
# Under the test suite (--no-build) that is a skip (exit 77), printed.
if ! [ -c /dev/kvm ] || ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
  echo "demo: /dev/kvm is absent or not usable here: the demo boots guests on KVM" \
       "(load kvm-intel or kvm-amd, or run on a host with KVM)" >&2
  if [ "${1:-}" = "--no-build" ]; then
    echo "SKIP: test_demo needs /dev/kvm"
    exit 77
  fi
  exit 1
fi

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

# ---- snapshots of running VMs: a tree in a store of its own ----
STORE=$(mktemp -d /tmp/vmtree-demo-XXXXXX)/store
export VMTREE_STORE=$STORE
HOST2=$(dirname "$STORE")/host2
RECV_PID=
cleanup() {
  $V stop a >/dev/null 2>&1 || true
  $V stop b >/dev/null 2>&1 || true
  $V stop b --store "$HOST2" >/dev/null 2>&1 || true
  [ -n "$RECV_PID" ] && kill "$RECV_PID" >/dev/null 2>&1 || true
  rm -rf "$(dirname "$STORE")"
}
trap cleanup EXIT
show() { printf '\033[2m$ vmtree %s\033[0m\n' "$*"; $V "$@"; }
console_tail() { printf '\033[2m(console of %s)\033[0m\n' "$1"; $V console "$1" | tail -n "$2"; }

step "run the counter guest as VM process 'a' in the background (store $STORE)"
show run $G/counter.elf --mem 64M --name a --detach --cmdline "every=500"
sleep 1
console_tail a 2

step "snapshot a while it runs, let it run on, snapshot it again"
show snapshot a -m "first"
sleep 1
show snapshot a -m "second"
console_tail a 2

step "branch a second VM 'b' from the first snapshot: it continues from there"
show branch a~1 --name b --detach
sleep 1
console_tail b 3

step "roll a back to the first snapshot: its checksums repeat from that point"
show rollback a a~1
sleep 1
console_tail a 4

step "the tree of snapshots, with each VM's HEAD"
show snapshot b -m "b's own work"
show tag first a
show log --graph

step "the running VMs"
show ps

step "migrate b live to a second 'host' (a receiver with its own store, on loopback)"
printf '\033[2m(the second host already holds b'"'"'s snapshot: its pages travel as references)\033[0m\n'
show export b "$(dirname "$STORE")/b.bundle"
$V store init --store "$HOST2" >/dev/null
show import "$(dirname "$STORE")/b.bundle" --store "$HOST2"
$V receive --listen 127.0.0.1:0 --store "$HOST2" > "$(dirname "$STORE")/recv.out" 2>&1 &
RECV_PID=$!
for _ in $(seq 100); do
  grep -q 'listening on' "$(dirname "$STORE")/recv.out" 2>/dev/null && break
  sleep 0.05
done
ADDR=$(sed -n 's/^listening on //p' "$(dirname "$STORE")/recv.out")
show migrate b "$ADDR" --compress lz4
wait "$RECV_PID" || true
RECV_PID=
cat "$(dirname "$STORE")/recv.out"
sleep 1
show ps --store "$HOST2"
printf '\033[2m(console of b on the second host)\033[0m\n'
$V console b --store "$HOST2" | tail -n 3

step "stop them"
show stop a
show stop b --store "$HOST2"
