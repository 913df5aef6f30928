#!/usr/bin/env bash
# A throw-away single-node Ceph cluster for the rados:// store backend tests.
#
#   scripts/ceph-cluster.sh start DIR   one monitor + one OSD on 127.0.0.1, state in DIR
#                                       (auth off, pool size 1, memstore), pool "vmtree";
#                                       returns once the pool accepts writes
#   scripts/ceph-cluster.sh stop DIR    stops both daemons by their PIDs, removes DIR's state
#   scripts/ceph-cluster.sh env DIR     prints CEPH_CONF=... and VMTREE_TEST_RADOS=rados://...
#
# Needs ceph-mon, ceph-osd and the rados tool (scripts/install-deps.sh --ceph).
# The OSD keeps everything in memory (memstore): CEPH_MEMSTORE_BYTES (default
# 2 GiB) bounds what the pool can hold.  The monitor listens on a free port
# picked at start, so several clusters (and developers) can run side by side.
set -euo pipefail

POOL=vmtree

die() {
  echo "ceph-cluster: $*" >&2
  exit 1
}

need_tools() {
  local t
  for t in ceph-mon ceph-osd ceph monmaptool rados uuidgen; do
    command -v "$t" >/dev/null || die "$t not found (install with scripts/install-deps.sh --ceph)"
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

write_conf() {
  local dir=$1 fsid=$2 port=$3
  cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$port
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
osd crush chooseleaf type = 0
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
mon data = $dir/mon
osd data = $dir/osd
osd objectstore = memstore
memstore device bytes = ${CEPH_MEMSTORE_BYTES:-2147483648}
osd op num shards = 1
osd op num threads per shard = 2
EOF
}

# Runs "ceph CMD" against the cluster with a timeout.
cephc() {
  local dir=$1
  shift
  timeout 30 ceph -c "$dir/ceph.conf" --connect-timeout 10 "$@"
}

start() {
  local dir=$1 t0 fsid port uuid id
  need_tools
  [ ! -e "$dir/ceph.conf" ] || die "$dir already holds a cluster (stop it first)"
  t0=$(date +%s%N)
  mkdir -p "$dir"/{mon,osd,run,log}
  dir=$(cd "$dir" && pwd)
  fsid=$(uuidgen)
  port=$(free_port)
  write_conf "$dir" "$fsid" "$port"
  monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$dir/monmap" >/dev/null
  ceph-mon -c "$dir/ceph.conf" --mkfs -i a --monmap "$dir/monmap" >"$dir/log/mkfs.log" 2>&1 ||
    die "ceph-mon --mkfs failed: $(tail -3 "$dir/log/mkfs.log")"
  ceph-mon -c "$dir/ceph.conf" -i a || die "ceph-mon did not start ($dir/log/mon.a.log)"
  uuid=$(uuidgen)
  id=$(cephc "$dir" osd create "$uuid") || die "osd create failed"
  ceph-osd -c "$dir/ceph.conf" -i "$id" --mkfs --osd-uuid "$uuid" >>"$dir/log/mkfs.log" 2>&1 ||
    die "ceph-osd --mkfs failed: $(tail -3 "$dir/log/mkfs.log")"
  ceph-osd -c "$dir/ceph.conf" -i "$id" >>"$dir/log/mkfs.log" 2>&1 ||
    die "ceph-osd did not start ($dir/log/osd.$id.log)"
  cephc "$dir" osd pool create "$POOL" 8 8 >/dev/null 2>&1 || die "pool create failed"
  cephc "$dir" osd pool set "$POOL" size 1 --yes-i-really-mean-it >/dev/null 2>&1 || true
  wait_writable "$dir"
  echo "ceph-cluster: up in $(( ($(date +%s%N) - t0) / 1000000 )) ms (mon 127.0.0.1:$port, pool $POOL, $dir)"
}

wait_writable() {
  local dir=$1 i
  for i in $(seq 1 120); do
    if echo probe | timeout 5 rados -c "$dir/ceph.conf" -p "$POOL" put probe - 2>/dev/null; then
      timeout 5 rados -c "$dir/ceph.conf" -p "$POOL" rm probe 2>/dev/null || true
      return 0
    fi
    sleep 0.25
  done
  die "the pool did not accept writes within 60 s (logs in $dir/log)"
}

stop() {
  local dir=$1 f pid
  [ -d "$dir/run" ] || die "no cluster in $dir"
  for f in "$dir"/run/osd.*.pid "$dir"/run/mon.*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  rm -rf "$dir"/{mon,osd,run,monmap,ceph.conf}
}

env_of() {
  local dir
  dir=$(cd "$1" && pwd)
  [ -e "$dir/ceph.conf" ] || die "no cluster in $dir"
  echo "CEPH_CONF=$dir/ceph.conf"
  echo "VMTREE_TEST_RADOS=rados://$POOL?conf=$dir/ceph.conf"
}

[ $# -eq 2 ] || die "usage: $0 start|stop|env DIR"
case "$1" in
  start) start "$2" ;;
  stop) stop "$2" ;;
  env) env_of "$2" ;;
  *) die "usage: $0 start|stop|env DIR" ;;
esac
