/* test_cli_args.c - the `hsq` command line without a daemon.
 *
 * Table-driven checks of hsq_cli_parse() (every command, every usage error),
 * the small parsers, the exit-code table and the JSON writer; then the real
 * binary (argv[1]) is run for --help, a usage error and an endpoint where
 * nothing listens, checking exit codes and the "hsq: <name>: ..." stderr line.
 */
#include "client/cli_args.h"
#include "client/cli_json.h"
#include "schemas/err.h"
#include "test.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---- parser ---- */

#define MAXARGS 32

/* Split a space-separated command line (no quoting) and parse it. */
static int parse(const char *line, hsq_cli_cmd *cmd, char *err, size_t errlen) {
    static char buf[1024];
    static char *argv[MAXARGS + 1];
    int argc = 0;
    snprintf(buf, sizeof buf, "hsq %s", line);
    for (char *tok = strtok(buf, " "); tok && argc < MAXARGS; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    argv[argc] = NULL;
    return hsq_cli_parse(argc, argv, cmd, err, errlen);
}

static void test_usage_errors(void) {
    static const struct {
        const char *line;
        const char *msg; /* substring of the message */
    } cases[] = {
        {"", "no command given"},
        {"frobnicate", "unknown command"},
        {"--bogus stats", "unknown option --bogus"},
        {"-e", "needs an argument"},
        {"--timeout 0 stats", "--timeout"},
        {"--timeout abc stats", "--timeout"},
        {"submit p.jpg", "--user is required"},
        {"submit --user u", "at least one PHOTO"},
        {"submit --user u --prio urgent p.jpg", "--prio"},
        {"submit --user u --size 10 p.jpg", "--size"},
        {"submit --user u --size 0x10 p.jpg", "--size"},
        {"submit --user u --size 9000x10 p.jpg", "--size"},
        {"submit --user u --size 10x10:gif p.jpg", "--size"},
        {"submit --user u --format gif p.jpg", "--format"},
        {"submit --user u --quality 0 p.jpg", "--quality"},
        {"submit --user u --quality 101 p.jpg", "--quality"},
        {"submit --user u 1 2 3 4 5 6 7 --clothing c --background-photo b", "at most 8 images"},
        {"submit --user u --background blue p.jpg", "--background"},
        {"submit --user u --background solid:#12345 p.jpg", "--background"},
        {"submit --user u --background solid:#12345g p.jpg", "--background"},
        {"submit --user u --background gradient:#ffffff p.jpg", "--background"},
        {"submit --user u --background reference:65 --background-photo b p.jpg", "--background"},
        {"submit --user u --background reference p.jpg", "--background-photo"},
        {"submit --user u --style natural p.jpg", "--style"},
        {"submit --user u --style n:1,2,3 p.jpg", "--style"},
        {"submit --user u --style n:1,2,3,101 p.jpg", "--style"},
        {"submit --user u --dpi 71 p.jpg", "--dpi"},
        {"submit --user u --size huge p.jpg", "--size"},
        {"submit --user u --background solid:#000000 --background solid:#111111 --style a:0,0,0,0 "
         "--style b:0,0,0,0 --size 1x1 --size 2x2 --size 3x3 --size 4x4 --size 5x5 p.jpg",
         "at most 16"},
        {"status", "expected one TASK"},
        {"status 1 2", "expected one TASK"},
        {"status abc", "is not a task id"},
        {"status 0", "is not a task id"},
        {"status -5", "unknown option"},
        {"status 18446744073709551616", "is not a task id"},
        {"status 1 --limit 3", "unknown option --limit"},
        {"wait 1 --since done", "--since"},
        {"wait 1 --timeout-s x", "--timeout-s"},
        {"erase-user bob --timeout-s -1", "--timeout-s"},
        {"erase-user bob --timeout-s 99999999999", "--timeout-s"},
        {"erase-user bob --since leased", "unknown option --since"},
        {"list", "--user is required"},
        {"list --user u --limit 0", "--limit"},
        {"list --user u --limit 101", "--limit"},
        {"list --user u extra", "unexpected argument"},
        {"stats now", "unexpected argument"},
        {"result 1 -o", "needs an argument"},
        {"help nope", "unknown command"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hsq_cli_cmd cmd;
        char err[256];
        int rc = parse(cases[i].line, &cmd, err, sizeof err);
        if (rc != HSQ_EINVAL || !strstr(err, cases[i].msg))
            HSQ_FAIL_("\"%s\": rc %d, message \"%s\", want \"%s\"", cases[i].line, rc, err,
                      cases[i].msg);
    }
}

static void test_submit(void) {
    hsq_cli_cmd cmd;
    char err[256];
    HSQ_OK(parse("-e tcp://h:1 submit --user alice --key k1 --prio high --size 512x640 "
                 "--size 256x256:png --format jpeg --quality 80 --prompt hi --clothing c.png "
                 "--background-photo b.jpg a.jpg b.jpg --json",
                 &cmd, err, sizeof err));
    HSQ_ASSERT_EQ(cmd.verb, HSQ_CLI_SUBMIT);
    HSQ_ASSERT_STR_EQ(cmd.endpoint, "tcp://h:1");
    HSQ_ASSERT_EQ(cmd.json, 1);
    HSQ_ASSERT_STR_EQ(cmd.user, "alice");
    HSQ_ASSERT_STR_EQ(cmd.key, "k1");
    HSQ_ASSERT_EQ(cmd.prio, HSQ_PRIO_HIGH);
    HSQ_ASSERT_STR_EQ(cmd.prompt, "hi");
    HSQ_ASSERT_STR_EQ(cmd.clothing, "c.png");
    HSQ_ASSERT_STR_EQ(cmd.background, "b.jpg");
    HSQ_ASSERT_EQ(cmd.n_photos, 2);
    HSQ_ASSERT_STR_EQ(cmd.photos[0], "a.jpg");
    HSQ_ASSERT_STR_EQ(cmd.photos[1], "b.jpg");
    HSQ_ASSERT_EQ(cmd.n_outputs, 2);
    HSQ_ASSERT_EQ(cmd.outputs[0].width, 512);
    HSQ_ASSERT_EQ(cmd.outputs[0].height, 640);
    HSQ_ASSERT_EQ(cmd.outputs[0].format, HSQ_FMT_JPEG);
    HSQ_ASSERT_EQ(cmd.outputs[0].quality, 80);
    HSQ_ASSERT_EQ(cmd.outputs[1].format, HSQ_FMT_PNG);
    HSQ_ASSERT_EQ(cmd.outputs[1].quality, 0); /* quality is JPEG only */
    HSQ_ASSERT_EQ(cmd.settings.n_backgrounds, 0);
    HSQ_ASSERT_EQ(cmd.settings.n_styles, 0);

    /* backgrounds, styles, dpi, presets */
    HSQ_OK(parse("submit --user u --background solid:#FF8000 --background gradient:#ffffff:#203040 "
                 "--background vignette:#d6d6d6 --background reference:12 --background-photo bg.jpg "
                 "--style natural:30,50,30,80 --style crisp:0,0,100,0 --dpi 300 --size passport "
                 "--size portrait:png p.jpg",
                 &cmd, err, sizeof err));
    HSQ_ASSERT_STR_EQ(cmd.background, "bg.jpg");
    HSQ_ASSERT_EQ(cmd.settings.n_backgrounds, 4);
    HSQ_ASSERT_EQ(cmd.settings.backgrounds[0].kind, HSQ_BG_SOLID);
    HSQ_ASSERT_EQ(cmd.settings.backgrounds[0].color[0], 255);
    HSQ_ASSERT_EQ(cmd.settings.backgrounds[0].color[1], 128);
    HSQ_ASSERT_EQ(cmd.settings.backgrounds[0].color[2], 0);
    HSQ_ASSERT_EQ(cmd.settings.backgrounds[1].kind, HSQ_BG_GRADIENT);
    HSQ_ASSERT_EQ(cmd.settings.backgrounds[1].color2[2], 0x40);
    HSQ_ASSERT_EQ(cmd.settings.backgrounds[2].kind, HSQ_BG_VIGNETTE);
    HSQ_ASSERT_EQ(cmd.settings.backgrounds[3].kind, HSQ_BG_REFERENCE);
    HSQ_ASSERT_EQ(cmd.settings.backgrounds[3].blur_px, 12);
    HSQ_ASSERT_EQ(cmd.settings.n_styles, 2);
    HSQ_ASSERT_VIEW_EQ(cmd.settings.styles[0].name, "natural");
    HSQ_ASSERT_EQ(cmd.settings.styles[0].retouch, 30);
    HSQ_ASSERT_EQ(cmd.settings.styles[0].clothing, 80);
    HSQ_ASSERT_EQ(cmd.settings.styles[1].sharpen, 100);
    HSQ_ASSERT_EQ(cmd.settings.dpi, 300);
    HSQ_ASSERT_EQ(cmd.n_outputs, 2);
    HSQ_ASSERT_EQ(cmd.outputs[0].width, 600);
    HSQ_ASSERT_EQ(cmd.outputs[0].height, 600);
    HSQ_ASSERT_EQ(cmd.outputs[1].width, 1024);
    HSQ_ASSERT_EQ(cmd.outputs[1].height, 1280);
    HSQ_ASSERT_EQ(cmd.outputs[1].format, HSQ_FMT_PNG);

    /* defaults: one 1024x1280 jpeg, normal priority, --format applies */
    HSQ_OK(parse("submit --user u --format png p.jpg", &cmd, err, sizeof err));
    HSQ_ASSERT_EQ(cmd.prio, HSQ_PRIO_NORMAL);
    HSQ_ASSERT_EQ(cmd.n_outputs, 1);
    HSQ_ASSERT_EQ(cmd.outputs[0].width, 1024);
    HSQ_ASSERT_EQ(cmd.outputs[0].height, 1280);
    HSQ_ASSERT_EQ(cmd.outputs[0].format, HSQ_FMT_PNG);
    HSQ_ASSERT(cmd.endpoint == NULL);
    HSQ_ASSERT(cmd.key == NULL);
    HSQ_ASSERT_EQ(cmd.timeout_ms, 0);
}

static void test_other_commands(void) {
    hsq_cli_cmd cmd;
    char err[256];
    HSQ_OK(parse("--timeout 250 status 42 --user bob", &cmd, err, sizeof err));
    HSQ_ASSERT_EQ(cmd.verb, HSQ_CLI_STATUS);
    HSQ_ASSERT_EQ(cmd.timeout_ms, 250);
    HSQ_ASSERT_U64_EQ(cmd.task, 42);
    HSQ_ASSERT_STR_EQ(cmd.user, "bob");

    HSQ_OK(parse("erase-user bob --timeout-s 0", &cmd, err, sizeof err));
    HSQ_ASSERT_EQ(cmd.verb, HSQ_CLI_ERASE_USER);
    HSQ_ASSERT_STR_EQ(cmd.user, "bob");
    HSQ_ASSERT_U64_EQ(cmd.wait_s, 0);
    HSQ_OK(parse("erase-user bob", &cmd, err, sizeof err));
    HSQ_ASSERT_U64_EQ(cmd.wait_s, HSQ_CLI_DEFAULT_WAIT_S);
    HSQ_OK(parse("wait 18446744073709551615 --since leased --timeout-s 7", &cmd, err, sizeof err));
    HSQ_ASSERT_EQ(cmd.verb, HSQ_CLI_WAIT);
    HSQ_ASSERT_U64_EQ(cmd.task, UINT64_MAX);
    HSQ_ASSERT_EQ(cmd.since, HSQ_STATE_LEASED);
    HSQ_ASSERT_U64_EQ(cmd.wait_s, 7);
    HSQ_OK(parse("wait 3", &cmd, err, sizeof err));
    HSQ_ASSERT_EQ(cmd.since, HSQ_STATE_NONE);
    HSQ_ASSERT_U64_EQ(cmd.wait_s, HSQ_CLI_DEFAULT_WAIT_S);

    HSQ_OK(parse("result 9 -o /tmp/x", &cmd, err, sizeof err));
    HSQ_ASSERT_EQ(cmd.verb, HSQ_CLI_RESULT);
    HSQ_ASSERT_STR_EQ(cmd.outdir, "/tmp/x");
    HSQ_OK(parse("result 9", &cmd, err, sizeof err));
    HSQ_ASSERT_STR_EQ(cmd.outdir, ".");

    HSQ_OK(parse("list --user u --limit 100 --before 77", &cmd, err, sizeof err));
    HSQ_ASSERT_EQ(cmd.verb, HSQ_CLI_LIST);
    HSQ_ASSERT_EQ(cmd.limit, 100);
    HSQ_ASSERT_U64_EQ(cmd.before, 77);

    HSQ_OK(parse("cancel 5", &cmd, err, sizeof err));
    HSQ_ASSERT_EQ(cmd.verb, HSQ_CLI_CANCEL);
    HSQ_OK(parse("requeue 5", &cmd, err, sizeof err));
    HSQ_ASSERT_EQ(cmd.verb, HSQ_CLI_REQUEUE);
    HSQ_OK(parse("stats --json -e ipc:///x", &cmd, err, sizeof err));
    HSQ_ASSERT_EQ(cmd.verb, HSQ_CLI_STATS);
    HSQ_ASSERT_STR_EQ(cmd.endpoint, "ipc:///x");

    /* help in its three spellings, and --version */
    HSQ_OK(parse("--help", &cmd, err, sizeof err));
    HSQ_ASSERT_EQ(cmd.verb, HSQ_CLI_HELP);
    HSQ_ASSERT(cmd.topic == NULL);
    HSQ_OK(parse("help wait", &cmd, err, sizeof err));
    HSQ_ASSERT_EQ(cmd.verb, HSQ_CLI_HELP);
    HSQ_ASSERT_STR_EQ(cmd.topic, "wait");
    HSQ_OK(parse("submit --help", &cmd, err, sizeof err));
    HSQ_ASSERT_EQ(cmd.verb, HSQ_CLI_HELP);
    HSQ_ASSERT_STR_EQ(cmd.topic, "submit");
    HSQ_OK(parse("--version", &cmd, err, sizeof err));
    HSQ_ASSERT_EQ(cmd.verb, HSQ_CLI_VERSION);
    HSQ_ASSERT_EQ(hsq_cli_help(stdout, "nope"), HSQ_EINVAL); /* writes nothing */
}

static void test_small_parsers(void) {
    uint64_t v;
    HSQ_OK(hsq_cli_parse_u64("0", &v));
    HSQ_ASSERT_U64_EQ(v, 0);
    HSQ_ASSERT_EQ(hsq_cli_parse_u64("", &v), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_cli_parse_u64("+1", &v), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_cli_parse_u64(" 1", &v), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_cli_parse_u64("1k", &v), HSQ_EINVAL);

    hsq_wire_outspec o;
    HSQ_OK(hsq_cli_parse_size("1x8192", &o));
    HSQ_ASSERT_EQ(o.width, 1);
    HSQ_ASSERT_EQ(o.height, 8192);
    HSQ_ASSERT_EQ(o.format, 0);
    HSQ_OK(hsq_cli_parse_size("64x48:jpg", &o));
    HSQ_ASSERT_EQ(o.format, HSQ_FMT_JPEG);
    HSQ_ASSERT_EQ(hsq_cli_parse_size("64x", &o), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_cli_parse_size("x64", &o), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_cli_parse_size("64x64:", &o), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_cli_parse_size("64x64x64", &o), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_cli_parse_size("8193x1", &o), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_cli_parse_size("99999999999x1", &o), HSQ_EINVAL);

    hsq_state s;
    HSQ_OK(hsq_cli_parse_state("expired", &s));
    HSQ_ASSERT_EQ(s, HSQ_STATE_EXPIRED);
    HSQ_ASSERT_EQ(hsq_cli_parse_state("?", &s), HSQ_EINVAL);
    hsq_prio p;
    HSQ_OK(hsq_cli_parse_prio("low", &p));
    HSQ_ASSERT_EQ(p, HSQ_PRIO_LOW);
}

static void test_exit_codes(void) {
    HSQ_ASSERT_EQ(hsq_cli_exit_code(0), HSQ_CLI_EXIT_OK);
    HSQ_ASSERT_EQ(hsq_cli_exit_code(HSQ_EQUEUEFULL), HSQ_CLI_EXIT_REFUSED);
    HSQ_ASSERT_EQ(hsq_cli_exit_code(HSQ_ECONFLICT), HSQ_CLI_EXIT_REFUSED);
    HSQ_ASSERT_EQ(hsq_cli_exit_code(HSQ_EINTERNAL), HSQ_CLI_EXIT_REFUSED);
    HSQ_ASSERT_EQ(hsq_cli_exit_code(HSQ_EINVAL), HSQ_CLI_EXIT_USAGE);
    HSQ_ASSERT_EQ(hsq_cli_exit_code(HSQ_ENOTFOUND), HSQ_CLI_EXIT_NOTFOUND);
    HSQ_ASSERT_EQ(hsq_cli_exit_code(HSQ_ETIMEOUT), HSQ_CLI_EXIT_UNREACH);
    HSQ_ASSERT_EQ(hsq_cli_exit_code(HSQ_EUNAVAIL), HSQ_CLI_EXIT_UNREACH);
}

/* ---- JSON ---- */

static char *json_of(void (*fn)(hsq_cli_json *)) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    HSQ_ASSERT(f != NULL);
    hsq_cli_json j;
    hsq_cli_json_init(&j, f);
    fn(&j);
    fclose(f);
    return buf;
}

static void doc_nested(hsq_cli_json *j) {
    hsq_cli_json_open(j, NULL, '{');
    hsq_cli_json_u64(j, "a", UINT64_MAX);
    hsq_cli_json_i64(j, "b", INT64_MIN);
    hsq_cli_json_open(j, "c", '[');
    hsq_cli_json_bool(j, NULL, 1);
    hsq_cli_json_null(j, NULL);
    hsq_cli_json_open(j, NULL, '{');
    hsq_cli_json_close(j, '}');
    hsq_cli_json_open(j, NULL, '[');
    hsq_cli_json_close(j, ']');
    hsq_cli_json_close(j, ']');
    hsq_cli_json_str(j, "d", NULL);
    hsq_cli_json_close(j, '}');
}

static void doc_escapes(hsq_cli_json *j) {
    static const char s[] = "q\" b\\ n\n t\t c\x01 del\x7f \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 "
                            "bad\xff over\xc0\xaf sur\xed\xa0\x80 cut\xe2\x82";
    hsq_cli_json_open(j, NULL, '[');
    hsq_cli_json_strn(j, NULL, s, sizeof s - 1);
    hsq_cli_json_strn(j, NULL, "nul\0x", 5);
    hsq_cli_json_close(j, ']');
}

static void test_json(void) {
    char *out = json_of(doc_nested);
    HSQ_ASSERT_STR_EQ(out, "{\"a\":18446744073709551615,\"b\":-9223372036854775808,"
                           "\"c\":[true,null,{},[]],\"d\":null}\n");
    free(out);
    HSQ_ASSERT(hsq_utf8_valid("\xc3\xa9t\xc3\xa9", 6));
    HSQ_ASSERT(hsq_utf8_valid("", 0));
    HSQ_ASSERT(!hsq_utf8_valid("\xff", 1));
    HSQ_ASSERT(!hsq_utf8_valid("\xe2\x82", 2));
    out = json_of(doc_escapes);
    HSQ_ASSERT_STR_EQ(out, "[\"q\\\" b\\\\ n\\n t\\t c\\u0001 del\\u007f \xc3\xa9 \xe2\x82\xac "
                           "\xf0\x9f\x98\x80 bad\\ufffd over\\ufffd\\ufffd "
                           "sur\\ufffd\\ufffd\\ufffd cut\\ufffd\\ufffd\",\"nul\\u0000x\"]\n");
    free(out);
}

/* ---- the binary ---- */

typedef struct {
    int status;
    char out[8192];
    char err[8192];
} run_result;

static void slurp(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "r");
    HSQ_ASSERT(f != NULL);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* Run exe with args (NULL-terminated), stdout and stderr to temp files. */
static void run(const char *exe, const char *const *args, run_result *r) {
    char out_path[] = "/tmp/hsq-test-out-XXXXXX", err_path[] = "/tmp/hsq-test-err-XXXXXX";
    int fo = mkstemp(out_path), fe = mkstemp(err_path);
    HSQ_ASSERT(fo >= 0 && fe >= 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fo, 1);
    posix_spawn_file_actions_adddup2(&fa, fe, 2);
    char *argv[MAXARGS + 2];
    int n = 0;
    argv[n++] = (char *)exe;
    for (; args[n - 1] && n <= MAXARGS; n++)
        argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    pid_t pid;
    HSQ_OK(posix_spawn(&pid, exe, &fa, NULL, argv, environ));
    posix_spawn_file_actions_destroy(&fa);
    int st;
    HSQ_ASSERT(waitpid(pid, &st, 0) == pid);
    HSQ_ASSERT(WIFEXITED(st));
    r->status = WEXITSTATUS(st);
    close(fo);
    close(fe);
    slurp(out_path, r->out, sizeof r->out);
    slurp(err_path, r->err, sizeof r->err);
    unlink(out_path);
    unlink(err_path);
}

static void test_binary(const char *exe) {
    run_result r;

    const char *help[] = {"--help", NULL};
    run(exe, help, &r);
    HSQ_ASSERT_EQ(r.status, 0);
    HSQ_ASSERT(strstr(r.out, "usage: hsq") != NULL);
    HSQ_ASSERT(strstr(r.out, "Exit status") != NULL);
    HSQ_ASSERT_STR_EQ(r.err, "");

    const char *sub_help[] = {"result", "--help", NULL};
    run(exe, sub_help, &r);
    HSQ_ASSERT_EQ(r.status, 0);
    HSQ_ASSERT(strstr(r.out, "usage: hsq result") != NULL);

    const char *bad[] = {"submit", "--user", "u", NULL};
    run(exe, bad, &r);
    HSQ_ASSERT_EQ(r.status, HSQ_CLI_EXIT_USAGE);
    HSQ_ASSERT(strncmp(r.err, "hsq: invalid_argument: ", 23) == 0);
    HSQ_ASSERT_STR_EQ(r.out, "");

    const char *bad_json[] = {"--json", "nosuch", NULL};
    run(exe, bad_json, &r);
    HSQ_ASSERT_EQ(r.status, HSQ_CLI_EXIT_USAGE);
    HSQ_ASSERT(strncmp(r.out, "{\"error\":{\"code\":\"invalid_argument\",\"message\":", 46) == 0);

    /* Nothing listens on a path in a fresh empty directory: exit 4. */
    char dir[] = "/tmp/hsq-test-dir-XXXXXX";
    HSQ_ASSERT(mkdtemp(dir) != NULL);
    char ep[128];
    snprintf(ep, sizeof ep, "ipc://%s/none.sock", dir);
    const char *unreach[] = {"-e", ep, "--timeout", "200", "stats", NULL};
    run(exe, unreach, &r);
    HSQ_ASSERT_EQ(r.status, HSQ_CLI_EXIT_UNREACH);
    HSQ_ASSERT(strncmp(r.err, "hsq: unavailable: ", 18) == 0);

    /* A photo that cannot be read is a local I/O error (5), found before any
     * request is sent. */
    char photo[200];
    snprintf(photo, sizeof photo, "%s/missing.jpg", dir);
    const char *noread[] = {"-e", ep, "submit", "--user", "u", photo, NULL};
    run(exe, noread, &r);
    HSQ_ASSERT_EQ(r.status, HSQ_CLI_EXIT_IO);
    HSQ_ASSERT(strncmp(r.err, "hsq: io_error: ", 15) == 0);
    rmdir(dir);
}

int main(int argc, char **argv) {
    test_usage_errors();
    test_submit();
    test_other_commands();
    test_small_parsers();
    test_exit_codes();
    test_json();
    if (argc > 1)
        test_binary(argv[1]);
    else
        fprintf(stderr, "no hsq binary given: skipping the binary checks\n");
    return 0;
}
