/*
 * Outcome records of incoming migrations (destination side): settle who runs
 * a VM when the source could not see the end of the completion (GO sent,
 * no answer).  A record is a file DIR/<session id in hex> holding "running"
 * or "discarded", created once and never changed: the destination claims
 * "running" when GO arrives, before it starts the VM; a later query from
 * the source claims "discarded" when no record exists, so a GO still on
 * its way can no longer start the VM.  Whoever creates the record first
 * wins: link(2) of a complete, fsynced temporary file is atomic and fails
 * with EEXIST for the loser, who then reads the winner's record.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mig_internal.h"

static const char *const names[] = {"none", "running", "discarded"};

static void record_path(const char *dir, const uint8_t sid[16], const char *suffix, char *buf,
                        size_t cap)
{
    char hex[33];
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", sid[i]);
    snprintf(buf, cap, "%s/%s%s", dir, hex, suffix);
}

static int read_record(const char *path, mig_outcome *got)
{
    char buf[32] = "";
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vmt_error_errno(VMT_EIO, errno, "reading %s", path);
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    *got = !strcmp(buf, "running\n") ? MIG_OUTCOME_RUNNING : MIG_OUTCOME_DISCARDED;
    return 0;
}

static int write_tmp(const char *tmp, mig_outcome want)
{
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return vmt_error_errno(VMT_EIO, errno, "creating %s", tmp);
    char line[16];
    int len = snprintf(line, sizeof(line), "%s\n", names[want]);
    int rc = write(fd, line, (size_t)len) == len && fsync(fd) == 0
                 ? 0
                 : vmt_error_errno(VMT_EIO, errno, "writing %s", tmp);
    close(fd);
    return rc;
}

int mig_outcome_claim(const char *dir, const uint8_t sid[16], mig_outcome want, mig_outcome *got)
{
    char path[4096], tmp[4200];
    record_path(dir, sid, "", path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
    int rc = write_tmp(tmp, want);
    if (rc == 0 && link(tmp, path) == 0) {
        *got = want;
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) { /* the record survives a crash before the VM starts */
            fsync(dfd);
            close(dfd);
        }
    } else if (rc == 0 && errno == EEXIST) {
        rc = read_record(path, got);
    } else if (rc == 0) {
        rc = vmt_error_errno(VMT_EIO, errno, "recording the migration in %s", path);
    }
    unlink(tmp);
    return rc;
}

const char *mig_outcome_name(mig_outcome o)
{
    return o <= MIG_OUTCOME_DISCARDED ? names[o] : "?";
}
