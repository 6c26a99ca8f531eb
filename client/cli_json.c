#include "client/cli_json.h"

#include "schemas/wire.h"

#include <assert.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

void hsq_cli_json_init(hsq_cli_json *j, FILE *f) {
    memset(j, 0, sizeof *j);
    j->f = f;
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
            size_t n = hsq_utf8_seq(s + i, len - i);
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
