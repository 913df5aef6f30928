/*
 * libFuzzer target for the RDMA transport's decoders (migrate/net/
 * rdma_msg.c): the message in every received SEND buffer and the
 * connection data of rdma_cm, which a peer controls completely.
 *
 * Input: a mode byte, then
 *   mode 0: a received message (vmt_rdma_msg_decode with the buffer size
 *           of the transport);
 *   mode 1: connection data (vmt_rdma_hello_decode);
 *   mode 2: a small buffer cap byte, then a message decoded against it.
 * Oracles beyond "no crash, no UB": only VMT_EPROTO comes back; whatever
 * decodes encodes back to exactly the input bytes (the format has no
 * redundancy a decoder could ignore); decoded DATA points inside the input
 * and is no longer than the cap; decoded connection data is within range.
 * Seeds: fuzz/corpus/net_rdmamsg/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../migrate/net/rdma_logic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BUF (64u << 10)

static void check_msg(const uint8_t *p, size_t len, size_t max_data)
{
    vmt_rdma_msg m;
    int rc = vmt_rdma_msg_decode(p, len, max_data, &m);
    if (rc == VMT_EPROTO)
        return;
    if (rc != 0)
        __builtin_trap();
    if (m.type == VMT_RDMA_MSG_DATA &&
        (m.data < p || m.data + m.len > p + len || m.len == 0 || m.len > max_data))
        __builtin_trap();
    uint8_t *out = malloc(len);
    if (!out)
        return;
    if (vmt_rdma_msg_encode(&m, out, len) != len || memcmp(out, p, len) != 0)
        __builtin_trap();
    free(out);
}

static void check_hello(const uint8_t *p, size_t len)
{
    vmt_rdma_hello h;
    uint8_t out[VMT_RDMA_HELLO_LEN];
    int rc = vmt_rdma_hello_decode(p, len, &h);
    if (rc == VMT_EPROTO)
        return;
    if (rc != 0 || h.window < VMT_RDMA_WINDOW_MIN || h.window > VMT_RDMA_WINDOW_MAX ||
        h.ctrl_window < VMT_RDMA_CTRL_MIN || h.buf_bytes > VMT_RDMA_BUF_MAX)
        __builtin_trap();
    vmt_rdma_hello_encode(&h, out);
    if (memcmp(out, p, VMT_RDMA_HELLO_LEN) != 0)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        check_msg(data + 1, size - 1, BUF - VMT_RDMA_MSG_HDR);
        break;
    case 1:
        check_hello(data + 1, size - 1);
        break;
    default:
        if (size >= 2)
            check_msg(data + 2, size - 2, data[1]);
        break;
    }
    return 0;
}
