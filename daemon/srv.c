#include "daemon/srv.h"

#include "common/clock.h"
#include "common/log.h"
#include "schemas/err.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
#include <zmq.h>

#define MAX_FRAMES (2 + HSQ_MAX_INPUTS) /* routing id, meta, images */
#define TURN_BATCH 512                  /* messages per socket per turn */
#define COMMIT_FAILS_FATAL 8            /* consecutive failed commits before exiting */

typedef struct {
    uv_loop_t loop;
    void *zctx;
    void *zs[3]; /* indexed by hsq_sock */
    uv_poll_t polls[2];
    uv_check_t check;
    uv_idle_t idle;
    uv_timer_t timer;
    uv_signal_t sigterm, sigint;
    hsq_queue *q;
    int dirty;        /* a socket signalled, or a timer is due */
    int stopping;
    int commit_fails; /* consecutive */
    int fatal;
    uint64_t turns, msgs;
} srv;

static int zsock_has_input(void *s) {
    int ev = 0;
    size_t len = sizeof ev;
    if (zmq_getsockopt(s, ZMQ_EVENTS, &ev, &len) != 0)
        return 0;
    return (ev & ZMQ_POLLIN) != 0;
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
            if (too_many) {
                hsq_queue_reject(sv->q, which, peer, plen, HSQ_ETOOLARGE,
                                 "too many frames in one message");
            } else {
                hsq_bytes frames[MAX_FRAMES];
                for (size_t i = 1; i < n; i++) {
                    frames[i - 1].ptr = zmq_msg_data(&msgs[i]);
                    frames[i - 1].len = zmq_msg_size(&msgs[i]);
                }
                hsq_queue_handle(sv->q, which, HSQ_ROLE_ANY, peer, plen, frames, n - 1);
            }
        }
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&msgs[i]);
    }
    return handled;
}

static void send_outbox(srv *sv) {
    size_t n;
    hsq_out *out = hsq_queue_outbox(sv->q, &n);
    for (size_t i = 0; i < n; i++) {
        hsq_out *o = &out[i];
        void *s = sv->zs[o->sock];
        if (!s)
            continue; /* no PUB socket configured */
        int rc = zmq_send(s, o->peer, o->peer_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        if (rc >= 0)
            rc = zmq_send(s, o->meta.data, o->meta.len,
                          (o->nframes ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
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
    hsq_queue_outbox_clear(sv->q);
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
    int rc = hsq_queue_begin_turn(sv->q, hsq_clock_wall_ms());
    if (rc != 0) {
        hsq_log(HSQ_LOG_ERR, "srv", "cannot begin transaction err=%s", hsq_errname(rc));
        sv->fatal = 1;
        uv_stop(&sv->loop);
        return;
    }
    int n = drain(sv, HSQ_SOCK_CLIENT);
    n += drain(sv, HSQ_SOCK_WORKER);
    sv->msgs += (uint64_t)n;
    rc = hsq_queue_end_turn(sv->q);
    if (rc != 0) {
        sv->commit_fails++;
        hsq_log(HSQ_LOG_ERR, "srv", "turn not committed err=%s msgs=%d detail=\"%s\"",
                hsq_errname(rc), n, hsq_strerror(rc));
        if (rc != HSQ_EDISKFULL && rc != -ENOSPC && sv->commit_fails >= COMMIT_FAILS_FATAL) {
            /* A store that keeps failing is sticky: restart rather than answer
             * errors forever. */
            sv->fatal = 1;
            uv_stop(&sv->loop);
        }
    } else {
        sv->commit_fails = 0;
    }
    send_outbox(sv);
    sv->turns++;
}

static void on_check(uv_check_t *h) {
    srv *sv = h->data;
    int more = zsock_has_input(sv->zs[HSQ_SOCK_CLIENT]) || zsock_has_input(sv->zs[HSQ_SOCK_WORKER]);
    if (!more && !sv->dirty) {
        uv_idle_stop(&sv->idle);
        return;
    }
    sv->dirty = 0;
    run_turn(sv);
    /* Sends and receives consumed the fd's edge: look again. */
    if (zsock_has_input(sv->zs[HSQ_SOCK_CLIENT]) || zsock_has_input(sv->zs[HSQ_SOCK_WORKER]))
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

static void on_signal(uv_signal_t *h, int signum) {
    srv *sv = h->data;
    hsq_log(HSQ_LOG_NOTICE, "srv", "signal=%d stopping: no new submits or leases", signum);
    sv->stopping = 1;
    hsq_queue_drain(sv->q);
    /* One last turn answers parked long-polls and commits what is pending. */
    run_turn(sv);
    uv_stop(&sv->loop);
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
    int rc = make_ipc_dir(endpoint);
    if (rc == 0 && zmq_bind(s, endpoint) != 0)
        rc = -zmq_errno();
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
        hsq_log(HSQ_LOG_NOTICE, "srv", "listening socket=%s endpoint=%s", names[i], ep);
        int w = snprintf(buf + off, sizeof buf - off, "%s=%s\n", names[i], ep);
        if (w > 0 && (size_t)w < sizeof buf - off)
            off += (size_t)w;
    }
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
    int rc = uv_loop_init(&sv.loop);
    if (rc != 0)
        return rc;
    sv.zctx = zmq_ctx_new();
    rc = open_socket(&sv, HSQ_SOCK_CLIENT, ZMQ_ROUTER, conf->client_endpoint, conf);
    if (rc == 0)
        rc = open_socket(&sv, HSQ_SOCK_WORKER, ZMQ_ROUTER, conf->worker_endpoint, conf);
    if (rc == 0 && conf->events_endpoint && conf->events_endpoint[0])
        rc = open_socket(&sv, HSQ_SOCK_EVENTS, ZMQ_PUB, conf->events_endpoint, conf);
    if (rc == 0) {
        for (int i = 0; i < 2 && rc == 0; i++) {
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
        /* First turn at once: leases that expired while we were down. */
        uv_timer_start(&sv.timer, on_timer, 0, 0);
        report_ready(&sv, conf->ready_fd);
        hsq_log(HSQ_LOG_NOTICE, "srv", "ready");
        uv_run(&sv.loop, UV_RUN_DEFAULT);
    }

    /* Handles first (poll handles must stop before their sockets close). */
    uv_walk(&sv.loop, close_walk, NULL);
    uv_run(&sv.loop, UV_RUN_DEFAULT);
    uv_loop_close(&sv.loop);
    for (int i = 0; i < 3; i++)
        if (sv.zs[i])
            zmq_close(sv.zs[i]);
    zmq_ctx_term(sv.zctx);
    hsq_log(HSQ_LOG_NOTICE, "srv", "stopped turns=%" PRIu64 " msgs=%" PRIu64, sv.turns, sv.msgs);
    if (rc != 0)
        return rc;
    return sv.fatal ? HSQ_ESTORE : 0;
}
