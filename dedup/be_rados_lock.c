/*
 * The RADOS backend's writer lock: a cls_lock exclusive lock on the object
 * "lock", taken with a duration and renewed by a thread every third of it,
 * so a writer that dies loses the lock after lock_timeout seconds (default
 * 30) instead of holding the store forever.
 *
 * A holder writes its client address to the xattr vmtree.holder of "lock"
 * and removes it when it lets go cleanly.  A writer that finds the xattr
 * set by someone else took over from a holder that did not let go: it
 * blocklists that address first (fencing), so a holder that was only cut
 * off — not dead — can never write again once the new writer starts.  A
 * writer whose renewal fails stops writing (VMT_EBUSY, sticky in the store).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "be_rados.h"
#include "internal.h"

#define HOLDER_XATTR "vmtree.holder"
#define FENCE_SECONDS 3600u /* long enough for any cut-off writer to notice */

static int lock_once(rados_be *b, uint8_t flags)
{
    struct timeval d = {.tv_sec = (time_t)b->lock_timeout};
    return rados_lock_exclusive(b->io, DD_LOCK_FILE, RADOS_LOCK_NAME, b->cookie,
                                "vmtree store writer", &d, flags);
}

static void *renew_loop(void *arg)
{
    rados_be *b = arg;
    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += (time_t)(b->lock_timeout / 3 ? b->lock_timeout / 3 : 1);
        pthread_cond_timedwait(&b->cv, &b->mu, &until);
        if (b->stop)
            break;
        pthread_mutex_unlock(&b->mu);
        int r = lock_once(b, LIBRADOS_LOCK_FLAG_MUST_RENEW);
        pthread_mutex_lock(&b->mu);
        if (r < 0 && r != -ETIMEDOUT) {
            __atomic_store_n(&b->lost, 1, __ATOMIC_RELEASE);
            vmt_error("%s: the writer lock could not be renewed (%s): writes stop", b->url,
                      strerror(-r));
            break;
        }
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* Fences the previous holder when it did not let go, then names us. */
static int take_over(rados_be *b)
{
    char prev[256] = "", *mine = NULL;
    int n = rados_getxattr(b->io, DD_LOCK_FILE, HOLDER_XATTR, prev, sizeof(prev) - 1);
    int r = rados_getaddrs(b->cluster, &mine);
    if (r < 0)
        return dd_rados_err(r, "own address for", b->url);
    if (n > 0) {
        prev[n] = '\0';
        if (strcmp(prev, mine) != 0) {
            vmt_warn("%s: the last writer (%s) did not release the store; fencing it", b->url,
                     prev);
            r = rados_blocklist_add(b->cluster, prev, FENCE_SECONDS);
            if (r < 0)
                vmt_warn("%s: could not blocklist %s (%s): a cut-off writer is not fenced",
                         b->url, prev, strerror(-r));
        }
    }
    r = rados_setxattr(b->io, DD_LOCK_FILE, HOLDER_XATTR, mine, strlen(mine));
    free(mine);
    return r < 0 ? dd_rados_fail(b, r, "recording the holder of", b->url) : 0;
}

/* VMT_EBUSY naming the lock's holder, from its cookie "host:pid:time". */
static int holder_error(rados_be *b)
{
    int excl = 0;
    char tag[128], clients[256] = "", cookies[256] = "", addrs[256];
    size_t tl = sizeof(tag), cl = sizeof(clients), kl = sizeof(cookies), al = sizeof(addrs);
    if (rados_list_lockers(b->io, DD_LOCK_FILE, RADOS_LOCK_NAME, &excl, tag, &tl, clients, &cl,
                           cookies, &kl, addrs, &al) < 0)
        clients[0] = cookies[0] = '\0';
    clients[sizeof(clients) - 1] = cookies[sizeof(cookies) - 1] = '\0';
    char host[128] = "?", pid[32] = "?";
    sscanf(cookies, "%127[^:]:%31[^:]", host, pid);
    return vmt_error_set(VMT_EBUSY,
                         "store %s is open for writing by process %s on host %s (%s; a lock "
                         "outlives a dead holder by at most %u s)",
                         b->url, pid, host, clients[0] ? clients : "unknown client",
                         b->lock_timeout);
}

int dd_rados_lock(dd_backend *base)
{
    rados_be *b = (rados_be *)base;
    char host[64] = "?";
    gethostname(host, sizeof(host) - 1);
    snprintf(b->cookie, sizeof(b->cookie), "%s:%ld:%lx", host, (long)getpid(),
             (unsigned long)time(NULL));
    int r = lock_once(b, 0);
    if (r == -EBUSY || r == -EEXIST)
        return holder_error(b);
    if (r < 0)
        return dd_rados_fail(b, r, "locking", b->url);
    b->locked = true;
    int rc = take_over(b);
    if (rc == 0 && pthread_create(&b->renewer, NULL, renew_loop, b) != 0)
        rc = vmt_error_set(VMT_ERR, "%s: cannot start the lock renewal thread", b->url);
    if (rc != 0) {
        dd_rados_unlock(b);
        return rc;
    }
    b->renewing = true;
    return 0;
}

void dd_rados_unlock(rados_be *b)
{
    if (b->renewing) {
        pthread_mutex_lock(&b->mu);
        b->stop = true;
        pthread_cond_signal(&b->cv);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->renewer, NULL);
        b->renewing = false;
    }
    if (!b->locked)
        return;
    /* A clean release: the next writer has nobody to fence.  Not after a
     * request timed out: it may still be applied, so the next writer must
     * fence this client first. */
    if (!__atomic_load_n(&b->lost, __ATOMIC_ACQUIRE) &&
        !__atomic_load_n(&b->timed_out, __ATOMIC_ACQUIRE))
        rados_rmxattr(b->io, DD_LOCK_FILE, HOLDER_XATTR);
    rados_unlock(b->io, DD_LOCK_FILE, RADOS_LOCK_NAME, b->cookie);
    b->locked = false;
}

int dd_rados_may_write(rados_be *b)
{
    if (__atomic_load_n(&b->lost, __ATOMIC_ACQUIRE))
        return vmt_error_set(VMT_EBUSY, "%s: this writer lost the store's lock (renewal failed)",
                             b->url);
    return 0;
}
