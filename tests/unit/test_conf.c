/* test_conf.c - config values, files and --set overrides. */
#include "common/conf.h"
#include "schemas/err.h"
#include "test.h"

#include <errno.h>
#include <stddef.h>
#include <unistd.h>

typedef struct {
    char *name;
    char *endpoint;
    uint64_t workers;
    uint64_t max_image;
    uint64_t lease_ms;
    int verbose;
} cfg_t;

static const hsq_conf_item items[] = {
    {"name", HSQ_CONF_STR, offsetof(cfg_t, name), 0, 0, "instance name"},
    {"endpoint", HSQ_CONF_STR, offsetof(cfg_t, endpoint), 0, 0, "ZMQ endpoint"},
    {"workers", HSQ_CONF_U64, offsetof(cfg_t, workers), 1, 100, "worker count"},
    {"limits.max_image", HSQ_CONF_SIZE, offsetof(cfg_t, max_image), 1024, 64ull << 20,
     "largest accepted image"},
    {"lease_ms", HSQ_CONF_MS, offsetof(cfg_t, lease_ms), 1000, UINT64_MAX, "lease length"},
    {"verbose", HSQ_CONF_BOOL, offsetof(cfg_t, verbose), 0, 0, "log more"},
};
#define NITEMS (sizeof items / sizeof items[0])

static void test_sizes(void) {
    static const struct {
        const char *s;
        int ok;
        uint64_t v;
    } cases[] = {
        {"0", 1, 0},
        {"1", 1, 1},
        {"4096", 1, 4096},
        {"1k", 1, 1024},
        {"1K", 1, 1024},
        {"2KiB", 1, 2048},
        {"2kiB", 1, 2048},
        {"64M", 1, 64ull << 20},
        {"64m", 1, 64ull << 20},
        {"64MiB", 1, 64ull << 20},
        {"64miB", 1, 64ull << 20},
        {"3G", 1, 3ull << 30},
        {"3g", 1, 3ull << 30},
        {"3GiB", 1, 3ull << 30},
        {"0G", 1, 0},
        {"18446744073709551615", 1, UINT64_MAX},
        {"17179869183G", 1, 17179869183ull << 30},
        {"18446744073709551616", 0, 0}, /* 2^64 */
        {"99999999999999999999999", 0, 0},
        {"17179869184G", 0, 0}, /* 2^64 bytes */
        {"18014398509481984K", 0, 0},
        {"", 0, 0},
        {"k", 0, 0},
        {"MiB", 0, 0},
        {"-1", 0, 0},
        {"+1", 0, 0},
        {" 1", 0, 0},
        {"1 K", 0, 0},
        {"1KB", 0, 0},
        {"1MB", 0, 0},
        {"1Ki", 0, 0},
        {"1kib", 0, 0},
        {"1KIB", 0, 0},
        {"1B", 0, 0},
        {"1T", 0, 0},
        {"1.5M", 0, 0},
        {"0x10", 0, 0},
        {"1KK", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t v = 12345;
        int r = hsq_conf_parse_size(cases[i].s, &v);
        if (cases[i].ok && (r != 0 || v != cases[i].v))
            HSQ_FAIL_("parse_size(\"%s\") = %d, %llu", cases[i].s, r, (unsigned long long)v);
        if (!cases[i].ok && (r != HSQ_EINVAL || v != 12345))
            HSQ_FAIL_("parse_size(\"%s\") accepted (%d)", cases[i].s, r);
    }
}

static void test_durations(void) {
    static const struct {
        const char *s;
        int ok;
        uint64_t v;
    } cases[] = {
        {"0", 1, 0},
        {"250", 1, 250},
        {"250ms", 1, 250},
        {"30s", 1, 30000},
        {"5m", 1, 300000},
        {"2h", 1, 7200000},
        {"7d", 1, 604800000},
        {"0d", 1, 0},
        {"18446744073709551615", 1, UINT64_MAX},
        {"18446744073709551615ms", 1, UINT64_MAX},
        {"18446744073709551s", 1, 18446744073709551000ull},
        {"18446744073709552s", 0, 0},
        {"213503982334601d", 0, 0},
        {"18446744073709551616", 0, 0},
        {"", 0, 0},
        {"s", 0, 0},
        {"ms", 0, 0},
        {"5M", 0, 0}, /* minutes are lower-case only */
        {"5S", 0, 0},
        {"5 s", 0, 0},
        {"5s ", 0, 0},
        {"1.5s", 0, 0},
        {"-1s", 0, 0},
        {"5min", 0, 0},
        {"5sec", 0, 0},
        {"1w", 0, 0},
        {"1h30m", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t v = 12345;
        int r = hsq_conf_parse_ms(cases[i].s, &v);
        if (cases[i].ok && (r != 0 || v != cases[i].v))
            HSQ_FAIL_("parse_ms(\"%s\") = %d, %llu", cases[i].s, r, (unsigned long long)v);
        if (!cases[i].ok && (r != HSQ_EINVAL || v != 12345))
            HSQ_FAIL_("parse_ms(\"%s\") accepted (%d)", cases[i].s, r);
    }
}

static void test_set_values(void) {
    static const struct {
        const char *key, *value;
        int ok;
        size_t off;      /* field to check when ok */
        uint64_t v;      /* expected (bools compare as int) */
        const char *msg; /* substring of the error when !ok */
    } cases[] = {
        {"verbose", "true", 1, offsetof(cfg_t, verbose), 1, NULL},
        {"verbose", "false", 1, offsetof(cfg_t, verbose), 0, NULL},
        {"verbose", "yes", 1, offsetof(cfg_t, verbose), 1, NULL},
        {"verbose", "no", 1, offsetof(cfg_t, verbose), 0, NULL},
        {"verbose", "on", 1, offsetof(cfg_t, verbose), 1, NULL},
        {"verbose", "off", 1, offsetof(cfg_t, verbose), 0, NULL},
        {"verbose", "1", 1, offsetof(cfg_t, verbose), 1, NULL},
        {"verbose", "0", 1, offsetof(cfg_t, verbose), 0, NULL},
        {"verbose", "TRUE", 1, offsetof(cfg_t, verbose), 1, NULL},
        {"verbose", "Off", 1, offsetof(cfg_t, verbose), 0, NULL},
        {"verbose", "2", 0, 0, 0, "expected true/false"},
        {"verbose", "y", 0, 0, 0, "expected true/false"},
        {"verbose", "", 0, 0, 0, "expected true/false"},
        {"verbose", "truee", 0, 0, 0, "expected true/false"},
        {"workers", "1", 1, offsetof(cfg_t, workers), 1, NULL},
        {"workers", "100", 1, offsetof(cfg_t, workers), 100, NULL},
        {"workers", " 7 ", 1, offsetof(cfg_t, workers), 7, NULL}, /* trimmed */
        {"workers", "0", 0, 0, 0, "must be between 1 and 100"},
        {"workers", "101", 0, 0, 0, "must be between 1 and 100"},
        {"workers", "1k", 0, 0, 0, "expected a whole number"},
        {"workers", "-3", 0, 0, 0, "expected a whole number"},
        {"workers", "", 0, 0, 0, "expected a whole number"},
        {"limits.max_image", "1KiB", 1, offsetof(cfg_t, max_image), 1024, NULL},
        {"limits.max_image", "64MiB", 1, offsetof(cfg_t, max_image), 64ull << 20, NULL},
        {"limits.max_image", "1023", 0, 0, 0, "must be between 1KiB and 64MiB"},
        {"limits.max_image", "65M", 0, 0, 0, "must be between 1KiB and 64MiB"},
        {"limits.max_image", "64MB", 0, 0, 0, "expected a size like 64MiB"},
        {"lease_ms", "30s", 1, offsetof(cfg_t, lease_ms), 30000, NULL},
        {"lease_ms", "1000", 1, offsetof(cfg_t, lease_ms), 1000, NULL},
        {"lease_ms", "7d", 1, offsetof(cfg_t, lease_ms), 604800000, NULL},
        {"lease_ms", "999ms", 0, 0, 0, "must be at least 1s"},
        {"lease_ms", "abc", 0, 0, 0, "expected a duration like 30s"},
        {"leese_ms", "30s", 0, 0, 0, "unknown key 'leese_ms' (did you mean 'lease_ms'?)"},
        {"zzz", "1", 0, 0, 0, "unknown key 'zzz'"},
    };
    cfg_t cfg = {0};
    char err[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        int r = hsq_conf_set(items, NITEMS, &cfg, cases[i].key, cases[i].value, err, sizeof err);
        if (cases[i].ok) {
            if (r != 0)
                HSQ_FAIL_("set %s=%s: %d %s", cases[i].key, cases[i].value, r, err);
            const char *f = (const char *)&cfg + cases[i].off;
            uint64_t got;
            if (cases[i].off == offsetof(cfg_t, verbose))
                got = (uint64_t) * (const int *)(const void *)f;
            else
                got = *(const uint64_t *)(const void *)f;
            HSQ_ASSERT_U64_EQ(got, cases[i].v);
        } else {
            if (r != HSQ_EINVAL || strstr(err, cases[i].msg) == NULL)
                HSQ_FAIL_("set %s=%s: %d \"%s\"", cases[i].key, cases[i].value, r, err);
            HSQ_ASSERT(strncmp(err, "--set ", 6) == 0);
        }
    }
    /* The brief's example message, exactly. */
    HSQ_ASSERT_EQ(hsq_conf_set(items, NITEMS, &cfg, "lease_ms=abc", NULL, err, sizeof err),
                  HSQ_EINVAL);
    HSQ_ASSERT(strncmp(err, "--set lease_ms=abc: expected a duration like 30s", 48) == 0);
    /* The single-argument form. */
    HSQ_OK(hsq_conf_set(items, NITEMS, &cfg, "workers=42", NULL, err, sizeof err));
    HSQ_ASSERT_U64_EQ(cfg.workers, 42);
    HSQ_OK(hsq_conf_set(items, NITEMS, &cfg, "name = a=b", NULL, err, sizeof err));
    HSQ_ASSERT_STR_EQ(cfg.name, "a=b"); /* split at the first '=' */
    HSQ_ASSERT_EQ(hsq_conf_set(items, NITEMS, &cfg, "workers", NULL, err, sizeof err), HSQ_EINVAL);
    HSQ_ASSERT_STR_EQ(err, "--set workers: expected key=value");
    /* A NULL or zero-length err is fine. */
    HSQ_ASSERT_EQ(hsq_conf_set(items, NITEMS, &cfg, "workers", "x", NULL, 0), HSQ_EINVAL);
    HSQ_ASSERT_U64_EQ(cfg.workers, 42); /* a failed set changes nothing */
    hsq_conf_free(items, NITEMS, &cfg);
}

static void test_strings(void) {
    cfg_t cfg = {0};
    char err[128];
    hsq_conf_set_str(&cfg.name, "default");
    HSQ_ASSERT_STR_EQ(cfg.name, "default");
    HSQ_OK(hsq_conf_set(items, NITEMS, &cfg, "name", "first", err, sizeof err));
    HSQ_OK(hsq_conf_set(items, NITEMS, &cfg, "name", "second", err, sizeof err));
    HSQ_ASSERT_STR_EQ(cfg.name, "second"); /* old copies freed: ASan would see a leak */
    HSQ_OK(hsq_conf_set(items, NITEMS, &cfg, "endpoint", "", err, sizeof err));
    HSQ_ASSERT_STR_EQ(cfg.endpoint, "");
    hsq_conf_set_str(&cfg.endpoint, NULL);
    HSQ_ASSERT(cfg.endpoint == NULL);
    hsq_conf_free(items, NITEMS, &cfg);
    HSQ_ASSERT(cfg.name == NULL);
    hsq_conf_free(items, NITEMS, &cfg); /* twice is harmless */
}

static char path[64];

static void write_file(const char *text, size_t n) {
    strcpy(path, "/tmp/hsq-conf-XXXXXX");
    int fd = mkstemp(path);
    HSQ_ASSERT(fd >= 0);
    HSQ_ASSERT_EQ(write(fd, text, n), (long long)n);
    close(fd);
}

/* Load text[0..n); returns the result and leaves the message in err. */
static int load_n(const char *text, size_t n, cfg_t *cfg, char *err, size_t errlen) {
    write_file(text, n);
    int r = hsq_conf_load(items, NITEMS, cfg, path, err, errlen);
    unlink(path);
    return r;
}

static int load(const char *text, cfg_t *cfg, char *err, size_t errlen) {
    return load_n(text, strlen(text), cfg, err, errlen);
}

static void expect_error_n(const char *text, size_t n, unsigned line, const char *msg) {
    cfg_t cfg = {0};
    char err[512], want[128];
    HSQ_ASSERT_EQ(load_n(text, n, &cfg, err, sizeof err), HSQ_EINVAL);
    snprintf(want, sizeof want, "%s:%u: %s", path, line, msg);
    if (strncmp(err, want, strlen(want)) != 0)
        HSQ_FAIL_("got \"%s\", want prefix \"%s\"", err, want);
    hsq_conf_free(items, NITEMS, &cfg);
}

static void expect_error(const char *text, unsigned line, const char *msg) {
    expect_error_n(text, strlen(text), line, msg);
}

static void test_file(void) {
    cfg_t cfg = {0};
    char err[512];
    hsq_conf_set_str(&cfg.name, "default-name");
    cfg.workers = 4;
    HSQ_OK(load("# hsqd.conf\n"
                "\n"
                "   \t\n"
                "name = alpha   # trailing comment\n"
                "  workers=8\n"
                "lease_ms = 30s\r\n"
                "endpoint = tcp://127.0.0.1:5555\n"
                "\t# indented comment\n"
                "limits.max_image = 16MiB\n"
                "verbose = yes\n"
                "name = beta\n" /* a later line overrides */
                "endpoint = key#with#hash\n"
                "workers = 9", /* no final newline */
                &cfg, err, sizeof err));
    HSQ_ASSERT_STR_EQ(cfg.name, "beta");
    HSQ_ASSERT_STR_EQ(cfg.endpoint, "key#with#hash");
    HSQ_ASSERT_U64_EQ(cfg.workers, 9);
    HSQ_ASSERT_U64_EQ(cfg.lease_ms, 30000);
    HSQ_ASSERT_U64_EQ(cfg.max_image, 16ull << 20);
    HSQ_ASSERT_EQ(cfg.verbose, 1);
    /* --set after the file overrides it. */
    HSQ_OK(hsq_conf_set(items, NITEMS, &cfg, "lease_ms=2m", NULL, err, sizeof err));
    HSQ_ASSERT_U64_EQ(cfg.lease_ms, 120000);
    hsq_conf_free(items, NITEMS, &cfg);

    HSQ_OK(load("", &cfg, err, sizeof err)); /* empty file */

    expect_error("workers = 2\n# ok\n\nleese_ms = 30s\n", 4,
                 "unknown key 'leese_ms' (did you mean 'lease_ms'?)");
    expect_error("name = x\nlease_ms = abc\n", 2, "lease_ms: expected a duration like 30s");
    expect_error("workers = 0\n", 1, "workers: must be between 1 and 100, got '0'");
    expect_error("verbose = maybe\n", 1, "verbose: expected true/false");
    expect_error("\n\njust words\n", 3, "expected 'key = value'");
    expect_error("Name = x\n", 1, "bad key 'Name'");
    expect_error("= x\n", 1, "bad key ''");
    static const char nul[] = "name = x\nname = a\0b\n";
    expect_error_n(nul, sizeof nul - 1, 2, "line holds a NUL byte");

    static char longline[5000];
    memset(longline, 'a', sizeof longline - 1);
    memcpy(longline, "name = ", 7);
    expect_error(longline, 1, "line longer than 4096 bytes");
    /* Exactly the limit is fine. */
    longline[4096] = '\0';
    HSQ_OK(load(longline, &cfg, err, sizeof err));
    HSQ_ASSERT_EQ(strlen(cfg.name), 4096 - 7);
    hsq_conf_free(items, NITEMS, &cfg);

    HSQ_ASSERT_EQ(hsq_conf_load(items, NITEMS, &cfg, "/nonexistent/hsqd.conf", err, sizeof err),
                  -ENOENT);
    HSQ_ASSERT(strstr(err, "/nonexistent/hsqd.conf") != NULL);
}

static void test_usage(void) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    HSQ_ASSERT(f != NULL);
    hsq_conf_usage(items, NITEMS, f);
    fclose(f);
    HSQ_ASSERT(strstr(text, "  lease_ms          (duration)  lease length\n") != NULL);
    HSQ_ASSERT(strstr(text, "  limits.max_image  (size)      largest accepted image\n") != NULL);
    /* Aligned: every help text starts in the same column. */
    size_t col = 0;
    int lines = 0;
    for (char *line = text; *line; lines++) {
        char *nl = strchr(line, '\n');
        HSQ_ASSERT(nl != NULL);
        char *help = strchr(line, ')') + 1;
        while (*help == ' ')
            help++;
        if (col == 0)
            col = (size_t)(help - line);
        HSQ_ASSERT_EQ(help - line, (long long)col);
        line = nl + 1;
    }
    HSQ_ASSERT_EQ(lines, (int)NITEMS);
    free(text);
}

int main(void) {
    test_sizes();
    test_durations();
    test_set_values();
    test_strings();
    test_file();
    test_usage();
    printf("conf: ok\n");
    return 0;
}
