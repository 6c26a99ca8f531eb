/* cli_retention.c - hsq purge, erase-user, export-user and fsck.
 *
 * DESIGN. `purge` asks the running hsqd (one request per 5000 index entries,
 * while the reply says more are due). When hsqd cannot be reached and a data
 * directory is known, it opens the store and the blob store itself and runs
 * hsqd's core over them: a purge request built with the codec goes through
 * hsq_queue_handle() in a turn, exactly the daemon's code path, so the
 * crash-safe deletion order, the audit line and the counters are the same.
 * The settings are hsqd's own (daemon/hsqd_conf.h: the same defaults, and
 * hsqd's config file read with hsqd's table when --config names it).
 *
 * `export-user` writes a POSIX ustar archive one task at a time (one export
 * reply in memory), the manifest into an unlinked temp file next to the
 * archive, appended last; the archive is FILE.tmp until it is complete.
 */
#include "client/cli_retention.h"

#include "client/cli_json.h"
#include "common/blob.h"
#include "common/clock.h"
#include "common/conf.h"
#include "daemon/fsck.h"
#include "daemon/hsqd_conf.h"
#include "daemon/queue.h"
#include "daemon/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IO_ERROR_NAME "io_error"
#define PURGE_CHUNK 5000
#define PURGE_PROBE_MS                                                                             \
    2000 /* how long to look for hsqd before going offline                                         \
          */

/* ---- errors and output (as in cli.c) ---- */

__attribute__((format(printf, 4, 5))) static int fail(const hsq_cli_cmd *cmd, int exit_code,
                                                      const char *name, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "hsq: %s: %s\n", name, msg);
    if (cmd->json) {
        hsq_cli_json j;
        hsq_cli_json_init(&j, stdout);
        hsq_cli_json_open(&j, NULL, '{');
        hsq_cli_json_open(&j, "error", '{');
        hsq_cli_json_str(&j, "code", name);
        hsq_cli_json_str(&j, "message", msg);
        hsq_cli_json_close(&j, '}');
        hsq_cli_json_close(&j, '}');
    }
    return exit_code;
}

static int fail_lib(const hsq_cli_cmd *cmd, hsq_client *c, int rc) {
    const char *msg = c ? hsq_client_errmsg(c) : "";
    if (!msg || !*msg)
        msg = hsq_strerror(rc);
    return fail(cmd, hsq_cli_exit_code(rc), hsq_errname(rc), "%s", msg);
}

static void human_bytes(uint64_t b, char *buf, size_t len) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%" PRIu64 " B", b);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
}

/* ---- offline settings: hsqd's own (daemon/hsqd_conf.h) ---- */

/* Settings for an offline run: hsqd's defaults, then --config (hsqd's own
 * file, read with hsqd's table), then the flags. Without either, no data
 * directory is known. Errors: -errno, HSQ_EINVAL (message in err). */
static int offline_setup(const hsq_cli_cmd *cmd, hsqd_conf *o, char *err, size_t errlen) {
    hsqd_conf_defaults(o);
    if (cmd->config) {
        int rc = hsq_conf_load(hsqd_conf_items, hsqd_conf_n_items, o, cmd->config, err, errlen);
        if (rc != 0)
            return rc;
    } else {
        hsq_conf_set_str(&o->data_dir, "");
    }
    if (cmd->data_dir)
        hsq_conf_set_str(&o->data_dir, cmd->data_dir);
    if (cmd->blob_dir)
        hsq_conf_set_str(&o->blob_dir, cmd->blob_dir);
    return 0;
}

typedef struct {
    hsq_store *st;
    hsq_blob *blob;
} data_dir;

/* Open <data_dir>/db and the blob store. Errors as hsq_store_open and
 * hsq_blob_open; err says which. */
static int data_open(const hsqd_conf *o, data_dir *d, char *err, size_t errlen) {
    char db[PATH_MAX], blobs[PATH_MAX];
    memset(d, 0, sizeof *d);
    snprintf(db, sizeof db, "%s/db", o->data_dir);
    if (o->blob_dir[0])
        snprintf(blobs, sizeof blobs, "%s", o->blob_dir);
    else
        snprintf(blobs, sizeof blobs, "%s/blobs", o->data_dir);
    struct stat sb;
    if (stat(db, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "%s is not an hsqd data directory (no db/)", o->data_dir);
        return HSQ_ENOTFOUND;
    }
    hsq_store_opts so = {o->journal, (uint32_t)o->checkpoint_ms};
    int rc = hsq_store_open_opts(&d->st, db, o->map_size, &so);
    if (rc != 0) {
        snprintf(err, errlen, "cannot open the store %.900s: %s", db, hsq_strerror(rc));
        return rc;
    }
    rc = hsq_blob_open(&d->blob, blobs);
    if (rc != 0) {
        snprintf(err, errlen, "cannot open the blob store %.900s: %s", blobs, hsq_strerror(rc));
        hsq_store_close(&d->st);
        return rc;
    }
    return 0;
}

static void data_close(data_dir *d) {
    hsq_blob_close(&d->blob);
    hsq_store_close(&d->st);
}

/* ---- purge ---- */

static void purge_add(hsq_rep_purge *sum, const hsq_rep_purge *p) {
    sum->inputs += p->inputs;
    sum->outputs += p->outputs;
    sum->tasks += p->tasks;
    sum->tombstones += p->tombstones;
    sum->cancelled += p->cancelled;
    sum->bytes += p->bytes;
    sum->errors += p->errors;
    sum->more = p->more;
    sum->dry_run = p->dry_run;
}

static void purge_print(const hsq_cli_cmd *cmd, const hsq_rep_purge *s, const char *offline) {
    if (cmd->json) {
        hsq_cli_json j;
        hsq_cli_json_init(&j, stdout);
        hsq_cli_json_open(&j, NULL, '{');
        hsq_cli_json_bool(&j, "dry_run", s->dry_run);
        hsq_cli_json_bool(&j, "offline", offline != NULL);
        if (offline)
            hsq_cli_json_str(&j, "data_dir", offline);
        hsq_cli_json_u64(&j, "inputs", s->inputs);
        hsq_cli_json_u64(&j, "outputs", s->outputs);
        hsq_cli_json_u64(&j, "tasks", s->tasks);
        hsq_cli_json_u64(&j, "tombstones", s->tombstones);
        hsq_cli_json_u64(&j, "cancelled", s->cancelled);
        hsq_cli_json_u64(&j, "bytes", s->bytes);
        hsq_cli_json_u64(&j, "errors", s->errors);
        hsq_cli_json_bool(&j, "more", s->more);
        hsq_cli_json_close(&j, '}');
        return;
    }
    char hb[32];
    human_bytes(s->bytes, hb, sizeof hb);
    const char *verb = s->dry_run ? "would delete" : "deleted";
    printf("%-12s %" PRIu64 " uploads and references, %" PRIu64 " outputs\n", verb, s->inputs,
           s->outputs);
    printf("%-12s %" PRIu64 " tasks reduced to tombstones, %" PRIu64 " tombstones removed\n", "",
           s->tasks, s->tombstones);
    printf("%-12s %" PRIu64 " unfinished tasks past retention_pending\n",
           s->dry_run ? "would cancel" : "cancelled", s->cancelled);
    printf("%-12s %s (%" PRIu64 " bytes)\n", s->dry_run ? "would free" : "freed", hb, s->bytes);
    if (s->errors)
        printf("%-12s %" PRIu64 " (blob store failures; retried a minute later)\n", "errors",
               s->errors);
    if (s->dry_run && s->more)
        printf("(more entries are due beyond the first 1000000)\n");
}

/* One purge request through hsqd's core on an open data dir. */
static int offline_turn(hsq_queue *q, uint64_t rid, int dry, uint32_t limit, hsq_rep_purge *out,
                        char *err, size_t errlen) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.v = HSQ_WIRE_VERSION;
    m.kind = HSQ_KIND_REQUEST;
    m.op = HSQ_OP_PURGE;
    m.rid = rid;
    m.req.purge.dry_run = (uint8_t)(dry != 0);
    m.req.purge.limit = limit;
    hsq_wbuf req;
    hsq_wbuf_init(&req);
    int rc = hsq_wire_encode(&m, &req);
    if (rc == 0)
        rc = hsq_queue_begin_turn(q, hsq_clock_wall_ms());
    if (rc != 0) {
        snprintf(err, errlen, "cannot start a transaction: %s", hsq_strerror(rc));
        hsq_wbuf_free(&req);
        return rc;
    }
    static const uint8_t peer[] = "hsq-purge";
    hsq_bytes frame = {(const uint8_t *)req.data, req.len};
    hsq_queue_handle(q, HSQ_SOCK_CLIENT, HSQ_ROLE_ANY, NULL, peer, sizeof peer - 1, &frame, 1);
    int trc = hsq_queue_end_turn(q);
    size_t n;
    hsq_out *outs = hsq_queue_outbox(q, &n);
    rc = HSQ_EINTERNAL;
    snprintf(err, errlen, "no reply from the core");
    for (size_t i = 0; i < n; i++) {
        if (!outs[i].is_reply || outs[i].rid != rid)
            continue;
        hsq_wire_msg r;
        rc = hsq_wire_decode(outs[i].meta.data, outs[i].meta.len, outs[i].nframes, &r);
        if (rc != 0) {
            snprintf(err, errlen, "malformed reply from the core: %s", r.errmsg);
        } else if (r.kind == HSQ_KIND_ERROR) {
            rc = r.rep.error.code;
            snprintf(err, errlen, "%.*s", (int)r.rep.error.message.len, r.rep.error.message.ptr);
        } else {
            *out = r.rep.purge;
            rc = 0;
        }
        hsq_wire_msg_free(&r);
        break;
    }
    hsq_queue_outbox_clear(q);
    hsq_wbuf_free(&req);
    if (rc == 0 && trc != 0) {
        rc = trc;
        snprintf(err, errlen, "commit failed: %s", hsq_strerror(trc));
    }
    return rc;
}

static int purge_offline(const hsq_cli_cmd *cmd, const hsqd_conf *o) {
    char err[1024] = "";
    data_dir d;
    int rc = data_open(o, &d, err, sizeof err);
    if (rc != 0)
        return fail(cmd, rc == HSQ_ENOTFOUND ? HSQ_CLI_EXIT_IO : HSQ_CLI_EXIT_REFUSED,
                    hsq_errname(rc), "%s", err);
    hsq_queue_conf qc;
    if (hsqd_conf_queue(o, &qc, err, sizeof err) != 0) {
        data_close(&d);
        return fail(cmd, HSQ_CLI_EXIT_USAGE, hsq_errname(HSQ_EINVAL), "%s", err);
    }
    /* A pass deletes thousands of files before its commit, and nobody
     * waits on this process: one syncfs per pass, not an fsync per
     * directory (blob.h). */
    hsq_blob_set_syncfs(d.blob, HSQ_BLOB_SYNCFS_MIN);
    hsq_queue *q = NULL;
    rc = hsq_queue_new(&q, d.st, d.blob, &qc, hsq_clock_wall_ms());
    if (rc != 0) {
        data_close(&d);
        return fail(cmd, HSQ_CLI_EXIT_REFUSED, hsq_errname(rc), "cannot load %s: %s", o->data_dir,
                    hsq_strerror(rc));
    }
    if (!cmd->json)
        printf("hsqd not running: purged %s directly\n", o->data_dir);
    hsq_rep_purge sum, one;
    memset(&sum, 0, sizeof sum);
    uint64_t rid = 0;
    do {
        memset(&one, 0, sizeof one);
        rc = offline_turn(q, ++rid, cmd->dry_run, cmd->dry_run ? 1000000 : PURGE_CHUNK, &one, err,
                          sizeof err);
        if (rc == 0)
            purge_add(&sum, &one);
    } while (rc == 0 && one.more && !cmd->dry_run && rid < 100000);
    hsq_queue_free(&q);
    data_close(&d);
    if (rc != 0)
        return fail(cmd, HSQ_CLI_EXIT_REFUSED, hsq_errname(rc), "purge of %s failed: %s",
                    o->data_dir, err);
    purge_print(cmd, &sum, o->data_dir);
    return HSQ_CLI_EXIT_OK;
}

int hsq_cli_purge(const hsq_cli_cmd *cmd, hsq_client *c) {
    hsqd_conf o;
    char err[1024] = "";
    int rc = offline_setup(cmd, &o, err, sizeof err);
    if (rc != 0) {
        hsqd_conf_free(&o);
        return fail(cmd, HSQ_CLI_EXIT_USAGE, hsq_errname(HSQ_EINVAL), "%s", err);
    }
    int can_offline = o.data_dir[0] != '\0';
    int ret = HSQ_CLI_EXIT_OK;
    if (can_offline) {
        /* With a fallback at hand, do not wait the full timeout for a
         * daemon that is not there; ask something cheap (a pass itself may
         * take seconds while the reaper deletes). */
        hsq_wire_stats st;
        if (cmd->timeout_ms == 0)
            hsq_client_set_timeout(c, PURGE_PROBE_MS);
        rc = hsq_client_stats(c, &st);
        hsq_client_set_timeout(c, cmd->timeout_ms);
        if (rc == HSQ_EUNAVAIL) {
            ret = purge_offline(cmd, &o);
            goto out;
        }
    }
    hsq_rep_purge sum, one;
    memset(&sum, 0, sizeof sum);
    for (int round = 0;; round++) {
        memset(&one, 0, sizeof one);
        rc = hsq_client_purge(c, cmd->dry_run, cmd->dry_run ? 1000000 : PURGE_CHUNK, &one);
        if (rc != 0) {
            ret = fail_lib(cmd, c, rc);
            goto out;
        }
        purge_add(&sum, &one);
        if (!one.more || cmd->dry_run || round > 100000)
            break;
    }
    purge_print(cmd, &sum, NULL);
out:
    hsqd_conf_free(&o);
    return ret;
}

/* ---- erase-user ---- */

static void erase_waiting(void *ud, uint64_t waited_s) {
    const hsq_cli_cmd *cmd = ud;
    if (!cmd->json)
        fprintf(stderr, "hsq: erasure still running after %" PRIu64 " s; waiting\n", waited_s);
}

int hsq_cli_erase_user(const hsq_cli_cmd *cmd, hsq_client *c) {
    hsq_rep_erase r;
    /* A user with many files takes longer than one request's wait: the
     * request stays pending (client.h, hsq_client_erase_wait). */
    int rc =
        hsq_client_erase_wait(c, cmd->user, (uint32_t)cmd->wait_s, erase_waiting, (void *)cmd, &r);
    if (rc == HSQ_ETIMEOUT)
        return fail(cmd, HSQ_CLI_EXIT_UNREACH, hsq_errname(rc),
                    "no receipt within %" PRIu64 " s; hsqd's deletion ledger completes the "
                    "erasure by itself: run erase-user again for the receipt",
                    cmd->wait_s);
    if (rc != 0)
        return fail_lib(cmd, c, rc);
    char tb[64], hb[32];
    hsq_cli_iso_time(r.at_ms, tb, sizeof tb);
    if (cmd->json) {
        hsq_cli_json j;
        hsq_cli_json_init(&j, stdout);
        hsq_cli_json_open(&j, NULL, '{');
        hsq_cli_json_u64(&j, "tasks", r.tasks);
        hsq_cli_json_u64(&j, "active", r.active);
        hsq_cli_json_u64(&j, "bytes", r.bytes);
        hsq_cli_json_i64(&j, "at_ms", r.at_ms);
        hsq_cli_json_str(&j, "at", tb);
        hsq_cli_json_strn(&j, "subject", r.subject.ptr, r.subject.len);
        hsq_cli_json_close(&j, '}');
        return HSQ_CLI_EXIT_OK;
    }
    human_bytes(r.bytes, hb, sizeof hb);
    printf("erased     %" PRIu64 " tasks (%" PRIu64 " queued or running, cancelled)\n", r.tasks,
           r.active);
    printf("freed      %s (%" PRIu64 " bytes)\n", hb, r.bytes);
    printf("completed  %s\n", tb);
    printf("subject    %.*s  (the audit log's name for this user)\n", (int)r.subject.len,
           r.subject.ptr);
    return HSQ_CLI_EXIT_OK;
}

/* ---- export-user: a ustar writer ---- */

typedef struct {
    int fd;
    uint64_t off;
    int err; /* first -errno */
} tar_out;

static void tar_write(tar_out *t, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n > 0 && t->err == 0) {
        ssize_t w = write(t->fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            t->err = -errno;
            return;
        }
        b += w;
        n -= (size_t)w;
        t->off += (uint64_t)w;
    }
}

static void tar_pad(tar_out *t) {
    static const uint8_t zero[512];
    size_t r = (size_t)(t->off % 512);
    if (r)
        tar_write(t, zero, 512 - r);
}

/* An 11-digit octal field plus NUL (sizes below 8 GiB, times below 2242). */
static void tar_octal(uint8_t *field, uint64_t v) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%011" PRIo64, (uint64_t)(v & 077777777777u));
    memcpy(field, tmp, 12);
}

/* One ustar header for a regular file of `size` bytes (names are ASCII and
 * shorter than 100 bytes: we build them). */
static void tar_header(tar_out *t, const char *name, uint64_t size, int64_t mtime_s) {
    uint8_t h[512];
    memset(h, 0, sizeof h);
    snprintf((char *)h, 100, "%s", name);
    snprintf((char *)h + 100, 8, "%07o", 0644);
    snprintf((char *)h + 108, 8, "%07o", 0);
    snprintf((char *)h + 116, 8, "%07o", 0);
    tar_octal(h + 124, size);
    tar_octal(h + 136, (uint64_t)(mtime_s > 0 ? mtime_s : 0));
    memset(h + 148, ' ', 8);
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    unsigned sum = 0;
    for (size_t i = 0; i < sizeof h; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    h[155] = ' ';
    tar_write(t, h, sizeof h);
}

static void tar_file(tar_out *t, const char *name, const void *data, size_t len, int64_t mtime_s) {
    tar_header(t, name, len, mtime_s);
    tar_write(t, data, len);
    tar_pad(t);
}

/* File extension from the bytes themselves (what the user uploaded may not
 * match its name). */
static const char *magic_ext(const uint8_t *p, size_t n) {
    if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "png";
    if (n >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
        return "jpg";
    if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return "webp";
    if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0))
        return "gif";
    return "bin";
}

static void json_settings(hsq_cli_json *j, hsq_bytes raw) {
    hsq_wire_settings s;
    char err[160];
    if (raw.len == 0) {
        hsq_cli_json_null(j, "settings");
        return;
    }
    if (hsq_wire_settings_decode(raw, &s, err, sizeof err) != 0) {
        hsq_cli_json_str(j, "settings", "(undecodable)");
        return;
    }
    hsq_cli_json_open(j, "settings", '{');
    hsq_cli_json_open(j, "backgrounds", '[');
    for (uint32_t i = 0; i < s.n_backgrounds; i++) {
        const hsq_wire_background *b = &s.backgrounds[i];
        hsq_cli_json_open(j, NULL, '{');
        hsq_cli_json_str(j, "kind", hsq_bg_name((hsq_bg_kind)b->kind));
        hsq_cli_json_open(j, "color", '[');
        for (int k = 0; k < 3; k++)
            hsq_cli_json_u64(j, NULL, b->color[k]);
        hsq_cli_json_close(j, ']');
        if (b->kind == HSQ_BG_GRADIENT) {
            hsq_cli_json_open(j, "color2", '[');
            for (int k = 0; k < 3; k++)
                hsq_cli_json_u64(j, NULL, b->color2[k]);
            hsq_cli_json_close(j, ']');
        }
        if (b->kind == HSQ_BG_REFERENCE)
            hsq_cli_json_u64(j, "blur_px", b->blur_px);
        hsq_cli_json_close(j, '}');
    }
    hsq_cli_json_close(j, ']');
    hsq_cli_json_open(j, "styles", '[');
    for (uint32_t i = 0; i < s.n_styles; i++) {
        const hsq_wire_style *st = &s.styles[i];
        hsq_cli_json_open(j, NULL, '{');
        hsq_cli_json_strn(j, "name", st->name.ptr, st->name.len);
        hsq_cli_json_u64(j, "retouch", st->retouch);
        hsq_cli_json_u64(j, "tone", st->tone);
        hsq_cli_json_u64(j, "sharpen", st->sharpen);
        hsq_cli_json_u64(j, "clothing", st->clothing);
        hsq_cli_json_close(j, '}');
    }
    hsq_cli_json_close(j, ']');
    hsq_cli_json_u64(j, "dpi", s.dpi);
    hsq_cli_json_close(j, '}');
}

static void json_info(hsq_cli_json *j, hsq_bytes raw) {
    hsq_wire_info in;
    char err[160];
    if (raw.len == 0) {
        hsq_cli_json_null(j, "info");
        return;
    }
    if (hsq_wire_info_decode(raw, &in, err, sizeof err) != 0) {
        hsq_cli_json_str(j, "info", "(undecodable)");
        return;
    }
    hsq_cli_json_open(j, "info", '{');
    hsq_cli_json_u64(j, "faces", in.faces);
    hsq_cli_json_u64(j, "face_score", in.face_score);
    hsq_cli_json_strn(j, "backend", in.backend.ptr, in.backend.len);
    hsq_cli_json_open(j, "stages", '[');
    for (uint32_t i = 0; i < in.n_stages; i++) {
        hsq_cli_json_open(j, NULL, '{');
        hsq_cli_json_strn(j, "name", in.stages[i].name.ptr, in.stages[i].name.len);
        hsq_cli_json_u64(j, "ms", in.stages[i].ms);
        hsq_cli_json_close(j, '}');
    }
    hsq_cli_json_close(j, ']');
    hsq_cli_json_close(j, '}');
}

static void json_date(hsq_cli_json *j, const char *key, int64_t ms) {
    char tb[64];
    if (ms <= 0) {
        hsq_cli_json_null(j, key);
        return;
    }
    hsq_cli_iso_time(ms, tb, sizeof tb);
    hsq_cli_json_str(j, key, tb);
}

static void hexs(const uint8_t *p, size_t n, char *out) {
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = '\0';
}

typedef struct {
    uint64_t tasks, images, bytes;
} export_sum;

/* Write one task's images into the archive and its manifest entry into j.
 * Returns 0, or HSQ_ECORRUPT with err set when an output fails its sha256. */
static int export_task(tar_out *t, hsq_cli_json *j, const hsq_client_export *e, export_sum *sum,
                       char *err, size_t errlen) {
    const hsq_wire_task *tk = &e->rep.task;
    int64_t mt = tk->updated_ms / 1000;
    char name[160], sha[65];
    hsq_cli_json_open(j, NULL, '{');
    hsq_cli_json_u64(j, "id", tk->id);
    hsq_cli_json_str(j, "state", hsq_state_name((hsq_state)tk->state));
    hsq_cli_json_str(j, "prio", hsq_prio_name((hsq_prio)tk->prio));
    hsq_cli_json_u64(j, "attempts", tk->attempts);
    if (tk->key.len)
        hsq_cli_json_strn(j, "key", tk->key.ptr, tk->key.len);
    hsq_cli_json_i64(j, "created_ms", tk->created_ms);
    json_date(j, "created", tk->created_ms);
    hsq_cli_json_i64(j, "updated_ms", tk->updated_ms);
    json_date(j, "updated", tk->updated_ms);
    hsq_cli_json_open(j, "retention", '{');
    json_date(j, "uploads", tk->uploads_expire_ms);
    json_date(j, "references", tk->refs_expire_ms);
    json_date(j, "outputs", tk->expires_ms);
    hsq_cli_json_close(j, '}');
    if (tk->err_code) {
        hsq_cli_json_open(j, "error", '{');
        hsq_cli_json_str(j, "code", hsq_errname(tk->err_code));
        hsq_cli_json_strn(j, "message", tk->err_msg.ptr, tk->err_msg.len);
        hsq_cli_json_close(j, '}');
    }
    hsq_cli_json_strn(j, "prompt", e->rep.prompt.ptr, e->rep.prompt.len);
    json_settings(j, tk->settings);
    json_info(j, tk->info);
    hsq_cli_json_open(j, "inputs", '[');
    for (uint32_t i = 0; i < e->rep.n_inputs; i++) {
        const hsq_wire_input *in = &e->rep.inputs[i];
        hsq_cli_json_open(j, NULL, '{');
        hsq_cli_json_u64(j, "index", i);
        hsq_cli_json_strn(j, "kind", in->kind.ptr, in->kind.len);
        hsq_cli_json_strn(j, "name", in->name.ptr, in->name.len);
        hsq_cli_json_u64(j, "size", in->size);
        if (e->in_data[i].ptr) {
            /* kind is one of three fixed words: safe in a path */
            snprintf(name, sizeof name, "tasks/%" PRIu64 "/inputs/%u-%.*s.%s", tk->id, i,
                     (int)in->kind.len, in->kind.ptr,
                     magic_ext(e->in_data[i].ptr, e->in_data[i].len));
            tar_file(t, name, e->in_data[i].ptr, e->in_data[i].len, mt);
            hsq_cli_json_str(j, "file", name);
            sum->images++;
            sum->bytes += e->in_data[i].len;
        } else {
            hsq_cli_json_str(j, "file", "deleted");
        }
        hsq_cli_json_close(j, '}');
    }
    hsq_cli_json_close(j, ']');
    hsq_cli_json_open(j, "outputs", '[');
    for (uint32_t i = 0; i < tk->n_outputs; i++) {
        const hsq_wire_output *o = &tk->outputs[i];
        hexs(o->sha256, 32, sha);
        hsq_cli_json_open(j, NULL, '{');
        hsq_cli_json_u64(j, "index", i);
        hsq_cli_json_u64(j, "size", o->size);
        hsq_cli_json_str(j, "sha256", sha);
        hsq_cli_json_u64(j, "width", o->width);
        hsq_cli_json_u64(j, "height", o->height);
        hsq_cli_json_str(j, "format", hsq_fmt_name((hsq_fmt)o->format));
        hsq_cli_json_open(j, "combination", '{');
        hsq_cli_json_u64(j, "background", o->background);
        hsq_cli_json_u64(j, "style", o->style);
        hsq_cli_json_u64(j, "size", o->spec);
        hsq_cli_json_close(j, '}');
        if (e->out_data[i].ptr) {
            uint8_t got[32];
            crypto_hash_sha256(got, e->out_data[i].ptr, e->out_data[i].len);
            if (memcmp(got, o->sha256, 32) != 0) {
                snprintf(err, errlen, "output %u of task %" PRIu64 " does not match its sha256", i,
                         tk->id);
                return HSQ_ECORRUPT;
            }
            snprintf(name, sizeof name, "tasks/%" PRIu64 "/outputs/%u.%s", tk->id, i,
                     magic_ext(e->out_data[i].ptr, e->out_data[i].len));
            tar_file(t, name, e->out_data[i].ptr, e->out_data[i].len, mt);
            hsq_cli_json_str(j, "file", name);
            sum->images++;
            sum->bytes += e->out_data[i].len;
        } else {
            hsq_cli_json_str(j, "file", "deleted");
        }
        hsq_cli_json_close(j, '}');
    }
    hsq_cli_json_close(j, ']');
    hsq_cli_json_close(j, '}');
    sum->tasks++;
    return 0;
}

/* An unlinked temp file in dir (the manifest holds personal data: it never
 * has a name, and goes with the process). */
static FILE *anon_file(const char *dir) {
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        char tmpl[PATH_MAX];
        if ((size_t)snprintf(tmpl, sizeof tmpl, "%s/.hsq-manifest.XXXXXX", dir) >= sizeof tmpl)
            return NULL;
        fd = mkostemp(tmpl, O_CLOEXEC);
        if (fd < 0)
            return NULL;
        unlink(tmpl);
    }
    FILE *f = fdopen(fd, "w+");
    if (!f)
        close(fd);
    return f;
}

int hsq_cli_export_user(const hsq_cli_cmd *cmd, hsq_client *c) {
    char tmp[PATH_MAX], dir[PATH_MAX], err[512] = "";
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", cmd->outfile) >= sizeof tmp)
        return fail(cmd, HSQ_CLI_EXIT_USAGE, hsq_errname(HSQ_EINVAL), "-o: path too long");
    snprintf(dir, sizeof dir, "%s", cmd->outfile);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");

    tar_out t = {.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
    if (t.fd < 0)
        return fail(cmd, HSQ_CLI_EXIT_IO, IO_ERROR_NAME, "cannot create %s: %s", tmp,
                    strerror(errno));
    FILE *mf = anon_file(dir);
    if (!mf) {
        int e = errno;
        close(t.fd);
        unlink(tmp);
        return fail(cmd, HSQ_CLI_EXIT_IO, IO_ERROR_NAME, "cannot create a temp file in %s: %s", dir,
                    strerror(e));
    }
    int64_t now = hsq_clock_wall_ms();
    hsq_cli_json j;
    hsq_cli_json_init(&j, mf);
    hsq_cli_json_open(&j, NULL, '{');
    hsq_cli_json_str(&j, "format", "hsq-export");
    hsq_cli_json_u64(&j, "version", 1);
    hsq_cli_json_str(&j, "user", cmd->user);
    hsq_cli_json_i64(&j, "exported_ms", now);
    json_date(&j, "exported", now);
    hsq_cli_json_open(&j, "tasks", '[');

    export_sum sum = {0, 0, 0};
    int ret = HSQ_CLI_EXIT_OK, rc;
    uint64_t after = 0;
    for (;;) {
        hsq_client_export *e = NULL;
        rc = hsq_client_export_next(c, cmd->user, after, &e);
        if (rc != 0) {
            ret = fail_lib(cmd, c, rc);
            goto bad;
        }
        if (!e)
            break;
        rc = export_task(&t, &j, e, &sum, err, sizeof err);
        uint64_t next = e->rep.next;
        hsq_client_export_free(&e);
        if (rc != 0) {
            ret = fail(cmd, HSQ_CLI_EXIT_REFUSED, hsq_errname(rc), "%s", err);
            goto bad;
        }
        if (t.err != 0)
            break;
        if (next == 0 || next <= after)
            break;
        after = next;
    }
    hsq_cli_json_close(&j, ']');
    hsq_cli_json_close(&j, '}');
    if (fflush(mf) != 0 || ferror(mf)) {
        ret = fail(cmd, HSQ_CLI_EXIT_IO, IO_ERROR_NAME, "cannot write the manifest: %s",
                   strerror(errno));
        goto bad;
    }
    /* The manifest goes last: its size is known only now. */
    long msize = ftell(mf);
    rewind(mf);
    tar_header(&t, "manifest.json", (uint64_t)msize, now / 1000);
    char buf[65536];
    size_t got;
    while (t.err == 0 && (got = fread(buf, 1, sizeof buf, mf)) > 0)
        tar_write(&t, buf, got);
    tar_pad(&t);
    static const uint8_t end[1024];
    tar_write(&t, end, sizeof end);
    if (t.err == 0 && fsync(t.fd) != 0)
        t.err = -errno;
    if (t.err != 0) {
        ret =
            fail(cmd, HSQ_CLI_EXIT_IO, IO_ERROR_NAME, "cannot write %s: %s", tmp, strerror(-t.err));
        goto bad;
    }
    if (close(t.fd) != 0 || rename(tmp, cmd->outfile) != 0) {
        t.fd = -1;
        ret = fail(cmd, HSQ_CLI_EXIT_IO, IO_ERROR_NAME, "cannot finish %s: %s", cmd->outfile,
                   strerror(errno));
        goto bad;
    }
    fclose(mf);
    if (cmd->json) {
        hsq_cli_json o;
        hsq_cli_json_init(&o, stdout);
        hsq_cli_json_open(&o, NULL, '{');
        hsq_cli_json_str(&o, "file", cmd->outfile);
        hsq_cli_json_u64(&o, "tasks", sum.tasks);
        hsq_cli_json_u64(&o, "images", sum.images);
        hsq_cli_json_u64(&o, "bytes", sum.bytes);
        hsq_cli_json_close(&o, '}');
    } else {
        printf("%s: %" PRIu64 " tasks, %" PRIu64 " images (%" PRIu64 " bytes) and manifest.json\n",
               cmd->outfile, sum.tasks, sum.images, sum.bytes);
    }
    return HSQ_CLI_EXIT_OK;
bad:
    if (t.fd >= 0)
        close(t.fd);
    unlink(tmp);
    fclose(mf);
    return ret;
}

/* ---- fsck ---- */

int hsq_cli_fsck(const hsq_cli_cmd *cmd) {
    hsqd_conf o;
    char err[1024] = "";
    hsqd_conf_defaults(&o);
    hsq_conf_set_str(&o.data_dir, cmd->data_dir);
    if (cmd->blob_dir)
        hsq_conf_set_str(&o.blob_dir, cmd->blob_dir);
    data_dir d;
    int rc = data_open(&o, &d, err, sizeof err);
    hsqd_conf_free(&o);
    if (rc != 0)
        return fail(cmd, rc == HSQ_ENOTFOUND ? HSQ_CLI_EXIT_IO : HSQ_CLI_EXIT_REFUSED,
                    hsq_errname(rc), "%s", err);
    hsq_fsck_report r;
    memset(&r, 0, sizeof r);
    rc = hsq_fsck_run(d.st, d.blob, cmd->repair, hsq_clock_wall_ms(), cmd->json ? stderr : stdout,
                      &r);
    char detail[200];
    snprintf(detail, sizeof detail, "%s", hsq_store_lasterr(d.st));
    data_close(&d);
    if (rc == HSQ_EUNAVAIL) /* the store is hsqd's (store.h, journal mode) */
        return fail(cmd, HSQ_CLI_EXIT_REFUSED, hsq_errname(rc),
                    "fsck of %s: hsqd is running on it; --repair needs it stopped (%s)",
                    cmd->data_dir, detail);
    if (rc != 0)
        return fail(cmd, HSQ_CLI_EXIT_REFUSED, hsq_errname(rc), "fsck of %s failed: %s",
                    cmd->data_dir, hsq_strerror(rc));
    uint64_t found = r.orphans + r.dangling + r.recover_corrupt;
    uint64_t left = found > r.repaired ? found - r.repaired : 0;
    if (!cmd->repair)
        left = found;
    if (cmd->json) {
        hsq_cli_json j;
        hsq_cli_json_init(&j, stdout);
        hsq_cli_json_open(&j, NULL, '{');
        hsq_cli_json_u64(&j, "tasks", r.tasks);
        hsq_cli_json_u64(&j, "blobs", r.blobs);
        hsq_cli_json_u64(&j, "orphans", r.orphans);
        hsq_cli_json_u64(&j, "orphan_bytes", r.orphan_bytes);
        hsq_cli_json_u64(&j, "dangling", r.dangling);
        hsq_cli_json_u64(&j, "pending", r.pending);
        hsq_cli_json_bool(&j, "recover_corrupt", r.recover_corrupt != 0);
        hsq_cli_json_u64(&j, "repaired", r.repaired);
        hsq_cli_json_u64(&j, "tmp_removed", r.tmp_removed);
        hsq_cli_json_bool(&j, "clean", left == 0);
        hsq_cli_json_close(&j, '}');
    } else {
        printf("checked    %" PRIu64 " task records, %" PRIu64 " blobs\n", r.tasks, r.blobs);
        printf("orphans    %" PRIu64 " blobs without a record (%" PRIu64 " bytes)\n", r.orphans,
               r.orphan_bytes);
        printf("dangling   %" PRIu64 " references to missing blobs\n", r.dangling);
        printf("pending    %" PRIu64 " deletions in progress (hsqd finishes them)\n", r.pending);
        if (r.recover_corrupt)
            printf("recovery   the start-up recovery record is corrupt (hsqd will not start)%s\n",
                   cmd->repair ? ": deleted" : "");
        if (cmd->repair)
            printf("repaired   %" PRIu64 "\n", r.repaired);
        if (r.tmp_removed)
            printf("temp files %" PRIu64 " stale ones removed\n", r.tmp_removed);
        printf("%s\n", left == 0 ? "clean" : "problems remain (run with --repair to fix them)");
    }
    return left == 0 ? HSQ_CLI_EXIT_OK : HSQ_CLI_EXIT_REFUSED;
}
