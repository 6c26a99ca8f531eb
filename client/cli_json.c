#include "client/cli_json.h"

#include <assert.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

void hsq_cli_json_init(hsq_cli_json *j, FILE *f) {
    memset(j, 0, sizeof *j);
    j->f = f;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid.
 * Rejects overlong forms, surrogates and code points above U+10FFFF. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

int hsq_cli_utf8_valid(const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_len(s + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

void hsq_cli_json_escape(FILE *f, const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    fputc('"', f);
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
            i++;
        } else if (c < 0x20) {
            switch (c) {
            case '\n':
                fputs("\\n", f);
                break;
            case '\r':
                fputs("\\r", f);
                break;
            case '\t':
                fputs("\\t", f);
                break;
            case '\b':
                fputs("\\b", f);
                break;
            case '\f':
                fputs("\\f", f);
                break;
            default:
                fprintf(f, "\\u%04x", c);
            }
            i++;
        } else if (c == 0x7f) {
            fputs("\\u007f", f);
            i++;
        } else {
            size_t n = utf8_len(s + i, len - i);
            if (n == 0) {
                fputs("\\ufffd", f);
                i++;
            } else {
                fwrite(s + i, 1, n, f);
                i += n;
            }
        }
    }
    fputc('"', f);
}

static void member(hsq_cli_json *j, const char *key) {
    if (j->need_comma[j->depth])
        fputc(',', j->f);
    j->need_comma[j->depth] = 1;
    if (key) {
        hsq_cli_json_escape(j->f, key, strlen(key));
        fputc(':', j->f);
    }
}

void hsq_cli_json_open(hsq_cli_json *j, const char *key, char bracket) {
    assert(j->depth < HSQ_CLI_JSON_DEPTH);
    member(j, key);
    fputc(bracket, j->f);
    j->need_comma[++j->depth] = 0;
}

void hsq_cli_json_close(hsq_cli_json *j, char bracket) {
    assert(j->depth > 0);
    j->depth--;
    fputc(bracket, j->f);
    if (j->depth == 0) {
        fputc('\n', j->f);
        j->need_comma[0] = 0;
    }
}

void hsq_cli_json_strn(hsq_cli_json *j, const char *key, const char *s, size_t len) {
    member(j, key);
    hsq_cli_json_escape(j->f, s ? s : "", s ? len : 0);
}

void hsq_cli_json_str(hsq_cli_json *j, const char *key, const char *s) {
    if (!s) {
        hsq_cli_json_null(j, key);
        return;
    }
    hsq_cli_json_strn(j, key, s, strlen(s));
}

void hsq_cli_json_u64(hsq_cli_json *j, const char *key, uint64_t v) {
    member(j, key);
    fprintf(j->f, "%" PRIu64, v);
}

void hsq_cli_json_i64(hsq_cli_json *j, const char *key, int64_t v) {
    member(j, key);
    fprintf(j->f, "%" PRId64, v);
}

void hsq_cli_json_bool(hsq_cli_json *j, const char *key, int v) {
    member(j, key);
    fputs(v ? "true" : "false", j->f);
}

void hsq_cli_json_null(hsq_cli_json *j, const char *key) {
    member(j, key);
    fputs("null", j->f);
}

void hsq_cli_iso_time(int64_t ms, char *buf, size_t len) {
    if (ms <= 0) {
        snprintf(buf, len, "-");
        return;
    }
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}
