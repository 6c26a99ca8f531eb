/* cli_args.h - command-line parsing for the `hsq` program.
 *
 * Parsing is separate from execution so that tests can check every flag and
 * every usage error without a daemon. hsq_cli_parse() turns argv into one
 * hsq_cli_cmd; strings in it point into argv and live as long as argv does.
 * The exit-code table is here too, because it is part of the CLI's contract
 * (docs/cli.md).
 */
#ifndef HSQ_CLIENT_CLI_ARGS_H
#define HSQ_CLIENT_CLI_ARGS_H

#include "schemas/wire.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exit codes of `hsq`. */
enum {
    HSQ_CLI_EXIT_OK = 0,
    HSQ_CLI_EXIT_REFUSED = 1,  /* the daemon answered with an error (or a corrupt result) */
    HSQ_CLI_EXIT_USAGE = 2,    /* bad command line */
    HSQ_CLI_EXIT_NOTFOUND = 3, /* no such task (or not this user's) */
    HSQ_CLI_EXIT_UNREACH = 4,  /* timeout, daemon unreachable or unavailable */
    HSQ_CLI_EXIT_IO = 5,       /* local I/O: reading photos, writing results */
    HSQ_CLI_EXIT_TASKFAIL = 6  /* wait ended with the task failed, cancelled or expired */
};

typedef enum {
    HSQ_CLI_NONE = 0,
    HSQ_CLI_HELP, /* print help (topic: a command name or NULL) and exit 0 */
    HSQ_CLI_VERSION,
    HSQ_CLI_SUBMIT,
    HSQ_CLI_STATUS,
    HSQ_CLI_WAIT,
    HSQ_CLI_RESULT,
    HSQ_CLI_CANCEL,
    HSQ_CLI_LIST,
    HSQ_CLI_STATS,
    HSQ_CLI_REQUEUE,
    HSQ_CLI_TOP,   /* live view of stats; --once prints one frame */
    HSQ_CLI_KEYGEN, /* write a CURVE key pair; needs no daemon */
    HSQ_CLI_PURGE,       /* one retention pass (daemon, or the data dir directly) */
    HSQ_CLI_ERASE_USER,  /* erase everything of one user; prints the receipt */
    HSQ_CLI_EXPORT_USER, /* one tar archive of a user's tasks and images */
    HSQ_CLI_FSCK,        /* cross-check records and blobs on a data dir; no daemon */
    HSQ_CLI_CREDITS      /* credits grant USER N | credits show USER (operators) */
} hsq_cli_verb;

#define HSQ_CLI_DEFAULT_WAIT_S 300
#define HSQ_CLI_DEFAULT_WIDTH 1024
#define HSQ_CLI_DEFAULT_HEIGHT 1280

typedef struct {
    hsq_cli_verb verb;
    /* global options */
    const char *endpoint; /* NULL: library default ($HSQ_ENDPOINT or the ipc default) */
    int json;
    int timeout_ms;    /* 0: library default */
    const char *topic; /* HSQ_CLI_HELP: command to describe, NULL = overview */
    /* command arguments */
    uint64_t task;
    const char *user; /* NULL = not given */
    const char *key;
    const char *prompt;
    hsq_prio prio;
    size_t n_outputs;
    hsq_wire_outspec outputs[HSQ_MAX_OUTPUTS];
    size_t n_photos;
    const char *photos[HSQ_MAX_INPUTS];
    const char *clothing;
    const char *background; /* --background-photo: the reference backdrop file */
    hsq_wire_settings settings; /* --background SPEC, --style, --dpi */
    uint32_t keep_uploads_s;    /* --keep-uploads DURATION (0 = policy) */
    uint32_t keep_outputs_s;    /* --keep-outputs DURATION */
    uint64_t wait_s;    /* wait: total time to wait */
    hsq_state since;    /* wait: HSQ_STATE_NONE = until terminal */
    const char *outdir; /* result */
    uint32_t limit;     /* list: 0 = daemon default */
    uint64_t before;    /* list: 0 = newest */
    int once;           /* top: one frame, then exit */
    const char *prefix; /* keygen: files PREFIX.key and PREFIX.pub */
    /* retention and privacy */
    int dry_run;          /* purge */
    int repair;           /* fsck */
    const char *data_dir; /* purge (offline fallback), fsck (required) */
    const char *blob_dir; /* default <data_dir>/blobs */
    const char *config;   /* hsqd's config file: data_dir, blob_dir, retention */
    const char *outfile;  /* export-user -o FILE */
    int64_t grant;        /* credits grant: amount (negative takes back); show: 0 */
} hsq_cli_cmd;

/* Parse argv into *cmd. On a usage error returns HSQ_EINVAL with a one-line
 * explanation in err (NUL-terminated, truncated to errlen). Uses getopt_long,
 * so it is not reentrant; it may be called again (it resets getopt). */
int hsq_cli_parse(int argc, char **argv, hsq_cli_cmd *cmd, char *err, size_t errlen);

/* Write the overview (topic NULL) or a command's help to f. Returns 0, or
 * HSQ_EINVAL for an unknown topic (nothing written). */
int hsq_cli_help(FILE *f, const char *topic);

/* The exit code for a library error code (see the enum above). */
int hsq_cli_exit_code(int err);

/* Small parsers, exposed for tests. Each returns 0 or HSQ_EINVAL. */
int hsq_cli_parse_u64(const char *s, uint64_t *out);        /* decimal, no sign, no junk */
/* "WxH", a preset (portrait 1024x1280, square 1024x1024, passport 600x600),
 * either with ":jpeg|png". */
int hsq_cli_parse_size(const char *s, hsq_wire_outspec *o);
/* --background SPEC: solid:#RRGGBB, gradient:#RRGGBB:#RRGGBB, vignette:#RRGGBB,
 * reference[:BLUR] (BLUR 0..64 px). */
int hsq_cli_parse_background(const char *s, hsq_wire_background *o);
/* --style NAME:retouch,tone,sharpen,clothing, each 0..100; o->name views s. */
int hsq_cli_parse_style(const char *s, hsq_wire_style *o);
int hsq_cli_parse_state(const char *s, hsq_state *out);     /* "queued" ... "expired" */
int hsq_cli_parse_prio(const char *s, hsq_prio *out);       /* "high" | "normal" | "low" */
int hsq_cli_parse_format(const char *s, hsq_fmt *out);      /* "jpeg" ("jpg") | "png" */

#ifdef __cplusplus
}
#endif

#endif
