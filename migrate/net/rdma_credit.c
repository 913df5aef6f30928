/*
 * Credit accounting of the RDMA transport (rdma_logic.h, docs/rdma.md
 * "Flow control").  The rules that keep both sides moving:
 *  - DATA spends data credits; it never waits on control credits, and
 *    data credits come back in any message;
 *  - control messages and RDMA WRITEs with immediate spend control
 *    credits, whose buffers are reposted on arrival whatever the
 *    application does, so control credits always come back (and pages
 *    keep landing while the stream is not read);
 *  - the last control credit is spent only by a message that returns
 *    control credits (or by FIN, after which nothing is answered): when a
 *    side drops to zero its peer has just been given credits to answer;
 *  - owed credits go back in a CREDIT message once a threshold is owed, or
 *    at once when the peer may have none of that class left.  The control
 *    threshold is at least 2 and a CREDIT message costs the peer only one
 *    control buffer, so CREDIT messages cannot bounce back and forth
 *    forever; the starvation rule for control needs two credits here, so
 *    after it neither side is at zero.
 */
#include "net_internal.h"
#include "rdma_logic.h"

vmt_rdma_class vmt_rdma_msg_class(unsigned type)
{
    return type == VMT_RDMA_MSG_DATA ? VMT_RDMA_CLASS_DATA : VMT_RDMA_CLASS_CTRL;
}

static void pool_init(vmt_rdma_pool *p, uint32_t window, uint32_t threshold)
{
    p->window = window;
    p->threshold = threshold;
    p->credits = window;
    p->owed = 0;
    p->granted = window;
    p->received = 0;
}

void vmt_rdma_credit_init(vmt_rdma_credit *c, uint32_t data_window, uint32_t ctrl_window)
{
    uint32_t dt = data_window / 4 ? data_window / 4 : 1;
    uint32_t ct = ctrl_window / 2 > 2 ? ctrl_window / 2 : 2;
    pool_init(&c->pool[VMT_RDMA_CLASS_DATA], data_window, dt);
    pool_init(&c->pool[VMT_RDMA_CLASS_CTRL], ctrl_window, ct);
    c->credit_msgs = 0;
}

bool vmt_rdma_credit_can_send(const vmt_rdma_credit *c, unsigned type)
{
    const vmt_rdma_pool *d = &c->pool[VMT_RDMA_CLASS_DATA], *k = &c->pool[VMT_RDMA_CLASS_CTRL];
    if (vmt_rdma_msg_class(type) == VMT_RDMA_CLASS_DATA)
        return d->credits >= 1;
    if (type == VMT_RDMA_MSG_FIN)
        return k->credits >= 1;
    if (type == VMT_RDMA_MSG_WRITE) /* returns nothing: never the last one */
        return k->credits >= 2;
    return k->credits >= 2 || (k->credits == 1 && k->owed > 0);
}

static uint16_t take_owed(vmt_rdma_pool *p)
{
    uint32_t g = p->owed > UINT16_MAX ? UINT16_MAX : p->owed;
    p->owed -= g;
    p->granted += g;
    return (uint16_t)g;
}

void vmt_rdma_credit_take(vmt_rdma_credit *c, unsigned type, uint16_t *grant, uint16_t *cgrant)
{
    c->pool[vmt_rdma_msg_class(type)].credits--;
    *grant = *cgrant = 0;
    if (type == VMT_RDMA_MSG_WRITE)
        return; /* the immediate carries the page index, not grants */
    *grant = take_owed(&c->pool[VMT_RDMA_CLASS_DATA]);
    *cgrant = take_owed(&c->pool[VMT_RDMA_CLASS_CTRL]);
}

int vmt_rdma_credit_on_receive(vmt_rdma_credit *c, unsigned type)
{
    vmt_rdma_class k = vmt_rdma_msg_class(type);
    vmt_rdma_pool *p = &c->pool[k];
    if (p->received >= p->granted)
        return vmt_error_set(VMT_EPROTO,
                             "RDMA peer sent %s message %llu with only %llu receive buffers "
                             "granted",
                             k == VMT_RDMA_CLASS_DATA ? "data" : "control",
                             (unsigned long long)p->received + 1,
                             (unsigned long long)p->granted);
    p->received++;
    return 0;
}

static int pool_grant(vmt_rdma_pool *p, uint32_t grant, const char *what)
{
    if (grant > p->window - p->credits)
        return vmt_error_set(VMT_EPROTO,
                             "RDMA peer returned %u %s credits with %u of %u in hand (more "
                             "than it could owe)",
                             grant, what, p->credits, p->window);
    p->credits += grant;
    return 0;
}

int vmt_rdma_credit_on_grant(vmt_rdma_credit *c, uint32_t grant, uint32_t cgrant)
{
    int rc = pool_grant(&c->pool[VMT_RDMA_CLASS_DATA], grant, "data");
    if (rc == 0)
        rc = pool_grant(&c->pool[VMT_RDMA_CLASS_CTRL], cgrant, "control");
    return rc;
}

void vmt_rdma_credit_reposted(vmt_rdma_credit *c, vmt_rdma_class k, uint32_t n)
{
    c->pool[k].owed += n;
}

/* Owed credits of pool p should go back now (given `spare`: we may use a
 * credit for it without becoming the one stuck). */
static bool pool_due(const vmt_rdma_pool *p, bool spare)
{
    if (p->owed == 0)
        return false;
    return p->owed >= p->threshold || (p->granted == p->received && spare);
}

bool vmt_rdma_credit_should_return(const vmt_rdma_credit *c)
{
    const vmt_rdma_pool *k = &c->pool[VMT_RDMA_CLASS_CTRL];
    if (!vmt_rdma_credit_can_send(c, VMT_RDMA_MSG_CREDIT))
        return false;
    return pool_due(&c->pool[VMT_RDMA_CLASS_DATA], true) || pool_due(k, k->credits >= 2);
}
