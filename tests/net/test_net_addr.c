/*
 * Migration addresses (net_addr.c): every accepted form, every refusal with
 * the part it names, and formatting back.
 */
#include <stdio.h>
#include <string.h>

#include "net_fixture.h"

typedef struct good_case {
    const char *text;
    vmt_net_scheme scheme;
    const char *host;
    uint16_t port;
} good_case;

static const good_case good[] = {
    {"rdma://10.0.0.1:4000", VMT_NET_SCHEME_RDMA, "10.0.0.1", 4000},
    {"tcp://host.example:1", VMT_NET_SCHEME_TCP, "host.example", 1},
    {"host:65535", VMT_NET_SCHEME_TCP, "host", 65535},
    {"127.0.0.1:0", VMT_NET_SCHEME_TCP, "127.0.0.1", 0},
    {"[::1]:4000", VMT_NET_SCHEME_TCP, "::1", 4000},
    {"rdma://[fe80::1%eth0]:7", VMT_NET_SCHEME_RDMA, "fe80::1%eth0", 7},
    {"rdma://[::ffff:10.0.0.1]:4000", VMT_NET_SCHEME_RDMA, "::ffff:10.0.0.1", 4000},
    {"tcp://my_host-2:08080", VMT_NET_SCHEME_TCP, "my_host-2", 8080},
};

static void test_accepted_forms(void)
{
    for (size_t i = 0; i < VMT_ARRAY_SIZE(good); i++) {
        vmt_net_addr a;
        int rc = vmt_net_addr_parse(good[i].text, &a);
        if (rc)
            fprintf(stderr, "%s: %s\n", good[i].text, vmt_error_last());
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT_EQUAL(a.scheme, good[i].scheme);
        CU_ASSERT_STRING_EQUAL(a.host, good[i].host);
        CU_ASSERT_EQUAL(a.port, good[i].port);
    }
}

typedef struct bad_case {
    const char *text;
    const char *names; /* what the message must say */
} bad_case;

static const bad_case bad[] = {
    {"", "empty address"},
    {"udp://h:1", "unknown scheme \"udp\""},
    {"RDMA://h:1", "unknown scheme \"RDMA\""},
    {"rdma://10.0.0.1", "no port"},
    {"rdma://10.0.0.1:", "empty port"},
    {"h:70000", "out of range"},
    {"h:99999999999999999999", "out of range"},
    {"h:12a", "not a number"},
    {"h:-1", "not a number"},
    {"h:4000/path", "nothing may follow the port"},
    {"::1:4000", "IPv6 address without brackets"},
    {"rdma://:4000", "no host"},
    {"[::1]4000", "no port after"},
    {"[::1:4000", "without ']'"},
    {"[10.0.0.1]:4000", "is not IPv6"},
    {"ho st:1", "bad character ' '"},
    {"rdma://h@x:1", "bad character '@'"},
    {"[]:1", "no host"},
};

static void test_refusals_name_the_bad_part(void)
{
    for (size_t i = 0; i < VMT_ARRAY_SIZE(bad); i++) {
        vmt_net_addr a;
        memset(&a, 0x55, sizeof(a));
        CU_ASSERT_EQUAL(vmt_net_addr_parse(bad[i].text, &a), VMT_EINVAL);
        if (!strstr(vmt_error_last(), bad[i].names))
            fprintf(stderr, "\"%s\": message \"%s\" lacks \"%s\"\n", bad[i].text,
                    vmt_error_last(), bad[i].names);
        CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), bad[i].names));
        CU_ASSERT_EQUAL(a.port, 0); /* zeroed on failure */
        CU_ASSERT_EQUAL(a.host[0], '\0');
    }
    vmt_net_addr a;
    CU_ASSERT_EQUAL(vmt_net_addr_parse(NULL, &a), VMT_EINVAL);
    char longhost[400];
    memset(longhost, 'a', sizeof(longhost));
    memcpy(longhost + sizeof(longhost) - 6, ":4000", 6);
    CU_ASSERT_EQUAL(vmt_net_addr_parse(longhost, &a), VMT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "too long"));
}

static void test_format_round_trips(void)
{
    for (size_t i = 0; i < VMT_ARRAY_SIZE(good); i++) {
        vmt_net_addr a, b;
        char text[300];
        CU_ASSERT_EQUAL_FATAL(vmt_net_addr_parse(good[i].text, &a), 0);
        vmt_net_addr_format(&a, text, sizeof(text));
        CU_ASSERT_EQUAL(vmt_net_addr_parse(text, &b), 0);
        CU_ASSERT(memcmp(&a, &b, sizeof(a)) == 0);
    }
    vmt_net_addr a;
    char text[64];
    CU_ASSERT_EQUAL(vmt_net_addr_parse("rdma://[::1]:4000", &a), 0);
    vmt_net_addr_format(&a, text, sizeof(text));
    CU_ASSERT_STRING_EQUAL(text, "rdma://[::1]:4000");
    CU_ASSERT_EQUAL(vmt_net_addr_parse("h:1", &a), 0);
    vmt_net_addr_format(&a, text, sizeof(text));
    CU_ASSERT_STRING_EQUAL(text, "tcp://h:1");
    CU_ASSERT_STRING_EQUAL(vmt_net_scheme_name(VMT_NET_SCHEME_RDMA), "rdma");
}

static void test_tcp_urls_connect_and_listen(void)
{
    vmt_listener *l = NULL;
    vmt_transport *a = NULL, *b = NULL;
    char url[64];
    CU_ASSERT_EQUAL_FATAL(vmt_listen_url(&l, "tcp://127.0.0.1:0"), 0);
    CU_ASSERT_EQUAL(vmt_listener_scheme(l), VMT_NET_SCHEME_TCP);
    snprintf(url, sizeof(url), "127.0.0.1:%u", vmt_listener_port(l));
    CU_ASSERT_EQUAL(vmt_transport_connect_url(&a, url, NET_TIMEOUT_MS), 0);
    CU_ASSERT_EQUAL(vmt_listener_accept(l, &b, NET_TIMEOUT_MS), 0);
    uint8_t in[3];
    CU_ASSERT_EQUAL(vmt_transport_send(a, "abc", 3), 0);
    CU_ASSERT_EQUAL(vmt_transport_recv(b, in, 3), 0);
    CU_ASSERT(memcmp(in, "abc", 3) == 0);
    vmt_transport_close(a);
    vmt_transport_close(b);
    /* Port 0 cannot be connected to; a bad URL is refused before anything. */
    CU_ASSERT_EQUAL(vmt_transport_connect_url(&a, "tcp://127.0.0.1:0", 100), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_transport_connect_url(&a, "tcp://127.0.0.1", 100), VMT_EINVAL);
    vmt_listener *l2 = NULL;
    CU_ASSERT_EQUAL(vmt_listen_url(&l2, "sctp://127.0.0.1:0"), VMT_EINVAL);
    CU_ASSERT_PTR_NULL(l2);
    CU_ASSERT_PTR_NULL(a);
    vmt_listener_close(l);
}

typedef struct url_server_job {
    vmt_listener *l;
    const vmt_session_config *c;
    vmt_session *s;
} url_server_job;

static int url_server(void *arg)
{
    url_server_job *j = arg;
    return vmt_session_accept(&j->s, j->l, j->c);
}

static void test_session_over_a_tcp_url(void)
{
    vmt_listener *l = NULL;
    vmt_session *cli = NULL;
    vmt_session_config c;
    char url[64];
    net_thread th;

    vmt_session_config_init(&c);
    c.allow_unauthenticated = true;
    c.nstreams = 2;
    CU_ASSERT_EQUAL_FATAL(vmt_listen_url(&l, "127.0.0.1:0"), 0);
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%u", vmt_listener_port(l));
    url_server_job job = {l, &c, NULL};
    net_spawn(&th, url_server, &job);
    CU_ASSERT_EQUAL(vmt_session_connect_url(&cli, url, &c), 0);
    CU_ASSERT_EQUAL(net_join(&th), 0);
    CU_ASSERT_PTR_NOT_NULL(cli);
    if (cli)
        CU_ASSERT_EQUAL(vmt_session_nstreams(cli), 2);
    vmt_session_close(cli);
    vmt_session_close(job.s);
    vmt_listener_close(l);
}

static const vmt_test_case cases[] = {
    {"accepted forms", test_accepted_forms},
    {"refusals name the bad part", test_refusals_name_the_bad_part},
    {"format round-trips", test_format_round_trips},
    {"tcp URLs connect and listen", test_tcp_urls_connect_and_listen},
    {"a session over a tcp URL", test_session_over_a_tcp_url},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("net addresses and URLs", cases, NULL, NULL);
}
