/*
 * The VM process of `vmtree branch --from HOST:PORT SNAP`: a VM that runs
 * from a snapshot still arriving from another host's store (migrate/
 * vmt_golden_lazy, docs/golden.md §6).
 *
 * The process connects, fetches the snapshot's record, state and map, and
 * starts the VM at once; pages it lacks come from the server on fault and
 * by prefetch, and are stored as they arrive.  It holds the store as its
 * writer until the snapshot is complete there (other writers get
 * VMT_EBUSY meanwhile, as during a pull); then HEAD is set to it and the
 * VM is like any branch.  Until then snapshot, rollback and migrate are
 * refused (the VM's parent is not in the store yet).  If the transfer
 * fails, the process stops: the VM is blocked on the first page it lacks
 * and must not run on without it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netopts.h"
#include "vmproc.h"
#include "vmtree/golden.h"

typedef struct remote {
    vmt_store *st;
    vmt_catalog *c;
    vmt_tls *tls;
    vmt_session *s;
    vmt_golden_lazy *gl;
    uint8_t psk[VMT_NET_PSK_MAX];
    vmt_id snap;
} remote;

static void remote_free(remote *r)
{
    if (!r)
        return;
    vmt_golden_lazy_close(r->gl);
    vmt_session_close(r->s);
    vmt_catalog_close(r->c);
    vmt_store_close(r->st);
    vmt_tls_free(r->tls);
    free(r);
}

/* The store (as writer), the catalog and the session to o->from_addr. */
static int remote_connect(const vmproc_opts *o, remote *r)
{
    vmt_session_config cfg;
    char host[256];
    uint16_t port;
    size_t psk_len = 0;
    vmt_session_config_init(&cfg);
    cfg.timeout_ms = 60000;
    int rc = vmt_cli_parse_hostport(o->from_addr, host, sizeof(host), &port, false);
    rc = rc ? rc : vmt_cli_store_open(o->store, true, &r->st);
    rc = rc ? rc : vmt_cli_catalog_open(o->store, &r->c);
    if (rc == 0 && o->psk_file)
        rc = vmt_cli_read_psk(o->psk_file, r->psk, sizeof(r->psk), &psk_len);
    if (rc == 0 && o->tls)
        rc = vmt_cli_tls_new(o->tls, false, &r->tls);
    if (rc)
        return rc;
    cfg.tls = r->tls;
    if (o->psk_file) {
        cfg.psk = r->psk;
        cfg.psk_len = psk_len;
    } else {
        cfg.allow_unauthenticated = true; /* no key: TLS, or a trusted network */
    }
    return vmt_session_connect(&r->s, host, port, &cfg);
}

int vmp_create_from_remote(vmproc *p)
{
    remote *r = calloc(1, sizeof(*r));
    vmt_snap_record *rec = malloc(sizeof(*rec));
    vmt_golden_opts go;
    vmt_golden_opts_init(&go);
    int rc = r && rec ? remote_connect(p->o, r) : vmt_error_set(VMT_ENOMEM, "out of memory");
    /* One prefetcher: the other core is the guest's. */
    if (rc == 0)
        rc = vmt_golden_lazy_open(&r->gl, r->s, r->st, p->kvm, &p->base, p->o->snap_name, &go, 1,
                                  &p->vm, &r->snap, rec);
    if (rc == 0) {
        snprintf(p->image, sizeof(p->image), "%s", rec->image);
        snprintf(p->cmdline, sizeof(p->cmdline), "%s", rec->cmdline);
        p->mem = rec->mem_size;
        p->vcpus = rec->vcpus;
        p->irqchip = rec->irqchip;
        p->has_head = false; /* HEAD once the snapshot is in the store */
        p->remote = r;
    }
    free(rec);
    if (rc) {
        rc = vmt_error_wrap(rc, "branch from %s", p->o->from_addr);
        remote_free(r);
    }
    return rc;
}

/* The snapshot is complete in the store: it is HEAD now. */
static void remote_done(vmproc *p, remote *r)
{
    char ref[VMT_SNAP_NAME_MAX + 16], text[96], sid[13];
    snprintf(ref, sizeof(ref), "vm/%s/HEAD", p->o->name);
    p->has_head = true;
    p->head = r->snap;
    if (vmt_catalog_set_ref(r->c, ref, &r->snap, NULL) != 0)
        vmt_warn("%s: setting HEAD: %s", p->o->name, vmt_error_last());
    vmt_cli_short_id(&r->snap, sid);
    snprintf(text, sizeof(text), "snapshot %s arrived from %s", sid, p->o->from_addr);
    vmp_console_marker(p, text);
    vmt_info("%s: %s", p->o->name, text);
    remote_free(r);
    p->remote = NULL;
}

void vmp_remote_poll(vmproc *p)
{
    remote *r = p->remote;
    if (!r)
        return;
    int rc = vmt_golden_lazy_poll(r->gl, r->c, NULL);
    if (rc == 0)
        return;
    if (rc == 1) {
        remote_done(p, r);
        return;
    }
    char text[700];
    snprintf(text, sizeof(text), "the snapshot stopped arriving from %s: %s; stopping the VM",
             p->o->from_addr, vmt_error_last());
    vmp_console_marker(p, text);
    fprintf(stderr, "vmtree: %s: %s\n", p->o->name, text);
    vmt_vm_request_stop(p->vm);
    p->status = 125; /* vmtree's own failure, as EXIT_VMTREE_ERROR */
    p->stop = true;
}

void vmp_remote_close(vmproc *p)
{
    remote_free(p->remote);
    p->remote = NULL;
}

int vmp_remote_busy(vmproc *p, const char *op)
{
    return vmt_error_set(VMT_EBUSY,
                         "VM %s is still arriving from %s: %s is possible once its snapshot "
                         "is complete in the store (vmtree status %s: restore done)",
                         p->o->name, p->o->from_addr, op, p->o->name);
}
