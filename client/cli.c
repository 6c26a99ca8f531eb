/* cli.c - the `hsq` command-line client (docs/cli.md is its reference).
 *
 * A thin shell over libhsq: parse argv (cli_args.c), make one or a few
 * library calls, print the answer as aligned text or as one JSON object, and
 * map the outcome to the documented exit codes. Errors go to stderr as
 * "hsq: <error name>: <message>"; with --json the same error is also printed
 * on stdout as {"error":{"code":...,"message":...}} so scripts read one object
 * whatever happened.
 */
#include "client/cli_args.h"
#include "client/cli_json.h"
#include "client/cli_retention.h"
#include "client/hsq.h"

#include "common/alloc.h"
#include "common/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#ifndef HSQ_VERSION
#define HSQ_VERSION "dev"
#endif

#define IO_ERROR_NAME "io_error" /* local I/O failures: exit 5 */

typedef struct {
    const hsq_cli_cmd *cmd;
    hsq_client *c;
    hsq_cli_json j;
} cli;

/* ---- errors ---- */

__attribute__((format(printf, 4, 5))) static int fail(cli *x, int exit_code, const char *name,
                                                      const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "hsq: %s: %s\n", name, msg);
    if (x && x->cmd->json) {
        hsq_cli_json_init(&x->j, stdout);
        hsq_cli_json_open(&x->j, NULL, '{');
        hsq_cli_json_open(&x->j, "error", '{');
        hsq_cli_json_str(&x->j, "code", name);
        hsq_cli_json_str(&x->j, "message", msg);
        hsq_cli_json_close(&x->j, '}');
        hsq_cli_json_close(&x->j, '}');
    }
    return exit_code;
}

/* A library call failed with rc: report it with the library's message. */
static int fail_lib(cli *x, int rc) {
    const char *msg = x->c ? hsq_client_errmsg(x->c) : "";
    if (!msg || !*msg)
        msg = hsq_strerror(rc);
    return fail(x, hsq_cli_exit_code(rc), hsq_errname(rc), "%s", msg);
}

/* ---- text output helpers ---- */

/* Print a string from the daemon with control characters replaced, so that
 * a user id or message cannot drive the terminal. */
static void put_view(hsq_str s) {
    if (s.len == 0) {
        fputs("-", stdout);
        return;
    }
    for (size_t i = 0; i < s.len; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        fputc(ch < 0x20 || ch == 0x7f ? '?' : ch, stdout);
    }
}

static void put_key(const char *k) {
    printf("%-10s ", k);
}


static void hex(const uint8_t *p, size_t n, char *out) {
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static const char *state_name(uint8_t s) {
    return hsq_state_name((hsq_state)s);
}

static const char *fmt_name(uint8_t f) {
    return hsq_fmt_name((hsq_fmt)f);
}

static const char *err_name(int32_t code) {
    return code ? hsq_errname(code) : "";
}

/* ---- task output ---- */

/* The settings as the worker applies them (defaults filled in), or 0 when
 * the stored map cannot be read. */
static int task_settings(const hsq_wire_task *t, hsq_wire_settings *s) {
    char e[160];
    if (hsq_wire_settings_decode(t->settings, s, e, sizeof e) != 0)
        return 0;
    if (s->n_backgrounds == 0) {
        s->n_backgrounds = 1;
        s->backgrounds[0] = (hsq_wire_background){HSQ_BG_VIGNETTE, {214, 214, 214}, {0, 0, 0}, 0};
    }
    if (s->n_styles == 0) {
        s->n_styles = 1;
        s->styles[0] = (hsq_wire_style){HSQ_STR_LIT("natural"), 30, 50, 30, 80};
    }
    return 1;
}

/* "vignette #d6d6d6", "gradient #ffffff-#203040", "reference blur 8" */
static void describe_bg(const hsq_wire_background *b, char *out, size_t cap) {
    switch (b->kind) {
    case HSQ_BG_GRADIENT:
        snprintf(out, cap, "gradient #%02x%02x%02x-#%02x%02x%02x", b->color[0], b->color[1],
                 b->color[2], b->color2[0], b->color2[1], b->color2[2]);
        break;
    case HSQ_BG_REFERENCE:
        snprintf(out, cap, "reference blur %u", b->blur_px);
        break;
    default:
        snprintf(out, cap, "%s #%02x%02x%02x", hsq_bg_name((hsq_bg_kind)b->kind), b->color[0],
                 b->color[1], b->color[2]);
        break;
    }
}

static void json_combination(hsq_cli_json *j, const hsq_wire_task *t, const hsq_wire_output *o) {
    hsq_wire_settings s;
    char bg[64];
    hsq_cli_json_u64(j, "background", o->background);
    hsq_cli_json_u64(j, "style", o->style);
    hsq_cli_json_u64(j, "spec", o->spec);
    if (task_settings(t, &s) && o->background < s.n_backgrounds && o->style < s.n_styles) {
        describe_bg(&s.backgrounds[o->background], bg, sizeof bg);
        hsq_cli_json_str(j, "background_desc", bg);
        hsq_cli_json_strn(j, "style_name", s.styles[o->style].name.ptr,
                          s.styles[o->style].name.len);
    }
}

static void json_info(hsq_cli_json *j, const hsq_wire_task *t) {
    hsq_wire_info in;
    char e[160];
    if (!t->info.len || hsq_wire_info_decode(t->info, &in, e, sizeof e) != 0) {
        hsq_cli_json_null(j, "info");
        return;
    }
    hsq_cli_json_open(j, "info", '{');
    hsq_cli_json_u64(j, "faces", in.faces);
    hsq_cli_json_u64(j, "face_score", in.face_score);
    hsq_cli_json_strn(j, "backend", in.backend.ptr, in.backend.len);
    hsq_cli_json_open(j, "stages", '{');
    for (uint32_t i = 0; i < in.n_stages; i++) {
        char name[40];
        snprintf(name, sizeof name, "%.*s", (int)in.stages[i].name.len, in.stages[i].name.ptr);
        hsq_cli_json_u64(j, name, in.stages[i].ms);
    }
    hsq_cli_json_close(j, '}');
    hsq_cli_json_close(j, '}');
}

static void json_task_members(hsq_cli_json *j, const hsq_wire_task *t) {
    char sha[65];
    hsq_cli_json_u64(j, "id", t->id);
    hsq_cli_json_strn(j, "user", t->user.ptr, t->user.len);
    if (t->key.len)
        hsq_cli_json_strn(j, "key", t->key.ptr, t->key.len);
    else
        hsq_cli_json_null(j, "key");
    hsq_cli_json_str(j, "state", state_name(t->state));
    hsq_cli_json_str(j, "prio", hsq_prio_name((hsq_prio)t->prio));
    hsq_cli_json_u64(j, "attempts", t->attempts);
    hsq_cli_json_u64(j, "progress", t->progress);
    hsq_cli_json_strn(j, "stage", t->stage.ptr, t->stage.len);
    hsq_cli_json_i64(j, "created_ms", t->created_ms);
    hsq_cli_json_i64(j, "updated_ms", t->updated_ms);
    hsq_cli_json_i64(j, "expires_ms", t->expires_ms);
    hsq_cli_json_i64(j, "uploads_expire_ms", t->uploads_expire_ms);
    hsq_cli_json_i64(j, "refs_expire_ms", t->refs_expire_ms);
    if (t->err_code) {
        hsq_cli_json_open(j, "error", '{');
        hsq_cli_json_str(j, "code", err_name(t->err_code));
        hsq_cli_json_strn(j, "message", t->err_msg.ptr, t->err_msg.len);
        hsq_cli_json_close(j, '}');
    } else {
        hsq_cli_json_null(j, "error");
    }
    hsq_cli_json_u64(j, "inputs", t->n_inputs);
    hsq_cli_json_open(j, "outputs", '[');
    for (uint32_t i = 0; i < t->n_outputs && i < HSQ_MAX_OUTPUTS; i++) {
        const hsq_wire_output *o = &t->outputs[i];
        hex(o->sha256, sizeof o->sha256, sha);
        hsq_cli_json_open(j, NULL, '{');
        hsq_cli_json_u64(j, "width", o->width);
        hsq_cli_json_u64(j, "height", o->height);
        hsq_cli_json_str(j, "format", fmt_name(o->format));
        hsq_cli_json_u64(j, "size", o->size);
        hsq_cli_json_str(j, "sha256", sha);
        hsq_cli_json_strn(j, "blob", o->key.ptr, o->key.len);
        json_combination(j, t, o);
        hsq_cli_json_close(j, '}');
    }
    hsq_cli_json_close(j, ']');
    json_info(j, t);
}

static void text_task(const hsq_wire_task *t) {
    char tb[80], sha[65];
    put_key("task:");
    printf("%" PRIu64 "\n", t->id);
    put_key("user:");
    put_view(t->user);
    putchar('\n');
    put_key("key:");
    put_view(t->key);
    putchar('\n');
    put_key("state:");
    printf("%s\n", state_name(t->state));
    put_key("prio:");
    printf("%s\n", hsq_prio_name((hsq_prio)t->prio));
    put_key("attempts:");
    printf("%" PRIu32 "\n", t->attempts);
    put_key("progress:");
    printf("%" PRIu32 "%%", t->progress);
    if (t->stage.len) {
        putchar(' ');
        put_view(t->stage);
    }
    putchar('\n');
    hsq_cli_iso_time(t->created_ms, tb, sizeof tb);
    put_key("created:");
    printf("%s\n", tb);
    hsq_cli_iso_time(t->updated_ms, tb, sizeof tb);
    put_key("updated:");
    printf("%s\n", tb);
    hsq_cli_iso_time(t->expires_ms, tb, sizeof tb);
    put_key("expires:");
    printf("%s (outputs and metadata)\n", tb);
    hsq_cli_iso_time(t->uploads_expire_ms, tb, sizeof tb);
    put_key("uploads:");
    printf("%s (portraits deleted)\n", tb);
    hsq_cli_iso_time(t->refs_expire_ms, tb, sizeof tb);
    put_key("refs:");
    printf("%s (clothing and background deleted)\n", tb);
    if (t->err_code) {
        put_key("error:");
        printf("%s: ", err_name(t->err_code));
        put_view(t->err_msg);
        putchar('\n');
    }
    put_key("inputs:");
    printf("%" PRIu32 "\n", t->n_inputs);
    put_key("outputs:");
    printf("%" PRIu32 "\n", t->n_outputs);
    for (uint32_t i = 0; i < t->n_outputs && i < HSQ_MAX_OUTPUTS; i++) {
        const hsq_wire_output *o = &t->outputs[i];
        hex(o->sha256, sizeof o->sha256, sha);
        printf("  %" PRIu32 ": %" PRIu32 "x%" PRIu32 " %s, %" PRIu64 " bytes, sha256 %s\n", i,
               o->width, o->height, fmt_name(o->format), o->size, sha);
        hsq_wire_settings st;
        char bg[64];
        if (task_settings(t, &st) && o->background < st.n_backgrounds && o->style < st.n_styles) {
            describe_bg(&st.backgrounds[o->background], bg, sizeof bg);
            printf("     background %u (%s), style %u (%.*s), size %u\n", o->background, bg,
                   o->style, (int)st.styles[o->style].name.len, st.styles[o->style].name.ptr,
                   o->spec);
        }
    }
    hsq_wire_info in;
    char e[160];
    if (t->info.len && hsq_wire_info_decode(t->info, &in, e, sizeof e) == 0) {
        put_key("faces:");
        printf("%u (score %.3f)\n", in.faces, in.face_score / 1000.0);
        put_key("timings:");
        uint32_t total = 0;
        for (uint32_t i = 0; i < in.n_stages; i++) {
            printf("%s%.*s %u ms", i ? ", " : "", (int)in.stages[i].name.len,
                   in.stages[i].name.ptr, in.stages[i].ms);
            total += in.stages[i].ms;
        }
        printf(" (%u ms, %.*s)\n", total, (int)in.backend.len, in.backend.ptr);
    }
}

static void print_task(cli *x, const hsq_wire_task *t, int timed_out) {
    if (x->cmd->json) {
        hsq_cli_json_open(&x->j, NULL, '{');
        json_task_members(&x->j, t);
        if (timed_out >= 0)
            hsq_cli_json_bool(&x->j, "timed_out", timed_out);
        hsq_cli_json_close(&x->j, '}');
    } else {
        text_task(t);
    }
}

/* ---- local files ---- */

/* Read a whole regular file into a malloc'd buffer.
 * Errors: -errno, HSQ_ETOOLARGE (over one frame), HSQ_EINVAL (empty). */
static int read_file(const char *path, uint8_t **out, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = 0;
    uint8_t *buf = NULL;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        goto out;
    }
    if (st.st_size == 0) {
        rc = HSQ_EINVAL;
        goto out;
    }
    if ((uint64_t)st.st_size > HSQ_MAX_FRAME_BYTES) {
        rc = HSQ_ETOOLARGE;
        goto out;
    }
    size_t n = (size_t)st.st_size, got = 0;
    if (!(buf = hsq_trymalloc(n))) {
        rc = -ENOMEM;
        goto out;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        if (r == 0)
            break; /* shrank while reading: send what is there */
        got += (size_t)r;
    }
    *out = buf;
    *len = got;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}

static int read_fail(cli *x, const char *path, int rc) {
    if (rc == HSQ_ETOOLARGE)
        return fail(x, HSQ_CLI_EXIT_USAGE, hsq_errname(rc), "%s: larger than %u bytes", path,
                    (unsigned)HSQ_MAX_FRAME_BYTES);
    if (rc == HSQ_EINVAL)
        return fail(x, HSQ_CLI_EXIT_USAGE, hsq_errname(rc), "%s: empty file", path);
    if (rc == -EINVAL)
        return fail(x, HSQ_CLI_EXIT_IO, IO_ERROR_NAME, "%s: not a regular file", path);
    return fail(x, HSQ_CLI_EXIT_IO, IO_ERROR_NAME, "cannot read %s: %s", path, strerror(-rc));
}

/* The name sent with an image: the file's base name, or none when it is too
 * long or not UTF-8 (the protocol carries UTF-8 only; the name is cosmetic). */
static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    s = s ? s + 1 : path;
    size_t n = strlen(s);
    return n <= HSQ_MAX_NAME_LEN && hsq_utf8_valid(s, n) ? s : NULL;
}

/* Write data to dir/name atomically: temp file in dir, fsync, rename, then
 * fsync the directory. The file gets the usual umask-derived mode. */
static int write_atomic(int dirfd, const char *dir, const char *name, const void *data, size_t len,
                        mode_t mode) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, name) >= sizeof tmp)
        return -ENAMETOOLONG;
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = 0;
    const uint8_t *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, p + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = -errno;
            break;
        }
        done += (size_t)w;
    }
    if (rc == 0 && fchmod(fd, mode) != 0)
        rc = -errno;
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    char path[4096];
    if (rc == 0 && (size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        rc = -ENAMETOOLONG;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0) {
        unlink(tmp);
        return rc;
    }
    if (fsync(dirfd) != 0)
        return -errno;
    return 0;
}

/* ---- commands ---- */

static int cmd_submit(cli *x) {
    const hsq_cli_cmd *cmd = x->cmd;
    hsq_client_input inputs[HSQ_MAX_INPUTS];
    uint8_t *bufs[HSQ_MAX_INPUTS] = {0};
    size_t n = 0;
    int ret = HSQ_CLI_EXIT_OK;

    /* Portraits first, then the references; the parser bounded the total. */
    const char *paths[HSQ_MAX_INPUTS + 2], *kinds[HSQ_MAX_INPUTS + 2];
    size_t nf = 0;
    for (size_t i = 0; i < cmd->n_photos; i++, nf++) {
        paths[nf] = cmd->photos[i];
        kinds[nf] = "portrait";
    }
    if (cmd->clothing) {
        paths[nf] = cmd->clothing;
        kinds[nf++] = "clothing";
    }
    if (cmd->background) {
        paths[nf] = cmd->background;
        kinds[nf++] = "background";
    }

    for (; n < nf && n < HSQ_MAX_INPUTS; n++) {
        size_t len = 0;
        int rc = read_file(paths[n], &bufs[n], &len);
        if (rc != 0) {
            ret = read_fail(x, paths[n], rc);
            goto out;
        }
        inputs[n] = (hsq_client_input){kinds[n], base_name(paths[n]), bufs[n], len};
    }

    hsq_client_job job = {
        .user = cmd->user,
        .key = cmd->key,
        .prio = cmd->prio,
        .prompt = cmd->prompt,
        .n_inputs = n,
        .inputs = inputs,
        .n_outputs = cmd->n_outputs,
        .outputs = cmd->outputs,
        .settings = cmd->settings.n_backgrounds || cmd->settings.n_styles || cmd->settings.dpi
                        ? &cmd->settings
                        : NULL,
        .keep_uploads_s = cmd->keep_uploads_s,
        .keep_outputs_s = cmd->keep_outputs_s,
    };
    hsq_rep_submit rep;
    int rc = hsq_client_submit(x->c, &job, &rep);
    if (rc != 0) {
        ret = fail_lib(x, rc);
        goto out;
    }
    if (cmd->json) {
        hsq_cli_json_open(&x->j, NULL, '{');
        hsq_cli_json_u64(&x->j, "task", rep.task);
        hsq_cli_json_str(&x->j, "state", state_name(rep.state));
        hsq_cli_json_bool(&x->j, "created", rep.created);
        hsq_cli_json_close(&x->j, '}');
    } else {
        put_key("task:");
        printf("%" PRIu64 "\n", rep.task);
        put_key("state:");
        printf("%s\n", state_name(rep.state));
        put_key("created:");
        printf("%s\n", rep.created ? "yes" : "no (same user and key as an earlier submit)");
    }
out:
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    return ret;
}

static int cmd_task(cli *x) {
    const hsq_cli_cmd *cmd = x->cmd;
    hsq_wire_task t;
    int rc;
    switch (cmd->verb) {
    case HSQ_CLI_STATUS:
        rc = hsq_client_status(x->c, cmd->task, cmd->user, &t);
        break;
    case HSQ_CLI_CANCEL:
        rc = hsq_client_cancel(x->c, cmd->task, cmd->user, &t);
        break;
    default:
        rc = hsq_client_requeue(x->c, cmd->task, cmd->user, &t);
        break;
    }
    if (rc != 0)
        return fail_lib(x, rc);
    print_task(x, &t, -1);
    return HSQ_CLI_EXIT_OK;
}

static int cmd_wait(cli *x) {
    const hsq_cli_cmd *cmd = x->cmd;
    uint64_t start = hsq_clock_mono_ms();
    uint64_t total_ms = cmd->wait_s * 1000;
    hsq_wire_task t;
    int timed_out = 0;
    /* The daemon bounds one wait at HSQ_MAX_WAIT_MS: wait in slices. */
    for (;;) {
        uint64_t spent = hsq_clock_mono_ms() - start;
        uint64_t left = spent < total_ms ? total_ms - spent : 0;
        uint32_t slice = left > HSQ_MAX_WAIT_MS ? HSQ_MAX_WAIT_MS : (uint32_t)left;
        int rc = hsq_client_wait(x->c, cmd->task, cmd->user, cmd->since, slice, &t, &timed_out);
        if (rc != 0)
            return fail_lib(x, rc);
        if (!timed_out || slice == left)
            break;
    }
    print_task(x, &t, timed_out);
    if (timed_out) {
        fprintf(stderr, "hsq: %s: task %" PRIu64 " is still %s after %" PRIu64 " s\n",
                hsq_errname(HSQ_ETIMEOUT), t.id, state_name(t.state), cmd->wait_s);
        return HSQ_CLI_EXIT_UNREACH;
    }
    switch (t.state) {
    case HSQ_STATE_FAILED:
    case HSQ_STATE_CANCELLED:
    case HSQ_STATE_EXPIRED:
        return HSQ_CLI_EXIT_TASKFAIL;
    default:
        return HSQ_CLI_EXIT_OK;
    }
}

static int cmd_result(cli *x) {
    const hsq_cli_cmd *cmd = x->cmd;
    hsq_client_res *res = NULL;
    int rc = hsq_client_result(x->c, cmd->task, cmd->user, &res);
    if (rc != 0)
        return fail_lib(x, rc);

    int ret = HSQ_CLI_EXIT_OK, dirfd = -1;
    char names[HSQ_MAX_OUTPUTS][64];
    char sums[HSQ_MAX_OUTPUTS][65];
    if (res->n == 0) {
        ret = fail(x, HSQ_CLI_EXIT_REFUSED, hsq_errname(HSQ_ECONFLICT),
                   "task %" PRIu64 " is %s and has no outputs", cmd->task,
                   state_name(res->task.state));
        goto out;
    }
    /* Check every output before writing any, so a bad result leaves nothing. */
    for (uint32_t i = 0; i < res->n; i++) {
        uint8_t sum[crypto_hash_sha256_BYTES];
        crypto_hash_sha256(sum, res->data[i].ptr, res->data[i].len);
        if (memcmp(sum, res->task.outputs[i].sha256, sizeof sum) != 0) {
            ret = fail(x, HSQ_CLI_EXIT_REFUSED, hsq_errname(HSQ_ECORRUPT),
                       "output %" PRIu32 " of task %" PRIu64 " does not match its sha256", i,
                       cmd->task);
            goto out;
        }
        hex(sum, sizeof sum, sums[i]);
        snprintf(names[i], sizeof names[i], "%" PRIu64 "-%" PRIu32 ".%s", cmd->task, i,
                 res->task.outputs[i].format == HSQ_FMT_PNG ? "png" : "jpg");
    }
    if (mkdir(cmd->outdir, 0777) != 0 && errno != EEXIST) {
        ret = fail(x, HSQ_CLI_EXIT_IO, IO_ERROR_NAME, "cannot create %s: %s", cmd->outdir,
                   strerror(errno));
        goto out;
    }
    dirfd = open(cmd->outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        ret = fail(x, HSQ_CLI_EXIT_IO, IO_ERROR_NAME, "cannot open %s: %s", cmd->outdir,
                   strerror(errno));
        goto out;
    }
    mode_t mask = umask(0);
    umask(mask);
    for (uint32_t i = 0; i < res->n; i++) {
        rc = write_atomic(dirfd, cmd->outdir, names[i], res->data[i].ptr, res->data[i].len,
                          0666 & ~mask);
        if (rc != 0) {
            ret = fail(x, HSQ_CLI_EXIT_IO, IO_ERROR_NAME, "cannot write %s/%s: %s", cmd->outdir,
                       names[i], strerror(-rc));
            goto out;
        }
    }
    if (cmd->json) {
        hsq_cli_json_open(&x->j, NULL, '{');
        hsq_cli_json_u64(&x->j, "task", cmd->task);
        hsq_cli_json_open(&x->j, "files", '[');
    }
    for (uint32_t i = 0; i < res->n; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", cmd->outdir, names[i]);
        const hsq_wire_output *o = &res->task.outputs[i];
        if (cmd->json) {
            hsq_cli_json_open(&x->j, NULL, '{');
            hsq_cli_json_str(&x->j, "path", path);
            hsq_cli_json_u64(&x->j, "width", o->width);
            hsq_cli_json_u64(&x->j, "height", o->height);
            hsq_cli_json_str(&x->j, "format", fmt_name(o->format));
            hsq_cli_json_u64(&x->j, "size", o->size);
            hsq_cli_json_str(&x->j, "sha256", sums[i]);
            json_combination(&x->j, &res->task, o);
            hsq_cli_json_close(&x->j, '}');
        } else {
            printf("%s\n", path);
        }
    }
    if (cmd->json) {
        hsq_cli_json_close(&x->j, ']');
        json_info(&x->j, &res->task);
        hsq_cli_json_close(&x->j, '}');
    }
out:
    if (dirfd >= 0)
        close(dirfd);
    hsq_client_res_free(&res);
    return ret;
}

static int cmd_list(cli *x) {
    const hsq_cli_cmd *cmd = x->cmd;
    hsq_rep_list page;
    int rc = hsq_client_list(x->c, cmd->user, cmd->limit, cmd->before, &page);
    if (rc != 0)
        return fail_lib(x, rc);
    if (cmd->json) {
        hsq_cli_json_open(&x->j, NULL, '{');
        hsq_cli_json_open(&x->j, "tasks", '[');
        for (uint32_t i = 0; i < page.n; i++) {
            hsq_cli_json_open(&x->j, NULL, '{');
            json_task_members(&x->j, &page.tasks[i]);
            hsq_cli_json_close(&x->j, '}');
        }
        hsq_cli_json_close(&x->j, ']');
        hsq_cli_json_u64(&x->j, "next", page.next);
        hsq_cli_json_close(&x->j, '}');
        return HSQ_CLI_EXIT_OK;
    }
    printf("%-20s %-10s %-6s %4s %3s %-24s %3s %s\n", "ID", "STATE", "PRIO", "PROG", "ATT",
           "CREATED", "OUT", "ERROR");
    for (uint32_t i = 0; i < page.n; i++) {
        const hsq_wire_task *t = &page.tasks[i];
        char tb[80];
        hsq_cli_iso_time(t->created_ms, tb, sizeof tb);
        printf("%-20" PRIu64 " %-10s %-6s %3" PRIu32 "%% %3" PRIu32 " %-24s %3" PRIu32 " %s\n",
               t->id, state_name(t->state), hsq_prio_name((hsq_prio)t->prio), t->progress,
               t->attempts, tb, t->n_outputs, t->err_code ? err_name(t->err_code) : "-");
    }
    if (page.next)
        printf("next: %" PRIu64 "  (hsq list --user %s --before %" PRIu64 ")\n", page.next,
               cmd->user, page.next);
    return HSQ_CLI_EXIT_OK;
}

static int cmd_stats(cli *x) {
    hsq_wire_stats s;
    int rc = hsq_client_stats(x->c, &s);
    if (rc != 0)
        return fail_lib(x, rc);
    const struct {
        const char *name;
        uint64_t v;
    } rows[] = {
        {"queued", s.queued},
        {"queued_high", s.queued_by_prio[HSQ_PRIO_HIGH]},
        {"queued_normal", s.queued_by_prio[HSQ_PRIO_NORMAL]},
        {"queued_low", s.queued_by_prio[HSQ_PRIO_LOW]},
        {"delayed", s.delayed},
        {"leased", s.leased},
        {"succeeded", s.succeeded},
        {"failed", s.failed},
        {"dead", s.dead},
        {"cancelled", s.cancelled},
        {"expired", s.expired},
        {"workers", s.workers},
        {"workers_busy", s.workers_busy},
        {"submitted_total", s.submitted_total},
        {"completed_total", s.completed_total},
        {"retries_total", s.retries_total},
        {"uptime_s", s.uptime_s},
    };
    size_t nrows = sizeof rows / sizeof rows[0];
    if (x->cmd->json) {
        hsq_cli_json_open(&x->j, NULL, '{');
        for (size_t i = 0; i < nrows; i++)
            hsq_cli_json_u64(&x->j, rows[i].name, rows[i].v);
        hsq_cli_json_i64(&x->j, "oldest_queued_ms", s.oldest_queued_ms);
        hsq_cli_json_close(&x->j, '}');
        return HSQ_CLI_EXIT_OK;
    }
    for (size_t i = 0; i < nrows; i++)
        printf("%-17s %12" PRIu64 "\n", rows[i].name, rows[i].v);
    char tb[80];
    hsq_cli_iso_time(s.oldest_queued_ms, tb, sizeof tb);
    printf("%-17s %12s\n", "oldest_queued", tb);
    return HSQ_CLI_EXIT_OK;
}

/* ---- credits ---- */

static int cmd_credits(cli *x) {
    hsq_rep_credits r;
    int rc = hsq_client_credits(x->c, x->cmd->user, x->cmd->grant, &r);
    if (rc != 0)
        return fail_lib(x, rc);
    if (x->cmd->json) {
        hsq_cli_json_open(&x->j, NULL, '{');
        hsq_cli_json_strn(&x->j, "user", r.user.ptr, r.user.len);
        if (x->cmd->grant)
            hsq_cli_json_i64(&x->j, "granted", x->cmd->grant);
        hsq_cli_json_i64(&x->j, "balance", r.balance);
        hsq_cli_json_i64(&x->j, "reserved", r.reserved);
        hsq_cli_json_i64(&x->j, "available", r.balance - r.reserved);
        hsq_cli_json_close(&x->j, '}');
        return HSQ_CLI_EXIT_OK;
    }
    fputs("user       ", stdout);
    put_view(r.user);
    putchar('\n');
    if (x->cmd->grant)
        printf("granted    %" PRId64 "\n", x->cmd->grant);
    printf("balance    %" PRId64 "\n", r.balance);
    printf("reserved   %" PRId64 "  (held by queued and running tasks)\n", r.reserved);
    printf("available  %" PRId64 "\n", r.balance - r.reserved);
    return HSQ_CLI_EXIT_OK;
}

/* ---- top ---- */

static volatile sig_atomic_t top_quit;

static void top_on_signal(int sig) {
    (void)sig;
    top_quit = 1;
}

static void top_frame(const hsq_wire_stats *s, const hsq_wire_stats *prev, double dt_s,
                      int clear) {
    double sub, done;
    const char *per;
    if (prev && dt_s > 0) {
        sub = (double)(s->submitted_total - prev->submitted_total) / dt_s;
        done = (double)(s->completed_total - prev->completed_total) / dt_s;
        per = "/s";
    } else {
        /* No earlier sample: the average since hsqd started. */
        double up = s->uptime_s ? (double)s->uptime_s : 1.0;
        sub = (double)s->submitted_total / up;
        done = (double)s->completed_total / up;
        per = "/s avg";
    }
    char age[32] = "-";
    if (s->oldest_queued_ms > 0) {
        int64_t a = hsq_clock_wall_ms() - s->oldest_queued_ms;
        snprintf(age, sizeof age, "%.1fs", a > 0 ? (double)a / 1000.0 : 0.0);
    }
    if (clear)
        fputs("\033[H\033[2J", stdout);
    printf("hsq top - uptime %" PRIu64 "s   (q or Ctrl-C quits)\n\n", s->uptime_s);
    printf("queue    depth %-8" PRIu64 " high %-8" PRIu64 " normal %-8" PRIu64
           " low %-8" PRIu64 " delayed %" PRIu64 "\n",
           s->queued, s->queued_by_prio[HSQ_PRIO_HIGH], s->queued_by_prio[HSQ_PRIO_NORMAL],
           s->queued_by_prio[HSQ_PRIO_LOW], s->delayed);
    printf("oldest   queued %s\n", age);
    printf("rate     submitted %.1f%s   completed %.1f%s\n", sub, per, done, per);
    uint64_t busy = s->workers_busy <= s->workers ? s->workers_busy : s->workers;
    printf("workers  %-8" PRIu64 " busy %-8" PRIu64 " idle %-8" PRIu64 " leases %" PRIu64 "\n",
           s->workers, busy, s->workers - busy, s->leased);
    printf("done     succeeded %-8" PRIu64 " failed %-8" PRIu64 " dead %-8" PRIu64
           " cancelled %-8" PRIu64 " expired %" PRIu64 "\n",
           s->succeeded, s->failed, s->dead, s->cancelled, s->expired);
    printf("retries  %" PRIu64 " since start\n", s->retries_total);
    fflush(stdout);
}

static int cmd_top(cli *x) {
    hsq_wire_stats cur, prev;
    int rc = hsq_client_stats(x->c, &cur);
    if (rc != 0)
        return fail_lib(x, rc);
    if (x->cmd->once) {
        top_frame(&cur, NULL, 0, 0);
        return HSQ_CLI_EXIT_OK;
    }
    /* Keys without Enter, no echo; restored on every way out. */
    int tty = isatty(STDIN_FILENO);
    struct termios saved, raw;
    if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
        raw = saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    } else {
        tty = 0;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = top_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    uint64_t t_prev = hsq_clock_mono_us();
    top_frame(&cur, NULL, 0, 1);
    int ret = HSQ_CLI_EXIT_OK;
    while (!top_quit) {
        struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};
        int n = poll(&pfd, 1, 1000);
        if (n > 0 && (pfd.revents & POLLIN)) {
            char ch;
            ssize_t r = read(STDIN_FILENO, &ch, 1);
            if (r == 0 && !tty)
                break; /* stdin closed: nobody can press q */
            if (r == 1 && (ch == 'q' || ch == 'Q' || ch == 3))
                break;
            continue;
        }
        if (n > 0 && (pfd.revents & (POLLHUP | POLLNVAL)) && !tty)
            break;
        if (top_quit)
            break;
        prev = cur;
        rc = hsq_client_stats(x->c, &cur);
        if (rc != 0) {
            ret = fail_lib(x, rc);
            break;
        }
        uint64_t t = hsq_clock_mono_us();
        top_frame(&cur, &prev, (double)(t - t_prev) / 1e6, 1);
        t_prev = t;
    }
    if (tty)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    return ret;
}

/* ---- keygen ---- */

/* Write one Z85 key line to a new file (never over an existing one). */
static int write_key_file(const char *path, const char *key, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    int rc = fchmod(fd, mode) == 0 ? 0 : -errno; /* whatever the umask */
    char line[41];
    memcpy(line, key, 40);
    line[40] = '\n';
    if (rc == 0 && write(fd, line, sizeof line) != (ssize_t)sizeof line)
        rc = errno ? -errno : -EIO;
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    sodium_memzero(line, sizeof line);
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0)
        unlink(path);
    return rc;
}

static int cmd_keygen(cli *x) {
    const char *prefix = x->cmd->prefix ? x->cmd->prefix : "hsq";
    char kpath[4096], ppath[4096];
    if (snprintf(kpath, sizeof kpath, "%s.key", prefix) >= (int)sizeof kpath ||
        snprintf(ppath, sizeof ppath, "%s.pub", prefix) >= (int)sizeof ppath)
        return fail(x, HSQ_CLI_EXIT_USAGE, hsq_errname(HSQ_EINVAL), "-o: prefix too long");
    if (!zmq_has("curve"))
        return fail(x, HSQ_CLI_EXIT_IO, hsq_errname(HSQ_EINTERNAL),
                    "this libzmq was built without CURVE");
    if (access(kpath, F_OK) == 0 || access(ppath, F_OK) == 0)
        return fail(x, HSQ_CLI_EXIT_IO, IO_ERROR_NAME, "%s or %s exists; not overwriting", kpath,
                    ppath);
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0)
        return fail(x, HSQ_CLI_EXIT_IO, hsq_errname(HSQ_EINTERNAL), "zmq_curve_keypair failed");
    int rc = write_key_file(kpath, sec, 0600);
    sodium_memzero(sec, sizeof sec);
    if (rc == 0 && (rc = write_key_file(ppath, pub, 0644)) != 0)
        unlink(kpath);
    if (rc != 0)
        return fail(x, HSQ_CLI_EXIT_IO, IO_ERROR_NAME, "cannot write %s.{key,pub}: %s", prefix,
                    strerror(-rc));
    if (x->cmd->json) {
        hsq_cli_json_open(&x->j, NULL, '{');
        hsq_cli_json_str(&x->j, "public_key", pub);
        hsq_cli_json_str(&x->j, "secret_key_file", kpath);
        hsq_cli_json_str(&x->j, "public_key_file", ppath);
        hsq_cli_json_close(&x->j, '}');
    } else {
        printf("public key  %s\nsecret key  %s (0600)\npublic key  %s\n", pub, kpath, ppath);
    }
    return HSQ_CLI_EXIT_OK;
}

/* ---- main ---- */

static int setup_curve(cli *x) {
    const char *sk = getenv("HSQ_CURVE_SERVERKEY");
    const char *pk = getenv("HSQ_CURVE_PUBLICKEY");
    const char *ck = getenv("HSQ_CURVE_SECRETKEY");
    int n = (sk && *sk) + (pk && *pk) + (ck && *ck);
    if (n == 0)
        return 0;
    if (n != 3)
        return fail(x, HSQ_CLI_EXIT_USAGE, hsq_errname(HSQ_EINVAL),
                    "set all of HSQ_CURVE_SERVERKEY, HSQ_CURVE_PUBLICKEY and HSQ_CURVE_SECRETKEY, "
                    "or none");
    int rc = hsq_client_set_curve(x->c, sk, pk, ck);
    return rc ? fail_lib(x, rc) : 0;
}

int main(int argc, char **argv) {
    hsq_cli_cmd cmd;
    char err[512];
    cli x = {.cmd = &cmd};
    hsq_cli_json_init(&x.j, stdout);

    if (hsq_cli_parse(argc, argv, &cmd, err, sizeof err) != 0) {
        int rc = fail(&x, HSQ_CLI_EXIT_USAGE, hsq_errname(HSQ_EINVAL), "%s", err);
        fputs("Try 'hsq --help'.\n", stderr);
        return rc;
    }
    if (cmd.verb == HSQ_CLI_HELP) {
        hsq_cli_help(stdout, cmd.topic);
        return HSQ_CLI_EXIT_OK;
    }
    if (cmd.verb == HSQ_CLI_VERSION) {
        printf("hsq %s (protocol %d)\n", HSQ_VERSION, HSQ_WIRE_VERSION);
        return HSQ_CLI_EXIT_OK;
    }
    if (sodium_init() < 0)
        return fail(&x, HSQ_CLI_EXIT_IO, hsq_errname(HSQ_EINTERNAL), "libsodium failed to start");
    if (cmd.verb == HSQ_CLI_KEYGEN) /* local: no daemon involved */
        return cmd_keygen(&x);
    if (cmd.verb == HSQ_CLI_FSCK) /* works on the data directory */
        return hsq_cli_fsck(&cmd);

    int rc = hsq_client_open(&x.c, cmd.endpoint, cmd.timeout_ms);
    if (rc != 0)
        return fail(&x, hsq_cli_exit_code(rc), hsq_errname(rc), "cannot use endpoint %s: %s",
                    cmd.endpoint ? cmd.endpoint : "(default)", hsq_strerror(rc));
    int ret = setup_curve(&x);
    if (ret == 0) {
        switch (cmd.verb) {
        case HSQ_CLI_SUBMIT:
            ret = cmd_submit(&x);
            break;
        case HSQ_CLI_STATUS:
        case HSQ_CLI_CANCEL:
        case HSQ_CLI_REQUEUE:
            ret = cmd_task(&x);
            break;
        case HSQ_CLI_WAIT:
            ret = cmd_wait(&x);
            break;
        case HSQ_CLI_RESULT:
            ret = cmd_result(&x);
            break;
        case HSQ_CLI_LIST:
            ret = cmd_list(&x);
            break;
        case HSQ_CLI_STATS:
            ret = cmd_stats(&x);
            break;
        case HSQ_CLI_TOP:
            ret = cmd_top(&x);
            break;
        case HSQ_CLI_PURGE:
            ret = hsq_cli_purge(&cmd, x.c);
            break;
        case HSQ_CLI_ERASE_USER:
            ret = hsq_cli_erase_user(&cmd, x.c);
            break;
        case HSQ_CLI_EXPORT_USER:
            ret = hsq_cli_export_user(&cmd, x.c);
            break;
        case HSQ_CLI_CREDITS:
            ret = cmd_credits(&x);
            break;
        default:
            ret = HSQ_CLI_EXIT_USAGE;
            break;
        }
    }
    hsq_client_close(&x.c);
    if (fflush(stdout) != 0 && ret == 0)
        ret = fail(NULL, HSQ_CLI_EXIT_IO, IO_ERROR_NAME, "cannot write to stdout: %s",
                   strerror(errno));
    return ret;
}
