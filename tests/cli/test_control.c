/* cli/control.c: the control protocol's frames, caps and socket I/O. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control.h"
#include "harness.h"

static vmt_ctl_msg *m, *m2;
static uint8_t *buf;

static size_t encode(const vmt_ctl_msg *msg)
{
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(vmt_ctl_encode(msg, buf, VMT_CTL_FRAME_MAX, &len), 0);
    return len;
}

static void fields_round_trip_with_escapes(void)
{
    static const char value[] = "100% sure\nline two\ttab\x7f \xc3\xa9";
    vmt_ctl_init(m, VMT_CTL_REQUEST);
    CU_ASSERT_EQUAL(vmt_ctl_adds(m, "op", "snapshot"), 0);
    CU_ASSERT_EQUAL(vmt_ctl_adds(m, "message", value), 0);
    CU_ASSERT_EQUAL(vmt_ctl_add(m, "bin", "a\0b", 3), 0);
    CU_ASSERT_EQUAL(vmt_ctl_addf(m, "n", "%d", 42), 0);
    size_t len = encode(m);
    CU_ASSERT_EQUAL(len, vmt_ctl_encoded_size(m));
    /* No raw newline inside a value: one line per field. */
    size_t lines = 0;
    for (size_t i = VMT_CTL_HDR; i < len; i++)
        lines += buf[i] == '\n';
    CU_ASSERT_EQUAL(lines, 4);
    CU_ASSERT_EQUAL_FATAL(vmt_ctl_decode(m2, buf, len), 0);
    CU_ASSERT_EQUAL(m2->type, VMT_CTL_REQUEST);
    CU_ASSERT_STRING_EQUAL(vmt_ctl_get(m2, "message"), value);
    CU_ASSERT_EQUAL(m2->fields[2].len, 3);
    CU_ASSERT_EQUAL(memcmp(vmt_ctl_get(m2, "bin"), "a\0b", 3), 0);
    uint64_t n = 0;
    CU_ASSERT_EQUAL(vmt_ctl_get_u64(m2, "n", &n), 0);
    CU_ASSERT_EQUAL(n, 42);
    CU_ASSERT_EQUAL(vmt_ctl_get_u64(m2, "op", &n), VMT_EPROTO);
    CU_ASSERT_EQUAL(vmt_ctl_get_u64(m2, "absent", &n), VMT_ENOENT);
    CU_ASSERT_PTR_NULL(vmt_ctl_get(m2, "absent"));
}

static void bad_keys_and_caps_are_refused_when_building(void)
{
    vmt_ctl_init(m, VMT_CTL_REPLY);
    CU_ASSERT_EQUAL(vmt_ctl_adds(m, "Op", "x"), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_ctl_adds(m, "", "x"), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_ctl_adds(m, "a_very_long_key_that_has_32_byte", "x"), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_ctl_adds(m, "k", "x"), 0);
    CU_ASSERT_EQUAL(vmt_ctl_adds(m, "k", "y"), VMT_EINVAL);
    char *big = malloc(VMT_CTL_BODY_MAX);
    memset(big, 'a', VMT_CTL_BODY_MAX - 1);
    big[VMT_CTL_BODY_MAX - 1] = '\0';
    CU_ASSERT_EQUAL(vmt_ctl_adds(m, "big", big), VMT_ERANGE);
    /* A value of control bytes triples when escaped. */
    memset(big, '\n', VMT_CTL_BODY_MAX / 3);
    big[VMT_CTL_BODY_MAX / 3] = '\0';
    CU_ASSERT_EQUAL(vmt_ctl_adds(m, "big", big), VMT_ERANGE);
    free(big);
    vmt_ctl_init(m, VMT_CTL_REPLY);
    char key[8];
    for (unsigned i = 0; i < VMT_CTL_MAX_FIELDS; i++) {
        snprintf(key, sizeof(key), "k%u", i);
        CU_ASSERT_EQUAL(vmt_ctl_adds(m, key, "v"), 0);
    }
    CU_ASSERT_EQUAL(vmt_ctl_adds(m, "one_more", "v"), VMT_ERANGE);
}

/* Decodes `body` under a valid header; returns the decoder's result. */
static int decode_body_text(const char *body)
{
    size_t n = strlen(body);
    memcpy(buf, "VMTC\x01\x01\x00\x00", 8);
    buf[8] = (uint8_t)n;
    buf[9] = (uint8_t)(n >> 8);
    buf[10] = buf[11] = 0;
    memcpy(buf + VMT_CTL_HDR, body, n);
    return vmt_ctl_decode(m2, buf, VMT_CTL_HDR + n);
}

static void malformed_frames_are_refused(void)
{
    CU_ASSERT_EQUAL(decode_body_text("op=status\n"), 0);
    CU_ASSERT_EQUAL(decode_body_text(""), 0);
    CU_ASSERT_EQUAL(decode_body_text("op=status"), VMT_EPROTO);      /* no final newline */
    CU_ASSERT_EQUAL(decode_body_text("opstatus\n"), VMT_EPROTO);     /* no '=' */
    CU_ASSERT_EQUAL(decode_body_text("OP=status\n"), VMT_EPROTO);    /* key chars */
    CU_ASSERT_EQUAL(decode_body_text("=x\n"), VMT_EPROTO);           /* empty key */
    CU_ASSERT_EQUAL(decode_body_text("a=1\na=2\n"), VMT_EPROTO);     /* repeated */
    CU_ASSERT_EQUAL(decode_body_text("a=%4\n"), VMT_EPROTO);         /* short escape */
    CU_ASSERT_EQUAL(decode_body_text("a=%zz\n"), VMT_EPROTO);        /* bad escape */
    CU_ASSERT_EQUAL(decode_body_text("a=x\ty\n"), VMT_EPROTO);       /* raw control byte */
    CU_ASSERT_EQUAL(decode_body_text("a=%29\n"), 0);                 /* needless escape: ok */
    CU_ASSERT_STRING_EQUAL(vmt_ctl_get(m2, "a"), ")");

    uint8_t type;
    uint32_t blen;
    uint8_t hdr[VMT_CTL_HDR] = {'V', 'M', 'T', 'C', 1, 1, 0, 0, 0, 0, 0, 0};
    CU_ASSERT_EQUAL(vmt_ctl_decode_header(hdr, sizeof(hdr), &type, &blen), 0);
    CU_ASSERT_EQUAL(vmt_ctl_decode_header(hdr, 11, &type, &blen), VMT_EPROTO);
    hdr[0] = 'X';
    CU_ASSERT_EQUAL(vmt_ctl_decode_header(hdr, sizeof(hdr), &type, &blen), VMT_EPROTO);
    hdr[0] = 'V';
    hdr[4] = 2; /* a newer protocol version */
    CU_ASSERT_EQUAL(vmt_ctl_decode_header(hdr, sizeof(hdr), &type, &blen), VMT_EUNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "version 2"));
    hdr[4] = 1;
    hdr[5] = 9;
    CU_ASSERT_EQUAL(vmt_ctl_decode_header(hdr, sizeof(hdr), &type, &blen), VMT_EPROTO);
    hdr[5] = 1;
    hdr[10] = 1; /* a body of 65536 bytes: past the cap */
    CU_ASSERT_EQUAL(vmt_ctl_decode_header(hdr, sizeof(hdr), &type, &blen), VMT_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "cap"));
    /* Length field and frame size must agree. */
    vmt_ctl_init(m, VMT_CTL_REQUEST);
    vmt_ctl_adds(m, "op", "status");
    size_t len = encode(m);
    CU_ASSERT_EQUAL(vmt_ctl_decode(m2, buf, len - 1), VMT_EPROTO);
}

static void error_replies_carry_code_and_message(void)
{
    CU_ASSERT_EQUAL(vmt_ctl_reply_error(m, VMT_EBUSY, "store is busy"), 0);
    size_t len = encode(m);
    CU_ASSERT_EQUAL_FATAL(vmt_ctl_decode(m2, buf, len), 0);
    CU_ASSERT_EQUAL(m2->type, VMT_CTL_REPLY);
    CU_ASSERT_EQUAL(vmt_ctl_error_code(vmt_ctl_get(m2, "error")), VMT_EBUSY);
    CU_ASSERT_STRING_EQUAL(vmt_ctl_get(m2, "message"), "store is busy");
    CU_ASSERT_EQUAL(vmt_ctl_error_code("VMT_NOPE"), VMT_ERR);
}

static void frames_cross_a_socket_and_time_out(void)
{
    int sv[2];
    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    vmt_ctl_init(m, VMT_CTL_PROGRESS);
    vmt_ctl_adds(m, "phase", "round 1");
    uint64_t dl = vmt_now_ns() + 1000000000ull;
    CU_ASSERT_EQUAL(vmt_ctl_send(sv[0], m, dl), 0);
    CU_ASSERT_EQUAL(vmt_ctl_recv(sv[1], m2, dl), 0);
    CU_ASSERT_EQUAL(m2->type, VMT_CTL_PROGRESS);
    CU_ASSERT_STRING_EQUAL(vmt_ctl_get(m2, "phase"), "round 1");
    /* Nothing sent: the deadline passes. */
    uint64_t t0 = vmt_now_ns();
    CU_ASSERT_EQUAL(vmt_ctl_recv(sv[1], m2, t0 + 50000000ull), VMT_ETIMEDOUT);
    CU_ASSERT(vmt_now_ns() - t0 >= 50000000ull);
    /* Half a frame, then the peer closes. */
    CU_ASSERT_EQUAL(write(sv[0], "VMTC\x01", 5), 5);
    close(sv[0]);
    CU_ASSERT_EQUAL(vmt_ctl_recv(sv[1], m2, vmt_now_ns() + 1000000000ull), VMT_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "closed"));
    close(sv[1]);
}

static int setup(void)
{
    m = malloc(sizeof(*m));
    m2 = malloc(sizeof(*m2));
    buf = malloc(VMT_CTL_FRAME_MAX);
    return m && m2 && buf ? 0 : 1;
}

static int teardown(void)
{
    free(m);
    free(m2);
    free(buf);
    return 0;
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"fields round-trip with escapes", fields_round_trip_with_escapes},
        {"bad keys and caps are refused when building",
         bad_keys_and_caps_are_refused_when_building},
        {"malformed frames are refused", malformed_frames_are_refused},
        {"error replies carry code and message", error_replies_carry_code_and_message},
        {"frames cross a socket and time out", frames_cross_a_socket_and_time_out},
        {NULL, NULL},
    };
    return vmt_test_run("cli/control", cases, setup, teardown);
}
