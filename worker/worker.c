/* worker.c - hsq-worker's shell: the ZeroMQ loop and the processing thread.
 *
 * DESIGN. Two threads, three with overlap (see prep_main: a prepare thread
 * that decodes the next batch while the processing thread runs one).
 *
 * The main thread owns the DEALER socket (nothing else ever touches it), a
 * signalfd and its own blob handle (used only to delete the outputs of a
 * refused `done`). It runs one zmq_poll loop;
 * every timer (heartbeat, liveness, reconnect backoff, stop deadline) is a
 * monotonic deadline recomputed each turn, and the poll sleeps until the
 * nearest one. zmq_poll drives the sockets level-triggered, so the
 * edge-triggered ZMQ_FD pitfalls do not apply; we still drain each socket
 * with ZMQ_DONTWAIT until EAGAIN on every wake-up.
 *
 * The processing thread owns its own blob handle and the pipeline (models,
 * model contexts and the pipeline's pool), and runs the jobs it finds
 * queued, up to max_batch at a time, as one batch. Jobs travel between the
 * threads through two FIFO queues under one mutex (handoff): `todo` (main ->
 * processing, with a condition variable) and `back` (processing -> main, with
 * an eventfd that the main thread's zmq_poll watches). A mutex rather than an
 * inproc PAIR so that ThreadSanitizer can see the hand-over (it cannot see
 * through libzmq's lock-free pipes). Every job goes there and back exactly
 * once; between the two the main thread reads only its immutable fields
 * (task, token, session) and may set its atomic `aborted` flag. Jobs are
 * created and freed only by the main thread.
 *
 * Sessions. Every connection is a session (w->session). When the broker falls
 * silent the socket is closed, and every job still held is aborted; when such
 * a job comes back its outputs are deleted, because no `done` named them. A
 * `done` whose session ends before its reply arrives has an unknown outcome
 * (the broker may have committed it), so its outputs are kept; an explicit
 * error reply to `done` means the broker refused it, and the outputs go.
 * Output keys carry the lease token (job.h), so deleting ours can never
 * remove the outputs of the lease that replaced it.
 *
 * Liveness. Every request has a reply deadline: 5 s for `ready`, lease_wait
 * + 3 x heartbeat_ms for the `lease` long-poll, 3 x heartbeat_ms otherwise.
 * Any deadline missed means the broker is gone: close (linger 0), back off
 * (reconnect_min doubling to reconnect_max, jittered), reconnect, `ready`.
 * A socket monitor also reports a dropped connection at once. ZeroMQ would
 * reconnect the DEALER by itself, but the broker's ROUTER sees a new peer
 * then, so every reply still owed to us is lost (a restarted broker has also
 * forgotten our parked lease): the session ends the same way, without
 * waiting out a long-poll deadline.
 *
 * Stopping. SIGTERM stops leasing; jobs in progress finish (up to
 * stop_timeout) and are reported. A parked long-poll is replaced by a
 * `lease` with wait_ms 0 (hsqd keeps one parked lease per peer and drops the
 * old one), so the broker answers at once; any job it still hands us is
 * returned with a retryable `fail` (unavailable), as is any job in a lease
 * reply we no longer expect.
 */
#include "worker/worker.h"

#include "common/alloc.h"
#include "common/blob.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"
#include "schemas/err.h"
#include "schemas/wire.h"
#include "worker/img.h"
#include "worker/job.h"
#include "worker/pipeline.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define READY_TIMEOUT_MS 5000
#define MIN_HEARTBEAT_MS 50
#define LEASE_RETRY_MS 1000  /* after an error reply to `lease` */
#define LEASE_MIN_GAP_MS 100 /* between two leases when the first came back empty */
#define MAX_POLL_MS 1000
#define MAX_PARTS (1 + HSQ_MAX_BATCH * HSQ_MAX_INPUTS)

/* ---------------------------------------------------------------- config */

#define OFF(f) offsetof(hsq_worker_conf, f)
const hsq_conf_item hsq_worker_conf_items[] = {
    {"endpoint", HSQ_CONF_STR, OFF(endpoint), 0, 0,
     "hsqd worker endpoint (default ipc:///run/hsq/worker.sock)"},
    {"blob_dir", HSQ_CONF_STR, OFF(blob_dir), 0, 0,
     "blob store root shared with hsqd (default /var/lib/hsq/blobs)"},
    {"name", HSQ_CONF_STR, OFF(name), 0, 0, "worker name in logs and stats (default host-pid)"},
    {"max_batch", HSQ_CONF_U64, OFF(max_batch), 1, HSQ_MAX_BATCH,
     "jobs per pipeline batch, 1..64; held at once: one batch, two with overlap (default 4)"},
    {"lease_wait", HSQ_CONF_MS, OFF(lease_wait), 0, HSQ_MAX_WAIT_MS,
     "how long the broker may park a lease request (default 10s)"},
    {"reconnect_min", HSQ_CONF_MS, OFF(reconnect_min), 10, 3600000,
     "first reconnect delay after the broker falls silent (default 1s)"},
    {"reconnect_max", HSQ_CONF_MS, OFF(reconnect_max), 10, 3600000,
     "largest reconnect delay; the delay doubles up to it (default 32s)"},
    {"stop_timeout", HSQ_CONF_MS, OFF(stop_timeout), 0, 3600000,
     "on SIGTERM, how long to finish jobs in progress (default 30s)"},
    {"max_image_bytes", HSQ_CONF_SIZE, OFF(max_image_bytes), 1, 1024ull * 1024 * 1024,
     "largest input file (default 50MiB)"},
    {"max_image_pixels", HSQ_CONF_U64, OFF(max_image_pixels), 1, 1000000000ull,
     "largest input width x height (default 100000000)"},
    {"max_image_side", HSQ_CONF_U64, OFF(max_image_side), 1, 65535,
     "largest input width or height (default 20000)"},
    {"job_delay", HSQ_CONF_MS, OFF(job_delay), 0, 3600000,
     "TESTING AID: pause before each job (default 0)"},
    {"pipeline", HSQ_CONF_STR, OFF(pipeline), 0, 0,
     "headshot (face detection, framing, cut-out, backgrounds, styles) or resize (plain "
     "centre-crop and resize, no models) (default headshot)"},
    {"models_dir", HSQ_CONF_STR, OFF(models_dir), 0, 0,
     "directory with the two .tflite models (default /usr/share/hsq/models)"},
    {"threads", HSQ_CONF_U64, OFF(threads), 1, HSQ_PIPE_MAX_THREADS,
     "pipeline threads: decode/compose/encode of a batch in parallel (default 2)"},
    {"overlap", HSQ_CONF_BOOL, OFF(overlap), 0, 1,
     "fetch and decode the next batch while the current one is in the models and being "
     "encoded; the worker then holds up to 2 x max_batch jobs (default on)"},
    {"log_level", HSQ_CONF_STR, OFF(log_level), 0, 0,
     "err, warn, notice, info, debug (default info)"},
    {"curve_server_key", HSQ_CONF_STR, OFF(curve_server_key), 0, 0,
     "hsqd's CURVE public key, Z85 (tcp:// endpoints; default none)"},
    {"curve_public_key", HSQ_CONF_STR, OFF(curve_public_key), 0, 0,
     "this worker's CURVE public key, Z85 (default none)"},
    {"curve_secret_key", HSQ_CONF_STR, OFF(curve_secret_key), 0, 0,
     "this worker's CURVE secret key, Z85; keep the file 0600 (default none)"},
};
const size_t hsq_worker_conf_nitems =
    sizeof hsq_worker_conf_items / sizeof hsq_worker_conf_items[0];
#undef OFF

void hsq_worker_conf_defaults(hsq_worker_conf *c) {
    memset(c, 0, sizeof *c);
    hsq_conf_set_str(&c->endpoint, "ipc:///run/hsq/worker.sock");
    hsq_conf_set_str(&c->blob_dir, "/var/lib/hsq/blobs");
    hsq_conf_set_str(&c->name, "");
    c->max_batch = 4;
    c->lease_wait = 10000;
    c->reconnect_min = 1000;
    c->reconnect_max = 32000;
    c->stop_timeout = 30000;
    c->max_image_bytes = HSQ_IMG_DEFAULT_MAX_BYTES;
    c->max_image_pixels = HSQ_IMG_DEFAULT_MAX_PIXELS;
    c->max_image_side = HSQ_IMG_DEFAULT_MAX_SIDE;
    c->job_delay = 0;
    hsq_conf_set_str(&c->models_dir, "/usr/share/hsq/models");
    hsq_conf_set_str(&c->pipeline, "headshot");
    c->threads = 2;
    c->overlap = 1;
    hsq_conf_set_str(&c->log_level, "info");
    hsq_conf_set_str(&c->curve_server_key, "");
    hsq_conf_set_str(&c->curve_public_key, "");
    hsq_conf_set_str(&c->curve_secret_key, "");
}

int hsq_worker_conf_check(const hsq_worker_conf *c, char *err, size_t errlen) {
    if (!c->endpoint[0]) {
        snprintf(err, errlen, "endpoint must not be empty");
        return HSQ_EINVAL;
    }
    if (!c->blob_dir[0]) {
        snprintf(err, errlen, "blob_dir must not be empty");
        return HSQ_EINVAL;
    }
    if (strcmp(c->pipeline, "headshot") != 0 && strcmp(c->pipeline, "resize") != 0) {
        snprintf(err, errlen, "pipeline must be headshot or resize, not '%s'", c->pipeline);
        return HSQ_EINVAL;
    }
    if (!c->models_dir[0]) {
        snprintf(err, errlen, "models_dir must not be empty");
        return HSQ_EINVAL;
    }
    if (strlen(c->name) > HSQ_MAX_NAME_LEN) {
        snprintf(err, errlen, "name is longer than %d bytes", HSQ_MAX_NAME_LEN);
        return HSQ_EINVAL;
    }
    if (c->reconnect_min > c->reconnect_max) {
        snprintf(err, errlen, "reconnect_min must not exceed reconnect_max");
        return HSQ_EINVAL;
    }
    if (hsq_log_level_parse(c->log_level) < 0) {
        snprintf(err, errlen, "log_level must be one of err, warn, notice, info, debug");
        return HSQ_EINVAL;
    }
    size_t ns = strlen(c->curve_server_key), np = strlen(c->curve_public_key),
           nk = strlen(c->curve_secret_key);
    if (ns || np || nk) {
        if (ns != 40 || np != 40 || nk != 40) {
            snprintf(err, errlen,
                     "curve_server_key, curve_public_key and curve_secret_key must "
                     "all be set, 40 characters of Z85 each");
            return HSQ_EINVAL;
        }
        if (!zmq_has("curve")) {
            snprintf(err, errlen, "CURVE keys are set but this libzmq has no CURVE support");
            return HSQ_EINVAL;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- state */

typedef enum { ST_BACKOFF, ST_WAIT_READY, ST_RUN } wstate;

typedef struct {
    uint64_t rid;
    hsq_op op;
    uint64_t deadline; /* monotonic ms */
    hsq_job *job;      /* done/fail: the job reported (owned here), or NULL */
} pend;

/* Job queues between the threads; see DESIGN above. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* todo non-empty, or quit */
    hsq_job *todo, *todo_tail;
    hsq_job *back, *back_tail;
    int quit; /* processing thread: exit once todo is empty */
    int efd;  /* eventfd: `back` became non-empty */
    /* overlap: the one batch decoded by the prepare thread and waiting for
     * the processing thread (NULL: the slot is free) */
    pthread_cond_t slot_cv; /* the slot was filled or emptied, or prep ended */
    hsq_job_batch *slot;
    hsq_job *slot_jobs[HSQ_MAX_BATCH];
    size_t slot_n;
    uint64_t slot_ms; /* time the prepare half took */
    int prep_done;    /* the prepare thread has exited */
} handoff;

typedef struct {
    const hsq_worker_conf *conf;
    hsq_img_limits lim;
    char name[HSQ_MAX_NAME_LEN + 1];
    char device[HSQ_MAX_NAME_LEN + 1];

    void *zctx;
    void *dealer; /* NULL while disconnected */
    void *mon;    /* PAIR receiving the dealer's monitor events, or NULL */
    pthread_t thr, prep_thr;
    int thr_started, prep_started;
    hsq_blob *blob_main, *blob_proc, *blob_prep;
    hsq_pipe *pipe; /* processing thread only (after setup) */
    int sigfd;
    handoff ho;
    int ho_init;

    wstate st;
    uint64_t session;
    uint64_t rid;
    uint32_t lease_ms, hb_ms;
    uint64_t backoff_ms; /* next backoff step */
    uint64_t connect_at; /* ST_BACKOFF: when to connect */
    uint64_t next_lease_at;
    uint64_t next_hb_at;

    pend *pend;
    size_t npend, cappend;
    hsq_job *held; /* with the processing thread */
    size_t nheld;

    int stopping;
    uint64_t stop_deadline;
    int sticky;

    hsq_wbuf wb;
    zmq_msg_t parts[MAX_PARTS];
} worker;

/* ---------------------------------------------------------------- helpers */

static uint64_t now_ms(void) { return hsq_clock_mono_ms(); }

static void read_cpu_model(char *out, size_t cap) {
    snprintf(out, cap, "cpu");
    FILE *f = fopen("/proc/cpuinfo", "re");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t n = strcspn(v, "\r\n");
        if (n > 0) {
            if (n >= cap)
                n = cap - 1;
            memcpy(out, v, n);
            out[n] = '\0';
        }
        break;
    }
    fclose(f);
}

static uint64_t jitter(uint64_t ms) {
    /* Uniform in [ms/2, ms]: workers restarted together spread out. */
    return ms / 2 + (uint64_t)((double)(ms - ms / 2) * ((double)rand() / RAND_MAX));
}

static void held_remove(worker *w, hsq_job *j) {
    for (hsq_job **p = &w->held; *p; p = &(*p)->next) {
        if (*p == j) {
            *p = j->next;
            j->next = NULL;
            w->nheld--;
            return;
        }
    }
}

static pend *pend_find(worker *w, uint64_t rid) {
    for (size_t i = 0; i < w->npend; i++)
        if (w->pend[i].rid == rid)
            return &w->pend[i];
    return NULL;
}

static int pend_has(worker *w, hsq_op op) {
    for (size_t i = 0; i < w->npend; i++)
        if (w->pend[i].op == op)
            return 1;
    return 0;
}

static size_t pend_reports(worker *w) {
    size_t n = 0;
    for (size_t i = 0; i < w->npend; i++)
        if (w->pend[i].op == HSQ_OP_DONE || w->pend[i].op == HSQ_OP_FAIL)
            n++;
    return n;
}

static void pend_remove(worker *w, pend *p) {
    size_t i = (size_t)(p - w->pend);
    w->pend[i] = w->pend[--w->npend];
}

static uint32_t free_slots(worker *w) {
    size_t busy = w->nheld + pend_reports(w);
    /* With overlap one batch is being decoded while another runs. */
    size_t cap = w->conf->max_batch * (w->conf->overlap ? 2 : 1);
    size_t room = busy >= cap ? 0 : cap - busy;
    return (uint32_t)(room < w->conf->max_batch ? room : w->conf->max_batch);
}

/* ---------------------------------------------------------------- sending */

/* Encode and send one request; on success it is tracked until its reply or
 * its deadline. `job` (done/fail) then belongs to the pending entry.
 * Errors: HSQ_EINVAL (encoder refused: a bug, logged here), -errno of
 * zmq_send (the caller treats the broker as gone). */
static int send_req(worker *w, hsq_wire_msg *m, uint64_t timeout_ms, hsq_job *job) {
    m->v = HSQ_WIRE_VERSION;
    m->kind = HSQ_KIND_REQUEST;
    m->rid = ++w->rid;
    if (!w->dealer)
        return -ENOTCONN;
    hsq_wbuf_reset(&w->wb);
    int r = hsq_wire_encode(m, &w->wb);
    if (r) {
        hsq_log(HSQ_LOG_ERR, "worker", "op=%s encode failed err=%s", hsq_op_name(m->op),
                hsq_errname(r));
        return r;
    }
    if (zmq_send(w->dealer, w->wb.data, w->wb.len, ZMQ_DONTWAIT) < 0) {
        r = -errno;
        hsq_log(HSQ_LOG_WARN, "worker", "op=%s send failed err=%s", hsq_op_name(m->op),
                zmq_strerror(-r));
        return r;
    }
    if (w->npend == w->cappend) {
        w->cappend = w->cappend ? 2 * w->cappend : 16;
        w->pend = hsq_xrealloc(w->pend, w->cappend * sizeof *w->pend);
    }
    w->pend[w->npend++] = (pend){m->rid, m->op, now_ms() + timeout_ms, job};
    return 0;
}

static uint64_t liveness_ms(worker *w) { return 3ull * w->hb_ms; }

/* ---------------------------------------------------------------- sessions */

static void close_dealer(worker *w) {
    int zero = 0;
    if (w->dealer) {
        zmq_socket_monitor(w->dealer, NULL, 0);
        zmq_setsockopt(w->dealer, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(w->dealer);
        w->dealer = NULL;
    }
    if (w->mon) {
        zmq_setsockopt(w->mon, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(w->mon);
        w->mon = NULL;
    }
}

static void disconnect(worker *w, const char *why) {
    uint64_t now = now_ms();
    size_t dropped = 0;
    for (hsq_job *j = w->held; j; j = j->next) {
        atomic_store(&j->aborted, 1);
        dropped++;
    }
    /* Reports whose reply will never come: the broker may have committed a
     * `done`, so its outputs stay (orphans are the sweeper's business). */
    for (size_t i = 0; i < w->npend; i++) {
        hsq_job *j = w->pend[i].job;
        if (!j)
            continue;
        hsq_log(HSQ_LOG_WARN, "worker", "job=%llu token=%llu %s unconfirmed",
                (unsigned long long)j->task, (unsigned long long)j->token,
                hsq_op_name(w->pend[i].op));
        hsq_job_free(&j);
    }
    w->npend = 0;
    close_dealer(w);
    w->session++;
    uint64_t delay = jitter(w->backoff_ms);
    w->backoff_ms =
        w->backoff_ms * 2 > w->conf->reconnect_max ? w->conf->reconnect_max : w->backoff_ms * 2;
    w->st = ST_BACKOFF;
    w->connect_at = now + delay;
    hsq_log(HSQ_LOG_WARN, "worker", "disconnected reason=\"%s\" dropped_jobs=%zu retry_ms=%llu",
            why, dropped, (unsigned long long)delay);
}

/* After a failed send: a zmq error means the broker is unreachable (the
 * session ends, unless it already has); an encoder refusal is a local bug
 * that leaves the session alone. */
static void send_failed(worker *w, int r, const char *why) {
    if (r != HSQ_EINVAL && w->dealer)
        disconnect(w, why);
}

static int set_curve(worker *w, void *s) {
    const hsq_worker_conf *c = w->conf;
    if (!c->curve_server_key[0])
        return 0;
    if (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, c->curve_server_key, 40) != 0 ||
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, c->curve_public_key, 40) != 0 ||
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, c->curve_secret_key, 40) != 0)
        return -errno;
    return 0;
}

static int send_ready(worker *w) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_READY;
    m.req.ready.name = hsq_str_c(w->name);
    m.req.ready.backend = HSQ_STR_LIT("cpu");
    m.req.ready.device = hsq_str_c(w->device);
    m.req.ready.max_batch = (uint32_t)w->conf->max_batch;
    return send_req(w, &m, READY_TIMEOUT_MS, NULL);
}

/* Open a fresh socket and announce ourselves. Errors: -errno when the socket
 * cannot be set up at all (bad endpoint, bad keys): fatal. */
static int connect_broker(worker *w) {
    void *s = zmq_socket(w->zctx, ZMQ_DEALER);
    if (!s)
        return -errno;
    int zero = 0;
    /* The broker's frames are bounded by the codec (meta) and by its image
     * limit (inline inputs); anything larger is refused by disconnecting. */
    int64_t maxmsg =
        (int64_t)(w->conf->max_image_bytes > HSQ_MAX_FRAME_BYTES ? w->conf->max_image_bytes
                                                                 : HSQ_MAX_FRAME_BYTES) +
        HSQ_MAX_META_BYTES;
    int r = 0;
    if (zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0)
        r = -errno;
    if (!r)
        r = set_curve(w, s);
    /* The monitor first, so that no event of this connection is missed. */
    char mon_ep[64];
    snprintf(mon_ep, sizeof mon_ep, "inproc://hsq-worker-mon-%llu", (unsigned long long)w->session);
    void *mon = NULL;
    if (!r && zmq_socket_monitor(s, mon_ep, ZMQ_EVENT_DISCONNECTED) != 0)
        r = -errno;
    if (!r && (!(mon = zmq_socket(w->zctx, ZMQ_PAIR)) || zmq_connect(mon, mon_ep) != 0))
        r = -errno;
    if (!r && zmq_connect(s, w->conf->endpoint) != 0)
        r = -errno;
    w->dealer = s;
    w->mon = mon;
    if (r) {
        close_dealer(w);
        return r;
    }
    w->npend = 0;
    w->st = ST_WAIT_READY;
    hsq_log(HSQ_LOG_INFO, "worker", "connecting endpoint=%s session=%llu", w->conf->endpoint,
            (unsigned long long)w->session);
    r = send_ready(w);
    if (r)
        disconnect(w, "cannot send ready"); /* even a local bug: retry later */
    return 0;
}

/* ---------------------------------------------------------------- requests */

static void maybe_lease(worker *w, uint64_t now) {
    if (w->st != ST_RUN || w->stopping || pend_has(w, HSQ_OP_LEASE) || now < w->next_lease_at)
        return;
    uint32_t n = free_slots(w);
    if (n == 0)
        return;
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_LEASE;
    m.req.lease.max = n;
    m.req.lease.wait_ms = (uint32_t)w->conf->lease_wait;
    int r = send_req(w, &m, w->conf->lease_wait + liveness_ms(w), NULL);
    if (r)
        send_failed(w, r, "cannot send lease");
    w->next_lease_at = now + (r ? LEASE_RETRY_MS : LEASE_MIN_GAP_MS);
}

static void maybe_heartbeat(worker *w, uint64_t now) {
    if (w->st != ST_RUN || w->nheld == 0 || pend_has(w, HSQ_OP_HEARTBEAT) || now < w->next_hb_at)
        return;
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_HEARTBEAT;
    for (hsq_job *j = w->held; j && m.req.heartbeat.n < HSQ_MAX_BATCH; j = j->next) {
        if (atomic_load(&j->aborted))
            continue;
        m.req.heartbeat.leases[m.req.heartbeat.n].task = j->task;
        m.req.heartbeat.leases[m.req.heartbeat.n].token = j->token;
        m.req.heartbeat.n++;
    }
    w->next_hb_at = now + w->hb_ms;
    if (m.req.heartbeat.n == 0)
        return;
    int r = send_req(w, &m, liveness_ms(w), NULL);
    if (r)
        send_failed(w, r, "cannot send heartbeat");
}

/* Report a failure for a job we hold (j may be NULL for a job we could not
 * even copy out of the lease reply). */
static void send_fail(worker *w, uint64_t task, uint64_t token, int code, int retryable,
                      const char *msg, hsq_job *j) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_FAIL;
    m.req.fail.task = task;
    m.req.fail.token = token;
    m.req.fail.code = code;
    m.req.fail.message = hsq_str_c(msg);
    m.req.fail.retryable = (uint8_t)(retryable != 0);
    int r = send_req(w, &m, liveness_ms(w), j);
    if (r) {
        hsq_job_free(&j);
        send_failed(w, r, "cannot send fail");
    }
}

static void send_done(worker *w, hsq_job *j) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_DONE;
    m.req.done.task = j->task;
    m.req.done.token = j->token;
    m.req.done.n_outputs = j->n_out;
    memcpy(m.req.done.outputs, j->out, sizeof(hsq_wire_output) * j->n_out);
    m.req.done.info = (hsq_bytes){j->info, j->info_len};
    int r = send_req(w, &m, liveness_ms(w), j);
    if (r) {
        /* The broker never saw this `done`: nothing refers to the outputs. */
        uint64_t task = j->task, token = j->token;
        hsq_job_delete_outputs(j, w->blob_main);
        hsq_job_free(&j);
        send_failed(w, r, "cannot send done");
        if (r == HSQ_EINVAL) /* our bug: let the task be retried now */
            send_fail(w, task, token, HSQ_EINTERNAL, 1, "worker could not encode its result", NULL);
    }
}

/* ---------------------------------------------------------------- jobs */

static void start_stop(worker *w, uint64_t now, uint64_t grace, const char *why) {
    if (w->stopping) {
        if (now + grace < w->stop_deadline)
            w->stop_deadline = now + grace;
        return;
    }
    w->stopping = 1;
    w->stop_deadline = now + grace;
    hsq_log(HSQ_LOG_NOTICE, "worker", "stopping reason=%s jobs=%zu grace_ms=%llu", why, w->nheld,
            (unsigned long long)grace);
    /* End a parked long-poll now rather than after lease_wait: a new lease
     * replaces it, and wait_ms 0 makes the broker answer at once. A reply
     * to the old one, should it still come, is handled as unexpected. */
    for (size_t i = 0; i < w->npend; i++) {
        if (w->pend[i].op != HSQ_OP_LEASE || !w->dealer)
            continue;
        pend_remove(w, &w->pend[i]);
        hsq_wire_msg m;
        memset(&m, 0, sizeof m);
        m.op = HSQ_OP_LEASE;
        m.req.lease.max = 1;
        m.req.lease.wait_ms = 0;
        int r = send_req(w, &m, liveness_ms(w), NULL);
        if (r)
            send_failed(w, r, "cannot send lease");
        break;
    }
}

/* A job came back from the processing thread. */
static void job_back(worker *w, hsq_job *j) {
    held_remove(w, j);
    unsigned long long task = j->task, token = j->token, ms = j->ms;
    if (j->session != w->session || atomic_load(&j->aborted) || !w->dealer) {
        if (j->status == HSQ_JOB_DONE)
            hsq_job_delete_outputs(j, w->blob_main); /* nobody will ever name them */
        hsq_log(HSQ_LOG_INFO, "worker", "job=%llu token=%llu dropped ms=%llu", task, token, ms);
        hsq_job_free(&j);
        return;
    }
    switch (j->status) {
    case HSQ_JOB_DONE:
        send_done(w, j);
        break;
    case HSQ_JOB_FAILED:
        if (j->err == HSQ_ECUDASTICKY) {
            /* The device is poisoned: report this job as retryable, drop the
             * others, and exit so that systemd restarts us. */
            j->retryable = 1;
            w->sticky = 1;
            for (hsq_job *o = w->held; o; o = o->next)
                atomic_store(&o->aborted, 1);
            start_stop(w, now_ms(), liveness_ms(w), "gpu_fatal");
        }
        hsq_log(HSQ_LOG_INFO, "worker", "job=%llu token=%llu failed err=%s retryable=%d ms=%llu",
                task, token, hsq_errname(j->err), j->retryable, ms);
        send_fail(w, j->task, j->token, j->err, j->retryable, j->errmsg, j);
        break;
    default:
        hsq_log(HSQ_LOG_INFO, "worker", "job=%llu token=%llu aborted ms=%llu", task, token, ms);
        hsq_job_free(&j);
        break;
    }
}

static void q_push(hsq_job **head, hsq_job **tail, hsq_job *j) {
    j->qnext = NULL;
    if (*tail)
        (*tail)->qnext = j;
    else
        *head = j;
    *tail = j;
}

/* Main thread: give j to the processing thread. */
static void hand_over(worker *w, hsq_job *j) {
    pthread_mutex_lock(&w->ho.mu);
    q_push(&w->ho.todo, &w->ho.todo_tail, j);
    pthread_cond_signal(&w->ho.cv);
    pthread_mutex_unlock(&w->ho.mu);
}

/* Main thread: take every job the processing thread has finished. */
static hsq_job *take_back(worker *w) {
    uint64_t v;
    while (read(w->ho.efd, &v, sizeof v) < 0 && errno == EINTR)
        ; /* EAGAIN is fine: the list below is the truth */
    pthread_mutex_lock(&w->ho.mu);
    hsq_job *list = w->ho.back;
    w->ho.back = w->ho.back_tail = NULL;
    pthread_mutex_unlock(&w->ho.mu);
    return list;
}

static void drain_back(worker *w) {
    hsq_job *j = take_back(w);
    while (j) {
        hsq_job *nx = j->qnext;
        j->qnext = NULL;
        job_back(w, j);
        j = nx;
    }
}

static void abort_task(worker *w, uint64_t task, uint64_t token, int match_token, const char *why) {
    for (hsq_job *j = w->held; j; j = j->next) {
        if (j->task == task && (!match_token || j->token == token)) {
            atomic_store(&j->aborted, 1);
            hsq_log(HSQ_LOG_INFO, "worker", "job=%llu token=%llu abort reason=%s",
                    (unsigned long long)j->task, (unsigned long long)j->token, why);
        }
    }
}

static void on_lease_reply(worker *w, const hsq_rep_lease *rep, const hsq_bytes *frames,
                           size_t nframes) {
    uint64_t now = now_ms();
    if (rep->n > 0 && w->nheld == 0)
        w->next_hb_at = now + w->hb_ms;
    if (rep->n > 0)
        w->next_lease_at = now; /* there is work: ask again at once for free slots */
    for (uint32_t i = 0; i < rep->n; i++) {
        const hsq_wire_job *wj = &rep->jobs[i];
        hsq_job *j = NULL;
        int r = hsq_job_new(&j, wj, frames, nframes);
        if (r) {
            hsq_log(HSQ_LOG_WARN, "worker", "job=%llu token=%llu cannot accept err=%s",
                    (unsigned long long)wj->task, (unsigned long long)wj->token, hsq_errname(r));
            send_fail(w, wj->task, wj->token, r, r == HSQ_ENOMEM, hsq_strerror(r), NULL);
            if (!w->dealer)
                return;
            continue;
        }
        j->session = w->session;
        if (w->stopping) {
            /* Leased while we were stopping: hand it straight back. */
            hsq_log(HSQ_LOG_INFO, "worker", "job=%llu token=%llu returned (stopping)",
                    (unsigned long long)j->task, (unsigned long long)j->token);
            send_fail(w, j->task, j->token, HSQ_EUNAVAIL, 1, "worker is shutting down", j);
            if (!w->dealer)
                return;
            continue;
        }
        hsq_log(HSQ_LOG_INFO, "worker", "job=%llu token=%llu attempt=%u leased outputs=%u",
                (unsigned long long)j->task, (unsigned long long)j->token, j->attempt, j->n_specs);
        j->next = w->held;
        w->held = j;
        w->nheld++;
        hand_over(w, j);
    }
}

static void on_reply(worker *w, const hsq_wire_msg *m, const hsq_bytes *frames, size_t nframes) {
    pend *p = pend_find(w, m->rid);
    if (!p || p->op != m->op) {
        hsq_log(HSQ_LOG_DEBUG, "worker", "op=%s rid=%llu unexpected reply", hsq_op_name(m->op),
                (unsigned long long)m->rid);
        /* Jobs leased to us all the same: give them back at once rather
         * than let them wait out their lease. */
        if (m->op == HSQ_OP_LEASE && m->kind == HSQ_KIND_REPLY) {
            for (uint32_t i = 0; i < m->rep.lease.n && w->dealer; i++)
                send_fail(w, m->rep.lease.jobs[i].task, m->rep.lease.jobs[i].token, HSQ_EUNAVAIL, 1,
                          "worker did not expect this lease", NULL);
        }
        return;
    }
    pend done = *p;
    pend_remove(w, p);
    int err = m->kind == HSQ_KIND_ERROR ? m->rep.error.code : 0;
    uint64_t now = now_ms();

    switch (done.op) {
    case HSQ_OP_READY:
        if (err) {
            hsq_log(HSQ_LOG_ERR, "worker", "ready refused err=%s", hsq_errname(err));
            disconnect(w, "ready refused");
            return;
        }
        w->lease_ms = m->rep.ready.lease_ms;
        w->hb_ms = m->rep.ready.heartbeat_ms < MIN_HEARTBEAT_MS ? MIN_HEARTBEAT_MS
                                                                : m->rep.ready.heartbeat_ms;
        w->st = ST_RUN;
        w->backoff_ms = w->conf->reconnect_min;
        w->next_lease_at = now;
        w->next_hb_at = now + w->hb_ms;
        hsq_log(HSQ_LOG_NOTICE, "worker", "ready name=%s lease_ms=%u heartbeat_ms=%u", w->name,
                w->lease_ms, w->hb_ms);
        break;
    case HSQ_OP_LEASE:
        if (err) {
            hsq_log(HSQ_LOG_WARN, "worker", "lease refused err=%s", hsq_errname(err));
            w->next_lease_at = now + LEASE_RETRY_MS;
            return;
        }
        on_lease_reply(w, &m->rep.lease, frames, nframes);
        break;
    case HSQ_OP_HEARTBEAT:
        if (err) {
            hsq_log(HSQ_LOG_WARN, "worker", "heartbeat refused err=%s", hsq_errname(err));
            return;
        }
        for (uint32_t i = 0; i < m->rep.heartbeat.n_lost; i++)
            abort_task(w, m->rep.heartbeat.lost[i], 0, 0, "lease_lost");
        break;
    case HSQ_OP_DONE: {
        hsq_job *j = done.job;
        if (err) {
            /* Refused (stale_lease, conflict, not_found ...): the task is not
             * ours any more, so nothing will ever name these outputs. */
            int dr = hsq_job_delete_outputs(j, w->blob_main);
            hsq_log(HSQ_LOG_WARN, "worker",
                    "job=%llu token=%llu done refused err=%s outputs_deleted=%s",
                    (unsigned long long)j->task, (unsigned long long)j->token, hsq_errname(err),
                    dr ? hsq_errname(dr) : "yes");
        } else {
            hsq_log(HSQ_LOG_INFO, "worker", "job=%llu token=%llu done outputs=%u ms=%llu",
                    (unsigned long long)j->task, (unsigned long long)j->token, j->n_out,
                    (unsigned long long)j->ms);
        }
        hsq_job_free(&j);
        break;
    }
    case HSQ_OP_FAIL:
        if (err)
            hsq_log(HSQ_LOG_WARN, "worker", "job=%llu fail refused err=%s",
                    (unsigned long long)(done.job ? done.job->task : 0), hsq_errname(err));
        hsq_job_free(&done.job);
        break;
    default:
        break;
    }
}

/* One multipart message from the broker, frames in w->parts[0..n). */
static void on_message(worker *w, size_t n) {
    hsq_bytes frames[MAX_PARTS - 1];
    for (size_t i = 1; i < n; i++) {
        frames[i - 1].ptr = zmq_msg_data(&w->parts[i]);
        frames[i - 1].len = zmq_msg_size(&w->parts[i]);
    }
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    int r = hsq_wire_decode(zmq_msg_data(&w->parts[0]), zmq_msg_size(&w->parts[0]), n - 1, &m);
    if (r) {
        hsq_log(HSQ_LOG_WARN, "worker",
                "bad message from broker op=%s rid=%llu err=%s detail=\"%s\"", hsq_op_name(m.op),
                (unsigned long long)m.rid, hsq_errname(r), m.errmsg);
        /* A reply we cannot read still answers its request. For `done` the
         * outcome is unknown (keep the outputs); anything else is treated
         * as an error reply, so that nothing waits for it. */
        pend *p = m.rid ? pend_find(w, m.rid) : NULL;
        if (p && (m.op == HSQ_OP_NONE || p->op == m.op)) {
            if (p->op == HSQ_OP_DONE) {
                hsq_job *j = p->job;
                pend_remove(w, p);
                hsq_log(HSQ_LOG_WARN, "worker", "job=%llu token=%llu done unconfirmed",
                        (unsigned long long)j->task, (unsigned long long)j->token);
                hsq_job_free(&j);
            } else {
                hsq_wire_msg e;
                memset(&e, 0, sizeof e);
                e.kind = HSQ_KIND_ERROR;
                e.op = p->op;
                e.rid = m.rid;
                e.rep.error.code = r;
                on_reply(w, &e, NULL, 0);
            }
        }
        hsq_wire_msg_free(&m);
        return;
    }
    if (m.kind == HSQ_KIND_REQUEST) {
        if (m.op == HSQ_OP_ABORT)
            abort_task(w, m.req.abort.task, m.req.abort.token, 1, "broker_abort");
        else
            hsq_log(HSQ_LOG_WARN, "worker", "op=%s unexpected command ignored", hsq_op_name(m.op));
    } else {
        on_reply(w, &m, frames, n - 1);
    }
    hsq_wire_msg_free(&m);
}

static void drain_dealer(worker *w) {
    while (w->dealer) {
        /* Parts of one message arrive together, so only the first recv can
         * say EAGAIN. Frames beyond MAX_PARTS are received and dropped. */
        size_t n = 0, extra = 0;
        int more = 1, err = 0;
        while (more) {
            zmq_msg_t spill;
            zmq_msg_t *part = n < MAX_PARTS ? &w->parts[n] : &spill;
            zmq_msg_init(part);
            if (zmq_msg_recv(part, w->dealer, ZMQ_DONTWAIT) < 0) {
                err = errno;
                zmq_msg_close(part);
                break;
            }
            more = zmq_msg_more(part);
            if (part == &spill) {
                zmq_msg_close(part);
                extra++;
            } else {
                n++;
            }
        }
        if (!err && extra == 0)
            on_message(w, n);
        else if (!err)
            hsq_log(HSQ_LOG_WARN, "worker", "message with too many frames dropped");
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&w->parts[i]);
        if (err)
            return; /* EAGAIN: drained */
    }
}

/* Monitor events: [uint16 event, uint32 value][endpoint]. */
static void drain_monitor(worker *w) {
    while (w->mon) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, w->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return;
        }
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= sizeof event)
            memcpy(&event, zmq_msg_data(&ev), sizeof event);
        int more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        while (more) {
            zmq_msg_init(&addr);
            if (zmq_msg_recv(&addr, w->mon, 0) < 0) {
                zmq_msg_close(&addr);
                break;
            }
            more = zmq_msg_more(&addr);
            zmq_msg_close(&addr);
        }
        if (event == ZMQ_EVENT_DISCONNECTED)
            disconnect(w, "connection lost");
    }
}

/* ---------------------------------------------------------------- thread */

/* The testing-aid pause: sleep in short slices so an abort ends it. */
static void job_delay(hsq_job *j, uint64_t ms) {
    uint64_t end = now_ms() + ms;
    while (!atomic_load(&j->aborted)) {
        uint64_t now = now_ms();
        if (now >= end)
            return;
        uint64_t step = end - now < 20 ? end - now : 20;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Wait for jobs in `todo` (or quit) and take up to max_batch of them;
 * returns how many (0: quit, and todo is empty). */
static size_t take_todo(worker *w, hsq_job **batch) {
    handoff *h = &w->ho;
    size_t n = 0;
    pthread_mutex_lock(&h->mu);
    while (!h->todo && !h->quit)
        pthread_cond_wait(&h->cv, &h->mu);
    while (h->todo && n < w->conf->max_batch && n < HSQ_MAX_BATCH) {
        hsq_job *j = h->todo;
        h->todo = j->qnext;
        if (!h->todo)
            h->todo_tail = NULL;
        batch[n++] = j;
    }
    pthread_mutex_unlock(&h->mu);
    return n;
}

/* Hand a finished batch back to the main thread (`back`, then its eventfd). */
static void hand_back(worker *w, hsq_job **batch, size_t n, uint64_t ms) {
    handoff *h = &w->ho;
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < n; i++) {
        batch[i]->ms = ms;
        q_push(&h->back, &h->back_tail, batch[i]);
    }
    pthread_mutex_unlock(&h->mu);
    uint64_t one = 1;
    while (write(h->efd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

/* Take up to max_batch jobs from `todo`, run them as one pipeline batch
 * (one model run per stage for all of them), hand them all back. */
static void *proc_main(void *arg) {
    worker *w = arg;
    hsq_job_env env = {w->blob_proc, w->lim, w->pipe};
    hsq_job *batch[HSQ_MAX_BATCH];
    for (;;) {
        size_t n = take_todo(w, batch);
        if (n == 0)
            break; /* quit, and every job handed over has gone back */

        uint64_t t0 = now_ms();
        if (w->conf->job_delay)
            for (size_t i = 0; i < n; i++)
                job_delay(batch[i], w->conf->job_delay);
        hsq_job_run_batch(batch, n, &env);
        uint64_t ms = now_ms() - t0;

        hand_back(w, batch, n, ms);
    }
    return NULL;
}

/* Overlap (conf overlap = 1) splits the processing thread's work in two:
 * this prepare thread takes up to max_batch jobs from `todo`, fetches and
 * decodes them (hsq_job_prepare_batch, on this thread, not the pool) and
 * puts the batch in the one-batch slot; the processing thread
 * (proc_overlap_main) takes it from there and runs the models, the outputs
 * and the store. So batch k + 1 is decoded while batch k is in the models;
 * the slot holds at most one batch, which bounds the memory decoded ahead. */
static void *prep_main(void *arg) {
    worker *w = arg;
    handoff *h = &w->ho;
    /* Decoding ahead must not slow the batch in progress: this thread runs
     * only on CPU time nobody else wants (SCHED_IDLE), which on a CPU-only
     * worker is mostly the model phases, when the pool waits for the calling
     * thread. Not allowed: it still works, at normal priority. */
    struct sched_param sp = {0};
    if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) != 0)
        hsq_log(HSQ_LOG_INFO, "worker", "prepare thread keeps normal priority (no SCHED_IDLE)");
    hsq_job_env env = {w->blob_prep, w->lim, w->pipe};
    hsq_job *batch[HSQ_MAX_BATCH];
    for (;;) {
        size_t n = take_todo(w, batch);
        if (n == 0)
            break; /* quit, and todo is empty */

        uint64_t t0 = now_ms();
        if (w->conf->job_delay)
            for (size_t i = 0; i < n; i++)
                job_delay(batch[i], w->conf->job_delay);
        hsq_job_batch *b = hsq_job_prepare_batch(batch, n, &env);
        uint64_t ms = now_ms() - t0;

        pthread_mutex_lock(&h->mu);
        while (h->slot) /* the processing thread always empties it */
            pthread_cond_wait(&h->slot_cv, &h->mu);
        h->slot = b;
        memcpy(h->slot_jobs, batch, n * sizeof *batch);
        h->slot_n = n;
        h->slot_ms = ms;
        pthread_cond_broadcast(&h->slot_cv);
        pthread_mutex_unlock(&h->mu);
    }
    pthread_mutex_lock(&h->mu);
    h->prep_done = 1;
    pthread_cond_broadcast(&h->slot_cv);
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

static void *proc_overlap_main(void *arg) {
    worker *w = arg;
    handoff *h = &w->ho;
    hsq_job_env env = {w->blob_proc, w->lim, w->pipe};
    hsq_job *batch[HSQ_MAX_BATCH];
    for (;;) {
        pthread_mutex_lock(&h->mu);
        while (!h->slot && !h->prep_done)
            pthread_cond_wait(&h->slot_cv, &h->mu);
        hsq_job_batch *b = h->slot;
        size_t n = h->slot_n;
        uint64_t prep_ms = h->slot_ms;
        if (b) {
            memcpy(batch, h->slot_jobs, n * sizeof *batch);
            h->slot = NULL;
            pthread_cond_broadcast(&h->slot_cv);
        }
        pthread_mutex_unlock(&h->mu);
        if (!b)
            break; /* the prepare thread is gone and handed over everything */

        uint64_t t0 = now_ms();
        hsq_job_finish_batch(b, &env);
        uint64_t ms = prep_ms + (now_ms() - t0);

        hand_back(w, batch, n, ms);
    }
    return NULL;
}

/* ---------------------------------------------------------------- loop */

static uint64_t next_wake(worker *w, uint64_t now) {
    uint64_t t = now + MAX_POLL_MS;
#define AT(x)                                                                                      \
    do {                                                                                           \
        if ((x) < t)                                                                               \
            t = (x);                                                                               \
    } while (0)
    if (w->st == ST_BACKOFF)
        AT(w->connect_at);
    if (w->st == ST_RUN && !w->stopping && !pend_has(w, HSQ_OP_LEASE) && free_slots(w) > 0)
        AT(w->next_lease_at);
    if (w->st == ST_RUN && w->nheld > 0 && !pend_has(w, HSQ_OP_HEARTBEAT))
        AT(w->next_hb_at);
    for (size_t i = 0; i < w->npend; i++)
        AT(w->pend[i].deadline);
    if (w->stopping)
        AT(w->stop_deadline);
#undef AT
    return t;
}

static void on_signal(worker *w) {
    struct signalfd_siginfo si;
    while (read(w->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        uint64_t now = now_ms();
        if (w->stopping) {
            hsq_log(HSQ_LOG_NOTICE, "worker", "signal=%u again: exiting now", si.ssi_signo);
            start_stop(w, now, 0, "signal");
        } else {
            start_stop(w, now, w->conf->stop_timeout,
                       si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
        }
    }
}

/* 1 when the loop should end. */
static int check_timers(worker *w, uint64_t now) {
    if (w->stopping) {
        if (w->st != ST_RUN)
            return 1; /* nothing of ours is in flight at the broker */
        if (w->nheld == 0 && w->npend == 0)
            return 1;
        if (now >= w->stop_deadline) {
            hsq_log(HSQ_LOG_WARN, "worker", "stop timeout jobs=%zu pending=%zu", w->nheld,
                    w->npend);
            return 1;
        }
    }
    for (size_t i = 0; i < w->npend; i++) {
        if (now >= w->pend[i].deadline) {
            char why[64];
            snprintf(why, sizeof why, "no reply to %s", hsq_op_name(w->pend[i].op));
            disconnect(w, why);
            break;
        }
    }
    if (w->st == ST_BACKOFF && !w->stopping && now >= w->connect_at) {
        int r = connect_broker(w);
        if (r) {
            hsq_log(HSQ_LOG_ERR, "worker", "cannot connect endpoint=%s err=%s", w->conf->endpoint,
                    zmq_strerror(-r));
            return -1;
        }
    }
    maybe_lease(w, now);
    maybe_heartbeat(w, now);
    return 0;
}

static int setup(worker *w, const hsq_worker_conf *c, sigset_t *mask) {
    memset(w, 0, sizeof *w);
    w->conf = c;
    w->sigfd = -1;
    w->ho.efd = -1;
    w->lim.max_bytes = c->max_image_bytes;
    w->lim.max_pixels = c->max_image_pixels;
    w->lim.max_side = (uint32_t)c->max_image_side;
    w->backoff_ms = c->reconnect_min;
    w->hb_ms = 1000; /* until the broker tells us */
    hsq_wbuf_init(&w->wb);
    hsq_log_level = hsq_log_level_parse(c->log_level);
    if (c->name[0]) {
        snprintf(w->name, sizeof w->name, "%s", c->name);
    } else {
        char host[200] = "worker";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf(w->name, sizeof w->name, "%s-%ld", host, (long)getpid());
    }
    read_cpu_model(w->device, sizeof w->device);
    srand((unsigned)(time(NULL) ^ getpid()));

    /* Signals arrive only through the signalfd: block them before any thread
     * (ours or libzmq's) exists, so every thread inherits the mask. */
    sigemptyset(mask);
    sigaddset(mask, SIGTERM);
    sigaddset(mask, SIGINT);
    if (pthread_sigmask(SIG_BLOCK, mask, NULL) != 0)
        return HSQ_WORKER_EXIT_SOFTWARE;
    w->sigfd = signalfd(-1, mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (w->sigfd < 0) {
        hsq_log(HSQ_LOG_ERR, "worker", "signalfd failed err=%s", strerror(errno));
        return HSQ_WORKER_EXIT_SOFTWARE;
    }

    int r = hsq_blob_open(&w->blob_main, c->blob_dir);
    if (!r)
        r = hsq_blob_open(&w->blob_proc, c->blob_dir);
    if (!r && c->overlap)
        r = hsq_blob_open(&w->blob_prep, c->blob_dir);
    if (r) {
        hsq_log(HSQ_LOG_ERR, "worker", "cannot open blob_dir=%s err=%s", c->blob_dir,
                hsq_strerror(r));
        return HSQ_WORKER_EXIT_CONFIG;
    }

    /* Both models are loaded before we announce ourselves: a worker without
     * them would fail every job. */
    char perr[512];
    r = strcmp(c->pipeline, "resize") == 0
            ? 0 /* no models: job.c runs the resize pipeline when pipe is NULL */
            : hsq_pipe_new(&w->pipe, c->models_dir, (int)c->threads, &w->lim, perr, sizeof perr);
    if (r) {
        hsq_log(HSQ_LOG_ERR, "worker", "%s", perr);
        return HSQ_WORKER_EXIT_CONFIG;
    }

    w->zctx = zmq_ctx_new();
    if (!w->zctx)
        return HSQ_WORKER_EXIT_SOFTWARE;
    w->ho.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->ho.efd < 0) {
        hsq_log(HSQ_LOG_ERR, "worker", "eventfd failed err=%s", strerror(errno));
        return HSQ_WORKER_EXIT_SOFTWARE;
    }
    pthread_mutex_init(&w->ho.mu, NULL);
    pthread_cond_init(&w->ho.cv, NULL);
    pthread_cond_init(&w->ho.slot_cv, NULL);
    w->ho_init = 1;
    if (pthread_create(&w->thr, NULL, c->overlap ? proc_overlap_main : proc_main, w) != 0) {
        hsq_log(HSQ_LOG_ERR, "worker", "cannot start processing thread");
        return HSQ_WORKER_EXIT_SOFTWARE;
    }
    w->thr_started = 1;
    if (c->overlap) {
        if (pthread_create(&w->prep_thr, NULL, prep_main, w) != 0) {
            hsq_log(HSQ_LOG_ERR, "worker", "cannot start prepare thread");
            /* the processing thread waits for prep_done: let it go */
            pthread_mutex_lock(&w->ho.mu);
            w->ho.prep_done = 1;
            pthread_cond_broadcast(&w->ho.slot_cv);
            pthread_mutex_unlock(&w->ho.mu);
            return HSQ_WORKER_EXIT_SOFTWARE;
        }
        w->prep_started = 1;
    }
    return 0;
}

static void teardown(worker *w) {
    /* Stop the processing thread: abort what it holds and tell it to quit;
     * it hands every queued job back (quickly, as aborted) before it exits. */
    for (hsq_job *j = w->held; j; j = j->next)
        atomic_store(&j->aborted, 1);
    if (w->thr_started) {
        pthread_mutex_lock(&w->ho.mu);
        w->ho.quit = 1;
        pthread_cond_broadcast(&w->ho.cv);
        pthread_mutex_unlock(&w->ho.mu);
        /* Overlap: the prepare thread exits first (todo empty), then the
         * processing thread once the slot is empty and prep_done is set. */
        if (w->prep_started)
            pthread_join(w->prep_thr, NULL);
        pthread_join(w->thr, NULL);
    }
    if (w->ho_init) {
        for (hsq_job *j = take_back(w), *nx; j; j = nx) {
            nx = j->qnext;
            held_remove(w, j);
            if (j->status == HSQ_JOB_DONE)
                hsq_job_delete_outputs(j, w->blob_main); /* never reported */
            hsq_job_free(&j);
        }
        pthread_mutex_destroy(&w->ho.mu);
        pthread_cond_destroy(&w->ho.cv);
        pthread_cond_destroy(&w->ho.slot_cv);
    }
    while (w->held) {
        hsq_job *j = w->held;
        w->held = j->next;
        hsq_job_free(&j);
    }
    for (size_t i = 0; i < w->npend; i++)
        hsq_job_free(&w->pend[i].job);
    free(w->pend);
    close_dealer(w);
    if (w->zctx)
        zmq_ctx_term(w->zctx);
    hsq_pipe_free(&w->pipe);
    hsq_blob_close(&w->blob_main);
    hsq_blob_close(&w->blob_proc);
    hsq_blob_close(&w->blob_prep);
    if (w->sigfd >= 0)
        close(w->sigfd);
    if (w->ho.efd >= 0)
        close(w->ho.efd);
    hsq_wbuf_free(&w->wb);
}

int hsq_worker_run(const hsq_worker_conf *c) {
    worker *w = hsq_xmalloc(sizeof *w);
    sigset_t mask;
    int code = setup(w, c, &mask);
    if (code == 0) {
        hsq_log(HSQ_LOG_NOTICE, "worker",
                "start name=%s device=\"%s\" max_batch=%llu threads=%llu models_dir=%s", w->name,
                w->device, (unsigned long long)c->max_batch, (unsigned long long)c->threads,
                c->models_dir);
        w->st = ST_BACKOFF;
        w->connect_at = now_ms();
        for (;;) {
            uint64_t now = now_ms();
            int t = check_timers(w, now);
            if (t < 0) {
                code = HSQ_WORKER_EXIT_CONFIG;
                break;
            }
            if (t > 0)
                break;
            uint64_t wake = next_wake(w, now);
            zmq_pollitem_t items[4] = {
                {NULL, w->ho.efd, ZMQ_POLLIN, 0},
                {NULL, w->sigfd, ZMQ_POLLIN, 0},
                {w->dealer, 0, ZMQ_POLLIN, 0},
                {w->mon, 0, ZMQ_POLLIN, 0},
            };
            int nitems = w->dealer ? 4 : 2;
            long timeout = wake > now ? (long)(wake - now) : 0;
            if (zmq_poll(items, nitems, timeout) < 0 && errno != EINTR) {
                hsq_log(HSQ_LOG_ERR, "worker", "zmq_poll failed err=%s", zmq_strerror(errno));
                code = HSQ_WORKER_EXIT_SOFTWARE;
                break;
            }
            /* Drain everything on every turn; the order does not matter for
             * correctness (each handler re-checks the session). */
            on_signal(w);
            drain_back(w);
            drain_dealer(w); /* replies first: they may have arrived before a drop */
            drain_monitor(w);
        }
        if (code == 0 && w->sticky)
            code = HSQ_WORKER_EXIT_STICKY;
        hsq_log(HSQ_LOG_NOTICE, "worker", "exit code=%d", code);
    }
    teardown(w);
    pthread_sigmask(SIG_UNBLOCK, &mask, NULL);
    free(w);
    return code;
}
