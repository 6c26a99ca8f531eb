#include "daemon/metrics.h"

#include "common/alloc.h"
#include "common/clock.h"
#include "schemas/err.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- histograms ---- */

static void hist_set(hsq_hist *h, const double *b, size_t n) {
    memset(h, 0, sizeof *h);
    h->n = n;
    memcpy(h->bounds, b, n * sizeof *b);
}

void hsq_hist_init_latency(hsq_hist *h) {
    static const double b[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                               0.1,    0.25,  0.5,    1,     2.5,  5,     10};
    hist_set(h, b, sizeof b / sizeof b[0]);
}

void hsq_hist_init_job(hsq_hist *h) {
    static const double b[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1,   2.5,  5,
                               10,   30,   60,  120,  300, 600, 1800, 3600};
    hist_set(h, b, sizeof b / sizeof b[0]);
}

void hsq_hist_observe(hsq_hist *h, double seconds) {
    if (seconds < 0)
        seconds = 0;
    size_t i = 0;
    while (i < h->n && seconds > h->bounds[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += seconds;
}

/* ---- per-task timing (open addressing, linear probing) ---- */

void hsq_timing_init(hsq_timing *t) {
    memset(t, 0, sizeof *t);
    hsq_hist_init_job(&t->queue_wait);
    hsq_hist_init_job(&t->run);
}

void hsq_timing_free(hsq_timing *t) {
    free(t->slots);
    t->slots = NULL;
    t->cap = t->n = 0;
}

static size_t slot_of(const hsq_timing *t, uint64_t id) {
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 20) & (t->cap - 1);
}

static hsq_timing_slot *timing_find(hsq_timing *t, uint64_t id) {
    if (!t->cap)
        return NULL;
    for (size_t i = slot_of(t, id);; i = (i + 1) & (t->cap - 1)) {
        if (t->slots[i].id == id)
            return &t->slots[i];
        if (t->slots[i].id == 0)
            return NULL;
    }
}

static void timing_put(hsq_timing *t, hsq_timing_slot v) {
    for (size_t i = slot_of(t, v.id);; i = (i + 1) & (t->cap - 1)) {
        if (t->slots[i].id == 0) {
            t->slots[i] = v;
            t->n++;
            return;
        }
    }
}

/* Keep the load at most 1/2; 0 when the table is at its bound. */
static int timing_room(hsq_timing *t) {
    if ((t->n + 1) * 2 <= t->cap)
        return 1;
    if (t->cap >= 2 * (size_t)HSQ_TIMING_MAX)
        return 0;
    size_t ocap = t->cap;
    hsq_timing_slot *old = t->slots;
    t->cap = ocap ? ocap * 2 : 1024;
    t->slots = hsq_xcalloc(t->cap, sizeof *t->slots);
    t->n = 0;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].id)
            timing_put(t, old[i]);
    free(old);
    return 1;
}

/* Backward-shift deletion: no tombstones, probes stay short. */
static void timing_del(hsq_timing *t, hsq_timing_slot *s) {
    size_t i = (size_t)(s - t->slots), mask = t->cap - 1;
    for (size_t j = (i + 1) & mask; t->slots[j].id; j = (j + 1) & mask) {
        size_t home = slot_of(t, t->slots[j].id);
        /* Move j into the hole at i when its home is not in (i, j]. */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            t->slots[i] = t->slots[j];
            i = j;
        }
    }
    t->slots[i].id = 0;
    t->n--;
}

void hsq_timing_event(hsq_timing *t, uint64_t task, uint8_t state, int64_t at_ms) {
    if (task == 0)
        return;
    hsq_timing_slot *s = timing_find(t, task);
    if (state == HSQ_STATE_QUEUED) {
        if (s) {
            s->queued_ms = at_ms;
            s->leased_ms = 0;
        } else if (timing_room(t)) {
            timing_put(t, (hsq_timing_slot){task, at_ms, 0});
        } else {
            t->dropped++;
        }
        return;
    }
    if (!s)
        return;
    if (state == HSQ_STATE_LEASED) {
        if (s->queued_ms && !s->leased_ms)
            hsq_hist_observe(&t->queue_wait, (double)(at_ms - s->queued_ms) / 1000.0);
        s->leased_ms = at_ms;
        return;
    }
    if (hsq_state_is_terminal(state)) {
        if (s->leased_ms && (state == HSQ_STATE_SUCCEEDED || state == HSQ_STATE_FAILED))
            hsq_hist_observe(&t->run, (double)(at_ms - s->leased_ms) / 1000.0);
        timing_del(t, s);
    }
}

/* ---- rendering ---- */

__attribute__((format(printf, 2, 3))) static void put(hsq_wbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        hsq_wbuf_append(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void head(hsq_wbuf *b, const char *name, const char *type, const char *help) {
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(hsq_wbuf *b, const char *name, const char *type, const char *help, uint64_t v) {
    head(b, name, type, help);
    put(b, "%s %" PRIu64 "\n", name, v);
}

/* Shortest decimal that reads back as the same double (Prometheus parses
 * Go floats; %.17g is exact, %g is friendlier for round bounds). */
static void fmt_double(char *out, size_t n, double v) {
    snprintf(out, n, "%.15g", v);
    if (strtod(out, NULL) != v)
        snprintf(out, n, "%.17g", v);
}

static void hist(hsq_wbuf *b, const char *name, const char *help, const hsq_hist *h) {
    if (!h)
        return;
    head(b, name, "histogram", help);
    uint64_t cum = 0;
    char num[40];
    for (size_t i = 0; i < h->n; i++) {
        cum += h->counts[i];
        fmt_double(num, sizeof num, h->bounds[i]);
        put(b, "%s_bucket{le=\"%s\"} %" PRIu64 "\n", name, num, cum);
    }
    put(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, h->count);
    fmt_double(num, sizeof num, h->sum);
    put(b, "%s_sum %s\n", name, num);
    put(b, "%s_count %" PRIu64 "\n", name, h->count);
}

/* Label values are ours (fixed names and the version string), but escape
 * anyway so a version with a quote cannot break the format. */
static void label_value(char *out, size_t n, const char *v) {
    size_t j = 0;
    for (size_t i = 0; v && v[i] && j + 3 < n; i++) {
        char c = v[i];
        if (c == '\\' || c == '"') {
            out[j++] = '\\';
            out[j++] = c;
        } else if (c == '\n') {
            out[j++] = '\\';
            out[j++] = 'n';
        } else {
            out[j++] = c;
        }
    }
    out[j] = '\0';
}

void hsq_metrics_render(const hsq_metrics_sample *s, hsq_wbuf *b) {
    const hsq_wire_stats *st = &s->st;
    char ver[128];
    label_value(ver, sizeof ver, s->version ? s->version : "unknown");

    head(b, "hsq_build_info", "gauge", "Build information of the running hsqd.");
    put(b, "hsq_build_info{version=\"%s\",protocol=\"%d\"} 1\n", ver, HSQ_WIRE_VERSION);

    head(b, "hsq_tasks", "gauge", "Tasks stored, by state (terminal ones until purged).");
    const struct {
        const char *state;
        uint64_t v;
    } states[] = {
        {"queued", st->queued - (st->delayed <= st->queued ? st->delayed : st->queued)},
        {"delayed", st->delayed},
        {"leased", st->leased},
        {"succeeded", st->succeeded},
        {"failed", st->failed},
        {"cancelled", st->cancelled},
        {"expired", st->expired},
    };
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
        put(b, "hsq_tasks{state=\"%s\"} %" PRIu64 "\n", states[i].state, states[i].v);

    head(b, "hsq_queue_depth", "gauge",
         "Queued tasks (including those waiting out a retry backoff), by priority class.");
    static const char *const cls[HSQ_PRIO_COUNT_] = {"high", "normal", "low"};
    for (int p = 0; p < HSQ_PRIO_COUNT_; p++)
        put(b, "hsq_queue_depth{class=\"%s\"} %" PRIu64 "\n", cls[p], st->queued_by_prio[p]);

    head(b, "hsq_oldest_queued_age_seconds", "gauge",
         "Age of the oldest queued task; 0 when the queue is empty.");
    double age = 0;
    if (st->oldest_queued_ms > 0 && s->now_ms > st->oldest_queued_ms)
        age = (double)(s->now_ms - st->oldest_queued_ms) / 1000.0;
    put(b, "hsq_oldest_queued_age_seconds %.3f\n", age);

    head(b, "hsq_workers", "gauge", "Connected workers, by state (busy: holding a lease).");
    uint64_t busy = st->workers_busy <= st->workers ? st->workers_busy : st->workers;
    put(b, "hsq_workers{state=\"idle\"} %" PRIu64 "\n", st->workers - busy);
    put(b, "hsq_workers{state=\"busy\"} %" PRIu64 "\n", busy);

    head(b, "hsq_workers_by_backend", "gauge", "Connected workers, by backend.");
    put(b, "hsq_workers_by_backend{backend=\"cpu\"} %" PRIu64 "\n", s->workers_cpu);
    put(b, "hsq_workers_by_backend{backend=\"cuda\"} %" PRIu64 "\n", s->workers_cuda);

    one(b, "hsq_leases", "gauge", "Leases held by workers (tasks in state leased).", st->leased);
    one(b, "hsq_dead_letters", "gauge", "Tasks that failed after their last attempt.", st->dead);
    one(b, "hsq_submitted_total", "counter", "Submits accepted since hsqd started.",
        st->submitted_total);
    one(b, "hsq_completed_total", "counter",
        "Tasks that reached succeeded or failed since hsqd started.", st->completed_total);
    one(b, "hsq_retries_total", "counter",
        "Lease expiries and retryable failures since hsqd started.", st->retries_total);
    one(b, "hsq_uptime_seconds", "gauge", "Seconds since hsqd started.", st->uptime_s);
    one(b, "hsq_lmdb_map_used_bytes", "gauge", "Bytes of the LMDB map in use.",
        s->lmdb_used_bytes);
    one(b, "hsq_lmdb_map_size_bytes", "gauge", "Current LMDB map size in bytes.",
        s->lmdb_map_bytes);
    head(b, "hsq_curve_handshakes_total", "counter",
         "CURVE handshakes answered by the ZAP handler, by result.");
    put(b, "hsq_curve_handshakes_total{result=\"allowed\"} %" PRIu64 "\n", s->zap_allowed);
    put(b, "hsq_curve_handshakes_total{result=\"denied\"} %" PRIu64 "\n", s->zap_denied);
    one(b, "hsq_draining", "gauge", "1 while hsqd is shutting down (no submits or leases).",
        s->draining ? 1 : 0);
    head(b, "hsq_purged_total", "counter",
         "What the retention sweeper deleted since hsqd started, by kind.");
    const struct {
        const char *kind;
        uint64_t v;
    } purged[] = {
        {"inputs", s->swept.inputs},         {"outputs", s->swept.outputs},
        {"tasks", s->swept.tasks},           {"tombstones", s->swept.tombstones},
        {"unfinished", s->swept.cancelled},
    };
    for (size_t i = 0; i < sizeof purged / sizeof purged[0]; i++)
        put(b, "hsq_purged_total{kind=\"%s\"} %" PRIu64 "\n", purged[i].kind, purged[i].v);
    one(b, "hsq_purged_bytes_total", "counter",
        "Bytes of photos and outputs the retention sweeper deleted since hsqd started.",
        s->swept.bytes);
    one(b, "hsq_purge_errors_total", "counter",
        "Blob store failures while purging (each retried a minute later).", s->swept.errors);
    one(b, "hsq_blob_store_bytes", "gauge",
        "Bytes of photos and outputs recorded in the blob store.", s->blob_bytes);
    one(b, "hsq_rate_limited_total", "counter",
        "Submits refused by the per-user or per-key rate limit since hsqd started.",
        s->rate_limited);
    one(b, "hsq_recovery_pending", "gauge",
        "1 until the walk after a crash has deleted the uploads of submits that never committed "
        "(purge requests wait for it).",
        s->recovering ? 1 : 0);
    one(b, "hsq_scrub_pending", "gauge",
        "1 while LMDB's pages are being rewritten or its free pages overwritten after an "
        "erasure or a purge.",
        s->scrubbing ? 1 : 0);
    one(b, "hsq_scrub_pages_total", "counter",
        "Free LMDB pages overwritten with zeros since hsqd started.", s->scrub_pages);
    head(b, "hsq_events_total", "counter",
         "Task events since hsqd started: published, or not encoded because no subscription "
         "matched the user's topic.");
    put(b, "hsq_events_total{delivery=\"published\"} %" PRIu64 "\n", s->events_published);
    put(b, "hsq_events_total{delivery=\"unwatched\"} %" PRIu64 "\n", s->events_unwatched);
    one(b, "hsq_event_subscriptions", "gauge",
        "Distinct topics subscribed to on the events socket.", s->event_topics);
    one(b, "hsq_waits_parked", "gauge", "wait long-polls parked until a change or their timeout.",
        s->waits_parked);
    one(b, "hsq_waits_refused_total", "counter",
        "wait long-polls refused because max_waits were parked, since hsqd started.",
        s->waits_refused);
    one(b, "hsq_output_checks_inflight", "gauge",
        "done reports whose outputs are being checked in the blob store, off the loop.",
        s->checks_inflight);
    one(b, "hsq_submits_staging", "gauge",
        "Submits whose large inputs are being written to the blob store, off the loop, before "
        "they are recorded.",
        s->stages_inflight);
    one(b, "hsq_submits_staging_bytes", "gauge",
        "Bytes of those submits held in memory meanwhile (at most staging_max; past it inputs "
        "are written in the loop's turn).",
        s->staged_bytes);
    one(b, "hsq_janitor_walks_total", "counter",
        "Walks of the whole blob store finished since hsqd started (after a start, then every "
        "janitor_interval_s).",
        s->janitor_walks);
    head(b, "hsq_janitor_removed_total", "counter",
         "Files the janitor's walks deleted: uploads of submits a crash lost, stale temp files.");
    put(b, "hsq_janitor_removed_total{kind=\"uploads\"} %" PRIu64 "\n", s->janitor_uploads_removed);
    put(b, "hsq_janitor_removed_total{kind=\"tmp\"} %" PRIu64 "\n", s->janitor_tmp_removed);
    {
        char v[32];
        fmt_double(v, sizeof v, (double)s->janitor_last_ms / 1000.0);
        head(b, "hsq_janitor_last_walk_seconds", "gauge",
             "How long the last walk of the blob store took (0 before the first).");
        put(b, "hsq_janitor_last_walk_seconds %s\n", v);
    }

    hist(b, "hsq_submit_ack_seconds", "Submit receipt to acknowledgement sent (after the commit).",
         s->submit_ack);
    hist(b, "hsq_queue_wait_seconds", "Time from queued to leased, per lease.", s->queue_wait);
    hist(b, "hsq_run_seconds", "Time from leased to succeeded or failed, per lease.", s->run);
}

/* ---- the HTTP side ---- */

struct hsq_metrics {
    struct MHD_Daemon *d;
    int port;
    char host[64]; /* as bound, for the URL */
    pthread_mutex_t mu;
    char *text; /* current snapshot, owned; NULL until the first publish */
    size_t len;
    uint64_t alive_ms; /* mono ms of the last publish */
    int ready;
};

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *ctype,
                               char *body, size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result respond_text(struct MHD_Connection *conn, unsigned status,
                                    const char *msg) {
    size_t n = strlen(msg);
    char *body = malloc(n + 1);
    if (!body)
        return MHD_NO;
    memcpy(body, msg, n + 1);
    return respond(conn, status, "text/plain; charset=utf-8", body, n);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls) {
    (void)version;
    (void)upload_data;
    (void)con_cls;
    hsq_metrics *m = cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return respond_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n");
    if (*upload_size)
        return MHD_NO;
    if (strcmp(url, "/metrics") == 0) {
        /* Copy under the lock, answer outside it: the loop's publish waits
         * at most for one memcpy. */
        pthread_mutex_lock(&m->mu);
        size_t n = m->len;
        char *body = m->text ? malloc(n ? n : 1) : NULL;
        if (body)
            memcpy(body, m->text, n);
        pthread_mutex_unlock(&m->mu);
        if (!body)
            return respond_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "no snapshot yet\n");
        return respond(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, n);
    }
    if (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0) {
        pthread_mutex_lock(&m->mu);
        uint64_t alive = m->alive_ms;
        int ready = m->ready;
        pthread_mutex_unlock(&m->mu);
        int fresh = alive && hsq_clock_mono_ms() - alive <= HSQ_METRICS_STALE_MS;
        if (url[1] == 'h')
            return fresh ? respond_text(conn, MHD_HTTP_OK, "ok\n")
                         : respond_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "loop stalled\n");
        return fresh && ready ? respond_text(conn, MHD_HTTP_OK, "ready\n")
                              : respond_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready\n");
    }
    return respond_text(conn, MHD_HTTP_NOT_FOUND, "try /metrics, /healthz or /readyz\n");
}

__attribute__((format(printf, 3, 4))) static int errf(char *err, size_t errlen, const char *fmt,
                                                      ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return HSQ_EINVAL;
}

int hsq_metrics_start(hsq_metrics **out, const char *listen, char *err, size_t errlen) {
    *out = NULL;
    char host[64];
    const char *colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= sizeof host || colon == listen)
        return errf(err, errlen, "metrics_listen: expected HOST:PORT, got \"%s\"", listen);
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || port > 65535)
        return errf(err, errlen, "metrics_listen: bad port in \"%s\"", listen);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    else if (strcmp(host, "*") == 0)
        snprintf(host, sizeof host, "0.0.0.0");
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return errf(err, errlen, "metrics_listen: \"%s\" is not an IPv4 address", host);

    hsq_metrics *m = hsq_xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    /* A handful of scrapers at most; a slow one is cut off after 10 s. */
    m->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                            on_request, m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)32,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!m->d) {
        int e = errno ? errno : EADDRINUSE;
        pthread_mutex_destroy(&m->mu);
        free(m);
        errf(err, errlen, "metrics_listen: cannot listen on %s: %s", listen, strerror(e));
        return -e;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_BIND_PORT);
    m->port = info ? (int)info->port : (int)port;
    /* A wildcard bind is reached on loopback from this host. */
    snprintf(m->host, sizeof m->host, "%s", strcmp(host, "0.0.0.0") == 0 ? "127.0.0.1" : host);
    *out = m;
    return 0;
}

int hsq_metrics_port(const hsq_metrics *m) {
    return m ? m->port : 0;
}

const char *hsq_metrics_host(const hsq_metrics *m) {
    return m ? m->host : "";
}

void hsq_metrics_publish(hsq_metrics *m, hsq_wbuf *text, uint64_t mono_ms, int ready) {
    pthread_mutex_lock(&m->mu);
    char *old = m->text;
    m->text = text->data;
    m->len = text->len;
    m->alive_ms = mono_ms;
    m->ready = ready;
    pthread_mutex_unlock(&m->mu);
    free(old);
    hsq_wbuf_init(text);
}

void hsq_metrics_stop(hsq_metrics **mp) {
    hsq_metrics *m = *mp;
    if (!m)
        return;
    MHD_stop_daemon(m->d);
    pthread_mutex_destroy(&m->mu);
    free(m->text);
    free(m);
    *mp = NULL;
}
