/* hypervisor-glue/boot.c and vm.c: booting guests and refusing bad input. */
#include <elf.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"
#include "harness.h"

static char *tmpdir;

static void hello_prints_and_exits_zero(void)
{
    fx_guest g;
    CU_ASSERT_FATAL(fx_boot(&g, "hello", NULL, NULL) == 0);
    CU_ASSERT_EQUAL_FATAL(vmt_vm_start(g.vm), 0);
    vmt_vm_exit ex;
    CU_ASSERT_EQUAL(vmt_vm_wait(g.vm, 10 * FX_SEC, &ex), 0);
    CU_ASSERT_EQUAL(ex.kind, VMT_EXIT_PORT);
    CU_ASSERT_EQUAL(ex.status, 0);
    char *out = vmt_console_buf_dup(g.con, NULL);
    CU_ASSERT_STRING_EQUAL(out, "hello from vmtree guest\n");
    free(out);
    fx_free(&g);
}

static void exit_status_reaches_the_host(void)
{
    fx_guest g;
    CU_ASSERT_FATAL(fx_boot(&g, "hello", "status=42", NULL) == 0);
    CU_ASSERT_EQUAL_FATAL(vmt_vm_start(g.vm), 0);
    vmt_vm_exit ex;
    CU_ASSERT_EQUAL(vmt_vm_wait(g.vm, 10 * FX_SEC, &ex), 0);
    CU_ASSERT_EQUAL(ex.kind, VMT_EXIT_PORT);
    CU_ASSERT_EQUAL(ex.status, 42);
    fx_free(&g);
}

/* Copies guests/hello.elf to tmpdir/name and returns the path. */
static char *hello_copy(const char *name, uint8_t **data, size_t *len)
{
    char *src = vmt_test_guest_path("hello"), *dst = NULL;
    FILE *f = fopen(src, "rb");
    free(src);
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    *data = malloc(*len);
    if (fread(*data, 1, *len, f) != *len) {
        fclose(f);
        return NULL;
    }
    fclose(f);
    if (asprintf(&dst, "%s/%s", tmpdir, name) < 0)
        return NULL;
    return dst;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_EQUAL(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* Loads `path` into a fresh 256 MiB VM; returns the error code. */
static int try_load(const char *path)
{
    vmt_vm *vm = NULL;
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    CU_ASSERT_EQUAL_FATAL(vmt_vm_create(&vm, fx_kvm, &cfg), 0);
    int rc = vmt_vm_load_elf(vm, path, NULL);
    vmt_vm_destroy(vm);
    return rc;
}

static Elf64_Phdr *first_load(uint8_t *data, int nth)
{
    Elf64_Ehdr *eh = (Elf64_Ehdr *)data;
    Elf64_Phdr *ph = (Elf64_Phdr *)(data + eh->e_phoff);
    for (int i = 0; i < eh->e_phnum; i++)
        if (ph[i].p_type == PT_LOAD && nth-- == 0)
            return &ph[i];
    return NULL;
}

static void assert_refused(const char *name, void (*patch)(uint8_t *, size_t *), int code,
                           const char *msg)
{
    uint8_t *data = NULL;
    size_t len = 0;
    char *path = hello_copy(name, &data, &len);
    CU_ASSERT_FATAL(path != NULL);
    patch(data, &len);
    write_file(path, data, len);
    CU_ASSERT_EQUAL(try_load(path), code);
    if (!strstr(vmt_error_last(), msg))
        fprintf(stderr, "\n  expected '%s' in '%s'\n", msg, vmt_error_last());
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), msg));
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), name));
    free(data);
    free(path);
}

static void patch_class32(uint8_t *d, size_t *len)
{
    (void)len;
    d[EI_CLASS] = ELFCLASS32;
}
static void patch_not_elf(uint8_t *d, size_t *len)
{
    memcpy(d, "#!/bin/sh\n", 10);
    *len = 10;
}
static void patch_truncated(uint8_t *d, size_t *len)
{
    (void)d;
    *len = 40;
}
static void patch_phdrs_cut(uint8_t *d, size_t *len)
{
    *len = ((Elf64_Ehdr *)d)->e_phoff + 8;
}
static void patch_outside_ram(uint8_t *d, size_t *len)
{
    (void)len;
    first_load(d, 0)->p_paddr = 1ull << 30; /* the VM has 256 MiB */
}
static void patch_low(uint8_t *d, size_t *len)
{
    (void)len;
    first_load(d, 0)->p_paddr = 0x8000;
}
static void patch_overlap(uint8_t *d, size_t *len)
{
    (void)len;
    Elf64_Phdr *b = first_load(d, 1);
    if (b)
        b->p_paddr = first_load(d, 0)->p_paddr;
}
static void patch_machine(uint8_t *d, size_t *len)
{
    (void)len;
    ((Elf64_Ehdr *)d)->e_machine = EM_AARCH64;
}

static void bad_images_are_refused_with_a_reason(void)
{
    assert_refused("class32.elf", patch_class32, VMT_EINVAL, "32-bit ELF");
    assert_refused("script.elf", patch_not_elf, VMT_EINVAL, "not an ELF file");
    assert_refused("trunc.elf", patch_truncated, VMT_EINVAL, "truncated ELF header");
    assert_refused("phdrs.elf", patch_phdrs_cut, VMT_EINVAL, "program headers lie outside");
    assert_refused("far.elf", patch_outside_ram, VMT_ERANGE, "outside guest RAM");
    assert_refused("low.elf", patch_low, VMT_EINVAL, "overlaps the boot structures");
    assert_refused("arm.elf", patch_machine, VMT_EINVAL, "not x86-64");
    uint8_t *data = NULL;
    size_t len = 0;
    free(hello_copy("x", &data, &len));
    if (first_load(data, 1)) /* only meaningful with two PT_LOADs */
        assert_refused("overlap.elf", patch_overlap, VMT_EINVAL, "overlap");
    free(data);
}

static void missing_file_and_directory_are_refused(void)
{
    CU_ASSERT_EQUAL(try_load("/nonexistent/guest.elf"), VMT_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "/nonexistent/guest.elf"));
    CU_ASSERT_EQUAL(try_load(tmpdir), VMT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "not a regular file"));
}

static void bad_configs_are_refused(void)
{
    vmt_vm *vm = NULL;
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.mem_size = 0;
    CU_ASSERT_EQUAL(vmt_vm_create(&vm, fx_kvm, &cfg), VMT_ERANGE);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "outside [2 MiB, 64 GiB]"));
    cfg.mem_size = VMT_VM_MAX_MEM + (2u << 20);
    CU_ASSERT_EQUAL(vmt_vm_create(&vm, fx_kvm, &cfg), VMT_ERANGE);
    cfg.mem_size = 3u << 20;
    CU_ASSERT_EQUAL(vmt_vm_create(&vm, fx_kvm, &cfg), VMT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "multiple of 2 MiB"));
    cfg.mem_size = 256u << 20;
    cfg.vcpus = 0;
    CU_ASSERT_EQUAL(vmt_vm_create(&vm, fx_kvm, &cfg), VMT_ERANGE);
    CU_ASSERT_PTR_NULL(vm);
}

static void command_line_too_long_is_refused(void)
{
    vmt_vm *vm = NULL;
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    CU_ASSERT_EQUAL_FATAL(vmt_vm_create(&vm, fx_kvm, &cfg), 0);
    char *big = malloc(VMT_BOOT_CMDLINE_MAX + 1);
    memset(big, 'a', VMT_BOOT_CMDLINE_MAX);
    big[VMT_BOOT_CMDLINE_MAX] = 0;
    char *path = vmt_test_guest_path("hello");
    CU_ASSERT_EQUAL(vmt_vm_load_elf(vm, path, big), VMT_ERANGE);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "command line"));
    free(path);
    free(big);
    vmt_vm_destroy(vm);
}

/* Above 3 GiB of RAM the rest sits at 4 GiB: e820, the memory slots and
 * the boot page tables must all agree, and the guest must run. */
static void large_guest_has_ram_above_the_hole(void)
{
    fx_guest g;
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.mem_size = 5ull << 30;
    CU_ASSERT_FATAL(fx_boot(&g, "dirtier", "base=0x100000000 pages=16 passes=1", &cfg) == 0);
    uint64_t off = 0;
    CU_ASSERT_EQUAL(vmt_vm_gpa_to_ram(g.vm, 4ull << 30, 4096, &off), 0);
    CU_ASSERT_EQUAL(off, 3ull << 30);
    CU_ASSERT_EQUAL(vmt_vm_gpa_to_ram(g.vm, 3ull << 30, 4096, &off), VMT_ERANGE);
    uint8_t *ram = vmt_vm_ram(g.vm, NULL);
    uint8_t *bp = ram + VMT_BOOT_PARAMS_ADDR;
    CU_ASSERT_EQUAL(bp[0x1e8], 3); /* e820 entries: low, 1M..3G, 4G.. */
    uint64_t addr, size;
    memcpy(&addr, bp + 0x2d0 + 2 * 20, 8);
    memcpy(&size, bp + 0x2d0 + 2 * 20 + 8, 8);
    CU_ASSERT_EQUAL(addr, 4ull << 30);
    CU_ASSERT_EQUAL(size, 2ull << 30);
    CU_ASSERT_EQUAL_FATAL(vmt_vm_start(g.vm), 0);
    vmt_vm_exit ex;
    CU_ASSERT_EQUAL(vmt_vm_wait(g.vm, 20 * FX_SEC, &ex), 0);
    CU_ASSERT_EQUAL(ex.kind, VMT_EXIT_PORT);
    CU_ASSERT_EQUAL(ex.status, 0);
    CU_ASSERT_EQUAL(ram[(3ull << 30) + 5 * 4096], 1); /* the guest's write at 4 GiB + 5 pages */
    fx_free(&g);
}

static void missing_kvm_device_says_kvm_is_needed(void)
{
    vmt_kvm *k = NULL;
    setenv("VMTREE_KVM_DEV", "/nonexistent/kvm", 1);
    CU_ASSERT_EQUAL(vmt_kvm_open(&k), VMT_ENOENT);
    unsetenv("VMTREE_KVM_DEV");
    CU_ASSERT_PTR_NULL(k);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "vmtree needs KVM"));
    const vmt_kvm_caps *c = vmt_kvm_get_caps(fx_kvm);
    CU_ASSERT_EQUAL(c->api_version, 12);
    CU_ASSERT(c->xsave_size >= 4096);
}

static void boot_params_hold_the_command_line(void)
{
    fx_guest g;
    CU_ASSERT_FATAL(fx_boot(&g, "hello", "status=3 extra", NULL) == 0);
    uint8_t *ram = vmt_vm_ram(g.vm, NULL);
    uint32_t ptr, size;
    memcpy(&ptr, ram + VMT_BOOT_PARAMS_ADDR + 0x228, 4);
    memcpy(&size, ram + VMT_BOOT_PARAMS_ADDR + 0x238, 4);
    CU_ASSERT_EQUAL(ptr, VMT_BOOT_CMDLINE_ADDR);
    CU_ASSERT_EQUAL(size, strlen("status=3 extra"));
    CU_ASSERT_STRING_EQUAL((char *)ram + ptr, "status=3 extra");
    fx_free(&g);
}

static int setup(void)
{
    tmpdir = vmt_test_tmpdir("boot");
    return tmpdir ? fx_setup() : 1;
}

static int teardown(void)
{
    vmt_test_rmtree(tmpdir);
    free(tmpdir);
    return fx_teardown();
}

int main(void)
{
    fx_require_kvm();
    static const vmt_test_case cases[] = {
        {"hello_prints_and_exits_zero", hello_prints_and_exits_zero},
        {"exit_status_reaches_the_host", exit_status_reaches_the_host},
        {"bad_images_are_refused_with_a_reason", bad_images_are_refused_with_a_reason},
        {"missing_file_and_directory_are_refused", missing_file_and_directory_are_refused},
        {"bad_configs_are_refused", bad_configs_are_refused},
        {"command_line_too_long_is_refused", command_line_too_long_is_refused},
        {"large_guest_has_ram_above_the_hole", large_guest_has_ram_above_the_hole},
        {"boot_params_hold_the_command_line", boot_params_hold_the_command_line},
        {"missing_kvm_device_says_kvm_is_needed", missing_kvm_device_says_kvm_is_needed},
        {NULL, NULL},
    };
    return vmt_test_run("vmm_boot", cases, setup, teardown);
}
