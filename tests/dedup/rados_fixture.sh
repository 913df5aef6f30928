#!/usr/bin/env bash
# ctest fixture for the *_rados suites: starts (or stops) the single-node
# Ceph cluster of scripts/ceph-cluster.sh in DIR.  Where Ceph is not
# installed it prints why and succeeds, and the suites then skip, each
# printing the reason (docs/store-backends.md, "Tests").
set -uo pipefail
cmd=$1 dir=$2
script="$(dirname "$0")/../../scripts/ceph-cluster.sh"
case "$cmd" in
  start)
    for t in ceph-mon ceph-osd rados; do
      if ! command -v "$t" >/dev/null; then
        echo "SKIP: $t not installed (scripts/install-deps.sh --ceph); the rados suites will skip"
        exit 0
      fi
    done
    # A cluster left by an interrupted run is stopped first.
    [ ! -e "$dir/ceph.conf" ] || "$script" stop "$dir"
    exec "$script" start "$dir"
    ;;
  stop)
    [ -e "$dir/ceph.conf" ] || { echo "no cluster in $dir"; exit 0; }
    exec "$script" stop "$dir"
    ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
