/*
 * kvstore: an open-addressing hash table at RT_WORK_BASE with seeded random
 * puts, partial updates and deletes: realistic, partly compressible
 * dirtying.  Deterministic: the output is a pure function of the
 * parameters.  vCPUs other than 0 idle.  The mix is in docs/guests.md.
 */
#include "rt.h"

static const char *const keys[] = {"keys", "vsize", "seed", "ops", "every", NULL};

#define PUT_PCT 60    /* insert, or overwrite the whole value */
#define UPDATE_PCT 25 /* rewrite 8 bytes of a live value */
                      /* the remaining 15%: delete */

struct table {
    uint8_t *base;
    uint64_t mask;   /* slots - 1, slots a power of two >= 2 * keys */
    uint64_t stride; /* 8-byte key (0 = empty) + value rounded up to 8 */
    uint64_t vsize;
    uint64_t live;
};

static uint64_t pick(uint64_t r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)r * n) >> 64);
}

static uint8_t *slot(const struct table *t, uint64_t i)
{
    return t->base + i * t->stride;
}

static uint64_t slot_key(const struct table *t, uint64_t i)
{
    uint64_t k;
    memcpy(&k, slot(t, i), 8);
    return k;
}

static uint64_t home(const struct table *t, uint64_t key)
{
    return rt_mix64(key) & t->mask;
}

/* The slot holding `key`, or the empty slot where it would go. */
static uint64_t find(const struct table *t, uint64_t key)
{
    uint64_t i = home(t, key), k;

    while ((k = slot_key(t, i)) != 0 && k != key)
        i = (i + 1) & t->mask;
    return i;
}

/* Half text derived from the key (compressible), half random bytes. */
static void make_value(uint8_t *v, uint64_t vsize, uint64_t key, uint64_t r)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t s = r | 1;
    uint64_t half = vsize / 2;

    for (uint64_t i = 0; i < half; i++) {
        unsigned pos = (unsigned)(i % 20);
        v[i] = pos < 5    ? (uint8_t) "user:"[pos]
               : pos < 19 ? (uint8_t)hex[(key >> (4 * (18 - pos))) & 15]
                          : ';';
    }
    for (uint64_t i = half; i < vsize; i++) {
        if ((i - half) % 8 == 0)
            rt_xorshift64(&s);
        v[i] = (uint8_t)(s >> (8 * ((i - half) % 8)));
    }
}

static void put(struct table *t, uint64_t key, uint64_t r)
{
    uint64_t i = find(t, key);
    uint8_t *s = slot(t, i);

    if (slot_key(t, i) == 0) {
        memcpy(s, &key, 8);
        t->live++;
    }
    make_value(s + 8, t->vsize, key, r);
}

static void update(struct table *t, uint64_t key, uint64_t r)
{
    uint64_t i = find(t, key);

    if (slot_key(t, i) == 0)
        return;
    uint64_t off = t->vsize <= 8 ? 0 : pick(r, t->vsize - 7);
    uint64_t n = t->vsize < 8 ? t->vsize : 8;
    memcpy(slot(t, i) + 8 + off, &r, n);
}

/* Deletion with backward shift: no tombstones. */
static void del(struct table *t, uint64_t key)
{
    uint64_t i = find(t, key), j = i;

    if (slot_key(t, i) == 0)
        return;
    for (;;) {
        j = (j + 1) & t->mask;
        uint64_t k = slot_key(t, j);
        if (k == 0)
            break;
        uint64_t h = home(t, k);
        bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
        if (stays)
            continue;
        memcpy(slot(t, i), slot(t, j), t->stride);
        i = j;
    }
    memset(slot(t, i), 0, t->stride);
    t->live--;
}

static uint64_t hash_table(const struct table *t, uint64_t ops)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (uint64_t i = 0; i <= t->mask; i++) {
        if (slot_key(t, i) == 0)
            continue;
        const uint8_t *s = slot(t, i);
        for (uint64_t off = 0; off < t->stride; off += 8) {
            uint64_t w;
            memcpy(&w, s + off, 8);
            h = (h ^ w ^ i) * 0x100000001b3ull;
            h ^= h >> 29;
        }
    }
    return rt_mix64(h ^ ops);
}

void guest_main(unsigned cpu, const char *cmdline)
{
    struct table t;

    if (cpu != 0)
        rt_idle();
    rt_params_check(cmdline, keys);
    uint64_t nkeys = rt_param_u64(cmdline, "keys", 65536);
    uint64_t seed = rt_param_u64(cmdline, "seed", 1);
    uint64_t ops = rt_param_u64(cmdline, "ops", 0);
    uint64_t every = rt_param_u64(cmdline, "every", 10000);
    t.vsize = rt_param_u64(cmdline, "vsize", 64);

    if (nkeys == 0 || nkeys > (1ull << 32))
        rt_die(RT_STATUS_BADPARAM, "kvstore: keys=%lu must be in 1..2^32\n", nkeys);
    if (t.vsize == 0 || t.vsize > 65536)
        rt_die(RT_STATUS_BADPARAM, "kvstore: vsize=%lu must be in 1..65536\n", t.vsize);
    if (every == 0)
        rt_die(RT_STATUS_BADPARAM, "kvstore: every= must be >= 1\n");
    uint64_t slots = 2;
    while (slots < 2 * nkeys)
        slots <<= 1;
    t.base = (uint8_t *)RT_WORK_BASE;
    t.mask = slots - 1;
    t.stride = 8 + ((t.vsize + 7) & ~7ull);
    t.live = 0;
    uint64_t bytes = slots * t.stride;
    if (!rt_ram_contains(RT_WORK_BASE, bytes))
        rt_die(RT_STATUS_BADPARAM,
               "kvstore: table of %lu slots x %lu bytes does not fit in RAM from 0x%lx "
               "(RAM ends at 0x%lx)\n",
               slots, t.stride, RT_WORK_BASE, rt_ram_end());

    rt_puts("kvstore: start\n");
    memset(t.base, 0, bytes);
    uint64_t s = rt_mix64(seed) | 1;
    for (uint64_t n = 1; ops == 0 || n <= ops; n++) {
        uint64_t key = 1 + pick(rt_xorshift64(&s), nkeys);
        uint64_t r = rt_xorshift64(&s);
        uint64_t op = pick(r, 100);
        if (op < PUT_PCT)
            put(&t, key, r);
        else if (op < PUT_PCT + UPDATE_PCT)
            update(&t, key, r);
        else
            del(&t, key);
        if (n % every == 0)
            rt_printf("kvstore: ops %lu live %lu sum %016lx\n", n, t.live, hash_table(&t, n));
    }
    rt_exit(RT_STATUS_OK);
}
