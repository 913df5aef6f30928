/* Parsing of sizes and integers from user input (see util.h). */
#include "vmtree/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <strings.h>

int vmt_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (!s || !isdigit((unsigned char)s[0]))
        return vmt_error_set(VMT_EINVAL, "'%s' is not a number", s ? s : "");
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return vmt_error_set(VMT_ERANGE, "'%s' is too large", s);
    if (*end)
        return vmt_error_set(VMT_EINVAL, "'%s' is not a number", s);
    if (v < min || v > max)
        return vmt_error_set(VMT_ERANGE, "%llu is outside [%llu, %llu]", v,
                             (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return 0;
}

static int suffix_shift(const char *suf, unsigned *shift)
{
    static const struct {
        const char *name;
        unsigned shift;
    } units[] = {
        {"", 0},    {"b", 0},    {"k", 10},   {"kb", 10}, {"kib", 10}, {"m", 20},
        {"mb", 20}, {"mib", 20}, {"g", 30},   {"gb", 30}, {"gib", 30}, {"t", 40},
        {"tb", 40}, {"tib", 40},
    };
    for (size_t i = 0; i < VMT_ARRAY_SIZE(units); i++) {
        if (strcasecmp(suf, units[i].name) == 0) {
            *shift = units[i].shift;
            return 0;
        }
    }
    return -1;
}

int vmt_parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    unsigned shift;

    if (!s || !isdigit((unsigned char)s[0]))
        return vmt_error_set(VMT_EINVAL, "'%s' is not a size (e.g. 256M, 1G)", s ? s : "");
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return vmt_error_set(VMT_ERANGE, "size '%s' is too large", s);
    if (suffix_shift(end, &shift) != 0)
        return vmt_error_set(VMT_EINVAL, "'%s' has an unknown size suffix (use K, M, G or T)", s);
    if (shift && v > (UINT64_MAX >> shift))
        return vmt_error_set(VMT_ERANGE, "size '%s' is too large", s);
    *out = (uint64_t)v << shift;
    return 0;
}
