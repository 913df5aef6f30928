/* cli/cmd_run.c: `vmtree run` as a user meets it: console, status, errors. */
#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static char *cli, *hello, *dirtier, *tmpdir;

/* Runs vmtree with up to 8 arguments; returns its status, output in *out. */
static int vmtree(char **out, const char *a1, const char *a2, const char *a3, const char *a4,
                  const char *a5, const char *a6)
{
    char *argv[] = {cli, (char *)a1, (char *)a2, (char *)a3, (char *)a4, (char *)a5,
                    (char *)a6, NULL};
    return vmt_test_spawn(argv, out, NULL);
}

static void hello_runs_with_its_console_on_stdout(void)
{
    char *out = NULL;
    CU_ASSERT_EQUAL(vmtree(&out, "run", hello, "--mem", "64M", NULL, NULL), 0);
    CU_ASSERT_STRING_EQUAL(out, "hello from vmtree guest\n");
    free(out);
    CU_ASSERT_EQUAL(vmtree(&out, "run", hello, "--cmdline", "status=9", NULL, NULL), 9);
    free(out);
}

static void dirty_report_counts_pages(void)
{
    char *out = NULL;
    CU_ASSERT_EQUAL(vmtree(&out, "run", dirtier, "--dirty-report", "--cmdline",
                           "pages=300 passes=1", NULL),
                    0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "dirty: summary:"));
    /* 300 region pages plus the runtime's own, reported once each. */
    const char *p = strstr(out, "syncs, ");
    unsigned long reports = p ? strtoul(p + 7, NULL, 10) : 0;
    CU_ASSERT(reports >= 300 && reports < 400);
    free(out);
}

/* Each bad input: exit 125 and one line naming the problem. */
static void assert_refused(const char *msg, const char *a1, const char *a2, const char *a3,
                           const char *a4)
{
    char *out = NULL;
    int st = vmtree(&out, "run", a1, a2, a3, a4, NULL);
    CU_ASSERT_EQUAL(st, 125);
    CU_ASSERT_PTR_NOT_NULL(out && strstr(out, msg));
    if (!out || !strstr(out, msg) || st != 125)
        fprintf(stderr, "\n  status %d, expected '%s' in: %s\n", st, msg, out ? out : "");
    CU_ASSERT(out && strchr(out, '\n') == out + strlen(out) - 1); /* one line */
    free(out);
}

static void bad_input_is_refused_with_one_line(void)
{
    char *elf32 = NULL, *notelf = NULL;
    CU_ASSERT(asprintf(&notelf, "%s/notelf", tmpdir) > 0);
    CU_ASSERT(asprintf(&elf32, "%s/elf32", tmpdir) > 0);
    FILE *f = fopen(notelf, "w");
    fputs("just text\n", f);
    fclose(f);
    /* A 32-bit ELF: hello with its class byte changed. */
    char *out = NULL;
    char *cp[] = {"/bin/cp", hello, elf32, NULL};
    CU_ASSERT_EQUAL(vmt_test_spawn(cp, &out, NULL), 0);
    free(out);
    f = fopen(elf32, "r+");
    fseek(f, 4, SEEK_SET);
    fputc(1, f);
    fclose(f);
    /* Segments outside RAM: hello with its first PT_LOAD moved to 1 GiB. */
    char *far = NULL;
    CU_ASSERT(asprintf(&far, "%s/far", tmpdir) > 0);
    char *cp2[] = {"/bin/cp", hello, far, NULL};
    CU_ASSERT_EQUAL(vmt_test_spawn(cp2, &out, NULL), 0);
    free(out);
    f = fopen(far, "r+");
    Elf64_Ehdr eh;
    Elf64_Phdr ph;
    CU_ASSERT_EQUAL(fread(&eh, sizeof(eh), 1, f), 1);
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        long at = (long)(eh.e_phoff + i * sizeof(ph));
        fseek(f, at, SEEK_SET);
        CU_ASSERT_EQUAL(fread(&ph, sizeof(ph), 1, f), 1);
        if (ph.p_type == PT_LOAD) {
            ph.p_paddr = 1ull << 30;
            fseek(f, at, SEEK_SET);
            fwrite(&ph, sizeof(ph), 1, f);
            break;
        }
    }
    fclose(f);

    assert_refused("No such file", "/nonexistent.elf", NULL, NULL, NULL);
    assert_refused("not an ELF file", notelf, NULL, NULL, NULL);
    assert_refused("32-bit ELF", elf32, NULL, NULL, NULL);
    assert_refused("outside guest RAM", far, "--mem", "256M", NULL);
    assert_refused("outside [2 MiB, 64 GiB]", hello, "--mem", "0", NULL);
    assert_refused("outside [2 MiB, 64 GiB]", hello, "--mem", "65G", NULL);
    assert_refused("unknown size suffix", hello, "--mem", "12X", NULL);
    assert_refused("unknown option '--frobnicate'", hello, "--frobnicate", NULL, NULL);
    assert_refused("--vcpus", hello, "--vcpus", "0", NULL);
    assert_refused("no guest image", "--mem", "64M", NULL, NULL);
    free(elf32);
    free(notelf);
    free(far);
}

static void help_describes_the_command(void)
{
    char *out = NULL;
    CU_ASSERT_EQUAL(vmtree(&out, "run", "--help", NULL, NULL, NULL, NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "usage: vmtree run"));
    free(out);
    CU_ASSERT_EQUAL(vmtree(&out, "--help", NULL, NULL, NULL, NULL, NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "run "));
    free(out);
    CU_ASSERT_EQUAL(vmtree(&out, "no-such-command", NULL, NULL, NULL, NULL, NULL), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "unknown command"));
    free(out);
}

static int setup(void)
{
    cli = vmt_test_cli_path();
    hello = vmt_test_guest_path("hello");
    dirtier = vmt_test_guest_path("dirtier");
    tmpdir = vmt_test_tmpdir("cli-run");
    return tmpdir ? 0 : 1;
}

static int teardown(void)
{
    vmt_test_rmtree(tmpdir);
    free(tmpdir);
    free(cli);
    free(hello);
    free(dirtier);
    return 0;
}

int main(void)
{
    const char *why = vmt_test_kvm_unavailable();
    if (why) {
        printf("SKIP: %s\n", why);
        return VMT_TEST_SKIP;
    }
    static const vmt_test_case cases[] = {
        {"hello_runs_with_its_console_on_stdout", hello_runs_with_its_console_on_stdout},
        {"dirty_report_counts_pages", dirty_report_counts_pages},
        {"bad_input_is_refused_with_one_line", bad_input_is_refused_with_one_line},
        {"help_describes_the_command", help_describes_the_command},
        {NULL, NULL},
    };
    return vmt_test_run("cli_run", cases, setup, teardown);
}
