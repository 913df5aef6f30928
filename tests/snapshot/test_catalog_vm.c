/*
 * snapshot/catalog_sql_vm.c and catalog_refs_vm.c: registering VMs.  A name
 * is held while the process registered for it lives; a registration left by
 * a dead process is replaced; the VM's HEAD is the ref vm/NAME/HEAD.  In a
 * shared catalog (test_catalog_vm_rados) a registration names its host, and
 * one by another host holds the name.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "snap_fixture.h"
#include "harness.h"

static char *tmp;

static vmt_catalog *open_fresh(void)
{
    vmt_catalog *c = NULL;
    fx_location_free(tmp);
    tmp = fx_location("catvm");
    CU_ASSERT_PTR_NOT_NULL_FATAL(tmp);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_open(&c, tmp), 0);
    return c;
}

static int teardown(void)
{
    fx_location_free(tmp);
    return 0;
}

static void vmdesc(vmt_catalog_vm *vm, const char *name, int64_t pid, const vmt_id *head)
{
    memset(vm, 0, sizeof(*vm));
    snprintf(vm->name, sizeof(vm->name), "%s", name);
    vm->pid = pid;
    snprintf(vm->socket, sizeof(vm->socket), "/run/vmtree/%s.sock", name);
    snprintf(vm->image, sizeof(vm->image), "/guests/%s.elf", name);
    vm->mem_size = 256ull << 20;
    vm->vcpus = 2;
    if (head) {
        vm->head = *head;
        vm->has_head = true;
    }
}

static void test_register_get_list_unregister(void)
{
    vmt_catalog *c = open_fresh();
    vmt_catalog_vm vm, got, *all = NULL;
    vmt_id h = fx_fake_id(1), ref;
    size_t n = 0;

    vmdesc(&vm, "web", 0, &h);
    CU_ASSERT_EQUAL(vmt_catalog_register_vm(c, &vm), 0);
    vmdesc(&vm, "db", 0, NULL);
    CU_ASSERT_EQUAL(vmt_catalog_register_vm(c, &vm), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_get_vm(c, "web", &got), 0);
    CU_ASSERT_STRING_EQUAL(got.socket, "/run/vmtree/web.sock");
    CU_ASSERT_STRING_EQUAL(got.image, "/guests/web.elf");
    CU_ASSERT_EQUAL(got.mem_size, 256ull << 20);
    CU_ASSERT_EQUAL(got.vcpus, 2);
    CU_ASSERT_TRUE(got.has_head && vmt_id_equal(&got.head, &h));
    CU_ASSERT_EQUAL(vmt_catalog_get_ref(c, "vm/web/HEAD", &ref), 0);
    CU_ASSERT_TRUE(vmt_id_equal(&ref, &h));
    /* The HEAD follows the ref. */
    vmt_id h2 = fx_fake_id(2);
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "vm/web/HEAD", &h2, &h), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_get_vm(c, "web", &got), 0);
    CU_ASSERT_TRUE(vmt_id_equal(&got.head, &h2));
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_list_vms(c, &all, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(all[0].name, "db");
    CU_ASSERT_FALSE(all[0].has_head);
    CU_ASSERT_STRING_EQUAL(all[1].name, "web");
    free(all);
    CU_ASSERT_EQUAL(vmt_catalog_unregister_vm(c, "web"), 0);
    CU_ASSERT_EQUAL(vmt_catalog_get_vm(c, "web", &got), VMT_ENOENT);
    CU_ASSERT_EQUAL(vmt_catalog_unregister_vm(c, "web"), VMT_ENOENT);
    /* Its history stays reachable until the ref is deleted. */
    CU_ASSERT_EQUAL(vmt_catalog_get_ref(c, "vm/web/HEAD", &ref), 0);
    vmt_catalog_close(c);
}

static void test_live_process_holds_its_name_until_it_dies(void)
{
    vmt_catalog *c = open_fresh();
    vmt_catalog_vm vm, got;

    pid_t child = fork();
    CU_ASSERT_FATAL(child >= 0);
    if (child == 0) {
        pause();
        _exit(0);
    }
    vmdesc(&vm, "web", child, NULL);
    CU_ASSERT_EQUAL(vmt_catalog_register_vm(c, &vm), 0);
    vmdesc(&vm, "web", getpid(), NULL);
    CU_ASSERT_EQUAL(vmt_catalog_register_vm(c, &vm), VMT_EEXIST);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "running"));
    /* The holder itself may update its registration. */
    vmdesc(&vm, "web", child, NULL);
    strcpy(vm.socket, "/tmp/other.sock");
    CU_ASSERT_EQUAL(vmt_catalog_register_vm(c, &vm), 0);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    /* Dead now: its stale registration is replaced. */
    vmdesc(&vm, "web", getpid(), NULL);
    CU_ASSERT_EQUAL(vmt_catalog_register_vm(c, &vm), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_get_vm(c, "web", &got), 0);
    CU_ASSERT_EQUAL(got.pid, getpid());
    CU_ASSERT_STRING_EQUAL(got.socket, "/run/vmtree/web.sock");
    vmt_catalog_close(c);
}

static void test_invalid_vm_names_are_refused(void)
{
    vmt_catalog *c = open_fresh();
    vmt_catalog_vm vm;
    static const char *const bad[] = {"", "a b", "a/b", "a@HEAD", "x~1", "x^"};

    for (size_t i = 0; i < VMT_ARRAY_SIZE(bad); i++) {
        vmdesc(&vm, bad[i], 0, NULL);
        CU_ASSERT_EQUAL(vmt_catalog_register_vm(c, &vm), VMT_EINVAL);
    }
    vmdesc(&vm, "ok", 0, NULL);
    memset(vm.name, 'a', sizeof(vm.name)); /* 64 bytes, no NUL */
    CU_ASSERT_EQUAL(vmt_catalog_register_vm(c, &vm), VMT_EINVAL);
    vmdesc(&vm, "ok", -5, NULL);
    CU_ASSERT_EQUAL(vmt_catalog_register_vm(c, &vm), VMT_EINVAL);
    vmt_catalog_close(c);
}

/* Another host's registration cannot be tested here: it holds the name
 * (the error names the host) until that host unregisters it.  A directory
 * store's catalog has one host and keeps no host. */
static void test_other_hosts_registration_holds_the_name(void)
{
    vmt_catalog *c = open_fresh();
    vmt_catalog_vm vm, got;
    vmt_id h = fx_fake_id(3);
    vmdesc(&vm, "web.1", 999999, &h);
    snprintf(vm.host, sizeof(vm.host), "host-a");
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_register_vm(c, &vm), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_get_vm(c, "web.1", &got), 0);
    CU_ASSERT_TRUE(got.has_head && vmt_id_equal(&got.head, &h));
    if (!fx_rados()) {
        CU_ASSERT_STRING_EQUAL(got.host, "");
        CU_ASSERT_TRUE(vmt_catalog_vm_local(c, &got));
        vmt_catalog_close(c);
        return;
    }
    CU_ASSERT_STRING_EQUAL(got.host, "host-a");
    CU_ASSERT_FALSE(vmt_catalog_vm_local(c, &got));
    /* pid 999999 is no process here, yet the name stays taken. */
    vmdesc(&vm, "web.1", getpid(), NULL);
    CU_ASSERT_EQUAL(vmt_catalog_register_vm(c, &vm), VMT_EEXIST);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "host-a"));
    CU_ASSERT_EQUAL(vmt_catalog_unregister_vm(c, "web.1"), 0);
    CU_ASSERT_EQUAL(vmt_catalog_register_vm(c, &vm), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_get_vm(c, "web.1", &got), 0);
    CU_ASSERT_STRING_EQUAL(got.host, vmt_catalog_host(c));
    CU_ASSERT_TRUE(vmt_catalog_vm_local(c, &got));
    CU_ASSERT_TRUE(got.has_head && vmt_id_equal(&got.head, &h)); /* HEAD kept */
    vmt_catalog_close(c);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"register, get, list, unregister", test_register_get_list_unregister},
        {"live process holds its name until it dies",
         test_live_process_holds_its_name_until_it_dies},
        {"invalid VM names are refused", test_invalid_vm_names_are_refused},
        {"another host's registration holds the name",
         test_other_hosts_registration_holds_the_name},
        {NULL, NULL},
    };
    return vmt_test_run("snapshot/catalog_vm", cases, NULL, teardown);
}
