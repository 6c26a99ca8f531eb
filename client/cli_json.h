/* cli_json.h - a minimal streaming JSON writer for `hsq --json`.
 *
 * Just enough for the CLI's flat objects: objects, arrays, strings, integers,
 * booleans and null, with commas placed automatically. Strings are escaped
 * per RFC 8259; bytes that are not valid UTF-8 (user ids and messages come
 * from the daemon unchecked) are written as U+FFFD so the output always
 * parses. Nesting deeper than HSQ_CLI_JSON_DEPTH is a programmer error.
 */
#ifndef HSQ_CLIENT_CLI_JSON_H
#define HSQ_CLIENT_CLI_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HSQ_CLI_JSON_DEPTH 8

typedef struct {
    FILE *f;
    int depth;
    unsigned char need_comma[HSQ_CLI_JSON_DEPTH + 1];
} hsq_cli_json;

void hsq_cli_json_init(hsq_cli_json *j, FILE *f);

/* key is the member name inside an object, NULL inside an array or at the top. */
void hsq_cli_json_open(hsq_cli_json *j, const char *key, char bracket); /* '{' or '[' */
void hsq_cli_json_close(hsq_cli_json *j, char bracket); /* '}' or ']'; newline at top */
void hsq_cli_json_strn(hsq_cli_json *j, const char *key, const char *s, size_t len);
void hsq_cli_json_str(hsq_cli_json *j, const char *key, const char *s); /* NULL -> null */
void hsq_cli_json_u64(hsq_cli_json *j, const char *key, uint64_t v);
void hsq_cli_json_i64(hsq_cli_json *j, const char *key, int64_t v);
void hsq_cli_json_bool(hsq_cli_json *j, const char *key, int v);
void hsq_cli_json_null(hsq_cli_json *j, const char *key);

/* Write s (len bytes) as a quoted JSON string. */
void hsq_cli_json_escape(FILE *f, const char *s, size_t len);

#ifdef __cplusplus
}
#endif

/* UTC ISO-8601 with milliseconds ("2026-11-29T03:00:00.000Z") for a time in
 * ms since the epoch, or "-" for 0/negative (not set), into buf. */
void hsq_cli_iso_time(int64_t ms, char *buf, size_t len);

#endif
