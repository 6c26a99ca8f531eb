/* conf.c - "key = value" config files and --set overrides (see conf.h).
 *
 * A '#' starts a comment only at the start of a line or after a blank, so a
 * value may hold '#' (a Z85 CURVE key does) as long as no blank precedes it.
 * Lines longer than CONF_LINE_MAX are an error rather than silently split.
 * A load that fails part-way leaves the keys before the bad line applied; the
 * caller exits, and hsq_conf_free still frees what was set.
 */
#include "common/conf.h"

#include "common/alloc.h"
#include "schemas/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONF_LINE_MAX 4096

static const char *const type_names[] = {
    [HSQ_CONF_STR] = "string",  [HSQ_CONF_U64] = "integer", [HSQ_CONF_SIZE] = "size",
    [HSQ_CONF_MS] = "duration", [HSQ_CONF_BOOL] = "bool",
};

static const char *type_name(hsq_conf_type t) {
    return (unsigned)t < sizeof type_names / sizeof type_names[0] ? type_names[t] : "?";
}

static void fmt_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fmt_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int is_blank(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Trim blanks from both ends of s[0..*len); returns the new start. */
static const char *trim(const char *s, size_t *len) {
    size_t n = *len;
    while (n > 0 && is_blank(*s)) {
        s++;
        n--;
    }
    while (n > 0 && is_blank(s[n - 1]))
        n--;
    *len = n;
    return s;
}

/* ---- number parsing ---- */

/* Leading decimal digits of s into *v; returns how many, 0 on none or overflow. */
static size_t parse_digits(const char *s, uint64_t *v) {
    uint64_t x = 0;
    size_t i = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return 0;
        x = x * 10 + d;
    }
    *v = x;
    return i;
}

static int parse_u64(const char *s, uint64_t *out) {
    uint64_t v;
    size_t n = parse_digits(s, &v);
    if (n == 0 || s[n] != '\0')
        return HSQ_EINVAL;
    *out = v;
    return 0;
}

typedef struct {
    const char *suffix;
    uint64_t mult;
} unit;

/* Digits then one of units (exact match); no suffix means a multiplier of 1. */
static int parse_with_units(const char *s, const unit *units, size_t nunits, uint64_t *out) {
    uint64_t v;
    size_t n = parse_digits(s, &v);
    if (n == 0)
        return HSQ_EINVAL;
    const char *suf = s + n;
    uint64_t mult = 0;
    if (*suf == '\0') {
        mult = 1;
    } else {
        for (size_t i = 0; i < nunits; i++) {
            if (strcmp(suf, units[i].suffix) == 0) {
                mult = units[i].mult;
                break;
            }
        }
    }
    if (mult == 0 || (v != 0 && v > UINT64_MAX / mult))
        return HSQ_EINVAL;
    *out = v * mult;
    return 0;
}

#define KIB 1024ull
#define MIB (1024ull * KIB)
#define GIB (1024ull * MIB)

static const unit size_units[] = {
    {"k", KIB},   {"K", KIB},   {"kiB", KIB}, {"KiB", KIB}, {"m", MIB},   {"M", MIB},
    {"miB", MIB}, {"MiB", MIB}, {"g", GIB},   {"G", GIB},   {"giB", GIB}, {"GiB", GIB},
};

#define SEC 1000ull
#define MIN (60ull * SEC)
#define HOUR (60ull * MIN)
#define DAY (24ull * HOUR)

static const unit ms_units[] = {
    {"ms", 1}, {"s", SEC}, {"m", MIN}, {"h", HOUR}, {"d", DAY},
};

int hsq_conf_parse_size(const char *s, uint64_t *out) {
    return parse_with_units(s, size_units, sizeof size_units / sizeof size_units[0], out);
}

int hsq_conf_parse_ms(const char *s, uint64_t *out) {
    return parse_with_units(s, ms_units, sizeof ms_units / sizeof ms_units[0], out);
}

static int parse_bool(const char *s, int *out) {
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return HSQ_EINVAL;
}

/* v in the largest unit that divides it exactly ("64MiB", "30s", "1500"). */
static void fmt_value(hsq_conf_type t, uint64_t v, char *out, size_t outlen) {
    const unit *units = NULL;
    size_t n = 0;
    if (t == HSQ_CONF_SIZE) {
        static const unit u[] = {{"GiB", GIB}, {"MiB", MIB}, {"KiB", KIB}};
        units = u;
        n = 3;
    } else if (t == HSQ_CONF_MS) {
        static const unit u[] = {{"d", DAY}, {"h", HOUR}, {"m", MIN}, {"s", SEC}, {"ms", 1}};
        units = u;
        n = 5;
    }
    for (size_t i = 0; i < n; i++) {
        if (v != 0 && v % units[i].mult == 0) {
            snprintf(out, outlen, "%llu%s", (unsigned long long)(v / units[i].mult),
                     units[i].suffix);
            return;
        }
    }
    snprintf(out, outlen, "%llu", (unsigned long long)v);
}

/* ---- applying one value ---- */

/* Set the item's field in cfg from value; on failure writes a message without the
 * key or value ("expected a duration like 30s") into msg. */
static int apply(const hsq_conf_item *it, void *cfg, const char *value, char *msg, size_t msglen) {
    char *field = (char *)cfg + it->offset;
    uint64_t v = 0;
    int r = 0;

    switch (it->type) {
    case HSQ_CONF_STR:
        hsq_conf_set_str((char **)(void *)field, value);
        return 0;
    case HSQ_CONF_BOOL: {
        int b;
        if (parse_bool(value, &b) < 0) {
            fmt_err(msg, msglen, "expected true/false, yes/no, on/off or 1/0");
            return HSQ_EINVAL;
        }
        *(int *)(void *)field = b;
        return 0;
    }
    case HSQ_CONF_U64:
        r = parse_u64(value, &v);
        if (r < 0)
            fmt_err(msg, msglen, "expected a whole number like 42");
        break;
    case HSQ_CONF_SIZE:
        r = hsq_conf_parse_size(value, &v);
        if (r < 0)
            fmt_err(msg, msglen, "expected a size like 64MiB (units k, M, G; powers of 1024)");
        break;
    case HSQ_CONF_MS:
        r = hsq_conf_parse_ms(value, &v);
        if (r < 0)
            fmt_err(msg, msglen, "expected a duration like 30s (units ms, s, m, h, d)");
        break;
    default:
        fmt_err(msg, msglen, "bad type in the config table");
        return HSQ_EINVAL;
    }
    if (r < 0)
        return r;
    if (v < it->min || v > it->max) {
        char lo[32], hi[32];
        fmt_value(it->type, it->min, lo, sizeof lo);
        fmt_value(it->type, it->max, hi, sizeof hi);
        if (it->max == UINT64_MAX)
            fmt_err(msg, msglen, "must be at least %s", lo);
        else if (it->min == 0)
            fmt_err(msg, msglen, "must be at most %s", hi);
        else
            fmt_err(msg, msglen, "must be between %s and %s", lo, hi);
        return HSQ_EINVAL;
    }
    *(uint64_t *)(void *)field = v;
    return 0;
}

static const hsq_conf_item *find(const hsq_conf_item *items, size_t n, const char *key) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(items[i].key, key) == 0)
            return &items[i];
    return NULL;
}

/* Edit distance of a and b, or 3 when it is at least 3 (only close ones matter). */
static size_t distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64 || (la > lb ? la - lb : lb - la) >= 3)
        return 3;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb] < 3 ? row[lb] : 3;
}

static void unknown_key(const hsq_conf_item *items, size_t n, const char *key, char *msg,
                        size_t msglen) {
    const char *best = NULL;
    size_t bestd = 3;
    for (size_t i = 0; i < n; i++) {
        size_t d = distance(key, items[i].key);
        if (d < bestd) {
            bestd = d;
            best = items[i].key;
        }
    }
    if (best)
        fmt_err(msg, msglen, "unknown key '%.64s' (did you mean '%s'?)", key, best);
    else
        fmt_err(msg, msglen, "unknown key '%.64s'", key);
}

int hsq_conf_set(const hsq_conf_item *items, size_t n, void *cfg, const char *key,
                 const char *value, char *err, size_t errlen) {
    char msg[256];
    char *k = NULL, *v = NULL;
    int r = HSQ_EINVAL;

    /* Either ("key=value", NULL) or ("key", "value"); the message quotes what
     * the user typed. */
    const char *arg = key;
    const char *eq = value ? NULL : strchr(key, '=');
    if (!value && !eq) {
        fmt_err(err, errlen, "--set %.64s: expected key=value", key);
        return HSQ_EINVAL;
    }
    size_t klen = value ? strlen(key) : (size_t)(eq - key);
    const char *ks = trim(key, &klen);
    k = hsq_xstrndup(ks, klen);
    const char *vraw = value ? value : eq + 1;
    size_t vlen = strlen(vraw);
    const char *vs = trim(vraw, &vlen);
    v = hsq_xstrndup(vs, vlen);

    const hsq_conf_item *it = find(items, n, k);
    if (!it) {
        unknown_key(items, n, k, msg, sizeof msg);
        r = HSQ_EINVAL;
    } else {
        r = apply(it, cfg, v, msg, sizeof msg);
    }
    if (r < 0) {
        if (value)
            fmt_err(err, errlen, "--set %.64s=%.64s: %s", arg, value, msg);
        else
            fmt_err(err, errlen, "--set %.128s: %s", arg, msg);
    }
    free(k);
    free(v);
    return r;
}

static int key_chars_ok(const char *s, size_t len) {
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

/* Handle one line (NUL-terminated, modified in place). */
static int load_line(const hsq_conf_item *items, size_t n, void *cfg, char *line, char *msg,
                     size_t msglen) {
    for (char *p = line; *p; p++) {
        if (*p == '#' && (p == line || is_blank(p[-1]))) {
            *p = '\0';
            break;
        }
    }
    size_t len = strlen(line);
    const char *s = trim(line, &len);
    if (len == 0)
        return 0;
    const char *eq = memchr(s, '=', len);
    if (!eq) {
        fmt_err(msg, msglen, "expected 'key = value', got '%.64s'", s);
        return HSQ_EINVAL;
    }
    size_t klen = (size_t)(eq - s);
    const char *k = trim(s, &klen);
    if (!key_chars_ok(k, klen)) {
        fmt_err(msg, msglen, "bad key '%.*s' (keys are lower-case letters, digits, '_' and '.')",
                (int)(klen > 64 ? 64 : klen), k);
        return HSQ_EINVAL;
    }
    ((char *)k)[klen] = '\0';
    size_t vlen = len - (size_t)(eq + 1 - s);
    char *v = (char *)trim(eq + 1, &vlen);
    v[vlen] = '\0';

    const hsq_conf_item *it = find(items, n, k);
    if (!it) {
        unknown_key(items, n, k, msg, msglen);
        return HSQ_EINVAL;
    }
    char why[192];
    if (apply(it, cfg, v, why, sizeof why) < 0) {
        fmt_err(msg, msglen, "%s: %s, got '%.64s'", k, why, v);
        return HSQ_EINVAL;
    }
    return 0;
}

int hsq_conf_load(const hsq_conf_item *items, size_t n, void *cfg, const char *path, char *err,
                  size_t errlen) {
    FILE *f = fopen(path, "re");
    if (!f) {
        int r = -errno;
        fmt_err(err, errlen, "%s: %s", path, strerror(errno));
        return r;
    }
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    int r = 0;
    char msg[320];
    for (;;) {
        errno = 0;
        ssize_t got = getline(&line, &cap, f);
        if (got < 0) {
            if (ferror(f)) {
                r = errno ? -errno : -EIO;
                fmt_err(err, errlen, "%s: %s", path, strerror(-r));
            }
            break;
        }
        lineno++;
        size_t len = (size_t)got;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        if (len > CONF_LINE_MAX) {
            fmt_err(err, errlen, "%s:%u: line longer than %d bytes", path, lineno, CONF_LINE_MAX);
            r = HSQ_EINVAL;
            break;
        }
        if (memchr(line, '\0', len)) {
            fmt_err(err, errlen, "%s:%u: line holds a NUL byte", path, lineno);
            r = HSQ_EINVAL;
            break;
        }
        if (load_line(items, n, cfg, line, msg, sizeof msg) < 0) {
            fmt_err(err, errlen, "%s:%u: %s", path, lineno, msg);
            r = HSQ_EINVAL;
            break;
        }
    }
    free(line);
    fclose(f);
    return r;
}

void hsq_conf_free(const hsq_conf_item *items, size_t n, void *cfg) {
    for (size_t i = 0; i < n; i++) {
        if (items[i].type != HSQ_CONF_STR)
            continue;
        char **field = (char **)(void *)((char *)cfg + items[i].offset);
        free(*field);
        *field = NULL;
    }
}

void hsq_conf_set_str(char **field, const char *value) {
    char *copy = value ? hsq_xstrndup(value, strlen(value)) : NULL;
    free(*field);
    *field = copy;
}

void hsq_conf_usage(const hsq_conf_item *items, size_t n, void *f) {
    int kw = 0, tw = 0;
    for (size_t i = 0; i < n; i++) {
        int kl = (int)strlen(items[i].key);
        int tl = (int)strlen(type_name(items[i].type)) + 2;
        kw = kl > kw ? kl : kw;
        tw = tl > tw ? tl : tw;
    }
    for (size_t i = 0; i < n; i++) {
        char type[16];
        snprintf(type, sizeof type, "(%s)", type_name(items[i].type));
        fprintf((FILE *)f, "  %-*s  %-*s  %s\n", kw, items[i].key, tw, type,
                items[i].help ? items[i].help : "");
    }
}
