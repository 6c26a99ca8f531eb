/* wire.c - the hsq wire codec (msgpack-c).
 *
 * DESIGN. Every message body is described once, as a table of fields (wire
 * name = C field name, type, offset, limits, default). Three generic walkers
 * use the same tables:
 *   parse   msgpack map -> struct: types, presence, unknown and duplicate keys;
 *   check   struct limits: ranges, lengths, UTF-8, enum values, array counts,
 *           plus a per-shape hook for cross-field rules (frames, portraits);
 *   pack    struct -> msgpack map.
 * The decoder runs parse then check; the encoder runs check then pack. Because
 * both directions share `check`, the encoder refuses exactly what the decoder
 * would refuse, and a decoded message re-encodes to an equivalent one.
 *
 * Optional fields have a default; the decoder fills it when the key is absent
 * and the encoder leaves the key out when the value equals it. Required fields
 * are always written.
 *
 * Before msgpack-c sees the bytes, skim() walks the first object and checks
 * every length and element count against the bytes that remain. msgpack-c
 * sizes its zone allocations from the declared counts, so without this a
 * 5-byte "array of 4 billion" would ask for ~100 GB.
 *
 * Strings and bins are zero-copy views into the caller's meta buffer (the C
 * unpacker references its input). The list-task and lease-job arrays are
 * allocated from the message's msgpack zone, which msg->priv_ owns.
 */
#include "schemas/wire.h"

#include "schemas/err.h"

#include <msgpack.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- names */

static const char *const op_names[HSQ_OP_COUNT_] = {
    [HSQ_OP_SUBMIT] = "submit", [HSQ_OP_STATUS] = "status",       [HSQ_OP_WAIT] = "wait",
    [HSQ_OP_RESULT] = "result", [HSQ_OP_CANCEL] = "cancel",       [HSQ_OP_LIST] = "list",
    [HSQ_OP_STATS] = "stats",   [HSQ_OP_REQUEUE] = "requeue",     [HSQ_OP_READY] = "ready",
    [HSQ_OP_LEASE] = "lease",   [HSQ_OP_HEARTBEAT] = "heartbeat", [HSQ_OP_PROGRESS] = "progress",
    [HSQ_OP_DONE] = "done",     [HSQ_OP_FAIL] = "fail",           [HSQ_OP_ABORT] = "abort",
    [HSQ_OP_EVENT] = "event",   [HSQ_OP_PURGE] = "purge",         [HSQ_OP_ERASE] = "erase",
    [HSQ_OP_EXPORT] = "export", [HSQ_OP_CREDITS] = "credits",
};

static const char *const state_names[HSQ_STATE_COUNT_] = {
    [HSQ_STATE_QUEUED] = "queued",       [HSQ_STATE_LEASED] = "leased",
    [HSQ_STATE_SUCCEEDED] = "succeeded", [HSQ_STATE_FAILED] = "failed",
    [HSQ_STATE_CANCELLED] = "cancelled", [HSQ_STATE_EXPIRED] = "expired",
};

static const char *const prio_names[HSQ_PRIO_COUNT_] = {"high", "normal", "low"};

#define FMT_COUNT_ 3
static const char *const fmt_names[FMT_COUNT_] = {[HSQ_FMT_JPEG] = "jpeg", [HSQ_FMT_PNG] = "png"};

/* Index of `name` in a table of n names (NULL slots skipped), or -1. */
static int name_index(const char *const *names, int n, hsq_str name) {
    for (int i = 0; i < n; i++)
        if (names[i] && hsq_str_eq(name, names[i]))
            return i;
    return -1;
}

const char *hsq_op_name(hsq_op op) {
    if ((int)op <= HSQ_OP_NONE || op >= HSQ_OP_COUNT_)
        return "?";
    return op_names[op];
}

hsq_op hsq_op_from_name(hsq_str name) {
    int i = name_index(op_names, HSQ_OP_COUNT_, name);
    return i < 0 ? HSQ_OP_NONE : (hsq_op)i;
}

const char *hsq_state_name(hsq_state s) {
    if ((int)s <= HSQ_STATE_NONE || s >= HSQ_STATE_COUNT_)
        return "?";
    return state_names[s];
}

const char *hsq_prio_name(hsq_prio p) {
    if ((int)p < 0 || p >= HSQ_PRIO_COUNT_)
        return "?";
    return prio_names[p];
}

int hsq_prio_from_name(hsq_str name) {
    return name_index(prio_names, HSQ_PRIO_COUNT_, name);
}

const char *hsq_fmt_name(hsq_fmt f) {
    if ((int)f < HSQ_FMT_JPEG || (int)f >= FMT_COUNT_)
        return "?";
    return fmt_names[f];
}

#define BG_COUNT_ 5
static const char *const bg_names[BG_COUNT_] = {[HSQ_BG_SOLID] = "solid",
                                                [HSQ_BG_GRADIENT] = "gradient",
                                                [HSQ_BG_VIGNETTE] = "vignette",
                                                [HSQ_BG_REFERENCE] = "reference"};

const char *hsq_bg_name(hsq_bg_kind k) {
    if ((int)k < HSQ_BG_SOLID || (int)k >= BG_COUNT_)
        return "?";
    return bg_names[k];
}

int hsq_state_is_terminal(hsq_state s) {
    return s == HSQ_STATE_SUCCEEDED || s == HSQ_STATE_FAILED || s == HSQ_STATE_CANCELLED ||
           s == HSQ_STATE_EXPIRED;
}

/* ---------------------------------------------------------------- context */

typedef struct {
    bool decoding;      /* decode: EBADREQ/ETOOLARGE; encode: every failure is EINVAL */
    size_t nframes;     /* decode only */
    msgpack_zone *zone; /* decode only: owns the task/job arrays */
    uint32_t cnt_seen;  /* decode: length of the last F_CNTCHK array (see T_U32ARR) */
    const uint8_t *raw; /* decode: the bytes being parsed, for T_RAW byte ranges */
    size_t rawlen;
    char *err; /* first failure, NUL-terminated */
    size_t errcap;
    /* Where we are, for messages ("submit.inputs[1]"): the segments are
     * kept as pointers and rendered into path[] only when a message needs
     * them, so a valid message costs no formatting. */
    const char *root;
    struct {
        const char *name;
        long index; /* -1: a map field, not an array element */
    } seg[8];
    size_t depth;
    char path[96];
} ctx;

__attribute__((format(printf, 3, 4))) static int fail(ctx *c, int code, const char *fmt, ...) {
    if (c->err[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errcap, fmt, ap);
        va_end(ap);
    }
    return c->decoding ? code : HSQ_EINVAL;
}

/* Path segments are pushed while descending and popped on the way back, so
 * messages name the exact element ("field 'kind' in submit.inputs[2]").
 * Shapes nest less deep than seg[]; deeper segments are left out of the
 * message rather than overflow. */
static size_t path_push(ctx *c, const char *name, long index) {
    size_t old = c->depth;
    if (c->depth < sizeof(c->seg) / sizeof(c->seg[0])) {
        c->seg[c->depth].name = name;
        c->seg[c->depth].index = index;
    }
    c->depth++;
    return old;
}

static void path_pop(ctx *c, size_t old) {
    c->depth = old;
}

/* The current path as text, for a failure message. */
static const char *path(ctx *c) {
    size_t n = sizeof(c->seg) / sizeof(c->seg[0]);
    size_t len = (size_t)snprintf(c->path, sizeof(c->path), "%s", c->root ? c->root : "message");
    for (size_t i = 0; i < c->depth && i < n && len < sizeof(c->path); i++) {
        int w = c->seg[i].index >= 0
                    ? snprintf(c->path + len, sizeof(c->path) - len, ".%s[%ld]", c->seg[i].name,
                               c->seg[i].index)
                    : snprintf(c->path + len, sizeof(c->path) - len, ".%s", c->seg[i].name);
        if (w < 0)
            break;
        len += (size_t)w;
    }
    return c->path;
}

/* A wire-supplied name made safe to print: printable ASCII, at most 32 bytes. */
static void sanitize(char *dst, size_t cap, const char *src, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < cap && n < 32; i++)
        dst[n++] = (src[i] >= 0x20 && src[i] < 0x7f && src[i] != '\'') ? src[i] : '?';
    dst[n] = '\0';
}

/* RFC 3629 UTF-8 (wire.h): the second byte's range rules out overlongs,
 * surrogates and code points above U+10FFFF. Peers in other languages
 * (Python's msgpack) refuse invalid str, so one bad byte in a name would
 * otherwise poison every list reply that echoes it. */
size_t hsq_utf8_seq(const void *p, size_t n) {
    const unsigned char *s = p;
    unsigned char b = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;
    if (b < 0x80)
        return 1;
    if (b >= 0xc2 && b <= 0xdf) {
        len = 2;
    } else if (b >= 0xe0 && b <= 0xef) {
        len = 3;
        lo = b == 0xe0 ? 0xa0 : 0x80;
        hi = b == 0xed ? 0x9f : 0xbf;
    } else if (b >= 0xf0 && b <= 0xf4) {
        len = 4;
        lo = b == 0xf0 ? 0x90 : 0x80;
        hi = b == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if (s[k] < 0x80 || s[k] > 0xbf)
            return 0;
    return len;
}

int hsq_utf8_valid(const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n;) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t len = hsq_utf8_seq(s + i, n - i);
        if (len == 0)
            return 0;
        i += len;
    }
    return 1;
}

/* ---------------------------------------------------------------- tables */

typedef enum {
    T_U64,    /* uint64_t */
    T_U32,    /* uint32_t */
    T_U8,     /* uint8_t */
    T_I64,    /* int64_t, any value */
    T_BOOL,   /* uint8_t 0/1, msgpack bool */
    T_STR,    /* hsq_str, msgpack str */
    T_PRIO,   /* uint8_t hsq_prio, by name */
    T_STATE,  /* uint8_t hsq_state, by name */
    T_FMT,    /* uint8_t hsq_fmt, by name */
    T_ERR,    /* int32_t hsq code, by wire name */
    T_SHA,    /* uint8_t[32], msgpack bin 32 */
    T_MAP,    /* nested struct at off, described by sub */
    T_ARR,    /* struct array at off, count (uint32_t) at count_off */
    T_PARR,   /* pointer at off to a zone-owned struct array, count at count_off */
    T_U64ARR, /* uint64_t array at off, count at count_off */
    T_U32ARR, /* uint32_t array at off, count at count_off; with F_CNTCHK the count
               * belongs to another field: decode leaves it alone and records the
               * length in ctx.cnt_seen for the shape hook to compare */
    T_U16,    /* uint16_t */
    T_BG,     /* uint8_t hsq_bg_kind, by name */
    T_RGB,    /* uint8_t[3], msgpack array of 3 uints 0..255 */
    T_RAW,    /* hsq_bytes: a nested map validated against sub, kept as raw bytes
               * (max = byte limit). Decode records the map's byte range in the
               * input; encode checks the bytes decode as sub, then appends them
               * verbatim. hsqd stores and forwards such maps uninterpreted. */
} ftype;

enum {
    F_REQ = 1,    /* decoder: must be present; encoder: always written */
    F_IDXDEF = 2, /* default is the element's index; always written */
    F_CNTCHK = 4, /* T_U32ARR: the count is owned by another field (see T_U32ARR) */
};

typedef struct shape shape;

typedef struct {
    const char *name;
    uint8_t nlen; /* strlen(name), so lookups and the encoder need no strlen */
    uint8_t type;
    uint8_t flags;
    uint16_t off;
    uint16_t count_off;
    uint32_t esize;
    uint64_t min, max; /* numbers/enums: value; strings: bytes; arrays: elements */
    uint64_t def;      /* optional numbers/enums: value when absent */
    const shape *sub;
    const char *const *oneof; /* strings: NULL-terminated allowed values */
} field;

struct shape {
    const char *name;
    const field *fields;
    size_t n;
    bool frames; /* may reference binary frames (else nframes must be 0) */
    int (*check)(ctx *c, const void *obj, uint32_t index);
};

/* Table entries check at compile time that the C member has the size the
 * type code implies (a negative array size is an error), so a change to
 * wire.h that the table does not follow fails the build instead of
 * scribbling. OFF(st, f, n) is offsetof(st, f) when sizeof(st.f) == n. */
#define MEMBER(st, f) (((st *)0)->f)
#define SIZE_IS(st, f, n) (0 * sizeof(char[sizeof(MEMBER(st, f)) == (n) ? 1 : -1]))
#define OFF(st, f, n) (offsetof(st, f) + SIZE_IS(st, f, n))
#define NELEM(st, f) (sizeof(MEMBER(st, f)) / sizeof(MEMBER(st, f)[0]))
#define CAP_OK(st, f, hi) (0 * sizeof(char[NELEM(st, f) >= (hi) ? 1 : -1]))

#define NOLIM UINT64_MAX
#define FLD(st, f, ty, n, fl, lo, hi, d)                                                           \
    {                                                                                              \
        .name = #f, .nlen = sizeof(#f) - 1, .type = (ty), .flags = (fl), .off = OFF(st, f, n),     \
        .min = (lo), .max = (hi), .def = (d)                                                       \
    }
#define U64(st, f, fl, lo) FLD(st, f, T_U64, 8, fl, lo, NOLIM, 0)
#define U32(st, f, fl, lo, hi, d) FLD(st, f, T_U32, 4, fl, lo, hi, d)
#define U8(st, f, fl, lo, hi, d) FLD(st, f, T_U8, 1, fl, lo, hi, d)
#define U16(st, f, fl, lo, hi, d) FLD(st, f, T_U16, 2, fl, lo, hi, d)
#define RGB(st, f) FLD(st, f, T_RGB, 3, 0, 0, 0, 0)
#define BG(st, f) FLD(st, f, T_BG, 1, F_REQ, HSQ_BG_SOLID, HSQ_BG_REFERENCE, 0)
#define RAW(st, f, s, hi)                                                                          \
    {                                                                                              \
        .name = #f, .nlen = sizeof(#f) - 1, .type = T_RAW, .flags = 0,                             \
        .off = OFF(st, f, sizeof(hsq_bytes)), .max = (hi), .sub = &(s)                             \
    }
#define I64(st, f) FLD(st, f, T_I64, 8, F_REQ, 0, 0, 0)
#define I64OPT(st, f) FLD(st, f, T_I64, 8, 0, 0, 0, 0) /* left out when 0 */
/* A nested map that may be absent: absent decodes as all-zero, and an
 * all-zero struct is left out (and not checked) by the encoder. */
#define OPTMAP(st, f, s)                                                                           \
    {                                                                                              \
        .name = #f, .nlen = sizeof(#f) - 1, .type = T_MAP, .flags = 0, .off = offsetof(st, f),     \
        .esize = sizeof(MEMBER(st, f)), .sub = &(s)                                                \
    }
#define U32ARR_CNTOF(st, f, cnt, hi)                                                               \
    {                                                                                              \
        .name = #f, .nlen = sizeof(#f) - 1, .type = T_U32ARR, .flags = F_CNTCHK,                   \
        .off = offsetof(st, f) + CAP_OK(st, f, hi) + SIZE_IS(st, f[0], 4),                         \
        .count_off = OFF(st, cnt, 4), .esize = sizeof(uint32_t), .max = (hi)                       \
    }
#define BOOL(st, f, fl) FLD(st, f, T_BOOL, 1, fl, 0, 1, 0)
#define STR(st, f, fl, lo, hi) FLD(st, f, T_STR, sizeof(hsq_str), fl, lo, hi, 0)
#define ONEOF(st, f, list)                                                                         \
    {                                                                                              \
        .name = #f, .nlen = sizeof(#f) - 1, .type = T_STR, .flags = F_REQ,                         \
        .off = OFF(st, f, sizeof(hsq_str)), .min = 1, .max = HSQ_MAX_NAME_LEN, .oneof = (list)     \
    }
#define PRIO(st, f, fl) FLD(st, f, T_PRIO, 1, fl, 0, HSQ_PRIO_COUNT_ - 1, HSQ_PRIO_NORMAL)
#define STATE(st, f, fl, lo) FLD(st, f, T_STATE, 1, fl, lo, HSQ_STATE_COUNT_ - 1, 0)
#define FMT(st, f) FLD(st, f, T_FMT, 1, F_REQ, HSQ_FMT_JPEG, HSQ_FMT_PNG, 0)
#define ERR(st, f, fl) FLD(st, f, T_ERR, 4, fl, 0, 0, 0)
#define SHA(st, f) FLD(st, f, T_SHA, 32, F_REQ, 0, 0, 0)
#define MAP(st, f, s)                                                                              \
    {                                                                                              \
        .name = #f, .nlen = sizeof(#f) - 1, .type = T_MAP, .flags = F_REQ, .off = offsetof(st, f), \
        .sub = &(s)                                                                                \
    }
#define ARR(st, f, cnt, fl, lo, hi, s)                                                             \
    {                                                                                              \
        .name = #f, .nlen = sizeof(#f) - 1, .type = T_ARR, .flags = (fl),                          \
        .off = offsetof(st, f) + CAP_OK(st, f, hi), .count_off = OFF(st, cnt, 4),                  \
        .esize = sizeof(MEMBER(st, f)[0]), .min = (lo), .max = (hi), .sub = &(s)                   \
    }
#define PARR(st, f, cnt, hi, s)                                                                    \
    {                                                                                              \
        .name = #f, .nlen = sizeof(#f) - 1, .type = T_PARR, .flags = F_REQ,                        \
        .off = OFF(st, f, sizeof(void *)), .count_off = OFF(st, cnt, 4),                           \
        .esize = sizeof(MEMBER(st, f)[0]), .min = 0, .max = (hi), .sub = &(s)                      \
    }
#define U64ARR(st, f, cnt, hi)                                                                     \
    {                                                                                              \
        .name = #f, .nlen = sizeof(#f) - 1, .type = T_U64ARR, .flags = F_REQ,                      \
        .off = offsetof(st, f) + CAP_OK(st, f, hi) + SIZE_IS(st, f[0], 8),                         \
        .count_off = OFF(st, cnt, 4), .esize = sizeof(uint64_t), .max = (hi)                       \
    }
#define SHAPE(nm, arr, fr, hook)                                                                   \
    { nm, arr, sizeof(arr) / sizeof(arr[0]), fr, hook }
#define EMPTY_SHAPE(nm)                                                                            \
    { nm, NULL, 0, false, NULL }

static int check_input_submit(ctx *c, const void *obj, uint32_t index);
static int check_input_lease(ctx *c, const void *obj, uint32_t index);
static int check_submit(ctx *c, const void *obj, uint32_t index);
static int check_result(ctx *c, const void *obj, uint32_t index);
static int check_background(ctx *c, const void *obj, uint32_t index);
static int check_settings(ctx *c, const void *obj, uint32_t index);
static int check_info(ctx *c, const void *obj, uint32_t index);

static const char *const input_kinds[] = {"portrait", "clothing", "background", NULL};
static const char *const backends[] = {"cpu", "cuda", NULL};

/* -- settings and info (nested maps carried as raw bytes) -- */

static const field background_f[] = {
    BG(hsq_wire_background, kind),
    RGB(hsq_wire_background, color),
    RGB(hsq_wire_background, color2),
    U16(hsq_wire_background, blur_px, 0, 0, 64, 0),
};
static const shape background_s = SHAPE("background", background_f, false, check_background);

static const field style_f[] = {
    STR(hsq_wire_style, name, 0, 0, 32),        U8(hsq_wire_style, retouch, 0, 0, 100, 0),
    U8(hsq_wire_style, tone, 0, 0, 100, 0),     U8(hsq_wire_style, sharpen, 0, 0, 100, 0),
    U8(hsq_wire_style, clothing, 0, 0, 100, 0),
};
static const shape style_s = SHAPE("style", style_f, false, NULL);

static const field settings_f[] = {
    ARR(hsq_wire_settings, backgrounds, n_backgrounds, 0, 0, HSQ_MAX_BACKGROUNDS, background_s),
    ARR(hsq_wire_settings, styles, n_styles, 0, 0, HSQ_MAX_STYLES, style_s),
    U16(hsq_wire_settings, dpi, 0, 0, 1200, 0),
};
static const shape settings_s = SHAPE("settings", settings_f, false, check_settings);

static const field stage_f[] = {
    STR(hsq_wire_stage, name, F_REQ, 1, 32),
    U32(hsq_wire_stage, ms, F_REQ, 0, UINT32_MAX, 0),
};
static const shape stage_s = SHAPE("stage", stage_f, false, NULL);

static const field info_f[] = {
    U32(hsq_wire_info, faces, 0, 0, UINT32_MAX, 0),
    U32(hsq_wire_info, face_score, 0, 0, 1000, 0),
    STR(hsq_wire_info, backend, 0, 0, 16),
    ARR(hsq_wire_info, stages, n_stages, 0, 0, HSQ_MAX_STAGES, stage_s),
};
static const shape info_s = SHAPE("info", info_f, false, check_info);

/* Scratch space for validating a T_RAW map: any of its shapes' structs. */
typedef union {
    hsq_wire_settings settings;
    hsq_wire_info info;
} raw_scratch;

/* -- shared element shapes -- */

static const field input_submit_f[] = {
    ONEOF(hsq_wire_input, kind, input_kinds),
    STR(hsq_wire_input, name, 0, 0, HSQ_MAX_NAME_LEN),
    FLD(hsq_wire_input, frame, T_U32, 4, F_IDXDEF, 0, UINT32_MAX - 1, 0),
};
static const shape input_submit_s = SHAPE("input", input_submit_f, true, check_input_submit);

static const field input_lease_f[] = {
    ONEOF(hsq_wire_input, kind, input_kinds),
    STR(hsq_wire_input, name, 0, 0, HSQ_MAX_NAME_LEN),
    STR(hsq_wire_input, key, 0, 0, HSQ_MAX_KEY_LEN),
    U32(hsq_wire_input, frame, 0, 0, UINT32_MAX, HSQ_NO_FRAME),
    U64(hsq_wire_input, size, F_REQ, 0),
};
static const shape input_lease_s = SHAPE("input", input_lease_f, true, check_input_lease);

static const field outspec_f[] = {
    U32(hsq_wire_outspec, width, F_REQ, 1, HSQ_MAX_DIM, 0),
    U32(hsq_wire_outspec, height, F_REQ, 1, HSQ_MAX_DIM, 0),
    FMT(hsq_wire_outspec, format),
    U8(hsq_wire_outspec, quality, 0, 0, 100, 0),
};
static const shape outspec_s = SHAPE("outspec", outspec_f, false, NULL);

static const field output_f[] = {
    STR(hsq_wire_output, key, F_REQ, 1, HSQ_MAX_KEY_LEN),
    U64(hsq_wire_output, size, F_REQ, 0),
    SHA(hsq_wire_output, sha256),
    U32(hsq_wire_output, width, F_REQ, 1, HSQ_MAX_DIM, 0),
    U32(hsq_wire_output, height, F_REQ, 1, HSQ_MAX_DIM, 0),
    FMT(hsq_wire_output, format),
    U8(hsq_wire_output, background, 0, 0, HSQ_MAX_OUTPUTS - 1, 0),
    U8(hsq_wire_output, style, 0, 0, HSQ_MAX_OUTPUTS - 1, 0),
    U8(hsq_wire_output, spec, 0, 0, HSQ_MAX_OUTPUTS - 1, 0),
};
static const shape output_s = SHAPE("output", output_f, false, NULL);

static const field task_f[] = {
    U64(hsq_wire_task, id, F_REQ, 1),
    STR(hsq_wire_task, user, F_REQ, 1, HSQ_MAX_USER_LEN),
    STR(hsq_wire_task, key, 0, 0, HSQ_MAX_USER_LEN),
    STATE(hsq_wire_task, state, F_REQ, HSQ_STATE_QUEUED),
    PRIO(hsq_wire_task, prio, F_REQ),
    U32(hsq_wire_task, attempts, F_REQ, 0, UINT32_MAX, 0),
    I64(hsq_wire_task, created_ms),
    I64(hsq_wire_task, updated_ms),
    I64(hsq_wire_task, expires_ms),
    U32(hsq_wire_task, progress, F_REQ, 0, 100, 0),
    STR(hsq_wire_task, stage, 0, 0, HSQ_MAX_NAME_LEN),
    ERR(hsq_wire_task, err_code, 0),
    STR(hsq_wire_task, err_msg, 0, 0, HSQ_MAX_ERRMSG_LEN),
    U32(hsq_wire_task, n_inputs, F_REQ, 0, HSQ_MAX_INPUTS, 0),
    ARR(hsq_wire_task, outputs, n_outputs, 0, 0, HSQ_MAX_OUTPUTS, output_s),
    RAW(hsq_wire_task, settings, settings_s, HSQ_MAX_SETTINGS_BYTES),
    RAW(hsq_wire_task, info, info_s, HSQ_MAX_INFO_BYTES),
    I64OPT(hsq_wire_task, uploads_expire_ms),
    I64OPT(hsq_wire_task, refs_expire_ms),
};
static const shape task_s = SHAPE("task", task_f, false, NULL);

static const field job_f[] = {
    U64(hsq_wire_job, task, F_REQ, 1),
    U64(hsq_wire_job, token, F_REQ, 0),
    U32(hsq_wire_job, attempt, F_REQ, 1, UINT32_MAX, 0),
    PRIO(hsq_wire_job, prio, F_REQ),
    I64(hsq_wire_job, deadline_ms),
    STR(hsq_wire_job, out_prefix, F_REQ, 1, HSQ_MAX_KEY_LEN),
    STR(hsq_wire_job, prompt, 0, 0, HSQ_MAX_PROMPT_LEN),
    ARR(hsq_wire_job, inputs, n_inputs, F_REQ, 1, HSQ_MAX_INPUTS, input_lease_s),
    ARR(hsq_wire_job, outputs, n_outputs, F_REQ, 1, HSQ_MAX_OUTPUTS, outspec_s),
    RAW(hsq_wire_job, settings, settings_s, HSQ_MAX_SETTINGS_BYTES),
};
static const shape job_s = SHAPE("job", job_f, true, NULL);

static const field lease_ref_f[] = {
    U64(hsq_wire_lease_ref, task, F_REQ, 1),
    U64(hsq_wire_lease_ref, token, F_REQ, 0),
};
static const shape lease_ref_s = SHAPE("lease", lease_ref_f, false, NULL);

/* queued_by_prio travels as {"high": n, "normal": n, "low": n}. */
typedef struct {
    uint64_t high, normal, low;
} prio_counts;
_Static_assert(sizeof(prio_counts) == sizeof(((hsq_wire_stats *)0)->queued_by_prio),
               "prio_counts mirrors queued_by_prio");
_Static_assert(HSQ_PRIO_HIGH == 0 && HSQ_PRIO_NORMAL == 1 && HSQ_PRIO_LOW == 2, "prio order");
static const field prio_counts_f[] = {
    U64(prio_counts, high, F_REQ, 0),
    U64(prio_counts, normal, F_REQ, 0),
    U64(prio_counts, low, F_REQ, 0),
};
static const shape prio_counts_s = SHAPE("queued_by_prio", prio_counts_f, false, NULL);

static const field error_f[] = {
    ERR(hsq_rep_error, code, F_REQ),
    STR(hsq_rep_error, message, F_REQ, 0, HSQ_MAX_ERRMSG_LEN),
};
static const shape error_s = SHAPE("error", error_f, false, NULL);

/* -- request bodies -- */

static const field submit_f[] = {
    STR(hsq_req_submit, user, F_REQ, 1, HSQ_MAX_USER_LEN),
    STR(hsq_req_submit, key, 0, 0, HSQ_MAX_USER_LEN),
    PRIO(hsq_req_submit, prio, 0),
    STR(hsq_req_submit, prompt, 0, 0, HSQ_MAX_PROMPT_LEN),
    ARR(hsq_req_submit, inputs, n_inputs, F_REQ, 1, HSQ_MAX_INPUTS, input_submit_s),
    ARR(hsq_req_submit, outputs, n_outputs, F_REQ, 1, HSQ_MAX_OUTPUTS, outspec_s),
    RAW(hsq_req_submit, settings, settings_s, HSQ_MAX_SETTINGS_BYTES),
    U32(hsq_req_submit, keep_uploads_s, 0, 0, UINT32_MAX, 0),
    U32(hsq_req_submit, keep_outputs_s, 0, 0, UINT32_MAX, 0),
};
static const field req_task_f[] = {
    U64(hsq_req_task, task, F_REQ, 1),
    STR(hsq_req_task, user, 0, 0, HSQ_MAX_USER_LEN),
};
static const field wait_f[] = {
    U64(hsq_req_wait, task, F_REQ, 1),
    STR(hsq_req_wait, user, 0, 0, HSQ_MAX_USER_LEN),
    U32(hsq_req_wait, timeout_ms, 0, 0, HSQ_MAX_WAIT_MS, 0),
    STATE(hsq_req_wait, since, 0, HSQ_STATE_NONE),
};
static const field list_f[] = {
    STR(hsq_req_list, user, F_REQ, 1, HSQ_MAX_USER_LEN),
    U32(hsq_req_list, limit, 0, 1, HSQ_MAX_LIST, 20),
    FLD(hsq_req_list, before, T_U64, 8, 0, 0, NOLIM, 0),
};
static const field ready_f[] = {
    STR(hsq_req_ready, name, F_REQ, 1, HSQ_MAX_NAME_LEN),
    ONEOF(hsq_req_ready, backend, backends),
    STR(hsq_req_ready, device, 0, 0, HSQ_MAX_NAME_LEN),
    U32(hsq_req_ready, max_batch, F_REQ, 1, HSQ_MAX_BATCH, 0),
    U32(hsq_req_ready, prefetch, 0, 0, HSQ_MAX_PREFETCH, 0), /* 0: as 1 */
};
static const field lease_f[] = {
    U32(hsq_req_lease, max, F_REQ, 1, HSQ_MAX_BATCH, 0),
    U32(hsq_req_lease, wait_ms, 0, 0, HSQ_MAX_WAIT_MS, 0),
};
static const field heartbeat_f[] = {
    ARR(hsq_req_heartbeat, leases, n, F_REQ, 1, HSQ_MAX_BATCH, lease_ref_s),
};
static const field progress_f[] = {
    U64(hsq_req_progress, task, F_REQ, 1),
    U64(hsq_req_progress, token, F_REQ, 0),
    U32(hsq_req_progress, pct, F_REQ, 0, 100, 0),
    STR(hsq_req_progress, stage, 0, 0, HSQ_MAX_NAME_LEN),
};
static const field done_f[] = {
    U64(hsq_req_done, task, F_REQ, 1),
    U64(hsq_req_done, token, F_REQ, 0),
    ARR(hsq_req_done, outputs, n_outputs, F_REQ, 1, HSQ_MAX_OUTPUTS, output_s),
    RAW(hsq_req_done, info, info_s, HSQ_MAX_INFO_BYTES),
};
static const field fail_f[] = {
    U64(hsq_req_fail, task, F_REQ, 1), U64(hsq_req_fail, token, F_REQ, 0),
    ERR(hsq_req_fail, code, F_REQ),    STR(hsq_req_fail, message, 0, 0, HSQ_MAX_ERRMSG_LEN),
    BOOL(hsq_req_fail, retryable, 0),
};
static const field abort_f[] = {
    U64(hsq_cmd_abort, task, F_REQ, 1),
    U64(hsq_cmd_abort, token, F_REQ, 0),
};
static const field event_f[] = {
    U64(hsq_event, task, F_REQ, 1),
    STR(hsq_event, user, F_REQ, 1, HSQ_MAX_USER_LEN),
    STATE(hsq_event, state, F_REQ, HSQ_STATE_QUEUED),
    U32(hsq_event, progress, F_REQ, 0, 100, 0),
    STR(hsq_event, stage, 0, 0, HSQ_MAX_NAME_LEN),
    I64(hsq_event, at_ms),
};

static const shape submit_s = SHAPE("submit", submit_f, true, check_submit);
static const shape status_s = SHAPE("status", req_task_f, false, NULL);
static const shape wait_s = SHAPE("wait", wait_f, false, NULL);
static const shape result_s = SHAPE("result", req_task_f, false, NULL);
static const shape cancel_s = SHAPE("cancel", req_task_f, false, NULL);
static const shape list_s = SHAPE("list", list_f, false, NULL);
static const shape stats_s = EMPTY_SHAPE("stats");
static const shape requeue_s = SHAPE("requeue", req_task_f, false, NULL);
static const shape ready_s = SHAPE("ready", ready_f, false, NULL);
static const shape lease_s = SHAPE("lease", lease_f, false, NULL);
static const shape heartbeat_s = SHAPE("heartbeat", heartbeat_f, false, NULL);
static const shape progress_s = SHAPE("progress", progress_f, false, NULL);
static const shape done_s = SHAPE("done", done_f, false, NULL);
static const shape fail_s = SHAPE("fail", fail_f, false, NULL);
static const shape abort_s = SHAPE("abort", abort_f, false, NULL);
static const shape event_s = SHAPE("event", event_f, false, NULL);

/* -- retention and privacy (operator) -- */

static int check_rep_export(ctx *c, const void *obj, uint32_t index);

static const field purge_f[] = {
    BOOL(hsq_req_purge, dry_run, 0),
    U32(hsq_req_purge, limit, 0, 1, 1000000, 100000),
};
static const field erase_f[] = {
    STR(hsq_req_erase, user, F_REQ, 1, HSQ_MAX_USER_LEN),
};
static const field export_f[] = {
    STR(hsq_req_export, user, F_REQ, 1, HSQ_MAX_USER_LEN),
    FLD(hsq_req_export, after, T_U64, 8, 0, 0, NOLIM, 0),
};
static const field rep_purge_f[] = {
    BOOL(hsq_rep_purge, dry_run, F_REQ),     BOOL(hsq_rep_purge, more, F_REQ),
    U64(hsq_rep_purge, inputs, F_REQ, 0),    U64(hsq_rep_purge, outputs, F_REQ, 0),
    U64(hsq_rep_purge, tasks, F_REQ, 0),     U64(hsq_rep_purge, tombstones, F_REQ, 0),
    U64(hsq_rep_purge, cancelled, F_REQ, 0), U64(hsq_rep_purge, bytes, F_REQ, 0),
    U64(hsq_rep_purge, errors, F_REQ, 0),
};
static const field rep_erase_f[] = {
    U64(hsq_rep_erase, tasks, F_REQ, 0),       U64(hsq_rep_erase, active, F_REQ, 0),
    U64(hsq_rep_erase, bytes, F_REQ, 0),       I64(hsq_rep_erase, at_ms),
    STR(hsq_rep_erase, subject, F_REQ, 1, 64),
};
/* An exported input: no blob key (a storage detail), the frame that holds its
 * bytes or none when retention deleted them. */
static const field input_export_f[] = {
    ONEOF(hsq_wire_input, kind, input_kinds),
    STR(hsq_wire_input, name, 0, 0, HSQ_MAX_NAME_LEN),
    U32(hsq_wire_input, frame, 0, 0, UINT32_MAX, HSQ_NO_FRAME),
    U64(hsq_wire_input, size, F_REQ, 0),
};
static const shape input_export_s = SHAPE("input", input_export_f, true, NULL);
static const field rep_export_f[] = {
    BOOL(hsq_rep_export, has_task, F_REQ),
    OPTMAP(hsq_rep_export, task, task_s),
    STR(hsq_rep_export, prompt, 0, 0, HSQ_MAX_PROMPT_LEN),
    ARR(hsq_rep_export, inputs, n_inputs, 0, 0, HSQ_MAX_INPUTS, input_export_s),
    U32ARR_CNTOF(hsq_rep_export, out_frames, task.n_outputs, HSQ_MAX_OUTPUTS),
    FLD(hsq_rep_export, next, T_U64, 8, 0, 0, NOLIM, 0),
};

/* -- credit ledger (operator) -- */

static const field credits_f[] = {
    STR(hsq_req_credits, user, F_REQ, 1, HSQ_MAX_USER_LEN),
    I64OPT(hsq_req_credits, grant),
};
static const field rep_credits_f[] = {
    STR(hsq_rep_credits, user, F_REQ, 1, HSQ_MAX_USER_LEN),
    I64(hsq_rep_credits, balance),
    I64(hsq_rep_credits, reserved),
};
static const shape credits_s = SHAPE("credits", credits_f, false, NULL);
static const shape rep_credits_s = SHAPE("credits reply", rep_credits_f, false, NULL);

static const shape purge_s = SHAPE("purge", purge_f, false, NULL);
static const shape erase_s = SHAPE("erase", erase_f, false, NULL);
static const shape export_s = SHAPE("export", export_f, false, NULL);
static const shape rep_purge_s = SHAPE("purge reply", rep_purge_f, false, NULL);
static const shape rep_erase_s = SHAPE("erase reply", rep_erase_f, false, NULL);
static const shape rep_export_s = SHAPE("export reply", rep_export_f, true, check_rep_export);

/* -- reply bodies -- */

static const field rep_submit_f[] = {
    U64(hsq_rep_submit, task, F_REQ, 1),
    STATE(hsq_rep_submit, state, F_REQ, HSQ_STATE_QUEUED),
    BOOL(hsq_rep_submit, created, F_REQ),
};
static const field rep_task_f[] = {
    MAP(hsq_rep_task, task, task_s),
};
static const field rep_wait_f[] = {
    MAP(hsq_rep_task, task, task_s),
    BOOL(hsq_rep_task, timed_out, F_REQ),
};
static const field rep_list_f[] = {
    PARR(hsq_rep_list, tasks, n, HSQ_MAX_LIST, task_s),
    U64(hsq_rep_list, next, F_REQ, 0),
};
static const field rep_stats_f[] = {
    U64(hsq_wire_stats, queued, F_REQ, 0),
    U64(hsq_wire_stats, leased, F_REQ, 0),
    U64(hsq_wire_stats, succeeded, F_REQ, 0),
    U64(hsq_wire_stats, failed, F_REQ, 0),
    U64(hsq_wire_stats, cancelled, F_REQ, 0),
    U64(hsq_wire_stats, expired, F_REQ, 0),
    MAP(hsq_wire_stats, queued_by_prio, prio_counts_s),
    U64(hsq_wire_stats, delayed, F_REQ, 0),
    U64(hsq_wire_stats, dead, F_REQ, 0),
    U64(hsq_wire_stats, workers, F_REQ, 0),
    U64(hsq_wire_stats, workers_busy, F_REQ, 0),
    U64(hsq_wire_stats, submitted_total, F_REQ, 0),
    U64(hsq_wire_stats, completed_total, F_REQ, 0),
    U64(hsq_wire_stats, retries_total, F_REQ, 0),
    I64(hsq_wire_stats, oldest_queued_ms),
    U64(hsq_wire_stats, uptime_s, F_REQ, 0),
};
static const field rep_ready_f[] = {
    U32(hsq_rep_ready, lease_ms, F_REQ, 1, UINT32_MAX, 0),
    U32(hsq_rep_ready, heartbeat_ms, F_REQ, 1, UINT32_MAX, 0),
};
static const field rep_lease_f[] = {
    PARR(hsq_rep_lease, jobs, n, HSQ_MAX_BATCH, job_s),
};
static const field rep_heartbeat_f[] = {
    U64ARR(hsq_rep_heartbeat, lost, n_lost, HSQ_MAX_BATCH),
};
static const field rep_error_f[] = {
    /* the error map is the whole of hsq_rep_error */
    {.name = "error",
     .nlen = sizeof("error") - 1,
     .type = T_MAP,
     .flags = F_REQ,
     .off = 0,
     .sub = &error_s},
};

static const shape rep_submit_s = SHAPE("submit reply", rep_submit_f, false, NULL);
static const shape rep_status_s = SHAPE("status reply", rep_task_f, false, NULL);
static const shape rep_wait_s = SHAPE("wait reply", rep_wait_f, false, NULL);
static const shape rep_result_s = SHAPE("result reply", rep_task_f, true, check_result);
static const shape rep_cancel_s = SHAPE("cancel reply", rep_task_f, false, NULL);
static const shape rep_list_s = SHAPE("list reply", rep_list_f, false, NULL);
static const shape rep_stats_s = SHAPE("stats reply", rep_stats_f, false, NULL);
static const shape rep_requeue_s = SHAPE("requeue reply", rep_task_f, false, NULL);
static const shape rep_ready_s = SHAPE("ready reply", rep_ready_f, false, NULL);
static const shape rep_lease_s = SHAPE("lease reply", rep_lease_f, true, NULL);
static const shape rep_heartbeat_s = SHAPE("heartbeat reply", rep_heartbeat_f, false, NULL);
static const shape rep_progress_s = EMPTY_SHAPE("progress reply");
static const shape rep_done_s = EMPTY_SHAPE("done reply");
static const shape rep_fail_s = EMPTY_SHAPE("fail reply");
static const shape rep_error_s = SHAPE("error reply", rep_error_f, false, NULL);

/* The op table: request body and reply body per op (NULL: no such message). */
static const struct {
    const shape *req;
    const shape *rep;
} ops[HSQ_OP_COUNT_] = {
    [HSQ_OP_SUBMIT] = {&submit_s, &rep_submit_s},
    [HSQ_OP_STATUS] = {&status_s, &rep_status_s},
    [HSQ_OP_WAIT] = {&wait_s, &rep_wait_s},
    [HSQ_OP_RESULT] = {&result_s, &rep_result_s},
    [HSQ_OP_CANCEL] = {&cancel_s, &rep_cancel_s},
    [HSQ_OP_LIST] = {&list_s, &rep_list_s},
    [HSQ_OP_STATS] = {&stats_s, &rep_stats_s},
    [HSQ_OP_REQUEUE] = {&requeue_s, &rep_requeue_s},
    [HSQ_OP_READY] = {&ready_s, &rep_ready_s},
    [HSQ_OP_LEASE] = {&lease_s, &rep_lease_s},
    [HSQ_OP_HEARTBEAT] = {&heartbeat_s, &rep_heartbeat_s},
    [HSQ_OP_PROGRESS] = {&progress_s, &rep_progress_s},
    [HSQ_OP_DONE] = {&done_s, &rep_done_s},
    [HSQ_OP_FAIL] = {&fail_s, &rep_fail_s},
    [HSQ_OP_ABORT] = {&abort_s, NULL},
    [HSQ_OP_EVENT] = {&event_s, NULL},
    [HSQ_OP_PURGE] = {&purge_s, &rep_purge_s},
    [HSQ_OP_ERASE] = {&erase_s, &rep_erase_s},
    [HSQ_OP_EXPORT] = {&export_s, &rep_export_s},
    [HSQ_OP_CREDITS] = {&credits_s, &rep_credits_s},
};

/* Body shape for kind/op, or NULL when that message does not exist. Any
 * request may be refused, so an error reply exists for every op (abort and
 * event too: a peer may send them to the wrong socket), and for HSQ_OP_NONE,
 * which answers a request whose op could not be read. */
static const shape *body_shape(hsq_msg_kind kind, hsq_op op) {
    if ((int)op < HSQ_OP_NONE || op >= HSQ_OP_COUNT_)
        return NULL;
    switch (kind) {
    case HSQ_KIND_REQUEST:
        return ops[op].req;
    case HSQ_KIND_REPLY:
        return ops[op].rep;
    case HSQ_KIND_ERROR:
        return &rep_error_s;
    }
    return NULL;
}

/* ---------------------------------------------------------------- field access */

#define AT(base, off, T) ((T *)((char *)(base) + (off)))
#define CAT(base, off, T) ((const T *)((const char *)(base) + (off)))

/* Any scalar field widened to uint64 (int64/int32 reinterpreted), for the
 * "equals default" test and range checks. */
static uint64_t get_num(const field *f, const void *base) {
    switch (f->type) {
    case T_U64:
        return *CAT(base, f->off, uint64_t);
    case T_U32:
        return *CAT(base, f->off, uint32_t);
    case T_U8:
        return *CAT(base, f->off, uint8_t);
    case T_U16:
        return *CAT(base, f->off, uint16_t);
    case T_I64:
        return (uint64_t)*CAT(base, f->off, int64_t);
    case T_ERR:
        return (uint64_t)(int64_t)*CAT(base, f->off, int32_t);
    default: /* T_BOOL, T_PRIO, T_STATE, T_FMT */
        return *CAT(base, f->off, uint8_t);
    }
}

static void set_num(const field *f, void *base, uint64_t v) {
    switch (f->type) {
    case T_U64:
        *AT(base, f->off, uint64_t) = v;
        break;
    case T_U32:
        *AT(base, f->off, uint32_t) = (uint32_t)v;
        break;
    case T_U8:
        *AT(base, f->off, uint8_t) = (uint8_t)v;
        break;
    case T_U16:
        *AT(base, f->off, uint16_t) = (uint16_t)v;
        break;
    case T_I64:
        *AT(base, f->off, int64_t) = (int64_t)v;
        break;
    case T_ERR:
        *AT(base, f->off, int32_t) = (int32_t)(int64_t)v;
        break;
    default:
        *AT(base, f->off, uint8_t) = (uint8_t)v;
        break;
    }
}

static uint32_t get_count(const field *f, const void *base) {
    return *CAT(base, f->count_off, uint32_t);
}

/* T_PARR members are typed pointers (hsq_wire_task *, hsq_wire_job *); they
 * are read and written through memcpy rather than a char ** lvalue. */
static const char *parr_get(const field *f, const void *base) {
    const char *p;
    memcpy(&p, (const char *)base + f->off, sizeof(p));
    return p;
}

static void parr_set(const field *f, void *base, char *p) {
    memcpy((char *)base + f->off, &p, sizeof(p));
}

static const void *elem_at(const field *f, const void *base, uint32_t i) {
    const char *arr = f->type == T_PARR ? parr_get(f, base) : (const char *)base + f->off;
    return arr + (size_t)i * f->esize;
}

/* Whether an optional field holds its default, so the encoder leaves it out. */
static bool is_default(const field *f, const void *base) {
    if (f->flags & (F_REQ | F_IDXDEF))
        return false;
    switch (f->type) {
    case T_STR:
        return CAT(base, f->off, hsq_str)->len == 0;
    case T_ARR:
    case T_PARR:
    case T_U64ARR:
    case T_U32ARR:
        return get_count(f, base) == 0;
    case T_MAP: {
        const uint8_t *p = CAT(base, f->off, uint8_t);
        for (uint32_t i = 0; i < f->esize; i++)
            if (p[i])
                return false;
        return f->esize > 0;
    }
    case T_RGB: {
        const uint8_t *rgb = CAT(base, f->off, uint8_t);
        return rgb[0] == 0 && rgb[1] == 0 && rgb[2] == 0;
    }
    case T_RAW:
        return CAT(base, f->off, hsq_bytes)->len == 0;
    case T_SHA:
        return false;
    default:
        return get_num(f, base) == f->def;
    }
}

/* ---------------------------------------------------------------- check */

static int check_shape(ctx *c, const shape *s, const void *base, uint32_t index);
static int raw_decode(ctx *c, const shape *s, hsq_bytes raw, void *out, size_t outsize);

static int check_str(ctx *c, const field *f, const void *base) {
    const hsq_str *v = CAT(base, f->off, hsq_str);
    if (v->len > f->max)
        return fail(c, HSQ_ETOOLARGE, "field '%s' in %s is too long (%zu > %llu bytes)", f->name,
                    path(c), v->len, (unsigned long long)f->max);
    if (v->len < f->min)
        return fail(c, HSQ_EBADREQ, "field '%s' in %s must not be empty", f->name, path(c));
    if (v->len > 0 && !v->ptr)
        return fail(c, HSQ_EBADREQ, "field '%s' in %s has a NULL pointer", f->name, path(c));
    if (!hsq_utf8_valid(v->ptr, v->len))
        return fail(c, HSQ_EBADREQ, "field '%s' in %s is not valid UTF-8", f->name, path(c));
    if (!f->oneof)
        return 0;
    for (const char *const *p = f->oneof; *p; p++)
        if (hsq_str_eq(*v, *p))
            return 0;
    return fail(c, HSQ_EBADREQ, "field '%s' in %s has an unknown value", f->name, path(c));
}

static int check_array(ctx *c, const field *f, const void *base) {
    uint32_t n = get_count(f, base);
    if (n > f->max)
        return fail(c, HSQ_ETOOLARGE, "field '%s' in %s has too many elements (%u > %llu)", f->name,
                    path(c), n, (unsigned long long)f->max);
    if (n < f->min)
        return fail(c, HSQ_EBADREQ, "field '%s' in %s needs at least %llu element(s)", f->name,
                    path(c), (unsigned long long)f->min);
    if (f->type == T_U64ARR || f->type == T_U32ARR)
        return 0;
    if (n > 0 && f->type == T_PARR && !parr_get(f, base))
        return fail(c, HSQ_EBADREQ, "field '%s' in %s has a NULL array", f->name, path(c));
    for (uint32_t i = 0; i < n; i++) {
        size_t old = path_push(c, f->name, (long)i);
        int rc = check_shape(c, f->sub, elem_at(f, base, i), i);
        path_pop(c, old);
        if (rc)
            return rc;
    }
    return 0;
}

static int check_field(ctx *c, const field *f, const void *base) {
    switch (f->type) {
    case T_STR:
        return check_str(c, f, base);
    case T_ARR:
    case T_PARR:
    case T_U64ARR:
    case T_U32ARR:
        return check_array(c, f, base);
    case T_MAP: {
        if (is_default(f, base))
            return 0; /* an optional map left out */
        size_t old = path_push(c, f->name, -1);
        int rc = check_shape(c, f->sub, CAT(base, f->off, char), 0);
        path_pop(c, old);
        return rc;
    }
    case T_RAW: {
        const hsq_bytes *v = CAT(base, f->off, hsq_bytes);
        if (v->len == 0)
            return 0;
        if (v->len > f->max)
            return fail(c, HSQ_ETOOLARGE, "field '%s' in %s is too large (%zu > %llu bytes)",
                        f->name, path(c), v->len, (unsigned long long)f->max);
        if (!v->ptr)
            return fail(c, HSQ_EBADREQ, "field '%s' in %s has a NULL pointer", f->name, path(c));
        raw_scratch scratch;
        size_t old = path_push(c, f->name, -1);
        int rc = raw_decode(c, f->sub, *v, &scratch, sizeof(scratch));
        path_pop(c, old);
        return rc;
    }
    case T_SHA:
    case T_I64:
    case T_RGB:
        return 0;
    case T_ERR:
        /* Any nonzero code travels (system codes as their wire name); 0 is
         * "none" and only an optional field may hold it. */
        if ((f->flags & F_REQ) && get_num(f, base) == 0)
            return fail(c, HSQ_EBADREQ, "field '%s' in %s must be an error code", f->name, path(c));
        return 0;
    default: {
        uint64_t v = get_num(f, base);
        if (v < f->min || v > f->max)
            return fail(c, HSQ_EBADREQ, "field '%s' in %s is out of range (%llu..%llu)", f->name,
                        path(c), (unsigned long long)f->min, (unsigned long long)f->max);
        return 0;
    }
    }
}

static int check_shape(ctx *c, const shape *s, const void *base, uint32_t index) {
    for (size_t i = 0; i < s->n; i++) {
        int rc = check_field(c, &s->fields[i], base);
        if (rc)
            return rc;
    }
    return s->check ? s->check(c, base, index) : 0;
}

/* Submit inputs are frames 0..n-1 in order; hsqd assigns keys and sizes. */
static int check_input_submit(ctx *c, const void *obj, uint32_t index) {
    const hsq_wire_input *in = obj;
    if (in->frame != index)
        return fail(c, HSQ_EBADREQ, "field 'frame' in %s must be %u", path(c), index);
    if (in->key.len != 0 || in->size != 0)
        return fail(c, HSQ_EBADREQ, "%s: key and size are set by hsqd, not in submit", path(c));
    return 0;
}

/* Lease inputs name exactly one source: a blob key or an inline frame. */
static int check_input_lease(ctx *c, const void *obj, uint32_t index) {
    const hsq_wire_input *in = obj;
    bool has_key = in->key.len > 0, has_frame = in->frame != HSQ_NO_FRAME;
    (void)index;
    if (has_key == has_frame)
        return fail(c, HSQ_EBADREQ, "%s needs exactly one of 'key' and 'frame'", path(c));
    if (c->decoding && has_frame && in->frame >= c->nframes)
        return fail(c, HSQ_EBADREQ, "field 'frame' in %s is %u but only %zu frame(s) follow",
                    path(c), in->frame, c->nframes);
    return 0;
}

static int check_submit(ctx *c, const void *obj, uint32_t index) {
    const hsq_req_submit *r = obj;
    uint32_t portraits = 0, bg_inputs = 0;
    (void)index;
    if (c->decoding && r->n_inputs != c->nframes)
        return fail(c, HSQ_EBADREQ, "submit has %u input(s) but %zu binary frame(s)", r->n_inputs,
                    c->nframes);
    for (uint32_t i = 0; i < r->n_inputs; i++) {
        portraits += hsq_str_eq(r->inputs[i].kind, "portrait");
        bg_inputs += hsq_str_eq(r->inputs[i].kind, "background");
    }
    if (portraits == 0)
        return fail(c, HSQ_EBADREQ, "submit needs at least one input of kind 'portrait'");
    if (bg_inputs > 1)
        return fail(c, HSQ_EBADREQ, "submit takes at most one input of kind 'background'");

    /* The settings map was validated by its field already; decode it again
     * for the rules that involve the inputs and outputs. */
    hsq_wire_settings st;
    memset(&st, 0, sizeof(st));
    if (r->settings.len > 0) {
        size_t old = path_push(c, "settings", -1);
        int rc = raw_decode(c, &settings_s, r->settings, &st, sizeof(st));
        path_pop(c, old);
        if (rc)
            return rc;
    }
    for (uint32_t i = 0; i < st.n_backgrounds; i++)
        if (st.backgrounds[i].kind == HSQ_BG_REFERENCE && bg_inputs == 0)
            return fail(c, HSQ_EBADREQ,
                        "settings.backgrounds[%u] is 'reference' but the submit has no input of "
                        "kind 'background'",
                        i);
    uint32_t nb = st.n_backgrounds ? st.n_backgrounds : 1, ns = st.n_styles ? st.n_styles : 1;
    uint32_t total = nb * ns * r->n_outputs;
    if (total > HSQ_MAX_OUTPUTS)
        return fail(c, HSQ_ETOOLARGE,
                    "submit asks for %u outputs (%u background(s) x %u style(s) x %u size(s)); "
                    "the cap is %d per job",
                    total, nb, ns, r->n_outputs, HSQ_MAX_OUTPUTS);
    return 0;
}

static int check_background(ctx *c, const void *obj, uint32_t index) {
    const hsq_wire_background *b = obj;
    (void)index;
    if (b->blur_px != 0 && b->kind != HSQ_BG_REFERENCE)
        return fail(c, HSQ_EBADREQ, "field 'blur_px' in %s applies to 'reference' only", path(c));
    const uint8_t *c2 = b->color2;
    if ((c2[0] | c2[1] | c2[2]) != 0 && b->kind != HSQ_BG_GRADIENT)
        return fail(c, HSQ_EBADREQ, "field 'color2' in %s applies to 'gradient' only", path(c));
    return 0;
}

static int check_settings(ctx *c, const void *obj, uint32_t index) {
    const hsq_wire_settings *s = obj;
    (void)index;
    if (s->dpi != 0 && s->dpi < 72)
        return fail(c, HSQ_EBADREQ, "field 'dpi' in %s must be 0 or 72..1200", path(c));
    return 0;
}

static int check_info(ctx *c, const void *obj, uint32_t index) {
    const hsq_wire_info *in = obj;
    (void)index;
    if (in->backend.len && !hsq_str_eq(in->backend, "cpu") && !hsq_str_eq(in->backend, "cuda"))
        return fail(c, HSQ_EBADREQ, "field 'backend' in %s has an unknown value", path(c));
    return 0;
}

static int check_result(ctx *c, const void *obj, uint32_t index) {
    const hsq_rep_task *r = obj;
    (void)index;
    if (c->decoding && r->task.n_outputs != c->nframes)
        return fail(c, HSQ_EBADREQ, "result reply has %u output(s) but %zu binary frame(s)",
                    r->task.n_outputs, c->nframes);
    return 0;
}

/* An export reply carries a task exactly when has_task says so; every frame
 * index names a frame that is there, and out_frames has one entry per output
 * (its count is the task's n_outputs, see T_U32ARR). */
static int check_rep_export(ctx *c, const void *obj, uint32_t index) {
    const hsq_rep_export *e = obj;
    (void)index;
    if (!e->has_task != (e->task.id == 0))
        return fail(c, HSQ_EBADREQ, "export reply: 'task' must be present exactly when has_task");
    if (!e->has_task && (e->n_inputs || e->next || e->prompt.len))
        return fail(c, HSQ_EBADREQ, "export reply without a task carries nothing else");
    if (c->decoding && c->cnt_seen != e->task.n_outputs)
        return fail(c, HSQ_EBADREQ, "export reply: out_frames has %u entries for %u output(s)",
                    c->cnt_seen, e->task.n_outputs);
    size_t nf = c->decoding ? c->nframes : SIZE_MAX;
    for (uint32_t i = 0; i < e->n_inputs; i++)
        if (e->inputs[i].frame != HSQ_NO_FRAME && e->inputs[i].frame >= nf)
            return fail(c, HSQ_EBADREQ, "export reply: input %u names frame %u of %zu", i,
                        e->inputs[i].frame, nf);
    for (uint32_t i = 0; i < e->task.n_outputs; i++)
        if (e->out_frames[i] != HSQ_NO_FRAME && e->out_frames[i] >= nf)
            return fail(c, HSQ_EBADREQ, "export reply: output %u names frame %u of %zu", i,
                        e->out_frames[i], nf);
    return 0;
}

/* ---------------------------------------------------------------- parse */

static int parse_shape(ctx *c, const shape *s, const msgpack_object *o, void *base, uint32_t index,
                       bool top, size_t roff);
static size_t skim(const uint8_t *p, size_t len);
static size_t mp_header_len(uint8_t b);

/* Byte offsets into c->raw run alongside the msgpack objects (msgpack-c keeps
 * map and array order), so a T_RAW field can record where its map lies in the
 * input. skim() accepted the whole input already, so the walk cannot fail. */
static size_t raw_skip(const ctx *c, size_t off) {
    return c->raw ? off + skim(c->raw + off, c->rawlen - off) : off;
}

static size_t raw_first(const ctx *c, size_t off) {
    return c->raw ? off + mp_header_len(c->raw[off]) : off;
}

static int type_error(ctx *c, const field *f, const char *what) {
    return fail(c, HSQ_EBADREQ, "field '%s' in %s must be %s", f->name, path(c), what);
}

static int parse_uint(ctx *c, const field *f, const msgpack_object *o, uint64_t max) {
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
        (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 > max))
        return fail(c, HSQ_EBADREQ, "field '%s' in %s is out of range", f->name, path(c));
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return type_error(c, f, "an unsigned integer");
    return 0;
}

static int parse_int(ctx *c, const field *f, const msgpack_object *o, int64_t *out) {
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return type_error(c, f, "an integer");
    if (o->via.u64 > (uint64_t)INT64_MAX)
        return fail(c, HSQ_EBADREQ, "field '%s' in %s is out of range", f->name, path(c));
    *out = (int64_t)o->via.u64;
    return 0;
}

static int parse_name(ctx *c, const field *f, const msgpack_object *o, hsq_str *out) {
    if (o->type != MSGPACK_OBJECT_STR)
        return type_error(c, f, "a string");
    out->ptr = o->via.str.ptr;
    out->len = o->via.str.size;
    return 0;
}

/* Enumerations travel by name. Unknown error-code names decode as "internal"
 * so that a peer one release behind still gets the reply and its message
 * (codes are appended over time; prio/state/format names are closed sets). */
static int parse_enum(ctx *c, const field *f, const msgpack_object *o, void *base) {
    hsq_str s;
    int rc = parse_name(c, f, o, &s), v = -1;
    if (rc)
        return rc;
    switch (f->type) {
    case T_PRIO:
        v = hsq_prio_from_name(s);
        break;
    case T_STATE:
        v = name_index(state_names, HSQ_STATE_COUNT_, s);
        break;
    case T_FMT:
        v = name_index(fmt_names, FMT_COUNT_, s);
        break;
    case T_BG:
        v = name_index(bg_names, BG_COUNT_, s);
        break;
    default: /* T_ERR */
        v = hsq_err_from_name(s.ptr, s.len);
        set_num(f, base, (uint64_t)(int64_t)(v ? v : HSQ_EINTERNAL));
        return 0;
    }
    if (v < 0)
        return fail(c, HSQ_EBADREQ, "field '%s' in %s has an unknown value", f->name, path(c));
    set_num(f, base, (uint64_t)v);
    return 0;
}

/* Array header checks shared by every array kind. */
static int parse_array_head(ctx *c, const field *f, const msgpack_object *o) {
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return type_error(c, f, "an array");
    if (o->via.array.size > f->max)
        return fail(c, HSQ_ETOOLARGE, "field '%s' in %s has too many elements (%u > %llu)", f->name,
                    path(c), o->via.array.size, (unsigned long long)f->max);
    return 0;
}

static bool shape_has_raw(const shape *s);

/* Is f a T_RAW field, or does its nested shape hold one? */
static bool field_has_raw(const field *f) {
    return f->type == T_RAW || (f->sub && shape_has_raw(f->sub));
}

/* Does s, or a shape nested in it, hold a T_RAW field? Only then does the
 * parse need byte offsets beside the objects, and finding them (raw_skip)
 * walks the input a second time. */
static bool shape_has_raw(const shape *s) {
    for (size_t i = 0; i < s->n; i++)
        if (field_has_raw(&s->fields[i]))
            return true;
    return false;
}

static int parse_array(ctx *c, const field *f, const msgpack_object *o, void *base, size_t roff) {
    int rc = parse_array_head(c, f, o);
    if (rc)
        return rc;
    uint32_t n = o->via.array.size;
    char *arr = (char *)base + f->off;
    if (f->type == T_PARR) {
        arr = NULL;
        if (n > 0) {
            arr = msgpack_zone_malloc(c->zone, (size_t)n * f->esize);
            if (!arr)
                return fail(c, HSQ_ENOMEM, "out of memory decoding '%s'", f->name);
            memset(arr, 0, (size_t)n * f->esize);
        }
        parr_set(f, base, arr);
    }
    if (f->flags & F_CNTCHK)
        c->cnt_seen = n;
    else
        *AT(base, f->count_off, uint32_t) = n;
    bool track = c->raw && field_has_raw(f);
    size_t eoff = track ? raw_first(c, roff) : 0;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        size_t this_off = eoff;
        if (track)
            eoff = raw_skip(c, eoff);
        if (f->type == T_U64ARR) {
            if ((rc = parse_uint(c, f, e, UINT64_MAX)) != 0)
                return rc;
            ((uint64_t *)(void *)arr)[i] = e->via.u64;
            continue;
        }
        if (f->type == T_U32ARR) {
            if ((rc = parse_uint(c, f, e, UINT32_MAX)) != 0)
                return rc;
            ((uint32_t *)(void *)arr)[i] = (uint32_t)e->via.u64;
            continue;
        }
        size_t old = path_push(c, f->name, (long)i);
        rc = parse_shape(c, f->sub, e, arr + (size_t)i * f->esize, i, false, this_off);
        path_pop(c, old);
        if (rc)
            return rc;
    }
    return 0;
}

static int parse_field(ctx *c, const field *f, const msgpack_object *o, void *base, size_t roff) {
    int rc;
    int64_t i64 = 0;
    switch (f->type) {
    case T_U64:
    case T_U32:
    case T_U16:
    case T_U8:
        if ((rc = parse_uint(c, f, o,
                             f->type == T_U64   ? UINT64_MAX
                             : f->type == T_U32 ? UINT32_MAX
                             : f->type == T_U16 ? UINT16_MAX
                                                : UINT8_MAX)) != 0)
            return rc;
        set_num(f, base, o->via.u64);
        return 0;
    case T_I64:
        if ((rc = parse_int(c, f, o, &i64)) != 0)
            return rc;
        set_num(f, base, (uint64_t)i64);
        return 0;
    case T_BOOL:
        if (o->type != MSGPACK_OBJECT_BOOLEAN)
            return type_error(c, f, "a boolean");
        set_num(f, base, o->via.boolean ? 1 : 0);
        return 0;
    case T_STR:
        return parse_name(c, f, o, AT(base, f->off, hsq_str));
    case T_PRIO:
    case T_STATE:
    case T_FMT:
    case T_BG:
    case T_ERR:
        return parse_enum(c, f, o, base);
    case T_RGB:
        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 3)
            return type_error(c, f, "an array of 3 integers (red, green, blue)");
        for (int k = 0; k < 3; k++) {
            const msgpack_object *e = &o->via.array.ptr[k];
            if (e->type != MSGPACK_OBJECT_POSITIVE_INTEGER || e->via.u64 > 255)
                return fail(c, HSQ_EBADREQ, "field '%s' in %s needs components 0..255", f->name,
                            path(c));
            AT(base, f->off, uint8_t)[k] = (uint8_t)e->via.u64;
        }
        return 0;
    case T_RAW: {
        /* Only the range is recorded here; check_field validates the map. */
        if (o->type != MSGPACK_OBJECT_MAP)
            return type_error(c, f, "a map");
        if (!c->raw)
            return fail(c, HSQ_EINTERNAL, "field '%s' in %s: no input bytes", f->name, path(c));
        hsq_bytes *v = AT(base, f->off, hsq_bytes);
        v->ptr = c->raw + roff;
        v->len = skim(c->raw + roff, c->rawlen - roff);
        return 0;
    }
    case T_SHA:
        if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != 32)
            return type_error(c, f, "a 32-byte bin");
        memcpy(AT(base, f->off, uint8_t), o->via.bin.ptr, 32);
        return 0;
    case T_MAP: {
        size_t old = path_push(c, f->name, -1);
        rc = parse_shape(c, f->sub, o, AT(base, f->off, char), 0, false, roff);
        path_pop(c, old);
        return rc;
    }
    default: /* T_ARR, T_PARR, T_U64ARR, T_U32ARR */
        return parse_array(c, f, o, base, roff);
    }
}

static bool is_envelope_key(hsq_str k) {
    return hsq_str_eq(k, "v") || hsq_str_eq(k, "rid") || hsq_str_eq(k, "op") || hsq_str_eq(k, "re");
}

static int find_field(const shape *s, hsq_str key) {
    for (size_t i = 0; i < s->n; i++) {
        const field *f = &s->fields[i];
        if (f->nlen == key.len && memcmp(f->name, key.ptr, key.len) == 0)
            return (int)i;
    }
    return -1;
}

static void set_defaults(const shape *s, void *base, uint32_t index) {
    for (size_t i = 0; i < s->n; i++) {
        const field *f = &s->fields[i];
        if (f->flags & F_IDXDEF)
            set_num(f, base, index);
        else if (!(f->flags & F_REQ) && f->def)
            set_num(f, base, f->def);
    }
}

/* Walk one msgpack map into base (zeroed by the caller) using shape s. At the
 * top level the envelope keys were read already and are skipped here. */
static int parse_shape(ctx *c, const shape *s, const msgpack_object *o, void *base, uint32_t index,
                       bool top, size_t roff) {
    uint64_t seen = 0; /* bit i: field i was present (shapes have < 64 fields) */
    if (o->type != MSGPACK_OBJECT_MAP)
        return fail(c, HSQ_EBADREQ, "%s must be a map", path(c));
    set_defaults(s, base, index);
    /* Byte offsets are found only for a field that needs them, by walking
     * the input up to it: most maps have none, or one near the end. */
    bool track = c->raw && shape_has_raw(s);
    size_t walk_off = track ? raw_first(c, roff) : 0; /* where pair walk_i begins */
    uint32_t walk_i = 0;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR)
            return fail(c, HSQ_EBADREQ, "field names in %s must be strings", path(c));
        hsq_str key = {kv->key.via.str.ptr, kv->key.via.str.size};
        if (top && is_envelope_key(key))
            continue;
        int fi = find_field(s, key);
        if (fi < 0) {
            char name[40];
            sanitize(name, sizeof(name), key.ptr, key.len);
            return fail(c, HSQ_EBADREQ, "unknown field '%s' in %s", name, path(c));
        }
        if (seen & (1ull << fi))
            return fail(c, HSQ_EBADREQ, "duplicate field '%s' in %s", s->fields[fi].name, path(c));
        seen |= 1ull << fi;
        const field *f = &s->fields[fi];
        size_t voff = 0;
        if (track && field_has_raw(f)) {
            for (; walk_i < i; walk_i++)
                walk_off = raw_skip(c, raw_skip(c, walk_off));
            voff = raw_skip(c, walk_off); /* past the key */
        }
        int rc = parse_field(c, f, &kv->val, base, voff);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < s->n; i++)
        if ((s->fields[i].flags & F_REQ) && !(seen & (1ull << i)))
            return fail(c, HSQ_EBADREQ, "missing field '%s' in %s", s->fields[i].name, path(c));
    return 0;
}

/* ---------------------------------------------------------------- skim */

static uint64_t be(const uint8_t *p, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* What follows the type byte of one msgpack object: either a fixed number of
 * payload bytes, or a big-endian length field of lenb bytes. The length is a
 * byte count (mul 0: str, bin, ext plus its type byte) or an element count
 * (mul 1: array; mul 2: map, key and value). mp_classify() returns false for
 * 0xc1, the one byte msgpack never uses. */
typedef struct {
    unsigned lenb;  /* big-endian length field size after the type byte */
    uint64_t fixed; /* payload bytes, when no length field */
    unsigned extra; /* ext: type byte after the length */
    unsigned mul;   /* 0: length is bytes; 1 array; 2 map */
} mp_head;

static bool mp_classify(uint8_t b, mp_head *h) {
    *h = (mp_head){0, 0, 0, 0};
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return true;
    if (b <= 0x8f) { /* fixmap */
        h->fixed = b & 0x0f;
        h->mul = 2;
        return true;
    }
    if (b <= 0x9f) { /* fixarray */
        h->fixed = b & 0x0f;
        h->mul = 1;
        return true;
    }
    if (b <= 0xbf) { /* fixstr */
        h->fixed = b & 0x1f;
        return true;
    }
    switch (b) {
    case 0xc4:
    case 0xc5:
    case 0xc6: /* bin 8/16/32 */
        h->lenb = 1u << (b - 0xc4);
        return true;
    case 0xc7:
    case 0xc8:
    case 0xc9: /* ext 8/16/32 */
        h->lenb = 1u << (b - 0xc7);
        h->extra = 1;
        return true;
    case 0xca:
        h->fixed = 4;
        return true;
    case 0xcb:
        h->fixed = 8;
        return true;
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf: /* uint 8..64 */
        h->fixed = 1u << (b - 0xcc);
        return true;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: /* int 8..64 */
        h->fixed = 1u << (b - 0xd0);
        return true;
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8: /* fixext 1..16 */
        h->fixed = (1u << (b - 0xd4)) + 1;
        return true;
    case 0xd9:
    case 0xda:
    case 0xdb: /* str 8/16/32 */
        h->lenb = 1u << (b - 0xd9);
        return true;
    case 0xdc:
    case 0xdd: /* array 16/32 */
        h->lenb = 2u << (b - 0xdc);
        h->mul = 1;
        return true;
    case 0xde:
    case 0xdf: /* map 16/32 */
        h->lenb = 2u << (b - 0xde);
        h->mul = 2;
        return true;
    default: /* 0xc1 */
        return false;
    }
}

/* Bytes of an object's type byte plus its length field. */
static size_t mp_header_len(uint8_t b) {
    mp_head h;
    return mp_classify(b, &h) ? 1 + h.lenb : 1;
}

/* Deepest nesting accepted. The deepest real message is 5 levels (lease
 * reply > jobs > job > inputs > input); msgpack-c's own limit is 32 and it
 * reports hitting it as "out of memory", so skim() refuses depth first. */
#define SKIM_MAX_DEPTH 16

/* Length of the first msgpack object in p[0..len), or 0 when it is malformed,
 * truncated, nested deeper than SKIM_MAX_DEPTH, or declares more bytes or
 * elements than the input holds (each pending element needs at least one
 * byte, so `pending` never exceeds the bytes left). Iterative, O(len). */
static size_t skim(const uint8_t *p, size_t len) {
    uint64_t left[SKIM_MAX_DEPTH]; /* elements still owed by each open container */
    size_t off = 0, pending = 1;
    int depth = 0;
    while (pending > 0) {
        mp_head h;
        if (off >= len || !mp_classify(p[off], &h))
            return 0;
        off++;
        pending--;
        if (depth > 0)
            left[depth - 1]--;
        uint64_t n = h.fixed;
        if (h.lenb) {
            if (len - off < h.lenb)
                return 0;
            n = be(p + off, h.lenb);
            off += h.lenb;
        }
        if (h.mul == 0) {
            n += h.extra;
            if (n > len - off)
                return 0;
            off += n;
        } else if (n > 0) {
            if (n > (len - off) / h.mul || pending + n * h.mul > len - off)
                return 0;
            if (depth == SKIM_MAX_DEPTH)
                return 0;
            pending += n * h.mul;
            left[depth++] = n * h.mul;
        }
        while (depth > 0 && left[depth - 1] == 0)
            depth--;
    }
    return off;
}

/* ---------------------------------------------------------------- decode */

typedef struct {
    const msgpack_object *v, *rid, *op, *re;
    bool has_error;
} envelope;

static const msgpack_object **envelope_slot(envelope *e, hsq_str k) {
    if (hsq_str_eq(k, "v"))
        return &e->v;
    if (hsq_str_eq(k, "rid"))
        return &e->rid;
    if (hsq_str_eq(k, "op"))
        return &e->op;
    if (hsq_str_eq(k, "re"))
        return &e->re;
    return NULL;
}

/* Finds the envelope keys. It scans the whole map even past a problem (the
 * first one is reported) so that op and rid are still found for the reply. */
static int read_envelope_keys(ctx *c, const msgpack_object *o, envelope *e) {
    int rc = 0;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR) {
            rc = rc ? rc : fail(c, HSQ_EBADREQ, "field names must be strings");
            continue;
        }
        hsq_str k = {kv->key.via.str.ptr, kv->key.via.str.size};
        const msgpack_object **slot = envelope_slot(e, k);
        if (hsq_str_eq(k, "error"))
            e->has_error = true;
        if (!slot)
            continue;
        if (*slot)
            rc = rc ? rc : fail(c, HSQ_EBADREQ, "duplicate field '%.*s'", (int)k.len, k.ptr);
        else
            *slot = &kv->val;
    }
    return rc;
}

/* Fill msg->v, rid, kind and op from the envelope, as far as they can be read,
 * before reporting what is wrong with it, so an error reply can echo them. */
static int decode_envelope(ctx *c, const msgpack_object *o, hsq_wire_msg *msg) {
    envelope e = {0};
    int rc = read_envelope_keys(c, o, &e);
    const msgpack_object *name = e.op ? e.op : e.re;
    if (e.rid && e.rid->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        msg->rid = e.rid->via.u64;
    if (e.v && e.v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        msg->v = e.v->via.u64 > UINT32_MAX ? UINT32_MAX : (uint32_t)e.v->via.u64;
    if (name && name->type == MSGPACK_OBJECT_STR) {
        hsq_str s = {name->via.str.ptr, name->via.str.size};
        msg->op = hsq_op_from_name(s);
        msg->kind = e.op ? HSQ_KIND_REQUEST : e.has_error ? HSQ_KIND_ERROR : HSQ_KIND_REPLY;
    }
    if (rc)
        return rc;
    if (!e.v)
        return fail(c, HSQ_EBADREQ, "missing field 'v'");
    if (e.v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return fail(c, HSQ_EBADREQ, "field 'v' must be an unsigned integer");
    if (e.v->via.u64 != HSQ_WIRE_VERSION)
        return fail(c, HSQ_EVERSION, "protocol version %llu is not supported (want %d)",
                    (unsigned long long)e.v->via.u64, HSQ_WIRE_VERSION);
    if (!e.rid)
        return fail(c, HSQ_EBADREQ, "missing field 'rid'");
    if (e.rid->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return fail(c, HSQ_EBADREQ, "field 'rid' must be an unsigned integer");
    if (e.op && e.re)
        return fail(c, HSQ_EBADREQ, "a message has either 'op' or 're', not both");
    if (!name)
        return fail(c, HSQ_EBADREQ, "missing field 'op'");
    if (name->type != MSGPACK_OBJECT_STR)
        return fail(c, HSQ_EBADREQ, "field '%s' must be a string", e.op ? "op" : "re");
    if (msg->op == HSQ_OP_NONE && !(msg->kind == HSQ_KIND_ERROR && name->via.str.size == 0)) {
        char s[40];
        sanitize(s, sizeof(s), name->via.str.ptr, name->via.str.size);
        return fail(c, HSQ_EUNKNOWNOP, "unknown op '%s'", s);
    }
    return 0;
}

static int decode_map(ctx *c, const msgpack_object *o, bool trailing, hsq_wire_msg *msg) {
    if (o->type != MSGPACK_OBJECT_MAP)
        return fail(c, HSQ_EBADREQ, "message is not a msgpack map");
    int rc = decode_envelope(c, o, msg);
    if (rc)
        return rc;
    if (trailing)
        return fail(c, HSQ_EBADREQ, "trailing bytes after the message map");
    const shape *s = body_shape(msg->kind, msg->op);
    if (!s)
        return fail(c, HSQ_EBADREQ, "'%s' has no reply", hsq_op_name(msg->op));
    if (!s->frames && c->nframes != 0)
        return fail(c, HSQ_EBADREQ, "%s takes no binary frames, got %zu", s->name, c->nframes);
    void *base = msg->kind == HSQ_KIND_REQUEST ? (void *)&msg->req : (void *)&msg->rep;
    c->root = s->name;
    c->depth = 0;
    rc = parse_shape(c, s, o, base, 0, true, 0);
    return rc ? rc : check_shape(c, s, base, 0);
}

/* Decode one T_RAW map (raw must be exactly one map) into out with shape s,
 * then check it. Views in out point into raw: msgpack-c references its input
 * for str and bin, so they outlive the local zone. */
static int raw_decode(ctx *c, const shape *s, hsq_bytes raw, void *out, size_t outsize) {
    memset(out, 0, outsize);
    if (skim(raw.ptr, raw.len) != raw.len)
        return fail(c, HSQ_EBADREQ, "%s is not exactly one well-formed msgpack map", path(c));
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&up, (const char *)raw.ptr, raw.len, &off);
    if (ur != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacked_destroy(&up);
        if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
            return fail(c, HSQ_ENOMEM, "out of memory decoding %s", path(c));
        return fail(c, HSQ_EBADREQ, "%s is malformed msgpack", path(c));
    }
    const uint8_t *saved_raw = c->raw;
    size_t saved_len = c->rawlen;
    c->raw = raw.ptr;
    c->rawlen = raw.len;
    int rc = parse_shape(c, s, &up.data, out, 0, false, 0);
    if (rc == 0)
        rc = check_shape(c, s, out, 0);
    c->raw = saved_raw;
    c->rawlen = saved_len;
    msgpack_unpacked_destroy(&up);
    if (rc)
        memset(out, 0, outsize);
    return rc;
}

static int raw_public_decode(const shape *s, size_t max, hsq_bytes raw, void *out, size_t outsize,
                             char *err, size_t errlen) {
    char local[160];
    ctx c = {.decoding = true,
             .err = err && errlen ? err : local,
             .errcap = err && errlen ? errlen : sizeof(local)};
    c.err[0] = '\0';
    memset(out, 0, outsize);
    if (raw.len == 0)
        return 0;
    c.root = s->name;
    if (!raw.ptr)
        return fail(&c, HSQ_EBADREQ, "%s has a NULL pointer", s->name);
    if (raw.len > max)
        return fail(&c, HSQ_ETOOLARGE, "%s map is too large (%zu > %zu bytes)", s->name, raw.len,
                    max);
    return raw_decode(&c, s, raw, out, outsize);
}

int hsq_wire_settings_decode(hsq_bytes raw, hsq_wire_settings *out, char *err, size_t errlen) {
    return raw_public_decode(&settings_s, HSQ_MAX_SETTINGS_BYTES, raw, out, sizeof(*out), err,
                             errlen);
}

int hsq_wire_info_decode(hsq_bytes raw, hsq_wire_info *out, char *err, size_t errlen) {
    return raw_public_decode(&info_s, HSQ_MAX_INFO_BYTES, raw, out, sizeof(*out), err, errlen);
}

int hsq_wire_decode(const void *meta, size_t len, size_t nframes, hsq_wire_msg *msg) {
    memset(msg, 0, sizeof(*msg));
    ctx c = {
        .decoding = true, .nframes = nframes, .err = msg->errmsg, .errcap = sizeof(msg->errmsg)};
    if (!meta || len == 0)
        return fail(&c, HSQ_EBADREQ, "empty message");
    if (len > HSQ_MAX_META_BYTES)
        return fail(&c, HSQ_ETOOLARGE, "message is %zu bytes (limit %d)", len, HSQ_MAX_META_BYTES);
    size_t end = skim(meta, len);
    if (end == 0)
        return fail(&c, HSQ_EBADREQ, "malformed, truncated or too deeply nested msgpack");

    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&up, meta, end, &off);
    if (ur != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacked_destroy(&up);
        if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
            return fail(&c, HSQ_ENOMEM, "out of memory decoding message");
        return fail(&c, HSQ_EBADREQ, "malformed msgpack");
    }
    c.zone = up.zone;
    c.raw = meta;
    c.rawlen = end;
    int rc = decode_map(&c, &up.data, end < len, msg);
    if (rc) {
        /* Keep what identifies the message; drop views into the zone. */
        msgpack_unpacked_destroy(&up);
        memset(&msg->req, 0, sizeof(msg->req));
        memset(&msg->rep, 0, sizeof(msg->rep));
        return rc;
    }
    msg->priv_ = msgpack_unpacked_release_zone(&up);
    return 0;
}

void hsq_wire_msg_free(hsq_wire_msg *msg) {
    if (!msg)
        return;
    if (msg->priv_)
        msgpack_zone_free(msg->priv_);
    memset(msg, 0, sizeof(*msg));
}

/* ---------------------------------------------------------------- encode */

/* The packer writes into an hsq_wbuf, which aborts on OOM rather than failing,
 * so the msgpack_pack_* results (0 unless the callback fails) are not checked. */
static int wbuf_write(void *data, const char *buf, size_t len) {
    hsq_wbuf_append(data, buf, len);
    return 0;
}

static void pack_str(msgpack_packer *pk, hsq_str s) {
    msgpack_pack_str(pk, s.len);
    msgpack_pack_str_body(pk, s.ptr, s.len);
}

static void pack_cstr(msgpack_packer *pk, const char *s) {
    pack_str(pk, hsq_str_c(s));
}

static void pack_shape_fields(msgpack_packer *pk, const shape *s, const void *base);

static size_t count_fields(const shape *s, const void *base) {
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += !is_default(&s->fields[i], base);
    return n;
}

static void pack_shape(msgpack_packer *pk, const shape *s, const void *base) {
    msgpack_pack_map(pk, count_fields(s, base));
    pack_shape_fields(pk, s, base);
}

static void pack_array(msgpack_packer *pk, const field *f, const void *base) {
    uint32_t n = get_count(f, base);
    msgpack_pack_array(pk, n);
    for (uint32_t i = 0; i < n; i++) {
        if (f->type == T_U64ARR)
            msgpack_pack_uint64(pk, CAT(base, f->off, uint64_t)[i]);
        else if (f->type == T_U32ARR)
            msgpack_pack_uint32(pk, CAT(base, f->off, uint32_t)[i]);
        else
            pack_shape(pk, f->sub, elem_at(f, base, i));
    }
}

static void pack_value(msgpack_packer *pk, const field *f, const void *base) {
    uint64_t v;
    switch (f->type) {
    case T_U64:
    case T_U32:
    case T_U16:
    case T_U8:
        msgpack_pack_uint64(pk, get_num(f, base));
        break;
    case T_BG:
        pack_cstr(pk, bg_names[get_num(f, base)]);
        break;
    case T_RGB:
        msgpack_pack_array(pk, 3);
        for (int k = 0; k < 3; k++)
            msgpack_pack_uint8(pk, CAT(base, f->off, uint8_t)[k]);
        break;
    case T_RAW: {
        /* check_field proved these bytes are exactly one valid map. */
        const hsq_bytes *v = CAT(base, f->off, hsq_bytes);
        hsq_wbuf_append(pk->data, v->ptr, v->len);
        break;
    }
    case T_I64:
        msgpack_pack_int64(pk, *CAT(base, f->off, int64_t));
        break;
    case T_BOOL:
        if (get_num(f, base))
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        break;
    case T_STR:
        pack_str(pk, *CAT(base, f->off, hsq_str));
        break;
    case T_PRIO:
        pack_cstr(pk, prio_names[get_num(f, base)]);
        break;
    case T_STATE:
        pack_cstr(pk, state_names[get_num(f, base)]);
        break;
    case T_FMT:
        pack_cstr(pk, fmt_names[get_num(f, base)]);
        break;
    case T_ERR:
        v = get_num(f, base);
        pack_cstr(pk, hsq_errname((int)(int64_t)v));
        break;
    case T_SHA:
        msgpack_pack_bin(pk, 32);
        msgpack_pack_bin_body(pk, CAT(base, f->off, uint8_t), 32);
        break;
    case T_MAP:
        pack_shape(pk, f->sub, CAT(base, f->off, char));
        break;
    default:
        pack_array(pk, f, base);
        break;
    }
}

static void pack_shape_fields(msgpack_packer *pk, const shape *s, const void *base) {
    for (size_t i = 0; i < s->n; i++) {
        const field *f = &s->fields[i];
        if (is_default(f, base))
            continue;
        pack_str(pk, (hsq_str){f->name, f->nlen});
        pack_value(pk, f, base);
    }
}

int hsq_wire_encode(const hsq_wire_msg *msg, hsq_wbuf *out) {
    char err[160] = "";
    ctx c = {.decoding = false, .err = err, .errcap = sizeof(err)};
    if (!msg || !out)
        return HSQ_EINVAL;
    if (msg->kind != HSQ_KIND_REQUEST && msg->kind != HSQ_KIND_REPLY && msg->kind != HSQ_KIND_ERROR)
        return HSQ_EINVAL;
    const shape *s = body_shape(msg->kind, msg->op);
    if (!s || (msg->op == HSQ_OP_NONE && msg->kind != HSQ_KIND_ERROR))
        return HSQ_EINVAL;
    const void *base =
        msg->kind == HSQ_KIND_REQUEST ? (const void *)&msg->req : (const void *)&msg->rep;
    c.root = s->name;
    int rc = check_shape(&c, s, base, 0);
    if (rc)
        return rc;

    size_t start = out->len;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, wbuf_write);
    msgpack_pack_map(&pk, 3 + count_fields(s, base));
    pack_cstr(&pk, "v");
    msgpack_pack_uint32(&pk, HSQ_WIRE_VERSION);
    pack_cstr(&pk, "rid");
    msgpack_pack_uint64(&pk, msg->rid);
    pack_cstr(&pk, msg->kind == HSQ_KIND_REQUEST ? "op" : "re");
    pack_cstr(&pk, msg->op == HSQ_OP_NONE ? "" : op_names[msg->op]);
    pack_shape_fields(&pk, s, base);
    if (out->len - start > HSQ_MAX_META_BYTES) {
        /* The peer would refuse it: undo, and say "too large" so the caller
         * can send less (a shorter list page, a smaller lease batch). */
        out->len = start;
        return HSQ_ETOOLARGE;
    }
    return 0;
}

static int raw_public_encode(const shape *s, size_t max, const void *in, hsq_wbuf *out) {
    char err[160] = "";
    ctx c = {.decoding = false, .err = err, .errcap = sizeof(err)};
    if (!in || !out)
        return HSQ_EINVAL;
    c.root = s->name;
    int rc = check_shape(&c, s, in, 0);
    if (rc)
        return rc;
    size_t start = out->len;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, wbuf_write);
    pack_shape(&pk, s, in);
    if (out->len - start > max) {
        out->len = start;
        return HSQ_EINVAL;
    }
    return 0;
}

int hsq_wire_settings_encode(const hsq_wire_settings *s, hsq_wbuf *out) {
    return raw_public_encode(&settings_s, HSQ_MAX_SETTINGS_BYTES, s, out);
}

int hsq_wire_info_encode(const hsq_wire_info *in, hsq_wbuf *out) {
    return raw_public_encode(&info_s, HSQ_MAX_INFO_BYTES, in, out);
}

/* Longest prefix of s (at most max bytes) that ends on a UTF-8 boundary. */
static size_t utf8_prefix(const char *s, size_t len, size_t max) {
    if (len <= max)
        return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

int hsq_wire_encode_error(hsq_op op, uint64_t rid, int code, const char *message, hsq_wbuf *out) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof(m));
    m.kind = HSQ_KIND_ERROR;
    m.op = op;
    m.rid = rid;
    m.rep.error.code = code ? code : HSQ_EINTERNAL;
    /* An error path must still produce a reply: a missing or invalid message
     * becomes the code's default text, an over-long one is cut. */
    hsq_str msgv = hsq_str_c(message ? message : hsq_strerror(m.rep.error.code));
    if (!hsq_utf8_valid(msgv.ptr, msgv.len))
        msgv = hsq_str_c(hsq_strerror(m.rep.error.code));
    msgv.len = utf8_prefix(msgv.ptr, msgv.len, HSQ_MAX_ERRMSG_LEN);
    m.rep.error.message = msgv;
    return hsq_wire_encode(&m, out);
}
