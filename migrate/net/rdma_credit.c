/*
 * Credit accounting of the RDMA transport (rdma_logic.h, docs/rdma.md
 * "Flow control").  A SEND into a peer that has no receive buffer posted
 * is a receiver-not-ready error that ends the connection, so a side sends
 * only with a credit in hand.  The rules that keep both sides moving:
 *  - every message but a WRITE with immediate returns what is owed;
 *  - the last credit is spent only by a message that returns credits, so
 *    whenever a side drops to zero its peer has just been given credits
 *    and can answer;
 *  - owed credits go back in a CREDIT message once `threshold` are owed,
 *    or at once when the peer may have none left and this side can spare
 *    one (two or more credits), which cannot start a ping-pong: after it
 *    neither side is at zero.
 */
#include "net_internal.h"
#include "rdma_logic.h"

void vmt_rdma_credit_init(vmt_rdma_credit *c, uint32_t window, uint32_t threshold)
{
    c->window = window;
    c->threshold = threshold ? threshold : (window / 4 ? window / 4 : 1);
    if (c->threshold > window)
        c->threshold = window;
    c->credits = window;
    c->owed = 0;
    c->granted = window;
    c->received = 0;
    c->credit_msgs = 0;
}

bool vmt_rdma_credit_can_send(const vmt_rdma_credit *c, bool carries_grant)
{
    if (c->credits >= 2)
        return true;
    return c->credits == 1 && carries_grant && c->owed > 0;
}

uint32_t vmt_rdma_credit_take(vmt_rdma_credit *c, bool carries_grant)
{
    uint32_t grant = 0;
    c->credits--;
    if (carries_grant) {
        grant = c->owed > UINT16_MAX ? UINT16_MAX : c->owed;
        c->owed -= grant;
        c->granted += grant;
    }
    return grant;
}

int vmt_rdma_credit_on_receive(vmt_rdma_credit *c)
{
    if (c->received >= c->granted)
        return vmt_error_set(VMT_EPROTO,
                             "RDMA peer sent message %llu with only %llu receive buffers granted",
                             (unsigned long long)c->received + 1,
                             (unsigned long long)c->granted);
    c->received++;
    return 0;
}

int vmt_rdma_credit_on_grant(vmt_rdma_credit *c, uint32_t grant)
{
    if (grant > c->window - c->credits)
        return vmt_error_set(VMT_EPROTO,
                             "RDMA peer returned %u credits with %u of %u in hand (more than "
                             "it could owe)",
                             grant, c->credits, c->window);
    c->credits += grant;
    return 0;
}

void vmt_rdma_credit_reposted(vmt_rdma_credit *c, uint32_t n)
{
    c->owed += n;
}

bool vmt_rdma_credit_should_return(const vmt_rdma_credit *c)
{
    if (c->owed == 0 || c->credits == 0)
        return false;
    if (c->owed >= c->threshold)
        return true;
    bool peer_may_be_dry = c->granted - c->received == 0;
    return peer_may_be_dry && c->credits >= 2;
}
