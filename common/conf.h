/* conf.h - the config file format shared by hsqd and hsq-worker.
 *
 * A file is lines of "key = value"; '#' starts a comment; blank lines are
 * ignored; keys are [a-z0-9_.]+; values run to the end of the line with
 * surrounding blanks trimmed (no quoting). Every program describes its own
 * keys in a table of hsq_conf_item, and the same table serves the file,
 * "--set key=value" overrides on the command line and the README reference.
 * An unknown key or a bad value is an error naming the file and line.
 */
#ifndef HSQ_COMMON_CONF_H
#define HSQ_COMMON_CONF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    HSQ_CONF_STR,      /* char * (malloc'd copy; freed by hsq_conf_free) */
    HSQ_CONF_U64,      /* uint64_t, plain integer */
    HSQ_CONF_SIZE,     /* uint64_t bytes; suffixes k, K, KiB, M, MiB, G, GiB (powers of 1024) */
    HSQ_CONF_MS,       /* uint64_t milliseconds; suffixes ms, s, m, h, d (no suffix = ms) */
    HSQ_CONF_BOOL      /* int; true/false/yes/no/on/off/1/0 */
} hsq_conf_type;

typedef struct {
    const char *key;
    hsq_conf_type type;
    size_t offset;     /* offsetof the field in the program's config struct */
    uint64_t min, max; /* numeric bounds, inclusive (ignored for STR/BOOL) */
    const char *help;  /* one line for --help and the README */
} hsq_conf_item;

/* Apply one "key=value" (or key, value) to cfg. Errors: HSQ_EINVAL with a
 * message in err (unknown key, bad value, out of range). */
int hsq_conf_set(const hsq_conf_item *items, size_t n, void *cfg, const char *key,
                 const char *value, char *err, size_t errlen);

/* Parse a whole file. Errors: -errno (cannot read), HSQ_EINVAL (message in
 * err: "path:line: ..."). */
int hsq_conf_load(const hsq_conf_item *items, size_t n, void *cfg, const char *path, char *err,
                  size_t errlen);

/* Free the STR fields of cfg. */
void hsq_conf_free(const hsq_conf_item *items, size_t n, void *cfg);

/* Set a STR field to a malloc'd copy of value (used for defaults). */
void hsq_conf_set_str(char **field, const char *value);

/* Print "  key  (type)  help" lines to f (a FILE *), for --help. */
void hsq_conf_usage(const hsq_conf_item *items, size_t n, void *f);

/* Helpers, exposed for tests. Errors: HSQ_EINVAL. */
int hsq_conf_parse_size(const char *s, uint64_t *out);
int hsq_conf_parse_ms(const char *s, uint64_t *out);

#ifdef __cplusplus
}
#endif

#endif
