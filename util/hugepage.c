/*
 * Transparent huge pages for guest RAM (a MAP_SHARED memfd mapping).
 *
 * Guest RAM is shmem.  Whether shmem gets 2 MiB pages is the host's choice
 * (/sys/kernel/mm/transparent_hugepage/shmem_enabled): "never" and "deny"
 * refuse them, "advise" gives them to mappings marked MADV_HUGEPAGE,
 * "always", "within_size" and "force" give them anyway.  A huge page is
 * allocated and cleared by one fault instead of 512, which on virtualised
 * hosts (where each 4 KiB first-touch fault is expensive) is what makes
 * writing restored pages straight into the mapping fast.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "vmtree/util.h"

#define SHMEM_THP "/sys/kernel/mm/transparent_hugepage/shmem_enabled"

/* The bracketed word of a sysfs choice line: "always [advise] never". */
static int bracketed(const char *line, char *out, size_t cap)
{
    const char *a = strchr(line, '['), *b = a ? strchr(a, ']') : NULL;
    if (!a || !b || (size_t)(b - a - 1) >= cap)
        return -1;
    memcpy(out, a + 1, (size_t)(b - a - 1));
    out[b - a - 1] = '\0';
    return 0;
}

int vmt_thp_shmem_mode(char *out, size_t cap)
{
    char line[256];
    FILE *f = fopen(SHMEM_THP, "re");
    if (!f)
        return vmt_error_errno(VMT_EUNSUPPORTED, errno, "%s", SHMEM_THP);
    bool ok = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    if (!ok || bracketed(line, out, cap) != 0)
        return vmt_error_set(VMT_EUNSUPPORTED, "%s: no mode in brackets", SHMEM_THP);
    return 0;
}

int vmt_ram_advise_huge(void *addr, size_t len)
{
    char mode[32];
    int rc = vmt_thp_shmem_mode(mode, sizeof(mode));
    if (rc)
        return rc;
    if (!strcmp(mode, "never") || !strcmp(mode, "deny"))
        return vmt_error_set(VMT_EUNSUPPORTED,
                             "the host gives shared memory no huge pages (%s is '%s'; "
                             "'advise' allows them: scripts/host-tune.sh)",
                             SHMEM_THP, mode);
    if (((uintptr_t)addr & (VMT_HUGE_PAGE_SIZE - 1)) != 0)
        return vmt_error_set(VMT_EINVAL, "RAM at %p is not 2 MiB aligned", addr);
    if (madvise(addr, len, MADV_HUGEPAGE) != 0)
        return vmt_error_errno(VMT_EUNSUPPORTED, errno, "madvise(MADV_HUGEPAGE)");
    return 0;
}

void *vmt_map_shared_aligned(int fd, size_t len)
{
    size_t span;
    if (vmt_add_overflow(len, VMT_HUGE_PAGE_SIZE, &span)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    /* Reserve len + 2 MiB, then place the file mapping on the first 2 MiB
     * boundary inside and give back the rest. */
    uint8_t *res = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (res == MAP_FAILED)
        return MAP_FAILED;
    uintptr_t start =
        ((uintptr_t)res + VMT_HUGE_PAGE_SIZE - 1) & ~(uintptr_t)(VMT_HUGE_PAGE_SIZE - 1);
    uint8_t *p = mmap((void *)start, len, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_FIXED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        munmap(res, span);
        errno = e;
        return MAP_FAILED;
    }
    if (p > res)
        munmap(res, (size_t)(p - res));
    size_t tail = (size_t)(res + span - (p + len));
    if (tail)
        munmap(p + len, tail);
    return p;
}
