#!/usr/bin/env bash
# Host settings that make vmtree faster, applied as root (not persistent
# across reboots; add them to /etc/sysfs.conf or a unit to keep them):
#   transparent huge pages for shared memory in 'advise' mode, so guest RAM
#   started with --huge-pages gets 2 MiB pages (restores into it run about
#   twice as fast; other programs' shared memory is unaffected).
#   scripts/host-tune.sh          apply
#   scripts/host-tune.sh --show   print the current settings only
set -euo pipefail
THP=/sys/kernel/mm/transparent_hugepage/shmem_enabled
show() { echo "shmem THP: $(cat "$THP" 2>/dev/null || echo 'not available')"; }
if [ "${1:-}" = "--show" ]; then show; exit 0; fi
if [ ! -e "$THP" ]; then
  echo "host-tune: $THP missing: this kernel has no THP for shared memory" >&2
  exit 1
fi
case "$(cat "$THP")" in
  *"[never]"*|*"[deny]"*)
    echo advise >"$THP" || { echo "host-tune: cannot write $THP (run as root)" >&2; exit 1; } ;;
esac
show
