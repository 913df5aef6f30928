#!/usr/bin/env bash
# Installs what vmtree needs to build and test on Debian (12 "bookworm").
# Idempotent: installs only missing packages; runs apt-get update only then.
#
#   scripts/install-deps.sh          what the build and the demo need (librados-dev
#                                    included, so the rados:// backend is always
#                                    compiled and linked)
#   scripts/install-deps.sh --ceph   also the daemons of a single-node Ceph cluster
#                                    (ceph-mon, ceph-osd, ceph-mgr) that the
#                                    rados:// store tests start: scripts/test.sh
#                                    and CI install them (~40 s, ~150 MB)
# Without the daemons the RADOS tests skip with the reason printed.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  liblz4-dev libxxhash-dev libzstd-dev
  librdmacm-dev libibverbs-dev
  libprotobuf-c-dev protobuf-c-compiler
  libcunit1-dev libsqlite3-dev libssl-dev
  librados-dev
  clang libclang-rt-14-dev
)

for arg in "$@"; do
  case "$arg" in
    --ceph) PACKAGES+=(ceph-mon ceph-osd ceph-mgr) ;;
    *) echo "install-deps: unknown option $arg (known: --ceph)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
