#include "daemon/srv.h"

#include "common/alloc.h"
#include "common/clock.h"
#include "common/fault.h"
#include "common/log.h"
#include "daemon/janitor.h"
#include "daemon/pool.h"
#include "daemon/reaper.h"
#include "daemon/topics.h"
#include "schemas/err.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>
#include <uv.h>
#include <zmq.h>

#define MAX_FRAMES (2 + HSQ_MAX_INPUTS) /* routing id, meta, images */
#define TURN_BATCH 512                  /* messages per socket per turn */
#define COMMIT_FAILS_FATAL 8            /* consecutive failed commits before exiting */
#define TICK_MS 1000                    /* metrics snapshot and loop liveness */
#define REAP_INFLIGHT 256               /* sweeper entries with the reaper at most */
#define CHECK_INFLIGHT 4096             /* dones whose outputs are being checked at most */

/* ZMQ_ZAP_ENFORCE_DOMAIN is in libzmq's DRAFT section through 4.3.5, though
 * every 4.3 build honours it (Debian's included). Setting it fails with
 * EINVAL where it is not, and then hsqd refuses to start rather than run a
 * CURVE socket that would let any key in without the handler. */
#ifdef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZAP_ENFORCE_DOMAIN ZMQ_ZAP_ENFORCE_DOMAIN
#else
#define ZAP_ENFORCE_DOMAIN 93
#endif

typedef struct {
    uv_loop_t loop;
    void *zctx;
    void *zs[3]; /* indexed by hsq_sock */
    uv_poll_t polls[3]; /* indexed by hsq_sock; the events socket's for subscriptions */
    hsq_topics *topics; /* what the events socket's subscribers want (NULL: no socket) */
    uint64_t events_published, events_unwatched;
    uv_check_t check;
    uv_idle_t idle;
    uv_timer_t timer;
    uv_signal_t sigterm, sigint;
    uv_poll_t zap_poll; /* the ZAP handler's socket (CURVE only) */
    uv_timer_t tick;    /* TICK_MS: metrics snapshot, systemd watchdog */
    uv_async_t wakeup;  /* the reaper finished a batch, or the janitor its recovery */
    hsq_reaper *reaper; /* NULL: the sweeper deletes files inline */
    hsq_pool *pool;     /* NULL: dones are checked and inputs written in the turn */
    hsq_janitor *janitor;
    int recovered_inline; /* no janitor: recovery ran on this thread; tell the core */
    int recover_rc;       /* ... how it went */
    const hsq_srv_conf *conf;
    hsq_queue *q;
    int dirty; /* a socket signalled, or a timer is due */
    int stopping;
    int stop_pending; /* stopping once the checks and stages in flight are answered */
    int closing;      /* the handles are closing: start none */
    int commit_fails; /* consecutive */
    int fatal;
    int announced;        /* readiness reported (ready fd, READY=1) */
    int curve[3];         /* the socket is a CURVE server: every message carries a ZAP user id */
    uint64_t watchdog_ms; /* 0 = systemd's watchdog is off */
    uint64_t last_watchdog_ms, last_render_ms;
    uint64_t turns, msgs;
    uint64_t end_us, end_max_us; /* time in hsq_queue_end_turn (timers, sweep, commit) */
    /* submit-ack latency: receipt time of the message behind each outbox
     * entry pushed while handling it (indexed like the outbox) */
    uint64_t *recv_us;
    size_t cap_recv;
    hsq_hist submit_ack;
    hsq_timing timing;
} srv;

static int zsock_has_input(void *s) {
    int ev = 0;
    size_t len = sizeof ev;
    if (zmq_getsockopt(s, ZMQ_EVENTS, &ev, &len) != 0)
        return 0;
    return (ev & ZMQ_POLLIN) != 0;
}

/* A request on either ROUTER, or a subscription on the events socket. */
static int has_input(srv *sv) {
    return zsock_has_input(sv->zs[HSQ_SOCK_CLIENT]) || zsock_has_input(sv->zs[HSQ_SOCK_WORKER]) ||
           (sv->zs[HSQ_SOCK_EVENTS] && zsock_has_input(sv->zs[HSQ_SOCK_EVENTS]));
}

/* Receive the rest of a multipart message and drop it. */
static void discard_rest(void *s) {
    int more = 1;
    size_t len = sizeof more;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        zmq_msg_close(&m);
        if (zmq_getsockopt(s, ZMQ_RCVMORE, &more, &len) != 0)
            return;
    }
}

/* The role of a message's sender. On a CURVE socket it comes from the ZAP
 * user id libzmq attaches to every message of the connection (never from the
 * routing id, which a peer may choose); -1 when it names no role. Plaintext
 * sockets (ipc://, or tcp:// under --insecure) have no identity:
 * HSQ_ROLE_ANY, and only the socket decides. */
static int peer_role(srv *sv, hsq_sock which, zmq_msg_t *msgs, size_t n, const char **key) {
    *key = NULL;
    if (!sv->curve[which])
        return HSQ_ROLE_ANY;
    const char *uid = zmq_msg_gets(&msgs[n > 1 ? 1 : 0], "User-Id");
    *key = uid; /* valid while the message is */
    return hsq_auth_role(uid);
}

/* Stamp the outbox entries pushed since `before` with now (receipt of the
 * message just handled), for the submit-ack histogram. */
static void note_receipt(srv *sv, size_t before) {
    size_t n;
    hsq_queue_outbox(sv->q, &n);
    if (n <= before)
        return;
    if (n > sv->cap_recv) {
        size_t cap = sv->cap_recv ? sv->cap_recv : 256;
        while (cap < n)
            cap *= 2;
        sv->recv_us = hsq_xrealloc(sv->recv_us, cap * sizeof *sv->recv_us);
        for (size_t i = sv->cap_recv; i < cap; i++)
            sv->recv_us[i] = 0;
        sv->cap_recv = cap;
    }
    uint64_t now = hsq_clock_mono_us();
    for (size_t i = before; i < n; i++)
        sv->recv_us[i] = now;
}

/* Drain up to TURN_BATCH messages from one ROUTER socket into the core.
 * Returns the number of messages handled. */
static int drain(srv *sv, hsq_sock which) {
    void *s = sv->zs[which];
    int handled = 0;
    while (handled < TURN_BATCH) {
        zmq_msg_t msgs[MAX_FRAMES];
        size_t n = 0;
        int more = 1, too_many = 0;
        while (more) {
            if (n == MAX_FRAMES) {
                too_many = 1;
                discard_rest(s);
                break;
            }
            zmq_msg_init(&msgs[n]);
            if (zmq_msg_recv(&msgs[n], s, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&msgs[n]);
                if (n == 0)
                    return handled; /* EAGAIN: drained */
                /* A multipart message arrives whole; this cannot happen. */
                break;
            }
            n++;
            more = zmq_msg_more(&msgs[n - 1]);
        }
        handled++;
        if (n > 0) {
            const uint8_t *peer = zmq_msg_data(&msgs[0]);
            size_t plen = zmq_msg_size(&msgs[0]);
            size_t before;
            hsq_queue_outbox(sv->q, &before);
            const char *key;
            int role = peer_role(sv, which, msgs, n, &key);
            if (role < 0) {
                hsq_queue_reject(sv->q, which, peer, plen, HSQ_EFORBIDDEN,
                                 "this CURVE key has no role");
            } else if (too_many) {
                hsq_queue_reject(sv->q, which, peer, plen, HSQ_ETOOLARGE,
                                 "too many frames in one message");
            } else {
                hsq_bytes frames[MAX_FRAMES];
                for (size_t i = 1; i < n; i++) {
                    frames[i - 1].ptr = zmq_msg_data(&msgs[i]);
                    frames[i - 1].len = zmq_msg_size(&msgs[i]);
                }
                hsq_queue_handle(sv->q, which, (hsq_role)role, key, peer, plen, frames, n - 1);
            }
            note_receipt(sv, before);
        }
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&msgs[i]);
    }
    return handled;
}

/* The events socket is an XPUB: read the (un)subscriptions libzmq passes
 * up, so the core encodes only events someone will receive. */
static void drain_subscriptions(srv *sv) {
    void *s = sv->zs[HSQ_SOCK_EVENTS];
    if (!s)
        return;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        int more = zmq_msg_more(&m);
        /* Anything else (an XSUB peer may send data) is ignored. */
        (void)hsq_topics_apply(sv->topics, zmq_msg_data(&m), zmq_msg_size(&m));
        zmq_msg_close(&m);
        if (more)
            discard_rest(s);
    }
}

static int event_wanted(void *ud, const void *topic, size_t len) {
    srv *sv = ud;
    if (hsq_topics_match(sv->topics, topic, len)) {
        sv->events_published++;
        return 1;
    }
    sv->events_unwatched++;
    return 0;
}

static void send_one(srv *sv, const hsq_out *o) {
    void *s = sv->zs[o->sock];
    if (!s || o->unsent)
        return; /* no events socket configured, or nobody subscribed */
    int rc = zmq_send(s, o->peer, o->peer_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    if (rc >= 0)
        rc = zmq_send(s, o->meta.data, o->meta.len, (o->nframes ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
    for (uint32_t f = 0; rc >= 0 && f < o->nframes; f++)
        rc = zmq_send(s, o->frames[f].ptr, o->frames[f].len,
                      (f + 1 < o->nframes ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
    if (rc < 0 && o->sock != HSQ_SOCK_EVENTS) {
        /* The state is in LMDB: a peer that went away will ask again
         * (clients) or its lease will expire (workers). */
        hsq_log(HSQ_LOG_NOTICE, "srv", "send failed op=%s rid=%" PRIu64 " err=%s",
                hsq_op_name(o->op), o->rid, zmq_strerror(zmq_errno()));
    }
}

/* Right before the turn's commit (queue.h, hsq_queue_set_before_commit):
 * the lease replies go now. */
static void send_early(void *ud) {
    srv *sv = ud;
    size_t n, sent = 0;
    hsq_out *out = hsq_queue_outbox(sv->q, &n);
    for (size_t i = 0; i < n; i++) {
        if (hsq_out_early(&out[i])) {
            send_one(sv, &out[i]);
            out[i].sent = 1;
            sent++;
        }
    }
    if (sent)
        hsq_fault("turn.leases_sent");
}

static void send_outbox(srv *sv, int committed) {
    size_t n;
    hsq_out *out = hsq_queue_outbox(sv->q, &n);
    for (size_t i = 0; i < n; i++) {
        hsq_out *o = &out[i];
        if (committed && sv->conf->metrics) {
            if (o->sock == HSQ_SOCK_EVENTS && o->op == HSQ_OP_EVENT)
                hsq_timing_event(&sv->timing, o->ev_task, o->ev_state, o->ev_at_ms);
            else if (o->is_reply && o->op == HSQ_OP_SUBMIT && i < sv->cap_recv && sv->recv_us[i])
                hsq_hist_observe(&sv->submit_ack,
                                 (double)(hsq_clock_mono_us() - sv->recv_us[i]) / 1e6);
        }
        if (!o->sent)
            send_one(sv, o);
    }
    hsq_queue_outbox_clear(sv->q);
    if (sv->recv_us)
        memset(sv->recv_us, 0, (n < sv->cap_recv ? n : sv->cap_recv) * sizeof *sv->recv_us);
}

static void on_timer(uv_timer_t *t);
static void on_idle(uv_idle_t *h);

static void arm_timer(srv *sv) {
    int64_t at = hsq_queue_next_deadline(sv->q);
    if (at == INT64_MAX) {
        uv_timer_stop(&sv->timer);
        return;
    }
    int64_t now = hsq_clock_wall_ms();
    uint64_t delay = at > now ? (uint64_t)(at - now) : 0;
    /* A little slack groups expiries into one turn. */
    uv_timer_start(&sv->timer, on_timer, delay + 5, 0);
}

static void run_turn(srv *sv) {
    uint64_t start = hsq_clock_mono_us();
    int rc = hsq_queue_begin_turn(sv->q, hsq_clock_wall_ms());
    if (rc != 0) {
        hsq_log(HSQ_LOG_ERR, "srv", "cannot begin transaction err=%s", hsq_errname(rc));
        sv->fatal = 1;
        uv_stop(&sv->loop);
        return;
    }
    if (sv->reaper) {
        size_t nr;
        hsq_reap *r = hsq_reaper_collect(sv->reaper, &nr);
        hsq_queue_reaped(sv->q, r, nr);
    }
    if (sv->pool) {
        size_t nc, ns;
        hsq_check *v = hsq_pool_checked(sv->pool, &nc);
        hsq_queue_checked(sv->q, v, nc);
        /* A turn's batch at most: every one takes a task id, and start-up
         * recovery assumes a turn takes fewer than HSQ_RECOVER_SPAN. */
        hsq_stage *st = hsq_pool_staged(sv->pool, TURN_BATCH, &ns);
        hsq_queue_staged(sv->q, st, ns);
        if (hsq_pool_staged_left(sv->pool))
            sv->dirty = 1; /* the rest next turn */
    }
    hsq_janitor_report jr;
    if (sv->janitor && hsq_janitor_collect(sv->janitor, &jr))
        hsq_queue_recovered(sv->q, jr.rc, jr.final, jr.n.files, jr.n.bytes);
    if (sv->recovered_inline) {
        sv->recovered_inline = 0;
        hsq_queue_recovered(sv->q, sv->recover_rc, sv->recover_rc == 0, 0, 0);
    }
    drain_subscriptions(sv);
    int n = drain(sv, HSQ_SOCK_CLIENT);
    n += drain(sv, HSQ_SOCK_WORKER);
    sv->msgs += (uint64_t)n;
    uint64_t t0 = hsq_clock_mono_us();
    rc = hsq_queue_end_turn(sv->q);
    uint64_t dt = hsq_clock_mono_us() - t0;
    sv->end_us += dt;
    if (dt > sv->end_max_us)
        sv->end_max_us = dt;
    if (rc != 0) {
        sv->commit_fails++;
        hsq_log(HSQ_LOG_ERR, "srv", "turn not committed err=%s msgs=%d detail=\"%s\" store=\"%s\"",
                hsq_errname(rc), n, hsq_strerror(rc), hsq_queue_store_error(sv->q));
        if (rc != HSQ_EDISKFULL && rc != -ENOSPC && sv->commit_fails >= COMMIT_FAILS_FATAL) {
            /* A store that keeps failing is sticky: restart rather than answer
             * errors forever. */
            sv->fatal = 1;
            uv_stop(&sv->loop);
        }
    } else {
        sv->commit_fails = 0;
    }
    if (sv->reaper) {
        /* Files first, records in a later turn: the hand-off need not wait
         * for this commit. */
        size_t nr;
        hsq_reap *r = hsq_queue_take_reaps(sv->q, &nr);
        hsq_reaper_submit(sv->reaper, r, nr);
    }
    if (sv->pool) {
        /* Taken even from a failed turn: handing them off wrote nothing. */
        size_t nc, ns;
        hsq_check *v = hsq_queue_take_checks(sv->q, &nc);
        hsq_pool_check(sv->pool, v, nc);
        hsq_stage *st = hsq_queue_take_stages(sv->q, &ns);
        hsq_pool_stage(sv->pool, st, ns);
    }
    size_t nout;
    hsq_queue_outbox(sv->q, &nout);
    send_outbox(sv, rc == 0);
    uint64_t t1 = hsq_clock_mono_us();
    hsq_queue_maintain(sv->q);
    uint64_t upkeep = hsq_clock_mono_us() - t1;
    sv->turns++;
    uint64_t total = hsq_clock_mono_us() - start;
    if (sv->conf->slow_turn_ms && total >= sv->conf->slow_turn_ms * 1000) {
        /* A stalled loop delays every client: say where the time went. */
        hsq_turn_cost c;
        hsq_queue_turn_cost(sv->q, &c);
        hsq_log(HSQ_LOG_WARN, "srv",
                "slow turn ms=%.1f msgs=%d handle_ms=%.1f sweep_ms=%.1f swept=%" PRIu32
                " flush_ms=%.1f commit_ms=%.1f send_ms=%.1f replies=%zu upkeep_ms=%.1f",
                (double)total / 1e3, n, (double)(t0 - start) / 1e3, (double)c.sweep_us / 1e3,
                c.swept, (double)c.flush_us / 1e3, (double)c.commit_us / 1e3,
                (double)(t1 - t0 - dt) / 1e3, nout, (double)upkeep / 1e3);
    }
}

static void thread_wake(void *ud);
static void report_ready(srv *sv, int fd);
static void render_metrics(srv *sv);

/* Without a janitor thread, recovery cannot wait: walk now, on the loop
 * thread, outside a turn; the next turn tells the core. */
static void recover_inline(srv *sv) {
    uint64_t removed = 0;
    int rc = hsq_queue_recover(sv->q, &removed);
    sv->recover_rc = rc;
    if (rc != 0)
        hsq_log(HSQ_LOG_WARN, "srv", "recovery walk failed err=%s", hsq_strerror(rc));
    else
        hsq_log(HSQ_LOG_NOTICE, "srv", "recovery removed=%" PRIu64 " files", removed);
    sv->recovered_inline = 1;
    sv->dirty = 1;
    uv_idle_start(&sv->idle, on_idle);
}

/* Once serving: the whole-tree walks never delay readiness (janitor.h). */
static void start_janitor(srv *sv) {
    const hsq_srv_conf *c = sv->conf;
    if (!c->blob_root || !c->blob_root[0])
        return;
    int rc = hsq_janitor_start(&sv->janitor, c->blob_root, c->recover, c->n_recover,
                               c->recover_settle_ms, c->janitor_interval_s, thread_wake, sv);
    if (rc != 0) {
        hsq_log(HSQ_LOG_WARN, "srv", "no janitor thread err=%s: recovering on the loop",
                hsq_strerror(rc));
        if (c->n_recover > 0)
            recover_inline(sv);
    }
}

/* Checks or stages are still on the pool, or back and not yet answered. */
static int pool_pending(const srv *sv) {
    return sv->pool && (hsq_pool_busy(sv->pool) > 0 || hsq_pool_staged_left(sv->pool) > 0);
}

static void on_check(uv_check_t *h) {
    srv *sv = h->data;
    /* Handshakes wait on the ZAP handler: answer them first, every wake-up
     * (its fd is edge-triggered like the others). */
    hsq_auth_serve(sv->conf->auth);
    if (!has_input(sv) && !sv->dirty) {
        uv_idle_stop(&sv->idle);
        return;
    }
    sv->dirty = 0;
    run_turn(sv);
    if (sv->stop_pending && !pool_pending(sv)) {
        uv_stop(&sv->loop); /* the last checks and stages were answered in that turn */
        return;
    }
    if (!sv->announced && !sv->stopping) {
        /* Bound, and the first turn (expired leases, backoffs) is done. */
        sv->announced = 1;
        /* The first snapshot before the announcement: whoever waits for
         * readiness may scrape /metrics at once. */
        render_metrics(sv);
        report_ready(sv, sv->conf->ready_fd);
        start_janitor(sv);
    }
    /* Sends and receives consumed the fd's edge: look again. */
    if (sv->dirty || has_input(sv))
        uv_idle_start(&sv->idle, on_idle);
    else
        uv_idle_stop(&sv->idle);
    if (!sv->stopping)
        arm_timer(sv);
}

static void on_idle(uv_idle_t *h) {
    (void)h; /* exists only to keep the loop from blocking; work runs in on_check */
}

static void on_poll(uv_poll_t *h, int status, int events) {
    (void)status;
    (void)events;
    srv *sv = h->data;
    sv->dirty = 1;
}

static void on_timer(uv_timer_t *t) {
    srv *sv = t->data;
    sv->dirty = 1;
    uv_idle_start(&sv->idle, on_idle);
}

static void on_wakeup(uv_async_t *h) {
    srv *sv = h->data;
    sv->dirty = 1;
    uv_idle_start(&sv->idle, on_idle);
}

/* A batch of checks or stages is back (on the loop thread). */
static void on_pool(void *ud) {
    srv *sv = ud;
    sv->dirty = 1;
    if (!sv->closing)
        uv_idle_start(&sv->idle, on_idle);
}

/* On the reaper's or the janitor's thread. */
static void thread_wake(void *ud) {
    srv *sv = ud;
    uv_async_send(&sv->wakeup);
}

static void on_zap_poll(uv_poll_t *h, int status, int events) {
    (void)status;
    (void)events;
    srv *sv = h->data;
    hsq_auth_serve(sv->conf->auth);
}

/* The metrics snapshot: rendered here on the loop thread, swapped into the
 * HTTP thread's hands (metrics.h). */
static void render_metrics(srv *sv) {
    const hsq_srv_conf *c = sv->conf;
    if (!c->metrics)
        return;
    hsq_metrics_sample m;
    memset(&m, 0, sizeof m);
    hsq_queue_stats(sv->q, &m.st);
    m.st.oldest_queued_ms = m.st.queued ? hsq_queue_oldest_queued_ms(sv->q) : 0;
    m.now_ms = hsq_clock_wall_ms();
    if (c->store)
        hsq_store_usage(c->store, &m.lmdb_used_bytes, &m.lmdb_map_bytes);
    hsq_auth_counts(c->auth, &m.zap_allowed, &m.zap_denied);
    m.draining = sv->stopping;
    hsq_queue_sweep_totals(sv->q, &m.swept, &m.rate_limited);
    m.blob_bytes = hsq_queue_blob_bytes(sv->q);
    hsq_queue_workers_by_backend(sv->q, &m.workers_cpu, &m.workers_cuda);
    m.recovering = hsq_queue_recovering(sv->q);
    hsq_queue_scrub_state(sv->q, &m.scrubbing, &m.scrub_pages);
    m.events_published = sv->events_published;
    m.events_unwatched = sv->events_unwatched;
    m.event_topics = sv->topics ? hsq_topics_count(sv->topics) : 0;
    hsq_queue_waits(sv->q, &m.waits_parked, &m.waits_refused);
    m.checks_inflight = hsq_queue_checks_inflight(sv->q);
    m.stages_inflight = hsq_queue_stages_inflight(sv->q, &m.staged_bytes);
    if (sv->janitor) {
        hsq_janitor_totals jt;
        hsq_janitor_get_totals(sv->janitor, &jt);
        m.janitor_walks = jt.walks;
        m.janitor_uploads_removed = jt.uploads_removed;
        m.janitor_tmp_removed = jt.tmp_removed;
        m.janitor_last_ms = jt.last_ms;
    }
    m.version = c->version;
    m.submit_ack = &sv->submit_ack;
    m.queue_wait = &sv->timing.queue_wait;
    m.run = &sv->timing.run;
    hsq_wbuf text;
    hsq_wbuf_init(&text);
    hsq_metrics_render(&m, &text);
    sv->last_render_ms = hsq_clock_mono_ms();
    hsq_metrics_publish(c->metrics, &text, sv->last_render_ms, sv->announced && !sv->stopping);
    hsq_wbuf_free(&text);
}

static void on_tick(uv_timer_t *t) {
    srv *sv = t->data;
    uint64_t now = hsq_clock_mono_ms();
    if (sv->watchdog_ms) {
        sd_notify(0, "WATCHDOG=1"); /* every tick: at least 4 per watchdog period */
        sv->last_watchdog_ms = now;
    }
    if (sv->announced && now - sv->last_render_ms >= TICK_MS - 50)
        render_metrics(sv);
}

static void on_signal(uv_signal_t *h, int signum) {
    srv *sv = h->data;
    hsq_log(HSQ_LOG_NOTICE, "srv", "signal=%d stopping: no new submits or leases", signum);
    sd_notify(0, "STOPPING=1");
    sv->stopping = 1;
    render_metrics(sv); /* /readyz turns 503 at once */
    hsq_queue_drain(sv->q);
    hsq_queue_set_checking(sv->q, 0); /* dones from now on: checked inline */
    hsq_queue_set_staging(sv->q, 0);  /* nothing new is staged (or accepted) */
    /* One last turn answers parked long-polls and commits what is pending. */
    run_turn(sv);
    if (pool_pending(sv)) {
        /* Turns go on until they are back and answered: a staged submit
         * arrived before the signal and is recorded. */
        hsq_log(HSQ_LOG_NOTICE, "srv",
                "stopping once output checks and staged inputs are back batches=%zu",
                hsq_pool_busy(sv->pool));
        sv->stop_pending = 1;
    } else {
        uv_stop(&sv->loop);
    }
}

static int make_ipc_dir(const char *endpoint) {
    if (strncmp(endpoint, "ipc://", 6) != 0)
        return 0;
    char path[512];
    snprintf(path, sizeof path, "%s", endpoint + 6);
    char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return 0;
    *slash = '\0';
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int open_socket(srv *sv, hsq_sock which, int type, const char *endpoint,
                       const hsq_srv_conf *conf) {
    void *s = zmq_socket(sv->zctx, type);
    if (!s)
        return -zmq_errno();
    int one = 1, linger = 1000, hwm = 100000;
    int64_t maxmsg = (int64_t)conf->max_msg_bytes;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (type == ZMQ_ROUTER) {
        zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    }
    int ipc = strncmp(endpoint, "ipc://", 6) == 0;
    int rc = 0;
    if (!ipc && conf->curve_secret_key && conf->curve_secret_key[0]) {
        /* CURVE server, authenticated by our ZAP handler: the domain makes
         * libzmq ask it, and enforcement makes a missing handler a refusal
         * instead of "let everyone in" (reliability notes 3.2). */
        int enforce = 1;
        if (zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, HSQ_AUTH_DOMAIN, strlen(HSQ_AUTH_DOMAIN)) != 0 ||
            zmq_setsockopt(s, ZAP_ENFORCE_DOMAIN, &enforce, sizeof enforce) != 0 ||
            zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
            zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, conf->curve_secret_key, 40) != 0)
            rc = -zmq_errno();
        sv->curve[which] = 1;
    }
    if (rc == 0)
        rc = make_ipc_dir(endpoint);
    if (rc == 0 && zmq_bind(s, endpoint) != 0)
        rc = -zmq_errno();
    if (rc == 0 && ipc && endpoint[6] != '@' && chmod(endpoint + 6, 0600) != 0)
        rc = -errno; /* only the daemon's user may connect (abstract names have no mode) */
    if (rc != 0) {
        hsq_log(HSQ_LOG_ERR, "srv", "bind endpoint=%s err=%s", endpoint, strerror(-rc));
        zmq_close(s);
        return rc;
    }
    sv->zs[which] = s;
    return 0;
}

static void report_ready(srv *sv, int fd) {
    static const char *names[3] = {"client", "worker", "events"};
    char buf[1024];
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        char ep[256] = "";
        size_t len = sizeof ep;
        if (sv->zs[i])
            zmq_getsockopt(sv->zs[i], ZMQ_LAST_ENDPOINT, ep, &len);
        hsq_log(HSQ_LOG_NOTICE, "srv", "listening socket=%s endpoint=%s security=%s", names[i], ep,
                !sv->zs[i]     ? "-"
                : sv->curve[i] ? "curve"
                               : "plain");
        int w = snprintf(buf + off, sizeof buf - off, "%s=%s\n", names[i], ep);
        if (w > 0 && (size_t)w < sizeof buf - off)
            off += (size_t)w;
    }
    if (sv->conf->metrics) {
        int w = snprintf(buf + off, sizeof buf - off, "metrics=http://%s:%d\n",
                         hsq_metrics_host(sv->conf->metrics), hsq_metrics_port(sv->conf->metrics));
        if (w > 0 && (size_t)w < sizeof buf - off)
            off += (size_t)w;
    }
    hsq_log(HSQ_LOG_NOTICE, "srv", "ready");
    /* systemd (Type=notify): a no-op without NOTIFY_SOCKET. */
    sd_notify(0, "READY=1\nSTATUS=serving");
    if (fd < 0)
        return;
    size_t done = 0;
    while (done < off) {
        ssize_t w = write(fd, buf + done, off - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    close(fd);
}

static void close_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int hsq_srv_run(const hsq_srv_conf *conf, hsq_queue *q) {
    srv sv;
    memset(&sv, 0, sizeof sv);
    sv.q = q;
    sv.conf = conf;
    hsq_hist_init_latency(&sv.submit_ack);
    hsq_timing_init(&sv.timing);
    int rc = uv_loop_init(&sv.loop);
    if (rc != 0)
        return rc;
    sv.zctx = zmq_ctx_new();
    /* The ZAP handler binds before any server socket: a CURVE socket must
     * never run a moment without it. */
    if (conf->auth) {
        rc = hsq_auth_start(conf->auth, sv.zctx);
        if (rc != 0)
            hsq_log(HSQ_LOG_ERR, "srv", "cannot bind the ZAP handler err=%s", strerror(-rc));
        if (rc == 0)
            rc = uv_poll_init(&sv.loop, &sv.zap_poll, hsq_auth_fd(conf->auth));
        sv.zap_poll.data = &sv;
        if (rc == 0)
            rc = uv_poll_start(&sv.zap_poll, UV_READABLE, on_zap_poll);
    } else if (conf->curve_secret_key && conf->curve_secret_key[0]) {
        rc = HSQ_EINVAL; /* CURVE without a handler would let every key in */
        hsq_log(HSQ_LOG_ERR, "srv", "CURVE key without a client allowlist: refusing to start");
    }
    if (rc == 0)
        rc = open_socket(&sv, HSQ_SOCK_CLIENT, ZMQ_ROUTER, conf->client_endpoint, conf);
    if (rc == 0)
        rc = open_socket(&sv, HSQ_SOCK_WORKER, ZMQ_ROUTER, conf->worker_endpoint, conf);
    if (rc == 0 && conf->events_endpoint && conf->events_endpoint[0])
        rc = open_socket(&sv, HSQ_SOCK_EVENTS, ZMQ_XPUB, conf->events_endpoint, conf);
    if (rc == 0 && sv.zs[HSQ_SOCK_EVENTS]) {
        sv.topics = hsq_topics_new(HSQ_TOPICS_MAX);
        hsq_queue_set_event_filter(q, event_wanted, &sv);
    }
    if (rc == 0) {
        int n_polls = sv.zs[HSQ_SOCK_EVENTS] ? 3 : 2;
        for (int i = 0; i < n_polls && rc == 0; i++) {
            int fd;
            size_t len = sizeof fd;
            zmq_getsockopt(sv.zs[i], ZMQ_FD, &fd, &len);
            rc = uv_poll_init(&sv.loop, &sv.polls[i], fd);
            sv.polls[i].data = &sv;
            if (rc == 0)
                rc = uv_poll_start(&sv.polls[i], UV_READABLE, on_poll);
        }
    }
    if (rc == 0) {
        uv_check_init(&sv.loop, &sv.check);
        sv.check.data = &sv;
        uv_check_start(&sv.check, on_check);
        uv_idle_init(&sv.loop, &sv.idle);
        sv.idle.data = &sv;
        uv_timer_init(&sv.loop, &sv.timer);
        sv.timer.data = &sv;
        uv_signal_init(&sv.loop, &sv.sigterm);
        sv.sigterm.data = &sv;
        uv_signal_start_oneshot(&sv.sigterm, on_signal, SIGTERM);
        uv_signal_init(&sv.loop, &sv.sigint);
        sv.sigint.data = &sv;
        uv_signal_start_oneshot(&sv.sigint, on_signal, SIGINT);
        uv_timer_init(&sv.loop, &sv.tick);
        sv.tick.data = &sv;
        if (conf->blob_root && conf->blob_root[0]) {
            uv_async_init(&sv.loop, &sv.wakeup, on_wakeup);
            sv.wakeup.data = &sv;
            int r = hsq_reaper_start(&sv.reaper, conf->blob_root, thread_wake, &sv);
            if (r == 0)
                hsq_queue_set_reaping(q, REAP_INFLIGHT);
            else /* inline deletions still work: slower turns, nothing lost */
                hsq_log(HSQ_LOG_WARN, "srv", "no reaper thread err=%s: the sweeper deletes inline",
                        hsq_strerror(r));
            r = hsq_pool_new(&sv.pool, &sv.loop, conf->blob_root, on_pool, &sv);
            if (r == 0) {
                hsq_queue_set_checking(q, CHECK_INFLIGHT);
                hsq_queue_set_staging(q, conf->staging_max);
            } else {
                hsq_log(HSQ_LOG_WARN, "srv",
                        "no pool handle err=%s: dones are checked and inputs written in the turn",
                        hsq_strerror(r));
            }
        } else if (conf->n_recover > 0) {
            recover_inline(&sv); /* no blob root: no threads */
        }
        hsq_queue_set_cost_clock(q, hsq_clock_mono_us);
        hsq_queue_set_before_commit(q, send_early, &sv);
        uint64_t wd_us = 0;
        if (sd_watchdog_enabled(0, &wd_us) > 0)
            sv.watchdog_ms = wd_us / 1000 ? wd_us / 1000 : 1;
        uint64_t tick = TICK_MS;
        if (sv.watchdog_ms && sv.watchdog_ms / 4 < tick)
            tick = sv.watchdog_ms / 4 ? sv.watchdog_ms / 4 : 1;
        if (conf->metrics || sv.watchdog_ms)
            uv_timer_start(&sv.tick, on_tick, tick, tick);
        /* First turn at once: leases that expired while we were down.
         * Readiness is reported after it (on_check). */
        uv_timer_start(&sv.timer, on_timer, 0, 0);
        uv_run(&sv.loop, UV_RUN_DEFAULT);
    }

    /* The threads before the handles: they wake the loop through one.
     * Entries the reaper holds stay due in the index, and recovery ranges
     * stay recorded: the next start redoes them. */
    hsq_janitor_stop(&sv.janitor);
    hsq_reaper_stop(&sv.reaper);
    hsq_queue_set_reaping(q, 0);
    /* Handles first (poll handles must stop before their sockets close).
     * That run also waits for checks and stages still on the pool (after a
     * fatal error): their workers get no answer, and their leases expire;
     * their clients get none either, and hsq_pool_free removes the staged
     * files. */
    hsq_queue_set_checking(q, 0);
    hsq_queue_set_staging(q, 0);
    hsq_queue_set_before_commit(q, NULL, NULL);
    sv.closing = 1;
    uv_walk(&sv.loop, close_walk, NULL);
    uv_run(&sv.loop, UV_RUN_DEFAULT);
    hsq_pool_free(&sv.pool);
    uv_loop_close(&sv.loop);
    for (int i = 0; i < 3; i++)
        if (sv.zs[i])
            zmq_close(sv.zs[i]);
    hsq_auth_stop(conf->auth); /* after the server sockets: no handshake is left without it */
    zmq_ctx_term(sv.zctx);
    hsq_queue_set_event_filter(q, NULL, NULL); /* it pointed at this frame */
    hsq_topics_free(sv.topics);
    free(sv.recv_us);
    hsq_timing_free(&sv.timing);
    hsq_log(HSQ_LOG_NOTICE, "srv",
            "stopped turns=%" PRIu64 " msgs=%" PRIu64 " commit_ms=%" PRIu64 " commit_max_ms=%.1f",
            sv.turns, sv.msgs, sv.end_us / 1000, (double)sv.end_max_us / 1000.0);
    if (rc != 0)
        return rc;
    return sv.fatal ? HSQ_ESTORE : 0;
}
