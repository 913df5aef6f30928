/*
 * vmtree common layer: the error enum with a thread-local message, leveled
 * logging and overflow-checked size arithmetic.  Every other module uses it;
 * it uses nothing of vmtree.
 */
#ifndef VMTREE_UTIL_H
#define VMTREE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ---------------------------------------------------------- */

/*
 * One error enum for the whole library.  Fallible functions return 0 on
 * success or one of these (negative).  The failure site sets a message that
 * vmt_error_last() returns on the same thread until the next error.
 */
typedef enum vmt_err {
    VMT_OK = 0,
    VMT_ERR = -1,         /* generic failure; the message says what */
    VMT_ENOMEM = -2,      /* allocation failed */
    VMT_EINVAL = -3,      /* bad argument or bad input from a user */
    VMT_EIO = -4,         /* an I/O or system call failed */
    VMT_ENOENT = -5,      /* a named thing does not exist */
    VMT_EEXIST = -6,      /* it exists already */
    VMT_ECORRUPT = -7,    /* data from disk or network failed a check */
    VMT_EUNSUPPORTED = -8,/* the kernel or the input needs what we lack */
    VMT_EBUSY = -9,       /* held by another user (lock, running VM) */
    VMT_ERANGE = -10,     /* a size or count beyond a documented limit */
    VMT_ETIMEDOUT = -11,  /* a deadline passed */
    VMT_ECANCELED = -12,  /* stopped on request */
    VMT_EPROTO = -13,     /* peer spoke the protocol wrongly */
    VMT_EAUTH = -14,      /* authentication failed */
    VMT_EINDOUBT = -15,   /* the outcome is unknown: a peer may have taken over */
    VMT_ELAST = VMT_EINDOUBT, /* the lowest code this build knows */
} vmt_err;

/* Sets the thread's error message (printf format) and returns `code`. */
int vmt_error_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* As vmt_error_set, appending ": strerror(errnum)". Returns `code`. */
int vmt_error_errno(int code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Prefixes the current message with more context ("opening X: <old>").
 * Returns `code` unchanged so it can be used as `return vmt_error_wrap(rc, ...)`.
 */
int vmt_error_wrap(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The last message set on this thread; never NULL, "" when none. Valid until
 * the next vmt_error_* call on this thread. */
const char *vmt_error_last(void);

/* Clears this thread's message. */
void vmt_error_clear(void);

/* A short constant name for an error code ("VMT_EIO"). */
const char *vmt_strerror(int code);

/* ---- logging --------------------------------------------------------- */

typedef enum vmt_log_level {
    VMT_LOG_ERROR = 0,
    VMT_LOG_WARN = 1,
    VMT_LOG_INFO = 2,
    VMT_LOG_DEBUG = 3,
    VMT_LOG_TRACE = 4,
} vmt_log_level;

/*
 * Log sink: receives every message at or below the threshold.  The default
 * sink writes "vmtree: level: msg\n" to stderr.  The threshold starts from the
 * environment variable VMTREE_LOG (error|warn|info|debug|trace), default warn.
 * Setting the sink/level is not synchronized with concurrent logging: do it
 * once at start-up.  vmt_log itself is thread-safe.
 */
typedef void (*vmt_log_fn)(void *ctx, vmt_log_level level, const char *msg);
void vmt_log_set_sink(vmt_log_fn fn, void *ctx);
void vmt_log_set_level(vmt_log_level level);
vmt_log_level vmt_log_get_level(void);
/* Parses "error".."trace"; returns VMT_EINVAL for anything else. */
int vmt_log_parse_level(const char *s, vmt_log_level *out);
void vmt_log(vmt_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define VMT_LOG_AT(lvl, ...)                                                                       \
    do {                                                                                           \
        if ((lvl) <= vmt_log_get_level())                                                          \
            vmt_log((lvl), __VA_ARGS__);                                                           \
    } while (0)
#define vmt_error(...) VMT_LOG_AT(VMT_LOG_ERROR, __VA_ARGS__)
#define vmt_warn(...) VMT_LOG_AT(VMT_LOG_WARN, __VA_ARGS__)
#define vmt_info(...) VMT_LOG_AT(VMT_LOG_INFO, __VA_ARGS__)
#define vmt_debug(...) VMT_LOG_AT(VMT_LOG_DEBUG, __VA_ARGS__)
#define vmt_trace(...) VMT_LOG_AT(VMT_LOG_TRACE, __VA_ARGS__)

/* ---- checked arithmetic ---------------------------------------------- */

/* Each returns false (and leaves *out unspecified) on overflow. */
static inline bool vmt_add_overflow(size_t a, size_t b, size_t *out)
{
    return __builtin_add_overflow(a, b, out);
}
static inline bool vmt_mul_overflow(size_t a, size_t b, size_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}
static inline bool vmt_add_overflow_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_add_overflow(a, b, out);
}
static inline bool vmt_mul_overflow_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}

/*
 * malloc/calloc/realloc of n * size bytes with the product checked; on
 * failure they set VMT_ENOMEM (or VMT_ERANGE on overflow) as the error
 * message and return NULL.
 */
void *vmt_mallocn(size_t n, size_t size);
void *vmt_callocn(size_t n, size_t size);
void *vmt_reallocn(void *p, size_t n, size_t size);

/* ---- small helpers ---------------------------------------------------- */

/* Monotonic time in nanoseconds. */
uint64_t vmt_now_ns(void);

/*
 * Parses a size with an optional binary suffix (K, M, G, T; "KiB" etc. also
 * accepted, case-insensitive): "256M" -> 268435456.  Rejects empty input,
 * trailing garbage, negative values and overflow with VMT_EINVAL/VMT_ERANGE.
 */
int vmt_parse_size(const char *s, uint64_t *out);

/* Parses a decimal unsigned integer in [min, max]. */
int vmt_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* ---- huge pages for guest RAM (hugepage.c) ----------------------------- */

#define VMT_HUGE_PAGE_SIZE (2u << 20)

/* The host's transparent-huge-page mode for shared memory ("never",
 * "advise", "always", ...) into out; VMT_EUNSUPPORTED where the kernel has
 * no such setting. */
int vmt_thp_shmem_mode(char *out, size_t cap);
/*
 * Asks for 2 MiB pages on a shared memory mapping (MADV_HUGEPAGE): 0 when
 * the host will give them (its shmem mode is not "never" or "deny"),
 * VMT_EUNSUPPORTED with the reason otherwise, VMT_EINVAL when addr is not
 * 2 MiB aligned.  The mapping works the same either way.
 */
int vmt_ram_advise_huge(void *addr, size_t len);
/* Maps len bytes of fd (MAP_SHARED, read/write, MAP_NORESERVE) at a 2 MiB
 * aligned address, so huge pages can back it; MAP_FAILED and errno as
 * mmap. */
void *vmt_map_shared_aligned(int fd, size_t len);

#define VMT_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define VMT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define VMT_MAX(a, b) ((a) > (b) ? (a) : (b))
#define VMT_DIV_ROUND_UP(n, d) (((n) + (d)-1) / (d))

#ifdef __cplusplus
}
#endif
#endif
