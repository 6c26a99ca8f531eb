/* test_wire.c - the wire codec: round trips of every message, and refusals.
 *
 * Round trips build each message in C, encode, decode, check fields, then
 * re-encode and compare bytes. Hand-written messages use a small text notation
 * packed with msgpack-c directly (mp() below), so the key names and types the
 * decoder expects are checked independently of the encoder:
 *   {k: v, 'k 2': v}  map (keys: bare words, quoted strings, or any value)
 *   [a, b]            array;  *N v repeats v N times inside an array
 *   'text' "text"     str, with \xNN escapes;  @N: str of N 'a's
 *   12 -3             integers (any uint64/int64)
 *   true false nil    ~1.5: float64   #N: bin of N bytes
 */
#include "schemas/err.h"
#include "schemas/wire.h"

#include "common/buf.h"
#include "test.h"

#include <ctype.h>
#include <msgpack.h>

/* ------------------------------------------------------------ mp() notation */

typedef struct {
    const char *p;
} mp_src;

static void mp_value(mp_src *s, hsq_wbuf *out);

static int wbuf_write(void *data, const char *buf, size_t len) {
    hsq_wbuf_append(data, buf, len);
    return 0;
}

static void skip_ws(mp_src *s) {
    while (*s->p && (isspace((unsigned char)*s->p) || *s->p == ','))
        s->p++;
}

static void mp_string(mp_src *s, msgpack_packer *pk) {
    char q = *s->p++;
    hsq_wbuf b;
    hsq_wbuf_init(&b);
    while (*s->p && *s->p != q) {
        char ch = *s->p++;
        if (ch == '\\' && s->p[0] == 'x') {
            char hex[3] = {s->p[1], s->p[2], 0};
            ch = (char)strtol(hex, NULL, 16);
            s->p += 3;
        }
        hsq_wbuf_append(&b, &ch, 1);
    }
    HSQ_ASSERT(*s->p == q);
    s->p++;
    msgpack_pack_str(pk, b.len);
    msgpack_pack_str_body(pk, b.data, b.len);
    hsq_wbuf_free(&b);
}

/* Children of a container go to a scratch buffer first: the header needs the
 * count. Returns the number of values (maps: pairs). */
static unsigned mp_children(mp_src *s, char close, bool map, hsq_wbuf *body) {
    unsigned n = 0;
    for (;;) {
        skip_ws(s);
        if (*s->p == close) {
            s->p++;
            return n;
        }
        HSQ_ASSERT(*s->p != '\0');
        unsigned rep = 1;
        if (!map && *s->p == '*') {
            rep = (unsigned)strtoul(s->p + 1, (char **)&s->p, 10);
            skip_ws(s);
        }
        const char *start = s->p;
        for (unsigned r = 0; r < rep; r++) {
            s->p = start;
            if (map && (isalpha((unsigned char)*s->p) || *s->p == '_')) {
                const char *k = s->p;
                while (isalnum((unsigned char)*s->p) || *s->p == '_')
                    s->p++;
                msgpack_packer pk;
                msgpack_packer_init(&pk, body, wbuf_write);
                msgpack_pack_str(&pk, (size_t)(s->p - k));
                msgpack_pack_str_body(&pk, k, (size_t)(s->p - k));
            } else if (map) {
                mp_value(s, body);
            }
            if (map) {
                skip_ws(s);
                HSQ_ASSERT(*s->p == ':');
                s->p++;
            }
            mp_value(s, body);
            n++;
        }
    }
}

static void mp_value(mp_src *s, hsq_wbuf *out) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, wbuf_write);
    skip_ws(s);
    char c = *s->p;
    if (c == '{' || c == '[') {
        hsq_wbuf body;
        hsq_wbuf_init(&body);
        s->p++;
        unsigned n = mp_children(s, c == '{' ? '}' : ']', c == '{', &body);
        if (c == '{')
            msgpack_pack_map(&pk, n);
        else
            msgpack_pack_array(&pk, n);
        hsq_wbuf_append(out, body.data, body.len);
        hsq_wbuf_free(&body);
    } else if (c == '\'' || c == '"') {
        mp_string(s, &pk);
    } else if (c == '@') {
        size_t n = strtoul(s->p + 1, (char **)&s->p, 10);
        msgpack_pack_str(&pk, n);
        for (size_t i = 0; i < n; i++)
            msgpack_pack_str_body(&pk, "a", 1);
    } else if (c == '#') {
        size_t n = strtoul(s->p + 1, (char **)&s->p, 10);
        msgpack_pack_bin(&pk, n);
        for (size_t i = 0; i < n; i++)
            msgpack_pack_bin_body(&pk, "\xab", 1);
    } else if (c == '~') {
        msgpack_pack_double(&pk, strtod(s->p + 1, (char **)&s->p));
    } else if (c == '-') {
        msgpack_pack_int64(&pk, strtoll(s->p, (char **)&s->p, 10));
    } else if (isdigit((unsigned char)c)) {
        msgpack_pack_uint64(&pk, strtoull(s->p, (char **)&s->p, 10));
    } else if (strncmp(s->p, "true", 4) == 0) {
        msgpack_pack_true(&pk);
        s->p += 4;
    } else if (strncmp(s->p, "false", 5) == 0) {
        msgpack_pack_false(&pk);
        s->p += 5;
    } else if (strncmp(s->p, "nil", 3) == 0) {
        msgpack_pack_nil(&pk);
        s->p += 3;
    } else {
        HSQ_FAIL_("mp: bad notation at '%s'", s->p);
    }
}

static void mp(const char *text, hsq_wbuf *out) {
    mp_src s = {text};
    hsq_wbuf_reset(out);
    mp_value(&s, out);
    skip_ws(&s);
    HSQ_ASSERT(*s.p == '\0');
}

/* ------------------------------------------------------------ fixtures */

static const uint8_t sha_a[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                  17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static hsq_wire_msg new_msg(hsq_msg_kind kind, hsq_op op, uint64_t rid) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof(m));
    m.kind = kind;
    m.op = op;
    m.rid = rid;
    return m;
}

static void fill_output(hsq_wire_output *o, const char *key, uint32_t w) {
    o->key = hsq_str_c(key);
    o->size = 123456789012ull;
    memcpy(o->sha256, sha_a, 32);
    o->width = w;
    o->height = w + 1;
    o->format = HSQ_FMT_PNG;
}

static void fill_task(hsq_wire_task *t, uint64_t id, hsq_state st, uint32_t nout) {
    t->id = id;
    t->user = HSQ_STR_LIT("user-\xc3\xa9");
    t->key = HSQ_STR_LIT("idem-1");
    t->state = (uint8_t)st;
    t->prio = HSQ_PRIO_LOW;
    t->attempts = 2;
    t->created_ms = 1700000000000;
    t->updated_ms = -5; /* any int64 travels */
    t->expires_ms = 0;
    t->progress = 40;
    t->stage = HSQ_STR_LIT("segment");
    t->err_code = st == HSQ_STATE_FAILED ? HSQ_ENOFACE : 0;
    t->err_msg = st == HSQ_STATE_FAILED ? HSQ_STR_LIT("no face") : (hsq_str){NULL, 0};
    t->n_inputs = 3;
    t->n_outputs = nout;
    for (uint32_t i = 0; i < nout; i++)
        fill_output(&t->outputs[i], "u/ab/1/out.png", 512 + i);
}

static void fill_submit(hsq_req_submit *s) {
    s->user = HSQ_STR_LIT("alice");
    s->key = HSQ_STR_LIT("k1");
    s->prio = HSQ_PRIO_HIGH;
    s->prompt = HSQ_STR_LIT("navy suit, grey backdrop");
    s->n_inputs = 3;
    const char *kinds[] = {"portrait", "clothing", "background"};
    for (uint32_t i = 0; i < 3; i++) {
        s->inputs[i].kind = hsq_str_c(kinds[i]);
        s->inputs[i].name = i == 1 ? (hsq_str){NULL, 0} : HSQ_STR_LIT("me.jpg");
        s->inputs[i].frame = i;
    }
    s->n_outputs = 2;
    s->outputs[0] = (hsq_wire_outspec){1024, 1024, HSQ_FMT_JPEG, 85};
    s->outputs[1] = (hsq_wire_outspec){256, 256, HSQ_FMT_PNG, 0};
}

static void fill_job(hsq_wire_job *j, uint64_t task) {
    j->task = task;
    j->token = 0xdeadbeefcafeull;
    j->attempt = 1;
    j->prio = HSQ_PRIO_NORMAL;
    j->deadline_ms = 1700000030000;
    j->out_prefix = HSQ_STR_LIT("u/ab12/7/");
    j->prompt = HSQ_STR_LIT("smile");
    j->n_inputs = 2;
    j->inputs[0] = (hsq_wire_input){HSQ_STR_LIT("portrait"), HSQ_STR_LIT("a.jpg"),
                                    HSQ_STR_LIT("in/ab/7/0"), HSQ_NO_FRAME, 1000};
    j->inputs[1] = (hsq_wire_input){HSQ_STR_LIT("background"), {NULL, 0}, {NULL, 0}, 1, 2000};
    j->n_outputs = 1;
    j->outputs[0] = (hsq_wire_outspec){800, 600, HSQ_FMT_JPEG, 0};
}

/* ------------------------------------------------------------ round trips */

typedef struct {
    const char *name;
    size_t nframes;
    void (*build)(hsq_wire_msg *m);
    void (*verify)(const hsq_wire_msg *m); /* checks the decoded message */
} rt_case;

static hsq_wire_task list_tasks[3];
static hsq_wire_job lease_jobs[2];

static void b_submit(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_SUBMIT, 1);
    fill_submit(&m->req.submit);
}
static void v_submit(const hsq_wire_msg *m) {
    const hsq_req_submit *s = &m->req.submit;
    HSQ_ASSERT_VIEW_EQ(s->user, "alice");
    HSQ_ASSERT_VIEW_EQ(s->key, "k1");
    HSQ_ASSERT_EQ(s->prio, HSQ_PRIO_HIGH);
    HSQ_ASSERT_VIEW_EQ(s->prompt, "navy suit, grey backdrop");
    HSQ_ASSERT_EQ(s->n_inputs, 3);
    HSQ_ASSERT_VIEW_EQ(s->inputs[2].kind, "background");
    HSQ_ASSERT_VIEW_EQ(s->inputs[0].name, "me.jpg");
    HSQ_ASSERT_EQ(s->inputs[1].name.len, 0);
    HSQ_ASSERT_EQ(s->inputs[2].frame, 2);
    HSQ_ASSERT_EQ(s->n_outputs, 2);
    HSQ_ASSERT_EQ(s->outputs[0].quality, 85);
    HSQ_ASSERT_EQ(s->outputs[1].format, HSQ_FMT_PNG);
    HSQ_ASSERT_EQ(s->outputs[1].height, 256);
}

static void b_status(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_STATUS, 2);
    m->req.task.task = 77;
    m->req.task.user = HSQ_STR_LIT("alice");
}
static void v_task_req(const hsq_wire_msg *m) {
    HSQ_ASSERT_U64_EQ(m->req.task.task, 77);
    HSQ_ASSERT_VIEW_EQ(m->req.task.user, "alice");
}
static void b_result(hsq_wire_msg *m) {
    b_status(m);
    m->op = HSQ_OP_RESULT;
}
static void b_cancel(hsq_wire_msg *m) {
    b_status(m);
    m->op = HSQ_OP_CANCEL;
}
static void b_requeue(hsq_wire_msg *m) {
    b_status(m);
    m->op = HSQ_OP_REQUEUE;
    m->req.task.user = (hsq_str){NULL, 0};
}
static void v_requeue(const hsq_wire_msg *m) {
    HSQ_ASSERT_U64_EQ(m->req.task.task, 77);
    HSQ_ASSERT_EQ(m->req.task.user.len, 0);
}

static void b_wait(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_WAIT, 3);
    m->req.wait = (hsq_req_wait){88, HSQ_STR_LIT("bob"), 30000, HSQ_STATE_QUEUED};
}
static void v_wait(const hsq_wire_msg *m) {
    HSQ_ASSERT_U64_EQ(m->req.wait.task, 88);
    HSQ_ASSERT_EQ(m->req.wait.timeout_ms, 30000);
    HSQ_ASSERT_EQ(m->req.wait.since, HSQ_STATE_QUEUED);
}
static void b_wait_terminal(hsq_wire_msg *m) {
    b_wait(m);
    m->req.wait.since = HSQ_STATE_NONE;
    m->req.wait.timeout_ms = 0;
}
static void v_wait_terminal(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->req.wait.since, HSQ_STATE_NONE);
    HSQ_ASSERT_EQ(m->req.wait.timeout_ms, 0);
}

static void b_list(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_LIST, 4);
    m->req.list = (hsq_req_list){HSQ_STR_LIT("carol"), 100, 12345};
}
static void v_list(const hsq_wire_msg *m) {
    HSQ_ASSERT_VIEW_EQ(m->req.list.user, "carol");
    HSQ_ASSERT_EQ(m->req.list.limit, 100);
    HSQ_ASSERT_U64_EQ(m->req.list.before, 12345);
}
static void b_stats(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_STATS, UINT64_MAX);
}
static void v_stats(const hsq_wire_msg *m) {
    HSQ_ASSERT_U64_EQ(m->rid, UINT64_MAX);
}

static void b_ready(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_READY, 5);
    m->req.ready =
        (hsq_req_ready){HSQ_STR_LIT("w1"), HSQ_STR_LIT("cuda"), HSQ_STR_LIT("NVIDIA H200"), 8, 3};
}
static void v_ready(const hsq_wire_msg *m) {
    HSQ_ASSERT_VIEW_EQ(m->req.ready.backend, "cuda");
    HSQ_ASSERT_VIEW_EQ(m->req.ready.device, "NVIDIA H200");
    HSQ_ASSERT_EQ(m->req.ready.max_batch, 8);
    HSQ_ASSERT_EQ(m->req.ready.prefetch, 3);
}
static void b_lease(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_LEASE, 6);
    m->req.lease = (hsq_req_lease){4, HSQ_MAX_WAIT_MS};
}
static void v_lease(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->req.lease.max, 4);
    HSQ_ASSERT_EQ(m->req.lease.wait_ms, HSQ_MAX_WAIT_MS);
}
static void b_heartbeat(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_HEARTBEAT, 7);
    m->req.heartbeat.n = HSQ_MAX_BATCH;
    for (uint32_t i = 0; i < HSQ_MAX_BATCH; i++)
        m->req.heartbeat.leases[i] = (hsq_wire_lease_ref){100 + i, 9000 + i};
}
static void v_heartbeat(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->req.heartbeat.n, HSQ_MAX_BATCH);
    HSQ_ASSERT_U64_EQ(m->req.heartbeat.leases[63].task, 163);
    HSQ_ASSERT_U64_EQ(m->req.heartbeat.leases[63].token, 9063);
}
static void b_progress(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_PROGRESS, 8);
    m->req.progress = (hsq_req_progress){5, 6, 100, HSQ_STR_LIT("encode")};
}
static void v_progress(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->req.progress.pct, 100);
    HSQ_ASSERT_VIEW_EQ(m->req.progress.stage, "encode");
}
static void b_done(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_DONE, 9);
    m->req.done.task = 5;
    m->req.done.token = 6;
    m->req.done.n_outputs = HSQ_MAX_OUTPUTS;
    for (uint32_t i = 0; i < HSQ_MAX_OUTPUTS; i++)
        fill_output(&m->req.done.outputs[i], "u/ab/5/o", 100 + i);
}
static void v_done(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->req.done.n_outputs, HSQ_MAX_OUTPUTS);
    HSQ_ASSERT(memcmp(m->req.done.outputs[15].sha256, sha_a, 32) == 0);
    HSQ_ASSERT_EQ(m->req.done.outputs[15].width, 115);
    HSQ_ASSERT_U64_EQ(m->req.done.outputs[15].size, 123456789012ull);
}
static void b_fail(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_FAIL, 10);
    m->req.fail = (hsq_req_fail){5, 6, HSQ_EFACESMALL, HSQ_STR_LIT("face is 20 px"), 1};
}
static void v_fail(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->req.fail.code, HSQ_EFACESMALL);
    HSQ_ASSERT_EQ(m->req.fail.retryable, 1);
    HSQ_ASSERT_VIEW_EQ(m->req.fail.message, "face is 20 px");
}
static void b_abort(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_ABORT, 0);
    m->req.abort = (hsq_cmd_abort){5, 6};
}
static void v_abort(const hsq_wire_msg *m) {
    HSQ_ASSERT_U64_EQ(m->req.abort.task, 5);
    HSQ_ASSERT_U64_EQ(m->req.abort.token, 6);
}
static void b_event(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_EVENT, 0);
    m->req.event =
        (hsq_event){5, HSQ_STR_LIT("alice"), HSQ_STATE_LEASED, 55, HSQ_STR_LIT("detect"), -1};
}
static void v_event(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->req.event.state, HSQ_STATE_LEASED);
    HSQ_ASSERT_EQ(m->req.event.progress, 55);
    HSQ_ASSERT_EQ(m->req.event.at_ms, -1);
}

static void b_rep_submit(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REPLY, HSQ_OP_SUBMIT, 1);
    m->rep.submit = (hsq_rep_submit){42, HSQ_STATE_QUEUED, 1};
}
static void v_rep_submit(const hsq_wire_msg *m) {
    HSQ_ASSERT_U64_EQ(m->rep.submit.task, 42);
    HSQ_ASSERT_EQ(m->rep.submit.created, 1);
}
static void b_rep_status(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REPLY, HSQ_OP_STATUS, 2);
    fill_task(&m->rep.task.task, 77, HSQ_STATE_FAILED, 0);
}
static void v_rep_status(const hsq_wire_msg *m) {
    const hsq_wire_task *t = &m->rep.task.task;
    HSQ_ASSERT_U64_EQ(t->id, 77);
    HSQ_ASSERT_VIEW_EQ(t->user, "user-\xc3\xa9");
    HSQ_ASSERT_EQ(t->state, HSQ_STATE_FAILED);
    HSQ_ASSERT_EQ(t->prio, HSQ_PRIO_LOW);
    HSQ_ASSERT_EQ(t->err_code, HSQ_ENOFACE);
    HSQ_ASSERT_EQ(t->updated_ms, -5);
    HSQ_ASSERT_EQ(t->n_outputs, 0);
}
static void b_rep_result(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REPLY, HSQ_OP_RESULT, 3);
    fill_task(&m->rep.task.task, 77, HSQ_STATE_SUCCEEDED, 3);
}
static void v_rep_result(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->rep.task.task.n_outputs, 3);
    HSQ_ASSERT_EQ(m->rep.task.task.err_code, 0);
    HSQ_ASSERT_EQ(m->rep.task.task.outputs[2].width, 514);
}
static void b_rep_wait(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REPLY, HSQ_OP_WAIT, 4);
    fill_task(&m->rep.task.task, 78, HSQ_STATE_LEASED, 0);
    m->rep.task.timed_out = 1;
}
static void v_rep_wait(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->rep.task.timed_out, 1);
    HSQ_ASSERT_EQ(m->rep.task.task.state, HSQ_STATE_LEASED);
}
static void b_rep_cancel(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REPLY, HSQ_OP_CANCEL, 5);
    fill_task(&m->rep.task.task, 79, HSQ_STATE_CANCELLED, 0);
}
static void b_rep_requeue(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REPLY, HSQ_OP_REQUEUE, 5);
    fill_task(&m->rep.task.task, 79, HSQ_STATE_QUEUED, 0);
}
static void v_rep_task_any(const hsq_wire_msg *m) {
    HSQ_ASSERT_U64_EQ(m->rep.task.task.id, 79);
}
static void b_rep_list(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REPLY, HSQ_OP_LIST, 6);
    fill_task(&list_tasks[0], 30, HSQ_STATE_SUCCEEDED, 2);
    fill_task(&list_tasks[1], 20, HSQ_STATE_FAILED, 0);
    fill_task(&list_tasks[2], 10, HSQ_STATE_EXPIRED, 0);
    m->rep.list = (hsq_rep_list){3, list_tasks, 10};
}
static void v_rep_list(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->rep.list.n, 3);
    HSQ_ASSERT(m->rep.list.tasks != list_tasks); /* owned by the message */
    HSQ_ASSERT_U64_EQ(m->rep.list.tasks[2].id, 10);
    HSQ_ASSERT_EQ(m->rep.list.tasks[0].n_outputs, 2);
    HSQ_ASSERT_U64_EQ(m->rep.list.next, 10);
}
static void b_rep_list_empty(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REPLY, HSQ_OP_LIST, 6);
    m->rep.list = (hsq_rep_list){0, NULL, 0};
}
static void v_rep_list_empty(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->rep.list.n, 0);
    HSQ_ASSERT(m->rep.list.tasks == NULL);
}
static void b_rep_stats(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REPLY, HSQ_OP_STATS, 7);
    hsq_wire_stats *s = &m->rep.stats;
    s->queued = 1, s->leased = 2, s->succeeded = 3, s->failed = 4, s->cancelled = 5;
    s->expired = 6, s->queued_by_prio[0] = 7, s->queued_by_prio[1] = 8;
    s->queued_by_prio[2] = 9, s->delayed = 10, s->dead = 11, s->workers = 12;
    s->workers_busy = 13, s->submitted_total = 14, s->completed_total = 15;
    s->retries_total = 16, s->oldest_queued_ms = 17, s->uptime_s = 18;
}
static void v_rep_stats(const hsq_wire_msg *m) {
    const hsq_wire_stats *s = &m->rep.stats;
    HSQ_ASSERT_U64_EQ(s->queued_by_prio[HSQ_PRIO_HIGH], 7);
    HSQ_ASSERT_U64_EQ(s->queued_by_prio[HSQ_PRIO_LOW], 9);
    HSQ_ASSERT_U64_EQ(s->retries_total, 16);
    HSQ_ASSERT_EQ(s->oldest_queued_ms, 17);
    HSQ_ASSERT_U64_EQ(s->uptime_s, 18);
}
static void b_rep_ready(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REPLY, HSQ_OP_READY, 8);
    m->rep.ready = (hsq_rep_ready){30000, 10000};
}
static void v_rep_ready(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->rep.ready.lease_ms, 30000);
    HSQ_ASSERT_EQ(m->rep.ready.heartbeat_ms, 10000);
}
static void b_rep_lease(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REPLY, HSQ_OP_LEASE, 9);
    fill_job(&lease_jobs[0], 7);
    fill_job(&lease_jobs[1], 8);
    lease_jobs[1].inputs[1].frame = 0;
    m->rep.lease = (hsq_rep_lease){2, lease_jobs};
}
static void v_rep_lease(const hsq_wire_msg *m) {
    const hsq_wire_job *j = &m->rep.lease.jobs[0];
    HSQ_ASSERT_EQ(m->rep.lease.n, 2);
    HSQ_ASSERT_U64_EQ(j->token, 0xdeadbeefcafeull);
    HSQ_ASSERT_VIEW_EQ(j->out_prefix, "u/ab12/7/");
    HSQ_ASSERT_VIEW_EQ(j->inputs[0].key, "in/ab/7/0");
    HSQ_ASSERT_EQ(j->inputs[0].frame, HSQ_NO_FRAME);
    HSQ_ASSERT_U64_EQ(j->inputs[0].size, 1000);
    HSQ_ASSERT_EQ(j->inputs[1].key.len, 0);
    HSQ_ASSERT_EQ(j->inputs[1].frame, 1);
    HSQ_ASSERT_EQ(m->rep.lease.jobs[1].inputs[1].frame, 0);
    HSQ_ASSERT_EQ(j->outputs[0].quality, 0);
}
static void b_rep_heartbeat(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REPLY, HSQ_OP_HEARTBEAT, 10);
    m->rep.heartbeat.n_lost = 2;
    m->rep.heartbeat.lost[0] = 5;
    m->rep.heartbeat.lost[1] = UINT64_MAX;
}
static void v_rep_heartbeat(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->rep.heartbeat.n_lost, 2);
    HSQ_ASSERT_U64_EQ(m->rep.heartbeat.lost[1], UINT64_MAX);
}
static void b_rep_progress(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REPLY, HSQ_OP_PROGRESS, 11);
}
static void b_rep_done(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REPLY, HSQ_OP_DONE, 12);
}
static void b_rep_fail(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_REPLY, HSQ_OP_FAIL, 13);
}
static void v_empty(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->kind, HSQ_KIND_REPLY);
}
static void b_err_submit(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_ERROR, HSQ_OP_SUBMIT, 14);
    m->rep.error = (hsq_rep_error){HSQ_EQUEUEFULL, HSQ_STR_LIT("queue is full for alice")};
}
static void v_err_submit(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->kind, HSQ_KIND_ERROR);
    HSQ_ASSERT_EQ(m->rep.error.code, HSQ_EQUEUEFULL);
    HSQ_ASSERT_VIEW_EQ(m->rep.error.message, "queue is full for alice");
}
static void b_err_done(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_ERROR, HSQ_OP_DONE, 15);
    m->rep.error = (hsq_rep_error){HSQ_ESTALE, {NULL, 0}};
}
static void v_err_done(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->rep.error.code, HSQ_ESTALE);
    HSQ_ASSERT_EQ(m->rep.error.message.len, 0);
}
static void b_err_none(hsq_wire_msg *m) {
    *m = new_msg(HSQ_KIND_ERROR, HSQ_OP_NONE, 0);
    m->rep.error = (hsq_rep_error){HSQ_EBADREQ, HSQ_STR_LIT("malformed msgpack")};
}
static void v_err_none(const hsq_wire_msg *m) {
    HSQ_ASSERT_EQ(m->op, HSQ_OP_NONE);
    HSQ_ASSERT_EQ(m->rep.error.code, HSQ_EBADREQ);
}

static const rt_case rt_cases[] = {
    {"submit", 3, b_submit, v_submit},
    {"status", 0, b_status, v_task_req},
    {"result", 0, b_result, v_task_req},
    {"cancel", 0, b_cancel, v_task_req},
    {"requeue", 0, b_requeue, v_requeue},
    {"wait", 0, b_wait, v_wait},
    {"wait terminal", 0, b_wait_terminal, v_wait_terminal},
    {"list", 0, b_list, v_list},
    {"stats", 0, b_stats, v_stats},
    {"ready", 0, b_ready, v_ready},
    {"lease", 0, b_lease, v_lease},
    {"heartbeat", 0, b_heartbeat, v_heartbeat},
    {"progress", 0, b_progress, v_progress},
    {"done", 0, b_done, v_done},
    {"fail", 0, b_fail, v_fail},
    {"abort", 0, b_abort, v_abort},
    {"event", 0, b_event, v_event},
    {"submit reply", 0, b_rep_submit, v_rep_submit},
    {"status reply", 0, b_rep_status, v_rep_status},
    {"result reply", 3, b_rep_result, v_rep_result},
    {"wait reply", 0, b_rep_wait, v_rep_wait},
    {"cancel reply", 0, b_rep_cancel, v_rep_task_any},
    {"requeue reply", 0, b_rep_requeue, v_rep_task_any},
    {"list reply", 0, b_rep_list, v_rep_list},
    {"list reply empty", 0, b_rep_list_empty, v_rep_list_empty},
    {"stats reply", 0, b_rep_stats, v_rep_stats},
    {"ready reply", 0, b_rep_ready, v_rep_ready},
    {"lease reply", 2, b_rep_lease, v_rep_lease},
    {"heartbeat reply", 0, b_rep_heartbeat, v_rep_heartbeat},
    {"progress reply", 0, b_rep_progress, v_empty},
    {"done reply", 0, b_rep_done, v_empty},
    {"fail reply", 0, b_rep_fail, v_empty},
    {"error reply", 0, b_err_submit, v_err_submit},
    {"error reply, empty message", 0, b_err_done, v_err_done},
    {"error reply to unreadable op", 0, b_err_none, v_err_none},
};

static void test_round_trips(void) {
    hsq_wbuf a, b;
    hsq_wbuf_init(&a);
    hsq_wbuf_init(&b);
    for (size_t i = 0; i < sizeof(rt_cases) / sizeof(rt_cases[0]); i++) {
        const rt_case *tc = &rt_cases[i];
        hsq_wire_msg m, d;
        tc->build(&m);
        hsq_wbuf_reset(&a);
        hsq_wbuf_reset(&b);
        int rc = hsq_wire_encode(&m, &a);
        if (rc != 0)
            HSQ_FAIL_("%s: encode: %d", tc->name, rc);
        rc = hsq_wire_decode(a.data, a.len, tc->nframes, &d);
        if (rc != 0)
            HSQ_FAIL_("%s: decode: %d (%s)", tc->name, rc, d.errmsg);
        HSQ_ASSERT_EQ(d.v, HSQ_WIRE_VERSION);
        HSQ_ASSERT_EQ(d.kind, m.kind);
        HSQ_ASSERT_EQ(d.op, m.op);
        HSQ_ASSERT_U64_EQ(d.rid, m.rid);
        HSQ_ASSERT_STR_EQ(d.errmsg, "");
        tc->verify(&d);
        HSQ_OK(hsq_wire_encode(&d, &b));
        if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
            HSQ_FAIL_("%s: re-encoding differs (%zu vs %zu bytes)", tc->name, a.len, b.len);
        hsq_wire_msg_free(&d);
        HSQ_ASSERT(d.priv_ == NULL);
    }
    hsq_wbuf_free(&a);
    hsq_wbuf_free(&b);
}

/* ------------------------------------------------------------ hand-written accepts */

#define IN_P "{kind:'portrait', name:'a.jpg', frame:0}"
#define OUT_J "{width:512, height:512, format:'jpeg'}"
#define SUBMIT_HEAD "v:1, rid:9, op:'submit', user:'alice'"
#define TASK_OK                                                                                    \
    "{id:3, user:'u', state:'queued', prio:'normal', attempts:0, created_ms:1, updated_ms:2,"      \
    " expires_ms:0, progress:0, n_inputs:1}"
#define JOB_HEAD "task:7, token:1, attempt:1, prio:'low', deadline_ms:5, out_prefix:'p/'"

static void test_accepts(void) {
    hsq_wbuf b;
    hsq_wire_msg m;
    hsq_wbuf_init(&b);

    /* Defaults: prio normal, frame = index, quality 0, no key/prompt. */
    mp("{" SUBMIT_HEAD ", inputs:[{kind:'portrait'}, {kind:'clothing', name:''}],"
       " outputs:[" OUT_J "]}",
       &b);
    HSQ_OK(hsq_wire_decode(b.data, b.len, 2, &m));
    HSQ_ASSERT_EQ(m.kind, HSQ_KIND_REQUEST);
    HSQ_ASSERT_EQ(m.op, HSQ_OP_SUBMIT);
    HSQ_ASSERT_U64_EQ(m.rid, 9);
    HSQ_ASSERT_EQ(m.req.submit.prio, HSQ_PRIO_NORMAL);
    HSQ_ASSERT_EQ(m.req.submit.inputs[1].frame, 1);
    HSQ_ASSERT_EQ(m.req.submit.outputs[0].quality, 0);
    HSQ_ASSERT_EQ(m.req.submit.key.len, 0);
    /* Zero-copy: views point into the caller's buffer. */
    HSQ_ASSERT(m.req.submit.user.ptr >= b.data && m.req.submit.user.ptr < b.data + b.len);
    hsq_wire_msg_free(&m);

    /* Key order does not matter; envelope keys may come last. */
    mp("{task:5, v:1, op:'status', rid:2}", &b);
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &m));
    HSQ_ASSERT_U64_EQ(m.req.task.task, 5);
    HSQ_ASSERT_EQ(m.req.task.user.len, 0);
    hsq_wire_msg_free(&m);

    /* list: limit defaults to 20, before to 0. */
    mp("{v:1, rid:1, op:'list', user:'bob'}", &b);
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &m));
    HSQ_ASSERT_EQ(m.req.list.limit, 20);
    HSQ_ASSERT_U64_EQ(m.req.list.before, 0);
    hsq_wire_msg_free(&m);

    /* ready: prefetch absent reads as 0 (one parked lease request), and a
     * zeroed struct encodes without it. */
    mp("{v:1, rid:1, op:'ready', name:'w', backend:'cpu', max_batch:2}", &b);
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &m));
    HSQ_ASSERT_EQ(m.req.ready.prefetch, 0);
    hsq_wire_msg_free(&m);
    {
        hsq_wire_msg r;
        memset(&r, 0, sizeof r);
        r.v = HSQ_WIRE_VERSION;
        r.kind = HSQ_KIND_REQUEST;
        r.op = HSQ_OP_READY;
        r.rid = 1;
        r.req.ready.name = HSQ_STR_LIT("w");
        r.req.ready.backend = HSQ_STR_LIT("cpu");
        r.req.ready.max_batch = 1;
        hsq_wbuf_reset(&b);
        HSQ_OK(hsq_wire_encode(&r, &b));
    }

    /* wait: since absent means "until terminal". */
    mp("{v:1, rid:1, op:'wait', task:4, timeout_ms:60000}", &b);
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &m));
    HSQ_ASSERT_EQ(m.req.wait.since, HSQ_STATE_NONE);
    hsq_wire_msg_free(&m);

    /* fail: retryable defaults to false; an unknown code name from a newer
     * peer decodes as internal, keeping the message. */
    mp("{v:1, rid:1, op:'fail', task:4, token:1, code:'some_new_code', message:'x'}", &b);
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &m));
    HSQ_ASSERT_EQ(m.req.fail.code, HSQ_EINTERNAL);
    HSQ_ASSERT_EQ(m.req.fail.retryable, 0);
    hsq_wire_msg_free(&m);

    /* Error reply shape. */
    mp("{v:1, rid:3, re:'cancel', error:{code:'conflict', message:'already done'}}", &b);
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &m));
    HSQ_ASSERT_EQ(m.kind, HSQ_KIND_ERROR);
    HSQ_ASSERT_EQ(m.op, HSQ_OP_CANCEL);
    HSQ_ASSERT_EQ(m.rep.error.code, HSQ_ECONFLICT);
    hsq_wire_msg_free(&m);

    /* Result reply: outputs ride as frames. */
    mp("{v:1, rid:3, re:'result', task:{id:3, user:'u', state:'succeeded', prio:'high',"
       " attempts:1, created_ms:1, updated_ms:2, expires_ms:9, progress:100, n_inputs:1,"
       " outputs:[{key:'k', size:10, sha256:#32, width:1, height:1, format:'png'}]}}",
       &b);
    HSQ_OK(hsq_wire_decode(b.data, b.len, 1, &m));
    HSQ_ASSERT_EQ(m.rep.task.task.n_outputs, 1);
    HSQ_ASSERT_EQ(m.rep.task.task.outputs[0].sha256[31], 0xab);
    hsq_wire_msg_free(&m);

    /* Lease reply with an empty batch (long-poll expired). */
    mp("{v:1, rid:3, re:'lease', jobs:[]}", &b);
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &m));
    HSQ_ASSERT_EQ(m.rep.lease.n, 0);
    hsq_wire_msg_free(&m);

    /* Limits are inclusive. */
    mp("{v:1, rid:1, op:'submit', user:@128, key:@128, prompt:@4096, inputs:[*8" IN_P "],"
       " outputs:[*16" OUT_J "]}",
       &b);
    /* frame:0 repeated is wrong for i>0: check the message names it. */
    HSQ_ASSERT_EQ(hsq_wire_decode(b.data, b.len, 8, &m), HSQ_EBADREQ);
    HSQ_ASSERT(strstr(m.errmsg, "submit.inputs[1]") != NULL);
    mp("{v:1, rid:1, op:'submit', user:@128, key:@128, prompt:@4096,"
       " inputs:[*8{kind:'portrait'}], outputs:[*16" OUT_J "]}",
       &b);
    HSQ_OK(hsq_wire_decode(b.data, b.len, 8, &m));
    HSQ_ASSERT_EQ(m.req.submit.n_inputs, 8);
    HSQ_ASSERT_EQ(m.req.submit.n_outputs, 16);
    hsq_wire_msg_free(&m);

    hsq_wbuf_free(&b);
}

/* ------------------------------------------------------------ refusals */

typedef struct {
    const char *name;
    const char *text; /* mp() notation */
    size_t nframes;
    int rc;
    const char *errmsg; /* substring of msg.errmsg */
    hsq_op op;          /* what the failed decode still reports */
    uint64_t rid;
} reject_case;

#define SETTINGS_HEAD SUBMIT_HEAD ", outputs:[" OUT_J "]"
#define IN_BG "{kind:'background', frame:1}"

static const reject_case rejects[] = {
    {"not a map (array)", "[1, 2]", 0, HSQ_EBADREQ, "not a msgpack map", HSQ_OP_NONE, 0},
    {"not a map (int)", "5", 0, HSQ_EBADREQ, "not a msgpack map", HSQ_OP_NONE, 0},
    {"missing v", "{rid:5, op:'stats'}", 0, HSQ_EBADREQ, "missing field 'v'", HSQ_OP_STATS, 5},
    {"v not uint", "{v:'1', rid:5, op:'stats'}", 0, HSQ_EBADREQ, "'v'", HSQ_OP_STATS, 5},
    {"bad version", "{v:2, rid:5, op:'status', task:1}", 0, HSQ_EVERSION, "version 2",
     HSQ_OP_STATUS, 5},
    {"bad version beats unknown op", "{v:9, rid:5, op:'teleport'}", 0, HSQ_EVERSION, "version",
     HSQ_OP_NONE, 5},
    {"missing rid", "{v:1, op:'stats'}", 0, HSQ_EBADREQ, "missing field 'rid'", HSQ_OP_STATS, 0},
    {"negative rid", "{v:1, rid:-1, op:'stats'}", 0, HSQ_EBADREQ, "'rid'", HSQ_OP_STATS, 0},
    {"missing op", "{v:1, rid:5}", 0, HSQ_EBADREQ, "missing field 'op'", HSQ_OP_NONE, 5},
    {"op not str", "{v:1, rid:5, op:3}", 0, HSQ_EBADREQ, "'op' must be a string", HSQ_OP_NONE, 5},
    {"unknown op", "{v:1, rid:5, op:'teleport'}", 0, HSQ_EUNKNOWNOP, "unknown op 'teleport'",
     HSQ_OP_NONE, 5},
    {"empty op", "{v:1, rid:5, op:''}", 0, HSQ_EUNKNOWNOP, "unknown op", HSQ_OP_NONE, 5},
    {"unknown re", "{v:1, rid:5, re:'teleport'}", 0, HSQ_EUNKNOWNOP, "unknown op", HSQ_OP_NONE, 5},
    {"op and re", "{v:1, rid:5, op:'stats', re:'stats'}", 0, HSQ_EBADREQ, "not both", HSQ_OP_STATS,
     5},
    {"duplicate envelope key", "{v:1, rid:5, rid:6, op:'stats'}", 0, HSQ_EBADREQ,
     "duplicate field 'rid'", HSQ_OP_STATS, 5},
    {"duplicate body key", "{v:1, rid:5, op:'status', task:1, task:2}", 0, HSQ_EBADREQ,
     "duplicate field 'task' in status", HSQ_OP_STATUS, 5},
    {"non-string key", "{v:1, rid:5, op:'status', task:1, 7:1}", 0, HSQ_EBADREQ, "strings",
     HSQ_OP_STATUS, 5},
    {"unknown field", "{v:1, rid:5, op:'submit', user:'a', x:1}", 0, HSQ_EBADREQ,
     "unknown field 'x' in submit", HSQ_OP_SUBMIT, 5},
    {"unknown nested field",
     "{" SUBMIT_HEAD ", inputs:[{kind:'portrait', colour:1}], outputs:[" OUT_J "]}", 1, HSQ_EBADREQ,
     "unknown field 'colour' in submit.inputs[0]", HSQ_OP_SUBMIT, 9},
    {"error field in request", "{v:1, rid:5, op:'stats', error:{}}", 0, HSQ_EBADREQ,
     "unknown field 'error' in stats", HSQ_OP_STATS, 5},
    {"reply to abort", "{v:1, rid:5, re:'abort'}", 0, HSQ_EBADREQ, "no reply", HSQ_OP_ABORT, 5},
    {"error reply without code", "{v:1, rid:5, re:'stats', error:{message:'x'}}", 0, HSQ_EBADREQ,
     "missing field 'code' in error reply.error", HSQ_OP_STATS, 5},
    {"error not a map", "{v:1, rid:5, re:'stats', error:'boom'}", 0, HSQ_EBADREQ, "must be a map",
     HSQ_OP_STATS, 5},
    {"empty re without error", "{v:1, rid:5, re:''}", 0, HSQ_EUNKNOWNOP, "unknown op", HSQ_OP_NONE,
     5},
    /* wrong types */
    {"user not str", "{v:1, rid:5, op:'list', user:5}", 0, HSQ_EBADREQ,
     "field 'user' in list must be a string", HSQ_OP_LIST, 5},
    {"task as str", "{v:1, rid:5, op:'status', task:'5'}", 0, HSQ_EBADREQ,
     "field 'task' in status must be an unsigned integer", HSQ_OP_STATUS, 5},
    {"task as float", "{v:1, rid:5, op:'status', task:~5.0}", 0, HSQ_EBADREQ, "'task'",
     HSQ_OP_STATUS, 5},
    {"prio as int", "{" SUBMIT_HEAD ", prio:1, inputs:[" IN_P "], outputs:[" OUT_J "]}", 1,
     HSQ_EBADREQ, "field 'prio' in submit must be a string", HSQ_OP_SUBMIT, 9},
    {"unknown prio", "{" SUBMIT_HEAD ", prio:'urgent', inputs:[" IN_P "], outputs:[" OUT_J "]}", 1,
     HSQ_EBADREQ, "'prio'", HSQ_OP_SUBMIT, 9},
    {"inputs not array", "{" SUBMIT_HEAD ", inputs:" IN_P ", outputs:[" OUT_J "]}", 1, HSQ_EBADREQ,
     "must be an array", HSQ_OP_SUBMIT, 9},
    {"unknown format",
     "{" SUBMIT_HEAD ", inputs:[" IN_P "], outputs:[{width:1, height:1, format:'gif'}]}", 1,
     HSQ_EBADREQ, "'format'", HSQ_OP_SUBMIT, 9},
    {"bool as int", "{v:1, rid:5, re:'submit', task:1, state:'queued', created:1}", 0, HSQ_EBADREQ,
     "must be a boolean", HSQ_OP_SUBMIT, 5},
    {"sha256 too short",
     "{v:1, rid:5, op:'done', task:1, token:1, outputs:[{key:'k', size:1, sha256:#31,"
     " width:1, height:1, format:'png'}]}",
     0, HSQ_EBADREQ, "32-byte bin", HSQ_OP_DONE, 5},
    {"sha256 as str",
     "{v:1, rid:5, op:'done', task:1, token:1, outputs:[{key:'k', size:1, sha256:@32,"
     " width:1, height:1, format:'png'}]}",
     0, HSQ_EBADREQ, "32-byte bin", HSQ_OP_DONE, 5},
    {"time as str",
     "{v:1, rid:5, op:'event', task:1, user:'u', state:'queued', progress:0, at_ms:'now'}", 0,
     HSQ_EBADREQ, "'at_ms' in event must be an integer", HSQ_OP_EVENT, 5},
    {"lost not uints", "{v:1, rid:5, re:'heartbeat', lost:['a']}", 0, HSQ_EBADREQ, "'lost'",
     HSQ_OP_HEARTBEAT, 5},
    {"nil value", "{v:1, rid:5, op:'status', task:nil}", 0, HSQ_EBADREQ, "'task'", HSQ_OP_STATUS,
     5},
    /* missing required */
    {"submit without user", "{v:1, rid:5, op:'submit', inputs:[" IN_P "], outputs:[" OUT_J "]}", 1,
     HSQ_EBADREQ, "missing field 'user' in submit", HSQ_OP_SUBMIT, 5},
    {"submit without outputs", "{" SUBMIT_HEAD ", inputs:[" IN_P "]}", 1, HSQ_EBADREQ,
     "missing field 'outputs'", HSQ_OP_SUBMIT, 9},
    {"status without task", "{v:1, rid:5, op:'status'}", 0, HSQ_EBADREQ, "missing field 'task'",
     HSQ_OP_STATUS, 5},
    {"lease job without token", "{v:1, rid:5, re:'lease', jobs:[{task:1}]}", 0, HSQ_EBADREQ,
     "missing field 'token' in lease reply.jobs[0]", HSQ_OP_LEASE, 5},
    /* limits */
    {"user too long", "{v:1, rid:5, op:'list', user:@129}", 0, HSQ_ETOOLARGE,
     "field 'user' in list is too long (129 > 128 bytes)", HSQ_OP_LIST, 5},
    {"user empty", "{v:1, rid:5, op:'list', user:''}", 0, HSQ_EBADREQ, "must not be empty",
     HSQ_OP_LIST, 5},
    {"prompt too long", "{" SUBMIT_HEAD ", prompt:@4097, inputs:[" IN_P "], outputs:[" OUT_J "]}",
     1, HSQ_ETOOLARGE, "'prompt'", HSQ_OP_SUBMIT, 9},
    {"too many inputs", "{" SUBMIT_HEAD ", inputs:[*9{kind:'portrait'}], outputs:[" OUT_J "]}", 9,
     HSQ_ETOOLARGE, "'inputs' in submit has too many elements (9 > 8)", HSQ_OP_SUBMIT, 9},
    {"too many outputs", "{" SUBMIT_HEAD ", inputs:[" IN_P "], outputs:[*17" OUT_J "]}", 1,
     HSQ_ETOOLARGE, "'outputs'", HSQ_OP_SUBMIT, 9},
    {"no inputs", "{" SUBMIT_HEAD ", inputs:[], outputs:[" OUT_J "]}", 0, HSQ_EBADREQ, "at least 1",
     HSQ_OP_SUBMIT, 9},
    {"too many leases", "{v:1, rid:5, op:'heartbeat', leases:[*65{task:1, token:1}]}", 0,
     HSQ_ETOOLARGE, "'leases'", HSQ_OP_HEARTBEAT, 5},
    {"list limit 0", "{v:1, rid:5, op:'list', user:'a', limit:0}", 0, HSQ_EBADREQ,
     "'limit' in list is out of range (1..100)", HSQ_OP_LIST, 5},
    {"list limit 101", "{v:1, rid:5, op:'list', user:'a', limit:101}", 0, HSQ_EBADREQ,
     "out of range", HSQ_OP_LIST, 5},
    {"wait too long", "{v:1, rid:5, op:'wait', task:1, timeout_ms:60001}", 0, HSQ_EBADREQ,
     "'timeout_ms'", HSQ_OP_WAIT, 5},
    {"u32 overflow", "{v:1, rid:5, op:'wait', task:1, timeout_ms:4294967296}", 0, HSQ_EBADREQ,
     "out of range", HSQ_OP_WAIT, 5},
    {"negative task", "{v:1, rid:5, op:'status', task:-3}", 0, HSQ_EBADREQ, "out of range",
     HSQ_OP_STATUS, 5},
    {"task id 0", "{v:1, rid:5, op:'status', task:0}", 0, HSQ_EBADREQ, "out of range",
     HSQ_OP_STATUS, 5},
    {"pct 101", "{v:1, rid:5, op:'progress', task:1, token:1, pct:101}", 0, HSQ_EBADREQ, "'pct'",
     HSQ_OP_PROGRESS, 5},
    {"width 0",
     "{" SUBMIT_HEAD ", inputs:[" IN_P "], outputs:[{width:0, height:1,"
     " format:'png'}]}",
     1, HSQ_EBADREQ, "'width' in submit.outputs[0]", HSQ_OP_SUBMIT, 9},
    {"height too big",
     "{" SUBMIT_HEAD ", inputs:[" IN_P "], outputs:[{width:1, height:8193,"
     " format:'png'}]}",
     1, HSQ_EBADREQ, "'height'", HSQ_OP_SUBMIT, 9},
    {"quality 101",
     "{" SUBMIT_HEAD ", inputs:[" IN_P "], outputs:[{width:1, height:1,"
     " format:'jpeg', quality:101}]}",
     1, HSQ_EBADREQ, "'quality'", HSQ_OP_SUBMIT, 9},
    {"max_batch 65", "{v:1, rid:5, op:'ready', name:'w', backend:'cpu', max_batch:65}", 0,
     HSQ_EBADREQ, "'max_batch'", HSQ_OP_READY, 5},
    {"prefetch 5", "{v:1, rid:5, op:'ready', name:'w', backend:'cpu', max_batch:1, prefetch:5}", 0,
     HSQ_EBADREQ, "'prefetch'", HSQ_OP_READY, 5},
    {"unknown backend", "{v:1, rid:5, op:'ready', name:'w', backend:'tpu', max_batch:1}", 0,
     HSQ_EBADREQ, "'backend' in ready has an unknown value", HSQ_OP_READY, 5},
    {"invalid utf-8", "{v:1, rid:5, op:'list', user:'a\\xff'}", 0, HSQ_EBADREQ, "UTF-8",
     HSQ_OP_LIST, 5},
    {"utf-8 surrogate", "{v:1, rid:5, op:'list', user:'\\xed\\xa0\\x80'}", 0, HSQ_EBADREQ, "UTF-8",
     HSQ_OP_LIST, 5},
    {"overlong utf-8", "{v:1, rid:5, op:'list', user:'\\xc0\\xaf'}", 0, HSQ_EBADREQ, "UTF-8",
     HSQ_OP_LIST, 5},
    {"unknown state name", "{v:1, rid:5, op:'wait', task:1, since:'done'}", 0, HSQ_EBADREQ,
     "'since'", HSQ_OP_WAIT, 5},
    /* submit semantics and frames */
    {"unknown kind", "{" SUBMIT_HEAD ", inputs:[{kind:'selfie'}], outputs:[" OUT_J "]}", 1,
     HSQ_EBADREQ, "'kind' in submit.inputs[0] has an unknown value", HSQ_OP_SUBMIT, 9},
    {"no portrait", "{" SUBMIT_HEAD ", inputs:[{kind:'clothing'}], outputs:[" OUT_J "]}", 1,
     HSQ_EBADREQ, "portrait", HSQ_OP_SUBMIT, 9},
    {"frame count mismatch (fewer)", "{" SUBMIT_HEAD ", inputs:[" IN_P "], outputs:[" OUT_J "]}", 0,
     HSQ_EBADREQ, "1 input(s) but 0 binary frame(s)", HSQ_OP_SUBMIT, 9},
    {"frame count mismatch (more)", "{" SUBMIT_HEAD ", inputs:[" IN_P "], outputs:[" OUT_J "]}", 2,
     HSQ_EBADREQ, "1 input(s) but 2 binary frame(s)", HSQ_OP_SUBMIT, 9},
    {"frame out of order",
     "{" SUBMIT_HEAD ", inputs:[{kind:'portrait', frame:1}, {kind:'portrait', frame:0}],"
     " outputs:[" OUT_J "]}",
     2, HSQ_EBADREQ, "'frame' in submit.inputs[0] must be 0", HSQ_OP_SUBMIT, 9},
    {"key in submit input",
     "{" SUBMIT_HEAD ", inputs:[{kind:'portrait', key:'x'}], outputs:[" OUT_J "]}", 1, HSQ_EBADREQ,
     "unknown field 'key' in submit.inputs[0]", HSQ_OP_SUBMIT, 9},
    {"frames on status", "{v:1, rid:5, op:'status', task:1}", 1, HSQ_EBADREQ,
     "takes no binary frames", HSQ_OP_STATUS, 5},
    {"result frame mismatch", "{v:1, rid:3, re:'result', task:" TASK_OK "}", 1, HSQ_EBADREQ,
     "0 output(s) but 1 binary frame(s)", HSQ_OP_RESULT, 3},
    {"lease input frame out of range",
     "{v:1, rid:3, re:'lease', jobs:[{" JOB_HEAD ", inputs:[{kind:'portrait', frame:1,"
     " size:5}], outputs:[" OUT_J "]}]}",
     1, HSQ_EBADREQ, "'frame' in lease reply.jobs[0].inputs[0] is 1 but only 1", HSQ_OP_LEASE, 3},
    {"lease input key and frame",
     "{v:1, rid:3, re:'lease', jobs:[{" JOB_HEAD ", inputs:[{kind:'portrait', frame:0, key:'k',"
     " size:5}], outputs:[" OUT_J "]}]}",
     1, HSQ_EBADREQ, "exactly one of 'key' and 'frame'", HSQ_OP_LEASE, 3},
    {"lease input neither",
     "{v:1, rid:3, re:'lease', jobs:[{" JOB_HEAD ", inputs:[{kind:'portrait', size:5}],"
     " outputs:[" OUT_J "]}]}",
     0, HSQ_EBADREQ, "exactly one of", HSQ_OP_LEASE, 3},
    {"too many tasks in list", "{v:1, rid:3, re:'list', tasks:[*101" TASK_OK "], next:0}", 0,
     HSQ_ETOOLARGE, "'tasks'", HSQ_OP_LIST, 3},
    /* settings (nested map kept raw, validated strictly) */
    {"settings not a map", "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:[1]}", 1, HSQ_EBADREQ,
     "'settings' in submit must be a map", HSQ_OP_SUBMIT, 9},
    {"settings unknown field", "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:{dpj:300}}", 1,
     HSQ_EBADREQ, "unknown field 'dpj' in submit.settings", HSQ_OP_SUBMIT, 9},
    {"settings dpi too low", "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:{dpi:71}}", 1,
     HSQ_EBADREQ, "'dpi' in submit.settings must be 0 or 72..1200", HSQ_OP_SUBMIT, 9},
    {"settings dpi too high", "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:{dpi:1201}}", 1,
     HSQ_EBADREQ, "'dpi' in submit.settings is out of range", HSQ_OP_SUBMIT, 9},
    {"background kind unknown",
     "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:{backgrounds:[{kind:'plaid'}]}}", 1,
     HSQ_EBADREQ, "'kind' in submit.settings.backgrounds[0] has an unknown value", HSQ_OP_SUBMIT,
     9},
    {"background kind missing",
     "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:{backgrounds:[{color:[1,2,3]}]}}", 1,
     HSQ_EBADREQ, "missing field 'kind' in submit.settings.backgrounds[0]", HSQ_OP_SUBMIT, 9},
    {"colour component > 255",
     "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:{backgrounds:[{kind:'solid',"
     " color:[1,256,3]}]}}",
     1, HSQ_EBADREQ, "'color' in submit.settings.backgrounds[0] needs components 0..255",
     HSQ_OP_SUBMIT, 9},
    {"colour as a string",
     "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:{backgrounds:[{kind:'solid',"
     " color:'#ffffff'}]}}",
     1, HSQ_EBADREQ, "must be an array of 3 integers", HSQ_OP_SUBMIT, 9},
    {"colour of 4",
     "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:{backgrounds:[{kind:'solid',"
     " color:[1,2,3,4]}]}}",
     1, HSQ_EBADREQ, "must be an array of 3", HSQ_OP_SUBMIT, 9},
    {"blur on solid",
     "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:{backgrounds:[{kind:'solid', blur_px:4}]}}",
     1, HSQ_EBADREQ, "'blur_px' in submit.settings.backgrounds[0] applies to 'reference' only",
     HSQ_OP_SUBMIT, 9},
    {"blur too large",
     "{" SETTINGS_HEAD ", inputs:[" IN_P ", " IN_BG "], settings:{backgrounds:[{kind:'reference',"
     " blur_px:65}]}}",
     2, HSQ_EBADREQ, "'blur_px' in submit.settings.backgrounds[0] is out of range", HSQ_OP_SUBMIT,
     9},
    {"color2 on vignette",
     "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:{backgrounds:[{kind:'vignette',"
     " color2:[1,1,1]}]}}",
     1, HSQ_EBADREQ, "'color2' in submit.settings.backgrounds[0] applies to 'gradient' only",
     HSQ_OP_SUBMIT, 9},
    {"five backgrounds",
     "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:{backgrounds:[*5 {kind:'solid'}]}}", 1,
     HSQ_ETOOLARGE, "'backgrounds' in submit.settings has too many elements", HSQ_OP_SUBMIT, 9},
    {"five styles", "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:{styles:[*5 {}]}}", 1,
     HSQ_ETOOLARGE, "'styles' in submit.settings has too many elements", HSQ_OP_SUBMIT, 9},
    {"style strength 101",
     "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:{styles:[{name:'x', retouch:101}]}}", 1,
     HSQ_EBADREQ, "'retouch' in submit.settings.styles[0] is out of range", HSQ_OP_SUBMIT, 9},
    {"style name 33 bytes",
     "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:{styles:[{name:@33}]}}", 1, HSQ_ETOOLARGE,
     "'name' in submit.settings.styles[0] is too long", HSQ_OP_SUBMIT, 9},
    {"reference without a background input",
     "{" SETTINGS_HEAD ", inputs:[" IN_P "], settings:{backgrounds:[{kind:'solid'},"
     " {kind:'reference'}]}}",
     1, HSQ_EBADREQ, "backgrounds[1] is 'reference' but the submit has no input of kind",
     HSQ_OP_SUBMIT, 9},
    {"two background inputs",
     "{" SETTINGS_HEAD ", inputs:[" IN_P ", " IN_BG ", {kind:'background', frame:2}]}", 3,
     HSQ_EBADREQ, "at most one input of kind 'background'", HSQ_OP_SUBMIT, 9},
    {"combinations over the cap",
     "{" SUBMIT_HEAD ", inputs:[" IN_P "], outputs:[*3 " OUT_J "],"
     " settings:{backgrounds:[*3 {kind:'solid'}], styles:[*2 {}]}}",
     1, HSQ_ETOOLARGE,
     "asks for 18 outputs (3 background(s) x 2 style(s) x 3 size(s)); the cap is 16", HSQ_OP_SUBMIT,
     9},
    {"combinations over the cap, default background",
     "{" SUBMIT_HEAD ", inputs:[" IN_P "], outputs:[*9 " OUT_J "], settings:{styles:[*2 {}]}}", 1,
     HSQ_ETOOLARGE, "the cap is 16", HSQ_OP_SUBMIT, 9},
    {"settings in a job",
     "{v:1, rid:3, re:'lease', jobs:[{" JOB_HEAD ", inputs:[{kind:'portrait', key:'k', size:5}],"
     " outputs:[" OUT_J "], settings:{dpi:7}}]}",
     0, HSQ_EBADREQ, "'dpi' in lease reply.jobs[0].settings must be 0 or 72", HSQ_OP_LEASE, 3},
    /* info */
    {"info stage without a name",
     "{v:1, rid:2, op:'done', task:1, token:1, outputs:[{key:'k', size:1, sha256:#32, width:1,"
     " height:1, format:'png'}], info:{stages:[{ms:3}]}}",
     0, HSQ_EBADREQ, "missing field 'name' in done.info.stages[0]", HSQ_OP_DONE, 2},
    {"info too many stages",
     "{v:1, rid:2, op:'done', task:1, token:1, outputs:[{key:'k', size:1, sha256:#32, width:1,"
     " height:1, format:'png'}], info:{stages:[*17 {name:'a', ms:1}]}}",
     0, HSQ_ETOOLARGE, "'stages' in done.info has too many elements", HSQ_OP_DONE, 2},
    {"info score over 1000",
     "{v:1, rid:2, op:'done', task:1, token:1, outputs:[{key:'k', size:1, sha256:#32, width:1,"
     " height:1, format:'png'}], info:{face_score:1001}}",
     0, HSQ_EBADREQ, "'face_score' in done.info is out of range", HSQ_OP_DONE, 2},
    {"output spec index 16",
     "{v:1, rid:2, op:'done', task:1, token:1, outputs:[{key:'k', size:1, sha256:#32, width:1,"
     " height:1, format:'png', spec:16}]}",
     0, HSQ_EBADREQ, "'spec' in done.outputs[0] is out of range", HSQ_OP_DONE, 2},
    {"task info not a map",
     "{v:1, rid:3, re:'status', task:{id:3, user:'u', state:'queued',"
     " prio:'normal', attempts:0, created_ms:1, updated_ms:2, expires_ms:0, progress:0,"
     " n_inputs:1, info:'x'}}",
     0, HSQ_EBADREQ, "'info' in status reply.task must be a map", HSQ_OP_STATUS, 3},
};

static void test_rejects(void) {
    hsq_wbuf b;
    hsq_wbuf_init(&b);
    for (size_t i = 0; i < sizeof(rejects) / sizeof(rejects[0]); i++) {
        const reject_case *tc = &rejects[i];
        hsq_wire_msg m;
        mp(tc->text, &b);
        int rc = hsq_wire_decode(b.data, b.len, tc->nframes, &m);
        if (rc != tc->rc)
            HSQ_FAIL_("%s: rc %d (%s), want %d", tc->name, rc, m.errmsg, tc->rc);
        if (!strstr(m.errmsg, tc->errmsg))
            HSQ_FAIL_("%s: errmsg \"%s\" lacks \"%s\"", tc->name, m.errmsg, tc->errmsg);
        if (m.op != tc->op || m.rid != tc->rid)
            HSQ_FAIL_("%s: op %d rid %llu, want %d %llu", tc->name, (int)m.op,
                      (unsigned long long)m.rid, (int)tc->op, (unsigned long long)tc->rid);
        HSQ_ASSERT(m.priv_ == NULL);
        hsq_wire_msg_free(&m); /* harmless after a failure */
    }
    hsq_wbuf_free(&b);
}

/* Refusals that the notation cannot express: raw bytes. */
static void test_rejects_raw(void) {
    hsq_wire_msg m;
    hsq_wbuf b;
    hsq_wbuf_init(&b);

    HSQ_ASSERT_EQ(hsq_wire_decode("", 0, 0, &m), HSQ_EBADREQ);
    HSQ_ASSERT(strstr(m.errmsg, "empty") != NULL);
    HSQ_ASSERT_EQ(hsq_wire_decode(NULL, 0, 0, &m), HSQ_EBADREQ);

    /* Malformed: 0xc1 is never used; truncated map; truncated string. */
    static const char never[] = "\xc1";
    HSQ_ASSERT_EQ(hsq_wire_decode(never, 1, 0, &m), HSQ_EBADREQ);
    HSQ_ASSERT(strstr(m.errmsg, "malformed") != NULL);
    mp("{v:1, rid:5, op:'status', task:1}", &b);
    for (size_t cut = 1; cut < b.len; cut++)
        HSQ_ASSERT_EQ(hsq_wire_decode(b.data, cut, 0, &m), HSQ_EBADREQ);

    /* Declared counts far beyond the input are refused before any allocation
     * (array32 of 2^32-1, map32 of 2^32-1, str32 of 4 GB). */
    static const char huge_arr[] = "\xdd\xff\xff\xff\xff\x00";
    static const char huge_map[] = "\xdf\xff\xff\xff\xff\x00\x00";
    static const char huge_str[] = "\xdb\xff\xff\xff\xff"
                                   "abc";
    HSQ_ASSERT_EQ(hsq_wire_decode(huge_arr, sizeof(huge_arr) - 1, 0, &m), HSQ_EBADREQ);
    HSQ_ASSERT_EQ(hsq_wire_decode(huge_map, sizeof(huge_map) - 1, 0, &m), HSQ_EBADREQ);
    HSQ_ASSERT_EQ(hsq_wire_decode(huge_str, sizeof(huge_str) - 1, 0, &m), HSQ_EBADREQ);

    /* Nesting deeper than msgpack-c's stack (32) is refused, not overflowed. */
    char deep[200];
    memset(deep, 0x91, sizeof(deep)); /* [[[[...]]]] */
    deep[sizeof(deep) - 1] = 0x01;
    HSQ_ASSERT_EQ(hsq_wire_decode(deep, sizeof(deep), 0, &m), HSQ_EBADREQ);

    /* Trailing bytes after a valid map: refused, but op/rid are echoed. */
    mp("{v:1, rid:77, op:'status', task:1}", &b);
    hsq_wbuf_append(&b, "\x00", 1);
    HSQ_ASSERT_EQ(hsq_wire_decode(b.data, b.len, 0, &m), HSQ_EBADREQ);
    HSQ_ASSERT(strstr(m.errmsg, "trailing") != NULL);
    HSQ_ASSERT_EQ(m.op, HSQ_OP_STATUS);
    HSQ_ASSERT_U64_EQ(m.rid, 77);
    mp("{v:1, rid:77, op:'status', task:1}", &b);
    hsq_wbuf_append(&b, b.data, b.len); /* two messages back to back */
    HSQ_ASSERT_EQ(hsq_wire_decode(b.data, b.len, 0, &m), HSQ_EBADREQ);

    /* Oversize meta: refused on length alone. */
    size_t big = HSQ_MAX_META_BYTES + 1;
    char *buf = calloc(1, big);
    HSQ_ASSERT(buf != NULL);
    HSQ_ASSERT_EQ(hsq_wire_decode(buf, big, 0, &m), HSQ_ETOOLARGE);
    HSQ_ASSERT(strstr(m.errmsg, "limit") != NULL);
    /* ...while a well-formed message that stays within the limit decodes. */
    mp("{v:1, rid:1, re:'heartbeat', lost:[*64 18446744073709551615]}", &b);
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &m));
    hsq_wire_msg_free(&m);
    free(buf);

    hsq_wbuf_free(&b);
}

/* A meta of exactly HSQ_MAX_META_BYTES is accepted by both sides: a list reply
 * padded with err_msg/stage text until the encoding hits the limit. */
static void test_meta_at_limit(void) {
    static hsq_wire_task tasks[HSQ_MAX_LIST];
    static char text[HSQ_MAX_ERRMSG_LEN];
    memset(text, 'e', sizeof(text));
    hsq_wire_msg m = new_msg(HSQ_KIND_REPLY, HSQ_OP_LIST, 1), d;
    hsq_wbuf b;
    hsq_wbuf_init(&b);
    uint32_t n = 0;
    for (; n < HSQ_MAX_LIST; n++) {
        fill_task(&tasks[n], 1000 - n, HSQ_STATE_QUEUED, 0);
        tasks[n].err_msg = (hsq_str){text, sizeof(text)};
        m.rep.list = (hsq_rep_list){n + 1, tasks, 0};
        hsq_wbuf_reset(&b);
        if (hsq_wire_encode(&m, &b) == HSQ_ETOOLARGE)
            break;
    }
    HSQ_ASSERT(n < HSQ_MAX_LIST);
    /* Grow the last task's err_msg a byte at a time until the encoding is
     * exactly at the limit; a string-header step (31->32, 255->256 bytes) can
     * skip the exact size, so retry with a different stage length. */
    bool hit = false;
    for (size_t st = 0; st < 4 && !hit; st++) {
        tasks[n].stage = (hsq_str){text, st};
        for (size_t len = 0; len <= HSQ_MAX_ERRMSG_LEN; len++) {
            tasks[n].err_msg = (hsq_str){text, len};
            hsq_wbuf_reset(&b);
            if (hsq_wire_encode(&m, &b) != 0)
                break;
            if ((hit = b.len == HSQ_MAX_META_BYTES))
                break;
        }
    }
    HSQ_ASSERT(hit);
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &d));
    HSQ_ASSERT_EQ(d.rep.list.n, n + 1);
    hsq_wire_msg_free(&d);
    hsq_wbuf_append(&b, "", 1);
    HSQ_ASSERT_EQ(hsq_wire_decode(b.data, b.len, 0, &d), HSQ_ETOOLARGE);
    hsq_wbuf_free(&b);
}

/* ------------------------------------------------------------ encoder */

static void expect_encode(const hsq_wire_msg *m, int want, const char *what) {
    hsq_wbuf b;
    hsq_wbuf_init(&b);
    hsq_wbuf_append(&b, "xy", 2);
    int rc = hsq_wire_encode(m, &b);
    if (rc != want)
        HSQ_FAIL_("encode %s: rc %d, want %d", what, rc, want);
    if (rc != 0)
        HSQ_ASSERT_EQ(b.len, 2); /* nothing appended on failure */
    hsq_wbuf_free(&b);
}

static void test_encoder_refuses(void) {
    hsq_wire_msg m;

    b_submit(&m);
    m.req.submit.user = hsq_str_c("");
    expect_encode(&m, HSQ_EINVAL, "empty user");
    b_submit(&m);
    char long_user[HSQ_MAX_USER_LEN + 2];
    memset(long_user, 'u', sizeof(long_user) - 1);
    long_user[sizeof(long_user) - 1] = '\0';
    m.req.submit.user = hsq_str_c(long_user);
    expect_encode(&m, HSQ_EINVAL, "long user");
    b_submit(&m);
    m.req.submit.inputs[1].frame = 5;
    expect_encode(&m, HSQ_EINVAL, "submit frame != index");
    b_submit(&m);
    m.req.submit.inputs[0].key = HSQ_STR_LIT("k");
    expect_encode(&m, HSQ_EINVAL, "submit input with key");
    b_submit(&m);
    m.req.submit.n_inputs = HSQ_MAX_INPUTS + 1;
    expect_encode(&m, HSQ_EINVAL, "too many inputs");
    b_submit(&m);
    m.req.submit.prio = 3;
    expect_encode(&m, HSQ_EINVAL, "prio 3");
    b_submit(&m);
    m.req.submit.outputs[0].format = 0;
    expect_encode(&m, HSQ_EINVAL, "format 0");
    b_submit(&m);
    m.req.submit.inputs[0].kind = HSQ_STR_LIT("clothing");
    expect_encode(&m, HSQ_EINVAL, "no portrait");
    b_submit(&m);
    m.req.submit.prompt = (hsq_str){"bad\xff", 4};
    expect_encode(&m, HSQ_EINVAL, "invalid UTF-8");
    b_submit(&m);
    m.req.submit.prompt = (hsq_str){NULL, 3};
    expect_encode(&m, HSQ_EINVAL, "NULL view");

    b_list(&m);
    m.req.list.limit = 0;
    expect_encode(&m, HSQ_EINVAL, "list limit 0");
    b_rep_submit(&m);
    m.rep.submit.created = 2;
    expect_encode(&m, HSQ_EINVAL, "bool 2");
    b_rep_status(&m);
    m.rep.task.task.state = HSQ_STATE_NONE;
    expect_encode(&m, HSQ_EINVAL, "task state none");
    b_fail(&m);
    m.req.fail.code = 0;
    expect_encode(&m, HSQ_EINVAL, "fail without code");
    b_rep_list(&m);
    m.rep.list.tasks = NULL;
    expect_encode(&m, HSQ_EINVAL, "list with NULL tasks");
    b_rep_lease(&m);
    lease_jobs[0].inputs[0].frame = 0; /* key and frame */
    expect_encode(&m, HSQ_EINVAL, "lease input with key and frame");

    /* kind/op combinations that do not exist */
    b_abort(&m);
    m.kind = HSQ_KIND_REPLY;
    expect_encode(&m, HSQ_EINVAL, "abort reply");
    m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_NONE, 1);
    expect_encode(&m, HSQ_EINVAL, "request op none");
    m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_COUNT_, 1);
    expect_encode(&m, HSQ_EINVAL, "op out of range");
    m = new_msg((hsq_msg_kind)0, HSQ_OP_STATS, 1);
    expect_encode(&m, HSQ_EINVAL, "kind 0");
    m = new_msg(HSQ_KIND_REPLY, HSQ_OP_NONE, 1);
    expect_encode(&m, HSQ_EINVAL, "reply op none");

    /* An encoding over HSQ_MAX_META_BYTES is refused as too large, so the
     * caller can send less: 64 jobs with 4 KB prompts is ~270 KB. */
    static hsq_wire_job jobs[HSQ_MAX_BATCH];
    static char prompt[HSQ_MAX_PROMPT_LEN];
    memset(prompt, 'p', sizeof(prompt));
    for (int i = 0; i < HSQ_MAX_BATCH; i++) {
        fill_job(&jobs[i], (uint64_t)i + 1);
        jobs[i].inputs[1].frame = HSQ_NO_FRAME;
        jobs[i].inputs[1].key = HSQ_STR_LIT("k");
        jobs[i].prompt = (hsq_str){prompt, sizeof(prompt)};
    }
    m = new_msg(HSQ_KIND_REPLY, HSQ_OP_LEASE, 1);
    m.rep.lease = (hsq_rep_lease){HSQ_MAX_BATCH, jobs};
    expect_encode(&m, HSQ_ETOOLARGE, "oversize lease reply");
    m.rep.lease.n = 8; /* ~34 KB: fits */
    expect_encode(&m, 0, "lease reply of 8");
}

/* ------------------------------------------------------------ helpers */

static void test_encode_error(void) {
    hsq_wbuf b;
    hsq_wire_msg m;
    hsq_wbuf_init(&b);

    HSQ_OK(hsq_wire_encode_error(HSQ_OP_SUBMIT, 12, HSQ_EQUEUEFULL, "full", &b));
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &m));
    HSQ_ASSERT_EQ(m.kind, HSQ_KIND_ERROR);
    HSQ_ASSERT_EQ(m.op, HSQ_OP_SUBMIT);
    HSQ_ASSERT_U64_EQ(m.rid, 12);
    HSQ_ASSERT_EQ(m.rep.error.code, HSQ_EQUEUEFULL);
    HSQ_ASSERT_VIEW_EQ(m.rep.error.message, "full");
    hsq_wire_msg_free(&m);

    /* Unreadable op: "re" is "", decoded as HSQ_OP_NONE. */
    hsq_wbuf_reset(&b);
    HSQ_OK(hsq_wire_encode_error(HSQ_OP_NONE, 0, HSQ_EBADREQ, NULL, &b));
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &m));
    HSQ_ASSERT_EQ(m.op, HSQ_OP_NONE);
    HSQ_ASSERT_VIEW_EQ(m.rep.error.message, hsq_strerror(HSQ_EBADREQ));
    hsq_wire_msg_free(&m);

    /* System codes travel by wire name. */
    hsq_wbuf_reset(&b);
    HSQ_OK(hsq_wire_encode_error(HSQ_OP_DONE, 3, -28 /* ENOSPC */, "disk", &b));
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &m));
    HSQ_ASSERT_EQ(m.rep.error.code, HSQ_EDISKFULL);
    hsq_wire_msg_free(&m);

    /* Over-long messages are cut on a UTF-8 boundary; invalid ones replaced. */
    char longmsg[HSQ_MAX_ERRMSG_LEN + 10];
    memset(longmsg, 'e', sizeof(longmsg));
    longmsg[HSQ_MAX_ERRMSG_LEN - 1] = '\xc3'; /* 2-byte char straddling the limit */
    longmsg[HSQ_MAX_ERRMSG_LEN] = '\xa9';
    longmsg[sizeof(longmsg) - 1] = '\0';
    hsq_wbuf_reset(&b);
    HSQ_OK(hsq_wire_encode_error(HSQ_OP_STATUS, 1, HSQ_EINTERNAL, longmsg, &b));
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &m));
    HSQ_ASSERT_EQ(m.rep.error.message.len, HSQ_MAX_ERRMSG_LEN - 1);
    hsq_wire_msg_free(&m);
    hsq_wbuf_reset(&b);
    HSQ_OK(hsq_wire_encode_error(HSQ_OP_STATUS, 1, HSQ_EINTERNAL, "bad \xff", &b));
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &m));
    HSQ_ASSERT_VIEW_EQ(m.rep.error.message, hsq_strerror(HSQ_EINTERNAL));
    hsq_wire_msg_free(&m);

    /* Any op may be refused, even one that has no success reply (a client
     * sending the worker command "abort" to hsqd). */
    hsq_wbuf_reset(&b);
    HSQ_OK(hsq_wire_encode_error(HSQ_OP_ABORT, 1, HSQ_EFORBIDDEN, "x", &b));
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &m));
    HSQ_ASSERT_EQ(m.op, HSQ_OP_ABORT);
    HSQ_ASSERT_EQ(m.rep.error.code, HSQ_EFORBIDDEN);
    hsq_wire_msg_free(&m);

    /* An op outside the table: nothing is written. */
    hsq_wbuf_reset(&b);
    HSQ_ASSERT_EQ(hsq_wire_encode_error(HSQ_OP_COUNT_, 1, HSQ_EBADREQ, "x", &b), HSQ_EINVAL);
    HSQ_ASSERT_EQ(b.len, 0);

    /* A decode failure's errmsg is a valid reply message (sanitized). */
    mp("{v:1, rid:4, op:'list', user:'a', '\\xff\\x01bad':1}", &b);
    HSQ_ASSERT_EQ(hsq_wire_decode(b.data, b.len, 0, &m), HSQ_EBADREQ);
    HSQ_ASSERT(strstr(m.errmsg, "unknown field '??bad' in list") != NULL);
    hsq_wbuf reply;
    hsq_wbuf_init(&reply);
    HSQ_OK(hsq_wire_encode_error(m.op, m.rid, HSQ_EBADREQ, m.errmsg, &reply));
    hsq_wire_msg r;
    HSQ_OK(hsq_wire_decode(reply.data, reply.len, 0, &r));
    HSQ_ASSERT_VIEW_EQ(r.rep.error.message, m.errmsg);
    HSQ_ASSERT_U64_EQ(r.rid, 4);
    HSQ_ASSERT_EQ(r.op, HSQ_OP_LIST);
    hsq_wire_msg_free(&r);
    hsq_wbuf_free(&reply);
    hsq_wbuf_free(&b);
}

/* ------------------------------------------------------------ settings and info */

static void fill_settings(hsq_wire_settings *st) {
    memset(st, 0, sizeof(*st));
    st->n_backgrounds = 4;
    st->backgrounds[0] = (hsq_wire_background){HSQ_BG_SOLID, {255, 255, 255}, {0, 0, 0}, 0};
    st->backgrounds[1] = (hsq_wire_background){HSQ_BG_GRADIENT, {10, 20, 30}, {200, 210, 220}, 0};
    st->backgrounds[2] = (hsq_wire_background){HSQ_BG_VIGNETTE, {128, 128, 128}, {0, 0, 0}, 0};
    st->backgrounds[3] = (hsq_wire_background){HSQ_BG_REFERENCE, {0, 0, 0}, {0, 0, 0}, 12};
    st->n_styles = 2;
    st->styles[0] = (hsq_wire_style){HSQ_STR_LIT("natural"), 40, 50, 30, 0};
    st->styles[1] = (hsq_wire_style){HSQ_STR_LIT("bold"), 100, 0, 100, 100};
    st->dpi = 300;
}

static void fill_info(hsq_wire_info *in) {
    memset(in, 0, sizeof(*in));
    in->faces = 2;
    in->face_score = 921;
    in->backend = HSQ_STR_LIT("cpu");
    in->n_stages = 3;
    in->stages[0] = (hsq_wire_stage){HSQ_STR_LIT("decode"), 12};
    in->stages[1] = (hsq_wire_stage){HSQ_STR_LIT("detect"), 4};
    in->stages[2] = (hsq_wire_stage){HSQ_STR_LIT("segment"), 0};
}

static void test_settings_info(void) {
    hsq_wbuf sb, ib, a, b;
    hsq_wbuf_init(&sb);
    hsq_wbuf_init(&ib);
    hsq_wbuf_init(&a);
    hsq_wbuf_init(&b);
    char err[160];

    HSQ_ASSERT_STR_EQ(hsq_bg_name(HSQ_BG_SOLID), "solid");
    HSQ_ASSERT_STR_EQ(hsq_bg_name(HSQ_BG_REFERENCE), "reference");
    HSQ_ASSERT_STR_EQ(hsq_bg_name((hsq_bg_kind)0), "?");
    HSQ_ASSERT_STR_EQ(hsq_bg_name((hsq_bg_kind)5), "?");

    /* Settings on their own: encode, decode, re-encode byte for byte. */
    hsq_wire_settings st, st2;
    fill_settings(&st);
    HSQ_OK(hsq_wire_settings_encode(&st, &sb));
    HSQ_OK(hsq_wire_settings_decode((hsq_bytes){(const uint8_t *)sb.data, sb.len}, &st2, err,
                                    sizeof(err)));
    HSQ_ASSERT_EQ(st2.n_backgrounds, 4);
    HSQ_ASSERT_EQ(st2.backgrounds[1].kind, HSQ_BG_GRADIENT);
    HSQ_ASSERT_EQ(st2.backgrounds[1].color2[2], 220);
    HSQ_ASSERT_EQ(st2.backgrounds[0].color[0], 255);
    HSQ_ASSERT_EQ(st2.backgrounds[3].blur_px, 12);
    HSQ_ASSERT_EQ(st2.n_styles, 2);
    HSQ_ASSERT_VIEW_EQ(st2.styles[0].name, "natural");
    HSQ_ASSERT_EQ(st2.styles[0].retouch, 40);
    HSQ_ASSERT_EQ(st2.styles[1].clothing, 100);
    HSQ_ASSERT_EQ(st2.dpi, 300);
    HSQ_ASSERT(st2.styles[0].name.ptr >= sb.data && st2.styles[0].name.ptr < sb.data + sb.len);
    HSQ_OK(hsq_wire_settings_encode(&st2, &a));
    HSQ_ASSERT(a.len == sb.len && memcmp(a.data, sb.data, a.len) == 0);

    /* Empty raw = defaults. */
    HSQ_OK(hsq_wire_settings_decode((hsq_bytes){NULL, 0}, &st2, err, sizeof(err)));
    HSQ_ASSERT_EQ(st2.n_backgrounds + st2.n_styles + st2.dpi, 0);

    /* Info on its own. */
    hsq_wire_info in, in2;
    fill_info(&in);
    HSQ_OK(hsq_wire_info_encode(&in, &ib));
    HSQ_OK(hsq_wire_info_decode((hsq_bytes){(const uint8_t *)ib.data, ib.len}, &in2, err,
                                sizeof(err)));
    HSQ_ASSERT_EQ(in2.faces, 2);
    HSQ_ASSERT_EQ(in2.face_score, 921);
    HSQ_ASSERT_VIEW_EQ(in2.backend, "cpu");
    HSQ_ASSERT_EQ(in2.n_stages, 3);
    HSQ_ASSERT_VIEW_EQ(in2.stages[1].name, "detect");
    HSQ_ASSERT_EQ(in2.stages[0].ms, 12);

    /* Encoder refusals on the structs. */
    st2 = st;
    st2.dpi = 71;
    HSQ_ASSERT_EQ(hsq_wire_settings_encode(&st2, &a), HSQ_EINVAL);
    st2 = st;
    st2.n_backgrounds = 5;
    HSQ_ASSERT_EQ(hsq_wire_settings_encode(&st2, &a), HSQ_EINVAL);
    st2 = st;
    st2.styles[0].tone = 101;
    HSQ_ASSERT_EQ(hsq_wire_settings_encode(&st2, &a), HSQ_EINVAL);
    st2 = st;
    st2.backgrounds[0].kind = 0;
    HSQ_ASSERT_EQ(hsq_wire_settings_encode(&st2, &a), HSQ_EINVAL);
    st2 = st;
    st2.backgrounds[0].blur_px = 3; /* solid */
    HSQ_ASSERT_EQ(hsq_wire_settings_encode(&st2, &a), HSQ_EINVAL);
    in2 = in;
    in2.face_score = 1001;
    HSQ_ASSERT_EQ(hsq_wire_info_encode(&in2, &a), HSQ_EINVAL);
    in2 = in;
    in2.backend = HSQ_STR_LIT("tpu");
    HSQ_ASSERT_EQ(hsq_wire_info_encode(&in2, &a), HSQ_EINVAL);

    /* Submit carrying settings (1 bg input, 4 x 2 x 2 = 16 outputs, at the cap). */
    hsq_wire_msg m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_SUBMIT, 4), d;
    fill_submit(&m.req.submit);
    m.req.submit.settings = (hsq_bytes){(const uint8_t *)sb.data, sb.len};
    hsq_wbuf_reset(&a);
    HSQ_OK(hsq_wire_encode(&m, &a));
    HSQ_OK(hsq_wire_decode(a.data, a.len, 3, &d));
    HSQ_ASSERT_EQ(d.req.submit.settings.len, sb.len);
    HSQ_ASSERT(memcmp(d.req.submit.settings.ptr, sb.data, sb.len) == 0);
    /* The view is the byte range inside the meta, not a copy. */
    HSQ_ASSERT((const char *)d.req.submit.settings.ptr > a.data &&
               (const char *)d.req.submit.settings.ptr + sb.len <= a.data + a.len);
    hsq_wbuf_reset(&b);
    HSQ_OK(hsq_wire_encode(&d, &b));
    HSQ_ASSERT(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    hsq_wire_msg_free(&d);
    /* The byte range is right wherever the map stands among the keys,
     * before, between or after nested arrays and the envelope. */
    static const char *const orders[] = {
        "{settings:{dpi:300}, " SUBMIT_HEAD ", outputs:[" OUT_J "], inputs:[" IN_P "]}",
        "{" SUBMIT_HEAD ", inputs:[" IN_P "], settings:{dpi:300}, outputs:[" OUT_J "]}",
        "{user:'alice', inputs:[" IN_P "], outputs:[" OUT_J ", " OUT_J "], settings:{dpi:300},"
        " v:1, rid:9, op:'submit'}",
    };
    for (size_t i = 0; i < sizeof orders / sizeof orders[0]; i++) {
        hsq_wbuf_reset(&a);
        mp(orders[i], &a);
        HSQ_OK(hsq_wire_decode(a.data, a.len, 1, &d));
        hsq_wire_settings got;
        HSQ_OK(hsq_wire_settings_decode(d.req.submit.settings, &got, NULL, 0));
        HSQ_ASSERT_EQ(got.dpi, 300);
        HSQ_ASSERT_EQ(d.req.submit.settings.len, 8); /* fixmap, fixstr "dpi", uint16 */
        hsq_wire_msg_free(&d);
    }
    /* One more size: 4 x 2 x 3 = 24 > 16. */
    m.req.submit.n_outputs = 3;
    m.req.submit.outputs[2] = m.req.submit.outputs[1];
    HSQ_ASSERT_EQ(hsq_wire_encode(&m, &a), HSQ_EINVAL);
    m.req.submit.n_outputs = 2;
    /* No background input, but a reference background. */
    m.req.submit.inputs[2].kind = HSQ_STR_LIT("clothing");
    HSQ_ASSERT_EQ(hsq_wire_encode(&m, &a), HSQ_EINVAL);
    m.req.submit.inputs[2].kind = HSQ_STR_LIT("background");
    /* Raw bytes that are not one valid settings map. */
    m.req.submit.settings = (hsq_bytes){(const uint8_t *)"\x81\xa3"
                                                         "dpi\x05",
                                        6};
    HSQ_ASSERT_EQ(hsq_wire_encode(&m, &a), HSQ_EINVAL);
    m.req.submit.settings = (hsq_bytes){(const uint8_t *)sb.data, sb.len - 1};
    HSQ_ASSERT_EQ(hsq_wire_encode(&m, &a), HSQ_EINVAL);
    m.req.submit.settings = (hsq_bytes){(const uint8_t *)"\x80\x80", 2}; /* trailing */
    HSQ_ASSERT_EQ(hsq_wire_encode(&m, &a), HSQ_EINVAL);
    m.req.submit.settings = (hsq_bytes){(const uint8_t *)"\x80", 1}; /* empty map: fine */
    hsq_wbuf_reset(&a);
    HSQ_OK(hsq_wire_encode(&m, &a));

    /* Done with info, outputs naming their combination; result reply with
     * both maps; lease reply with the job's settings. */
    m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_DONE, 5);
    m.req.done.task = 9;
    m.req.done.token = 3;
    m.req.done.n_outputs = 2;
    fill_output(&m.req.done.outputs[0], "p/out-0-3.jpg", 64);
    fill_output(&m.req.done.outputs[1], "p/out-1-3.jpg", 64);
    m.req.done.outputs[1].background = 3;
    m.req.done.outputs[1].style = 1;
    m.req.done.outputs[1].spec = 15;
    m.req.done.info = (hsq_bytes){(const uint8_t *)ib.data, ib.len};
    hsq_wbuf_reset(&a);
    HSQ_OK(hsq_wire_encode(&m, &a));
    HSQ_OK(hsq_wire_decode(a.data, a.len, 0, &d));
    HSQ_ASSERT_EQ(d.req.done.outputs[1].background, 3);
    HSQ_ASSERT_EQ(d.req.done.outputs[1].style, 1);
    HSQ_ASSERT_EQ(d.req.done.outputs[1].spec, 15);
    HSQ_ASSERT_EQ(d.req.done.outputs[0].spec, 0);
    HSQ_ASSERT(d.req.done.info.len == ib.len && !memcmp(d.req.done.info.ptr, ib.data, ib.len));
    hsq_wire_msg_free(&d);
    m.req.done.outputs[1].spec = 16;
    HSQ_ASSERT_EQ(hsq_wire_encode(&m, &a), HSQ_EINVAL);

    m = new_msg(HSQ_KIND_REPLY, HSQ_OP_STATUS, 6);
    fill_task(&m.rep.task.task, 8, HSQ_STATE_SUCCEEDED, 1);
    m.rep.task.task.settings = (hsq_bytes){(const uint8_t *)sb.data, sb.len};
    m.rep.task.task.info = (hsq_bytes){(const uint8_t *)ib.data, ib.len};
    hsq_wbuf_reset(&a);
    HSQ_OK(hsq_wire_encode(&m, &a));
    HSQ_OK(hsq_wire_decode(a.data, a.len, 0, &d));
    HSQ_OK(hsq_wire_settings_decode(d.rep.task.task.settings, &st2, err, sizeof(err)));
    HSQ_ASSERT_EQ(st2.n_backgrounds, 4);
    HSQ_OK(hsq_wire_info_decode(d.rep.task.task.info, &in2, err, sizeof(err)));
    HSQ_ASSERT_EQ(in2.n_stages, 3);
    hsq_wbuf_reset(&b);
    HSQ_OK(hsq_wire_encode(&d, &b));
    HSQ_ASSERT(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    hsq_wire_msg_free(&d);

    /* Several tasks in a list reply: each view lands on its own map. */
    static hsq_wire_task lt[3];
    m = new_msg(HSQ_KIND_REPLY, HSQ_OP_LIST, 7);
    for (int i = 0; i < 3; i++) {
        memset(&lt[i], 0, sizeof(lt[i]));
        fill_task(&lt[i], 10 + (uint64_t)i, HSQ_STATE_QUEUED, 0);
        if (i != 1)
            lt[i].settings = (hsq_bytes){(const uint8_t *)sb.data, sb.len};
        if (i == 2)
            lt[i].info = (hsq_bytes){(const uint8_t *)ib.data, ib.len};
    }
    m.rep.list.n = 3;
    m.rep.list.tasks = lt;
    hsq_wbuf_reset(&a);
    HSQ_OK(hsq_wire_encode(&m, &a));
    HSQ_OK(hsq_wire_decode(a.data, a.len, 0, &d));
    HSQ_ASSERT_EQ(d.rep.list.tasks[1].settings.len, 0);
    HSQ_ASSERT(d.rep.list.tasks[2].settings.len == sb.len &&
               !memcmp(d.rep.list.tasks[2].settings.ptr, sb.data, sb.len));
    HSQ_ASSERT(d.rep.list.tasks[2].info.len == ib.len &&
               !memcmp(d.rep.list.tasks[2].info.ptr, ib.data, ib.len));
    hsq_wire_msg_free(&d);

    static hsq_wire_job jobs[2];
    m = new_msg(HSQ_KIND_REPLY, HSQ_OP_LEASE, 8);
    for (int i = 0; i < 2; i++) {
        memset(&jobs[i], 0, sizeof(jobs[i]));
        fill_job(&jobs[i], 20 + (uint64_t)i);
    }
    jobs[1].settings = (hsq_bytes){(const uint8_t *)sb.data, sb.len};
    m.rep.lease.n = 2;
    m.rep.lease.jobs = jobs;
    hsq_wbuf_reset(&a);
    HSQ_OK(hsq_wire_encode(&m, &a));
    HSQ_OK(hsq_wire_decode(a.data, a.len, 2, &d));
    HSQ_ASSERT_EQ(d.rep.lease.jobs[0].settings.len, 0);
    HSQ_ASSERT(d.rep.lease.jobs[1].settings.len == sb.len &&
               !memcmp(d.rep.lease.jobs[1].settings.ptr, sb.data, sb.len));
    hsq_wire_msg_free(&d);

    /* A settings map over HSQ_MAX_SETTINGS_BYTES: a padded style name cannot
     * get there (32 bytes), so hand-build a map with a huge (unknown) key;
     * the size check comes first. */
    hsq_wbuf big;
    hsq_wbuf_init(&big);
    hsq_wbuf_append(&big, "\x81\xda\x10\x00", 4); /* map of 1, str16 of 4096 */
    for (int i = 0; i < 4096; i++)
        hsq_wbuf_append(&big, "x", 1);
    hsq_wbuf_append(&big, "\x01", 1);
    HSQ_ASSERT_EQ(hsq_wire_settings_decode((hsq_bytes){(const uint8_t *)big.data, big.len}, &st2,
                                           err, sizeof(err)),
                  HSQ_ETOOLARGE);
    HSQ_ASSERT(strstr(err, "too large") != NULL);
    HSQ_ASSERT_EQ(hsq_wire_settings_decode((hsq_bytes){(const uint8_t *)"\x81\xa1q\x01", 4}, &st2,
                                           err, sizeof(err)),
                  HSQ_EBADREQ);
    HSQ_ASSERT(strstr(err, "unknown field 'q' in settings") != NULL);
    HSQ_ASSERT_EQ(hsq_wire_settings_decode((hsq_bytes){(const uint8_t *)"\x91\x01", 2}, &st2, err,
                                           sizeof(err)),
                  HSQ_EBADREQ);
    hsq_wbuf_free(&big);

    hsq_wbuf_free(&sb);
    hsq_wbuf_free(&ib);
    hsq_wbuf_free(&a);
    hsq_wbuf_free(&b);
}

static void test_names(void) {
    for (int op = HSQ_OP_SUBMIT; op < HSQ_OP_COUNT_; op++) {
        const char *n = hsq_op_name((hsq_op)op);
        HSQ_ASSERT(strcmp(n, "?") != 0);
        HSQ_ASSERT_EQ(hsq_op_from_name(hsq_str_c(n)), op);
    }
    HSQ_ASSERT_STR_EQ(hsq_op_name(HSQ_OP_HEARTBEAT), "heartbeat");
    HSQ_ASSERT_STR_EQ(hsq_op_name(HSQ_OP_NONE), "?");
    HSQ_ASSERT_STR_EQ(hsq_op_name(HSQ_OP_COUNT_), "?");
    HSQ_ASSERT_EQ(hsq_op_from_name(hsq_str_c("")), HSQ_OP_NONE);
    HSQ_ASSERT_EQ(hsq_op_from_name(hsq_str_c("submitx")), HSQ_OP_NONE);
    HSQ_ASSERT_EQ(hsq_op_from_name((hsq_str){"submit", 3}), HSQ_OP_NONE);

    HSQ_ASSERT_STR_EQ(hsq_state_name(HSQ_STATE_QUEUED), "queued");
    HSQ_ASSERT_STR_EQ(hsq_state_name(HSQ_STATE_EXPIRED), "expired");
    HSQ_ASSERT_STR_EQ(hsq_state_name(HSQ_STATE_NONE), "?");
    HSQ_ASSERT_STR_EQ(hsq_state_name(HSQ_STATE_COUNT_), "?");
    HSQ_ASSERT_STR_EQ(hsq_prio_name(HSQ_PRIO_NORMAL), "normal");
    HSQ_ASSERT_STR_EQ(hsq_prio_name(HSQ_PRIO_COUNT_), "?");
    HSQ_ASSERT_EQ(hsq_prio_from_name(hsq_str_c("low")), HSQ_PRIO_LOW);
    HSQ_ASSERT_EQ(hsq_prio_from_name(hsq_str_c("urgent")), -1);
    HSQ_ASSERT_STR_EQ(hsq_fmt_name(HSQ_FMT_JPEG), "jpeg");
    HSQ_ASSERT_STR_EQ(hsq_fmt_name(HSQ_FMT_PNG), "png");
    HSQ_ASSERT_STR_EQ(hsq_fmt_name((hsq_fmt)0), "?");
    HSQ_ASSERT_STR_EQ(hsq_fmt_name((hsq_fmt)3), "?");

    static const int terminal[HSQ_STATE_COUNT_] = {0, 0, 0, 1, 1, 1, 1};
    for (int s = 0; s < HSQ_STATE_COUNT_; s++)
        HSQ_ASSERT_EQ(hsq_state_is_terminal((hsq_state)s), terminal[s]);
}

/* ------------------------------------------------------------ retention and privacy */

/* Encode m, decode it with nframes, re-encode and compare bytes; *d holds the
 * decoded message (free it), whose views point into rt_buf: valid until the
 * next call. */
static hsq_wbuf rt_buf;

static void retention_rt(const char *name, const hsq_wire_msg *m, size_t nframes, hsq_wire_msg *d) {
    hsq_wbuf *ap = &rt_buf, b;
    hsq_wbuf_reset(ap);
    hsq_wbuf_init(&b);
    int rc = hsq_wire_encode(m, ap);
    if (rc != 0)
        HSQ_FAIL_("%s: encode: %d", name, rc);
    rc = hsq_wire_decode(ap->data, ap->len, nframes, d);
    if (rc != 0)
        HSQ_FAIL_("%s: decode: %d (%s)", name, rc, d->errmsg);
    HSQ_ASSERT_EQ(d->op, m->op);
    HSQ_ASSERT_EQ(d->kind, m->kind);
    HSQ_OK(hsq_wire_encode(d, &b));
    if (ap->len != b.len || memcmp(ap->data, b.data, ap->len) != 0)
        HSQ_FAIL_("%s: re-encoding differs (%zu vs %zu bytes)", name, ap->len, b.len);
    hsq_wbuf_free(&b);
}

static void test_retention_messages(void) {
    hsq_wire_msg m, d;
    hsq_wbuf b;
    hsq_wbuf_init(&b);
    hsq_wbuf_init(&rt_buf);

    HSQ_ASSERT_STR_EQ(hsq_op_name(HSQ_OP_PURGE), "purge");
    HSQ_ASSERT_STR_EQ(hsq_op_name(HSQ_OP_ERASE), "erase");
    HSQ_ASSERT_STR_EQ(hsq_op_name(HSQ_OP_EXPORT), "export");
    HSQ_ASSERT_EQ(hsq_op_from_name(HSQ_STR_LIT("export")), HSQ_OP_EXPORT);

    /* purge request; limit defaults to 100000 and is left out at its default. */
    m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_PURGE, 1);
    m.req.purge.dry_run = 1;
    m.req.purge.limit = 5000;
    retention_rt("purge", &m, 0, &d);
    HSQ_ASSERT_EQ(d.req.purge.dry_run, 1);
    HSQ_ASSERT_EQ(d.req.purge.limit, 5000);
    hsq_wire_msg_free(&d);
    mp("{v:1, rid:1, op:'purge'}", &b);
    HSQ_OK(hsq_wire_decode(b.data, b.len, 0, &d));
    HSQ_ASSERT_EQ(d.req.purge.limit, 100000);
    HSQ_ASSERT_EQ(d.req.purge.dry_run, 0);
    hsq_wire_msg_free(&d);

    /* purge reply */
    m = new_msg(HSQ_KIND_REPLY, HSQ_OP_PURGE, 2);
    m.rep.purge = (hsq_rep_purge){.dry_run = 0,
                                  .more = 1,
                                  .inputs = 3,
                                  .outputs = 4,
                                  .tasks = 5,
                                  .tombstones = 6,
                                  .cancelled = 7,
                                  .bytes = 1ull << 40,
                                  .errors = 1};
    retention_rt("purge reply", &m, 0, &d);
    HSQ_ASSERT_EQ(d.rep.purge.more, 1);
    HSQ_ASSERT_U64_EQ(d.rep.purge.bytes, 1ull << 40);
    HSQ_ASSERT_U64_EQ(d.rep.purge.tombstones, 6);
    HSQ_ASSERT_U64_EQ(d.rep.purge.errors, 1);
    hsq_wire_msg_free(&d);

    /* erase request and receipt */
    m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_ERASE, 3);
    m.req.erase.user = HSQ_STR_LIT("user-\xc3\xa9");
    retention_rt("erase", &m, 0, &d);
    HSQ_ASSERT_VIEW_EQ(d.req.erase.user, "user-\xc3\xa9");
    hsq_wire_msg_free(&d);
    m = new_msg(HSQ_KIND_REPLY, HSQ_OP_ERASE, 3);
    m.rep.erase = (hsq_rep_erase){.tasks = 9,
                                  .active = 2,
                                  .bytes = 12345,
                                  .at_ms = 1700000000123,
                                  .subject = HSQ_STR_LIT("00112233445566778899aabbccddeeff")};
    retention_rt("erase reply", &m, 0, &d);
    HSQ_ASSERT_U64_EQ(d.rep.erase.tasks, 9);
    HSQ_ASSERT_U64_EQ(d.rep.erase.active, 2);
    HSQ_ASSERT_EQ(d.rep.erase.at_ms, 1700000000123);
    HSQ_ASSERT_VIEW_EQ(d.rep.erase.subject, "00112233445566778899aabbccddeeff");
    hsq_wire_msg_free(&d);

    /* export request: after defaults to 0 */
    m = new_msg(HSQ_KIND_REQUEST, HSQ_OP_EXPORT, 4);
    m.req.export_.user = HSQ_STR_LIT("alice");
    m.req.export_.after = 77;
    retention_rt("export", &m, 0, &d);
    HSQ_ASSERT_U64_EQ(d.req.export_.after, 77);
    hsq_wire_msg_free(&d);

    /* export reply with a task: 2 inputs (one deleted), 3 outputs (one
     * deleted), the new task dates, 3 frames. */
    m = new_msg(HSQ_KIND_REPLY, HSQ_OP_EXPORT, 4);
    hsq_rep_export *e = &m.rep.export_;
    e->has_task = 1;
    fill_task(&e->task, 41, HSQ_STATE_SUCCEEDED, 3);
    e->task.uploads_expire_ms = 1700000600000;
    e->task.refs_expire_ms = 1700000500000;
    e->prompt = HSQ_STR_LIT("navy suit");
    e->n_inputs = 2;
    e->inputs[0] =
        (hsq_wire_input){HSQ_STR_LIT("portrait"), HSQ_STR_LIT("me.jpg"), {NULL, 0}, 0, 1000};
    e->inputs[1] =
        (hsq_wire_input){HSQ_STR_LIT("clothing"), {NULL, 0}, {NULL, 0}, HSQ_NO_FRAME, 2000};
    e->out_frames[0] = 1;
    e->out_frames[1] = HSQ_NO_FRAME;
    e->out_frames[2] = 2;
    e->next = 40;
    retention_rt("export reply", &m, 3, &d);
    const hsq_rep_export *x = &d.rep.export_;
    HSQ_ASSERT_EQ(x->has_task, 1);
    HSQ_ASSERT_U64_EQ(x->task.id, 41);
    HSQ_ASSERT_EQ(x->task.uploads_expire_ms, 1700000600000);
    HSQ_ASSERT_EQ(x->task.refs_expire_ms, 1700000500000);
    HSQ_ASSERT_EQ(x->task.n_outputs, 3);
    HSQ_ASSERT_EQ(x->n_inputs, 2);
    HSQ_ASSERT_EQ(x->inputs[0].frame, 0);
    HSQ_ASSERT_EQ(x->inputs[1].frame, HSQ_NO_FRAME);
    HSQ_ASSERT_U64_EQ(x->inputs[1].size, 2000);
    HSQ_ASSERT_EQ(x->out_frames[0], 1);
    HSQ_ASSERT_EQ(x->out_frames[1], HSQ_NO_FRAME);
    HSQ_ASSERT_EQ(x->out_frames[2], 2);
    HSQ_ASSERT_U64_EQ(x->next, 40);
    HSQ_ASSERT_VIEW_EQ(x->prompt, "navy suit");
    hsq_wire_msg_free(&d);
    /* The same frames are required on decode: one missing frame is refused. */
    hsq_wbuf_reset(&b);
    HSQ_OK(hsq_wire_encode(&m, &b));
    HSQ_ASSERT_EQ(hsq_wire_decode(b.data, b.len, 2, &d), HSQ_EBADREQ);
    HSQ_ASSERT(strstr(d.errmsg, "frame") != NULL);
    hsq_wire_msg_free(&d);
    /* A frame index past the frames is refused by the encoder too. */
    e->out_frames[2] = 7;
    hsq_wbuf_reset(&b);
    HSQ_OK(hsq_wire_encode(&m, &b)); /* the encoder cannot know the frames sent */
    HSQ_ASSERT_EQ(hsq_wire_decode(b.data, b.len, 3, &d), HSQ_EBADREQ);
    hsq_wire_msg_free(&d);
    /* has_task without a task, and a task without has_task, are refused. */
    e->out_frames[2] = 2;
    e->has_task = 0;
    hsq_wbuf_reset(&b);
    HSQ_ASSERT_EQ(hsq_wire_encode(&m, &b), HSQ_EINVAL);

    /* export reply at the end: just has_task false; the task map is left out. */
    m = new_msg(HSQ_KIND_REPLY, HSQ_OP_EXPORT, 5);
    retention_rt("export reply, end", &m, 0, &d);
    HSQ_ASSERT_EQ(d.rep.export_.has_task, 0);
    HSQ_ASSERT_U64_EQ(d.rep.export_.task.id, 0);
    hsq_wire_msg_free(&d);

    /* The new task dates are optional: absent = 0, and 0 is not written. */
    m = new_msg(HSQ_KIND_REPLY, HSQ_OP_STATUS, 6);
    fill_task(&m.rep.task.task, 8, HSQ_STATE_QUEUED, 0);
    hsq_wbuf_reset(&b);
    HSQ_OK(hsq_wire_encode(&m, &b));
    HSQ_ASSERT(memmem(b.data, b.len, "uploads_expire_ms", 17) == NULL);
    m.rep.task.task.uploads_expire_ms = 5;
    m.rep.task.task.refs_expire_ms = -1;
    retention_rt("status reply with dates", &m, 0, &d);
    HSQ_ASSERT_EQ(d.rep.task.task.uploads_expire_ms, 5);
    HSQ_ASSERT_EQ(d.rep.task.task.refs_expire_ms, -1);
    hsq_wire_msg_free(&d);

    /* Refusals, hand-written. */
    static const struct {
        const char *text;
        size_t nframes;
        int rc;
        const char *errmsg;
    } bad[] = {
        {"{v:1, rid:1, op:'purge', limit:0}", 0, HSQ_EBADREQ, "limit"},
        {"{v:1, rid:1, op:'purge', limit:1000001}", 0, HSQ_EBADREQ, "limit"},
        {"{v:1, rid:1, op:'purge', dry_run:1}", 0, HSQ_EBADREQ, "dry_run"},
        {"{v:1, rid:1, op:'purge', force:true}", 0, HSQ_EBADREQ, "unknown field 'force'"},
        {"{v:1, rid:1, op:'purge'}", 1, HSQ_EBADREQ, "takes no binary frames"},
        {"{v:1, rid:1, op:'erase'}", 0, HSQ_EBADREQ, "missing field 'user'"},
        {"{v:1, rid:1, op:'erase', user:''}", 0, HSQ_EBADREQ, "must not be empty"},
        {"{v:1, rid:1, op:'erase', user:@129}", 0, HSQ_ETOOLARGE, "too long"},
        {"{v:1, rid:1, op:'erase', user:'\xff'}", 0, HSQ_EBADREQ, "UTF-8"},
        {"{v:1, rid:1, op:'export', user:'a', after:-1}", 0, HSQ_EBADREQ, "after"},
        {"{v:1, rid:1, op:'export', after:1}", 0, HSQ_EBADREQ, "missing field 'user'"},
        {"{v:1, rid:1, re:'purge', dry_run:false}", 0, HSQ_EBADREQ, "missing field"},
        {"{v:1, rid:1, re:'erase', tasks:1, active:0, bytes:0, at_ms:1, subject:''}", 0,
         HSQ_EBADREQ, "subject"},
        {"{v:1, rid:1, re:'export', has_task:true}", 0, HSQ_EBADREQ, "has_task"},
        {"{v:1, rid:1, re:'export', has_task:false, next:3}", 0, HSQ_EBADREQ, "nothing else"},
        {"{v:1, rid:1, re:'export', has_task:true, task:" TASK_OK ", out_frames:[0]}", 1,
         HSQ_EBADREQ, "out_frames has 1"},
        {"{v:1, rid:1, re:'export', has_task:true, task:" TASK_OK
         ", inputs:[{kind:'portrait', size:1, frame:0}]}",
         0, HSQ_EBADREQ, "names frame 0 of 0"},
        {"{v:1, rid:1, re:'export', has_task:true, task:" TASK_OK
         ", inputs:[{kind:'portrait', size:1, key:'u/x'}]}",
         0, HSQ_EBADREQ, "unknown field 'key'"},
        {"{v:1, rid:1, re:'status', task:{id:3, user:'u', state:'queued', prio:'normal',"
         " attempts:0, created_ms:1, updated_ms:2, expires_ms:0, progress:0, n_inputs:1,"
         " refs_expire_ms:'x'}}",
         0, HSQ_EBADREQ, "refs_expire_ms"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mp(bad[i].text, &b);
        int rc = hsq_wire_decode(b.data, b.len, bad[i].nframes, &d);
        if (rc != bad[i].rc || !strstr(d.errmsg, bad[i].errmsg))
            HSQ_FAIL_("retention reject %zu (%s): rc %d, errmsg \"%s\"", i, bad[i].text, rc,
                      d.errmsg);
        hsq_wire_msg_free(&d);
    }
    /* An export reply with a task whose outputs match out_frames decodes. */
    mp("{v:1, rid:1, re:'export', has_task:true, task:" TASK_OK
       ", inputs:[{kind:'portrait', size:1, frame:0}, {kind:'clothing', size:2}]}",
       &b);
    HSQ_OK(hsq_wire_decode(b.data, b.len, 1, &d));
    HSQ_ASSERT_EQ(d.rep.export_.inputs[1].frame, HSQ_NO_FRAME);
    HSQ_ASSERT_U64_EQ(d.rep.export_.next, 0);
    hsq_wire_msg_free(&d);
    hsq_wbuf_free(&b);
    hsq_wbuf_free(&rt_buf);
}

/* The one UTF-8 rule the codec, libhsq and the CLI share: each sequence's
 * length, and every way a sequence can be wrong. */
static void test_utf8(void) {
    static const struct {
        const char *s;
        size_t seq; /* hsq_utf8_seq at the start; 0: invalid */
    } cases[] = {
        {"a", 1},
        {"\x7f", 1},
        {"\xc3\xa9", 2},         /* e acute */
        {"\xe2\x82\xac", 3},     /* euro sign */
        {"\xef\xbf\xbf", 3},     /* U+FFFF */
        {"\xf0\x9f\x98\x80", 4}, /* U+1F600 */
        {"\xf4\x8f\xbf\xbf", 4}, /* U+10FFFF, the last */
        {"\x80", 0},             /* a continuation byte first */
        {"\xc0\xaf", 0},         /* overlong '/' */
        {"\xc1\xbf", 0},         /* overlong */
        {"\xe0\x80\xaf", 0},     /* overlong, 3 bytes */
        {"\xf0\x80\x80\xaf", 0}, /* overlong, 4 bytes */
        {"\xed\xa0\x80", 0},     /* surrogate U+D800 */
        {"\xed\xbf\xbf", 0},     /* surrogate U+DFFF */
        {"\xf4\x90\x80\x80", 0}, /* U+110000 */
        {"\xf5\x80\x80\x80", 0}, /* no such lead byte */
        {"\xff", 0},
        {"\xe2\x82", 0},         /* truncated */
        {"\xe2\x28\xa1", 0},     /* a bad continuation */
        {"\xf0\x9f\x98\x28", 0}, /* the last continuation bad */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = strlen(cases[i].s);
        HSQ_ASSERT_EQ(hsq_utf8_seq(cases[i].s, n), cases[i].seq);
        HSQ_ASSERT_EQ(hsq_utf8_valid(cases[i].s, n), cases[i].seq == n);
    }
    HSQ_ASSERT(hsq_utf8_valid("", 0));
    HSQ_ASSERT(hsq_utf8_valid("caf\xc3\xa9 \xe2\x82\xac"
                              "1",
                              10));
    HSQ_ASSERT(!hsq_utf8_valid("caf\xc3\xa9 \xe2\x82", 9)); /* cut inside the last */
    HSQ_ASSERT_EQ(hsq_utf8_seq("\xc3\xa9", 1), 0);          /* only one byte there */
}

int main(void) {
    test_utf8();
    test_names();
    test_round_trips();
    test_accepts();
    test_rejects();
    test_rejects_raw();
    test_meta_at_limit();
    test_encoder_refuses();
    test_encode_error();
    test_settings_info();
    test_retention_messages();
    printf("test_wire: %zu round trips, %zu refusal cases: ok\n",
           sizeof(rt_cases) / sizeof(rt_cases[0]), sizeof(rejects) / sizeof(rejects[0]));
    return 0;
}
