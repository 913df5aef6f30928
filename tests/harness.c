/* CUnit glue shared by every suite (see harness.h). */
#include "harness.h"

#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int vmt_test_run(const char *suite, const vmt_test_case *cases, int (*setup)(void),
                 int (*teardown)(void))
{
    /* A write to a socket the peer closed (librados's to an OSD a test
     * stopped or fenced, a test server's to a killed client) must be an
     * error the code handles, not a signal that kills the suite: the vmtree
     * command ignores SIGPIPE too. */
    signal(SIGPIPE, SIG_IGN);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite s = CU_add_suite(suite, setup, teardown);
    if (!s) {
        CU_cleanup_registry();
        return 2;
    }
    for (const vmt_test_case *c = cases; c->name; c++) {
        if (!CU_add_test(s, c->name, c->fn)) {
            CU_cleanup_registry();
            return 2;
        }
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}

const char *vmt_test_kvm_unavailable(void)
{
    static char reason[256];
    const char *dev = getenv("VMTREE_KVM_DEV");
    if (!dev)
        dev = "/dev/kvm";
    int fd = open(dev, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        snprintf(reason, sizeof(reason), "%s cannot be opened (%s): these tests need KVM", dev,
                 strerror(errno));
        return reason;
    }
    close(fd);
    return NULL;
}

/* $VMTREE_BUILD_DIR/<dir>/<name><suffix> (caller frees). */
static char *build_path(const char *dir, const char *name, const char *suffix)
{
    const char *bd = getenv("VMTREE_BUILD_DIR");
    char *p = NULL;
    if (!bd)
        bd = ".";
    if (asprintf(&p, "%s/%s/%s%s", bd, dir, name, suffix) < 0)
        return NULL;
    return p;
}

char *vmt_test_guest_path(const char *name)
{
    return build_path("guests", name, ".elf");
}

char *vmt_test_cli_path(void)
{
    return build_path("bin", "vmtree", "");
}

char *vmt_test_tmpdir(const char *tag)
{
    char *p = NULL;
    const char *base = getenv("TMPDIR");
    if (!base)
        base = "/tmp";
    if (asprintf(&p, "%s/vmtree-test-%s-XXXXXX", base, tag) < 0)
        return NULL;
    if (!mkdtemp(p)) {
        free(p);
        return NULL;
    }
    return p;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void vmt_test_rmtree(const char *path)
{
    if (path)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int vmt_test_spawn(char *const argv[], char **out, size_t *out_len)
{
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(pipefd[1], 1);
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        close(pipefd[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(pipefd[1]);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (buf && len + 1024 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
            } else {
                buf = nb;
                cap *= 2;
            }
        }
        char tmp[1024];
        ssize_t n = read(pipefd[0], buf ? buf + len : tmp, 1023);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (buf)
            len += (size_t)n;
    }
    close(pipefd[0]);
    if (buf)
        buf[len] = '\0';
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (out)
        *out = buf;
    else
        free(buf);
    if (out_len)
        *out_len = len;
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}
