/* test_queue.c - the broker core without sockets: real LMDB and a real blob
 * store in a temp dir, messages built with the wire codec, a clock the test
 * moves by hand. */
#include "common/blob.h"
#include "common/clock.h"
#include "daemon/fsck.h"
#include "daemon/janitor.h"
#include "daemon/queue.h"
#include "daemon/reaper.h"
#include "daemon/store.h"
#include "schemas/err.h"
#include "schemas/wire.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_CAP 4096

typedef struct {
    hsq_sock sock;
    char peer[64];
    hsq_wbuf meta;
    hsq_wire_msg m;
    uint32_t nframes;
    hsq_bytes frames[HSQ_MAX_OUTPUTS + HSQ_MAX_INPUTS];
} captured;

static char dir[128];
static hsq_store *st;
static hsq_blob *bl;
static hsq_queue *q;
static int64_t now = 1700000000000;
static hsq_queue_conf conf;
static captured cap[MAX_CAP];
static size_t ncap;
static uint64_t rid_seq = 1;
static hsq_role feed_role = HSQ_ROLE_ANY;
static const char *feed_key = NULL; /* the CURVE identity of fed messages */

static void cap_clear(void) {
    for (size_t i = 0; i < ncap; i++) {
        hsq_wire_msg_free(&cap[i].m);
        hsq_wbuf_free(&cap[i].meta);
        for (uint32_t f = 0; f < cap[i].nframes; f++)
            free((void *)cap[i].frames[f].ptr);
    }
    ncap = 0;
}

static void collect(void) {
    size_t n;
    hsq_out *o = hsq_queue_outbox(q, &n);
    for (size_t i = 0; i < n && ncap < MAX_CAP; i++) {
        captured *c = &cap[ncap++];
        memset(c, 0, sizeof *c);
        c->sock = o[i].sock;
        snprintf(c->peer, sizeof c->peer, "%.*s", (int)o[i].peer_len, (const char *)o[i].peer);
        hsq_wbuf_init(&c->meta);
        hsq_wbuf_append(&c->meta, o[i].meta.data, o[i].meta.len);
        c->nframes = o[i].nframes;
        for (uint32_t f = 0; f < o[i].nframes; f++) {
            uint8_t *p = malloc(o[i].frames[f].len + 1);
            memcpy(p, o[i].frames[f].ptr, o[i].frames[f].len);
            c->frames[f].ptr = p;
            c->frames[f].len = o[i].frames[f].len;
        }
        int rc = hsq_wire_decode(c->meta.data, c->meta.len, c->nframes, &c->m);
        if (rc != 0)
            HSQ_FAIL_("outbox message does not decode: %s", c->m.errmsg);
    }
    hsq_queue_outbox_clear(q);
}

/* One turn with the given messages (may be none: timers only). */
static int turn(void) {
    int rc = hsq_queue_end_turn(q);
    collect();
    return rc;
}

static void begin(void) {
    cap_clear();
    HSQ_OK(hsq_queue_begin_turn(q, now));
}

static void feed(hsq_sock sock, const char *peer, hsq_wire_msg *m, const hsq_bytes *frames,
                 size_t nframes) {
    hsq_wbuf b;
    hsq_wbuf_init(&b);
    m->v = HSQ_WIRE_VERSION;
    if (m->kind == 0)
        m->kind = HSQ_KIND_REQUEST;
    if (m->rid == 0)
        m->rid = rid_seq++;
    int rc = hsq_wire_encode(m, &b);
    if (rc != 0)
        HSQ_FAIL_("encode %s failed: %d", hsq_op_name(m->op), rc);
    hsq_bytes f[1 + HSQ_MAX_INPUTS];
    f[0].ptr = (const uint8_t *)b.data;
    f[0].len = b.len;
    for (size_t i = 0; i < nframes; i++)
        f[1 + i] = frames[i];
    hsq_queue_handle(q, sock, feed_role, feed_key, (const uint8_t *)peer, strlen(peer), f,
                     1 + nframes);
    hsq_wbuf_free(&b);
}

/* The reply (or error) to rid in the captured outbox, or NULL. */
static captured *replied(uint64_t rid) {
    for (size_t i = 0; i < ncap; i++)
        if (cap[i].m.kind != HSQ_KIND_REQUEST && cap[i].m.rid == rid)
            return &cap[i];
    return NULL;
}

/* ... which must be there. */
static captured *reply_to(uint64_t rid) {
    captured *c = replied(rid);
    if (!c)
        HSQ_FAIL_("no reply to rid %llu among %zu messages", (unsigned long long)rid, ncap);
    return c;
}

/* Feed m (with a new rid) from peer on the client socket, with nframes
 * frames, in a turn of its own; its reply, which must be there. */
static captured *ask(const char *peer, hsq_wire_msg *m, const hsq_bytes *frames, size_t nframes) {
    m->rid = rid_seq++;
    begin();
    feed(HSQ_SOCK_CLIENT, peer, m, frames, nframes);
    turn();
    return reply_to(m->rid);
}

static captured *find_op(hsq_op op, hsq_msg_kind kind) {
    for (size_t i = 0; i < ncap; i++)
        if (cap[i].m.op == op && cap[i].m.kind == kind)
            return &cap[i];
    return NULL;
}

static const uint8_t tiny[] = "not really a jpeg, the core never decodes inputs";

/* A submit of one small input (the frame: tiny). */
static void submit_msg(hsq_wire_msg *m, const char *user, const char *key, uint8_t prio) {
    memset(m, 0, sizeof *m);
    m->op = HSQ_OP_SUBMIT;
    m->req.submit.user = hsq_str_c(user);
    if (key)
        m->req.submit.key = hsq_str_c(key);
    m->req.submit.prio = prio;
    m->req.submit.n_inputs = 1;
    m->req.submit.inputs[0].kind = HSQ_STR_LIT("portrait");
    m->req.submit.inputs[0].name = HSQ_STR_LIT("me.jpg");
    m->req.submit.inputs[0].frame = 0;
    m->req.submit.n_outputs = 1;
    m->req.submit.outputs[0].width = 64;
    m->req.submit.outputs[0].height = 80;
    m->req.submit.outputs[0].format = HSQ_FMT_JPEG;
}

/* Submit one task; returns its id (or the negative error code). */
static int64_t submit_prio(const char *user, const char *key, uint8_t prio) {
    hsq_wire_msg m;
    submit_msg(&m, user, key, prio);
    hsq_bytes f = {tiny, sizeof tiny};
    captured *r = ask("web-1", &m, &f, 1);
    if (r->m.kind == HSQ_KIND_ERROR)
        return r->m.rep.error.code;
    return (int64_t)r->m.rep.submit.task;
}

static int64_t submit(const char *user, const char *key) {
    return submit_prio(user, key, HSQ_PRIO_NORMAL);
}

/* Lease up to max jobs for worker `peer`; copies the jobs out. */
static uint32_t lease(const char *peer, uint32_t max, hsq_wire_job *jobs, uint64_t *tokens) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_LEASE;
    m.rid = rid_seq++;
    m.req.lease.max = max;
    m.req.lease.wait_ms = 0;
    begin();
    feed(HSQ_SOCK_WORKER, peer, &m, NULL, 0);
    turn();
    captured *r = reply_to(m.rid);
    HSQ_ASSERT_EQ(r->m.kind, HSQ_KIND_REPLY);
    for (uint32_t i = 0; i < r->m.rep.lease.n; i++) {
        if (jobs)
            jobs[i] = r->m.rep.lease.jobs[i];
        if (tokens)
            tokens[i] = r->m.rep.lease.jobs[i].token;
    }
    return r->m.rep.lease.n;
}

static uint64_t lease1(const char *peer, uint64_t *token) {
    hsq_wire_job job;
    uint64_t tok = 0;
    if (lease(peer, 1, &job, &tok) != 1)
        return 0;
    if (token)
        *token = tok;
    return job.task;
}

static const uint8_t out_img[] = "fake output bytes";

/* A done for task naming out-0.jpg under the task's prefix (the key is
 * written to key, which m points into); the file is stored first when
 * `write` says so. */
static void done_msg(hsq_wire_msg *m, uint64_t task, uint64_t token, const char *user, char *key,
                     size_t keylen, int write) {
    char prefix[HSQ_BLOB_PREFIX_LEN + 1];
    hsq_blob_user_prefix(bl, user, strlen(user), prefix);
    snprintf(key, keylen, "%s%llu/out-0.jpg", prefix, (unsigned long long)task);
    if (write)
        HSQ_OK(hsq_blob_put(bl, key, out_img, sizeof out_img, HSQ_BLOB_SYNC));
    memset(m, 0, sizeof *m);
    m->op = HSQ_OP_DONE;
    m->rid = rid_seq++;
    m->req.done.task = task;
    m->req.done.token = token;
    m->req.done.n_outputs = 1;
    m->req.done.outputs[0].key = hsq_str_c(key);
    m->req.done.outputs[0].size = sizeof out_img;
    m->req.done.outputs[0].width = 64;
    m->req.done.outputs[0].height = 80;
    m->req.done.outputs[0].format = HSQ_FMT_JPEG;
    hsq_sha256(out_img, sizeof out_img, m->req.done.outputs[0].sha256);
}

/* Write an output blob under the task's prefix and report done. */
static captured *done(const char *peer, uint64_t task, uint64_t token, const char *user) {
    char key[256];
    hsq_wire_msg m;
    done_msg(&m, task, token, user, key, sizeof key, 1);
    begin();
    feed(HSQ_SOCK_WORKER, peer, &m, NULL, 0);
    turn();
    return reply_to(m.rid);
}

static captured *task_op(hsq_op op, uint64_t task, const char *user) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = op;
    m.req.task.task = task;
    if (user)
        m.req.task.user = hsq_str_c(user);
    return ask("web-1", &m, NULL, 0);
}

/* A purge request (limit entries, a dry run or not) or an erasure request,
 * fed in a turn of its own; returns its rid. */
static uint64_t purge_send(uint32_t limit, int dry) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_PURGE;
    m.rid = rid_seq++;
    m.req.purge.limit = limit;
    m.req.purge.dry_run = (uint8_t)dry;
    begin();
    feed(HSQ_SOCK_CLIENT, "ops", &m, NULL, 0);
    turn();
    return m.rid;
}

static uint64_t purge_request(uint32_t limit) {
    return purge_send(limit, 0);
}

/* A dry-run purge in a turn of its own; the reply. */
static captured *purge_dry(uint32_t limit) {
    return reply_to(purge_send(limit, 1));
}

static uint64_t erase_request(const char *user) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_ERASE;
    m.rid = rid_seq++;
    m.req.erase.user = hsq_str_c(user);
    begin();
    feed(HSQ_SOCK_CLIENT, "ops", &m, NULL, 0);
    turn();
    return m.rid;
}

static uint8_t state_of(uint64_t task) {
    captured *r = task_op(HSQ_OP_STATUS, task, NULL);
    HSQ_ASSERT_EQ(r->m.kind, HSQ_KIND_REPLY);
    return r->m.rep.task.task.state;
}

/* HSQ_TEST_JOURNAL=1 (meson's `queue_journal`) runs every test with the
 * store in journal mode (store.h): small files, a checkpoint every
 * millisecond, so both take turns and checkpoints happen mid-test. */
static int journal_mode(void) {
    const char *e = getenv("HSQ_TEST_JOURNAL");
    return e && strcmp(e, "1") == 0;
}

static int store_open(const char *db, uint64_t map) {
    hsq_store_opts o = {journal_mode() ? 1ull << 20 : 0, 1};
    return hsq_store_open_opts(&st, db, map, &o);
}

static void open_all(void) {
    char db[300], blobs[300];
    snprintf(db, sizeof db, "%s/db", dir);
    snprintf(blobs, sizeof blobs, "%s/blobs", dir);
    HSQ_OK(store_open(db, 64ull << 20));
    HSQ_OK(hsq_blob_open(&bl, blobs));
    HSQ_OK(hsq_queue_new(&q, st, bl, &conf, now));
}

static void close_all(void) {
    cap_clear();
    hsq_queue_free(&q);
    hsq_blob_close(&bl);
    hsq_store_close(&st);
}

static void fresh(void) {
    if (q)
        close_all();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s/db %s/blobs", dir, dir);
    HSQ_ASSERT_EQ(system(cmd), 0);
    conf = (hsq_queue_conf){
        .max_queued = 100000,
        .max_queued_per_user = 10000,
        .lease_ms = 1000,
        .heartbeat_ms = 200,
        .max_attempts = 3,
        .backoff_base_ms = 100,
        .backoff_max_ms = 400,
        .inline_max = 1024,
        .max_frame_bytes = 1 << 20,
        .retention_outputs_ms = 30ll * 86400000,
        .retention_uploads_ms = 7ll * 86400000,
        .retention_failed_ms = 86400000,
        .retention_references_ms = 86400000,
        .retention_pending_ms = 7ll * 86400000,
        .retention_tombstone_ms = 365ll * 86400000,
        .sweep_batch = 64,
        .retention_audit_ms = 730ll * 86400000,
        .map_max_bytes = 64ull << 20,
    };
    open_all();
}

/* ---- tests ---- */

static void test_submit_lease_done_result(void) {
    fresh();
    int64_t id = submit("alice", NULL);
    HSQ_ASSERT(id > 0);
    captured *ev = find_op(HSQ_OP_EVENT, HSQ_KIND_REQUEST);
    HSQ_ASSERT(ev != NULL);
    HSQ_ASSERT_STR_EQ(ev->peer, "alice");
    HSQ_ASSERT_EQ(state_of((uint64_t)id), HSQ_STATE_QUEUED);

    hsq_wire_job job;
    uint64_t token;
    HSQ_ASSERT_EQ(lease("w1", 4, &job, &token), 1);
    HSQ_ASSERT_U64_EQ(job.task, (uint64_t)id);
    HSQ_ASSERT_EQ(job.attempt, 1);
    HSQ_ASSERT_EQ(job.n_inputs, 1);
    HSQ_ASSERT(job.inputs[0].frame != HSQ_NO_FRAME); /* small input: inline */
    HSQ_ASSERT_EQ(state_of((uint64_t)id), HSQ_STATE_LEASED);

    /* A wrong token is refused and changes nothing. */
    captured *r = done("w1", (uint64_t)id, token + 99, "alice");
    HSQ_ASSERT_EQ(r->m.kind, HSQ_KIND_ERROR);
    HSQ_ASSERT_EQ(r->m.rep.error.code, HSQ_ESTALE);
    r = done("w1", (uint64_t)id, token, "alice");
    HSQ_ASSERT_EQ(r->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT_EQ(state_of((uint64_t)id), HSQ_STATE_SUCCEEDED);

    r = task_op(HSQ_OP_RESULT, (uint64_t)id, "alice");
    HSQ_ASSERT_EQ(r->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT_EQ(r->nframes, 1);
    HSQ_ASSERT_EQ(r->m.rep.task.task.n_outputs, 1);
    HSQ_ASSERT(r->m.rep.task.task.expires_ms > now);
    /* Another user's view of the task: not found, not forbidden. */
    r = task_op(HSQ_OP_STATUS, (uint64_t)id, "mallory");
    HSQ_ASSERT_EQ(r->m.rep.error.code, HSQ_ENOTFOUND);
    /* A second done for the same lease is stale. */
    r = done("w1", (uint64_t)id, token, "alice");
    HSQ_ASSERT_EQ(r->m.rep.error.code, HSQ_ESTALE);
}

/* Feed m from worker w1 in a turn of its own, which must answer nothing;
 * the checks it handed off. */
static hsq_check *feed_deferred(hsq_wire_msg *m, size_t *n) {
    begin();
    feed(HSQ_SOCK_WORKER, "w1", m, NULL, 0);
    turn();
    HSQ_ASSERT(replied(m->rid) == NULL);
    return hsq_queue_take_checks(q, n);
}

/* Hand checks back in a turn of their own (run first when `run`). */
static void give_back(hsq_check *v, size_t n, int run) {
    if (run)
        hsq_checks_run(bl, v, n);
    begin();
    hsq_queue_checked(q, v, n);
    turn();
}

static int message_has(const captured *r, const char *text) {
    return memmem(r->m.rep.error.message.ptr, r->m.rep.error.message.len, text, strlen(text)) !=
           NULL;
}

/* Checking off the loop (queue.h "checking"): a done is answered in the
 * turn its checks come back in, after it is validated at that moment. */
static void test_checking(void) {
    fresh();
    hsq_queue_set_checking(q, 4);
    hsq_wire_msg m;
    char key[256];
    size_t n;
    uint64_t token;

    /* A good done: no answer until the checks are back, then success. */
    int64_t id = submit("alice", NULL);
    HSQ_ASSERT_U64_EQ(lease1("w1", &token), (uint64_t)id);
    done_msg(&m, (uint64_t)id, token, "alice", key, sizeof key, 1);
    hsq_check *v = feed_deferred(&m, &n);
    HSQ_ASSERT_EQ(n, 1);
    HSQ_ASSERT_EQ(hsq_queue_checks_inflight(q), 1);
    HSQ_ASSERT_EQ(state_of((uint64_t)id), HSQ_STATE_LEASED);
    HSQ_ASSERT_STR_EQ(v[0].outputs[0].key.ptr, key);
    hsq_checks_run(bl, v, n);
    HSQ_ASSERT_EQ(v[0].bad, -1);
    give_back(v, n, 0);
    HSQ_ASSERT_EQ(reply_to(m.rid)->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT_EQ(hsq_queue_checks_inflight(q), 0);
    HSQ_ASSERT_EQ(state_of((uint64_t)id), HSQ_STATE_SUCCEEDED);
    captured *r = task_op(HSQ_OP_RESULT, (uint64_t)id, "alice");
    HSQ_ASSERT_EQ(r->m.rep.task.task.n_outputs, 1);
    HSQ_ASSERT(hsq_str_eq(r->m.rep.task.task.outputs[0].key, key));

    /* An output that is not there: refused then, and the task stays leased;
     * once the file is there the same done passes. */
    id = submit("alice", NULL);
    HSQ_ASSERT_U64_EQ(lease1("w1", &token), (uint64_t)id);
    done_msg(&m, (uint64_t)id, token, "alice", key, sizeof key, 0);
    v = feed_deferred(&m, &n);
    HSQ_ASSERT_EQ(n, 1);
    hsq_checks_run(bl, v, n);
    HSQ_ASSERT_EQ(v[0].bad, 0);
    HSQ_ASSERT_EQ(v[0].rc, -ENOENT);
    give_back(v, n, 0);
    r = reply_to(m.rid);
    HSQ_ASSERT_EQ(r->m.rep.error.code, HSQ_EBADREQ);
    HSQ_ASSERT(message_has(r, "not in the blob store"));
    HSQ_ASSERT_EQ(state_of((uint64_t)id), HSQ_STATE_LEASED);
    done_msg(&m, (uint64_t)id, token, "alice", key, sizeof key, 1);
    v = feed_deferred(&m, &n);
    give_back(v, n, 1);
    HSQ_ASSERT_EQ(reply_to(m.rid)->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT_EQ(state_of((uint64_t)id), HSQ_STATE_SUCCEEDED);

    /* The lease expires while the checks are away: the done is stale, and
     * the task runs again. */
    id = submit("alice", NULL);
    HSQ_ASSERT_U64_EQ(lease1("w1", &token), (uint64_t)id);
    done_msg(&m, (uint64_t)id, token, "alice", key, sizeof key, 1);
    v = feed_deferred(&m, &n);
    hsq_checks_run(bl, v, n);
    HSQ_ASSERT_EQ(v[0].bad, -1);
    now += (int64_t)conf.lease_ms + 1;
    begin();
    turn();
    HSQ_ASSERT(state_of((uint64_t)id) != HSQ_STATE_LEASED);
    give_back(v, n, 0);
    HSQ_ASSERT_EQ(reply_to(m.rid)->m.rep.error.code, HSQ_ESTALE);
    HSQ_ASSERT_EQ(state_of((uint64_t)id), HSQ_STATE_QUEUED);

    /* A wrong token, and a key outside the task's prefix (bob's prefix
     * for alice's task): both refused when their checks are back, though
     * the files are there. */
    id = submit("alice", NULL);
    HSQ_ASSERT_U64_EQ(lease1("w1", &token), (uint64_t)id);
    hsq_wire_msg bad1, bad2;
    char kb1[256], kb2[256];
    done_msg(&bad1, (uint64_t)id, token + 7, "alice", kb1, sizeof kb1, 1);
    done_msg(&bad2, (uint64_t)id, token, "bob", kb2, sizeof kb2, 1);
    begin();
    feed(HSQ_SOCK_WORKER, "w1", &bad1, NULL, 0);
    feed(HSQ_SOCK_WORKER, "w1", &bad2, NULL, 0);
    turn();
    HSQ_ASSERT(replied(bad1.rid) == NULL && replied(bad2.rid) == NULL);
    v = hsq_queue_take_checks(q, &n);
    HSQ_ASSERT_EQ(n, 2);
    hsq_checks_run(bl, v, n);
    HSQ_ASSERT(v[0].bad == -1 && v[1].bad == -1);
    give_back(v, n, 0);
    HSQ_ASSERT_EQ(reply_to(bad1.rid)->m.rep.error.code, HSQ_ESTALE);
    r = reply_to(bad2.rid);
    HSQ_ASSERT_EQ(r->m.rep.error.code, HSQ_EBADREQ);
    HSQ_ASSERT(message_has(r, "outside the task's prefix"));
    HSQ_ASSERT_EQ(state_of((uint64_t)id), HSQ_STATE_LEASED);
    done_msg(&m, (uint64_t)id, token, "alice", key, sizeof key, 1);
    v = feed_deferred(&m, &n);
    give_back(v, n, 1);
    HSQ_ASSERT_EQ(reply_to(m.rid)->m.kind, HSQ_KIND_REPLY);

    /* Past the limit a done is checked inline and answered at once. */
    hsq_queue_set_checking(q, 1);
    now += (int64_t)conf.backoff_max_ms + 1;
    int64_t id2 = submit("bob", NULL);
    hsq_wire_job jobs[2];
    uint64_t tokens[2];
    HSQ_ASSERT_EQ(lease("w1", 2, jobs, tokens), 2);
    hsq_wire_msg m2;
    char key2[256];
    done_msg(&m, jobs[0].task, tokens[0], jobs[0].task == (uint64_t)id2 ? "bob" : "alice", key,
             sizeof key, 1);
    done_msg(&m2, jobs[1].task, tokens[1], jobs[1].task == (uint64_t)id2 ? "bob" : "alice", key2,
             sizeof key2, 1);
    begin();
    feed(HSQ_SOCK_WORKER, "w1", &m, NULL, 0);
    feed(HSQ_SOCK_WORKER, "w1", &m2, NULL, 0);
    turn();
    HSQ_ASSERT(replied(m.rid) == NULL);
    HSQ_ASSERT_EQ(reply_to(m2.rid)->m.kind, HSQ_KIND_REPLY);
    v = hsq_queue_take_checks(q, &n);
    HSQ_ASSERT_EQ(n, 1);
    give_back(v, n, 1);
    HSQ_ASSERT_EQ(reply_to(m.rid)->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT_EQ(state_of(jobs[0].task), HSQ_STATE_SUCCEEDED);
    HSQ_ASSERT_EQ(state_of(jobs[1].task), HSQ_STATE_SUCCEEDED);

    /* A check never taken is freed with the queue. */
    id = submit("alice", NULL);
    HSQ_ASSERT_U64_EQ(lease1("w1", &token), (uint64_t)id);
    done_msg(&m, (uint64_t)id, token, "alice", key, sizeof key, 1);
    begin();
    feed(HSQ_SOCK_WORKER, "w1", &m, NULL, 0);
    turn();
    HSQ_ASSERT(replied(m.rid) == NULL);
    close_all();
    q = NULL;
}

/* ---- staging (queue.h "staging") ---- */

static uint8_t big_in[4096]; /* above the tests' inline_max */

static int blob_exists(const char *user, uint64_t id, const char *name);

/* Feed a submit of big_in in a turn of its own: no answer yet. */
static uint64_t staged_submit(const char *user, const char *key) {
    hsq_wire_msg m;
    submit_msg(&m, user, key, 0);
    m.rid = rid_seq++;
    hsq_bytes f = {big_in, sizeof big_in};
    begin();
    feed(HSQ_SOCK_CLIENT, "web-1", &m, &f, 1);
    turn();
    HSQ_ASSERT(replied(m.rid) == NULL);
    return m.rid;
}

/* Hand stages back in a turn of their own (written first when `run`). */
static void stages_back(hsq_stage *v, size_t n, int run) {
    if (run)
        hsq_stages_run(bl, v, n);
    begin();
    hsq_queue_staged(q, v, n);
    turn();
}

static int file_exists(const char *key) {
    char path[700];
    struct stat sb;
    snprintf(path, sizeof path, "%s/blobs/%s", dir, key);
    return stat(path, &sb) == 0;
}

/* Names of the staged files of v[0..n), input 0 each, into names. */
static void staged_names(const hsq_stage *v, size_t n, char names[][HSQ_BLOB_STAGED_MAX]) {
    for (size_t i = 0; i < n; i++) {
        HSQ_ASSERT_EQ(v[i].rc, 0);
        HSQ_ASSERT(v[i].staged[0][0] != '\0');
        HSQ_ASSERT(file_exists(v[i].staged[0]));
        memcpy(names[i], v[i].staged[0], HSQ_BLOB_STAGED_MAX);
    }
}

static void test_staging(void) {
    fresh();
    memset(big_in, 7, sizeof big_in);
    hsq_queue_set_staging(q, 1 << 20);
    char names[2][HSQ_BLOB_STAGED_MAX];
    size_t n;
    uint64_t bytes;

    /* Staged, written, recorded: the input under its key, byte for byte,
     * and the staged file gone. Nothing is queued before. */
    uint64_t rid = staged_submit("sam", NULL);
    HSQ_ASSERT_EQ(hsq_queue_stages_inflight(q, &bytes), 1);
    HSQ_ASSERT(bytes > sizeof big_in);
    hsq_stage *v = hsq_queue_take_stages(q, &n);
    HSQ_ASSERT_EQ(n, 1);
    HSQ_ASSERT_EQ(lease1("w1", NULL), 0);
    hsq_stages_run(bl, v, n);
    staged_names(v, n, names);
    stages_back(v, n, 0);
    captured *r = reply_to(rid);
    HSQ_ASSERT_EQ(r->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT_EQ(r->m.rep.submit.created, 1);
    uint64_t id = r->m.rep.submit.task;
    HSQ_ASSERT_EQ(hsq_queue_stages_inflight(q, &bytes), 0);
    HSQ_ASSERT_U64_EQ(bytes, 0);
    HSQ_ASSERT(!file_exists(names[0]));
    char prefix[HSQ_BLOB_PREFIX_LEN + 1], key[300];
    hsq_blob_user_prefix(bl, "sam", 3, prefix);
    snprintf(key, sizeof key, "%s%llu/in-0", prefix, (unsigned long long)id);
    uint8_t *data;
    size_t len;
    HSQ_OK(hsq_blob_get(bl, key, 1 << 20, &data, &len));
    HSQ_ASSERT(len == sizeof big_in && memcmp(data, big_in, len) == 0);
    free(data);
    HSQ_ASSERT_EQ(state_of(id), HSQ_STATE_QUEUED);

    /* Two submits with one idempotency key, both staged: one task, the
     * second answered with it (created 0), both staged files gone. */
    uint64_t r1 = staged_submit("sam", "k1"), r2 = staged_submit("sam", "k1");
    v = hsq_queue_take_stages(q, &n);
    HSQ_ASSERT_EQ(n, 2);
    hsq_stages_run(bl, v, n);
    staged_names(v, n, names);
    stages_back(v, n, 0);
    HSQ_ASSERT_EQ(reply_to(r1)->m.rep.submit.created, 1);
    HSQ_ASSERT_EQ(reply_to(r2)->m.rep.submit.created, 0);
    HSQ_ASSERT_U64_EQ(reply_to(r2)->m.rep.submit.task, reply_to(r1)->m.rep.submit.task);
    HSQ_ASSERT(!file_exists(names[0]) && !file_exists(names[1]));

    /* A failed write: refused with the disk's error, nothing recorded. */
    uint64_t before = hsq_queue_stages_inflight(q, NULL);
    rid = staged_submit("sam", NULL);
    v = hsq_queue_take_stages(q, &n);
    v[0].rc = -ENOSPC;
    stages_back(v, n, 0);
    HSQ_ASSERT_EQ(reply_to(rid)->m.rep.error.code, HSQ_EDISKFULL);
    HSQ_ASSERT_U64_EQ(hsq_queue_stages_inflight(q, NULL), before);

    /* Checked again when back: the user reached its limit meanwhile. */
    conf.max_queued_per_user = 3;
    close_all();
    open_all();
    hsq_queue_set_staging(q, 1 << 20);
    HSQ_ASSERT(submit("tia", NULL) > 0);
    HSQ_ASSERT(submit("tia", NULL) > 0);
    rid = staged_submit("tia", NULL);
    HSQ_ASSERT(submit("tia", NULL) > 0); /* inline input: answered at once */
    v = hsq_queue_take_stages(q, &n);
    HSQ_ASSERT_EQ(n, 1);
    hsq_stages_run(bl, v, n);
    staged_names(v, n, names);
    stages_back(v, n, 0);
    HSQ_ASSERT_EQ(reply_to(rid)->m.rep.error.code, HSQ_EQUEUEFULL);
    HSQ_ASSERT(!file_exists(names[0]));

    /* The user erased meanwhile: the erasure took the staged file with the
     * user's directory, so nothing is recorded and nothing is left. */
    rid = staged_submit("uma", NULL);
    v = hsq_queue_take_stages(q, &n);
    hsq_stages_run(bl, v, n);
    staged_names(v, n, names);
    uint64_t erid = erase_request("uma");
    for (int i = 0; i < 10 && !replied(erid); i++) {
        begin();
        turn();
    }
    reply_to(erid);
    HSQ_ASSERT(!file_exists(names[0]));
    stages_back(v, n, 0);
    HSQ_ASSERT_EQ(reply_to(rid)->m.kind, HSQ_KIND_ERROR);
    hsq_blob_user_prefix(bl, "uma", 3, prefix);
    prefix[HSQ_BLOB_PREFIX_LEN - 1] = '\0';
    HSQ_ASSERT(!file_exists(prefix));

    /* A drain refuses new submits, not one staged before it. */
    rid = staged_submit("vic", NULL);
    v = hsq_queue_take_stages(q, &n);
    hsq_queue_drain(q);
    stages_back(v, n, 1);
    HSQ_ASSERT_EQ(reply_to(rid)->m.rep.submit.created, 1);
    HSQ_ASSERT_EQ(submit("vic", NULL), HSQ_EUNAVAIL);

    /* Past the byte limit the input is written in the turn. */
    fresh();
    hsq_queue_set_staging(q, sizeof big_in); /* the meta frame does not fit */
    hsq_wire_msg m;
    submit_msg(&m, "wes", NULL, 0);
    hsq_bytes f = {big_in, sizeof big_in};
    r = ask("web-1", &m, &f, 1);
    HSQ_ASSERT_EQ(r->m.rep.submit.created, 1);
    HSQ_ASSERT(blob_exists("wes", r->m.rep.submit.task, "in-0"));
    v = hsq_queue_take_stages(q, &n);
    HSQ_ASSERT(n == 0 && v == NULL);

    /* A stage never taken is freed with the queue. */
    hsq_queue_set_staging(q, 1 << 20);
    staged_submit("wes", NULL);
    close_all();
    q = NULL;
}

static void test_idempotent_submit(void) {
    fresh();
    int64_t a = submit("bob", "order-1");
    int64_t b = submit("bob", "order-1");
    HSQ_ASSERT(a > 0);
    HSQ_ASSERT_EQ(a, b);
    captured *r = cap; /* last turn: the idempotent reply */
    (void)r;
    int64_t c = submit("carol", "order-1"); /* keys are per user */
    HSQ_ASSERT(c > 0 && c != a);
}

static void test_lease_expiry_retry_dead_letter(void) {
    fresh();
    int64_t id = submit("dave", NULL);
    uint64_t t1, t2, t3;
    HSQ_ASSERT_U64_EQ(lease1("w1", &t1), (uint64_t)id);
    now += 1001; /* past the lease */
    begin();
    turn();
    HSQ_ASSERT_EQ(state_of((uint64_t)id), HSQ_STATE_QUEUED);
    HSQ_ASSERT_EQ(lease1("w2", NULL), 0); /* still in backoff */
    now += 100;
    HSQ_ASSERT_U64_EQ(lease1("w2", &t2), (uint64_t)id);
    HSQ_ASSERT(t2 != t1);
    /* The first worker comes back late: refused. */
    captured *r = done("w1", (uint64_t)id, t1, "dave");
    HSQ_ASSERT_EQ(r->m.rep.error.code, HSQ_ESTALE);
    now += 1001;
    begin();
    turn();
    now += 200;
    HSQ_ASSERT_U64_EQ(lease1("w3", &t3), (uint64_t)id);
    now += 1001;
    begin();
    turn();
    /* Third attempt expired: dead letter with the reason. */
    r = task_op(HSQ_OP_STATUS, (uint64_t)id, NULL);
    HSQ_ASSERT_EQ(r->m.rep.task.task.state, HSQ_STATE_FAILED);
    HSQ_ASSERT_EQ(r->m.rep.task.task.err_code, HSQ_ELOST);
    HSQ_ASSERT_EQ(r->m.rep.task.task.attempts, 3);
    hsq_wire_stats s;
    hsq_queue_stats(q, &s);
    HSQ_ASSERT_EQ(s.dead, 1);
    /* An operator requeues it: it runs again from attempt 1. */
    r = task_op(HSQ_OP_REQUEUE, (uint64_t)id, NULL);
    HSQ_ASSERT_EQ(r->m.rep.task.task.state, HSQ_STATE_QUEUED);
    uint64_t t4;
    hsq_wire_job job;
    HSQ_ASSERT_EQ(lease("w4", 1, &job, &t4), 1);
    HSQ_ASSERT_EQ(job.attempt, 1);
    HSQ_ASSERT_EQ(done("w4", (uint64_t)id, t4, "dave")->m.kind, HSQ_KIND_REPLY);
}

static void test_heartbeat_keeps_lease(void) {
    fresh();
    int64_t id = submit("erin", NULL);
    uint64_t tok;
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), (uint64_t)id);
    for (int i = 0; i < 5; i++) {
        now += 600;
        hsq_wire_msg m;
        memset(&m, 0, sizeof m);
        m.op = HSQ_OP_HEARTBEAT;
        m.rid = rid_seq++;
        m.req.heartbeat.n = 2;
        m.req.heartbeat.leases[0].task = (uint64_t)id;
        m.req.heartbeat.leases[0].token = tok;
        m.req.heartbeat.leases[1].task = 999999;
        m.req.heartbeat.leases[1].token = 1;
        begin();
        feed(HSQ_SOCK_WORKER, "w1", &m, NULL, 0);
        turn();
        captured *r = reply_to(m.rid);
        HSQ_ASSERT_EQ(r->m.rep.heartbeat.n_lost, 1);
        HSQ_ASSERT_U64_EQ(r->m.rep.heartbeat.lost[0], 999999);
    }
    HSQ_ASSERT_EQ(state_of((uint64_t)id), HSQ_STATE_LEASED);
    HSQ_ASSERT_EQ(done("w1", (uint64_t)id, tok, "erin")->m.kind, HSQ_KIND_REPLY);
}

static void test_fail_retryable_and_permanent(void) {
    fresh();
    int64_t a = submit("fay", NULL);
    uint64_t tok;
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), (uint64_t)a);
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_FAIL;
    m.rid = rid_seq++;
    m.req.fail.task = (uint64_t)a;
    m.req.fail.token = tok;
    m.req.fail.code = HSQ_EIMGCORRUPT;
    m.req.fail.message = HSQ_STR_LIT("portrait 'me.jpg': image is corrupt or truncated");
    m.req.fail.retryable = 0;
    begin();
    feed(HSQ_SOCK_WORKER, "w1", &m, NULL, 0);
    turn();
    HSQ_ASSERT_EQ(reply_to(m.rid)->m.kind, HSQ_KIND_REPLY);
    captured *r = task_op(HSQ_OP_STATUS, (uint64_t)a, NULL);
    HSQ_ASSERT_EQ(r->m.rep.task.task.state, HSQ_STATE_FAILED);
    HSQ_ASSERT_EQ(r->m.rep.task.task.err_code, HSQ_EIMGCORRUPT);
    HSQ_ASSERT_VIEW_EQ(r->m.rep.task.task.err_msg,
                       "portrait 'me.jpg': image is corrupt or truncated");

    int64_t b = submit("fay", NULL);
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), (uint64_t)b);
    m.rid = rid_seq++;
    m.req.fail.task = (uint64_t)b;
    m.req.fail.token = tok;
    m.req.fail.code = HSQ_ERETRYABLE;
    m.req.fail.retryable = 1;
    begin();
    feed(HSQ_SOCK_WORKER, "w1", &m, NULL, 0);
    turn();
    HSQ_ASSERT_EQ(state_of((uint64_t)b), HSQ_STATE_QUEUED);
}

static void test_cancel(void) {
    fresh();
    int64_t a = submit("gus", NULL);
    int64_t b = submit("gus", NULL);
    captured *r = task_op(HSQ_OP_CANCEL, (uint64_t)a, NULL);
    HSQ_ASSERT_EQ(r->m.rep.task.task.state, HSQ_STATE_CANCELLED);
    uint64_t tok;
    HSQ_ASSERT_U64_EQ(lease1("w9", &tok), (uint64_t)b); /* a is gone from the queue */
    r = task_op(HSQ_OP_CANCEL, (uint64_t)b, NULL);
    HSQ_ASSERT_EQ(r->m.rep.task.task.state, HSQ_STATE_CANCELLED);
    captured *ab = find_op(HSQ_OP_ABORT, HSQ_KIND_REQUEST);
    HSQ_ASSERT(ab != NULL);
    HSQ_ASSERT_STR_EQ(ab->peer, "w9");
    HSQ_ASSERT_U64_EQ(ab->m.req.abort.task, (uint64_t)b);
    /* The worker's late done is refused; cancelling twice is a conflict. */
    HSQ_ASSERT_EQ(done("w9", (uint64_t)b, tok, "gus")->m.rep.error.code, HSQ_ESTALE);
    HSQ_ASSERT_EQ(task_op(HSQ_OP_CANCEL, (uint64_t)b, NULL)->m.rep.error.code, HSQ_ECONFLICT);
    HSQ_ASSERT_EQ(task_op(HSQ_OP_CANCEL, 4242, NULL)->m.rep.error.code, HSQ_ENOTFOUND);
}

static uint64_t finished_task(const char *user);

/* A done for a task that is not there: the worker's files for it go (no
 * record will ever point at them), and nothing else does. */
static void test_late_result_discarded(void) {
    fresh();
    /* The user was erased while the task ran. */
    uint64_t id = (uint64_t)submit("lu", NULL), tok;
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), id);
    uint64_t erid = erase_request("lu");
    for (int i = 0; i < 8 && !replied(erid); i++) {
        begin();
        turn();
    }
    HSQ_ASSERT_EQ(reply_to(erid)->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT_EQ(done("w1", id, tok, "lu")->m.rep.error.code, HSQ_ESTALE);
    HSQ_ASSERT(!blob_exists("lu", id, "out-0.jpg"));
    char path[400];
    char prefix[HSQ_BLOB_PREFIX_LEN + 1];
    hsq_blob_user_prefix(bl, "lu", 2, prefix);
    snprintf(path, sizeof path, "%s/blobs/%s%llu", dir, prefix, (unsigned long long)id);
    HSQ_ASSERT(access(path, F_OK) != 0);

    /* A task id that was never committed. */
    HSQ_ASSERT_EQ(done("w1", 999999, 7, "lu")->m.rep.error.code, HSQ_ESTALE);
    HSQ_ASSERT(!blob_exists("lu", 999999, "out-0.jpg"));

    /* A stale token on a task that is there: its files stay. */
    uint64_t a = finished_task("kai");
    HSQ_ASSERT_EQ(done("w1", a, 12345, "kai")->m.rep.error.code, HSQ_ESTALE);
    HSQ_ASSERT(blob_exists("kai", a, "out-0.jpg"));
    /* A missing task whose done names another task's directory: kept. */
    char key[256];
    hsq_wire_msg m;
    done_msg(&m, a, 1, "kai", key, sizeof key, 0);
    m.req.done.task = 888888;
    begin();
    feed(HSQ_SOCK_WORKER, "w1", &m, NULL, 0);
    turn();
    HSQ_ASSERT_EQ(reply_to(m.rid)->m.rep.error.code, HSQ_ESTALE);
    HSQ_ASSERT(blob_exists("kai", a, "out-0.jpg"));
    HSQ_ASSERT_EQ(task_op(HSQ_OP_RESULT, a, "kai")->m.kind, HSQ_KIND_REPLY);
}

static void test_limits(void) {
    fresh();
    conf.max_queued_per_user = 3;
    conf.max_queued = 5;
    close_all();
    open_all();
    for (int i = 0; i < 3; i++)
        HSQ_ASSERT(submit("hal", NULL) > 0);
    HSQ_ASSERT_EQ(submit("hal", NULL), HSQ_EQUEUEFULL);
    HSQ_ASSERT(submit("ivy", NULL) > 0);
    HSQ_ASSERT(submit("ivy", NULL) > 0);
    HSQ_ASSERT_EQ(submit("joe", NULL), HSQ_EQUEUEFULL); /* global */
    /* Finishing one frees a slot. */
    uint64_t tok;
    uint64_t id = lease1("w1", &tok);
    HSQ_ASSERT(id > 0);
    const char *owner = id <= 3 ? "hal" : "ivy";
    HSQ_ASSERT_EQ(done("w1", id, tok, owner)->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT(submit("joe", NULL) > 0);
}

static void test_fairness_and_priority(void) {
    fresh();
    for (int i = 0; i < 500; i++)
        HSQ_ASSERT(submit("userA", NULL) > 0);
    int64_t b_ids[5];
    for (int i = 0; i < 5; i++)
        b_ids[i] = submit("userB", NULL);
    /* Lease one at a time: B's five come within the first ten. */
    int b_seen = 0, a_seen = 0;
    for (int i = 0; i < 10; i++) {
        uint64_t id = lease1("w1", NULL);
        int is_b = 0;
        for (int j = 0; j < 5; j++)
            is_b |= (uint64_t)b_ids[j] == id;
        b_seen += is_b;
        a_seen += !is_b;
    }
    HSQ_ASSERT_EQ(b_seen, 5);
    HSQ_ASSERT_EQ(a_seen, 5);
    /* A high-priority task overtakes the remaining normal ones. */
    int64_t h = submit_prio("userC", NULL, HSQ_PRIO_HIGH);
    HSQ_ASSERT_U64_EQ(lease1("w1", NULL), (uint64_t)h);
    /* FIFO within a user. */
    uint64_t prev = lease1("w1", NULL), next = lease1("w1", NULL);
    HSQ_ASSERT(next > prev);
}

static void test_list_pages(void) {
    fresh();
    int64_t ids[25];
    for (int i = 0; i < 25; i++)
        ids[i] = submit("kim", NULL);
    submit("other", NULL);
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_LIST;
    m.req.list.user = HSQ_STR_LIT("kim");
    m.req.list.limit = 10;
    captured *r = ask("web", &m, NULL, 0);
    HSQ_ASSERT_EQ(r->m.rep.list.n, 10);
    HSQ_ASSERT_U64_EQ(r->m.rep.list.tasks[0].id, (uint64_t)ids[24]); /* newest first */
    uint64_t next = r->m.rep.list.next;
    HSQ_ASSERT(next != 0);
    int total = 10;
    while (next) {
        m.req.list.before = next;
        r = ask("web", &m, NULL, 0);
        for (uint32_t i = 0; i < r->m.rep.list.n; i++)
            HSQ_ASSERT_VIEW_EQ(r->m.rep.list.tasks[i].user, "kim");
        total += (int)r->m.rep.list.n;
        next = r->m.rep.list.next;
    }
    HSQ_ASSERT_EQ(total, 25);
}

/* A turn keeps the user records it reads and writes each changed one once
 * before its commit. With more users in one turn than it keeps, records are
 * written back when another user takes their slot and read again later:
 * the per-user limit still sees every submit of the turn, and the records
 * reach the store. */
static void test_user_records(void) {
    fresh();
    close_all();
    conf.max_queued_per_user = 1;
    open_all();
    enum { USERS = 1100 };
    static uint64_t rids[2][USERS];
    hsq_bytes f = {tiny, sizeof tiny};
    char user[32];
    begin();
    for (int round = 0; round < 2; round++) {
        for (int u = 0; u < USERS; u++) {
            hsq_wire_msg m;
            snprintf(user, sizeof user, "rec-%d", u);
            submit_msg(&m, user, NULL, HSQ_PRIO_NORMAL);
            feed(HSQ_SOCK_CLIENT, "web", &m, &f, 1);
            rids[round][u] = m.rid;
        }
    }
    HSQ_OK(turn());
    for (int u = 0; u < USERS; u++) {
        HSQ_ASSERT_EQ(reply_to(rids[0][u])->m.kind, HSQ_KIND_REPLY);
        HSQ_ASSERT_EQ(reply_to(rids[1][u])->m.rep.error.code, HSQ_EQUEUEFULL);
    }
    begin();
    for (int u = 0; u < USERS; u++) {
        hsq_wire_msg m;
        memset(&m, 0, sizeof m);
        m.op = HSQ_OP_LIST;
        snprintf(user, sizeof user, "rec-%d", u);
        m.req.list.user = hsq_str_c(user);
        m.req.list.limit = 10;
        feed(HSQ_SOCK_CLIENT, "web", &m, NULL, 0);
        rids[0][u] = m.rid;
    }
    HSQ_OK(turn());
    for (int u = 0; u < USERS; u++)
        HSQ_ASSERT_EQ(reply_to(rids[0][u])->m.rep.list.n, 1);
    close_all();
    conf.max_queued_per_user = 10000;
    open_all();
}

static void test_wait(void) {
    fresh();
    int64_t id = submit("lee", NULL);
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_WAIT;
    m.rid = rid_seq++;
    m.req.wait.task = (uint64_t)id;
    m.req.wait.timeout_ms = 5000;
    uint64_t wait_rid = m.rid;
    begin();
    feed(HSQ_SOCK_CLIENT, "web-w", &m, NULL, 0);
    turn();
    for (size_t i = 0; i < ncap; i++)
        HSQ_ASSERT(cap[i].m.rid != wait_rid); /* parked */
    uint64_t tok;
    lease1("w1", &tok);
    captured *r = done("w1", (uint64_t)id, tok, "lee");
    (void)r;
    r = reply_to(wait_rid);
    HSQ_ASSERT_EQ(r->m.rep.task.task.state, HSQ_STATE_SUCCEEDED);
    HSQ_ASSERT_EQ(r->m.rep.task.timed_out, 0);
    /* A wait that times out answers with the current state. */
    int64_t id2 = submit("lee", NULL);
    m.rid = rid_seq++;
    m.req.wait.task = (uint64_t)id2;
    m.req.wait.timeout_ms = 100;
    wait_rid = m.rid;
    begin();
    feed(HSQ_SOCK_CLIENT, "web-w", &m, NULL, 0);
    turn();
    now += 150;
    begin();
    turn();
    r = reply_to(wait_rid);
    HSQ_ASSERT_EQ(r->m.rep.task.timed_out, 1);
    HSQ_ASSERT_EQ(r->m.rep.task.task.state, HSQ_STATE_QUEUED);
}

/* Many parked waits (queue.c keeps them in a heap by deadline): each is
 * answered exactly once, on time (at its deadline, not before), or at once
 * when its task changes, whatever the order they were parked in. */
static void test_wait_many(void) {
    fresh();
    enum { N = 1000 };
    int64_t a = submit("lee", NULL), b = submit("lee", NULL);
    static uint64_t rids[N];
    static int64_t deadline[N];
    static int answered[N];
    uint32_t seed = 12345;
    begin();
    for (int i = 0; i < N; i++) {
        seed = seed * 1103515245u + 12345u;
        hsq_wire_msg m;
        memset(&m, 0, sizeof m);
        m.op = HSQ_OP_WAIT;
        m.req.wait.task = (uint64_t)(i % 2 == 0 ? b : a);
        if (i % 2 == 0) /* half the waits on b, for any change: its lease answers them */
            m.req.wait.since = HSQ_STATE_QUEUED;
        m.req.wait.timeout_ms = 1 + (seed >> 8) % 1000;
        feed(HSQ_SOCK_CLIENT, "web-w", &m, NULL, 0);
        rids[i] = m.rid;
        deadline[i] = now + (int64_t)m.req.wait.timeout_ms;
        answered[i] = 0;
    }
    turn();
    HSQ_ASSERT_EQ(ncap, 0);
    int left = N, by_change = 0;
    for (int step = 0; left > 0 && step < 400; step++) {
        if (step == 100) {
            /* b is leased: its waits (since queued) are answered now. */
            hsq_wire_job job;
            uint64_t tok;
            HSQ_ASSERT_EQ(lease("w1", 1, &job, &tok), 1);
            HSQ_ASSERT_U64_EQ(job.task, (uint64_t)a); /* the older one; nothing due */
            HSQ_ASSERT_EQ(lease("w1", 1, &job, &tok), 1);
        } else {
            now += 5;
            begin();
            turn();
        }
        for (size_t c = 0; c < ncap; c++) {
            if (cap[c].m.op != HSQ_OP_WAIT || cap[c].m.kind != HSQ_KIND_REPLY)
                continue;
            int i = 0;
            while (i < N && rids[i] != cap[c].m.rid)
                i++;
            HSQ_ASSERT(i < N);
            HSQ_ASSERT_EQ(answered[i], 0);
            answered[i] = 1;
            left--;
            if (cap[c].m.rep.task.timed_out) {
                HSQ_ASSERT(deadline[i] <= now);
            } else { /* the lease of b, before the wait's deadline */
                HSQ_ASSERT(i % 2 == 0 && step == 100);
                HSQ_ASSERT(deadline[i] > now);
                by_change++;
            }
        }
        for (int i = 0; i < N; i++)
            if (!answered[i])
                HSQ_ASSERT(deadline[i] > now);
    }
    HSQ_ASSERT_EQ(left, 0);
    HSQ_ASSERT(by_change > N / 8);
}

/* max_waits bounds the parked waits: one more is refused (unavailable),
 * and once one is answered another parks again. */
static void test_wait_limit(void) {
    fresh();
    close_all();
    conf.max_waits = 3;
    open_all();
    int64_t id = submit("lee", NULL);
    uint64_t rids[4];
    begin();
    for (int i = 0; i < 4; i++) {
        hsq_wire_msg m;
        memset(&m, 0, sizeof m);
        m.op = HSQ_OP_WAIT;
        m.req.wait.task = (uint64_t)id;
        m.req.wait.timeout_ms = (uint32_t)(100 * (i + 1));
        feed(HSQ_SOCK_CLIENT, "web-w", &m, NULL, 0);
        rids[i] = m.rid;
    }
    turn();
    for (int i = 0; i < 3; i++)
        HSQ_ASSERT(replied(rids[i]) == NULL);
    captured *r = reply_to(rids[3]);
    HSQ_ASSERT_EQ(r->m.rep.error.code, HSQ_EUNAVAIL);
    HSQ_ASSERT(message_has(r, "max_waits"));
    now += 150; /* the first times out */
    begin();
    turn();
    HSQ_ASSERT_EQ(reply_to(rids[0])->m.rep.task.timed_out, 1);
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_WAIT;
    m.rid = rid_seq++;
    m.req.wait.task = (uint64_t)id;
    m.req.wait.timeout_ms = 1000;
    begin();
    feed(HSQ_SOCK_CLIENT, "web-w", &m, NULL, 0);
    turn();
    HSQ_ASSERT(replied(m.rid) == NULL); /* parked again */
    close_all();
    conf.max_waits = 0;
    open_all();
}

static void test_bad_input(void) {
    fresh();
    begin();
    static const uint8_t junk[] = {0xc1, 0xff, 0x00, 0x13};
    hsq_bytes f = {junk, sizeof junk};
    hsq_queue_handle(q, HSQ_SOCK_CLIENT, HSQ_ROLE_ANY, NULL, (const uint8_t *)"p", 1, &f, 1);
    /* a client op on the worker socket */
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_STATS;
    m.rid = 77;
    feed(HSQ_SOCK_WORKER, "w", &m, NULL, 0);
    /* a worker op on the client socket */
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_LEASE;
    m.rid = 78;
    m.req.lease.max = 1;
    feed(HSQ_SOCK_CLIENT, "c", &m, NULL, 0);
    /* no frames at all */
    hsq_queue_handle(q, HSQ_SOCK_CLIENT, HSQ_ROLE_ANY, NULL, (const uint8_t *)"p", 1, NULL, 0);
    turn();
    HSQ_ASSERT_EQ(ncap, 4);
    HSQ_ASSERT_EQ(cap[0].m.kind, HSQ_KIND_ERROR);
    HSQ_ASSERT_EQ(cap[0].m.rep.error.code, HSQ_EBADREQ);
    HSQ_ASSERT_EQ(reply_to(77)->m.rep.error.code, HSQ_EFORBIDDEN);
    HSQ_ASSERT_EQ(reply_to(78)->m.rep.error.code, HSQ_EFORBIDDEN);
    HSQ_ASSERT_EQ(cap[3].m.rep.error.code, HSQ_EBADREQ);
    /* An oversized frame is refused with a clear error; the next is fine. */
    conf.max_frame_bytes = 16;
    close_all();
    open_all();
    HSQ_ASSERT_EQ(submit("max", NULL), HSQ_ETOOLARGE);
    conf.max_frame_bytes = 1 << 20;
    close_all();
    open_all();
    HSQ_ASSERT(submit("max", NULL) > 0);
}

static void test_restart_keeps_state(void) {
    fresh();
    int64_t a = submit("nia", "k1");
    int64_t b = submit("nia", NULL);
    uint64_t tok;
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), (uint64_t)a);
    close_all();
    open_all();
    hsq_wire_stats s;
    hsq_queue_stats(q, &s);
    HSQ_ASSERT_EQ(s.queued, 1);
    HSQ_ASSERT_EQ(s.leased, 1);
    HSQ_ASSERT_EQ(submit("nia", "k1"), a); /* idempotency survives */
    HSQ_ASSERT_U64_EQ(lease1("w2", NULL), (uint64_t)b);
    /* The lease held before the restart is still valid until it expires. */
    HSQ_ASSERT_EQ(done("w1", (uint64_t)a, tok, "nia")->m.kind, HSQ_KIND_REPLY);
    int64_t c = submit("nia", NULL);
    HSQ_ASSERT(c > b); /* ids never repeat */
}

/* A fresh store whose map starts at 1 MiB (8 MiB at most), for inputs of
 * up to 64 KiB inline: a few dozen submits fill it. */
static void open_small_map(void) {
    fresh();
    close_all();
    char db[300], blobs[300];
    snprintf(db, sizeof db, "%s/db", dir);
    snprintf(blobs, sizeof blobs, "%s/blobs", dir);
    HSQ_OK(store_open(db, 1ull << 20));
    HSQ_OK(hsq_blob_open(&bl, blobs));
    conf.inline_max = 64 * 1024;
    conf.map_max_bytes = 8ull << 20;
    HSQ_OK(hsq_queue_new(&q, st, bl, &conf, now));
}

/* A map too small for the work: the turn fails, nothing in it is acked,
 * earlier acks survive, and the map grows so the next try succeeds. */
static void test_map_full(void) {
    open_small_map();
    static uint8_t big[60 * 1024];
    memset(big, 7, sizeof big);
    int acked = 0, full = 0;
    for (int i = 0; i < 400 && full < 3; i++) {
        hsq_wire_msg m;
        memset(&m, 0, sizeof m);
        m.op = HSQ_OP_SUBMIT;
        m.rid = rid_seq++;
        m.req.submit.user = HSQ_STR_LIT("oli");
        m.req.submit.n_inputs = 1;
        m.req.submit.inputs[0].kind = HSQ_STR_LIT("portrait");
        m.req.submit.n_outputs = 1;
        m.req.submit.outputs[0].width = 8;
        m.req.submit.outputs[0].height = 8;
        m.req.submit.outputs[0].format = HSQ_FMT_PNG;
        hsq_bytes f = {big, sizeof big};
        begin();
        feed(HSQ_SOCK_CLIENT, "web", &m, &f, 1);
        int rc = turn();
        captured *r = reply_to(m.rid);
        if (r->m.kind == HSQ_KIND_REPLY) {
            acked++;
        } else {
            HSQ_ASSERT_EQ(r->m.rep.error.code, HSQ_EDISKFULL);
            HSQ_ASSERT(rc != 0);
            full++;
        }
    }
    HSQ_ASSERT(full > 0);
    HSQ_ASSERT(acked > 16); /* the map grew at least once */
    close_all();
    open_all();
    hsq_wire_stats s;
    hsq_queue_stats(q, &s);
    HSQ_ASSERT_EQ(s.queued, acked);
}

/* A turn that fails after it gave a submit its id: that id is never used
 * again (a lease may have left with it before a commit that failed, and
 * fail_turn keeps ids and tokens where they were). Each turn here has a
 * small submit, which takes an id, and then one the full map refuses. */
static void test_failed_turn_ids(void) {
    open_small_map();
    static uint8_t big[60 * 1024];
    memset(big, 9, sizeof big);
    uint64_t last = 0;
    int failed = 0;
    for (int i = 0; i < 400 && failed < 3; i++) {
        hsq_wire_msg small, large;
        submit_msg(&small, "pia", NULL, HSQ_PRIO_NORMAL);
        submit_msg(&large, "pia", NULL, HSQ_PRIO_NORMAL);
        small.rid = rid_seq++;
        large.rid = rid_seq++;
        hsq_bytes fs = {tiny, sizeof tiny}, fl = {big, sizeof big};
        begin();
        feed(HSQ_SOCK_CLIENT, "web", &small, &fs, 1);
        feed(HSQ_SOCK_CLIENT, "web", &large, &fl, 1);
        int rc = turn();
        captured *rs = reply_to(small.rid), *rl = reply_to(large.rid);
        if (rc == 0) {
            HSQ_ASSERT_EQ(rs->m.kind, HSQ_KIND_REPLY);
            HSQ_ASSERT(rs->m.rep.submit.task > last);
            last = rl->m.rep.submit.task;
            continue;
        }
        HSQ_ASSERT_EQ(rs->m.rep.error.code, HSQ_EDISKFULL);
        HSQ_ASSERT_EQ(rl->m.rep.error.code, HSQ_EDISKFULL);
        failed++;
        /* The small one had taken last + 1: the next task gets more. (In
         * journal mode the open batch and the checkpoint's pinned snapshot
         * hold pages too, so the map may be full before the small one took
         * its id: then no id handed out comes back, which is the rule.) */
        int64_t id = submit("pia", NULL);
        HSQ_ASSERT(id > 0);
        HSQ_ASSERT((uint64_t)id > last + (journal_mode() ? 0 : 1));
        last = (uint64_t)id;
    }
    HSQ_ASSERT(failed > 0);
}

/* Jobs with long prompts: one lease reply stays under the meta limit, and
 * whatever did not fit is leased by the next request. */
static void test_lease_size_budget(void) {
    fresh();
    static char prompt[HSQ_MAX_PROMPT_LEN + 1];
    memset(prompt, 'p', HSQ_MAX_PROMPT_LEN);
    for (int i = 0; i < 40; i++) {
        hsq_wire_msg m;
        memset(&m, 0, sizeof m);
        m.op = HSQ_OP_SUBMIT;
        m.req.submit.user = HSQ_STR_LIT("rex");
        m.req.submit.prio = HSQ_PRIO_NORMAL;
        m.req.submit.prompt = hsq_str_c(prompt);
        m.req.submit.n_inputs = 1;
        m.req.submit.inputs[0].kind = HSQ_STR_LIT("portrait");
        m.req.submit.n_outputs = 1;
        m.req.submit.outputs[0].width = 8;
        m.req.submit.outputs[0].height = 8;
        m.req.submit.outputs[0].format = HSQ_FMT_PNG;
        hsq_bytes f = {tiny, sizeof tiny};
        HSQ_ASSERT_EQ(ask("web", &m, &f, 1)->m.kind, HSQ_KIND_REPLY);
    }
    uint32_t total = 0, first = lease("w1", 64, NULL, NULL);
    HSQ_ASSERT(first > 0 && first < 40);
    total += first;
    for (int i = 0; i < 10 && total < 40; i++)
        total += lease("w1", 64, NULL, NULL);
    HSQ_ASSERT_EQ(total, 40);
}

/* With authenticated peers, each operation checks the role. */
static void test_roles(void) {
    fresh();
    feed_role = HSQ_ROLE_WORKER;
    HSQ_ASSERT_EQ(submit("sam", NULL), HSQ_EFORBIDDEN); /* a worker key cannot submit */
    feed_role = HSQ_ROLE_WEB;
    int64_t id = submit("sam", NULL);
    HSQ_ASSERT(id > 0);
    HSQ_ASSERT_EQ(task_op(HSQ_OP_REQUEUE, (uint64_t)id, NULL)->m.rep.error.code,
                  HSQ_EFORBIDDEN); /* a web key cannot requeue */
    hsq_wire_msg m;                /* a web key cannot lease */
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_LEASE;
    m.rid = rid_seq++;
    m.req.lease.max = 1;
    begin();
    feed(HSQ_SOCK_WORKER, "w1", &m, NULL, 0);
    turn();
    HSQ_ASSERT_EQ(reply_to(m.rid)->m.rep.error.code, HSQ_EFORBIDDEN);
    feed_role = HSQ_ROLE_OPERATOR;
    HSQ_ASSERT_EQ(task_op(HSQ_OP_STATUS, (uint64_t)id, NULL)->m.kind, HSQ_KIND_REPLY);
    feed_role = HSQ_ROLE_WORKER;
    HSQ_ASSERT_U64_EQ(lease1("w1", NULL), (uint64_t)id);
    feed_role = HSQ_ROLE_ANY;
}

/* A worker that declared prefetch k keeps up to k lease requests parked, each
 * answered as tasks arrive; one more replaces its oldest. Without the
 * declaration a new request replaces the parked one. */
static uint64_t park_lease(const char *peer) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_LEASE;
    m.rid = rid_seq++;
    m.req.lease.max = 1;
    m.req.lease.wait_ms = 5000;
    feed(HSQ_SOCK_WORKER, peer, &m, NULL, 0);
    return m.rid;
}

static int answered(uint64_t rid) {
    for (size_t i = 0; i < ncap; i++)
        if (cap[i].m.kind == HSQ_KIND_REPLY && cap[i].m.op == HSQ_OP_LEASE && cap[i].m.rid == rid)
            return (int)cap[i].m.rep.lease.n + 1; /* 1 + jobs */
    return 0;
}

static void test_lease_prefetch(void) {
    fresh();
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_READY;
    m.rid = rid_seq++;
    m.req.ready.name = HSQ_STR_LIT("wp");
    m.req.ready.backend = HSQ_STR_LIT("cpu");
    m.req.ready.max_batch = 1;
    m.req.ready.prefetch = 2;
    begin();
    feed(HSQ_SOCK_WORKER, "wp", &m, NULL, 0);
    turn();
    HSQ_ASSERT_EQ(reply_to(m.rid)->m.kind, HSQ_KIND_REPLY);

    /* Two parked: each takes one of two tasks. */
    begin();
    uint64_t a = park_lease("wp"), b = park_lease("wp");
    turn();
    HSQ_ASSERT_EQ(ncap, 0);
    submit("pat", NULL);
    HSQ_ASSERT_EQ(answered(a), 2);
    HSQ_ASSERT_EQ(answered(b), 0);
    submit("pat", NULL);
    HSQ_ASSERT_EQ(answered(b), 2);

    /* Three sent: the oldest is given up, the other two are served. */
    begin();
    uint64_t c = park_lease("wp"), d = park_lease("wp"), e = park_lease("wp");
    turn();
    HSQ_ASSERT_EQ(ncap, 0);
    submit("pat", NULL);
    HSQ_ASSERT_EQ(answered(c), 0);
    HSQ_ASSERT_EQ(answered(d), 2);
    submit("pat", NULL);
    HSQ_ASSERT_EQ(answered(c), 0);
    HSQ_ASSERT_EQ(answered(e), 2);

    /* No declaration: one parked request per worker. */
    begin();
    uint64_t f = park_lease("w1"), g = park_lease("w1");
    turn();
    submit("pat", NULL);
    HSQ_ASSERT_EQ(answered(f), 0);
    HSQ_ASSERT_EQ(answered(g), 2);
    submit("pat", NULL);
    HSQ_ASSERT_EQ(answered(f), 0);
    for (size_t i = 0; i < ncap; i++) /* nobody is parked any more */
        HSQ_ASSERT(!(cap[i].m.kind == HSQ_KIND_REPLY && cap[i].m.op == HSQ_OP_LEASE));
}

/* History (list newest first, export oldest first, erase) across the ids in
 * the user record and the chunks they move to every 16 submits, including a
 * chunk written by schema 1 (one id per entry, empty value) and a user
 * record from before the appended fields. */
static void tick_at(int64_t t);

static uint32_t list_all(const char *user, uint32_t limit, uint64_t *out, uint32_t max) {
    uint32_t n = 0;
    uint64_t before = 0;
    do {
        hsq_wire_msg m;
        memset(&m, 0, sizeof m);
        m.op = HSQ_OP_LIST;
        m.req.list.user = hsq_str_c(user);
        m.req.list.limit = limit;
        m.req.list.before = before;
        captured *r = ask("web", &m, NULL, 0);
        HSQ_ASSERT_EQ(r->m.kind, HSQ_KIND_REPLY);
        for (uint32_t i = 0; i < r->m.rep.list.n && n < max; i++)
            out[n++] = r->m.rep.list.tasks[i].id;
        before = r->m.rep.list.next;
    } while (before);
    return n;
}

static uint32_t export_all(const char *user, uint64_t *out, uint32_t max) {
    uint32_t n = 0;
    uint64_t after = 0;
    for (;;) {
        hsq_wire_msg m;
        memset(&m, 0, sizeof m);
        m.op = HSQ_OP_EXPORT;
        m.req.export_.user = hsq_str_c(user);
        m.req.export_.after = after;
        captured *r = ask("ops", &m, NULL, 0);
        HSQ_ASSERT_EQ(r->m.kind, HSQ_KIND_REPLY);
        if (!r->m.rep.export_.has_task)
            return n;
        if (n < max)
            out[n++] = r->m.rep.export_.task.id;
        after = r->m.rep.export_.task.id;
    }
}

/* hsqd's key for a user's records (queue.c, USER_KEY_MARK): 0xff and a
 * keyed BLAKE2b of the id, with the key from META; in st's open txn. */
static size_t hashed_user_key(const char *user, uint8_t k[17]) {
    hsq_bytes v;
    HSQ_OK(hsq_store_get(st, HSQ_DB_META, "user_key", 8, &v));
    HSQ_ASSERT_EQ(v.len, 32);
    k[0] = 0xff;
    crypto_generichash(k + 1, 16, (const uint8_t *)user, strlen(user), v.ptr, 32);
    return 17;
}

static size_t ledger_size(void) {
    uint64_t n = 0;
    HSQ_OK(hsq_store_begin(st, 1));
    HSQ_OK(hsq_store_count(st, HSQ_DB_LEDGER, &n));
    hsq_store_abort(st);
    return (size_t)n;
}

static size_t history_entries(const char *user) {
    uint8_t k[17];
    size_t n = 0;
    HSQ_OK(hsq_store_begin(st, 1));
    size_t ul = hashed_user_key(user, k) - 1;
    hsq_cursor *cur;
    HSQ_OK(hsq_cursor_open(st, HSQ_DB_HISTORY, &cur));
    hsq_bytes key;
    for (int rc = hsq_cursor_get(cur, HSQ_CUR_FIRST, &key, NULL); rc == 0;
         rc = hsq_cursor_get(cur, HSQ_CUR_NEXT, &key, NULL))
        if (key.len == ul + 9 && memcmp(key.ptr, k, ul + 1) == 0)
            n++;
    hsq_cursor_close(&cur);
    hsq_store_abort(st);
    return n;
}

static void test_history(void) {
    fresh();
    conf.max_queued_per_user = 1000;
    uint64_t ids[40], got[64];
    for (int i = 0; i < 40; i++) {
        ids[i] = (uint64_t)submit("hx", NULL);
        if (i % 3 == 0)
            submit("hy", NULL);
    }
    HSQ_ASSERT_EQ(history_entries("hx"), 2); /* 32 in two chunks, 8 in the record */
    for (uint32_t limit = 1; limit <= 41; limit += 4) {
        HSQ_ASSERT_EQ(list_all("hx", limit, got, 64), 40);
        for (int i = 0; i < 40; i++)
            HSQ_ASSERT_U64_EQ(got[i], ids[39 - i]);
    }
    HSQ_ASSERT_EQ(export_all("hx", got, 64), 40);
    for (int i = 0; i < 40; i++)
        HSQ_ASSERT_U64_EQ(got[i], ids[i]);
    HSQ_ASSERT_EQ(list_all("hy", 5, got, 64), 14);

    /* Schema 1: a 32-byte user record and one history entry per task, both
     * keyed by the raw id (u8 len | user), as stores from before the
     * hashed keys have them: the next start rekeys them, and scrubs. */
    uint64_t old[3];
    for (int i = 0; i < 3; i++)
        old[i] = (uint64_t)submit("lg", NULL);
    uint8_t k[3 + 8] = {2, 'l', 'g'}, hk[17];
    HSQ_OK(hsq_store_begin(st, 0));
    hsq_bytes v;
    hashed_user_key("lg", hk);
    HSQ_OK(hsq_store_get(st, HSQ_DB_USERS, hk, sizeof hk, &v));
    uint8_t rec[32];
    memcpy(rec, v.ptr, sizeof rec);
    HSQ_OK(hsq_store_del(st, HSQ_DB_USERS, hk, sizeof hk));
    HSQ_OK(hsq_store_put(st, HSQ_DB_USERS, k, 3, rec, sizeof rec));
    for (int i = 0; i < 3; i++) {
        hsq_be64(k + 3, old[i]);
        HSQ_OK(hsq_store_put(st, HSQ_DB_HISTORY, k, sizeof k, "", 0));
    }
    HSQ_OK(hsq_store_del(st, HSQ_DB_META, "user_keys", 9));
    HSQ_OK(hsq_store_del(st, HSQ_DB_META, "scrub", 5));
    HSQ_OK(hsq_store_commit(st));
    close_all();
    open_all();
    HSQ_OK(hsq_store_begin(st, 1));
    HSQ_ASSERT_EQ(hsq_store_get(st, HSQ_DB_USERS, k, 3, &v), HSQ_ENOTFOUND);
    HSQ_OK(hsq_store_get(st, HSQ_DB_USERS, hk, sizeof hk, &v));
    HSQ_OK(hsq_store_get(st, HSQ_DB_META, "user_keys", 9, &v));
    HSQ_OK(hsq_store_get(st, HSQ_DB_META, "scrub", 5, &v)); /* the raw ids' old pages */
    hsq_store_abort(st);
    /* An erasure a crash interrupted in such a store: its ledger entry (the
     * raw id as key, requested_at as value) is rekeyed with the id moved
     * into the value, and the erasure completes. */
    uint64_t gone = (uint64_t)submit("lz", NULL);
    HSQ_OK(hsq_store_begin(st, 0));
    uint8_t lk[3] = {2, 'l', 'z'}, at[8];
    hsq_be64(at, 1);
    HSQ_OK(hsq_store_put(st, HSQ_DB_LEDGER, lk, sizeof lk, at, sizeof at));
    HSQ_OK(hsq_store_del(st, HSQ_DB_META, "user_keys", 9));
    HSQ_OK(hsq_store_commit(st));
    close_all();
    open_all();
    HSQ_OK(hsq_store_begin(st, 1));
    HSQ_ASSERT_EQ(hsq_store_get(st, HSQ_DB_LEDGER, lk, sizeof lk, &v), HSQ_ENOTFOUND);
    hsq_store_abort(st);
    for (int i = 0; i < 8 && task_op(HSQ_OP_STATUS, gone, NULL)->m.kind == HSQ_KIND_REPLY; i++) {
        begin();
        turn();
    }
    HSQ_ASSERT_EQ(task_op(HSQ_OP_STATUS, gone, NULL)->m.rep.error.code, HSQ_ENOTFOUND);
    HSQ_ASSERT_EQ(ledger_size(), 0);
    HSQ_ASSERT_EQ(list_all("lg", 2, got, 64), 3);
    HSQ_ASSERT_U64_EQ(got[0], old[2]);
    HSQ_ASSERT_U64_EQ(got[2], old[0]);
    HSQ_ASSERT_EQ(export_all("lg", got, 64), 3);
    HSQ_ASSERT_U64_EQ(got[0], old[0]);
    uint64_t newer = (uint64_t)submit("lg", NULL);
    HSQ_ASSERT_EQ(list_all("lg", 10, got, 64), 4);
    HSQ_ASSERT_U64_EQ(got[0], newer);

    /* Erasure takes the chunks and the record's ids. */
    uint64_t erid = erase_request("hx");
    begin();
    turn();
    HSQ_ASSERT_EQ(reply_to(erid)->m.rep.erase.tasks, 40);
    HSQ_ASSERT_EQ(history_entries("hx"), 0);
    HSQ_ASSERT_EQ(list_all("hx", 10, got, 64), 0);
    HSQ_ASSERT_EQ(list_all("hy", 50, got, 64), 14);

    /* Tasks removed by retention leave the chunks and the record: lease and
     * finish all of hy's, then run the clock past outputs and tombstones. */
    uint64_t tok;
    uint64_t t;
    while ((t = lease1("w1", &tok)) != 0) {
        captured *d = done("w1", t, tok, t >= old[0] ? "lg" : "hy");
        HSQ_ASSERT_EQ(d->m.kind, HSQ_KIND_REPLY);
    }
    int64_t t1 = now + conf.retention_outputs_ms + 1000; /* outputs go: tombstones */
    for (int i = 0; i < 20; i++)
        tick_at(t1 + i);
    int64_t t2 = now + conf.retention_tombstone_ms + 1000; /* tombstones go */
    for (int i = 0; i < 20; i++)
        tick_at(t2 + i);
    HSQ_ASSERT_EQ(list_all("hy", 50, got, 64), 0);
    HSQ_ASSERT_EQ(history_entries("hy"), 0);
    HSQ_ASSERT_EQ(list_all("lg", 50, got, 64), 0);
    HSQ_ASSERT_EQ(history_entries("lg"), 0);
}

static int blob_exists(const char *user, uint64_t id, const char *name) {
    char prefix[HSQ_BLOB_PREFIX_LEN + 1], key[300];
    hsq_blob_user_prefix(bl, user, strlen(user), prefix);
    snprintf(key, sizeof key, "%s%llu/%s", prefix, (unsigned long long)id, name);
    uint64_t size;
    return hsq_blob_size(bl, key, &size) == 0;
}

static int inline_exists(uint64_t id, uint8_t idx) {
    uint8_t k[9];
    hsq_be64(k, id);
    k[8] = idx;
    HSQ_OK(hsq_store_begin(st, 1));
    hsq_bytes v;
    int rc = hsq_store_get(st, HSQ_DB_INPUTS, k, sizeof k, &v);
    hsq_store_abort(st);
    return rc == 0;
}

static void tick_at(int64_t t) {
    now = t;
    begin();
    turn();
}

/* Each retention class expires at its time and not a millisecond before. */
static void test_retention_classes(void) {
    fresh();
    static uint8_t big[4000];
    memset(big, 3, sizeof big);
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_SUBMIT;
    m.req.submit.user = HSQ_STR_LIT("tess");
    m.req.submit.key = HSQ_STR_LIT("order-9");
    m.req.submit.prio = HSQ_PRIO_NORMAL;
    m.req.submit.prompt = HSQ_STR_LIT("navy suit, grey backdrop");
    m.req.submit.n_inputs = 2;
    m.req.submit.inputs[0].kind = HSQ_STR_LIT("portrait");
    m.req.submit.inputs[0].frame = 0;
    m.req.submit.inputs[1].kind = HSQ_STR_LIT("clothing");
    m.req.submit.inputs[1].frame = 1;
    m.req.submit.n_outputs = 1;
    m.req.submit.outputs[0].width = 8;
    m.req.submit.outputs[0].height = 8;
    m.req.submit.outputs[0].format = HSQ_FMT_JPEG;
    hsq_bytes f[2] = {{big, sizeof big}, {tiny, sizeof tiny}};
    uint64_t id = ask("web", &m, f, 2)->m.rep.submit.task;
    HSQ_ASSERT(blob_exists("tess", id, "in-0")); /* large: blob store */
    HSQ_ASSERT(inline_exists(id, 1));            /* small: inline */
    uint64_t tok;
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), id);
    HSQ_ASSERT_EQ(done("w1", id, tok, "tess")->m.kind, HSQ_KIND_REPLY);
    /* the 4000-byte portrait went to the blob store, the output is 18 bytes */
    HSQ_ASSERT_U64_EQ(hsq_queue_blob_bytes(q), 4000 + 18);
    int64_t end = now;
    const int64_t day = 86400000;

    tick_at(end + day - 1);
    HSQ_ASSERT(inline_exists(id, 1));
    tick_at(end + day); /* references: 1 day */
    HSQ_ASSERT(!inline_exists(id, 1));
    HSQ_ASSERT(blob_exists("tess", id, "in-0"));
    tick_at(end + 7 * day - 1);
    HSQ_ASSERT(blob_exists("tess", id, "in-0"));
    tick_at(end + 7 * day); /* uploads: 7 days */
    HSQ_ASSERT(!blob_exists("tess", id, "in-0"));
    HSQ_ASSERT(blob_exists("tess", id, "out-0.jpg"));
    HSQ_ASSERT_EQ(task_op(HSQ_OP_RESULT, id, "tess")->m.kind, HSQ_KIND_REPLY);

    /* The wall clock steps back ten days: nothing comes back, nothing
     * expires early. */
    tick_at(end + 7 * day - 10 * day);
    HSQ_ASSERT(blob_exists("tess", id, "out-0.jpg"));

    tick_at(end + 30 * day - 1);
    HSQ_ASSERT(blob_exists("tess", id, "out-0.jpg"));
    tick_at(end + 30 * day); /* outputs: 30 days -> tombstone */
    HSQ_ASSERT(!blob_exists("tess", id, "out-0.jpg"));
    HSQ_ASSERT_U64_EQ(hsq_queue_blob_bytes(q), 0);
    captured *r = task_op(HSQ_OP_STATUS, id, "tess");
    HSQ_ASSERT_EQ(r->m.rep.task.task.state, HSQ_STATE_EXPIRED);
    HSQ_ASSERT_EQ(r->m.rep.task.task.n_outputs, 0);
    HSQ_ASSERT_EQ(r->m.rep.task.task.key.len, 0);
    HSQ_ASSERT_EQ(task_op(HSQ_OP_RESULT, id, "tess")->m.rep.error.code, HSQ_ECONFLICT);
    /* The idempotency key is gone with the personal data: a new task. */
    HSQ_ASSERT(submit("tess", "order-9") != (int64_t)id);

    tick_at(end + 30 * day + 365 * day - 1);
    HSQ_ASSERT_EQ(task_op(HSQ_OP_STATUS, id, NULL)->m.kind, HSQ_KIND_REPLY);
    tick_at(end + 30 * day + 365 * day); /* tombstone: 1 year */
    HSQ_ASSERT_EQ(task_op(HSQ_OP_STATUS, id, NULL)->m.rep.error.code, HSQ_ENOTFOUND);
}

/* A finished task with a 4000-byte portrait in the blob store, done `gap`
 * ms after its submit. */
static uint64_t finished_task_after(const char *user, int64_t gap) {
    static uint8_t big[4000];
    memset(big, 5, sizeof big);
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_SUBMIT;
    m.req.submit.user = hsq_str_c(user);
    m.req.submit.n_inputs = 1;
    m.req.submit.inputs[0].kind = HSQ_STR_LIT("portrait");
    m.req.submit.n_outputs = 1;
    m.req.submit.outputs[0].width = 8;
    m.req.submit.outputs[0].height = 8;
    m.req.submit.outputs[0].format = HSQ_FMT_JPEG;
    hsq_bytes f = {big, sizeof big};
    uint64_t id = ask("web", &m, &f, 1)->m.rep.submit.task;
    now += gap;
    uint64_t tok = 0;
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), id);
    HSQ_ASSERT_EQ(done("w1", id, tok, user)->m.kind, HSQ_KIND_REPLY);
    return id;
}

static uint64_t finished_task(const char *user) {
    return finished_task_after(user, 0);
}

static atomic_int reaper_woke;

static void on_reaper_wake(void *ud) {
    (void)ud;
    atomic_fetch_add(&reaper_woke, 1);
}

/* Wait for the reaper's next batch. */
static hsq_reap *reaper_results(hsq_reaper *rp, size_t *n) {
    for (int i = 0; i < 2000; i++) {
        hsq_reap *r = hsq_reaper_collect(rp, n);
        if (*n)
            return r;
        free(r);
        usleep(1000);
    }
    HSQ_FAIL_("the reaper returned nothing in 2 s");
}

/* A fresh queue whose inputs are all files, reaping at most 2 entries at a
 * time, and a real reaper thread on its blob store. */
static hsq_reaper *reaping_setup(void) {
    fresh();
    close_all();
    conf.inline_max = 0;
    open_all();
    hsq_queue_set_reaping(q, 2);
    char root[300];
    snprintf(root, sizeof root, "%s/blobs", dir);
    hsq_reaper *rp;
    HSQ_OK(hsq_reaper_start(&rp, root, on_reaper_wake, NULL));
    return rp;
}

/* Reaping: the continuous sweeper hands file deletions to the reaper thread
 * (at most reap_max in flight), leaves the records and index entries alone
 * until the results come back, skips entries in flight, holds a purge
 * request until the reaper is idle, and retries a failed deletion later. */
static void test_reaping(void) {
    hsq_reaper *rp = reaping_setup();
    uint64_t ids[4];
    for (int i = 0; i < 4; i++)
        ids[i] = finished_task("uma");
    const int64_t day = 86400000;
    int64_t end = now;

    /* Everything due at once: the first two entries in the index (the
     * portraits of the first two tasks, 7 days) go to the reaper, the rest
     * wait. */
    tick_at(end + 30 * day);
    HSQ_ASSERT_EQ(hsq_queue_reaps_inflight(q), 2);
    size_t n;
    hsq_reap *r = hsq_queue_take_reaps(q, &n);
    HSQ_ASSERT_EQ(n, 2);
    for (int i = 0; i < 4; i++) {
        HSQ_ASSERT(blob_exists("uma", ids[i], "out-0.jpg")); /* nothing deleted on the loop */
        HSQ_ASSERT(blob_exists("uma", ids[i], "in-0"));
        HSQ_ASSERT_EQ(state_of(ids[i]), HSQ_STATE_SUCCEEDED);
    }
    /* The outputs are due: no download while the reaper may be deleting. */
    HSQ_ASSERT_EQ(task_op(HSQ_OP_RESULT, ids[0], "uma")->m.rep.error.code, HSQ_ENOTFOUND);
    tick_at(end + 30 * day + 1000); /* full: nothing more is handed off */
    HSQ_ASSERT_EQ(hsq_queue_reaps_inflight(q), 2);
    /* ... and nothing is due for the loop until results come back (in
     * journal mode, once the store's batch is in: that wants a turn too). */
    HSQ_OK(hsq_store_checkpoint(st));
    HSQ_ASSERT(hsq_queue_next_deadline(q) > now);
    free(hsq_queue_take_reaps(q, &n));
    HSQ_ASSERT_EQ(n, 0);

    /* A purge request waits for the reaper. */
    uint64_t prid = purge_request(1000);
    HSQ_ASSERT_EQ(ncap, 0);

    atomic_store(&reaper_woke, 0);
    hsq_reaper_submit(rp, r, 2);
    r = reaper_results(rp, &n);
    HSQ_ASSERT_EQ(n, 2);
    HSQ_ASSERT(atomic_load(&reaper_woke) >= 1);
    for (size_t i = 0; i < n; i++) {
        HSQ_ASSERT_EQ(r[i].rc, 0);
        HSQ_ASSERT_EQ(r[i].n_keys, 1); /* the portrait */
        HSQ_ASSERT_EQ(r[i].prefix[0], '\0');
    }
    for (int i = 0; i < 4; i++) {
        HSQ_ASSERT(blob_exists("uma", ids[i], "in-0") == (i >= 2));
        HSQ_ASSERT(blob_exists("uma", ids[i], "out-0.jpg"));
    }

    /* The results come back: records change, and the waiting purge's pass
     * goes on through the reaper (two entries at a time here) until nothing
     * is due, then answers for all of it. */
    hsq_queue_reaped(q, r, n);
    HSQ_ASSERT(hsq_queue_next_deadline(q) <= now); /* a turn is due to apply them */
    begin();
    turn();
    for (int round = 0; round < 10 && !replied(prid); round++) {
        for (int i = 0; i < 4; i++) /* files go on the reaper's thread only */
            HSQ_ASSERT(blob_exists("uma", ids[i], "out-0.jpg") ||
                       state_of(ids[i]) == HSQ_STATE_EXPIRED);
        r = hsq_queue_take_reaps(q, &n);
        HSQ_ASSERT(n >= 1 && n <= 2);
        hsq_reaper_submit(rp, r, n);
        r = reaper_results(rp, &n);
        begin();
        hsq_queue_reaped(q, r, n);
        turn();
    }
    captured *pr = reply_to(prid);
    HSQ_ASSERT_EQ(pr->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT(!pr->m.rep.purge.more);
    HSQ_ASSERT_U64_EQ(pr->m.rep.purge.inputs, 4);
    HSQ_ASSERT_U64_EQ(pr->m.rep.purge.tasks, 4);
    HSQ_ASSERT_U64_EQ(pr->m.rep.purge.outputs, 4);
    HSQ_ASSERT_EQ(hsq_queue_reaps_inflight(q), 0);
    for (int i = 0; i < 4; i++) {
        HSQ_ASSERT_EQ(state_of(ids[i]), HSQ_STATE_EXPIRED);
        HSQ_ASSERT(!blob_exists("uma", ids[i], "out-0.jpg"));
        HSQ_ASSERT(!blob_exists("uma", ids[i], "in-0"));
    }
    HSQ_ASSERT_U64_EQ(hsq_queue_blob_bytes(q), 0);

    /* A failed deletion: the entry comes back a minute later, the task is
     * untouched meanwhile, and the next hand-off finishes it. */
    uint64_t id = finished_task("uma");
    end = now;
    tick_at(end + 7 * day);
    r = hsq_queue_take_reaps(q, &n);
    HSQ_ASSERT_EQ(n, 1);
    r[0].rc = -EIO;
    begin();
    hsq_queue_reaped(q, r, n);
    turn();
    HSQ_ASSERT(blob_exists("uma", id, "in-0"));
    tick_at(end + 7 * day + 59000);
    free(hsq_queue_take_reaps(q, &n));
    HSQ_ASSERT_EQ(n, 0);
    tick_at(end + 7 * day + 61000);
    r = hsq_queue_take_reaps(q, &n);
    HSQ_ASSERT_EQ(n, 1);
    hsq_reaper_submit(rp, r, n);
    r = reaper_results(rp, &n);
    begin();
    hsq_queue_reaped(q, r, n);
    turn();
    HSQ_ASSERT(!blob_exists("uma", id, "in-0"));
    HSQ_ASSERT_EQ(state_of(id), HSQ_STATE_SUCCEEDED);

    /* Outputs: one entry deletes the output and the task's directory. */
    tick_at(end + 30 * day);
    r = hsq_queue_take_reaps(q, &n);
    HSQ_ASSERT_EQ(n, 1);
    HSQ_ASSERT_EQ(r[0].n_keys, 1);
    HSQ_ASSERT(r[0].prefix[0] != '\0');
    /* Stopping with work queued drops it: the entry stays due. */
    hsq_reaper_submit(rp, r, n);
    hsq_reaper_stop(&rp);
    HSQ_ASSERT(rp == NULL);
    hsq_queue_set_reaping(q, 0);
    close_all();
    open_all(); /* a restart: inline now, and the entry is still due */
    tick_at(end + 30 * day + 1000);
    HSQ_ASSERT_EQ(state_of(id), HSQ_STATE_EXPIRED);
    HSQ_ASSERT(!blob_exists("uma", id, "out-0.jpg"));
    conf.inline_max = 1024;
}

/* A submit may ask for shorter retention (never longer): photos deleted a
 * second after the task ends, outputs after an hour; an outputs ask longer
 * than the policy gets the policy. The ask goes through the wire codec. */
/* With a reaper an erasure's files are deleted on its thread: the records
 * go in one turn, the user's prefix to the reaper, submits for the user are
 * refused meanwhile (others are not), and the receipt comes when the files
 * are gone; the ledger entry stays until then. */
static void test_erase_reaped(void) {
    hsq_reaper *rp = reaping_setup();
    uint64_t a = finished_task("eve"), b = finished_task("eve");
    uint64_t queued = (uint64_t)submit("eve", NULL);
    uint64_t erid = erase_request("eve"); /* its turn commits the ledger entry */
    begin();
    turn(); /* the records */
    size_t n;
    hsq_reap *r = hsq_queue_take_reaps(q, &n);
    HSQ_ASSERT_EQ(n, 0); /* not in the turn that deleted them */
    free(r);
    HSQ_ASSERT_EQ(submit("eve", NULL), HSQ_EUNAVAIL);
    begin();
    turn(); /* the prefix to the reaper */
    HSQ_ASSERT(!replied(erid));
    r = hsq_queue_take_reaps(q, &n);
    HSQ_ASSERT_EQ(n, 1);
    HSQ_ASSERT_EQ(r[0].n_keys, 0);
    char prefix[HSQ_BLOB_PREFIX_LEN + 1];
    hsq_blob_user_prefix(bl, "eve", 3, prefix);
    HSQ_ASSERT_STR_EQ(r[0].prefix, prefix);
    HSQ_ASSERT_EQ(task_op(HSQ_OP_STATUS, a, NULL)->m.rep.error.code, HSQ_ENOTFOUND);
    HSQ_ASSERT_EQ(task_op(HSQ_OP_STATUS, queued, NULL)->m.rep.error.code, HSQ_ENOTFOUND);
    HSQ_ASSERT(blob_exists("eve", a, "out-0.jpg")); /* nothing deleted on the loop */
    HSQ_ASSERT(blob_exists("eve", b, "in-0"));
    HSQ_ASSERT_EQ(submit("eve", NULL), HSQ_EUNAVAIL);
    HSQ_ASSERT(submit("fay", NULL) > 0);
    hsq_reaper_submit(rp, r, n);
    r = reaper_results(rp, &n);
    HSQ_ASSERT_EQ(n, 1);
    HSQ_ASSERT_EQ(r[0].rc, 0);
    HSQ_ASSERT(r[0].bytes > 0);
    uint64_t bytes = r[0].bytes;
    HSQ_ASSERT(!blob_exists("eve", a, "out-0.jpg"));
    begin();
    hsq_queue_reaped(q, r, n);
    turn();
    captured *c = reply_to(erid);
    HSQ_ASSERT_EQ(c->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT_U64_EQ(c->m.rep.erase.tasks, 3);
    HSQ_ASSERT_U64_EQ(c->m.rep.erase.active, 1);
    HSQ_ASSERT_U64_EQ(c->m.rep.erase.bytes, bytes);
    HSQ_ASSERT_EQ(hsq_queue_reaps_inflight(q), 0);
    HSQ_ASSERT(submit("eve", NULL) > 0); /* a new start */

    /* A user with more tasks than one turn erases: the records go over
     * several turns, oldest first, and only then the files. */
    uint64_t first = (uint64_t)submit("gil", NULL), last = first;
    for (int i = 1; i < 1100; i++) {
        int64_t id = submit("gil", NULL);
        HSQ_ASSERT(id > 0);
        last = (uint64_t)id;
    }
    erid = erase_request("gil");
    begin();
    turn(); /* the oldest 1,024 */
    /* (every request's turn takes the next step, after answering it) */
    HSQ_ASSERT_EQ(task_op(HSQ_OP_STATUS, last, NULL)->m.kind, HSQ_KIND_REPLY); /* not yet */
    free(hsq_queue_take_reaps(q, &n));
    HSQ_ASSERT_EQ(n, 0); /* the other 76 went in that turn: no hand-off with them */
    HSQ_ASSERT_EQ(task_op(HSQ_OP_STATUS, first, NULL)->m.rep.error.code, HSQ_ENOTFOUND);
    free(hsq_queue_take_reaps(q, &n));
    HSQ_ASSERT_EQ(n, 1); /* now the files */
    HSQ_ASSERT_EQ(task_op(HSQ_OP_STATUS, last, NULL)->m.rep.error.code, HSQ_ENOTFOUND);
    HSQ_ASSERT(!replied(erid));
    hsq_reaper_stop(&rp); /* (the hand-off is dropped: a restart redoes it) */
    hsq_queue_set_reaping(q, 0);
    conf.inline_max = 1024;
}

/* A purge request is bounded in sweep cost, where an entry that deletes
 * files costs more than one: its reply must still say `more` while due
 * entries remain (it said "no more" once the cost passed the limit, and
 * `hsq purge` stopped with work left). */
static void test_purge_more(void) {
    fresh();
    close_all();
    conf.inline_max = 0;  /* every portrait a file: each entry costs 9 */
    conf.sweep_batch = 0; /* only requests sweep */
    open_all();
    uint64_t ids[5];
    for (int i = 0; i < 5; i++)
        ids[i] = finished_task("pam");
    tick_at(now + 8ll * 86400000); /* the portraits are due, not the outputs */
    uint64_t inputs = 0;
    int rounds = 0, more = 1;
    while (more) {
        HSQ_ASSERT(++rounds <= 10);
        captured *c = reply_to(purge_request(10));
        HSQ_ASSERT(c && c->m.kind == HSQ_KIND_REPLY);
        inputs += c->m.rep.purge.inputs;
        more = c->m.rep.purge.more;
        if (inputs < 5)
            HSQ_ASSERT(more);
    }
    HSQ_ASSERT_U64_EQ(inputs, 5);
    HSQ_ASSERT(rounds >= 3); /* two file deletions fit in a limit of 10 */
    for (int i = 0; i < 5; i++) {
        HSQ_ASSERT(!blob_exists("pam", ids[i], "in-0"));
        HSQ_ASSERT(blob_exists("pam", ids[i], "out-0.jpg"));
    }
}

static void upload_key(const char *user, uint64_t id, char *key, size_t n) {
    char prefix[HSQ_BLOB_PREFIX_LEN + 1];
    hsq_blob_user_prefix(bl, user, strlen(user), prefix);
    snprintf(key, n, "%s%llu/in-0", prefix, (unsigned long long)id);
}

/* Start-up recovery: the ids a crash may have left uploads for are set aside
 * durably (the next id moves past them) and stay recorded across restarts
 * until recovered; the janitor's walk deletes exactly those uploads, not a
 * committed task's; a purge waits for it and counts them; a full list of
 * ranges is recovered at once. */
static void test_recovery(void) {
    fresh();
    close_all();
    conf.inline_max = 0; /* inputs are files */
    open_all();
    uint64_t a = (uint64_t)submit("rex", NULL);
    hsq_id_range r[HSQ_RECOVER_RANGES];
    size_t n;
    HSQ_OK(hsq_queue_recover_begin(q, r, &n));
    HSQ_ASSERT_EQ(n, 1);
    HSQ_ASSERT_EQ(r[0].lo, a + 1);
    HSQ_ASSERT_EQ(r[0].hi, a + 1 + HSQ_RECOVER_SPAN);
    /* What a crash leaves: the upload of a submit that never committed. */
    char orphan[300], ka[300], kb[300];
    upload_key("rex", a + 1, orphan, sizeof orphan);
    static const char bytes[] = "photo of a submit that never committed";
    HSQ_OK(hsq_blob_put(bl, orphan, bytes, sizeof bytes, 0));
    uint64_t b = (uint64_t)submit("rex", NULL);
    HSQ_ASSERT_EQ(b, r[0].hi); /* new submits never use an id of the range */
    upload_key("rex", a, ka, sizeof ka);
    upload_key("rex", b, kb, sizeof kb);

    /* A crash before the walk ended: the range stays, a new one joins it. */
    close_all();
    open_all();
    HSQ_OK(hsq_queue_recover_begin(q, r, &n));
    HSQ_ASSERT_EQ(n, 2);
    HSQ_ASSERT_EQ(r[0].lo, a + 1);
    HSQ_ASSERT_EQ(r[1].lo, b + 1);
    HSQ_ASSERT(hsq_recover_match(orphan, r, n));
    HSQ_ASSERT(!hsq_recover_match(ka, r, n));
    HSQ_ASSERT(!hsq_recover_match(kb, r, n)); /* between the ranges: committed */
    char out[300];
    snprintf(out, sizeof out, "%.*s%llu/out-0.jpg", (int)(strchr(orphan + 2, '/') - orphan + 1),
             orphan, (unsigned long long)(a + 1));
    /* A worker's output for a lease that left before the lost commit. */
    HSQ_ASSERT(hsq_recover_match(out, r, n));
    snprintf(out, sizeof out, "%.*s/out-0.jpg", (int)(strrchr(ka, '/') - ka), ka);
    HSQ_ASSERT(!hsq_recover_match(out, r, n)); /* a committed task's */
    snprintf(out, sizeof out, "%.*s%llu/notes", (int)(strchr(orphan + 2, '/') - orphan + 1), orphan,
             (unsigned long long)(a + 1));
    HSQ_ASSERT(!hsq_recover_match(out, r, n)); /* nothing hsq writes */
    HSQ_ASSERT(!hsq_recover_match("u/abc/x1/in-0", r, n));
    HSQ_ASSERT(!hsq_recover_match("v/abc/2/in-0", r, n));

    /* The walk, while purge requests wait for it. */
    uint64_t prid = purge_request(1000);
    HSQ_ASSERT_EQ(ncap, 0);
    char root[300];
    snprintf(root, sizeof root, "%s/blobs", dir);
    /* Temp files of writes that died go in the same walk once stale; a
     * fresh one may be a write in progress. */
    char stale[400], young[400];
    snprintf(stale, sizeof stale, "%s/%.*s.tmp.dead", root, (int)(strrchr(ka, '/') - ka + 1), ka);
    snprintf(young, sizeof young, "%s/%.*s.tmp.busy", root, (int)(strrchr(ka, '/') - ka + 1), ka);
    FILE *f = fopen(stale, "w");
    HSQ_ASSERT(f && fclose(f) == 0);
    f = fopen(young, "w");
    HSQ_ASSERT(f && fclose(f) == 0);
    struct timespec old[2] = {{time(NULL) - HSQ_BLOB_TMP_STALE_S - 60, 0},
                              {time(NULL) - HSQ_BLOB_TMP_STALE_S - 60, 0}};
    HSQ_ASSERT_EQ(utimensat(AT_FDCWD, stale, old, 0), 0);
    hsq_janitor *j;
    atomic_store(&reaper_woke, 0);
    HSQ_OK(hsq_janitor_start(&j, root, r, n, 0, 0, on_reaper_wake, NULL));
    hsq_janitor_report rep;
    int got = 0;
    for (int i = 0; i < 2000 && !got; i++) {
        got = hsq_janitor_collect(j, &rep);
        if (!got)
            usleep(1000);
    }
    HSQ_ASSERT(got);
    HSQ_ASSERT_EQ(atomic_load(&reaper_woke), 1);
    HSQ_ASSERT_EQ(rep.n.files, 1);
    HSQ_ASSERT_EQ(rep.n.bytes, sizeof bytes);
    HSQ_ASSERT_EQ(rep.n.walked, 3);
    HSQ_ASSERT_EQ(rep.n.tmp, 1);
    HSQ_ASSERT_EQ(rep.final, 1); /* no settle time: one walk is all */
    HSQ_ASSERT_EQ(access(stale, F_OK), -1);
    HSQ_ASSERT_EQ(access(young, F_OK), 0);
    HSQ_ASSERT_EQ(unlink(young), 0);
    HSQ_ASSERT(!hsq_janitor_collect(j, &rep)); /* once */
    hsq_janitor_stop(&j);
    /* Later walks (every interval) take temp files that went stale since. */
    HSQ_OK(hsq_janitor_start(&j, root, NULL, 0, 0, 1, NULL, NULL));
    for (int i = 0; i < 2000 && !hsq_janitor_collect(j, &rep); i++)
        usleep(1000);
    f = fopen(stale, "w");
    HSQ_ASSERT(f && fclose(f) == 0);
    HSQ_ASSERT_EQ(utimensat(AT_FDCWD, stale, old, 0), 0);
    for (int i = 0; i < 300 && access(stale, F_OK) == 0; i++)
        usleep(10000);
    HSQ_ASSERT_EQ(access(stale, F_OK), -1);
    hsq_janitor_stop(&j);
    uint64_t size;
    HSQ_ASSERT_EQ(hsq_blob_size(bl, orphan, &size), -ENOENT);
    HSQ_OK(hsq_blob_size(bl, ka, &size));
    HSQ_OK(hsq_blob_size(bl, kb, &size));
    /* With a settle time the ranges are walked twice: a worker whose lease
     * the crash lost may write an output under its id after the first walk
     * and die before its done; the second walk takes it. */
    HSQ_OK(hsq_janitor_start(&j, root, r, n, 50, 0, NULL, NULL));
    got = 0;
    for (int i = 0; i < 2000 && !got; i++)
        if (!(got = hsq_janitor_collect(j, &rep)))
            usleep(1000);
    HSQ_ASSERT(got && rep.rc == 0 && !rep.final);
    char late[200];
    snprintf(late, sizeof late, "%.*s%llu/out-0.jpg", (int)(strchr(ka + 2, '/') - ka + 1), ka,
             (unsigned long long)(r[0].lo + 1));
    HSQ_OK(hsq_blob_put(bl, late, bytes, sizeof bytes, 0));
    got = 0;
    for (int i = 0; i < 2000 && !got; i++)
        if (!(got = hsq_janitor_collect(j, &rep)))
            usleep(1000);
    HSQ_ASSERT(got && rep.rc == 0 && rep.final);
    HSQ_ASSERT_EQ(rep.n.files, 1);
    HSQ_ASSERT_EQ(hsq_blob_size(bl, late, &size), -ENOENT);
    HSQ_ASSERT(!hsq_janitor_collect(j, &rep)); /* and no third */
    hsq_janitor_stop(&j);

    /* The first report answers the purge; the ranges stay recorded until
     * the last one. */
    begin();
    hsq_queue_recovered(q, 0, 0, 1, sizeof bytes);
    turn();
    captured *c = reply_to(prid);
    HSQ_ASSERT(c);
    HSQ_ASSERT_EQ(c->m.rep.purge.inputs, 1);
    HSQ_ASSERT_EQ(c->m.rep.purge.bytes, sizeof bytes);
    hsq_id_range kept[HSQ_RECOVER_RANGES];
    size_t nkept = 0;
    HSQ_OK(hsq_store_begin(st, 1));
    HSQ_OK(hsq_recover_ranges(st, kept, &nkept));
    hsq_store_abort(st);
    HSQ_ASSERT_EQ(nkept, n);
    begin();
    hsq_queue_recovered(q, 0, 1, 1, sizeof bytes);
    turn();
    HSQ_OK(hsq_store_begin(st, 1));
    HSQ_OK(hsq_recover_ranges(st, kept, &nkept));
    hsq_store_abort(st);
    HSQ_ASSERT_EQ(nkept, 0);

    /* Forgotten with that commit: the next start sets aside its own only. */
    close_all();
    open_all();
    HSQ_OK(hsq_queue_recover_begin(q, r, &n));
    HSQ_ASSERT_EQ(n, 1);
    /* Seven more starts that all die before their walk ends fill the list;
     * the next recovers at once, on the spot. */
    for (size_t k = 2; k <= HSQ_RECOVER_RANGES; k++) {
        close_all();
        open_all();
        HSQ_OK(hsq_queue_recover_begin(q, r, &n));
        HSQ_ASSERT_EQ(n, k);
    }
    upload_key("rex", r[3].lo + 7, orphan, sizeof orphan);
    HSQ_OK(hsq_blob_put(bl, orphan, bytes, sizeof bytes, 0));
    close_all();
    open_all();
    HSQ_OK(hsq_queue_recover_begin(q, r, &n));
    HSQ_ASSERT_EQ(n, 0);
    HSQ_ASSERT_EQ(hsq_blob_size(bl, orphan, &size), -ENOENT);
    HSQ_OK(hsq_blob_size(bl, kb, &size));
    close_all();
    open_all();
    HSQ_OK(hsq_queue_recover_begin(q, r, &n));
    HSQ_ASSERT_EQ(n, 1);
    /* A walk that fails: purge requests stop waiting for it (it may keep
     * failing), and the range stays recorded for a later walk. */
    uint64_t prid2 = purge_request(1000);
    HSQ_ASSERT(!replied(prid2));
    begin();
    hsq_queue_recovered(q, -EIO, 0, 0, 0);
    turn();
    HSQ_ASSERT_EQ(reply_to(prid2)->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT(!hsq_queue_recovering(q));
    close_all();
    open_all();
    HSQ_OK(hsq_queue_recover_begin(q, r, &n));
    HSQ_ASSERT_EQ(n, 2);

    /* A new store and a clean stop: nothing to recover, no gap in the ids. */
    fresh();
    HSQ_OK(hsq_queue_recover_begin(q, r, &n));
    HSQ_ASSERT_EQ(n, 0);
    HSQ_ASSERT_EQ(submit("rex", NULL), 1);
    HSQ_OK(hsq_queue_mark_clean(q));
    close_all();
    open_all();
    HSQ_OK(hsq_queue_recover_begin(q, r, &n));
    HSQ_ASSERT_EQ(n, 0);
    HSQ_ASSERT_EQ(submit("rex", NULL), 2);
    /* ... but a crash of that run: the start after it sets ids aside. */
    close_all();
    open_all();
    HSQ_OK(hsq_queue_recover_begin(q, r, &n));
    HSQ_ASSERT_EQ(n, 1);
    HSQ_ASSERT_EQ(r[0].lo, 3);
    HSQ_ASSERT_EQ(submit("rex", NULL), 3 + HSQ_RECOVER_SPAN);
}

static void test_retention_asked(void) {
    fresh();
    static uint8_t big[4000];
    memset(big, 5, sizeof big);
    const int64_t day = 86400000;
    uint64_t ids[2];
    for (int k = 0; k < 2; k++) {
        hsq_wire_msg m;
        memset(&m, 0, sizeof m);
        m.op = HSQ_OP_SUBMIT;
        m.req.submit.user = HSQ_STR_LIT("yan");
        m.req.submit.prio = HSQ_PRIO_NORMAL;
        m.req.submit.n_inputs = 1;
        m.req.submit.inputs[0].kind = HSQ_STR_LIT("portrait");
        m.req.submit.n_outputs = 1;
        m.req.submit.outputs[0].width = 8;
        m.req.submit.outputs[0].height = 8;
        m.req.submit.outputs[0].format = HSQ_FMT_JPEG;
        m.req.submit.keep_uploads_s = k == 0 ? 1 : 0;              /* 0: the policy */
        m.req.submit.keep_outputs_s = k == 0 ? 3600 : 100 * 86400; /* 100 d: capped */
        hsq_bytes f = {big, sizeof big};
        ids[k] = ask("web", &m, &f, 1)->m.rep.submit.task;
        uint64_t tok = 0;
        HSQ_ASSERT_U64_EQ(lease1("w1", &tok), ids[k]);
        HSQ_ASSERT_EQ(done("w1", ids[k], tok, "yan")->m.kind, HSQ_KIND_REPLY);
    }
    int64_t end = now;
    captured *r = task_op(HSQ_OP_STATUS, ids[0], NULL);
    HSQ_ASSERT_EQ(r->m.rep.task.task.uploads_expire_ms, end + 1000);
    HSQ_ASSERT_EQ(r->m.rep.task.task.expires_ms, end + 3600000);
    r = task_op(HSQ_OP_STATUS, ids[1], NULL);
    HSQ_ASSERT_EQ(r->m.rep.task.task.uploads_expire_ms, end + 7 * day);
    HSQ_ASSERT_EQ(r->m.rep.task.task.expires_ms, end + 30 * day); /* never longer */
    tick_at(end + 999);
    HSQ_ASSERT(blob_exists("yan", ids[0], "in-0"));
    tick_at(end + 1000);
    HSQ_ASSERT(!blob_exists("yan", ids[0], "in-0"));
    HSQ_ASSERT(blob_exists("yan", ids[1], "in-0"));
    tick_at(end + 3600000);
    HSQ_ASSERT_EQ(state_of(ids[0]), HSQ_STATE_EXPIRED);
    HSQ_ASSERT_EQ(state_of(ids[1]), HSQ_STATE_SUCCEEDED);
}

/* Per-priority-class overrides: parsing, and a high-priority task keeping
 * its outputs 90 days while a normal one keeps the default 30. */
static void test_retention_by_prio(void) {
    uint64_t v[HSQ_RET_N_];
    char err[256];
    HSQ_OK(hsq_retention_override_parse("", v, err, sizeof err));
    HSQ_ASSERT_U64_EQ(v[HSQ_RET_OUTPUTS], 0);
    HSQ_OK(hsq_retention_override_parse("outputs:90d, uploads:14d", v, err, sizeof err));
    HSQ_ASSERT_U64_EQ(v[HSQ_RET_OUTPUTS], 90ull * 86400000);
    HSQ_ASSERT_U64_EQ(v[HSQ_RET_UPLOADS], 14ull * 86400000);
    HSQ_ASSERT_U64_EQ(v[HSQ_RET_FAILED], 0);
    static const char *bad[] = {"outputs",    "output:1d", "outputs:",          "outputs:0s",
                                "outputs:3x", ":1d",       "outputs:1d,,failed"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        HSQ_ASSERT_EQ(hsq_retention_override_parse(bad[i], v, err, sizeof err), HSQ_EINVAL);

    fresh();
    HSQ_OK(hsq_retention_override_parse("outputs:90d", conf.retention_by_prio[HSQ_PRIO_HIGH], err,
                                        sizeof err));
    close_all();
    open_all();
    int64_t hi = submit_prio("zoe", NULL, HSQ_PRIO_HIGH);
    int64_t lo = submit_prio("zoe", NULL, HSQ_PRIO_NORMAL);
    for (int i = 0; i < 2; i++) {
        uint64_t tok = 0;
        uint64_t id = lease1("w1", &tok);
        HSQ_ASSERT_EQ(done("w1", id, tok, "zoe")->m.kind, HSQ_KIND_REPLY);
    }
    const int64_t day = 86400000;
    HSQ_ASSERT_EQ(task_op(HSQ_OP_STATUS, (uint64_t)hi, NULL)->m.rep.task.task.expires_ms,
                  now + 90 * day);
    HSQ_ASSERT_EQ(task_op(HSQ_OP_STATUS, (uint64_t)lo, NULL)->m.rep.task.task.expires_ms,
                  now + 30 * day);
    memset(conf.retention_by_prio, 0, sizeof conf.retention_by_prio);
}

/* A task that never ran is cancelled at retention_pending, and its inputs
 * are deleted at that moment. */
static captured *worker_fail(const char *peer, uint64_t task, uint64_t token, int retryable);

/* The retention index entries that name task id. */
static int index_entries(uint64_t id) {
    HSQ_OK(hsq_store_begin(st, 1));
    hsq_cursor *c;
    HSQ_OK(hsq_cursor_open(st, HSQ_DB_EXPIRY, &c));
    hsq_bytes k;
    int n = 0;
    for (int rc = hsq_cursor_get(c, HSQ_CUR_FIRST, &k, NULL); rc == 0;
         rc = hsq_cursor_get(c, HSQ_CUR_NEXT, &k, NULL))
        n += k.len == 17 && hsq_rd_be64(k.ptr + 8) == id;
    hsq_cursor_close(&c);
    hsq_store_abort(st);
    return n;
}

/* A task that ends within retention_pending writes no index entry: the
 * entry its submit made comes due first, and the sweeper then indexes the
 * dates the task still has. A dry run counts such covered work once per
 * task, also for a requeued task that holds stale entries from its
 * failure, and counts exactly what the real pass then deletes. */
static void test_retention_chain(void) {
    fresh();
    close_all();
    conf.sweep_batch = 0; /* only requests sweep */
    open_all();
    const int64_t hour = 3600000, day = 24 * hour;
    uint64_t a = finished_task_after("cy", hour); /* portrait in the blob store */
    HSQ_ASSERT_EQ(index_entries(a), 1);

    /* b fails for good, is requeued an hour later and then succeeds. */
    uint64_t b = (uint64_t)submit("cy", NULL), tok;
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), b);
    HSQ_ASSERT_EQ(worker_fail("w1", b, tok, 0)->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT_EQ(state_of(b), HSQ_STATE_FAILED);
    HSQ_ASSERT_EQ(index_entries(b), 2); /* the submit's, and its failed inputs' (1 day) */
    now += hour;
    HSQ_ASSERT_EQ(task_op(HSQ_OP_REQUEUE, b, NULL)->m.kind, HSQ_KIND_REPLY);
    now += hour;
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), b);
    HSQ_ASSERT_EQ(done("w1", b, tok, "cy")->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT_EQ(index_entries(b), 3); /* all three stale by now */
    int64_t end = now;

    /* Past the outputs of both: each task's portrait and outputs, once. */
    now = end + 31 * day;
    captured *d = purge_dry(1000);
    HSQ_ASSERT(d && d->m.kind == HSQ_KIND_REPLY);
    hsq_rep_purge dry = d->m.rep.purge;
    HSQ_ASSERT_EQ(dry.more, 0);
    HSQ_ASSERT_U64_EQ(dry.inputs, 2);
    HSQ_ASSERT_U64_EQ(dry.tasks, 2);
    HSQ_ASSERT_U64_EQ(dry.outputs, 2);
    HSQ_ASSERT_EQ(index_entries(a), 1); /* a dry run writes nothing */
    HSQ_ASSERT_EQ(index_entries(b), 3);

    hsq_rep_purge real;
    memset(&real, 0, sizeof real);
    for (int more = 1, rounds = 0; more;) {
        HSQ_ASSERT(++rounds <= 10);
        captured *c = reply_to(purge_request(1000));
        HSQ_ASSERT(c && c->m.kind == HSQ_KIND_REPLY);
        real.inputs += c->m.rep.purge.inputs;
        real.tasks += c->m.rep.purge.tasks;
        real.outputs += c->m.rep.purge.outputs;
        real.bytes += c->m.rep.purge.bytes;
        more = c->m.rep.purge.more;
    }
    HSQ_ASSERT_U64_EQ(real.inputs, dry.inputs);
    HSQ_ASSERT_U64_EQ(real.tasks, dry.tasks);
    HSQ_ASSERT_U64_EQ(real.outputs, dry.outputs);
    HSQ_ASSERT_U64_EQ(real.bytes, dry.bytes);
    HSQ_ASSERT(!blob_exists("cy", a, "in-0"));
    HSQ_ASSERT(!blob_exists("cy", a, "out-0.jpg"));
    HSQ_ASSERT(!inline_exists(b, 0));
    HSQ_ASSERT_EQ(state_of(a), HSQ_STATE_EXPIRED);
    HSQ_ASSERT_EQ(state_of(b), HSQ_STATE_EXPIRED);
    HSQ_ASSERT_EQ(index_entries(a), 1); /* the tombstone's */
    HSQ_ASSERT_EQ(index_entries(b), 1);
}

static void test_retention_pending(void) {
    fresh();
    int64_t id = submit("uma", NULL);
    int64_t t0 = now;
    const int64_t day = 86400000;
    tick_at(t0 + 7 * day - 1);
    HSQ_ASSERT_EQ(state_of((uint64_t)id), HSQ_STATE_QUEUED);
    tick_at(t0 + 7 * day);
    captured *r = task_op(HSQ_OP_STATUS, (uint64_t)id, NULL);
    HSQ_ASSERT_EQ(r->m.rep.task.task.state, HSQ_STATE_CANCELLED);
    HSQ_ASSERT_VIEW_EQ(r->m.rep.task.task.err_msg, "expired before it could run");
    HSQ_ASSERT(!inline_exists((uint64_t)id, 0));
    tick_at(t0 + 8 * day); /* the failed-inputs entry finds nothing left */
    HSQ_ASSERT_EQ(state_of((uint64_t)id), HSQ_STATE_CANCELLED);
    HSQ_ASSERT_EQ(lease1("w1", NULL), 0);
}

/* Where `needle` occurs in the LMDB data file: *slack counts hits in the
 * free gap of a branch or leaf page (between the node pointers and the
 * nodes, bytes LMDB never reads), the return value every other hit (a
 * record, or a free page). */
static int file_hits(const char *path, const char *needle) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    static uint8_t buf[1 << 16];
    size_t nl = strlen(needle), have = 0, n;
    int hits = 0;
    while ((n = fread(buf + have, 1, sizeof buf - have, f)) > 0) {
        have += n;
        size_t i = 0;
        for (; i + nl <= have; i++)
            hits += memcmp(buf + i, needle, nl) == 0;
        memmove(buf, buf + i, have - i); /* a needle across the boundary */
        have -= i;
    }
    fclose(f);
    return hits;
}

static int data_hits(const char *needle, int *slack) {
    char path[300];
    /* In journal mode, the journal's files hold records too. */
    int other = 0;
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/db/journal-%d", dir, i);
        other += file_hits(path, needle);
    }
    snprintf(path, sizeof path, "%s/db/data.mdb", dir);
    FILE *f = fopen(path, "rb");
    HSQ_ASSERT(f != NULL);
    static uint8_t page[4096];
    size_t nl = strlen(needle);
    *slack = 0;
    while (fread(page, 1, sizeof page, f) == sizeof page) {
        uint16_t flags, lower, upper;
        memcpy(&flags, page + 10, 2);
        memcpy(&lower, page + 12, 2);
        memcpy(&upper, page + 14, 2);
        int tree = (flags & 0x03) != 0; /* P_BRANCH | P_LEAF */
        for (size_t i = 0; i + nl <= sizeof page; i++) {
            if (memcmp(page + i, needle, nl) != 0)
                continue;
            if (tree && i >= lower && i < upper)
                (*slack)++;
            else
                other++;
        }
    }
    fclose(f);
    return other;
}

static void slow_checkpoint(void *ud) {
    (void)ud;
    usleep(30000);
}

static uint32_t swept_in_turn(void) {
    begin();
    turn();
    hsq_turn_cost c;
    hsq_queue_turn_cost(q, &c);
    return c.swept;
}

/* Journal mode: the sweeper's share of a turn follows the checkpoints (its
 * pages are what they write back, and acknowledgements queue behind
 * that). One that took over 20 ms halves the share; a quick one gives
 * 4/64 back. 300 tasks past retention_pending, so every turn has more due
 * than it may take. */
static void test_disk_paced(void) {
    if (!journal_mode())
        return;
    fresh();
    for (int i = 0; i < 300; i++)
        HSQ_ASSERT(submit("paced", NULL) > 0);
    now += 8ll * 86400000;
    /* (The submits' own checkpoints may have been slow on a busy disk: the
     * share is at most 64 here, not exactly.) */
    hsq_store_set_checkpoint_hook(st, slow_checkpoint, NULL);
    HSQ_OK(hsq_store_checkpoint(st));
    uint32_t s1 = swept_in_turn();
    HSQ_ASSERT(s1 >= 1 && s1 <= 32); /* at most half of sweep_batch 64 */
    HSQ_OK(hsq_store_checkpoint(st));
    uint32_t s2 = swept_in_turn();
    HSQ_ASSERT_EQ(s2, s1 > 1 ? s1 / 2 : 1);
    hsq_store_set_checkpoint_hook(st, NULL, NULL);
    HSQ_OK(hsq_store_checkpoint(st));
    hsq_store_jstats js;
    hsq_store_journal_stats(st, &js);
    uint32_t s3 = swept_in_turn();
    if (js.checkpoint_us <= 20000)
        HSQ_ASSERT_EQ(s3, s2 + 4);
    else /* this disk was slow even so */
        HSQ_ASSERT_EQ(s3, s2 > 1 ? s2 / 2 : 1);
    HSQ_ASSERT_EQ(swept_in_turn(), s3); /* no checkpoint between: no change */
}

/* Turns until the rewrite after an erasure and the free-page scrub are
 * both done (their META entries gone). */
static void settle_scrub(void) {
    uint64_t t0 = hsq_clock_mono_us();
    for (int turns = 0;; turns++) {
        hsq_bytes v;
        HSQ_OK(hsq_store_begin(st, 1));
        int scrub = hsq_store_get(st, HSQ_DB_META, "scrub", 5, &v);
        int rewrite = hsq_store_get(st, HSQ_DB_META, "rewrite", 7, &v);
        hsq_store_abort(st);
        if (scrub == HSQ_ENOTFOUND && rewrite == HSQ_ENOTFOUND && !hsq_store_forget_pending(st))
            break;
        /* (a turn is microseconds; the journal's wipe waits for a busy
         * disk: bounded by time, not turns) */
        HSQ_ASSERT(turns < 1000 || hsq_clock_mono_us() - t0 < 60000000);
        if (scrub == HSQ_ENOTFOUND && rewrite == HSQ_ENOTFOUND)
            usleep(1000); /* the checkpoint thread wipes the journal's files */
        begin();
        turn();
    }
}

/* After an erasure, the free-page scrub zeroes every page LMDB freed up to
 * that turn once no snapshot can reach it, and the rewrite (queue.c) writes
 * every live page anew from clean memory: the user id survives in no
 * record, no free page, and not in the unused middle of a live page either
 * (63 copies there with the scrub alone). */
static void test_erase_scrub(void) {
    fresh();
    static const char victim[] = "scrub-victim-5e1f";
    for (int i = 0; i < 40; i++) {
        HSQ_ASSERT(submit(victim, NULL) > 0);
        HSQ_ASSERT(submit("keeper", NULL) > 0);
    }
    int slack;
    uint64_t erid = erase_request(victim);
    for (int i = 0; i < 4 && !replied(erid); i++) {
        begin();
        turn();
    }
    HSQ_ASSERT_EQ(reply_to(erid)->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT(data_hits(victim, &slack) > 0); /* freed pages still hold it */
    settle_scrub();
    HSQ_ASSERT_EQ(data_hits(victim, &slack), 0);
    HSQ_ASSERT_EQ(slack, 0);
    HSQ_ASSERT(data_hits("keeper", &slack) > 0); /* the other user's records */
    HSQ_ASSERT(submit("keeper", NULL) > 0);
}

/* With enough users for the per-user trees to have branch pages, an erased
 * user's id must not live on as a separator: LMDB copies the first key of
 * a page into its parent when the page splits and keeps that copy after
 * the key itself is deleted. So no tree is keyed by the raw user id or
 * idempotency key (users, history, idempotency keys and credits are keyed
 * by a keyed hash), and after the scrub a byte scan finds neither in any
 * record or free page. */
static void test_erase_separators(void) {
    fresh();
    enum { USERS = 1200, STEP = 12 };
    static char name[USERS][32];
    hsq_bytes f = {tiny, sizeof tiny};
    for (int b = 0; b < USERS; b += 200) {
        begin();
        for (int i = b; i < b + 200; i++) {
            snprintf(name[i], sizeof name[i], "sep-user-%04d-x", i);
            hsq_wire_msg m;
            submit_msg(&m, name[i], name[i], HSQ_PRIO_NORMAL);
            m.rid = rid_seq++;
            feed(HSQ_SOCK_CLIENT, "web-1", &m, &f, 1);
        }
        turn();
    }
    for (int i = 0; i < USERS; i += STEP) {
        uint64_t erid = erase_request(name[i]);
        for (int t = 0; t < 8 && !replied(erid); t++) {
            begin();
            turn();
        }
        HSQ_ASSERT_EQ(reply_to(erid)->m.kind, HSQ_KIND_REPLY);
    }
    settle_scrub();
    int slack, left = 0;
    for (int i = 0; i < USERS; i += STEP)
        if (data_hits(name[i], &slack) > 0) {
            fprintf(stderr, "erased user %s is still in the LMDB file\n", name[i]);
            left++;
        }
    HSQ_ASSERT_EQ(left, 0);
    HSQ_ASSERT(data_hits(name[1], &slack) > 0);                        /* a user still there */
    HSQ_ASSERT_EQ(submit(name[1], name[1]), submit(name[1], name[1])); /* idempotent still */
}

/* META "rewrite": the tree the pass is in, and whether another follows. */
static int rewrite_state(uint32_t *db, int *again) {
    hsq_bytes v;
    HSQ_OK(hsq_store_begin(st, 1));
    int rc = hsq_store_get(st, HSQ_DB_META, "rewrite", 7, &v);
    if (rc == 0) {
        HSQ_ASSERT(v.len >= 5);
        memcpy(db, v.ptr, 4);
        *again = v.ptr[4];
    }
    hsq_store_abort(st);
    return rc == 0;
}

/* An erasure while a rewrite pass is under way does not start it over
 * (with erasures more frequent than a pass, none would ever end): the pass
 * goes on, a second one follows it, and neither user leaves a copy. A
 * restart in the middle of a pass resumes it. */
static void test_rewrite_again(void) {
    fresh();
    static const char va[] = "again-victim-a1", vb[] = "again-victim-b2";
    hsq_bytes f = {tiny, sizeof tiny};
    for (int b = 0; b < 2000; b += 200) {
        begin();
        for (int i = b; i < b + 200; i++) {
            hsq_wire_msg m;
            submit_msg(&m, i % 20 == 0 ? va : i % 20 == 1 ? vb : "keeper", NULL, HSQ_PRIO_NORMAL);
            m.rid = rid_seq++;
            feed(HSQ_SOCK_CLIENT, "web-1", &m, &f, 1);
        }
        turn();
    }
    uint64_t erid = erase_request(va);
    for (int t = 0; t < 8 && !replied(erid); t++) {
        begin();
        turn();
    }
    HSQ_ASSERT_EQ(reply_to(erid)->m.kind, HSQ_KIND_REPLY);
    uint32_t db = 0;
    int again = 0;
    for (int t = 0; t < 200 && rewrite_state(&db, &again) && db < HSQ_DB_PENDING; t++) {
        begin();
        turn();
    }
    HSQ_ASSERT(rewrite_state(&db, &again) && db >= HSQ_DB_PENDING && !again);
    /* A restart (a crash, say) in the middle: the pass goes on from where
     * its last turn left it (a new process has no old buffers to drop). */
    close_all();
    open_all();
    uint32_t resumed = 0;
    HSQ_ASSERT(rewrite_state(&resumed, &again) && resumed == db);
    begin();
    turn();
    HSQ_ASSERT(rewrite_state(&db, &again) && db >= resumed);
    uint32_t reached = db;
    erid = erase_request(vb);
    for (int t = 0; t < 8 && !replied(erid); t++) {
        begin();
        turn();
    }
    HSQ_ASSERT_EQ(reply_to(erid)->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT(rewrite_state(&db, &again));
    HSQ_ASSERT(db >= reached); /* went on, not over */
    HSQ_ASSERT_EQ(again, 1);
    settle_scrub();
    int slack;
    HSQ_ASSERT_EQ(data_hits(va, &slack), 0);
    HSQ_ASSERT_EQ(slack, 0);
    HSQ_ASSERT_EQ(data_hits(vb, &slack), 0);
    HSQ_ASSERT_EQ(slack, 0);
    HSQ_ASSERT(data_hits("keeper", &slack) > 0);
}

static int64_t rewrite_began(void) {
    hsq_bytes v;
    int64_t at = -1;
    HSQ_OK(hsq_store_begin(st, 1));
    if (hsq_store_get(st, HSQ_DB_META, "rewrite_at", 10, &v) == 0 && v.len == sizeof at)
        memcpy(&at, v.ptr, sizeof at);
    hsq_store_abort(st);
    return at;
}

/* With no purge request at all, what the continuous sweeper deletes leaves
 * the live pages within a day: a pass begins once a day when the sweeper
 * has deleted anything since the last one began, and not more often. */
static void test_rewrite_daily(void) {
    fresh();
    static const char gone[] = "swept-user-5c1d";
    char prefix[HSQ_BLOB_PREFIX_LEN + 1];
    hsq_blob_user_prefix(bl, gone, strlen(gone), prefix);
    const int64_t hour = 3600000, day = 24 * hour, base = now;
    for (int h = 0; h < 24; h++) { /* one an hour: their dates come an hour apart */
        now = base + h * hour;
        finished_task(gone);
    }
    HSQ_ASSERT(finished_task("keeper") > 0);
    uint32_t db;
    int again, slack;
    HSQ_ASSERT(!rewrite_state(&db, &again));
    HSQ_ASSERT_EQ(rewrite_began(), -1);
    /* Past the uploads' dates, an hour at a time: the sweeper deletes every
     * hour, and one pass begins, at the first. */
    int64_t t0 = base + 7 * day, first = -1;
    for (int h = 0; h < 24; h++) {
        for (int i = 0; i < 4; i++)
            tick_at(t0 + h * hour + i);
        settle_scrub();
        int64_t at = rewrite_began();
        if (first < 0)
            first = at;
        HSQ_ASSERT(at == first);
    }
    HSQ_ASSERT(first >= t0);
    /* Past every date; the next day's pass takes what the last one missed. */
    for (int i = 0; i < 200; i++)
        tick_at(base + 400 * day + i);
    settle_scrub();
    tick_at(now + day);
    settle_scrub();
    HSQ_ASSERT_EQ(data_hits(prefix, &slack), 0);
    HSQ_ASSERT_EQ(slack, 0);
    /* Nothing deleted since: no pass the day after. */
    int64_t last = rewrite_began();
    tick_at(now + day);
    HSQ_ASSERT(!rewrite_state(&db, &again));
    HSQ_ASSERT_EQ(rewrite_began(), last);
}

/* Records of the rewrite and the rekey that do not parse stop the queue from
 * loading with HSQ_ECORRUPT (nothing is guessed), and it loads again once
 * they are gone: a rewrite position too short or in a tree that does not
 * exist, a pass date of the wrong size, and, in a store not yet rekeyed, a
 * per-user key that is not u8 len | user. */
static void test_bad_rewrite_records(void) {
    fresh();
    HSQ_ASSERT(submit("ok-user", NULL) > 0);
    static const uint8_t short_pos[2] = {1, 0}, no_tree[5] = {99, 0, 0, 0, 0}, at[3] = {1, 2, 3};
    static const uint8_t raw[2] = {200, 'x'};
    struct {
        hsq_db db;
        const void *k;
        size_t kl;
        const void *v;
        size_t vl;
    } bad[] = {
        {HSQ_DB_META, "rewrite", 7, short_pos, sizeof short_pos},
        {HSQ_DB_META, "rewrite", 7, no_tree, sizeof no_tree},
        {HSQ_DB_META, "rewrite_at", 10, at, sizeof at},
        {HSQ_DB_USERS, raw, sizeof raw, "", 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        HSQ_OK(hsq_store_begin(st, 0));
        HSQ_OK(hsq_store_put(st, bad[i].db, bad[i].k, bad[i].kl, bad[i].v, bad[i].vl));
        if (bad[i].db == HSQ_DB_USERS)
            HSQ_OK(hsq_store_del(st, HSQ_DB_META, "user_keys", 9));
        HSQ_OK(hsq_store_commit(st));
        cap_clear();
        hsq_queue_free(&q);
        HSQ_ASSERT_EQ(hsq_queue_new(&q, st, bl, &conf, now), HSQ_ECORRUPT);
        HSQ_ASSERT(q == NULL);
        HSQ_OK(hsq_store_begin(st, 0));
        HSQ_OK(hsq_store_del(st, bad[i].db, bad[i].k, bad[i].kl));
        HSQ_OK(hsq_store_commit(st));
        HSQ_OK(hsq_queue_new(&q, st, bl, &conf, now));
    }
    HSQ_ASSERT(submit("ok-user", NULL) > 0);
}

/* A purge that finished (more = 0) scrubs the free pages as well: the
 * records retention deleted leave no copy there. (The user record stays:
 * retention deletes tasks, not the account; so the marker is the user's
 * blob path hash, which only the deleted task records held.) */
static void test_purge_scrub(void) {
    fresh();
    static const char gone[] = "purged-user-93b7";
    char prefix[HSQ_BLOB_PREFIX_LEN + 1];
    hsq_blob_user_prefix(bl, gone, strlen(gone), prefix);
    for (int i = 0; i < 20; i++)
        finished_task(gone);
    int slack;
    for (int round = 0; round < 4; round++) {
        tick_at(now + 400ll * 86400000); /* past every retention class */
        for (int more = 1, n = 0; more; n++) {
            HSQ_ASSERT(n < 50);
            captured *c = reply_to(purge_request(100000));
            HSQ_ASSERT(c && c->m.kind == HSQ_KIND_REPLY);
            more = c->m.rep.purge.more;
        }
    }
    hsq_bytes v;
    HSQ_OK(hsq_store_begin(st, 1));
    HSQ_OK(hsq_store_get(st, HSQ_DB_META, "scrub", 5, &v)); /* requested by the last reply */
    hsq_store_abort(st);
    HSQ_ASSERT(finished_task("keeper") > 0);
    settle_scrub();
    HSQ_ASSERT_EQ(data_hits(prefix, &slack), 0);
    HSQ_ASSERT_EQ(slack, 0);
}

/* fsck finds a blob no record references and a record whose blob is gone,
 * and --repair leaves a consistent store. */
static void test_fsck(void) {
    fresh();
    int64_t a = submit("vic", NULL), b = submit("vic", NULL);
    uint64_t ta, tb;
    HSQ_ASSERT_U64_EQ(lease1("w1", &ta), (uint64_t)a);
    HSQ_ASSERT_EQ(done("w1", (uint64_t)a, ta, "vic")->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT_U64_EQ(lease1("w1", &tb), (uint64_t)b);
    HSQ_ASSERT_EQ(done("w1", (uint64_t)b, tb, "vic")->m.kind, HSQ_KIND_REPLY);
    hsq_fsck_report r;
    HSQ_OK(hsq_fsck_run(st, bl, 0, now, NULL, &r));
    HSQ_ASSERT_EQ(r.orphans, 0);
    HSQ_ASSERT_EQ(r.dangling, 0);
    HSQ_ASSERT_EQ(r.tasks, 2);
    /* an orphan in a finished task's directory, and a missing output */
    char prefix[HSQ_BLOB_PREFIX_LEN + 1], key[300];
    hsq_blob_user_prefix(bl, "vic", 3, prefix);
    snprintf(key, sizeof key, "%s%lld/out-9-77.jpg", prefix, (long long)a);
    HSQ_OK(hsq_blob_put(bl, key, "x", 1, HSQ_BLOB_SYNC));
    snprintf(key, sizeof key, "%s%lld/out-0.jpg", prefix, (long long)b);
    HSQ_OK(hsq_blob_delete(bl, key));
    HSQ_OK(hsq_fsck_run(st, bl, 0, now, NULL, &r));
    HSQ_ASSERT_EQ(r.orphans, 1);
    HSQ_ASSERT_EQ(r.dangling, 1);
    HSQ_OK(hsq_fsck_run(st, bl, 1, now, NULL, &r));
    HSQ_ASSERT_EQ(r.repaired, 2);
    HSQ_OK(hsq_fsck_run(st, bl, 0, now, NULL, &r));
    HSQ_ASSERT_EQ(r.orphans, 0);
    HSQ_ASSERT_EQ(r.dangling, 0);

    /* Files a recorded intent is deleting are pending, not orphans: a user
     * in the erasure ledger (whose records may be gone already), and an
     * upload of the ids start-up recovery set aside. */
    hsq_blob_user_prefix(bl, "wes", 3, prefix);
    snprintf(key, sizeof key, "%s1/out-0.jpg", prefix);
    HSQ_OK(hsq_blob_put(bl, key, "x", 1, HSQ_BLOB_SYNC));
    uint64_t erid = erase_request("wes"); /* the ledger entry; the erasure is next turn */
    HSQ_OK(hsq_fsck_run(st, bl, 0, now, NULL, &r));
    HSQ_ASSERT_EQ(r.orphans, 0);
    HSQ_ASSERT_EQ(r.pending, 1);
    begin();
    turn();
    HSQ_ASSERT_EQ(reply_to(erid)->m.kind, HSQ_KIND_REPLY);
    close_all();
    open_all(); /* not a clean stop */
    hsq_id_range rr[HSQ_RECOVER_RANGES];
    size_t nr;
    HSQ_OK(hsq_queue_recover_begin(q, rr, &nr));
    HSQ_ASSERT_EQ(nr, 1);
    HSQ_ASSERT(submit("vic", NULL) > 0); /* a task above the range */
    hsq_blob_user_prefix(bl, "vic", 3, prefix);
    snprintf(key, sizeof key, "%s%llu/in-0", prefix, (unsigned long long)rr[0].lo);
    HSQ_OK(hsq_blob_put(bl, key, "x", 1, HSQ_BLOB_SYNC));
    HSQ_OK(hsq_fsck_run(st, bl, 0, now, NULL, &r));
    HSQ_ASSERT_EQ(r.orphans, 0);
    HSQ_ASSERT_EQ(r.pending, 1);

    /* A corrupt recovery record: hsqd's start refuses it; fsck counts the
     * upload it stood for as an orphan, and the repair deletes the upload,
     * then the record, after which a start works again. */
    static const char *const bad[] = {"short", "zzzzzzzz00000000"}; /* odd size; lo > hi */
    for (int i = 0; i < 2; i++) {
        HSQ_OK(hsq_store_begin(st, 0));
        HSQ_OK(hsq_store_put(st, HSQ_DB_META, "recover", 7, bad[i], strlen(bad[i])));
        HSQ_OK(hsq_store_commit(st));
        close_all();
        open_all();
        HSQ_ASSERT_EQ(hsq_queue_recover_begin(q, rr, &nr), HSQ_ECORRUPT);
        HSQ_OK(hsq_fsck_run(st, bl, 0, now, NULL, &r));
        HSQ_ASSERT_EQ(r.recover_corrupt, 1);
        HSQ_ASSERT_EQ(r.orphans, (uint64_t)(i == 0));
        HSQ_ASSERT_EQ(r.pending, 0);
        HSQ_OK(hsq_fsck_run(st, bl, 1, now, NULL, &r));
        HSQ_ASSERT_EQ(r.repaired, (uint64_t)(i == 0) + 1);
        uint64_t sz;
        HSQ_ASSERT(hsq_blob_size(bl, key, &sz) != 0);
        HSQ_OK(hsq_fsck_run(st, bl, 0, now, NULL, &r));
        HSQ_ASSERT_EQ(r.recover_corrupt, 0);
        HSQ_ASSERT_EQ(r.orphans + r.dangling, 0);
        HSQ_OK(hsq_queue_recover_begin(q, rr, &nr));
    }
}

/* The per-user token bucket: a burst passes, the next submit is refused
 * with the wait, another user is unaffected, time refills the bucket, and
 * an idempotent resubmit costs no token. */
static void test_rate_limit(void) {
    fresh();
    conf.submit_rate = 2;
    conf.submit_burst = 3;
    close_all();
    open_all();
    for (int i = 0; i < 3; i++)
        HSQ_ASSERT(submit("wes", NULL) > 0);
    HSQ_ASSERT_EQ(submit("wes", NULL), HSQ_ERATELIMITED);
    char msg[256];
    snprintf(msg, sizeof msg, "%.*s", (int)cap[0].m.rep.error.message.len,
             cap[0].m.rep.error.message.ptr);
    HSQ_ASSERT(strstr(msg, "retry after 500 ms") != NULL || strstr(msg, "retry after 501 ms"));
    HSQ_ASSERT(submit("xia", NULL) > 0);
    now += 499;
    HSQ_ASSERT_EQ(submit("wes", NULL), HSQ_ERATELIMITED);
    now += 2;
    int64_t id = submit("wes", "k");
    HSQ_ASSERT(id > 0);
    HSQ_ASSERT_EQ(submit("wes", "k"), id); /* idempotent: no token needed */
    conf.submit_rate = 0;

    /* Per CURVE key (one web-tier instance), across all its users. */
    conf.key_submit_rate = 1;
    conf.key_submit_burst = 2;
    close_all();
    open_all();
    feed_key = "web:eu-1";
    HSQ_ASSERT(submit("u1", NULL) > 0);
    HSQ_ASSERT(submit("u2", NULL) > 0);
    HSQ_ASSERT_EQ(submit("u3", NULL), HSQ_ERATELIMITED);
    feed_key = "web:us-1"; /* another instance has its own bucket */
    HSQ_ASSERT(submit("u3", NULL) > 0);
    feed_key = NULL; /* plaintext peers have no key: no per-key limit */
    HSQ_ASSERT(submit("u4", NULL) > 0);
    conf.key_submit_rate = 0;
}

static void test_stats(void) {
    fresh();
    int64_t t0 = now;
    submit("pat", NULL);
    now += 50;
    submit("quin", NULL);
    submit_prio("quin", NULL, HSQ_PRIO_HIGH);
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_STATS;
    captured *r = ask("ops", &m, NULL, 0);
    HSQ_ASSERT_EQ(r->m.rep.stats.queued, 3);
    HSQ_ASSERT_EQ(r->m.rep.stats.queued_by_prio[HSQ_PRIO_HIGH], 1);
    HSQ_ASSERT_EQ(r->m.rep.stats.queued_by_prio[HSQ_PRIO_NORMAL], 2);
    HSQ_ASSERT_EQ(r->m.rep.stats.oldest_queued_ms, t0);
    HSQ_ASSERT_EQ(r->m.rep.stats.submitted_total, 3);
}

/* ---- credits ---- */

/* Grant (or show with grant 0); fills balance and reserved, returns the
 * error code or 0. */
static int credits_op(const char *user, int64_t grant, int64_t *balance, int64_t *reserved) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_CREDITS;
    m.req.credits.user = hsq_str_c(user);
    m.req.credits.grant = grant;
    captured *r = ask("ops", &m, NULL, 0);
    if (r->m.kind == HSQ_KIND_ERROR)
        return r->m.rep.error.code;
    HSQ_ASSERT_VIEW_EQ(r->m.rep.credits.user, user);
    if (balance)
        *balance = r->m.rep.credits.balance;
    if (reserved)
        *reserved = r->m.rep.credits.reserved;
    return 0;
}

#define ASSERT_CREDITS(user, bal, res)                                                             \
    do {                                                                                           \
        int64_t got_bal = -1, got_res = -1;                                                        \
        HSQ_OK(credits_op(user, 0, &got_bal, &got_res));                                           \
        HSQ_ASSERT_EQ(got_bal, bal);                                                               \
        HSQ_ASSERT_EQ(got_res, res);                                                               \
    } while (0)

static captured *worker_fail(const char *peer, uint64_t task, uint64_t token, int retryable) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_FAIL;
    m.rid = rid_seq++;
    m.req.fail.task = task;
    m.req.fail.token = token;
    m.req.fail.code = retryable ? HSQ_ERETRYABLE : HSQ_ENOFACE;
    m.req.fail.message = HSQ_STR_LIT("no luck");
    m.req.fail.retryable = (uint8_t)retryable;
    begin();
    feed(HSQ_SOCK_WORKER, peer, &m, NULL, 0);
    turn();
    return reply_to(m.rid);
}

/* A submit asking for 2 backgrounds x 3 styles x 2 sizes = 12 outputs. */
static int64_t submit_12(const char *user) {
    hsq_wire_settings set;
    memset(&set, 0, sizeof set);
    set.n_backgrounds = 2;
    set.backgrounds[0].kind = HSQ_BG_SOLID;
    set.backgrounds[1].kind = HSQ_BG_VIGNETTE;
    set.n_styles = 3;
    set.styles[0].name = HSQ_STR_LIT("a");
    set.styles[1].name = HSQ_STR_LIT("b");
    set.styles[2].name = HSQ_STR_LIT("c");
    hsq_wbuf sb;
    hsq_wbuf_init(&sb);
    HSQ_OK(hsq_wire_settings_encode(&set, &sb));
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_SUBMIT;
    m.rid = rid_seq++;
    m.req.submit.user = hsq_str_c(user);
    m.req.submit.prio = HSQ_PRIO_NORMAL;
    m.req.submit.n_inputs = 1;
    m.req.submit.inputs[0].kind = HSQ_STR_LIT("portrait");
    m.req.submit.inputs[0].frame = 0;
    m.req.submit.n_outputs = 2;
    for (int i = 0; i < 2; i++) {
        m.req.submit.outputs[i].width = 64 + (uint32_t)i;
        m.req.submit.outputs[i].height = 80;
        m.req.submit.outputs[i].format = HSQ_FMT_PNG;
    }
    m.req.submit.settings = (hsq_bytes){(const uint8_t *)sb.data, sb.len};
    hsq_bytes f = {tiny, sizeof tiny};
    begin();
    feed(HSQ_SOCK_CLIENT, "web-1", &m, &f, 1);
    turn();
    hsq_wbuf_free(&sb);
    captured *r = reply_to(m.rid);
    if (r->m.kind == HSQ_KIND_ERROR)
        return r->m.rep.error.code;
    return (int64_t)r->m.rep.submit.task;
}

static size_t audit_lines(const char *needle) {
    size_t n = 0;
    HSQ_OK(hsq_store_begin(st, 1));
    hsq_cursor *cur;
    HSQ_OK(hsq_cursor_open(st, HSQ_DB_AUDIT, &cur));
    hsq_bytes k, v;
    int rc = hsq_cursor_get(cur, HSQ_CUR_FIRST, &k, &v);
    while (rc == 0) {
        char line[600];
        snprintf(line, sizeof line, "%.*s", (int)v.len, (const char *)v.ptr);
        if (strstr(line, needle))
            n++;
        rc = hsq_cursor_get(cur, HSQ_CUR_NEXT, &k, &v);
    }
    hsq_cursor_close(&cur);
    hsq_store_abort(st);
    return n;
}

/* Reserve, consume and refund are exact on every path; a refused submit
 * leaves nothing behind; concurrent submits in one turn never spend the
 * same credit twice. */
static void test_credits(void) {
    fresh();
    /* Off (the default): submits are free and nothing is written. */
    int64_t free_id = submit("cy", NULL);
    HSQ_ASSERT(free_id > 0);
    ASSERT_CREDITS("cy", 0, 0);
    HSQ_ASSERT_EQ(task_op(HSQ_OP_CANCEL, (uint64_t)free_id, NULL)->m.kind, HSQ_KIND_REPLY);

    conf.credits = 1;
    conf.credit_cost = 2;
    close_all();
    open_all();
    /* No credits: refused, with balance and cost in the message. */
    HSQ_ASSERT_EQ(submit("cy", NULL), HSQ_ENOCREDITS);
    char msg[300];
    snprintf(msg, sizeof msg, "%.*s", (int)cap[0].m.rep.error.message.len,
             cap[0].m.rep.error.message.ptr);
    HSQ_ASSERT(strstr(msg, "balance is 0 credits") != NULL);
    HSQ_ASSERT(strstr(msg, "costs 2 (1 outputs x 2)") != NULL);
    HSQ_OK(credits_op("cy", 100, NULL, NULL));
    ASSERT_CREDITS("cy", 100, 0);
    HSQ_ASSERT_EQ(audit_lines("op=credit_grant"), 1);
    HSQ_ASSERT_EQ(audit_lines("cy"), 0); /* subjects only, never the raw id */

    /* Outputs are background x style x size: 12 x 2 = 24 reserved. */
    int64_t big = submit_12("cy");
    HSQ_ASSERT(big > 0);
    ASSERT_CREDITS("cy", 100, 24);

    /* success consumes */
    uint64_t tok;
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), (uint64_t)big);
    HSQ_ASSERT_EQ(done("w1", (uint64_t)big, tok, "cy")->m.kind, HSQ_KIND_REPLY);
    ASSERT_CREDITS("cy", 76, 0);
    /* A late duplicate done is stale and charges nothing. */
    HSQ_ASSERT_EQ(done("w1", (uint64_t)big, tok, "cy")->m.rep.error.code, HSQ_ESTALE);
    ASSERT_CREDITS("cy", 76, 0);

    /* final failure after retries refunds; retries keep the reservation */
    int64_t a = submit("cy", NULL);
    ASSERT_CREDITS("cy", 76, 2);
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), (uint64_t)a);
    HSQ_ASSERT_EQ(worker_fail("w1", (uint64_t)a, tok, 1)->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT_EQ(state_of((uint64_t)a), HSQ_STATE_QUEUED);
    ASSERT_CREDITS("cy", 76, 2);
    now += 500;
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), (uint64_t)a);
    now += 1001; /* the lease expires: a retry as well */
    begin();
    turn();
    ASSERT_CREDITS("cy", 76, 2);
    now += 500;
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), (uint64_t)a);
    HSQ_ASSERT_EQ(worker_fail("w1", (uint64_t)a, tok, 1)->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT_EQ(state_of((uint64_t)a), HSQ_STATE_FAILED); /* third attempt: dead letter */
    ASSERT_CREDITS("cy", 76, 0);
    /* requeue pays again, and a success then consumes */
    HSQ_ASSERT_EQ(task_op(HSQ_OP_REQUEUE, (uint64_t)a, NULL)->m.kind, HSQ_KIND_REPLY);
    ASSERT_CREDITS("cy", 76, 2);
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), (uint64_t)a);
    HSQ_ASSERT_EQ(done("w1", (uint64_t)a, tok, "cy")->m.kind, HSQ_KIND_REPLY);
    ASSERT_CREDITS("cy", 74, 0);

    /* permanent failure refunds at once */
    int64_t b = submit("cy", NULL);
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), (uint64_t)b);
    HSQ_ASSERT_EQ(worker_fail("w1", (uint64_t)b, tok, 0)->m.kind, HSQ_KIND_REPLY);
    ASSERT_CREDITS("cy", 74, 0);

    /* cancel of a queued task refunds */
    int64_t c = submit("cy", NULL);
    ASSERT_CREDITS("cy", 74, 2);
    HSQ_ASSERT_EQ(task_op(HSQ_OP_CANCEL, (uint64_t)c, NULL)->m.kind, HSQ_KIND_REPLY);
    ASSERT_CREDITS("cy", 74, 0);
    /* cancel of a leased task refunds; the worker's late done charges nothing */
    int64_t d = submit("cy", NULL);
    HSQ_ASSERT_U64_EQ(lease1("w1", &tok), (uint64_t)d);
    HSQ_ASSERT_EQ(task_op(HSQ_OP_CANCEL, (uint64_t)d, NULL)->m.kind, HSQ_KIND_REPLY);
    ASSERT_CREDITS("cy", 74, 0);
    HSQ_ASSERT_EQ(done("w1", (uint64_t)d, tok, "cy")->m.rep.error.code, HSQ_ESTALE);
    ASSERT_CREDITS("cy", 74, 0);

    /* expiry before the run (retention_pending) refunds */
    int64_t e = submit("cy", NULL);
    ASSERT_CREDITS("cy", 74, 2);
    tick_at(now + (int64_t)conf.retention_pending_ms);
    HSQ_ASSERT_EQ(state_of((uint64_t)e), HSQ_STATE_CANCELLED);
    ASSERT_CREDITS("cy", 74, 0);

    /* Reserved credits cannot be taken back; free ones can. */
    int64_t f = submit("cy", NULL);
    HSQ_ASSERT(f > 0);
    HSQ_ASSERT_EQ(credits_op("cy", -73, NULL, NULL), HSQ_ECONFLICT);
    HSQ_OK(credits_op("cy", -72, NULL, NULL));
    ASSERT_CREDITS("cy", 2, 2);
    HSQ_ASSERT_EQ(submit("cy", NULL), HSQ_ENOCREDITS); /* all 2 are reserved */
    HSQ_ASSERT_EQ(credits_op("cy", INT64_MAX, NULL, NULL), HSQ_EINVAL);

    /* No double spend: 10 submits in one turn against 7 free credits at
     * cost 2 -> exactly 3 accepted, 1 credit stays free. */
    HSQ_OK(credits_op("dee", 7, NULL, NULL));
    hsq_bytes fr = {tiny, sizeof tiny};
    uint64_t rids[10];
    begin();
    for (int i = 0; i < 10; i++) {
        hsq_wire_msg m;
        memset(&m, 0, sizeof m);
        m.op = HSQ_OP_SUBMIT;
        m.rid = rids[i] = rid_seq++;
        m.req.submit.user = HSQ_STR_LIT("dee");
        m.req.submit.prio = HSQ_PRIO_NORMAL;
        m.req.submit.n_inputs = 1;
        m.req.submit.inputs[0].kind = HSQ_STR_LIT("portrait");
        m.req.submit.inputs[0].frame = 0;
        m.req.submit.n_outputs = 1;
        m.req.submit.outputs[0].width = 64;
        m.req.submit.outputs[0].height = 80;
        m.req.submit.outputs[0].format = HSQ_FMT_JPEG;
        feed(HSQ_SOCK_CLIENT, "web-1", &m, &fr, 1);
    }
    HSQ_OK(turn());
    int ok = 0, refused = 0;
    for (int i = 0; i < 10; i++) {
        captured *r = reply_to(rids[i]);
        if (r->m.kind == HSQ_KIND_REPLY)
            ok++;
        else if (r->m.rep.error.code == HSQ_ENOCREDITS)
            refused++;
    }
    HSQ_ASSERT_EQ(ok, 3);
    HSQ_ASSERT_EQ(refused, 7);
    ASSERT_CREDITS("dee", 7, 6);

    /* The ledger survives a restart (it is in LMDB, not memory). */
    close_all();
    open_all();
    ASSERT_CREDITS("dee", 7, 6);

    /* erase-user refunds the queued tasks and removes the record. */
    uint64_t erid = erase_request("dee");
    begin();
    turn(); /* the erasure runs in the turn after the ledger commit */
    captured *r = reply_to(erid);
    HSQ_ASSERT_EQ(r->m.kind, HSQ_KIND_REPLY);
    HSQ_ASSERT_EQ(r->m.rep.erase.active, 3);
    HSQ_ASSERT_EQ(audit_lines("op=credit_erase"), 1);
    HSQ_OK(hsq_store_begin(st, 1));
    hsq_bytes v;
    uint8_t k[17];
    hashed_user_key("dee", k);
    HSQ_ASSERT_EQ(hsq_store_get(st, HSQ_DB_CREDITS, k, sizeof k, &v), HSQ_ENOTFOUND);
    hsq_store_abort(st);
    ASSERT_CREDITS("dee", 0, 0);

    /* Roles: only an operator may grant. */
    feed_role = HSQ_ROLE_WEB;
    HSQ_ASSERT_EQ(credits_op("cy", 5, NULL, NULL), HSQ_EFORBIDDEN);
    feed_role = HSQ_ROLE_OPERATOR;
    HSQ_OK(credits_op("cy", 5, NULL, NULL));
    feed_role = HSQ_ROLE_ANY;
    HSQ_ASSERT(audit_lines("op=credit_reserve") >= 9);
    HSQ_ASSERT(audit_lines("op=credit_refund") >= 6);
    HSQ_ASSERT_EQ(audit_lines("op=credit_consume"), 2);
    conf.credits = 0;
    conf.credit_cost = 0;
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/hsq-test-queue-XXXXXX");
    HSQ_ASSERT(mkdtemp(dir) != NULL);
    test_submit_lease_done_result();
    test_checking();
    test_staging();
    test_idempotent_submit();
    test_lease_expiry_retry_dead_letter();
    test_heartbeat_keeps_lease();
    test_fail_retryable_and_permanent();
    test_cancel();
    test_late_result_discarded();
    test_limits();
    test_fairness_and_priority();
    test_list_pages();
    test_user_records();
    test_wait();
    test_wait_many();
    test_wait_limit();
    test_bad_input();
    test_restart_keeps_state();
    test_map_full();
    test_failed_turn_ids();
    test_stats();
    test_lease_size_budget();
    test_lease_prefetch();
    test_history();
    test_roles();
    test_retention_classes();
    test_retention_pending();
    test_retention_chain();
    test_retention_asked();
    test_retention_by_prio();
    test_reaping();
    test_recovery();
    test_purge_more();
    test_erase_reaped();
    test_fsck();
    test_disk_paced();
    test_erase_scrub();
    test_erase_separators();
    test_rewrite_again();
    test_rewrite_daily();
    test_bad_rewrite_records();
    test_purge_scrub();
    test_rate_limit();
    test_credits();
    close_all();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    HSQ_ASSERT_EQ(system(cmd), 0);
    printf("queue: all tests passed\n");
    return 0;
}
