#include "client/cli_args.h"

#include "common/conf.h"

#include "schemas/err.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- help ---- */

static const char overview[] =
    "usage: hsq [-e ENDPOINT] [--json] [--timeout MS] COMMAND [ARGS...]\n"
    "\n"
    "Client for the hsq headshot job daemon (hsqd).\n"
    "\n"
    "Commands:\n"
    "  submit   --user U [options] PHOTO...   queue a headshot job\n"
    "  status   TASK [--user U]               show a task\n"
    "  wait     TASK [--timeout-s N] [--since STATE] [--user U]\n"
    "                                         wait until the task finishes (or changes state)\n"
    "  result   TASK [-o DIR] [--user U]      download a task's outputs\n"
    "  cancel   TASK [--user U]               cancel a task\n"
    "  list     --user U [--limit N] [--before ID]\n"
    "                                         list a user's tasks, newest first\n"
    "  stats                                  queue and worker counters\n"
    "  requeue  TASK                          put a failed or cancelled task back in the queue\n"
    "  top      [--once]                      live view: depth, throughput, workers (q quits)\n"
    "  keygen   [-o PREFIX]                   write a CURVE key pair (PREFIX.key, PREFIX.pub)\n"
    "  purge    [--dry-run] [--data-dir DIR]  delete what the retention policy says is due\n"
    "  erase-user USER [--timeout-s N]        erase every task and image of USER (receipt)\n"
    "  export-user USER -o FILE.tar           one archive of USER's tasks and images\n"
    "  fsck     --data-dir DIR [--repair]     find (and fix) orphan blobs and dangling records\n"
    "  credits  grant USER N | show USER      a user's credit balance; grant (or take back) N\n"
    "  help [COMMAND]                         this text, or one command's options\n"
    "\n"
    "Global options (also accepted after the command):\n"
    "  -e, --endpoint ENDPOINT  hsqd client endpoint (default: $HSQ_ENDPOINT,\n"
    "                           else ipc:///run/hsq/client.sock)\n"
    "      --json               print one JSON object on stdout instead of text\n"
    "      --timeout MS         per-request timeout in milliseconds (default 10000)\n"
    "  -h, --help               show help (after a command: that command's help)\n"
    "      --version            print the version\n"
    "\n"
    "CURVE (tcp:// endpoints): set HSQ_CURVE_SERVERKEY, HSQ_CURVE_PUBLICKEY and\n"
    "HSQ_CURVE_SECRETKEY to Z85 keys (40 characters each).\n"
    "\n"
    "Exit status:\n"
    "  0  success\n"
    "  1  the daemon refused the request (error reply) or sent a corrupt result\n"
    "  2  usage error\n"
    "  3  no such task (or not owned by --user)\n"
    "  4  timeout, daemon unreachable or unavailable\n"
    "  5  local I/O error (reading photos, writing results)\n"
    "  6  wait ended with the task failed, cancelled or expired\n"
    "Errors are printed as \"hsq: <error name>: <message>\" on stderr.\n";

static const struct {
    const char *name;
    const char *text;
} topics[] = {
    {"submit",
     "usage: hsq submit --user U [--key K] [--prio high|normal|low] [--size WxH[:FORMAT]]...\n"
     "                  [--format jpeg|png] [--quality Q] [--prompt TEXT]\n"
     "                  [--clothing FILE] [--background-photo FILE] [--background SPEC]...\n"
     "                  [--style NAME:R,T,S,C]... [--dpi N]\n"
     "                  [--keep-uploads DURATION] [--keep-outputs DURATION] PHOTO...\n"
     "\n"
     "Queue one job: PHOTO files are the portraits (1 to 8 images in all,\n"
     "counting --clothing and --background-photo). Each --size (WxH, or portrait,\n"
     "square, passport; optionally :jpeg|png) adds one output size (default: one\n"
     "1024x1280 jpeg). --format and --quality apply to every output that does not\n"
     "name its own format; --quality (1-100) only to jpeg.\n"
     "--background (up to 4): solid:#RRGGBB, gradient:#TOP:#BOTTOM, vignette:#RRGGBB\n"
     "or reference[:BLUR] (the --background-photo, blurred by BLUR px, 0-64);\n"
     "default: one light-grey studio vignette. --style (up to 4): a name and the\n"
     "strengths 0-100 of retouch, tone, sharpen and clothing colour, e.g.\n"
     "natural:30,50,30,80; default: that one. --dpi (72-1200) is written into the\n"
     "files (passport-size outputs get 300 otherwise). Every background x style x\n"
     "size is one output, 16 at most.\n"
     "--keep-uploads / --keep-outputs ask for shorter retention than the policy\n"
     "(1s: delete the photos as soon as the headshots are ready); never longer.\n"
     "--key makes the submit idempotent: the same user and key return the same task.\n"
     "Prints the task id, its state and whether it was created.\n"},
    {"status",
     "usage: hsq status TASK [--user U]\n\nShow a task. With --user, the task must belong to U.\n"},
    {"wait", "usage: hsq wait TASK [--timeout-s N] [--since STATE] [--user U]\n"
             "\n"
             "Wait until the task is finished (succeeded, failed, cancelled or expired),\n"
             "or with --since STATE until its state is no longer STATE, for at most N\n"
             "seconds (default 300). Prints the task. Exit 6 when it ended failed,\n"
             "cancelled or expired; exit 4 when the time ran out.\n"},
    {"result", "usage: hsq result TASK [-o DIR] [--user U]\n"
               "\n"
               "Download the outputs of a succeeded task into DIR (default .) as\n"
               "DIR/<task>-<i>.jpg or .png, written atomically after checking each\n"
               "output's size and sha256 against the task's metadata. Prints the paths.\n"},
    {"cancel", "usage: hsq cancel TASK [--user U]\n\nCancel a task that has not finished. Prints "
               "the task.\n"},
    {"list", "usage: hsq list --user U [--limit N] [--before ID]\n"
             "\n"
             "List U's tasks, newest first, N per page (1-100, default 20). The last\n"
             "line gives the --before value for the next page.\n"},
    {"stats", "usage: hsq stats\n\nShow queue, task and worker counters.\n"},
    {"requeue",
     "usage: hsq requeue TASK [--user U]\n\nPut a failed or cancelled task back in the queue "
     "(operators). Prints the task.\n"},
    {"top", "usage: hsq top [--once]\n"
            "\n"
            "A live view refreshed once a second: queue depth by class, submitted and\n"
            "completed per second, workers busy and idle, the oldest queued task, failures\n"
            "and dead letters. q or Ctrl-C quits. --once prints one frame (rates averaged\n"
            "since hsqd started) and exits.\n"},
    {"keygen", "usage: hsq keygen [-o PREFIX]\n"
               "\n"
               "Write a new CURVE key pair: PREFIX.key (the secret key, mode 0600) and\n"
               "PREFIX.pub (the public key), each one Z85 line; PREFIX defaults to \"hsq\".\n"
               "Existing files are never overwritten. Give hsqd its .key\n"
               "(curve_secret_key_file) and clients their copy of its .pub; list each\n"
               "client's .pub in hsqd's clients_file with a role. Needs no daemon.\n"},
    {"purge", "usage: hsq purge [--dry-run] [--data-dir DIR] [--blob-dir DIR] [--config FILE]\n"
              "\n"
              "Ask hsqd for one retention pass now: delete the uploads, references, outputs\n"
              "and tombstones whose time has come, cancel tasks past retention_pending.\n"
              "Prints counts and bytes freed. --dry-run counts and deletes nothing.\n"
              "When hsqd cannot be reached and --data-dir is given (or data_dir is in\n"
              "--config, hsqd's config file), the pass runs directly on the data directory\n"
              "with hsqd's own code and retention settings, and says so. For cron and the\n"
              "hsq-purge.timer; exit 0 when the pass succeeded.\n"},
    {"erase-user", "usage: hsq erase-user USER [--timeout-s N]\n"
                   "\n"
                   "Erase every task, image, index entry and idempotency key of USER, queued\n"
                   "and running tasks included (workers are told to stop). hsqd records the\n"
                   "request in its deletion ledger first, so an erasure cut short by a crash\n"
                   "completes on restart. Prints the receipt: tasks, active tasks, bytes, time\n"
                   "and the subject hash the audit log uses. Running it again is harmless.\n"
                   "A large user's files take a while: hsq waits up to --timeout-s seconds\n"
                   "(default 300, 0 = until the receipt) while hsqd still answers.\n"},
    {"export-user", "usage: hsq export-user USER -o FILE.tar\n"
                    "\n"
                    "Write one POSIX tar archive of USER's data: tasks/<id>/inputs/<i>-<kind>.<ext>,\n"
                    "tasks/<id>/outputs/<i>.<ext> for every image still stored, and manifest.json\n"
                    "(every task's metadata, prompt, settings, dates and retention dates). One\n"
                    "task at a time: memory stays bounded. Output checksums are verified. The\n"
                    "archive is written to FILE.tmp and renamed when complete.\n"},
    {"credits", "usage: hsq credits grant USER N\n"
                "       hsq credits show USER\n"
                "\n"
                "Operators: add N credits to USER's balance (a negative N, written after\n"
                "\"--\", takes credits back, but never those reserved by unfinished tasks),\n"
                "or show it. Prints the balance, the credits reserved by queued and running\n"
                "tasks, and what is free to spend. Only matters when hsqd runs with\n"
                "credits=on: each submit then reserves credit_cost per output (backgrounds x\n"
                "styles x sizes); success consumes it, failure, cancel and expiry refund it.\n"},
    {"fsck", "usage: hsq fsck --data-dir DIR [--blob-dir DIR] [--repair]\n"
             "\n"
             "Cross-check hsqd's records and its blob store: blobs no record references\n"
             "(orphans) and records naming blobs that are gone (dangling). --repair deletes\n"
             "the orphans and drops the dangling references. Works directly on the data\n"
             "directory (safe while hsqd runs). Exit 0 when clean, 1 when problems remain.\n"},
};

int hsq_cli_help(FILE *f, const char *topic) {
    if (!topic) {
        fputs(overview, f);
        return 0;
    }
    for (size_t i = 0; i < sizeof topics / sizeof topics[0]; i++) {
        if (strcmp(topic, topics[i].name) == 0) {
            fputs(topics[i].text, f);
            fputs("\nGlobal options -e/--endpoint, --json and --timeout may follow the command;\n"
                  "see 'hsq --help' for them and for the exit status.\n",
                  f);
            return 0;
        }
    }
    return HSQ_EINVAL;
}

int hsq_cli_exit_code(int err) {
    switch (err) {
    case 0:
        return HSQ_CLI_EXIT_OK;
    case HSQ_EINVAL:
        return HSQ_CLI_EXIT_USAGE;
    case HSQ_ENOTFOUND:
        return HSQ_CLI_EXIT_NOTFOUND;
    case HSQ_ETIMEOUT:
    case HSQ_EUNAVAIL:
        return HSQ_CLI_EXIT_UNREACH;
    default:
        return HSQ_CLI_EXIT_REFUSED;
    }
}

/* ---- small parsers ---- */

int hsq_cli_parse_u64(const char *s, uint64_t *out) {
    if (!s || *s < '0' || *s > '9')
        return HSQ_EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return HSQ_EINVAL;
    *out = v;
    return 0;
}

int hsq_cli_parse_format(const char *s, hsq_fmt *out) {
    if (strcmp(s, "jpeg") == 0 || strcmp(s, "jpg") == 0)
        *out = HSQ_FMT_JPEG;
    else if (strcmp(s, "png") == 0)
        *out = HSQ_FMT_PNG;
    else
        return HSQ_EINVAL;
    return 0;
}

static int parse_dim(const char *s, size_t len, uint32_t *out) {
    if (len == 0 || len > 5)
        return HSQ_EINVAL;
    uint32_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return HSQ_EINVAL;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v < 1 || v > HSQ_MAX_DIM)
        return HSQ_EINVAL;
    *out = v;
    return 0;
}

static const struct {
    const char *name;
    uint32_t w, h;
} size_presets[] = {{"portrait", 1024, 1280}, {"square", 1024, 1024}, {"passport", 600, 600}};

int hsq_cli_parse_size(const char *s, hsq_wire_outspec *o) {
    for (size_t i = 0; i < sizeof size_presets / sizeof size_presets[0]; i++) {
        size_t n = strlen(size_presets[i].name);
        if (strncmp(s, size_presets[i].name, n) != 0 || (s[n] != '\0' && s[n] != ':'))
            continue;
        hsq_wire_outspec v = {size_presets[i].w, size_presets[i].h, 0, 0};
        if (s[n] == ':') {
            hsq_fmt f;
            if (hsq_cli_parse_format(s + n + 1, &f) != 0)
                return HSQ_EINVAL;
            v.format = (uint8_t)f;
        }
        *o = v;
        return 0;
    }
    const char *x = strchr(s, 'x');
    if (!x)
        return HSQ_EINVAL;
    const char *colon = strchr(x, ':');
    const char *hend = colon ? colon : x + strlen(x);
    hsq_wire_outspec v = {0};
    if (parse_dim(s, (size_t)(x - s), &v.width) != 0 ||
        parse_dim(x + 1, (size_t)(hend - x - 1), &v.height) != 0)
        return HSQ_EINVAL;
    if (colon) {
        hsq_fmt f;
        if (hsq_cli_parse_format(colon + 1, &f) != 0)
            return HSQ_EINVAL;
        v.format = (uint8_t)f;
    }
    *o = v; /* format 0 = "not given": the caller applies --format */
    return 0;
}

/* "#RRGGBB" at s (exactly 7 characters). */
static int parse_color(const char *s, size_t len, uint8_t out[3]) {
    if (len != 7 || s[0] != '#')
        return HSQ_EINVAL;
    for (int i = 0; i < 3; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = s[1 + 2 * i + k];
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d < 0)
                return HSQ_EINVAL;
            v = v * 16 + (unsigned)d;
        }
        out[i] = (uint8_t)v;
    }
    return 0;
}

int hsq_cli_parse_background(const char *s, hsq_wire_background *o) {
    hsq_wire_background v;
    memset(&v, 0, sizeof v);
    if (strncmp(s, "solid:", 6) == 0 || strncmp(s, "vignette:", 9) == 0) {
        const char *c = strchr(s, ':') + 1;
        v.kind = s[0] == 's' ? HSQ_BG_SOLID : HSQ_BG_VIGNETTE;
        if (parse_color(c, strlen(c), v.color))
            return HSQ_EINVAL;
    } else if (strncmp(s, "gradient:", 9) == 0) {
        const char *c = s + 9, *c2 = strchr(c, ':');
        v.kind = HSQ_BG_GRADIENT;
        if (!c2 || parse_color(c, (size_t)(c2 - c), v.color) ||
            parse_color(c2 + 1, strlen(c2 + 1), v.color2))
            return HSQ_EINVAL;
    } else if (strcmp(s, "reference") == 0 || strncmp(s, "reference:", 10) == 0) {
        uint64_t b = 0;
        v.kind = HSQ_BG_REFERENCE;
        if (s[9] == ':' && (hsq_cli_parse_u64(s + 10, &b) != 0 || b > 64))
            return HSQ_EINVAL;
        v.blur_px = (uint16_t)b;
    } else {
        return HSQ_EINVAL;
    }
    *o = v;
    return 0;
}

int hsq_cli_parse_style(const char *s, hsq_wire_style *o) {
    const char *colon = strrchr(s, ':');
    if (!colon || colon - s > 32)
        return HSQ_EINVAL;
    uint8_t vals[4];
    const char *p = colon + 1;
    for (int i = 0; i < 4; i++) {
        const char *end = i < 3 ? strchr(p, ',') : p + strlen(p);
        char num[8];
        if (!end || end == p || (size_t)(end - p) >= sizeof num)
            return HSQ_EINVAL;
        memcpy(num, p, (size_t)(end - p));
        num[end - p] = '\0';
        uint64_t v;
        if (hsq_cli_parse_u64(num, &v) != 0 || v > 100)
            return HSQ_EINVAL;
        vals[i] = (uint8_t)v;
        p = end + 1;
    }
    o->name = (hsq_str){s, (size_t)(colon - s)};
    o->retouch = vals[0];
    o->tone = vals[1];
    o->sharpen = vals[2];
    o->clothing = vals[3];
    return 0;
}

int hsq_cli_parse_state(const char *s, hsq_state *out) {
    for (int st = HSQ_STATE_QUEUED; st < HSQ_STATE_COUNT_; st++) {
        if (strcmp(s, hsq_state_name((hsq_state)st)) == 0) {
            *out = (hsq_state)st;
            return 0;
        }
    }
    return HSQ_EINVAL;
}

int hsq_cli_parse_prio(const char *s, hsq_prio *out) {
    int p = hsq_prio_from_name(hsq_str_c(s));
    if (p < 0)
        return HSQ_EINVAL;
    *out = (hsq_prio)p;
    return 0;
}

/* ---- argv ---- */

enum {
    OPT_JSON = 256,
    OPT_TIMEOUT,
    OPT_VERSION,
    OPT_USER,
    OPT_KEY,
    OPT_PRIO,
    OPT_SIZE,
    OPT_FORMAT,
    OPT_QUALITY,
    OPT_PROMPT,
    OPT_CLOTHING,
    OPT_BACKGROUND,
    OPT_BG_SPEC,
    OPT_STYLE,
    OPT_DPI,
    OPT_KEEP_UPLOADS,
    OPT_KEEP_OUTPUTS,
    OPT_TIMEOUT_S,
    OPT_SINCE,
    OPT_LIMIT,
    OPT_BEFORE,
    OPT_ONCE,
    OPT_DRY_RUN,
    OPT_REPAIR,
    OPT_DATA_DIR,
    OPT_BLOB_DIR,
    OPT_CONFIG
};

/* Options by command; the global ones are accepted everywhere. */
/* clang-format off */
#define GLOBAL_OPTS                                                                                \
    {"endpoint", required_argument, NULL, 'e'}, {"json", no_argument, NULL, OPT_JSON},             \
        {"timeout", required_argument, NULL, OPT_TIMEOUT}, {"help", no_argument, NULL, 'h'},       \
        {"version", no_argument, NULL, OPT_VERSION}

static const struct option global_opts[] = {GLOBAL_OPTS, {NULL, 0, NULL, 0}};
static const struct option submit_opts[] = {
    GLOBAL_OPTS,
    {"user", required_argument, NULL, OPT_USER},
    {"key", required_argument, NULL, OPT_KEY},
    {"prio", required_argument, NULL, OPT_PRIO},
    {"size", required_argument, NULL, OPT_SIZE},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"quality", required_argument, NULL, OPT_QUALITY},
    {"prompt", required_argument, NULL, OPT_PROMPT},
    {"clothing", required_argument, NULL, OPT_CLOTHING},
    {"background-photo", required_argument, NULL, OPT_BACKGROUND},
    {"background", required_argument, NULL, OPT_BG_SPEC},
    {"style", required_argument, NULL, OPT_STYLE},
    {"dpi", required_argument, NULL, OPT_DPI},
    {"keep-uploads", required_argument, NULL, OPT_KEEP_UPLOADS},
    {"keep-outputs", required_argument, NULL, OPT_KEEP_OUTPUTS},
    {NULL, 0, NULL, 0}};
static const struct option task_opts[] = {
    GLOBAL_OPTS, {"user", required_argument, NULL, OPT_USER}, {NULL, 0, NULL, 0}};
static const struct option wait_opts[] = {GLOBAL_OPTS,
                                          {"user", required_argument, NULL, OPT_USER},
                                          {"timeout-s", required_argument, NULL, OPT_TIMEOUT_S},
                                          {"since", required_argument, NULL, OPT_SINCE},
                                          {NULL, 0, NULL, 0}};
static const struct option result_opts[] = {GLOBAL_OPTS,
                                            {"user", required_argument, NULL, OPT_USER},
                                            {"output", required_argument, NULL, 'o'},
                                            {NULL, 0, NULL, 0}};
static const struct option list_opts[] = {GLOBAL_OPTS,
                                          {"user", required_argument, NULL, OPT_USER},
                                          {"limit", required_argument, NULL, OPT_LIMIT},
                                          {"before", required_argument, NULL, OPT_BEFORE},
                                          {NULL, 0, NULL, 0}};
static const struct option top_opts[] = {
    GLOBAL_OPTS, {"once", no_argument, NULL, OPT_ONCE}, {NULL, 0, NULL, 0}};
static const struct option keygen_opts[] = {
    GLOBAL_OPTS, {"output", required_argument, NULL, 'o'}, {NULL, 0, NULL, 0}};
static const struct option purge_opts[] = {GLOBAL_OPTS,
                                           {"dry-run", no_argument, NULL, OPT_DRY_RUN},
                                           {"data-dir", required_argument, NULL, OPT_DATA_DIR},
                                           {"blob-dir", required_argument, NULL, OPT_BLOB_DIR},
                                           {"config", required_argument, NULL, OPT_CONFIG},
                                           {NULL, 0, NULL, 0}};
static const struct option erase_opts[] = {
    GLOBAL_OPTS, {"timeout-s", required_argument, NULL, OPT_TIMEOUT_S}, {NULL, 0, NULL, 0}};
static const struct option export_opts[] = {
    GLOBAL_OPTS, {"output", required_argument, NULL, 'o'}, {NULL, 0, NULL, 0}};
static const struct option fsck_opts[] = {GLOBAL_OPTS,
                                          {"repair", no_argument, NULL, OPT_REPAIR},
                                          {"data-dir", required_argument, NULL, OPT_DATA_DIR},
                                          {"blob-dir", required_argument, NULL, OPT_BLOB_DIR},
                                          {NULL, 0, NULL, 0}};
/* clang-format on */

static const struct {
    const char *name;
    hsq_cli_verb verb;
    const struct option *opts;
    const char *shortopts;
    int npos; /* positional arguments: 1 = TASK, 0 = none, -1 = PHOTO..., 2 = USER,
                 3 = grant USER N | show USER */
} verbs[] = {
    {"submit", HSQ_CLI_SUBMIT, submit_opts, ":e:h", -1},
    {"status", HSQ_CLI_STATUS, task_opts, ":e:h", 1},
    {"wait", HSQ_CLI_WAIT, wait_opts, ":e:h", 1},
    {"result", HSQ_CLI_RESULT, result_opts, ":e:ho:", 1},
    {"cancel", HSQ_CLI_CANCEL, task_opts, ":e:h", 1},
    {"list", HSQ_CLI_LIST, list_opts, ":e:h", 0},
    {"stats", HSQ_CLI_STATS, global_opts, ":e:h", 0},
    {"requeue", HSQ_CLI_REQUEUE, task_opts, ":e:h", 1},
    {"top", HSQ_CLI_TOP, top_opts, ":e:h", 0},
    {"keygen", HSQ_CLI_KEYGEN, keygen_opts, ":e:ho:", 0},
    {"purge", HSQ_CLI_PURGE, purge_opts, ":e:h", 0},
    {"erase-user", HSQ_CLI_ERASE_USER, erase_opts, ":e:h", 2},
    {"export-user", HSQ_CLI_EXPORT_USER, export_opts, ":e:ho:", 2},
    {"fsck", HSQ_CLI_FSCK, fsck_opts, ":e:h", 0},
    {"credits", HSQ_CLI_CREDITS, global_opts, ":e:h", 3},
};

__attribute__((format(printf, 3, 4))) static int usage(char *err, size_t errlen, const char *fmt,
                                                       ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return HSQ_EINVAL;
}

/* Handle an option every command accepts; 1 when handled, <0 on error. */
static int global_opt(int ch, hsq_cli_cmd *cmd, const char *verb, char *err, size_t errlen) {
    uint64_t v;
    switch (ch) {
    case 'e':
        if (!*optarg)
            return usage(err, errlen, "--endpoint: empty endpoint");
        cmd->endpoint = optarg;
        return 1;
    case OPT_JSON:
        cmd->json = 1;
        return 1;
    case OPT_TIMEOUT:
        if (hsq_cli_parse_u64(optarg, &v) != 0 || v < 1 || v > 3600 * 1000)
            return usage(err, errlen, "--timeout: expected milliseconds (1..3600000), got \"%s\"",
                         optarg);
        cmd->timeout_ms = (int)v;
        return 1;
    case 'h':
        cmd->verb = HSQ_CLI_HELP;
        cmd->topic = verb;
        return 1;
    case OPT_VERSION:
        cmd->verb = HSQ_CLI_VERSION;
        return 1;
    default:
        return 0;
    }
}

/* The text of the option getopt just rejected, for the message. */
static const char *bad_opt(char **argv, char *buf, size_t len) {
    if (optopt && optopt < 256) {
        snprintf(buf, len, "-%c", optopt);
        return buf;
    }
    const char *a = argv[optind - 1];
    snprintf(buf, len, "%s", a ? a : "?");
    return buf;
}

static int parse_verb_opts(int argc, char **argv, hsq_cli_cmd *cmd, size_t vi, char *err,
                           size_t errlen) {
    const char *vname = verbs[vi].name;
    hsq_fmt fmt = HSQ_FMT_JPEG;
    int quality = 0;
    int ch, rc;
    uint64_t v;
    char ob[64];

    optind = 0; /* glibc: full reinitialisation */
    opterr = 0;
    /* No "+": getopt permutes, so options may follow TASK ("hsq status 42 --json").
     * The leading ':' makes a missing argument return ':' instead of '?'. */
    while ((ch = getopt_long(argc, argv, verbs[vi].shortopts, verbs[vi].opts, NULL)) != -1) {
        if ((rc = global_opt(ch, cmd, vname, err, errlen)) != 0) {
            if (rc < 0)
                return rc;
            if (cmd->verb == HSQ_CLI_HELP || cmd->verb == HSQ_CLI_VERSION)
                return 0;
            continue;
        }
        switch (ch) {
        case OPT_USER:
            if (!*optarg || strlen(optarg) > HSQ_MAX_USER_LEN)
                return usage(err, errlen, "--user: expected 1 to %d bytes", HSQ_MAX_USER_LEN);
            cmd->user = optarg;
            break;
        case OPT_KEY:
            if (!*optarg || strlen(optarg) > HSQ_MAX_USER_LEN)
                return usage(err, errlen, "--key: expected 1 to %d bytes", HSQ_MAX_USER_LEN);
            cmd->key = optarg;
            break;
        case OPT_PRIO:
            if (hsq_cli_parse_prio(optarg, &cmd->prio) != 0)
                return usage(err, errlen, "--prio: expected high, normal or low, got \"%s\"",
                             optarg);
            break;
        case OPT_SIZE:
            if (cmd->n_outputs == HSQ_MAX_OUTPUTS)
                return usage(err, errlen, "--size: at most %d outputs per job", HSQ_MAX_OUTPUTS);
            if (hsq_cli_parse_size(optarg, &cmd->outputs[cmd->n_outputs]) != 0)
                return usage(err, errlen,
                             "--size: expected WxH or WxH:jpeg|png with 1..%d pixels a side, "
                             "got \"%s\"",
                             HSQ_MAX_DIM, optarg);
            cmd->n_outputs++;
            break;
        case OPT_FORMAT:
            if (hsq_cli_parse_format(optarg, &fmt) != 0)
                return usage(err, errlen, "--format: expected jpeg or png, got \"%s\"", optarg);
            break;
        case OPT_QUALITY:
            if (hsq_cli_parse_u64(optarg, &v) != 0 || v < 1 || v > 100)
                return usage(err, errlen, "--quality: expected 1..100, got \"%s\"", optarg);
            quality = (int)v;
            break;
        case OPT_PROMPT:
            if (strlen(optarg) > HSQ_MAX_PROMPT_LEN)
                return usage(err, errlen, "--prompt: longer than %d bytes", HSQ_MAX_PROMPT_LEN);
            cmd->prompt = optarg;
            break;
        case OPT_CLOTHING:
            cmd->clothing = optarg;
            break;
        case OPT_BACKGROUND:
            cmd->background = optarg;
            break;
        case OPT_BG_SPEC:
            if (cmd->settings.n_backgrounds == HSQ_MAX_BACKGROUNDS)
                return usage(err, errlen, "--background: at most %d per job",
                             HSQ_MAX_BACKGROUNDS);
            if (hsq_cli_parse_background(optarg,
                                         &cmd->settings.backgrounds[cmd->settings.n_backgrounds]))
                return usage(err, errlen,
                             "--background: expected solid:#RRGGBB, gradient:#RRGGBB:#RRGGBB, "
                             "vignette:#RRGGBB or reference[:BLUR] (0..64), got \"%s\"",
                             optarg);
            cmd->settings.n_backgrounds++;
            break;
        case OPT_STYLE:
            if (cmd->settings.n_styles == HSQ_MAX_STYLES)
                return usage(err, errlen, "--style: at most %d per job", HSQ_MAX_STYLES);
            if (hsq_cli_parse_style(optarg, &cmd->settings.styles[cmd->settings.n_styles]))
                return usage(err, errlen,
                             "--style: expected NAME:retouch,tone,sharpen,clothing with a name "
                             "of up to 32 bytes and each value 0..100, got \"%s\"",
                             optarg);
            cmd->settings.n_styles++;
            break;
        case OPT_DPI:
            if (hsq_cli_parse_u64(optarg, &v) != 0 || v < 72 || v > 1200)
                return usage(err, errlen, "--dpi: expected 72..1200, got \"%s\"", optarg);
            cmd->settings.dpi = (uint16_t)v;
            break;
        case OPT_KEEP_UPLOADS:
        case OPT_KEEP_OUTPUTS:
            /* A duration like 1s, 2h or 7d; hsqd keeps min(this, its policy). */
            if (hsq_conf_parse_ms(optarg, &v) != 0 || v < 1000 || v / 1000 > UINT32_MAX)
                return usage(err, errlen,
                             "--%s: expected a duration of at least 1s like 1s, 12h or 7d, got "
                             "\"%s\"",
                             ch == OPT_KEEP_UPLOADS ? "keep-uploads" : "keep-outputs", optarg);
            if (ch == OPT_KEEP_UPLOADS)
                cmd->keep_uploads_s = (uint32_t)(v / 1000);
            else
                cmd->keep_outputs_s = (uint32_t)(v / 1000);
            break;
        case OPT_TIMEOUT_S:
            if (hsq_cli_parse_u64(optarg, &v) != 0 || v > 366ull * 86400)
                return usage(err, errlen, "--timeout-s: expected seconds, got \"%s\"", optarg);
            cmd->wait_s = v;
            break;
        case OPT_SINCE:
            if (hsq_cli_parse_state(optarg, &cmd->since) != 0)
                return usage(err, errlen,
                             "--since: expected queued, leased, succeeded, failed, cancelled or "
                             "expired, got \"%s\"",
                             optarg);
            break;
        case 'o':
            if (!*optarg)
                return usage(err, errlen, "-o: empty %s",
                             cmd->verb == HSQ_CLI_KEYGEN ? "prefix" : "directory");
            if (cmd->verb == HSQ_CLI_KEYGEN)
                cmd->prefix = optarg;
            else if (cmd->verb == HSQ_CLI_EXPORT_USER)
                cmd->outfile = optarg;
            else
                cmd->outdir = optarg;
            break;
        case OPT_DRY_RUN:
            cmd->dry_run = 1;
            break;
        case OPT_REPAIR:
            cmd->repair = 1;
            break;
        case OPT_DATA_DIR:
        case OPT_BLOB_DIR:
        case OPT_CONFIG:
            if (!*optarg)
                return usage(err, errlen, "--%s: empty path",
                             ch == OPT_DATA_DIR   ? "data-dir"
                             : ch == OPT_BLOB_DIR ? "blob-dir"
                                                  : "config");
            if (ch == OPT_DATA_DIR)
                cmd->data_dir = optarg;
            else if (ch == OPT_BLOB_DIR)
                cmd->blob_dir = optarg;
            else
                cmd->config = optarg;
            break;
        case OPT_ONCE:
            cmd->once = 1;
            break;
        case OPT_LIMIT:
            if (hsq_cli_parse_u64(optarg, &v) != 0 || v < 1 || v > HSQ_MAX_LIST)
                return usage(err, errlen, "--limit: expected 1..%d, got \"%s\"", HSQ_MAX_LIST,
                             optarg);
            cmd->limit = (uint32_t)v;
            break;
        case OPT_BEFORE:
            if (hsq_cli_parse_u64(optarg, &cmd->before) != 0)
                return usage(err, errlen, "--before: expected a task id, got \"%s\"", optarg);
            break;
        case ':':
            return usage(err, errlen, "%s: %s needs an argument", vname,
                         bad_opt(argv, ob, sizeof ob));
        default:
            return usage(err, errlen, "%s: unknown option %s", vname, bad_opt(argv, ob, sizeof ob));
        }
    }

    /* positionals: argv[optind..] (getopt moved them to the end) */
    int npos = argc - optind;
    char **pos = argv + optind;
    if (verbs[vi].npos == 1) {
        if (npos != 1)
            return usage(err, errlen, "%s: expected one TASK id, got %d arguments", vname, npos);
        if (hsq_cli_parse_u64(pos[0], &cmd->task) != 0 || cmd->task == 0)
            return usage(err, errlen, "%s: \"%s\" is not a task id", vname, pos[0]);
    } else if (verbs[vi].npos == 0) {
        if (npos != 0)
            return usage(err, errlen, "%s: unexpected argument \"%s\"", vname, pos[0]);
    } else if (verbs[vi].npos == 2) {
        if (npos != 1)
            return usage(err, errlen, "%s: expected one USER, got %d arguments", vname, npos);
        if (!*pos[0] || strlen(pos[0]) > HSQ_MAX_USER_LEN)
            return usage(err, errlen, "%s: USER must be 1 to %d bytes", vname, HSQ_MAX_USER_LEN);
        cmd->user = pos[0];
    } else if (verbs[vi].npos == 3) {
        int grant = npos >= 1 && strcmp(pos[0], "grant") == 0;
        int show = npos >= 1 && strcmp(pos[0], "show") == 0;
        if (!(grant && npos == 3) && !(show && npos == 2))
            return usage(err, errlen, "%s: expected \"grant USER N\" or \"show USER\"", vname);
        if (!*pos[1] || strlen(pos[1]) > HSQ_MAX_USER_LEN)
            return usage(err, errlen, "%s: USER must be 1 to %d bytes", vname, HSQ_MAX_USER_LEN);
        cmd->user = pos[1];
        if (grant) {
            const char *n = pos[2];
            uint64_t v;
            int neg = n[0] == '-';
            if (hsq_cli_parse_u64(n + neg, &v) != 0 || v == 0 || v > (uint64_t)INT64_MAX)
                return usage(err, errlen,
                             "%s: N must be a non-zero whole number of credits (negative "
                             "after --), got \"%s\"",
                             vname, n);
            cmd->grant = neg ? -(int64_t)v : (int64_t)v;
        }
    }

    switch (cmd->verb) {
    case HSQ_CLI_SUBMIT: {
        if (!cmd->user)
            return usage(err, errlen, "submit: --user is required");
        if (npos < 1)
            return usage(err, errlen, "submit: at least one PHOTO is required");
        size_t total = (size_t)npos + (cmd->clothing != NULL) + (cmd->background != NULL);
        if (total > HSQ_MAX_INPUTS)
            return usage(err, errlen,
                         "submit: at most %d images per job (photos, clothing and "
                         "background together), got %zu",
                         HSQ_MAX_INPUTS, total);
        for (int i = 0; i < npos; i++)
            cmd->photos[i] = pos[i];
        cmd->n_photos = (size_t)npos;
        int wants_ref = 0;
        for (uint32_t i = 0; i < cmd->settings.n_backgrounds; i++)
            wants_ref |= cmd->settings.backgrounds[i].kind == HSQ_BG_REFERENCE;
        if (wants_ref && !cmd->background)
            return usage(err, errlen,
                         "--background reference needs the photo: --background-photo FILE");
        if (cmd->n_outputs == 0) {
            cmd->outputs[0] =
                (hsq_wire_outspec){HSQ_CLI_DEFAULT_WIDTH, HSQ_CLI_DEFAULT_HEIGHT, 0, 0};
            cmd->n_outputs = 1;
        }
        size_t combos = (cmd->settings.n_backgrounds ? cmd->settings.n_backgrounds : 1) *
                        (cmd->settings.n_styles ? cmd->settings.n_styles : 1) * cmd->n_outputs;
        if (combos > HSQ_MAX_OUTPUTS)
            return usage(err, errlen,
                         "submit: %zu outputs (backgrounds x styles x sizes); at most %d",
                         combos, HSQ_MAX_OUTPUTS);
        for (size_t i = 0; i < cmd->n_outputs; i++) {
            hsq_wire_outspec *o = &cmd->outputs[i];
            if (o->format == 0)
                o->format = (uint8_t)fmt;
            o->quality = o->format == HSQ_FMT_JPEG ? (uint8_t)quality : 0;
        }
        break;
    }
    case HSQ_CLI_LIST:
        if (!cmd->user)
            return usage(err, errlen, "list: --user is required");
        break;
    case HSQ_CLI_EXPORT_USER:
        if (!cmd->outfile)
            return usage(err, errlen, "export-user: -o FILE is required");
        break;
    case HSQ_CLI_FSCK:
        if (!cmd->data_dir)
            return usage(err, errlen, "fsck: --data-dir is required");
        break;
    default:
        break;
    }
    return 0;
}

int hsq_cli_parse(int argc, char **argv, hsq_cli_cmd *cmd, char *err, size_t errlen) {
    memset(cmd, 0, sizeof *cmd);
    cmd->prio = HSQ_PRIO_NORMAL;
    cmd->wait_s = HSQ_CLI_DEFAULT_WAIT_S;
    cmd->outdir = ".";
    if (errlen)
        err[0] = '\0';

    int ch, rc;
    char ob[64];
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "+:e:h", global_opts, NULL)) != -1) {
        if ((rc = global_opt(ch, cmd, NULL, err, errlen)) < 0)
            return rc;
        if (rc == 0) {
            if (ch == ':')
                return usage(err, errlen, "%s needs an argument", bad_opt(argv, ob, sizeof ob));
            return usage(err, errlen, "unknown option %s", bad_opt(argv, ob, sizeof ob));
        }
        if (cmd->verb == HSQ_CLI_HELP || cmd->verb == HSQ_CLI_VERSION)
            return 0;
    }
    if (optind >= argc)
        return usage(err, errlen, "no command given");

    const char *name = argv[optind];
    if (strcmp(name, "help") == 0) {
        cmd->verb = HSQ_CLI_HELP;
        if (argc - optind > 2)
            return usage(err, errlen, "help: expected at most one COMMAND");
        cmd->topic = optind + 1 < argc ? argv[optind + 1] : NULL;
        for (size_t i = 0; cmd->topic && i < sizeof verbs / sizeof verbs[0]; i++)
            if (strcmp(cmd->topic, verbs[i].name) == 0)
                return 0;
        if (cmd->topic)
            return usage(err, errlen, "help: unknown command \"%s\"", cmd->topic);
        return 0;
    }
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (strcmp(name, verbs[i].name) == 0) {
            cmd->verb = verbs[i].verb;
            /* Re-parse from the command name: argv[0] of the sub-parse. */
            return parse_verb_opts(argc - optind, argv + optind, cmd, i, err, errlen);
        }
    }
    return usage(err, errlen, "unknown command \"%s\"", name);
}
