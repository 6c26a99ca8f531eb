/* client.c - libhsq: blocking request/reply over a ZeroMQ DEALER socket.
 *
 * DESIGN. One request is in flight at a time. A call encodes its request with
 * the shared codec, waits until the socket can hand it to a connected peer
 * (ZMQ_IMMEDIATE=1, so "nothing listening" is told apart from "no answer"),
 * sends it, then reads replies until one carries the request's rid or the
 * deadline passes. On a deadline the socket is closed with linger 0 and a new
 * one is connected: a DEALER has no way to cancel a request, and the reply
 * that would arrive late must not be read as the answer to the next request.
 * The rid check covers the remaining case (a reply to a request that was
 * abandoned on the same socket for another reason).
 *
 * A reply's frames stay in the zmq_msg_t's they were received into and are
 * decoded in place (the codec's views point into frame 0), so nothing is
 * copied; the client keeps the last reply alive until its next call, and
 * hsq_client_result() hands its reply over to the result object instead.
 * zmq_msg_t's are never moved once received: small frames live inside the
 * zmq_msg_t itself, so moving one would move the bytes the views point at.
 */
#include "client/hsq.h"

#include "common/alloc.h"
#include "common/clock.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define MAX_PARTS (1 + HSQ_MAX_INPUTS + HSQ_MAX_OUTPUTS) /* export replies */
#define ERRMSG_CAP (HSQ_MAX_ERRMSG_LEN + 128)

/* One received reply: its frames and the message decoded from frame 0. */
typedef struct {
    zmq_msg_t parts[MAX_PARTS];
    size_t n;    /* initialised entries of parts */
    int decoded; /* msg must be freed */
    hsq_wire_msg msg;
} reply;

struct hsq_client {
    void *ctx;
    void *sock; /* NULL after a failed reconnect; reopened on the next call */
    char *endpoint;
    int timeout_ms;
    int slow_ms;  /* added to timeout_ms for purge and erase */
    uint64_t rid; /* last request id used */
    int curve;
    char server_key[41], public_key[41], secret_key[41];
    hsq_wbuf out; /* encoded meta of the request in flight */
    reply last;   /* reply of the last call; the views handed out point into it */
    char errmsg[ERRMSG_CAP];
};

/* Result objects own their reply; pub comes first so the caller's pointer is
 * the allocation. */
typedef struct {
    hsq_client_res pub;
    reply rep;
} res_box;

__attribute__((format(printf, 2, 3))) static void set_err(hsq_client *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
}

static void reply_release(reply *r) {
    if (r->decoded)
        hsq_wire_msg_free(&r->msg);
    r->decoded = 0;
    for (size_t i = 0; i < r->n; i++)
        zmq_msg_close(&r->parts[i]);
    r->n = 0;
}

/* ---- socket ---- */

static void sock_close(hsq_client *c) {
    if (c->sock) {
        int zero = 0;
        zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(c->sock);
        c->sock = NULL;
    }
}

static int sock_open(hsq_client *c) {
    void *s = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!s) {
        int e = errno;
        set_err(c, "cannot create socket: %s", zmq_strerror(e));
        return -e;
    }
    int zero = 0, one = 1, e;
    /* linger 0: an abandoned request is dropped, never delivered on close.
     * immediate: queue only to completed connections, so that a daemon that is
     * not there makes the send wait (and time out as "unavailable"). */
    if (zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(s, ZMQ_IMMEDIATE, &one, sizeof one) != 0)
        goto fail;
    if (c->curve && (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, c->server_key, 40) != 0 ||
                     zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, c->public_key, 40) != 0 ||
                     zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, c->secret_key, 40) != 0))
        goto fail;
    if (zmq_connect(s, c->endpoint) != 0) {
        e = errno;
        zmq_close(s);
        set_err(c, "invalid endpoint \"%s\": %s", c->endpoint, zmq_strerror(e));
        if (e == EINVAL || e == EPROTONOSUPPORT || e == ENOCOMPATPROTO)
            return HSQ_EINVAL;
        return -e;
    }
    c->sock = s;
    return 0;
fail:
    e = errno;
    zmq_close(s);
    set_err(c, "cannot set socket options: %s", zmq_strerror(e));
    return e == EINVAL ? HSQ_EINVAL : -e;
}

/* Drop the socket and connect a fresh one, so that nothing sent to or queued
 * for the old one can reach the next request. A failure to reconnect is left
 * for the next call to report. */
static void sock_reset(hsq_client *c) {
    char keep[ERRMSG_CAP];
    memcpy(keep, c->errmsg, sizeof keep);
    sock_close(c);
    (void)sock_open(c);
    memcpy(c->errmsg, keep, sizeof keep);
}

static int remaining_ms(uint64_t deadline) {
    uint64_t now = hsq_clock_mono_ms();
    if (now >= deadline)
        return 0;
    uint64_t left = deadline - now;
    return left > INT32_MAX ? INT32_MAX : (int)left;
}

/* Wait for `events` on the socket until the deadline: 1 ready, 0 deadline,
 * negative error. */
static int sock_wait(hsq_client *c, short events, uint64_t deadline) {
    for (;;) {
        zmq_pollitem_t it = {c->sock, 0, events, 0};
        int left = remaining_ms(deadline);
        int r = zmq_poll(&it, 1, left);
        if (r > 0)
            return 1;
        if (r == 0) {
            if (left == 0)
                return 0;
            continue; /* woke a little early */
        }
        if (errno == EINTR)
            continue;
        int e = errno;
        set_err(c, "poll: %s", zmq_strerror(e));
        return -e;
    }
}

/* Read every part of one message into r (parts beyond MAX_PARTS are counted
 * in *total and dropped). */
static int recv_message(hsq_client *c, reply *r, size_t *total) {
    *total = 0;
    int more = 1;
    while (more) {
        zmq_msg_t scratch, *m = r->n < MAX_PARTS ? &r->parts[r->n] : &scratch;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, c->sock, ZMQ_DONTWAIT) < 0) {
            int e = errno;
            zmq_msg_close(m);
            if (e == EINTR)
                continue;
            set_err(c, "receive: %s", zmq_strerror(e));
            return -e;
        }
        more = zmq_msg_more(m);
        (*total)++;
        if (m == &scratch)
            zmq_msg_close(m);
        else
            r->n++;
    }
    return 0;
}

/* Encode and send a request and its binary frames. */
static int send_request(hsq_client *c, hsq_wire_msg *req, const hsq_client_input *frames,
                        size_t nframes) {
    c->errmsg[0] = '\0';
    req->v = HSQ_WIRE_VERSION;
    req->kind = HSQ_KIND_REQUEST;
    req->rid = ++c->rid;
    hsq_wbuf_reset(&c->out);
    int rc = hsq_wire_encode(req, &c->out);
    if (rc != 0) {
        set_err(c, "cannot encode %s request: %s", hsq_op_name(req->op), hsq_strerror(rc));
        return rc;
    }
    if (!c->sock && (rc = sock_open(c)) != 0)
        return rc;
    /* Handing the request over takes at most the timeout. */
    rc = sock_wait(c, ZMQ_POLLOUT, hsq_clock_mono_ms() + (uint64_t)c->timeout_ms);
    if (rc == 0) {
        set_err(c, "cannot reach hsqd at %s within %d ms (is it running?)", c->endpoint,
                c->timeout_ms);
        sock_reset(c);
        return HSQ_EUNAVAIL;
    }
    if (rc < 0)
        return rc;
    /* Once the first part is accepted the rest of the message goes to the same
     * pipe; the high-water mark only counts whole messages. */
    if (zmq_send(c->sock, c->out.data, c->out.len, ZMQ_DONTWAIT | (nframes ? ZMQ_SNDMORE : 0)) < 0)
        goto send_fail;
    for (size_t i = 0; i < nframes; i++) {
        int flags = ZMQ_DONTWAIT | (i + 1 < nframes ? ZMQ_SNDMORE : 0);
        if (zmq_send(c->sock, frames[i].data, frames[i].len, flags) < 0)
            goto send_fail;
    }
    return 0;

send_fail:
    rc = errno;
    set_err(c, "cannot send to hsqd at %s: %s", c->endpoint, zmq_strerror(rc));
    sock_reset(c);
    return rc == EAGAIN ? HSQ_EUNAVAIL : -rc;
}

/* Read until the reply to one of the two requests (rid b 0: only a) is in
 * *rep, or the deadline. A timeout resets the socket unless keep (the
 * request stays pending: its reply may still come). On success *rep holds
 * a decoded reply (kind and op checked; rep->msg.rid says which); an error
 * reply is turned into its code here. */
static int await_reply(hsq_client *c, uint64_t rid_a, hsq_op op_a, uint64_t rid_b, hsq_op op_b,
                       uint64_t deadline, int keep, reply *rep) {
    for (;;) {
        int rc = sock_wait(c, ZMQ_POLLIN, deadline);
        if (rc == 0) {
            if (!keep)
                sock_reset(c);
            return HSQ_ETIMEOUT;
        }
        if (rc < 0) {
            sock_reset(c);
            return rc;
        }
        size_t total;
        if ((rc = recv_message(c, rep, &total)) != 0) {
            reply_release(rep);
            sock_reset(c);
            return rc;
        }
        rc = hsq_wire_decode(zmq_msg_data(&rep->parts[0]), zmq_msg_size(&rep->parts[0]), total - 1,
                             &rep->msg);
        rep->decoded = 1;
        uint64_t rid = rep->msg.rid;
        if (rid != rid_a && (rid_b == 0 || rid != rid_b)) {
            /* A reply to an abandoned request (or garbage): not ours. */
            reply_release(rep);
            continue;
        }
        hsq_op op = rid == rid_a ? op_a : op_b;
        if (rc != 0) {
            set_err(c, "malformed %s reply from hsqd: %s", hsq_op_name(op), rep->msg.errmsg);
            reply_release(rep);
            return rc;
        }
        /* An error reply may name no op (hsqd could not read ours): the rid
         * is enough to know it answers this request. */
        if (rep->msg.kind == HSQ_KIND_ERROR) {
            const hsq_rep_error *e = &rep->msg.rep.error;
            set_err(c, "%.*s", (int)e->message.len, e->message.ptr ? e->message.ptr : "");
            rc = e->code < 0 ? e->code : HSQ_EINTERNAL;
            if (c->errmsg[0] == '\0')
                set_err(c, "%s", hsq_strerror(rc));
            reply_release(rep);
            return rc;
        }
        if (rep->msg.kind == HSQ_KIND_REQUEST || rep->msg.op != op) {
            set_err(c, "hsqd answered a %s request with a %s %s", hsq_op_name(op),
                    hsq_op_name(rep->msg.op),
                    rep->msg.kind == HSQ_KIND_REQUEST ? "request" : "reply");
            reply_release(rep);
            return HSQ_EBADREQ;
        }
        return 0;
    }
}

/* Send the encoded request plus its binary frames, then read until the
 * matching reply is in *rep. extra_ms (a wait, a purge) extends only the
 * wait for the reply. */
static int call(hsq_client *c, hsq_wire_msg *req, const hsq_client_input *frames, size_t nframes,
                uint32_t extra_ms, reply *rep) {
    uint64_t start = hsq_clock_mono_ms();
    int rc = send_request(c, req, frames, nframes);
    if (rc != 0)
        return rc;
    rc = await_reply(c, req->rid, req->op, 0, HSQ_OP_STATS,
                     start + (uint64_t)c->timeout_ms + extra_ms, 0, rep);
    if (rc == HSQ_ETIMEOUT)
        set_err(c, "no reply from hsqd at %s within %u ms", c->endpoint,
                (unsigned)c->timeout_ms + extra_ms);
    return rc;
}

/* ---- lifecycle ---- */

int hsq_client_open(hsq_client **out, const char *endpoint, int timeout_ms) {
    if (!endpoint || !*endpoint) {
        endpoint = getenv(HSQ_CLIENT_ENDPOINT_ENV);
        if (!endpoint || !*endpoint)
            endpoint = HSQ_CLIENT_DEFAULT_ENDPOINT;
    }
    hsq_client *c = hsq_xcalloc(1, sizeof *c);
    c->endpoint = hsq_xstrndup(endpoint, strlen(endpoint));
    hsq_client_set_timeout(c, timeout_ms);
    c->slow_ms = HSQ_CLIENT_SLOW_MS;
    const char *slow = getenv(HSQ_CLIENT_SLOW_ENV);
    if (slow && *slow) {
        char *end;
        long v = strtol(slow, &end, 10);
        if (*end == '\0' && v >= 0 && v <= 86400000)
            c->slow_ms = (int)v;
    }
    hsq_wbuf_init(&c->out);
    c->ctx = zmq_ctx_new();
    if (!c->ctx) {
        int e = errno;
        free(c->endpoint);
        free(c);
        return -e;
    }
    int rc = sock_open(c);
    if (rc != 0) {
        hsq_client_close(&c);
        return rc;
    }
    *out = c;
    return 0;
}

void hsq_client_close(hsq_client **cp) {
    if (!cp || !*cp)
        return;
    hsq_client *c = *cp;
    reply_release(&c->last);
    sock_close(c);
    zmq_ctx_term(c->ctx);
    hsq_wbuf_free(&c->out);
    free(c->endpoint);
    free(c);
    *cp = NULL;
}

static int z85_key_ok(const char *k) {
    static const char z85[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              ".-:+=^!/*?&<>()[]{}@%$#";
    if (!k || strlen(k) != 40)
        return 0;
    for (size_t i = 0; i < 40; i++)
        if (!strchr(z85, k[i]))
            return 0;
    return 1;
}

int hsq_client_set_curve(hsq_client *c, const char *server_key, const char *public_key,
                         const char *secret_key) {
    c->errmsg[0] = '\0';
    if (!server_key && !public_key && !secret_key) {
        c->curve = 0;
    } else {
        if (!z85_key_ok(server_key) || !z85_key_ok(public_key) || !z85_key_ok(secret_key)) {
            set_err(c, "CURVE keys must be 40 characters of Z85");
            return HSQ_EINVAL;
        }
        if (!zmq_has("curve")) {
            set_err(c, "this libzmq was built without CURVE");
            return HSQ_EINVAL;
        }
        memcpy(c->server_key, server_key, 41);
        memcpy(c->public_key, public_key, 41);
        memcpy(c->secret_key, secret_key, 41);
        c->curve = 1;
    }
    sock_close(c);
    return sock_open(c);
}

void hsq_client_set_timeout(hsq_client *c, int timeout_ms) {
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : HSQ_CLIENT_DEFAULT_TIMEOUT_MS;
}

const char *hsq_client_endpoint(const hsq_client *c) {
    return c->endpoint;
}

const char *hsq_client_errmsg(const hsq_client *c) {
    return c->errmsg;
}

/* ---- argument checks (before anything is encoded, for clear messages) ---- */

static int check_str(hsq_client *c, const char *what, const char *s, size_t max, int required) {
    if (!s || !*s) {
        if (!required)
            return 0;
        set_err(c, "%s is required", what);
        return HSQ_EINVAL;
    }
    size_t len = strlen(s);
    if (len > max) {
        set_err(c, "%s is longer than %zu bytes", what, max);
        return HSQ_EINVAL;
    }
    if (!hsq_utf8_valid(s, len)) {
        set_err(c, "%s is not valid UTF-8", what);
        return HSQ_EINVAL;
    }
    return 0;
}

static hsq_str opt_str(const char *s) {
    return hsq_str_c(s ? s : "");
}

/* Start a call: the previous reply (and every view into it) goes away. */
static void begin(hsq_client *c, hsq_wire_msg *req, hsq_op op) {
    reply_release(&c->last);
    c->errmsg[0] = '\0';
    memset(req, 0, sizeof *req);
    req->op = op;
}

/* ---- operations ---- */

int hsq_client_submit(hsq_client *c, const hsq_client_job *job, hsq_rep_submit *out) {
    hsq_wire_msg req;
    begin(c, &req, HSQ_OP_SUBMIT);
    int rc;
    if ((rc = check_str(c, "user", job->user, HSQ_MAX_USER_LEN, 1)) != 0 ||
        (rc = check_str(c, "key", job->key, HSQ_MAX_USER_LEN, 0)) != 0 ||
        (rc = check_str(c, "prompt", job->prompt, HSQ_MAX_PROMPT_LEN, 0)) != 0)
        return rc;
    if ((unsigned)job->prio >= HSQ_PRIO_COUNT_) {
        set_err(c, "priority %d is not one of high, normal, low", (int)job->prio);
        return HSQ_EINVAL;
    }
    if (job->n_inputs < 1 || job->n_inputs > HSQ_MAX_INPUTS) {
        set_err(c, "a job needs 1 to %d images, not %zu", HSQ_MAX_INPUTS, job->n_inputs);
        return HSQ_EINVAL;
    }
    if (job->n_outputs < 1 || job->n_outputs > HSQ_MAX_OUTPUTS) {
        set_err(c, "a job needs 1 to %d outputs, not %zu", HSQ_MAX_OUTPUTS, job->n_outputs);
        return HSQ_EINVAL;
    }
    hsq_req_submit *s = &req.req.submit;
    s->user = hsq_str_c(job->user);
    s->key = opt_str(job->key);
    s->prio = (uint8_t)job->prio;
    s->prompt = opt_str(job->prompt);
    s->n_inputs = (uint32_t)job->n_inputs;
    for (size_t i = 0; i < job->n_inputs; i++) {
        const hsq_client_input *in = &job->inputs[i];
        const char *name = in->name ? in->name : "";
        if ((rc = check_str(c, "input kind", in->kind, HSQ_MAX_NAME_LEN, 1)) != 0 ||
            (rc = check_str(c, "input name", name, HSQ_MAX_NAME_LEN, 0)) != 0)
            return rc;
        if (in->len == 0 || !in->data) {
            set_err(c, "image %zu (%s) is empty", i, name);
            return HSQ_EINVAL;
        }
        if (in->len > HSQ_MAX_FRAME_BYTES) {
            set_err(c, "image %zu (%s) is %zu bytes, over the limit of %u", i, name, in->len,
                    (unsigned)HSQ_MAX_FRAME_BYTES);
            return HSQ_ETOOLARGE;
        }
        s->inputs[i].kind = hsq_str_c(in->kind);
        s->inputs[i].name = hsq_str_c(name);
        s->inputs[i].frame = (uint32_t)i;
    }
    s->n_outputs = (uint32_t)job->n_outputs;
    s->keep_uploads_s = job->keep_uploads_s;
    s->keep_outputs_s = job->keep_outputs_s;
    memcpy(s->outputs, job->outputs, job->n_outputs * sizeof *job->outputs);
    hsq_wbuf sb;
    hsq_wbuf_init(&sb);
    if (job->settings) {
        if (hsq_wire_settings_encode(job->settings, &sb) != 0) {
            hsq_wbuf_free(&sb);
            set_err(c, "settings outside their limits");
            return HSQ_EINVAL;
        }
        s->settings = (hsq_bytes){(const uint8_t *)sb.data, sb.len};
    }

    rc = call(c, &req, job->inputs, job->n_inputs, 0, &c->last);
    hsq_wbuf_free(&sb);
    if (rc != 0)
        return rc;
    if (out)
        *out = c->last.msg.rep.submit;
    return 0;
}

static int task_call(hsq_client *c, hsq_op op, uint64_t task, const char *user,
                     hsq_wire_task *out) {
    hsq_wire_msg req;
    begin(c, &req, op);
    int rc = check_str(c, "user", user, HSQ_MAX_USER_LEN, 0);
    if (rc != 0)
        return rc;
    req.req.task.task = task;
    req.req.task.user = opt_str(user);
    if ((rc = call(c, &req, NULL, 0, 0, &c->last)) != 0)
        return rc;
    if (out)
        *out = c->last.msg.rep.task.task;
    return 0;
}

int hsq_client_status(hsq_client *c, uint64_t task, const char *user, hsq_wire_task *out) {
    return task_call(c, HSQ_OP_STATUS, task, user, out);
}

int hsq_client_cancel(hsq_client *c, uint64_t task, const char *user, hsq_wire_task *out) {
    return task_call(c, HSQ_OP_CANCEL, task, user, out);
}

int hsq_client_requeue(hsq_client *c, uint64_t task, const char *user, hsq_wire_task *out) {
    return task_call(c, HSQ_OP_REQUEUE, task, user, out);
}

int hsq_client_wait(hsq_client *c, uint64_t task, const char *user, hsq_state since,
                    uint32_t wait_ms, hsq_wire_task *out, int *timed_out) {
    hsq_wire_msg req;
    begin(c, &req, HSQ_OP_WAIT);
    int rc = check_str(c, "user", user, HSQ_MAX_USER_LEN, 0);
    if (rc != 0)
        return rc;
    if (wait_ms > HSQ_MAX_WAIT_MS) {
        set_err(c, "wait time %u ms is over the limit of %d ms", (unsigned)wait_ms,
                HSQ_MAX_WAIT_MS);
        return HSQ_EINVAL;
    }
    if ((unsigned)since >= HSQ_STATE_COUNT_) {
        set_err(c, "unknown task state %d", (int)since);
        return HSQ_EINVAL;
    }
    req.req.wait.task = task;
    req.req.wait.user = opt_str(user);
    req.req.wait.timeout_ms = wait_ms;
    req.req.wait.since = (uint8_t)since;
    if ((rc = call(c, &req, NULL, 0, wait_ms, &c->last)) != 0)
        return rc;
    if (out)
        *out = c->last.msg.rep.task.task;
    if (timed_out)
        *timed_out = c->last.msg.rep.task.timed_out != 0;
    return 0;
}

int hsq_client_result(hsq_client *c, uint64_t task, const char *user, hsq_client_res **out) {
    hsq_wire_msg req;
    begin(c, &req, HSQ_OP_RESULT);
    int rc = check_str(c, "user", user, HSQ_MAX_USER_LEN, 0);
    if (rc != 0)
        return rc;
    req.req.task.task = task;
    req.req.task.user = opt_str(user);
    res_box *box = hsq_xcalloc(1, sizeof *box);
    if ((rc = call(c, &req, NULL, 0, 0, &box->rep)) != 0) {
        free(box);
        return rc;
    }
    hsq_client_res *r = &box->pub;
    r->task = box->rep.msg.rep.task.task;
    r->priv_ = box;
    size_t nframes = box->rep.n - 1;
    if (r->task.n_outputs != nframes) {
        set_err(c, "result of task %llu lists %u outputs but carries %zu frames",
                (unsigned long long)task, (unsigned)r->task.n_outputs, nframes);
        rc = HSQ_EBADREQ;
        goto bad;
    }
    r->n = (uint32_t)nframes;
    for (uint32_t i = 0; i < r->n; i++) {
        zmq_msg_t *m = &box->rep.parts[1 + i];
        r->data[i].ptr = zmq_msg_data(m);
        r->data[i].len = zmq_msg_size(m);
        if (r->data[i].len != r->task.outputs[i].size) {
            set_err(c, "output %u of task %llu is %zu bytes, its metadata says %llu", i,
                    (unsigned long long)task, r->data[i].len,
                    (unsigned long long)r->task.outputs[i].size);
            rc = HSQ_EBADREQ;
            goto bad;
        }
    }
    *out = r;
    return 0;
bad:
    reply_release(&box->rep);
    free(box);
    return rc;
}

void hsq_client_res_free(hsq_client_res **rp) {
    if (!rp || !*rp)
        return;
    res_box *box = (*rp)->priv_;
    reply_release(&box->rep);
    free(box);
    *rp = NULL;
}

int hsq_client_list(hsq_client *c, const char *user, uint32_t limit, uint64_t before,
                    hsq_rep_list *out) {
    hsq_wire_msg req;
    begin(c, &req, HSQ_OP_LIST);
    int rc = check_str(c, "user", user, HSQ_MAX_USER_LEN, 1);
    if (rc != 0)
        return rc;
    if (limit > HSQ_MAX_LIST) {
        set_err(c, "list limit %u is over the maximum of %d", (unsigned)limit, HSQ_MAX_LIST);
        return HSQ_EINVAL;
    }
    req.req.list.user = hsq_str_c(user);
    req.req.list.limit = limit ? limit : 20;
    req.req.list.before = before;
    if ((rc = call(c, &req, NULL, 0, 0, &c->last)) != 0)
        return rc;
    if (out)
        *out = c->last.msg.rep.list;
    return 0;
}

int hsq_client_stats(hsq_client *c, hsq_wire_stats *out) {
    hsq_wire_msg req;
    begin(c, &req, HSQ_OP_STATS);
    int rc = call(c, &req, NULL, 0, 0, &c->last);
    if (rc != 0)
        return rc;
    if (out)
        *out = c->last.msg.rep.stats;
    return 0;
}

/* ---- retention and privacy ---- */

int hsq_client_purge(hsq_client *c, int dry_run, uint32_t limit, hsq_rep_purge *out) {
    hsq_wire_msg req;
    begin(c, &req, HSQ_OP_PURGE);
    if (limit > 1000000) {
        set_err(c, "purge limit %u is over the maximum of 1000000", (unsigned)limit);
        return HSQ_EINVAL;
    }
    req.req.purge.dry_run = dry_run != 0;
    req.req.purge.limit = limit ? limit : 100000;
    int rc = call(c, &req, NULL, 0, c->slow_ms, &c->last);
    if (rc != 0)
        return rc;
    if (out)
        *out = c->last.msg.rep.purge;
    return 0;
}

int hsq_client_erase(hsq_client *c, const char *user, hsq_rep_erase *out) {
    hsq_wire_msg req;
    begin(c, &req, HSQ_OP_ERASE);
    int rc = check_str(c, "user", user, HSQ_MAX_USER_LEN, 1);
    if (rc != 0)
        return rc;
    req.req.erase.user = hsq_str_c(user);
    if ((rc = call(c, &req, NULL, 0, c->slow_ms, &c->last)) != 0)
        return rc;
    if (out)
        *out = c->last.msg.rep.erase;
    return 0;
}

int hsq_client_erase_wait(hsq_client *c, const char *user, uint32_t wait_s,
                          void (*waiting)(void *ud, uint64_t waited_s), void *ud,
                          hsq_rep_erase *out) {
    hsq_wire_msg req, ping;
    begin(c, &req, HSQ_OP_ERASE);
    int rc = check_str(c, "user", user, HSQ_MAX_USER_LEN, 1);
    if (rc != 0)
        return rc;
    req.req.erase.user = hsq_str_c(user);
    uint64_t start = hsq_clock_mono_ms();
    if ((rc = send_request(c, &req, NULL, 0)) != 0)
        return rc;
    /* One request, kept: hsqd answers it when the erasure is done. A
     * request sent again would be a new one, and a receipt that came back
     * between the two would be lost. While it waits, a stats round trip
     * says hsqd is still there. */
    uint64_t ping_rid = 0, deadline = start + (uint64_t)c->timeout_ms + (uint64_t)c->slow_ms;
    for (;;) {
        rc = await_reply(c, req.rid, HSQ_OP_ERASE, ping_rid, HSQ_OP_STATS, deadline, 1, &c->last);
        uint64_t now = hsq_clock_mono_ms();
        if (rc == 0 && c->last.msg.rid == req.rid) {
            if (out)
                *out = c->last.msg.rep.erase;
            return 0;
        }
        if (rc == 0) { /* the ping's reply: wait again */
            reply_release(&c->last);
            ping_rid = 0;
            deadline = now + (uint64_t)c->timeout_ms + (uint64_t)c->slow_ms;
            continue;
        }
        if (rc != HSQ_ETIMEOUT || ping_rid != 0) {
            if (rc == HSQ_ETIMEOUT) {
                set_err(c, "hsqd at %s stopped answering during the erasure", c->endpoint);
                rc = HSQ_EUNAVAIL;
            }
            sock_reset(c);
            return rc;
        }
        uint64_t waited_s = (now - start) / 1000;
        if (wait_s && waited_s >= wait_s) {
            set_err(c, "no receipt within %u s", (unsigned)wait_s);
            sock_reset(c);
            return HSQ_ETIMEOUT;
        }
        if (waiting)
            waiting(ud, waited_s);
        memset(&ping, 0, sizeof ping);
        ping.op = HSQ_OP_STATS;
        if ((rc = send_request(c, &ping, NULL, 0)) != 0)
            return rc;
        ping_rid = ping.rid;
        deadline = now + (uint64_t)c->timeout_ms;
    }
}

int hsq_client_credits(hsq_client *c, const char *user, int64_t grant, hsq_rep_credits *out) {
    hsq_wire_msg req;
    begin(c, &req, HSQ_OP_CREDITS);
    int rc = check_str(c, "user", user, HSQ_MAX_USER_LEN, 1);
    if (rc != 0)
        return rc;
    req.req.credits.user = hsq_str_c(user);
    req.req.credits.grant = grant;
    if ((rc = call(c, &req, NULL, 0, 0, &c->last)) != 0)
        return rc;
    if (out)
        *out = c->last.msg.rep.credits;
    return 0;
}

/* Export objects own their reply, like result objects. */
typedef struct {
    hsq_client_export pub;
    reply rep;
} export_box;

/* The bytes of frame f (an index among the binary frames), checked against
 * the recorded size; HSQ_NO_FRAME leaves *out empty. */
static int export_frame(hsq_client *c, export_box *box, uint32_t f, uint64_t size,
                        const char *what, uint32_t i, hsq_bytes *out) {
    out->ptr = NULL;
    out->len = 0;
    if (f == HSQ_NO_FRAME)
        return 0;
    if ((size_t)f + 1 >= box->rep.n) {
        set_err(c, "export: %s %u names frame %u, which is missing", what, i, f);
        return HSQ_EBADREQ;
    }
    zmq_msg_t *m = &box->rep.parts[1 + f];
    out->ptr = zmq_msg_data(m);
    out->len = zmq_msg_size(m);
    if (out->len != size) {
        set_err(c, "export: %s %u is %zu bytes, its metadata says %llu", what, i, out->len,
                (unsigned long long)size);
        return HSQ_EBADREQ;
    }
    return 0;
}

int hsq_client_export_next(hsq_client *c, const char *user, uint64_t after,
                           hsq_client_export **out) {
    hsq_wire_msg req;
    begin(c, &req, HSQ_OP_EXPORT);
    *out = NULL;
    int rc = check_str(c, "user", user, HSQ_MAX_USER_LEN, 1);
    if (rc != 0)
        return rc;
    req.req.export_.user = hsq_str_c(user);
    req.req.export_.after = after;
    export_box *box = hsq_xcalloc(1, sizeof *box);
    if ((rc = call(c, &req, NULL, 0, 0, &box->rep)) != 0) {
        free(box);
        return rc;
    }
    hsq_client_export *e = &box->pub;
    e->rep = box->rep.msg.rep.export_;
    e->priv_ = box;
    if (!e->rep.has_task) {
        reply_release(&box->rep);
        free(box);
        return 0;
    }
    for (uint32_t i = 0; i < e->rep.n_inputs; i++)
        if ((rc = export_frame(c, box, e->rep.inputs[i].frame, e->rep.inputs[i].size, "input", i,
                               &e->in_data[i])) != 0)
            goto bad;
    for (uint32_t i = 0; i < e->rep.task.n_outputs; i++)
        if ((rc = export_frame(c, box, e->rep.out_frames[i], e->rep.task.outputs[i].size,
                               "output", i, &e->out_data[i])) != 0)
            goto bad;
    *out = e;
    return 0;
bad:
    reply_release(&box->rep);
    free(box);
    return rc;
}

void hsq_client_export_free(hsq_client_export **ep) {
    if (!ep || !*ep)
        return;
    export_box *box = (*ep)->priv_;
    reply_release(&box->rep);
    free(box);
    *ep = NULL;
}
