#!/usr/bin/env bash
# A throw-away single-node Ceph cluster for the rados:// store backend tests.
#
#   scripts/ceph-cluster.sh start DIR [--bluestore]
#                 one monitor + one OSD on 127.0.0.1, state in DIR (auth off,
#                 pool size 1), pool "vmtree"; returns once the pool accepts writes
#   scripts/ceph-cluster.sh stop DIR       stops both daemons by their PIDs, removes DIR's state
#   scripts/ceph-cluster.sh env DIR        prints CEPH_CONF=... and VMTREE_TEST_RADOS=rados://...
#   scripts/ceph-cluster.sh stop-osd DIR   (bluestore) stops the OSD by its PID; returns once
#                                          the process is gone and the monitor has it down
#   scripts/ceph-cluster.sh start-osd DIR  (bluestore) starts it again on the same data; returns
#                                          once it is up and the pool accepts writes again
#
# Needs ceph-mon, ceph-osd and the rados tool (scripts/install-deps.sh --ceph).
# By default the OSD keeps everything in memory (memstore, fast, but lost when
# the OSD stops): CEPH_MEMSTORE_BYTES (default 2 GiB) bounds what the pool can
# hold.  --bluestore (or CEPH_OSD_STORE=bluestore) puts the OSD on bluestore
# over a sparse file DIR/osd/block of CEPH_BLUESTORE_BYTES (default 8 GiB,
# only what is written takes disk), tuned for a tiny test cluster (small
# cache, no fsck at mkfs or mount), so the OSD can be stopped and started
# again without losing what it acknowledged.  The monitor listens on a free
# port picked at start, so several clusters (and developers) can run side by side.
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
  local dir=$1 fsid=$2 port=$3 store=$4
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
osd op num shards = 1
osd op num threads per shard = 2
EOF
  if [ "$store" = bluestore ]; then
    # A tiny test OSD: a sparse block file, small fixed caches, no fsck,
    # and a clean stop tells the monitor at once (a lone OSD has no peers
    # to report it down).
    cat >>"$dir/ceph.conf" <<EOF
osd objectstore = bluestore
bluestore block create = true
bluestore block size = ${CEPH_BLUESTORE_BYTES:-8589934592}
bluestore fsck on mkfs = false
bluestore fsck on mount = false
bluestore fsck on umount = false
bluestore cache autotune = false
bluestore cache size = 67108864
osd memory target = 939524096
osd fast shutdown notify mon = true
EOF
  else
    cat >>"$dir/ceph.conf" <<EOF
osd objectstore = memstore
memstore device bytes = ${CEPH_MEMSTORE_BYTES:-2147483648}
EOF
  fi
}

# Runs "ceph CMD" against the cluster with a timeout.
cephc() {
  local dir=$1
  shift
  timeout 30 ceph -c "$dir/ceph.conf" --connect-timeout 10 "$@"
}

start() {
  local dir=$1 store=$2 t0 fsid port uuid id
  need_tools
  case "$store" in memstore | bluestore) ;; *) die "unknown OSD store '$store' (memstore or bluestore)" ;; esac
  [ ! -e "$dir/ceph.conf" ] || die "$dir already holds a cluster (stop it first)"
  t0=$(date +%s%N)
  mkdir -p "$dir"/{mon,osd,run,log}
  dir=$(cd "$dir" && pwd)
  fsid=$(uuidgen)
  port=$(free_port)
  write_conf "$dir" "$fsid" "$port" "$store"
  monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$dir/monmap" >/dev/null
  ceph-mon -c "$dir/ceph.conf" --mkfs -i a --monmap "$dir/monmap" >"$dir/log/mkfs.log" 2>&1 ||
    die "ceph-mon --mkfs failed: $(tail -3 "$dir/log/mkfs.log")"
  ceph-mon -c "$dir/ceph.conf" -i a || die "ceph-mon did not start ($dir/log/mon.a.log)"
  uuid=$(uuidgen)
  id=$(cephc "$dir" osd create "$uuid") || die "osd create failed"
  ceph-osd -c "$dir/ceph.conf" -i "$id" --mkfs --osd-uuid "$uuid" >>"$dir/log/mkfs.log" 2>&1 ||
    die "ceph-osd --mkfs failed: $(tail -3 "$dir/log/mkfs.log")"
  echo "$id" >"$dir/osd.id"
  ceph-osd -c "$dir/ceph.conf" -i "$id" >>"$dir/log/mkfs.log" 2>&1 ||
    die "ceph-osd did not start ($dir/log/osd.$id.log)"
  cephc "$dir" osd pool create "$POOL" 8 8 >/dev/null 2>&1 || die "pool create failed"
  cephc "$dir" osd pool set "$POOL" size 1 --yes-i-really-mean-it >/dev/null 2>&1 || true
  wait_writable "$dir"
  echo "ceph-cluster: up in $(( ($(date +%s%N) - t0) / 1000000 )) ms (mon 127.0.0.1:$port, $store OSD, pool $POOL, $dir)"
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

# SIGTERM to the daemon of PID file $1, SIGKILL after $2 tenths of a second;
# returns once it is gone.
kill_wait() {
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 "$2"); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$1"
}

stop() {
  local dir=$1 f
  [ -d "$dir/run" ] || die "no cluster in $dir"
  for f in "$dir"/run/osd.*.pid "$dir"/run/mon.*.pid; do
    [ -e "$f" ] || continue
    kill_wait "$f" 100
  done
  rm -rf "$dir"/{mon,osd,run,monmap,osd.id,ceph.conf}
}

# The OSD's id, refusing a cluster whose OSD would not survive a restart.
osd_id() {
  local dir=$1
  [ -e "$dir/ceph.conf" ] || die "no cluster in $dir"
  grep -q '^osd objectstore = bluestore' "$dir/ceph.conf" ||
    die "the OSD of $dir is memstore, which loses everything when it stops (start the cluster with --bluestore)"
  cat "$dir/osd.id"
}

# "up" or "down": the monitor's view of OSD $2 (empty when it cannot tell).
osd_state() {
  cephc "$1" osd dump --format json 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(["down","up"][[o["up"] for o in d["osds"] if o["osd"]=='"$2"'][0]])' 2>/dev/null || true
}

stop_osd() {
  local dir=$1 id t0 i
  id=$(osd_id "$dir")
  t0=$(date +%s%N)
  [ -e "$dir/run/osd.$id.pid" ] || die "osd.$id of $dir is not running (no $dir/run/osd.$id.pid)"
  kill_wait "$dir/run/osd.$id.pid" 300
  # A clean stop tells the monitor; if that message was lost, say it.
  for i in $(seq 1 40); do
    [ "$(osd_state "$dir" "$id")" = down ] && break
    [ "$i" = 20 ] && cephc "$dir" osd down "$id" >/dev/null 2>&1
    sleep 0.25
  done
  [ "$(osd_state "$dir" "$id")" = down ] || die "the monitor still has osd.$id up"
  echo "ceph-cluster: osd.$id stopped in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

start_osd() {
  local dir=$1 id t0 i
  id=$(osd_id "$dir")
  t0=$(date +%s%N)
  if [ -e "$dir/run/osd.$id.pid" ] && kill -0 "$(cat "$dir/run/osd.$id.pid")" 2>/dev/null; then
    die "osd.$id of $dir is already running"
  fi
  ceph-osd -c "$dir/ceph.conf" -i "$id" >>"$dir/log/restart.log" 2>&1 ||
    die "ceph-osd did not start ($dir/log/osd.$id.log)"
  for i in $(seq 1 240); do
    [ "$(osd_state "$dir" "$id")" = up ] && break
    sleep 0.25
  done
  [ "$(osd_state "$dir" "$id")" = up ] || die "osd.$id did not come up within 60 s ($dir/log/osd.$id.log)"
  wait_writable "$dir"
  echo "ceph-cluster: osd.$id up again in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

env_of() {
  local dir
  dir=$(cd "$1" && pwd)
  [ -e "$dir/ceph.conf" ] || die "no cluster in $dir"
  echo "CEPH_CONF=$dir/ceph.conf"
  echo "VMTREE_TEST_RADOS=rados://$POOL?conf=$dir/ceph.conf"
}

usage="usage: $0 start DIR [--bluestore] | stop|env|stop-osd|start-osd DIR"
store=${CEPH_OSD_STORE:-memstore}
if [ $# -eq 3 ] && [ "$1" = start ] && [ "$3" = --bluestore ]; then
  store=bluestore
elif [ $# -ne 2 ]; then
  die "$usage"
fi
case "$1" in
  start) start "$2" "$store" ;;
  stop) stop "$2" ;;
  env) env_of "$2" ;;
  stop-osd) stop_osd "$2" ;;
  start-osd) start_osd "$2" ;;
  *) die "$usage" ;;
esac
