/* Holes of guest RAM's memfd, found with SEEK_DATA/SEEK_HOLE (see
 * migrate_internal.h): the store sink and the network sink skip them
 * rather than read pages that were never written. */
#include <errno.h>
#include <unistd.h>

#include "migrate_internal.h"

void mig_ram_holes_init(mig_ram_holes *h, vmt_vm *vm)
{
    *h = (mig_ram_holes){.fd = vmt_vm_ram_fd(vm)};
}

void mig_ram_holes_forget(mig_ram_holes *h)
{
    h->lo = h->hi = 0;
}

bool mig_ram_hole(mig_ram_holes *h, uint64_t off)
{
    if (h->fd < 0)
        return false;
    if (off < h->lo || off >= h->hi) {
        off_t d = lseek(h->fd, (off_t)off, SEEK_DATA);
        if (d < 0 && errno != ENXIO) {
            h->fd = -1; /* no SEEK_DATA here: read every page */
            return false;
        }
        uint64_t data = d < 0 ? UINT64_MAX : (uint64_t)d;
        if (data > off) {
            h->lo = off;
            h->hi = data;
            h->hole = true;
        } else {
            off_t e = lseek(h->fd, (off_t)off, SEEK_HOLE);
            h->lo = off;
            h->hi = e < 0 ? off + VMT_PAGE_SIZE : (uint64_t)e;
            h->hole = false;
        }
    }
    return h->hole && off + VMT_PAGE_SIZE <= h->hi;
}
