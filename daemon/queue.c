#include "daemon/queue.h"

#include "common/alloc.h"
#include "common/conf.h"
#include "common/fault.h"
#include "common/log.h"
#include "daemon/task.h"
#include "schemas/err.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sweep budget units one blob store deletion costs (an index-only entry
 * costs 1): with the default sweep_batch of 64, about four tombstones per
 * turn, each deleting an output file and its directory. */
#define SWEEP_BLOB_COST 8

/* ---- persistent counters (meta database) ---- */

typedef struct {
    uint64_t queued;  /* state queued, including delayed */
    uint64_t delayed; /* queued and waiting out a backoff */
    uint64_t leased;
    uint64_t succeeded, failed, cancelled, expired;
    uint64_t dead;
    uint64_t queued_by_prio[HSQ_PRIO_COUNT_];
    uint64_t blob_bytes; /* inputs and outputs recorded in the blob store (appended field) */
} counts_rec;

typedef struct {
    uint64_t next_id;
    uint64_t next_token;
} ids_rec;

/* Ids of a user's newest tasks kept in the user record itself: a submit
 * rewrites that record anyway, so its history entry costs no page of its
 * own; every HIST_RECENT submits they move to one history chunk (store.h). */
#define HIST_RECENT 16

typedef struct {
    uint64_t next_round[HSQ_PRIO_COUNT_];
    uint64_t active; /* queued + leased tasks of this user */
    /* appended fields (a shorter record from an older build loads with
     * these at zero) */
    uint64_t n_recent;
    uint64_t recent[HIST_RECENT]; /* ascending; all newer than any chunk's */
} user_rec;

#define USER_REC_V1 (sizeof(uint64_t) * (HSQ_PRIO_COUNT_ + 1))

/* A turn reads and rewrites a user's record for each of the user's submits
 * and finished tasks: the turn keeps the records it read, and writes each
 * changed one once, before its commit (users_flush). */
typedef struct {
    uint64_t turn; /* the turn it belongs to (q->turn_seq); another: empty */
    int dirty;     /* changed in that turn, not yet written */
    uint8_t len;
    char user[HSQ_MAX_USER_LEN];
    user_rec rec;
} user_slot;

/* ---- in-memory, rebuildable state ---- */

typedef struct {
    uint8_t peer[HSQ_PEER_MAX];
    size_t peer_len;
    char name[64];
    char backend[16];
    char device[64];
    uint32_t max_batch;
    uint32_t prefetch; /* lease requests it may have parked at once (ready) */
    int64_t last_seen_ms;
    uint32_t leases;
} worker_rec;

typedef struct {
    uint8_t peer[HSQ_PEER_MAX];
    size_t peer_len;
    uint64_t rid;
    uint32_t max;
    int64_t deadline_ms;
} parked_lease;

typedef struct waiter {
    struct waiter *next;
    struct waiter **pprev; /* the pointer to it in its bucket's list */
    size_t heap_i;         /* its place in the deadline heap */
    uint64_t task;
    uint8_t peer[HSQ_PEER_MAX];
    size_t peer_len;
    uint64_t rid;
    uint8_t since;
    int64_t deadline_ms;
} waiter;

#define WAIT_BUCKETS 1024
#define RATE_BUCKETS 4096
#define WORKER_IDLE_MS 120000
#define MAX_TIMER_WORK 2048 /* expiries handled per turn, so no turn runs long */
#define OUT_KEEP_BYTES 16384 /* an outbox slot keeps a buffer up to this size */
#define PREFIX_CACHE 1024    /* users whose blob prefix is remembered (power of two) */
#define USER_CACHE 1024      /* user records a turn keeps (power of two) */
/* Trees per user (users, history, idempotency keys, credits) are keyed by a
 * keyed BLAKE2b of the user id, never the id: LMDB copies the first key of a
 * page into its parent as a separator when the page splits, and keeps that
 * copy after the key is deleted, so an erased user's id would live on in a
 * branch page. HSQ_USER_KEY_MARK first (queue.h), then 16 bytes of hash.
 * The erasure ledger is keyed so too and keeps the id in its value (u64be
 * requested_at | id): an erasure needs the id until it completes, and a
 * value leaves no separator. */
#define USER_KEY_LEN 17
#define IDEM_KEY_LEN (USER_KEY_LEN + 16)
#define DB_KEY_META "user_key" /* meta: the 32-byte key of those hashes */
#define UKEYS_META "user_keys" /* meta: present once the trees are keyed so */

/* A user's blob prefix and LMDB key cost a keyed BLAKE2b each; lease and
 * done need the one, every record of the user the other. */
typedef struct {
    uint8_t len; /* 0: empty */
    char user[HSQ_MAX_USER_LEN];
    char prefix[HSQ_BLOB_PREFIX_LEN + 1];
    uint8_t dbkey[USER_KEY_LEN];
} prefix_slot;

typedef struct {
    hsq_sock sock;
    uint8_t peer[HSQ_PEER_MAX];
    size_t peer_len;
    uint64_t rid;
    uint32_t limit;
} purge_wait;

/* A set of task ids (never 0), open addressing; a dry sweep's. */
typedef struct {
    uint64_t *slot;
    size_t cap, n; /* cap: 0 or a power of two */
} idset;

struct hsq_queue {
    hsq_store *st;
    hsq_blob *blob;
    hsq_queue_conf conf;
    int64_t now;
    int64_t started_ms;
    int draining;

    /* cached copies of persistent records */
    counts_rec counts;
    ids_rec ids;
    uint64_t rounds[HSQ_PRIO_COUNT_];
    int meta_dirty;

    /* turn state */
    int in_turn;
    int turn_err; /* first store error of the turn (sticky) */
    int dispatch_needed;
    char **turn_blobs; /* input blobs written this turn, deleted on failure */
    size_t n_turn_blobs, cap_turn_blobs;

    /* outbox */
    hsq_out *out;
    size_t n_out, cap_out;
    size_t n_out_init; /* out[0..n_out_init) own a meta buffer, kept across turns */

    /* memory-only */
    worker_rec *workers;
    size_t n_workers, cap_workers;
    parked_lease *parked;
    size_t n_parked, cap_parked;
    waiter *waits[WAIT_BUCKETS]; /* by task id, for the changes that answer them */
    size_t n_waits;
    waiter **wheap; /* the same waiters, a min-heap by deadline, for their timeouts */
    size_t cap_wheap;
    uint64_t waits_refused; /* at max_waits, since start */

    /* totals since start */
    uint64_t submitted_total, completed_total, retries_total;

    int64_t store_deadline; /* first lease deadline, backoff end or expiry, as of the last turn */
    hsq_sweep_counts swept; /* since start */
    struct rate_bucket *rate[RATE_BUCKETS];
    size_t n_rate;
    int64_t rate_pruned_ms;
    uint64_t ck_seen;    /* the store's checkpoint count seen last (disk_paced) */
    uint32_t disk_share; /* 64ths of the background batch a turn gets */
    uint64_t rate_limited_total;

    /* erasures: requests wait for the ledger commit, then a later turn
     * erases (see h_erase) */
    struct erase_wait {
        uint8_t peer[HSQ_PEER_MAX];
        size_t peer_len;
        uint64_t rid;
        char user[HSQ_MAX_USER_LEN + 1];
    } * erase_waits;
    size_t n_erase_waits, cap_erase_waits;
    /* The erasure in progress with a reaper (at most one; see erase-user). */
    int erase_state;               /* ERASE_* */
    char erase_user[HSQ_MAX_USER_LEN + 1];
    size_t erase_ulen;
    hsq_rep_erase erase_rec;       /* the receipt so far */
    int erase_saved_state;         /* ... both as the turn began: a turn */
    hsq_rep_erase erase_saved_rec; /* that fails goes back to them */
    int64_t erase_retry_ms;        /* after a failed deletion: not before */
    int durable;           /* this turn acknowledges something a client was promised */
    uint64_t blob_ops;     /* blob store deletions by the sweeper (its cost measure) */
    hsq_turn_cost cost;    /* the last end_turn's phases */
    uint64_t (*mono_us)(void); /* the shell's clock for `cost` (NULL: no timing) */
    int (*event_wanted)(void *ud, const void *topic, size_t len); /* NULL: publish all */
    void *event_ud;
    prefix_slot *prefixes; /* PREFIX_CACHE slots: users' blob prefixes, a keyed hash each */
    user_slot *users;      /* USER_CACHE slots: this turn's user records */
    uint64_t turn_seq;     /* turns begun; tells this turn's user slots */

    /* reaping (queue.h): handed-off file deletions */
    size_t reap_max;        /* entries in flight at most; 0 = delete inline */
    size_t reap_inflight;   /* handed off, results not back */
    uint8_t reap_from[17];  /* sweeps start here while any are in flight */
    hsq_reap *reaps;        /* handed off since the shell last took them */
    size_t n_reaps, cap_reaps;
    int reaped_io;          /* applying a result: the files are already gone */
    hsq_reap *results;      /* results back from the reaper, applied a few per turn */
    hsq_sweep_counts reaped_sum; /* what results applied while a purge waits */
    size_t n_results, results_head;
    /* staging (queue.h): submits whose large inputs are written off the loop */
    uint64_t stage_max;     /* request bytes in flight at most; 0 = write inline */
    uint64_t staged_bytes;  /* of the stages made and not back */
    size_t stages_inflight; /* handed off, not back */
    hsq_stage *stages;      /* made since the shell last took them */
    size_t n_stages, cap_stages;
    /* checking (queue.h): dones whose outputs are confirmed off the loop */
    size_t check_max;       /* in flight at most; 0 = check inline */
    size_t checks_inflight; /* handed off, not back */
    hsq_check *checks;      /* handed off since the shell last took them */
    size_t n_checks, cap_checks;
    uint32_t turn_msgs;     /* messages handled this turn */
    purge_wait *purge_waits; /* purge requests waiting for the reaper (and recovery) */
    size_t n_purge_waits, cap_purge_waits;
    int recovering;          /* purge requests wait for the janitor's walk (queue.h) */
    int recover_recorded;    /* this start recorded ranges not yet recovered */
    uint32_t purge_used;     /* a reaping purge pass: sweep budget used so far */
    void (*before_commit)(void *ud); /* hsq_queue_set_before_commit */
    void *before_commit_ud;
    int sweep_exhausted;     /* the last sweep stopped for want of due entries */
    idset dry_seen;          /* a dry sweep: tasks counted through a stale entry */
    int purge_exhausted;     /* ... the last sweep of the purge pass did */
    uint64_t turn_first_id;  /* the next id when this turn began */
    uint64_t durable_next_id; /* ... when the last commit (or the load) was made */
    uint64_t reaped_bytes;  /* ... and the bytes its prefix removal freed */
    int ledger_pending;    /* ledger entries may exist: erase them next turn */
    /* Free-page scrub after an erasure (hsq_store_scrub): the free list's
     * records keyed up to scrub_upto, from scrub_next on, are still to be
     * zeroed; scrub_upto 0 = none. Kept in META "scrub" with the turns. */
    uint64_t scrub_next, scrub_upto;
    uint64_t scrub_pages;       /* zeroed in the scrub under way */
    uint64_t scrub_pages_total; /* zeroed since the queue was loaded */
    int64_t scrub_retry_ms;     /* after a failed step: not before */
    int ledger_added;      /* an entry was added this turn: not before it commits */
    /* The rewrite after an erasure or a purge (rewrite_step): the tree it is in (-1:
     * none), the last key it rewrote there, whether the store is to be
     * reopened before the next turn. Kept in META "rewrite" with the turns. */
    int rewrite_db;
    uint8_t rewrite_key[512];
    size_t rewrite_klen;
    int rewrite_again; /* a deletion came during the pass: another after it */
    int64_t rewrite_at_ms;  /* when the last pass began (META "rewrite_at") */
    uint64_t rewrite_swept; /* what the sweeper had deleted then (swept_total) */
    int rewrite_reopen;
    uint64_t rewrite_entries;
    uint8_t audit_key[32]; /* keyed hash of user ids in the audit log */
    uint8_t db_key[32];    /* keyed hash of user ids in LMDB keys (USER_KEY_LEN) */
    uint64_t audit_seq;
    hsq_wbuf scratch;
};

/* ---- small helpers ---- */

static uint64_t mono_us(const hsq_queue *q) {
    return q->mono_us ? q->mono_us() : 0;
}

static void task_key(uint8_t k[8], uint64_t id) {
    hsq_be64(k, id);
}

static void user_hash(const hsq_queue *q, hsq_str user, uint8_t k[USER_KEY_LEN]) {
    k[0] = HSQ_USER_KEY_MARK;
    crypto_generichash(k + 1, USER_KEY_LEN - 1, (const uint8_t *)user.ptr, user.len, q->db_key,
                       sizeof q->db_key);
}

static size_t user_key(hsq_queue *q, uint8_t *k, hsq_str user);

/* An idempotency key is the client's own string (often an order id, or
 * built from the user id): it goes in as a hash too. */
static void idem_hash(const hsq_queue *q, hsq_str key, uint8_t out[16]) {
    crypto_generichash_state h;
    crypto_generichash_init(&h, q->db_key, sizeof q->db_key, 16);
    crypto_generichash_update(&h, (const uint8_t *)"idem", 4);
    crypto_generichash_update(&h, (const uint8_t *)key.ptr, key.len);
    crypto_generichash_final(&h, out, 16);
}

static size_t idem_key(hsq_queue *q, uint8_t *k, hsq_str user, hsq_str key) {
    size_t n = user_key(q, k, user);
    idem_hash(q, key, k + n);
    return n + 16;
}

static void pending_key(uint8_t k[17], uint8_t prio, uint64_t round, uint64_t id) {
    k[0] = prio;
    hsq_be64(k + 1, round);
    hsq_be64(k + 9, id);
}

static void time_key(uint8_t k[16], int64_t t, uint64_t id) {
    hsq_be64(k, (uint64_t)(t < 0 ? 0 : t));
    hsq_be64(k + 8, id);
}

static int64_t backoff_ms(const hsq_queue *q, uint32_t attempts) {
    uint64_t d = q->conf.backoff_base_ms;
    for (uint32_t i = 1; i < attempts && d < q->conf.backoff_max_ms; i++)
        d *= 2;
    if (d > q->conf.backoff_max_ms)
        d = q->conf.backoff_max_ms;
    return (int64_t)d;
}

/* Record the first store error of the turn; everything after it is refused. */
static int note(hsq_queue *q, int rc) {
    if (rc != 0 && q->turn_err == 0)
        q->turn_err = rc;
    return rc;
}

static void audit(hsq_queue *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void audit_subject(hsq_queue *q, hsq_str user, char out[33]);

/* ---- outbox ---- */

static hsq_out *out_push(hsq_queue *q, hsq_sock sock, const uint8_t *peer, size_t plen) {
    q->out = hsq_xgrow(q->out, q->n_out, &q->cap_out, sizeof *q->out, 64);
    hsq_out *o = &q->out[q->n_out];
    /* A slot used before keeps its buffer: a turn sends thousands of
     * replies and events, and each would otherwise be a malloc and a free. */
    hsq_wbuf meta;
    if (q->n_out < q->n_out_init) {
        meta = o->meta;
        hsq_wbuf_reset(&meta);
    } else {
        hsq_wbuf_init(&meta);
        q->n_out_init = q->n_out + 1;
    }
    q->n_out++;
    memset(o, 0, sizeof *o);
    o->meta = meta;
    o->sock = sock;
    if (plen > HSQ_PEER_MAX)
        plen = HSQ_PEER_MAX;
    if (plen)
        memcpy(o->peer, peer, plen);
    o->peer_len = plen;
    return o;
}

static void out_free_frames(hsq_out *o) {
    for (uint32_t i = 0; i < o->nframes; i++)
        free((void *)o->frames[i].ptr);
    free(o->frames);
    o->frames = NULL;
    o->nframes = 0;
}

/* Attach a copy of n bytes as the next frame. */
static void out_frame(hsq_out *o, const void *p, size_t n) {
    o->frames = hsq_xrealloc(o->frames, (o->nframes + 1) * sizeof *o->frames);
    uint8_t *copy = hsq_xmalloc(n);
    if (n)
        memcpy(copy, p, n);
    o->frames[o->nframes].ptr = copy;
    o->frames[o->nframes].len = n;
    o->nframes++;
}

static void reply_error(hsq_queue *q, hsq_sock sock, const uint8_t *peer, size_t plen, hsq_op op,
                        uint64_t rid, int code, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

static void reply_error(hsq_queue *q, hsq_sock sock, const uint8_t *peer, size_t plen, hsq_op op,
                        uint64_t rid, int code, const char *fmt, ...) {
    char msg[HSQ_MAX_ERRMSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    hsq_out *o = out_push(q, sock, peer, plen);
    o->op = op;
    o->rid = rid;
    o->is_reply = 1;
    if (hsq_wire_encode_error(op, rid, code, msg, &o->meta) != 0) {
        /* Cannot happen for a valid code; keep the reply well formed. */
        hsq_wbuf_reset(&o->meta);
        hsq_wire_encode_error(HSQ_OP_STATS, rid, HSQ_EINTERNAL, "internal", &o->meta);
    }
}

/* Encode a success reply; msg->kind/op/rid must be set. */
static hsq_out *reply(hsq_queue *q, hsq_sock sock, const uint8_t *peer, size_t plen,
                      hsq_wire_msg *m) {
    hsq_out *o = out_push(q, sock, peer, plen);
    o->op = m->op;
    o->rid = m->rid;
    o->is_reply = 1;
    m->v = HSQ_WIRE_VERSION;
    m->kind = HSQ_KIND_REPLY;
    int rc = hsq_wire_encode(m, &o->meta);
    if (rc != 0) {
        hsq_wbuf_reset(&o->meta);
        hsq_wire_encode_error(m->op, m->rid, HSQ_EINTERNAL, "reply could not be encoded", &o->meta);
    }
    return o;
}

/* ---- store access ---- */

static int load_task(hsq_queue *q, uint64_t id, hsq_task *t) {
    uint8_t k[8];
    hsq_bytes v;
    task_key(k, id);
    int rc = hsq_store_get(q->st, HSQ_DB_TASKS, k, sizeof k, &v);
    if (rc != 0)
        return rc == HSQ_ENOTFOUND ? rc : note(q, rc);
    return note(q, hsq_task_decode(v.ptr, v.len, t));
}

/* Write t (its updated_ms is now). Views in t that point into LMDB's pages
 * may be invalid afterwards: for a caller done with t, or whose t views
 * only memory of its own (a task built from a request). */
static int put_task(hsq_queue *q, hsq_task *t, hsq_wbuf *buf) {
    hsq_wbuf_reset(buf);
    t->updated_ms = q->now;
    hsq_task_encode(t, buf);
    uint8_t k[8];
    task_key(k, t->id);
    return note(q, hsq_store_put(q->st, HSQ_DB_TASKS, k, sizeof k, buf->data, buf->len));
}

/* Write t, and re-decode it from the encoded copy in buf (which the caller
 * owns), so that its views stay valid whatever page the put reused. */
static int save_task_into(hsq_queue *q, hsq_task *t, hsq_wbuf *buf) {
    int rc = put_task(q, t, buf);
    if (rc == 0)
        rc = hsq_task_decode(buf->data, buf->len, t);
    return rc;
}

static int save_task(hsq_queue *q, hsq_task *t) {
    return save_task_into(q, t, &q->scratch);
}

/* Fixed-size per-user records (users, credits): a missing one reads as
 * zeros. */
static int load_per_user(hsq_queue *q, hsq_db db, hsq_str user, void *rec, size_t size) {
    uint8_t k[USER_KEY_LEN];
    size_t kl = user_key(q, k, user);
    hsq_bytes v;
    int rc = hsq_store_get(q->st, db, k, kl, &v);
    memset(rec, 0, size);
    if (rc == HSQ_ENOTFOUND)
        return 0;
    if (rc != 0)
        return note(q, rc);
    if (v.len != size)
        return note(q, HSQ_ECORRUPT);
    memcpy(rec, v.ptr, size);
    return 0;
}

static int save_per_user(hsq_queue *q, hsq_db db, hsq_str user, const void *rec, size_t size) {
    uint8_t k[USER_KEY_LEN];
    size_t kl = user_key(q, k, user);
    return note(q, hsq_store_put(q->st, db, k, kl, rec, size));
}

static uint64_t str_hash(hsq_str s);

/* A cache slot's user (len bytes of buf; len 0: none) is user. The user
 * record and blob prefix caches both key their slots so. */
static int slot_user_is(uint8_t len, const char *buf, hsq_str user) {
    return len == user.len && memcmp(buf, user.ptr, user.len) == 0;
}

static user_slot *user_slot_of(hsq_queue *q, hsq_str user) {
    return &q->users[str_hash(user) & (USER_CACHE - 1)];
}

static int user_slot_is(const hsq_queue *q, const user_slot *s, hsq_str user) {
    return s->turn == q->turn_seq && slot_user_is(s->len, s->user, user);
}

/* Write a changed record back. */
static int user_write(hsq_queue *q, user_slot *s) {
    s->dirty = 0;
    hsq_str user = {s->user, s->len};
    return save_per_user(q, HSQ_DB_USERS, user, &s->rec, sizeof s->rec);
}

/* Make s user's slot for this turn, writing back another user's changed
 * record first. */
static int user_slot_take(hsq_queue *q, user_slot *s, hsq_str user) {
    if (s->turn == q->turn_seq && s->dirty) {
        int rc = user_write(q, s);
        if (rc != 0)
            return rc;
    }
    s->turn = q->turn_seq;
    s->dirty = 0;
    s->len = (uint8_t)user.len;
    memcpy(s->user, user.ptr, user.len);
    return 0;
}

static int load_user(hsq_queue *q, hsq_str user, user_rec *u) {
    user_slot *s = q->in_turn ? user_slot_of(q, user) : NULL;
    if (s && user_slot_is(q, s, user)) {
        *u = s->rec;
        return 0;
    }
    uint8_t k[USER_KEY_LEN];
    size_t kl = user_key(q, k, user);
    hsq_bytes v;
    int rc = hsq_store_get(q->st, HSQ_DB_USERS, k, kl, &v);
    memset(u, 0, sizeof *u);
    if (rc != 0 && rc != HSQ_ENOTFOUND)
        return note(q, rc);
    if (rc == 0) {
        if (v.len != sizeof *u && v.len != USER_REC_V1)
            return note(q, HSQ_ECORRUPT);
        memcpy(u, v.ptr, v.len);
        if (u->n_recent > HIST_RECENT)
            return note(q, HSQ_ECORRUPT);
    }
    if (s) {
        if ((rc = user_slot_take(q, s, user)) != 0)
            return rc;
        s->rec = *u;
    }
    return 0;
}

/* In a turn the record is written before the commit (users_flush). */
static int save_user(hsq_queue *q, hsq_str user, const user_rec *u) {
    if (!q->in_turn)
        return save_per_user(q, HSQ_DB_USERS, user, u, sizeof *u);
    user_slot *s = user_slot_of(q, user);
    if (!user_slot_is(q, s, user)) {
        int rc = user_slot_take(q, s, user);
        if (rc != 0)
            return rc;
    }
    s->rec = *u;
    s->dirty = 1;
    return 0;
}

/* The user's record was deleted: forget this turn's copy, changed or not,
 * and leave no copy of the id (an erasure calls this). */
static void user_forget(hsq_queue *q, hsq_str user) {
    user_slot *s = user_slot_of(q, user);
    if (user_slot_is(q, s, user))
        memset(s, 0, sizeof *s);
}

static void users_flush(hsq_queue *q) {
    for (size_t i = 0; i < USER_CACHE && q->turn_err == 0; i++) {
        user_slot *s = &q->users[i];
        if (s->turn == q->turn_seq && s->dirty)
            note(q, user_write(q, s));
    }
}

/* ---- per-user history ----
 *
 * A user's task ids: newest first for `list`, oldest first for `export`, all
 * of them for erasure. The newest (up to HIST_RECENT) live in the user
 * record; older ones in chunks of the history database, keyed (user, first
 * id) and holding their ids ascending as u64be. A chunk written by schema 1
 * has an empty value and holds just its key's id. Every id in the record is
 * newer than every id in a chunk, and chunks do not overlap, so walking the
 * record and then the chunks backwards is newest first. */

typedef struct {
    uint64_t ids[HIST_RECENT];
    size_t n;
} hist_chunk;

/* The chunk at key (already known to be the user's: k[0..ul) matches). */
static int chunk_parse(hsq_bytes key, size_t ul, hsq_bytes v, hist_chunk *c) {
    if (v.len == 0) {
        c->ids[0] = hsq_rd_be64(key.ptr + ul);
        c->n = 1;
        return 0;
    }
    if (v.len % 8 != 0 || v.len / 8 > HIST_RECENT)
        return HSQ_ECORRUPT;
    c->n = v.len / 8;
    for (size_t i = 0; i < c->n; i++)
        c->ids[i] = hsq_rd_be64(v.ptr + 8 * i);
    return 0;
}

static int chunk_mine(hsq_bytes key, const uint8_t *k, size_t ul) {
    return key.len == ul + 8 && memcmp(key.ptr, k, ul) == 0;
}

/* Record a new task of the user in u (the caller saves u); every
 * HIST_RECENT tasks the record's ids move to a chunk. */
static int hist_add(hsq_queue *q, hsq_str user, user_rec *u, uint64_t id) {
    u->recent[u->n_recent++] = id;
    if (u->n_recent < HIST_RECENT)
        return 0;
    uint8_t k[USER_KEY_LEN + 8], v[8 * HIST_RECENT];
    size_t ul = user_key(q, k, user);
    hsq_be64(k + ul, u->recent[0]);
    for (size_t i = 0; i < HIST_RECENT; i++)
        hsq_be64(v + 8 * i, u->recent[i]);
    u->n_recent = 0;
    return note(q, hsq_store_put(q->st, HSQ_DB_HISTORY, k, ul + 8, v, sizeof v));
}

/* Forget one task of the user (its record is being deleted). Absent: 0. */
static int hist_remove(hsq_queue *q, hsq_str user, uint64_t id) {
    user_rec u;
    int rc = load_user(q, user, &u);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < u.n_recent; i++) {
        if (u.recent[i] == id) {
            memmove(&u.recent[i], &u.recent[i + 1], (u.n_recent - i - 1) * sizeof *u.recent);
            u.n_recent--;
            return save_user(q, user, &u);
        }
    }
    uint8_t k[USER_KEY_LEN + 8];
    size_t ul = user_key(q, k, user);
    hsq_be64(k + ul, id);
    hsq_cursor *cur;
    if ((rc = note(q, hsq_cursor_open(q->st, HSQ_DB_HISTORY, &cur))) != 0)
        return rc;
    /* The chunk holding id is the last one whose first id is <= id. */
    hsq_bytes key = {k, ul + 8}, v;
    rc = hsq_cursor_get(cur, HSQ_CUR_SET_RANGE, &key, &v);
    if (rc == 0 && !(chunk_mine(key, k, ul) && hsq_rd_be64(key.ptr + ul) == id))
        rc = hsq_cursor_get(cur, HSQ_CUR_PREV, &key, &v);
    else if (rc == HSQ_ENOTFOUND)
        rc = hsq_cursor_get(cur, HSQ_CUR_LAST, &key, &v);
    hist_chunk c;
    if (rc != 0 || !chunk_mine(key, k, ul)) {
        hsq_cursor_close(&cur);
        return rc == 0 || rc == HSQ_ENOTFOUND ? 0 : note(q, rc);
    }
    if ((rc = chunk_parse(key, ul, v, &c)) != 0) {
        hsq_cursor_close(&cur);
        return note(q, rc);
    }
    uint8_t ck[USER_KEY_LEN + 8];
    memcpy(ck, key.ptr, key.len);
    hsq_cursor_close(&cur);
    size_t j = 0;
    for (size_t i = 0; i < c.n; i++)
        if (c.ids[i] != id)
            c.ids[j++] = c.ids[i];
    if (j == c.n)
        return 0;
    if (j == 0) /* never an empty value: that is a schema-1 chunk of one */
        return note(q, hsq_store_del(q->st, HSQ_DB_HISTORY, ck, ul + 8));
    uint8_t nv[8 * HIST_RECENT];
    for (size_t i = 0; i < j; i++)
        hsq_be64(nv + 8 * i, c.ids[i]);
    return note(q, hsq_store_put(q->st, HSQ_DB_HISTORY, ck, ul + 8, nv, 8 * j));
}

/* Call fn(ctx, id) for the user's task ids below `before` (0: all), newest
 * first, until it returns nonzero. Errors: the store's. */
typedef int (*hist_fn)(void *ctx, uint64_t id);

static int hist_each_desc(hsq_queue *q, hsq_str user, uint64_t before, hist_fn fn, void *ctx) {
    user_rec u;
    int rc = load_user(q, user, &u);
    if (rc != 0)
        return rc;
    for (size_t i = u.n_recent; i-- > 0;)
        if ((!before || u.recent[i] < before) && fn(ctx, u.recent[i]))
            return 0;
    uint8_t k[USER_KEY_LEN + 8];
    size_t ul = user_key(q, k, user);
    hsq_be64(k + ul, before ? before : UINT64_MAX);
    hsq_cursor *cur;
    if ((rc = note(q, hsq_cursor_open(q->st, HSQ_DB_HISTORY, &cur))) != 0)
        return rc;
    hsq_bytes key = {k, ul + 8}, v;
    /* The chunks that start below `before`, last first. */
    rc = hsq_cursor_get(cur, HSQ_CUR_SET_RANGE, &key, &v);
    rc = rc == 0 ? hsq_cursor_get(cur, HSQ_CUR_PREV, &key, &v)
                 : hsq_cursor_get(cur, HSQ_CUR_LAST, &key, &v);
    int stop = 0;
    while (rc == 0 && !stop && chunk_mine(key, k, ul)) {
        hist_chunk c;
        if ((rc = chunk_parse(key, ul, v, &c)) != 0)
            break;
        for (size_t i = c.n; i-- > 0 && !stop;)
            if (!before || c.ids[i] < before)
                stop = fn(ctx, c.ids[i]);
        if (!stop)
            rc = hsq_cursor_get(cur, HSQ_CUR_PREV, &key, &v);
    }
    hsq_cursor_close(&cur);
    return rc == 0 || rc == HSQ_ENOTFOUND ? 0 : note(q, rc);
}

/* Up to max of the user's task ids above `after`, oldest first, into ids;
 * returns how many (or a negative store error). */
static int hist_after(hsq_queue *q, hsq_str user, uint64_t after, uint64_t *ids, int max) {
    uint8_t k[USER_KEY_LEN + 8];
    size_t ul = user_key(q, k, user);
    hsq_be64(k + ul, after < UINT64_MAX ? after + 1 : after);
    hsq_cursor *cur;
    int rc = note(q, hsq_cursor_open(q->st, HSQ_DB_HISTORY, &cur));
    if (rc != 0)
        return rc;
    hsq_bytes key = {k, ul + 8}, v;
    /* Start at the chunk holding after + 1: the last one starting at or
     * below it, else the first one above it. */
    rc = hsq_cursor_get(cur, HSQ_CUR_SET_RANGE, &key, &v);
    int exact = rc == 0 && chunk_mine(key, k, ul) && hsq_rd_be64(key.ptr + ul) == after + 1;
    if (!exact) {
        int prc = rc == 0 ? hsq_cursor_get(cur, HSQ_CUR_PREV, &key, &v)
                          : hsq_cursor_get(cur, HSQ_CUR_LAST, &key, &v);
        if (prc == 0 && chunk_mine(key, k, ul)) {
            rc = 0;
        } else {
            key = (hsq_bytes){k, ul + 8};
            rc = hsq_cursor_get(cur, HSQ_CUR_SET_RANGE, &key, &v);
        }
    }
    int n = 0;
    while (rc == 0 && n < max && chunk_mine(key, k, ul)) {
        hist_chunk c;
        if ((rc = chunk_parse(key, ul, v, &c)) != 0)
            break;
        for (size_t i = 0; i < c.n && n < max; i++)
            if (c.ids[i] > after)
                ids[n++] = c.ids[i];
        rc = hsq_cursor_get(cur, HSQ_CUR_NEXT, &key, &v);
    }
    hsq_cursor_close(&cur);
    if (rc != 0 && rc != HSQ_ENOTFOUND)
        return note(q, rc);
    user_rec u;
    if ((rc = load_user(q, user, &u)) != 0)
        return rc;
    for (size_t i = 0; i < u.n_recent && n < max; i++)
        if (u.recent[i] > after)
            ids[n++] = u.recent[i];
    return n;
}

static int user_active_add(hsq_queue *q, hsq_str user, int delta) {
    user_rec u;
    int rc = load_user(q, user, &u);
    if (rc != 0)
        return rc;
    if (delta < 0 && u.active < (uint64_t)-delta)
        u.active = 0;
    else
        u.active += (uint64_t)(int64_t)delta;
    return save_user(q, user, &u);
}

#define SCRUB_KEY "scrub" /* meta: {next, upto}, a free-page scrub under way */
#define SCRUB_PAGES 64    /* pages zeroed per turn at most (256 KiB of writes) */
#define SCRUB_TICK_MS 10  /* a scrub keeps the turns (and the txnids) going */
#define SCRUB_RETRY_MS 60000 /* after a failed step (a write error, say) */
#define REWRITE_KEY "rewrite" /* meta: u32 tree | u8 again | last key: a rewrite under way */
#define REWRITE_BATCH 256     /* entries a turn rewrites at most (a sixteenth when busy) */
#define REWRITE_AT_KEY "rewrite_at"       /* meta: int64 ms, when the last pass began */
#define REWRITE_EVERY_MS (86400ll * 1000) /* the sweeper's deletions: a pass a day */

static int load_meta(hsq_queue *q) {
    hsq_bytes v;
    int rc;
    memset(&q->counts, 0, sizeof q->counts);
    memset(&q->ids, 0, sizeof q->ids);
    memset(q->rounds, 0, sizeof q->rounds);
    if ((rc = hsq_store_get(q->st, HSQ_DB_META, "counts", 6, &v)) == 0) {
        /* Fields are only ever appended: an older, shorter record loads
         * with the new fields at zero. */
        if (v.len > sizeof q->counts || v.len % sizeof(uint64_t) != 0)
            return HSQ_ECORRUPT;
        memcpy(&q->counts, v.ptr, v.len);
    } else if (rc != HSQ_ENOTFOUND) {
        return rc;
    }
    if ((rc = hsq_store_get(q->st, HSQ_DB_META, "ids", 3, &v)) == 0) {
        if (v.len != sizeof q->ids)
            return HSQ_ECORRUPT;
        memcpy(&q->ids, v.ptr, sizeof q->ids);
    } else if (rc != HSQ_ENOTFOUND) {
        return rc;
    }
    if ((rc = hsq_store_get(q->st, HSQ_DB_META, "rounds", 6, &v)) == 0) {
        if (v.len != sizeof q->rounds)
            return HSQ_ECORRUPT;
        memcpy(q->rounds, v.ptr, sizeof q->rounds);
    } else if (rc != HSQ_ENOTFOUND) {
        return rc;
    }
    q->rewrite_db = -1;
    q->rewrite_klen = 0;
    q->rewrite_again = 0;
    /* A store without a pass yet: the first of the sweeper's comes a day
     * after this start. */
    q->rewrite_at_ms = q->now;
    if ((rc = hsq_store_get(q->st, HSQ_DB_META, REWRITE_AT_KEY, strlen(REWRITE_AT_KEY), &v)) == 0) {
        if (v.len != sizeof q->rewrite_at_ms)
            return HSQ_ECORRUPT;
        memcpy(&q->rewrite_at_ms, v.ptr, sizeof q->rewrite_at_ms);
    } else if (rc != HSQ_ENOTFOUND) {
        return rc;
    }
    if ((rc = hsq_store_get(q->st, HSQ_DB_META, REWRITE_KEY, strlen(REWRITE_KEY), &v)) == 0) {
        uint32_t db;
        if (v.len < sizeof db + 1 || v.len - sizeof db - 1 > sizeof q->rewrite_key)
            return HSQ_ECORRUPT;
        memcpy(&db, v.ptr, sizeof db);
        if (db >= HSQ_DB_COUNT_)
            return HSQ_ECORRUPT;
        q->rewrite_db = (int)db;
        q->rewrite_again = v.ptr[sizeof db] != 0;
        q->rewrite_klen = v.len - sizeof db - 1;
        memcpy(q->rewrite_key, v.ptr + sizeof db + 1, q->rewrite_klen);
    } else if (rc != HSQ_ENOTFOUND) {
        return rc;
    }
    q->scrub_next = q->scrub_upto = 0;
    if ((rc = hsq_store_get(q->st, HSQ_DB_META, SCRUB_KEY, strlen(SCRUB_KEY), &v)) == 0) {
        uint64_t s[2];
        if (v.len != sizeof s)
            return HSQ_ECORRUPT;
        memcpy(s, v.ptr, sizeof s);
        q->scrub_next = s[0];
        q->scrub_upto = s[1];
    } else if (rc != HSQ_ENOTFOUND) {
        return rc;
    }
    if (q->ids.next_id == 0)
        q->ids.next_id = 1;
    if (q->ids.next_token == 0)
        q->ids.next_token = 1;
    return 0;
}

static int save_meta(hsq_queue *q) {
    int rc = hsq_store_put(q->st, HSQ_DB_META, "counts", 6, &q->counts, sizeof q->counts);
    if (rc == 0)
        rc = hsq_store_put(q->st, HSQ_DB_META, "ids", 3, &q->ids, sizeof q->ids);
    if (rc == 0)
        rc = hsq_store_put(q->st, HSQ_DB_META, "rounds", 6, q->rounds, sizeof q->rounds);
    return note(q, rc);
}

static uint64_t *state_count(hsq_queue *q, uint8_t state) {
    switch (state) {
    case HSQ_STATE_QUEUED:
        return &q->counts.queued;
    case HSQ_STATE_LEASED:
        return &q->counts.leased;
    case HSQ_STATE_SUCCEEDED:
        return &q->counts.succeeded;
    case HSQ_STATE_FAILED:
        return &q->counts.failed;
    case HSQ_STATE_CANCELLED:
        return &q->counts.cancelled;
    default:
        return &q->counts.expired;
    }
}

/* The blob store gauge: bytes hsqd recorded (inputs it wrote, outputs
 * workers reported) minus what it deleted; never below zero (stray files
 * of lost leases are deleted but were never counted). */
static void blob_bytes_add(hsq_queue *q, int64_t delta) {
    if (delta < 0 && q->counts.blob_bytes < (uint64_t)-delta)
        q->counts.blob_bytes = 0;
    else
        q->counts.blob_bytes += (uint64_t)delta;
    q->meta_dirty = 1;
}

/* Move t to a new state, keeping the counters in step. */
static void set_state(hsq_queue *q, hsq_task *t, uint8_t state) {
    uint64_t *from = state_count(q, t->state);
    if (*from > 0)
        (*from)--;
    if (t->state == HSQ_STATE_QUEUED && q->counts.queued_by_prio[t->prio] > 0)
        q->counts.queued_by_prio[t->prio]--;
    (*state_count(q, state))++;
    if (state == HSQ_STATE_QUEUED)
        q->counts.queued_by_prio[t->prio]++;
    t->state = state;
    q->meta_dirty = 1;
}

/* ---- workers ---- */

static worker_rec *worker_find(hsq_queue *q, const uint8_t *peer, size_t plen) {
    for (size_t i = 0; i < q->n_workers; i++)
        if (q->workers[i].peer_len == plen && memcmp(q->workers[i].peer, peer, plen) == 0)
            return &q->workers[i];
    return NULL;
}

static worker_rec *worker_touch(hsq_queue *q, const uint8_t *peer, size_t plen) {
    worker_rec *w = worker_find(q, peer, plen);
    if (!w) {
        q->workers = hsq_xgrow(q->workers, q->n_workers, &q->cap_workers, sizeof *q->workers, 16);
        w = &q->workers[q->n_workers++];
        memset(w, 0, sizeof *w);
        memcpy(w->peer, peer, plen);
        w->peer_len = plen;
        w->max_batch = HSQ_MAX_BATCH;
        w->prefetch = 1;
        snprintf(w->name, sizeof w->name, "?");
        snprintf(w->backend, sizeof w->backend, "?");
    }
    w->last_seen_ms = q->now;
    return w;
}

static void worker_lease_done(hsq_queue *q, hsq_str peer) {
    worker_rec *w = worker_find(q, (const uint8_t *)peer.ptr, peer.len);
    if (w && w->leases > 0)
        w->leases--;
}

static void workers_expire(hsq_queue *q) {
    size_t j = 0;
    for (size_t i = 0; i < q->n_workers; i++) {
        if (q->now - q->workers[i].last_seen_ms <= WORKER_IDLE_MS)
            q->workers[j++] = q->workers[i];
    }
    q->n_workers = j;
}

/* ---- per-user submit rate (token buckets, memory only) ----
 *
 * A bucket holds up to submit_burst tokens and refills at submit_rate per
 * second; a submit takes one. Buckets live in memory: a restart refills
 * them, which errs on the side of letting users in. Full buckets carry no
 * information and are dropped by the periodic prune, so memory follows the
 * number of recently active users. */

typedef struct rate_bucket {
    struct rate_bucket *next;
    double tokens, rate, burst;
    int64_t last_ms;
    uint8_t len;
    char user[];
} rate_bucket;

static uint64_t str_hash(hsq_str s) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < s.len; i++)
        h = (h ^ (uint8_t)s.ptr[i]) * 1099511628211ull;
    return h;
}

static void refill(const hsq_queue *q, rate_bucket *b) {
    b->tokens += (double)(q->now - b->last_ms) * b->rate / 1000.0;
    if (b->tokens > b->burst)
        b->tokens = b->burst;
    b->last_ms = q->now;
}

/* 0 when `who` may submit now (a token is taken), else the ms to wait.
 * Users and CURVE keys share the table; key names start with a byte no
 * user id can (the codec requires UTF-8 text, keys get 0x01). */
static int64_t rate_take(hsq_queue *q, hsq_str user, uint64_t rate, uint64_t burst) {
    if (rate == 0)
        return 0;
    rate_bucket **pp = &q->rate[str_hash(user) & (RATE_BUCKETS - 1)];
    rate_bucket *b = *pp;
    while (b && !(b->len == user.len && memcmp(b->user, user.ptr, user.len) == 0))
        b = b->next;
    if (!b) {
        b = hsq_xmalloc(sizeof *b + user.len);
        b->tokens = (double)burst;
        b->rate = (double)rate;
        b->burst = (double)burst;
        b->last_ms = q->now;
        b->len = (uint8_t)user.len;
        memcpy(b->user, user.ptr, user.len);
        b->next = *pp;
        *pp = b;
        q->n_rate++;
    }
    refill(q, b);
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return 0;
    }
    return (int64_t)((1.0 - b->tokens) * 1000.0 / b->rate) + 1;
}

static void rate_prune(hsq_queue *q) {
    if (q->n_rate == 0)
        return;
    for (size_t i = 0; i < RATE_BUCKETS; i++) {
        rate_bucket **pp = &q->rate[i];
        while (*pp) {
            rate_bucket *b = *pp;
            refill(q, b);
            if (b->tokens >= b->burst) {
                *pp = b->next;
                free(b);
                q->n_rate--;
            } else {
                pp = &b->next;
            }
        }
    }
}

/* ---- events and waiters ---- */

static void publish(hsq_queue *q, const hsq_task *t) {
    int wanted = !q->event_wanted || q->event_wanted(q->event_ud, t->user.ptr, t->user.len);
    /* An event nobody subscribed to keeps its entry, unsent and not
     * encoded, for the shell's histograms. */
    hsq_out *o =
        out_push(q, HSQ_SOCK_EVENTS, (const uint8_t *)t->user.ptr, wanted ? t->user.len : 0);
    o->op = HSQ_OP_EVENT;
    o->unsent = !wanted;
    o->ev_task = t->id;
    o->ev_state = t->state;
    o->ev_at_ms = q->now;
    if (!wanted)
        return;
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.v = HSQ_WIRE_VERSION;
    m.kind = HSQ_KIND_REQUEST;
    m.op = HSQ_OP_EVENT;
    m.req.event.task = t->id;
    m.req.event.user = t->user;
    m.req.event.state = t->state;
    m.req.event.progress = t->progress;
    m.req.event.stage = t->stage;
    m.req.event.at_ms = q->now;
    if (hsq_wire_encode(&m, &o->meta) != 0)
        q->n_out--; /* cannot happen with a valid task; drop rather than send junk */
}

static size_t wait_bucket(uint64_t id) {
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 54) & (WAIT_BUCKETS - 1);
}

static int wait_satisfied(uint8_t since, uint8_t state) {
    if (since == HSQ_STATE_NONE)
        return hsq_state_is_terminal(state);
    return since != state;
}

static void reply_task(hsq_queue *q, hsq_sock sock, const uint8_t *peer, size_t plen, hsq_op op,
                       uint64_t rid, const hsq_task *t, int timed_out) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = op;
    m.rid = rid;
    hsq_task_to_wire(t, &m.rep.task.task);
    m.rep.task.timed_out = (uint8_t)timed_out;
    reply(q, sock, peer, plen, &m);
}

/* ---- parked `wait` requests ----
 *
 * Each waiter is in two structures: its task id's bucket (a changed task
 * finds its waiters there) and a binary min-heap by deadline (a turn finds
 * the timed-out ones, and the next deadline, without looking at the rest:
 * a web tier may hold a long-poll for every browser it serves). */

static void wheap_set(hsq_queue *q, size_t i, waiter *w) {
    q->wheap[i] = w;
    w->heap_i = i;
}

static void wheap_up(hsq_queue *q, size_t i) {
    waiter *w = q->wheap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (q->wheap[parent]->deadline_ms <= w->deadline_ms)
            break;
        wheap_set(q, i, q->wheap[parent]);
        i = parent;
    }
    wheap_set(q, i, w);
}

static void wheap_down(hsq_queue *q, size_t i) {
    waiter *w = q->wheap[i];
    size_t n = q->n_waits;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && q->wheap[c + 1]->deadline_ms < q->wheap[c]->deadline_ms)
            c++;
        if (q->wheap[c]->deadline_ms >= w->deadline_ms)
            break;
        wheap_set(q, i, q->wheap[c]);
        i = c;
    }
    wheap_set(q, i, w);
}

static void waiter_add(hsq_queue *q, waiter *w) {
    waiter **head = &q->waits[wait_bucket(w->task)];
    w->next = *head;
    w->pprev = head;
    if (*head)
        (*head)->pprev = &w->next;
    *head = w;
    q->wheap = hsq_xgrow(q->wheap, q->n_waits, &q->cap_wheap, sizeof *q->wheap, 64);
    wheap_set(q, q->n_waits++, w);
    wheap_up(q, w->heap_i);
}

/* Unlink w from both structures and free it. */
static void waiter_drop(hsq_queue *q, waiter *w) {
    *w->pprev = w->next;
    if (w->next)
        w->next->pprev = w->pprev;
    size_t i = w->heap_i, last = --q->n_waits;
    if (i != last) {
        waiter *m = q->wheap[last];
        wheap_set(q, i, m);
        wheap_up(q, i);
        if (m->heap_i == i)
            wheap_down(q, i);
    }
    free(w);
}

/* A task changed: publish it and answer the waits it satisfies. */
static void changed(hsq_queue *q, const hsq_task *t) {
    publish(q, t);
    waiter *w = q->waits[wait_bucket(t->id)];
    while (w) {
        waiter *next = w->next;
        if (w->task == t->id && wait_satisfied(w->since, t->state)) {
            reply_task(q, HSQ_SOCK_CLIENT, w->peer, w->peer_len, HSQ_OP_WAIT, w->rid, t, 0);
            waiter_drop(q, w);
        }
        w = next;
    }
}

/* ---- expiry index (retention; the sweeper works from it) ---- */

/* Index kinds: what the sweeper deletes when an entry comes due. */
enum {
    EXP_INPUTS = 0, /* uploaded portraits */
    EXP_TASK = 1,   /* outputs and the full record: the task becomes a tombstone */
    EXP_REFS = 2,   /* clothing and background references */
    EXP_ERASE = 0xee, /* never in the index: a reaper entry for an erasure's files */
    EXP_TOMB = 3    /* the tombstone itself */
};

static int expiry_add(hsq_queue *q, int64_t at, uint64_t id, uint8_t kind) {
    uint8_t k[17];
    time_key(k, at, id);
    k[16] = kind;
    return note(q, hsq_store_put(q->st, HSQ_DB_EXPIRY, k, sizeof k, "", 0));
}

/* Whether the index holds (at, id, kind): 1 or 0, or a store error. */
static int expiry_has(hsq_queue *q, int64_t at, uint64_t id, uint8_t kind) {
    uint8_t k[17];
    time_key(k, at, id);
    k[16] = kind;
    hsq_bytes v;
    int rc = hsq_store_get(q->st, HSQ_DB_EXPIRY, k, sizeof k, &v);
    if (rc == HSQ_ENOTFOUND)
        return 0;
    return rc == 0 ? 1 : note(q, rc);
}

/* Add (at, id, kind) unless it is there already: a read instead of a
 * write when it is. */
static int expiry_ensure(hsq_queue *q, int64_t at, uint64_t id, uint8_t kind) {
    int has = expiry_has(q, at, id, kind);
    if (has != 0)
        return has < 0 ? has : 0;
    return expiry_add(q, at, id, kind);
}

static int is_reference(const hsq_task_input *in) {
    return !hsq_str_eq(in->kind, "portrait");
}

/* Retention starts when a thing is written: a new task's inputs expire
 * retention_pending after the submit unless the task ends sooner (a task
 * still unfinished then is cancelled by the sweeper). */
static int stamp_submit(hsq_queue *q, hsq_task *t) {
    int64_t at = q->now + (int64_t)q->conf.retention_pending_ms;
    t->inputs_expire_ms = at;
    t->refs_expire_ms = at;
    return expiry_add(q, at, t->id, EXP_INPUTS);
}

int hsq_retention_override_parse(const char *spec, uint64_t out[HSQ_RET_N_], char *err,
                                 size_t errlen) {
    static const char *const names[HSQ_RET_N_] = {"outputs", "uploads", "references", "failed"};
    memset(out, 0, sizeof(uint64_t) * HSQ_RET_N_);
    char buf[256];
    if (strlen(spec) >= sizeof buf) {
        snprintf(err, errlen, "retention override is longer than %zu bytes", sizeof buf - 1);
        return HSQ_EINVAL;
    }
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ')
            item++;
        char *colon = strchr(item, ':');
        int k = -1;
        if (colon) {
            *colon = '\0';
            for (int i = 0; i < HSQ_RET_N_; i++)
                if (strcmp(item, names[i]) == 0)
                    k = i;
        }
        uint64_t ms = 0;
        if (k < 0 || hsq_conf_parse_ms(colon + 1, &ms) != 0 || ms == 0) {
            snprintf(err, errlen,
                     "retention override '%s': expected CLASS:DURATION[,...] with CLASS one of "
                     "outputs, uploads, references, failed and a duration like 90d",
                     spec);
            return HSQ_EINVAL;
        }
        out[k] = ms;
    }
    return 0;
}

/* The policy for one class of a task: its priority's override, if any. */
static uint64_t policy(const hsq_queue *q, const hsq_task *t, int cls, uint64_t dflt) {
    uint64_t v = q->conf.retention_by_prio[t->prio][cls];
    return v ? v : dflt;
}

/* The user may ask for shorter, never longer. */
static uint64_t asked(uint64_t policy_ms, uint32_t keep_s) {
    if (keep_s == HSQ_KEEP_POLICY)
        return policy_ms;
    uint64_t ms = (uint64_t)keep_s * 1000;
    return ms < policy_ms ? ms : policy_ms;
}

/* Which of a task's dates still have work, as index kinds: EXP_INPUTS
 * (portraits not deleted yet; for an unfinished task, its cancel date),
 * EXP_REFS, EXP_TASK or EXP_TOMB. */
static unsigned pending_dates(const hsq_task *t) {
    if (!hsq_state_is_terminal(t->state))
        return 1u << EXP_INPUTS;
    if (t->state == HSQ_STATE_EXPIRED)
        return 1u << EXP_TOMB;
    unsigned m = 1u << EXP_TASK;
    for (uint32_t i = 0; i < t->n_inputs; i++)
        if (t->inputs[i].where != HSQ_IN_GONE)
            m |= 1u << (is_reference(&t->inputs[i]) ? EXP_REFS : EXP_INPUTS);
    return m;
}

static int64_t date_of(const hsq_task *t, uint8_t kind) {
    return kind == EXP_INPUTS ? t->inputs_expire_ms
           : kind == EXP_REFS ? t->refs_expire_ms
                              : t->expires_ms;
}

/* Make sure each date of t that still has work has its own index entry.
 * The sweeper calls it for every entry it handles of a task that stays:
 * a date may have gone unindexed because an earlier entry covered it (see
 * stamp_retention). */
static int reindex(hsq_queue *q, const hsq_task *t) {
    static const uint8_t kinds[] = {EXP_INPUTS, EXP_REFS, EXP_TASK, EXP_TOMB};
    unsigned m = pending_dates(t);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof kinds; i++)
        if (m & (1u << kinds[i]))
            rc = expiry_ensure(q, date_of(t, kinds[i]), t->id, kinds[i]);
    return rc;
}

/* Index one new date of a task that just ended. The entry its submit made
 * (the cancel date, `cover`; 0 when it is gone) comes due first for any
 * later date, and the sweeper then indexes what the task still has
 * (reindex), so only a date before it needs an entry now. With the default
 * policy a task that ends adds no index entry at all. */
static int expiry_stamp(hsq_queue *q, const hsq_task *t, int64_t at, uint8_t kind, int64_t cover) {
    return cover && at >= cover ? 0 : expiry_add(q, at, t->id, kind);
}

/* A task reached a terminal state: stamp its retention dates. Dates only
 * ever move earlier than what the policy allows; entries left in the index
 * for older dates are recognised as stale by the sweeper. */
static int stamp_retention(hsq_queue *q, hsq_task *t) {
    int ok = t->state == HSQ_STATE_SUCCEEDED;
    uint64_t failed = policy(q, t, HSQ_RET_FAILED, q->conf.retention_failed_ms);
    uint64_t out_ms =
        asked(policy(q, t, HSQ_RET_OUTPUTS, q->conf.retention_outputs_ms), t->keep_outputs_s);
    uint64_t up_ms =
        asked(ok ? policy(q, t, HSQ_RET_UPLOADS, q->conf.retention_uploads_ms) : failed,
              t->keep_uploads_s);
    uint64_t ref_ms =
        asked(ok ? policy(q, t, HSQ_RET_REFERENCES, q->conf.retention_references_ms) : failed,
              t->keep_uploads_s);
    if (up_ms > out_ms)
        up_ms = out_ms;
    if (ref_ms > out_ms)
        ref_ms = out_ms;
    /* The submit's entry is in the index unless the sweeper is handling
     * it now (a cancel past retention_pending): then it covers nothing. */
    int64_t cover = t->inputs_expire_ms;
    int rc = cover > 0 ? expiry_has(q, cover, t->id, EXP_INPUTS) : 0;
    if (rc < 0)
        return rc;
    if (rc == 0)
        cover = 0;
    t->inputs_expire_ms = q->now + (int64_t)up_ms;
    t->refs_expire_ms = q->now + (int64_t)ref_ms;
    t->expires_ms = q->now + (int64_t)out_ms;
    int has_refs = 0;
    for (uint32_t i = 0; i < t->n_inputs; i++)
        has_refs |= is_reference(&t->inputs[i]);
    rc = expiry_stamp(q, t, t->inputs_expire_ms, EXP_INPUTS, cover);
    if (rc == 0 && has_refs)
        rc = expiry_stamp(q, t, t->refs_expire_ms, EXP_REFS, cover);
    if (rc == 0)
        rc = expiry_stamp(q, t, t->expires_ms, EXP_TASK, cover);
    return rc;
}

/* ---- credits ----
 *
 * With `credits` on, every user has a ledger record: balance (credits owned)
 * and reserved (held by the user's unfinished tasks); what a user may still
 * spend is balance - reserved. A submit reserves its cost and records the
 * amount in the task (t->credits), so each settlement is exact: success
 * consumes it (balance and reserved both drop by it), a final failure, a
 * cancel, an expiry before the task ran or an erasure refunds it (reserved
 * drops), and a retry keeps it. Settling zeroes t->credits in the same
 * write as the state change, so no task is settled twice.
 *
 * No double spend, without a lock: the loop handles one message after
 * another inside the turn's single write transaction, and each submit reads
 * the reservation the previous one wrote. Every ledger change writes an
 * audit line naming the keyed hash of the user, never the id. Reservations
 * made while credits were on are settled even if credits are later turned
 * off, so the ledger stays balanced. */

typedef struct {
    int64_t balance;
    int64_t reserved;
} credit_rec;

static int load_credits(hsq_queue *q, hsq_str user, credit_rec *cr) {
    return load_per_user(q, HSQ_DB_CREDITS, user, cr, sizeof *cr);
}

static int save_credits(hsq_queue *q, hsq_str user, const credit_rec *cr) {
    return save_per_user(q, HSQ_DB_CREDITS, user, cr, sizeof *cr);
}

/* Outputs a task asks for: every background x style x size (settings the
 * codec accepted always decode; defaults are one background, one style). */
static uint64_t task_outputs(const hsq_task *t) {
    hsq_wire_settings s;
    char err[160];
    uint64_t nb = 1, ns = 1;
    if (t->settings.len && hsq_wire_settings_decode(t->settings, &s, err, sizeof err) == 0) {
        nb = s.n_backgrounds ? s.n_backgrounds : 1;
        ns = s.n_styles ? s.n_styles : 1;
    }
    return nb * ns * (t->n_specs ? t->n_specs : 1);
}

/* What t costs, 0 when credits are off. */
static int64_t task_cost(const hsq_queue *q, const hsq_task *t) {
    if (!q->conf.credits)
        return 0;
    return (int64_t)(task_outputs(t) * q->conf.credit_cost);
}

/* Hold `cost` credits of t's user for t. The caller checked the balance in
 * the same turn (credit_check). */
static int credit_reserve(hsq_queue *q, hsq_task *t, int64_t cost) {
    if (cost <= 0)
        return 0;
    credit_rec cr;
    int rc = load_credits(q, t->user, &cr);
    if (rc != 0)
        return rc;
    cr.reserved += cost;
    if ((rc = save_credits(q, t->user, &cr)) != 0)
        return rc;
    t->credits = cost;
    char subject[33];
    audit_subject(q, t->user, subject);
    audit(q,
          "op=credit_reserve subject=%s task=%" PRIu64 " amount=%" PRId64 " balance=%" PRId64
          " reserved=%" PRId64,
          subject, t->id, cost, cr.balance, cr.reserved);
    return 0;
}

/* Settle t's reservation: consume it (success) or refund it. The caller
 * saves t afterwards (t->credits becomes 0). */
static int credit_settle(hsq_queue *q, hsq_task *t, int consume) {
    if (t->credits <= 0)
        return 0;
    credit_rec cr;
    int rc = load_credits(q, t->user, &cr);
    if (rc != 0)
        return rc;
    int64_t amount = t->credits;
    cr.reserved = cr.reserved > amount ? cr.reserved - amount : 0;
    if (consume)
        cr.balance -= amount;
    if ((rc = save_credits(q, t->user, &cr)) != 0)
        return rc;
    t->credits = 0;
    char subject[33];
    audit_subject(q, t->user, subject);
    audit(q,
          "op=credit_%s subject=%s task=%" PRIu64 " amount=%" PRId64 " balance=%" PRId64
          " reserved=%" PRId64,
          consume ? "consume" : "refund", subject, t->id, amount, cr.balance, cr.reserved);
    return 0;
}

/* A task has just ended (its new state set; the caller saves it): settle
 * its credits (consumed on success, else refunded), free its user's active
 * slot, and stamp its retention dates. */
static int task_ended(hsq_queue *q, hsq_task *t, int success) {
    int rc = credit_settle(q, t, success);
    if (rc == 0)
        rc = user_active_add(q, t->user, -1);
    if (rc == 0)
        rc = stamp_retention(q, t);
    return rc;
}

/* ---- queue transitions ---- */

static int pending_put(hsq_queue *q, const hsq_task *t) {
    uint8_t k[17];
    pending_key(k, t->prio, t->round, t->id);
    return note(q, hsq_store_put(q->st, HSQ_DB_PENDING, k, sizeof k, "", 0));
}

static int pending_del(hsq_queue *q, const hsq_task *t) {
    uint8_t k[17];
    pending_key(k, t->prio, t->round, t->id);
    return note(q, hsq_store_del(q->st, HSQ_DB_PENDING, k, sizeof k));
}

static int delayed_del(hsq_queue *q, const hsq_task *t) {
    uint8_t k[16];
    time_key(k, t->not_before_ms, t->id);
    return note(q, hsq_store_del(q->st, HSQ_DB_DELAYED, k, sizeof k));
}

static int lease_del(hsq_queue *q, const hsq_task *t) {
    uint8_t k[16];
    time_key(k, t->deadline_ms, t->id);
    return note(q, hsq_store_del(q->st, HSQ_DB_LEASES, k, sizeof k));
}

/* Leased task leaves its lease (any reason). */
static int unlease(hsq_queue *q, hsq_task *t) {
    int rc = lease_del(q, t);
    worker_lease_done(q, t->worker);
    t->token = 0;
    t->deadline_ms = 0;
    t->worker.len = 0;
    return rc;
}

/* Queued or leased task is put back to wait out a backoff, or dead-lettered
 * when it has used its attempts. `code`/`why` describe the failure. */
static int retry_or_fail(hsq_queue *q, hsq_task *t, int code, hsq_str why, int retryable) {
    int rc = unlease(q, t);
    if (rc != 0)
        return rc;
    t->err_code = code;
    t->err_msg = why;
    if (retryable && t->attempts < q->conf.max_attempts) {
        set_state(q, t, HSQ_STATE_QUEUED);
        t->not_before_ms = q->now + backoff_ms(q, t->attempts);
        t->progress = 0;
        t->stage.len = 0;
        uint8_t k[16];
        time_key(k, t->not_before_ms, t->id);
        rc = note(q, hsq_store_put(q->st, HSQ_DB_DELAYED, k, sizeof k, "", 0));
        q->counts.delayed++;
        q->retries_total++;
    } else {
        set_state(q, t, HSQ_STATE_FAILED);
        t->dead = retryable ? 1 : 0;
        if (t->dead)
            q->counts.dead++;
        if (rc == 0)
            rc = task_ended(q, t, 0);
    }
    if (rc == 0)
        rc = save_task(q, t);
    if (rc == 0)
        changed(q, t);
    return rc;
}

/* ---- request handlers ---- */

typedef struct {
    hsq_queue *q;
    hsq_sock sock;
    const char *key; /* CURVE identity or NULL */
    const uint8_t *peer;
    size_t plen;
    hsq_wire_msg *m;
    const hsq_bytes *frames; /* binary frames (after meta) */
    size_t nframes;
    const hsq_bytes *meta; /* the meta frame (submits copy it when staging) */
    hsq_stage *stage;      /* a staged submit back from the thread, else NULL */
} req_ctx;

#define FAIL(c, code, ...)                                                                         \
    reply_error((c)->q, (c)->sock, (c)->peer, (c)->plen, (c)->m->op, (c)->m->rid, (code),          \
                __VA_ARGS__)

static void fail_store(req_ctx *c, int rc) {
    if (rc == HSQ_EDISKFULL || rc == -ENOSPC || rc == -EDQUOT)
        FAIL(c, HSQ_EDISKFULL, "storage is full; the request was not accepted, retry later");
    else
        FAIL(c, HSQ_EUNAVAIL, "storage error (%s); the request was not accepted", hsq_strerror(rc));
}

/* Find the task and check the optional owner. Replies on failure. */
static int find_task(req_ctx *c, uint64_t id, hsq_str user, hsq_task *t) {
    int rc = load_task(c->q, id, t);
    /* A task of another user answers exactly like a missing one: ids are
     * sequential and must not reveal whose they are. */
    if (rc == HSQ_ENOTFOUND || (rc == 0 && user.len && !hsq_str_eqs(user, t->user))) {
        FAIL(c, HSQ_ENOTFOUND, "task %" PRIu64 " not found", id);
        return HSQ_ENOTFOUND;
    }
    if (rc != 0) {
        fail_store(c, rc);
        return rc;
    }
    return 0;
}

static prefix_slot *prefix_slot_of(hsq_queue *q, hsq_str user) {
    return &q->prefixes[str_hash(user) & (PREFIX_CACHE - 1)];
}

static void prefix_slot_fill(hsq_queue *q, prefix_slot *s, hsq_str user) {
    hsq_blob_user_prefix(q->blob, user.ptr, user.len, s->prefix);
    user_hash(q, user, s->dbkey);
    memcpy(s->user, user.ptr, user.len);
    s->len = (uint8_t)user.len;
}

/* hsq_blob_user_prefix, remembered. */
static void user_prefix(hsq_queue *q, hsq_str user, char out[HSQ_BLOB_PREFIX_LEN + 1]) {
    if (user.len == 0 || user.len > HSQ_MAX_USER_LEN) {
        hsq_blob_user_prefix(q->blob, user.ptr, user.len, out);
        return;
    }
    prefix_slot *s = prefix_slot_of(q, user);
    if (!slot_user_is(s->len, s->user, user))
        prefix_slot_fill(q, s, user);
    memcpy(out, s->prefix, HSQ_BLOB_PREFIX_LEN + 1);
}

/* The user's LMDB key (HSQ_USER_KEY_MARK), remembered with the prefix. */
static size_t user_key(hsq_queue *q, uint8_t *k, hsq_str user) {
    if (user.len == 0 || user.len > HSQ_MAX_USER_LEN) {
        user_hash(q, user, k);
        return USER_KEY_LEN;
    }
    prefix_slot *s = prefix_slot_of(q, user);
    if (!slot_user_is(s->len, s->user, user))
        prefix_slot_fill(q, s, user);
    memcpy(k, s->dbkey, USER_KEY_LEN);
    return USER_KEY_LEN;
}

/* An erased user leaves no copy of the id here. */
static void user_prefix_forget(hsq_queue *q, hsq_str user) {
    if (user.len == 0 || user.len > HSQ_MAX_USER_LEN)
        return;
    prefix_slot *s = prefix_slot_of(q, user);
    if (slot_user_is(s->len, s->user, user))
        memset(s, 0, sizeof *s);
}

static void input_blob_key(hsq_queue *q, hsq_str user, uint64_t id, uint32_t i, char *out,
                           size_t n) {
    char prefix[HSQ_BLOB_PREFIX_LEN + 1];
    user_prefix(q, user, prefix);
    snprintf(out, n, "%s%" PRIu64 "/in-%u", prefix, id, i);
}

/* "u/<hash>/<id>/". Built by hand: it runs twice per job. */
static void out_prefix(hsq_queue *q, hsq_str user, uint64_t id, char *out, size_t n) {
    char digits[20];
    size_t d = 0;
    do {
        digits[d++] = (char)('0' + id % 10);
        id /= 10;
    } while (id);
    assert(n >= HSQ_BLOB_PREFIX_LEN + d + 2);
    (void)n;
    user_prefix(q, user, out);
    char *p = out + HSQ_BLOB_PREFIX_LEN;
    while (d)
        *p++ = digits[--d];
    *p++ = '/';
    *p = '\0';
}

static void turn_blob_note(hsq_queue *q, const char *key) {
    q->turn_blobs =
        hsq_xgrow(q->turn_blobs, q->n_turn_blobs, &q->cap_turn_blobs, sizeof *q->turn_blobs, 16);
    q->turn_blobs[q->n_turn_blobs++] = hsq_xstrndup(key, strlen(key));
}

/* May `user` spend `cost` more credits now? Replies insufficient_credits
 * (or a store error) when not. */
static int credit_check(req_ctx *c, hsq_str user, int64_t cost, uint64_t outputs) {
    credit_rec cr;
    if (load_credits(c->q, user, &cr) != 0) {
        fail_store(c, c->q->turn_err);
        return c->q->turn_err;
    }
    if (cr.balance - cr.reserved < cost) {
        FAIL(c, HSQ_ENOCREDITS,
             "balance is %" PRId64 " credits (%" PRId64 " reserved by unfinished tasks); this "
             "task costs %" PRId64 " (%" PRIu64 " outputs x %" PRIu64 ")",
             cr.balance, cr.reserved, cost, outputs, c->q->conf.credit_cost);
        return HSQ_ENOCREDITS;
    }
    return 0;
}

static int erasing(const hsq_queue *q, hsq_str user);

/* A submit's inputs could not be written: nothing was accepted. */
static void input_write_failed(req_ctx *c, int rc) {
    if (rc == -ENOSPC || rc == -EDQUOT)
        FAIL(c, HSQ_EDISKFULL, "blob store is full; the task was not accepted");
    else
        FAIL(c, HSQ_EUNAVAIL, "blob store error (%s); the task was not accepted", hsq_strerror(rc));
}

/* With staging on and room left, copy a submit that has inputs for the blob
 * store into a new stage (queue.h "staging"): 1, else 0 (write them now). */
static int stage_make(req_ctx *c) {
    hsq_queue *q = c->q;
    const hsq_req_submit *r = &c->m->req.submit;
    size_t bytes = c->meta->len;
    int large = 0;
    for (uint32_t i = 0; i < r->n_inputs; i++) {
        bytes += c->frames[i].len;
        large |= c->frames[i].len > q->conf.inline_max;
    }
    if (!large || q->staged_bytes + bytes > q->stage_max)
        return 0;
    q->stages = hsq_xgrow(q->stages, q->n_stages, &q->cap_stages, sizeof *q->stages, 16);
    hsq_stage *s = &q->stages[q->n_stages++];
    memset(s, 0, sizeof *s);
    s->buf = hsq_xmalloc(bytes);
    s->bytes = bytes;
    s->nframes = 1 + r->n_inputs;
    uint8_t *p = s->buf;
    for (size_t i = 0; i < s->nframes; i++) {
        const hsq_bytes *f = i == 0 ? c->meta : &c->frames[i - 1];
        memcpy(p, f->ptr, f->len);
        s->frames[i].ptr = p;
        s->frames[i].len = f->len;
        p += f->len;
    }
    s->sock = c->sock;
    memcpy(s->peer, c->peer, c->plen);
    s->peer_len = c->plen;
    user_prefix(q, r->user, s->dir);
    s->inline_max = q->conf.inline_max;
    q->staged_bytes += bytes;
    return 1;
}

/* Take a submit's tokens from its key's and its user's buckets: 0, or 1
 * when refused (answered). */
static int rate_refused(req_ctx *c) {
    hsq_queue *q = c->q;
    const hsq_req_submit *r = &c->m->req.submit;
    if (c->key && q->conf.key_submit_rate) {
        char kn[1 + HSQ_MAX_USER_LEN];
        int n = snprintf(kn, sizeof kn, "\x01%s", c->key);
        hsq_str kname = {kn, n > 0 && (size_t)n < sizeof kn ? (size_t)n : sizeof kn - 1};
        int64_t kwait = rate_take(q, kname, q->conf.key_submit_rate, q->conf.key_submit_burst);
        if (kwait > 0) {
            q->rate_limited_total++;
            FAIL(c, HSQ_ERATELIMITED,
                 "key '%s' submits faster than %" PRIu64 " per second (burst %" PRIu64
                 "); retry after %" PRId64 " ms",
                 c->key, q->conf.key_submit_rate, q->conf.key_submit_burst, kwait);
            return 1;
        }
    }
    int64_t wait_ms = rate_take(q, r->user, q->conf.submit_rate, q->conf.submit_burst);
    if (wait_ms > 0) {
        q->rate_limited_total++;
        FAIL(c, HSQ_ERATELIMITED,
             "user submits faster than %" PRIu64 " per second (burst %" PRIu64
             "); retry after %" PRId64 " ms",
             q->conf.submit_rate, q->conf.submit_burst, wait_ms);
        return 1;
    }
    return 0;
}

static void h_submit(req_ctx *c) {
    hsq_queue *q = c->q;
    const hsq_req_submit *r = &c->m->req.submit;
    if (q->draining && !c->stage) { /* a staged one was taken before */
        FAIL(c, HSQ_EUNAVAIL, "hsqd is shutting down; retry shortly");
        return;
    }
    for (uint32_t i = 0; i < r->n_inputs; i++) {
        if (c->frames[i].len == 0) {
            FAIL(c, HSQ_EBADREQ, "input %u ('%.*s') is empty", i, (int)r->inputs[i].name.len,
                 r->inputs[i].name.ptr);
            return;
        }
        if (c->frames[i].len > q->conf.max_frame_bytes) {
            FAIL(c, HSQ_ETOOLARGE, "input %u ('%.*s') is %zu bytes; the limit is %" PRIu64, i,
                 (int)r->inputs[i].name.len, r->inputs[i].name.ptr, c->frames[i].len,
                 q->conf.max_frame_bytes);
            return;
        }
    }
    if (erasing(q, r->user)) {
        /* Its files would land under the prefix the reaper is deleting. */
        FAIL(c, HSQ_EUNAVAIL, "this user's data is being erased; submit again in a moment");
        return;
    }

    /* Idempotency: the same (user, key) returns the task it created. */
    uint8_t ik[IDEM_KEY_LEN];
    size_t ikl = 0;
    if (r->key.len) {
        ikl = idem_key(q, ik, r->user, r->key);
        hsq_bytes v;
        int rc = hsq_store_get(q->st, HSQ_DB_IDEM, ik, ikl, &v);
        if (rc == 0 && v.len == 8) {
            hsq_task t;
            uint64_t id = hsq_rd_be64(v.ptr);
            rc = load_task(q, id, &t);
            if (rc == 0) {
                hsq_wire_msg m;
                memset(&m, 0, sizeof m);
                m.op = HSQ_OP_SUBMIT;
                m.rid = c->m->rid;
                m.rep.submit.task = id;
                m.rep.submit.state = t.state;
                m.rep.submit.created = 0;
                reply(q, c->sock, c->peer, c->plen, &m);
                return;
            }
        }
        if (rc != 0 && rc != HSQ_ENOTFOUND) {
            fail_store(c, note(q, rc));
            return;
        }
    }

    if (!c->stage && rate_refused(c)) /* a staged submit paid when it was staged */
        return;
    uint64_t active = q->counts.queued + q->counts.leased;
    if (active >= q->conf.max_queued) {
        FAIL(c, HSQ_EQUEUEFULL, "queue is full (%" PRIu64 " active tasks); retry later", active);
        return;
    }
    if (hsq_store_room(q->st) != 0) {
        FAIL(c, HSQ_EDISKFULL, "storage is full (%s); the task was not accepted, retry later",
             hsq_store_lasterr(q->st));
        return;
    }
    user_rec u;
    if (load_user(q, r->user, &u) != 0) {
        fail_store(c, q->turn_err);
        return;
    }
    if (u.active >= q->conf.max_queued_per_user) {
        FAIL(c, HSQ_EQUEUEFULL,
             "user has %" PRIu64 " active tasks (limit %" PRIu64 "); wait for some to finish",
             u.active, q->conf.max_queued_per_user);
        return;
    }

    uint64_t id = q->ids.next_id;
    if (id - q->durable_next_id >= HSQ_RECOVER_SPAN) {
        /* Start-up recovery assumes that what a crash lost took fewer ids
         * (queue.h): a turn, and the failed turns since the last commit,
         * whose ids are not used again (fail_turn). The shell's per-turn
         * batch keeps far below. */
        FAIL(c, HSQ_EUNAVAIL, "too many submits in one turn; retry");
        return;
    }
    hsq_task t;
    memset(&t, 0, sizeof t);
    t.id = id;
    t.state = HSQ_STATE_QUEUED;
    t.prio = r->prio;
    t.created_ms = q->now;
    t.user = r->user;
    t.key = r->key;
    t.prompt = r->prompt;
    t.n_inputs = r->n_inputs;
    t.n_specs = r->n_outputs;
    memcpy(t.specs, r->outputs, sizeof(hsq_wire_outspec) * r->n_outputs);
    t.settings = r->settings;
    t.keep_uploads_s = r->keep_uploads_s;
    t.keep_outputs_s = r->keep_outputs_s;

    /* Credits are checked before anything is written (the blob puts below
     * can fail on their own) and reserved with the task's other records. */
    int64_t cost = task_cost(q, &t);
    if (cost > 0 && credit_check(c, r->user, cost, task_outputs(&t)) != 0)
        return;
    if (!c->stage && stage_make(c))
        return; /* answered a turn or more later (hsq_queue_staged) */

    /* Large inputs go to the blob store first (they can fail on a full disk
     * without touching the transaction); small ones ride inside it. */
    char keys[HSQ_MAX_INPUTS][HSQ_BLOB_KEY_MAX + 1];
    for (uint32_t i = 0; i < r->n_inputs; i++) {
        hsq_task_input *in = &t.inputs[i];
        in->kind = r->inputs[i].kind;
        in->name = r->inputs[i].name;
        in->size = c->frames[i].len;
        in->where = c->frames[i].len <= q->conf.inline_max ? HSQ_IN_INLINE : HSQ_IN_BLOB;
        if (in->where != HSQ_IN_BLOB)
            continue;
        input_blob_key(q, r->user, id, i, keys[i], sizeof keys[i]);
        int rc;
        if (c->stage) { /* written already: only named now */
            rc = hsq_blob_place(q->blob, c->stage->staged[i], keys[i], HSQ_BLOB_DEFER);
            if (rc == 0)
                c->stage->staged[i][0] = '\0';
        } else {
            rc = hsq_blob_put(q->blob, keys[i], c->frames[i].ptr, c->frames[i].len, HSQ_BLOB_DEFER);
        }
        if (rc != 0) {
            for (uint32_t j = 0; j < i; j++)
                if (t.inputs[j].where == HSQ_IN_BLOB)
                    hsq_blob_delete(q->blob, keys[j]);
            input_write_failed(c, rc);
            return;
        }
        turn_blob_note(q, keys[i]);
        in->key = hsq_str_c(keys[i]);
        blob_bytes_add(q, (int64_t)c->frames[i].len);
    }

    int p = t.prio;
    t.round = u.next_round[p] > q->rounds[p] ? u.next_round[p] : q->rounds[p];
    u.next_round[p] = t.round + 1;
    u.active++;

    int rc = 0;
    for (uint32_t i = 0; rc == 0 && i < r->n_inputs; i++) {
        if (t.inputs[i].where != HSQ_IN_INLINE)
            continue;
        uint8_t k[9];
        hsq_be64(k, id);
        k[8] = (uint8_t)i;
        rc = note(q, hsq_store_put(q->st, HSQ_DB_INPUTS, k, sizeof k, c->frames[i].ptr,
                                   c->frames[i].len));
    }
    if (rc == 0)
        rc = pending_put(q, &t);
    if (rc == 0)
        rc = hist_add(q, r->user, &u, id);
    if (rc == 0)
        rc = save_user(q, r->user, &u);
    if (rc == 0 && ikl) {
        uint8_t v[8];
        hsq_be64(v, id);
        rc = note(q, hsq_store_put(q->st, HSQ_DB_IDEM, ik, ikl, v, 8));
    }
    if (rc == 0)
        rc = stamp_submit(q, &t);
    if (rc == 0)
        rc = credit_reserve(q, &t, cost);
    if (rc == 0)
        rc = put_task(q, &t, &q->scratch); /* t views the request and keys[] only */
    if (rc != 0) {
        fail_store(c, rc);
        return;
    }
    q->ids.next_id++;
    q->counts.queued++;
    q->counts.queued_by_prio[p]++;
    q->meta_dirty = 1;
    q->submitted_total++;
    q->dispatch_needed = 1;
    changed(q, &t);

    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_SUBMIT;
    m.rid = c->m->rid;
    m.rep.submit.task = id;
    m.rep.submit.state = HSQ_STATE_QUEUED;
    m.rep.submit.created = 1;
    reply(q, c->sock, c->peer, c->plen, &m);
}

static void h_status(req_ctx *c) {
    hsq_task t;
    if (find_task(c, c->m->req.task.task, c->m->req.task.user, &t) != 0)
        return;
    reply_task(c->q, c->sock, c->peer, c->plen, c->m->op, c->m->rid, &t, 0);
}

static void h_result(req_ctx *c) {
    hsq_queue *q = c->q;
    hsq_task t;
    if (find_task(c, c->m->req.task.task, c->m->req.task.user, &t) != 0)
        return;
    if (t.state != HSQ_STATE_SUCCEEDED) {
        FAIL(c, HSQ_ECONFLICT, "task %" PRIu64 " is %s; results exist only once it succeeded", t.id,
             hsq_state_name(t.state));
        return;
    }
    if (t.expires_ms > 0 && t.expires_ms <= q->now) {
        /* Due for deletion (the sweeper may be removing the files right
         * now): gone for the client from the second retention ends. */
        FAIL(c, HSQ_ENOTFOUND,
             "the outputs of task %" PRIu64 " expired at %" PRId64 " (retention_outputs)", t.id,
             t.expires_ms);
        return;
    }
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_RESULT;
    m.rid = c->m->rid;
    hsq_task_to_wire(&t, &m.rep.task.task);
    uint8_t *data[HSQ_MAX_OUTPUTS] = {0};
    size_t lens[HSQ_MAX_OUTPUTS] = {0};
    for (uint32_t i = 0; i < t.n_outputs; i++) {
        char key[HSQ_BLOB_KEY_MAX + 1];
        snprintf(key, sizeof key, "%.*s", (int)t.outputs[i].key.len, t.outputs[i].key.ptr);
        int rc = hsq_blob_get(q->blob, key, q->conf.max_frame_bytes * 4, &data[i], &lens[i]);
        if (rc != 0) {
            for (uint32_t j = 0; j < i; j++)
                free(data[j]);
            if (rc == -ENOENT)
                FAIL(c, HSQ_ENOTFOUND, "output %u of task %" PRIu64 " is no longer stored", i,
                     t.id);
            else
                FAIL(c, HSQ_EUNAVAIL, "reading output %u failed: %s", i, hsq_strerror(rc));
            return;
        }
    }
    hsq_out *o = reply(q, c->sock, c->peer, c->plen, &m);
    o->frames = hsq_xcalloc(t.n_outputs, sizeof *o->frames);
    for (uint32_t i = 0; i < t.n_outputs; i++) {
        o->frames[i].ptr = data[i];
        o->frames[i].len = lens[i];
    }
    o->nframes = t.n_outputs;
}

static void h_wait(req_ctx *c) {
    hsq_queue *q = c->q;
    const hsq_req_wait *r = &c->m->req.wait;
    hsq_task t;
    if (find_task(c, r->task, r->user, &t) != 0)
        return;
    if (wait_satisfied(r->since, t.state) || r->timeout_ms == 0) {
        reply_task(q, c->sock, c->peer, c->plen, HSQ_OP_WAIT, c->m->rid, &t,
                   !wait_satisfied(r->since, t.state));
        return;
    }
    if (q->conf.max_waits && q->n_waits >= q->conf.max_waits) {
        /* Each parked wait holds memory until it is answered: a bound, so
         * that no client (or bug) can grow hsqd without end. */
        q->waits_refused++;
        FAIL(c, HSQ_EUNAVAIL,
             "%zu waits are parked (max_waits); poll with status, or wait again shortly",
             q->n_waits);
        return;
    }
    waiter *w = hsq_xcalloc(1, sizeof *w);
    w->task = r->task;
    memcpy(w->peer, c->peer, c->plen);
    w->peer_len = c->plen;
    w->rid = c->m->rid;
    w->since = r->since;
    w->deadline_ms = q->now + r->timeout_ms;
    waiter_add(q, w);
}

/* Take a queued task out of the pending or the delayed index. */
static int unqueue(hsq_queue *q, hsq_task *t) {
    if (t->not_before_ms == 0)
        return pending_del(q, t);
    if (q->counts.delayed > 0)
        q->counts.delayed--;
    return delayed_del(q, t);
}

/* End a leased task's lease and tell its worker to stop (abort); the
 * worker's late done/fail will be refused. */
static int abort_lease(hsq_queue *q, hsq_task *t) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.v = HSQ_WIRE_VERSION;
    m.kind = HSQ_KIND_REQUEST;
    m.op = HSQ_OP_ABORT;
    m.req.abort.task = t->id;
    m.req.abort.token = t->token;
    hsq_out *o = out_push(q, HSQ_SOCK_WORKER, (const uint8_t *)t->worker.ptr, t->worker.len);
    o->op = HSQ_OP_ABORT;
    if (hsq_wire_encode(&m, &o->meta) != 0)
        q->n_out--;
    return unlease(q, t);
}

/* Take a queued or leased task out of the queue as cancelled (by request,
 * or because it outlived retention_pending). The caller saves nothing:
 * this writes the task. Returns 0, HSQ_ECONFLICT (already terminal) or a
 * store error. */
static int cancel_task(hsq_queue *q, hsq_task *t, int code, hsq_str why) {
    int rc;
    if (t->state == HSQ_STATE_QUEUED)
        rc = unqueue(q, t);
    else if (t->state == HSQ_STATE_LEASED)
        rc = abort_lease(q, t);
    else
        return HSQ_ECONFLICT;
    set_state(q, t, HSQ_STATE_CANCELLED);
    t->not_before_ms = 0;
    t->err_code = code;
    t->err_msg = why;
    if (rc == 0)
        rc = task_ended(q, t, 0);
    if (rc == 0)
        rc = save_task(q, t);
    if (rc == 0)
        changed(q, t);
    return rc;
}

static void h_cancel(req_ctx *c) {
    hsq_queue *q = c->q;
    hsq_task t;
    if (find_task(c, c->m->req.task.task, c->m->req.task.user, &t) != 0)
        return;
    int rc = cancel_task(q, &t, HSQ_ECANCELLED, HSQ_STR_LIT("cancelled by request"));
    if (rc == HSQ_ECONFLICT) {
        FAIL(c, HSQ_ECONFLICT, "task %" PRIu64 " is already %s", t.id, hsq_state_name(t.state));
        return;
    }
    if (rc != 0) {
        fail_store(c, rc);
        return;
    }
    reply_task(q, c->sock, c->peer, c->plen, c->m->op, c->m->rid, &t, 0);
}

static void h_requeue(req_ctx *c) {
    hsq_queue *q = c->q;
    hsq_task t;
    if (find_task(c, c->m->req.task.task, c->m->req.task.user, &t) != 0)
        return;
    if (t.state != HSQ_STATE_FAILED && t.state != HSQ_STATE_CANCELLED) {
        FAIL(c, HSQ_ECONFLICT,
             "task %" PRIu64 " is %s; only failed or cancelled tasks can be "
             "requeued",
             t.id, hsq_state_name(t.state));
        return;
    }
    /* Its photos must still be there: not deleted, not due for deletion
     * (the sweeper may be removing them right now). */
    int inputs_gone = 0;
    for (uint32_t i = 0; i < t.n_inputs; i++) {
        int64_t at = is_reference(&t.inputs[i]) ? t.refs_expire_ms : t.inputs_expire_ms;
        inputs_gone |= t.inputs[i].where == HSQ_IN_GONE || (at > 0 && at <= q->now);
    }
    if (inputs_gone) {
        FAIL(c, HSQ_ECONFLICT,
             "task %" PRIu64 " cannot run again: its inputs were deleted (retention_failed); "
             "submit the photos again",
             t.id);
        return;
    }
    /* A requeued task runs again and is paid for again. */
    int64_t cost = task_cost(q, &t);
    if (cost > 0 && credit_check(c, t.user, cost, task_outputs(&t)) != 0)
        return;
    if (t.dead && q->counts.dead > 0)
        q->counts.dead--;
    user_rec u;
    if (load_user(q, t.user, &u) != 0) {
        fail_store(c, q->turn_err);
        return;
    }
    int p = t.prio;
    t.round = u.next_round[p] > q->rounds[p] ? u.next_round[p] : q->rounds[p];
    u.next_round[p] = t.round + 1;
    u.active++;
    set_state(q, &t, HSQ_STATE_QUEUED);
    t.dead = 0;
    t.attempts = 0;
    t.not_before_ms = 0;
    t.err_code = 0;
    t.err_msg.len = 0;
    t.progress = 0;
    t.stage.len = 0;
    /* Retention stamps of the failure stay in the expiry index; the sweeper
     * checks the task's current dates before deleting anything. */
    t.expires_ms = 0;
    int rc = save_user(q, t.user, &u);
    if (rc == 0)
        rc = stamp_submit(q, &t);
    if (rc == 0)
        rc = credit_reserve(q, &t, cost);
    if (rc == 0)
        rc = pending_put(q, &t);
    if (rc == 0)
        rc = save_task(q, &t);
    if (rc != 0) {
        fail_store(c, rc);
        return;
    }
    q->dispatch_needed = 1;
    changed(q, &t);
    reply_task(q, c->sock, c->peer, c->plen, c->m->op, c->m->rid, &t, 0);
}

typedef struct {
    hsq_queue *q;
    hsq_wire_task *tasks;
    hsq_wbuf *bufs;
    uint32_t n, limit;
    uint64_t next;
} list_ctx;

static int list_one(void *ctx, uint64_t id) {
    list_ctx *l = ctx;
    if (l->n == l->limit) {
        l->next = l->tasks[l->n - 1].id; /* there is more: the cursor */
        return 1;
    }
    hsq_task t;
    if (load_task(l->q, id, &t) == 0) {
        /* Copy the record: views must outlive further reads. */
        hsq_wbuf_init(&l->bufs[l->n]);
        hsq_task_encode(&t, &l->bufs[l->n]);
        hsq_task_decode(l->bufs[l->n].data, l->bufs[l->n].len, &t);
        hsq_task_to_wire(&t, &l->tasks[l->n]);
        l->n++;
    }
    return 0;
}

static void h_list(req_ctx *c) {
    hsq_queue *q = c->q;
    const hsq_req_list *r = &c->m->req.list;
    uint32_t limit = r->limit ? r->limit : 20;
    list_ctx l = {q, hsq_xcalloc(limit, sizeof(hsq_wire_task)), hsq_xcalloc(limit, sizeof(hsq_wbuf)),
                  0, limit, 0};
    int rc = hist_each_desc(q, r->user, r->before, list_one, &l);
    if (rc != 0) {
        for (uint32_t i = 0; i < l.n; i++)
            hsq_wbuf_free(&l.bufs[i]);
        free(l.bufs);
        free(l.tasks);
        fail_store(c, rc);
        return;
    }
    hsq_wire_task *tasks = l.tasks;
    hsq_wbuf *bufs = l.bufs;
    uint32_t n = l.n;
    uint64_t next = l.next;
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.v = HSQ_WIRE_VERSION;
    m.kind = HSQ_KIND_REPLY;
    m.op = HSQ_OP_LIST;
    m.rid = c->m->rid;
    m.rep.list.n = n;
    m.rep.list.tasks = tasks;
    m.rep.list.next = next;
    /* A page of tasks with many outputs can exceed the meta frame limit:
     * send a shorter page, with the cursor after its last task. */
    hsq_out *o = out_push(q, c->sock, c->peer, c->plen);
    o->op = HSQ_OP_LIST;
    o->rid = c->m->rid;
    o->is_reply = 1;
    while ((rc = hsq_wire_encode(&m, &o->meta)) == HSQ_ETOOLARGE && m.rep.list.n > 1) {
        m.rep.list.n /= 2;
        m.rep.list.next = tasks[m.rep.list.n - 1].id;
        hsq_wbuf_reset(&o->meta);
    }
    if (rc != 0) {
        hsq_wbuf_reset(&o->meta);
        hsq_wire_encode_error(HSQ_OP_LIST, c->m->rid, HSQ_EINTERNAL, "list page too large",
                              &o->meta);
    }
    for (uint32_t i = 0; i < n; i++)
        hsq_wbuf_free(&bufs[i]);
    free(bufs);
    free(tasks);
}

/* created_ms of the oldest queued task. Ids grow with time, so the smallest
 * id among the pending and delayed entries is the oldest; the scan is
 * bounded so a stats call never stalls the loop on a deep queue (beyond the
 * bound the answer is the oldest among the first OLDEST_SCAN entries). */
#define OLDEST_SCAN 4096
static int64_t oldest_queued(hsq_queue *q) {
    uint64_t best = UINT64_MAX;
    hsq_db dbs[2] = {HSQ_DB_PENDING, HSQ_DB_DELAYED};
    for (int i = 0; i < 2; i++) {
        hsq_cursor *cur;
        if (hsq_cursor_open(q->st, dbs[i], &cur) != 0)
            continue;
        hsq_bytes k;
        int rc = hsq_cursor_get(cur, HSQ_CUR_FIRST, &k, NULL);
        for (int n = 0; rc == 0 && n < OLDEST_SCAN; n++) {
            if (k.len >= 16) {
                uint64_t id = hsq_rd_be64(k.ptr + k.len - 8);
                if (id < best)
                    best = id;
            }
            rc = hsq_cursor_get(cur, HSQ_CUR_NEXT, &k, NULL);
        }
        hsq_cursor_close(&cur);
    }
    hsq_task t;
    if (best == UINT64_MAX || load_task(q, best, &t) != 0)
        return 0;
    return t.created_ms;
}

static void h_stats(req_ctx *c) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_STATS;
    m.rid = c->m->rid;
    hsq_queue_stats(c->q, &m.rep.stats);
    m.rep.stats.oldest_queued_ms = oldest_queued(c->q);
    reply(c->q, c->sock, c->peer, c->plen, &m);
}

static void h_ready(req_ctx *c) {
    hsq_queue *q = c->q;
    const hsq_req_ready *r = &c->m->req.ready;
    worker_rec *w = worker_touch(q, c->peer, c->plen);
    snprintf(w->name, sizeof w->name, "%.*s", (int)r->name.len, r->name.ptr);
    snprintf(w->backend, sizeof w->backend, "%.*s", (int)r->backend.len, r->backend.ptr);
    snprintf(w->device, sizeof w->device, "%.*s", (int)r->device.len, r->device.ptr);
    w->max_batch = r->max_batch;
    w->prefetch = r->prefetch ? r->prefetch : 1;
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_READY;
    m.rid = c->m->rid;
    m.rep.ready.lease_ms = (uint32_t)q->conf.lease_ms;
    m.rep.ready.heartbeat_ms = (uint32_t)q->conf.heartbeat_ms;
    reply(q, c->sock, c->peer, c->plen, &m);
}

static void h_lease(req_ctx *c) {
    hsq_queue *q = c->q;
    const hsq_req_lease *r = &c->m->req.lease;
    worker_rec *w = worker_touch(q, c->peer, c->plen);
    /* A peer has at most `prefetch` lease requests parked (1 unless its ready
     * said more): one more replaces its oldest, which a worker re-sending
     * after a local timeout has given up on. Parked requests are served in
     * arrival order, so a prefetching worker takes its second batch only
     * after the workers that asked before it. */
    size_t mine = 0, oldest = SIZE_MAX;
    for (size_t i = 0; i < q->n_parked; i++) {
        const parked_lease *p = &q->parked[i];
        if (p->peer_len == c->plen && memcmp(p->peer, c->peer, c->plen) == 0) {
            if (oldest == SIZE_MAX)
                oldest = i;
            mine++;
        }
    }
    if (mine >= w->prefetch && oldest != SIZE_MAX) {
        parked_lease *p = &q->parked[oldest];
        memmove(p, p + 1, (q->n_parked - oldest - 1) * sizeof *p);
        q->n_parked--;
    }
    q->parked = hsq_xgrow(q->parked, q->n_parked, &q->cap_parked, sizeof *q->parked, 16);
    parked_lease *p = &q->parked[q->n_parked++];
    memcpy(p->peer, c->peer, c->plen);
    p->peer_len = c->plen;
    p->rid = c->m->rid;
    p->max = r->max;
    p->deadline_ms = q->now + r->wait_ms;
    q->dispatch_needed = 1;
}

/* Check a worker's (task, token); loads the task. Replies stale_lease when the
 * lease is gone, and returns HSQ_ENOTFOUND when the task is, else HSQ_ESTALE. */
static int check_lease(req_ctx *c, uint64_t id, uint64_t token, hsq_task *t) {
    int rc = load_task(c->q, id, t);
    if (rc == HSQ_ENOTFOUND || (rc == 0 && (t->state != HSQ_STATE_LEASED || t->token != token))) {
        FAIL(c, HSQ_ESTALE, "lease on task %" PRIu64 " (token %" PRIu64 ") is no longer held", id,
             token);
        return rc == HSQ_ENOTFOUND ? rc : HSQ_ESTALE;
    }
    if (rc != 0) {
        fail_store(c, rc);
        return rc;
    }
    return 0;
}

static void reply_empty(req_ctx *c) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = c->m->op;
    m.rid = c->m->rid;
    reply(c->q, c->sock, c->peer, c->plen, &m);
}

static void h_heartbeat(req_ctx *c) {
    hsq_queue *q = c->q;
    const hsq_req_heartbeat *r = &c->m->req.heartbeat;
    worker_touch(q, c->peer, c->plen);
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_HEARTBEAT;
    m.rid = c->m->rid;
    for (uint32_t i = 0; i < r->n; i++) {
        hsq_task t;
        int rc = load_task(q, r->leases[i].task, &t);
        if (rc != 0 || t.state != HSQ_STATE_LEASED || t.token != r->leases[i].token) {
            if (rc != 0 && rc != HSQ_ENOTFOUND) {
                fail_store(c, rc);
                return;
            }
            m.rep.heartbeat.lost[m.rep.heartbeat.n_lost++] = r->leases[i].task;
            continue;
        }
        rc = lease_del(q, &t);
        t.deadline_ms = q->now + (int64_t)q->conf.lease_ms;
        uint8_t k[16];
        time_key(k, t.deadline_ms, t.id);
        if (rc == 0)
            rc = note(q, hsq_store_put(q->st, HSQ_DB_LEASES, k, sizeof k, "", 0));
        if (rc == 0)
            rc = save_task(q, &t);
        if (rc != 0) {
            fail_store(c, rc);
            return;
        }
    }
    reply(q, c->sock, c->peer, c->plen, &m);
}

static void h_progress(req_ctx *c) {
    hsq_queue *q = c->q;
    const hsq_req_progress *r = &c->m->req.progress;
    worker_touch(q, c->peer, c->plen);
    hsq_task t;
    if (check_lease(c, r->task, r->token, &t) != 0)
        return;
    t.progress = r->pct;
    t.stage = r->stage;
    if (save_task(q, &t) != 0) {
        fail_store(c, q->turn_err);
        return;
    }
    changed(q, &t);
    reply_empty(c);
}

static void output_missing(req_ctx *c, uint32_t i, const hsq_wire_output *o) {
    FAIL(c, HSQ_EBADREQ, "output %u (%.*s) is not in the blob store with %" PRIu64 " bytes", i,
         (int)o->key.len, o->key.ptr, o->size);
}

/* The outputs are confirmed and t's lease is current: t succeeded. */
static void done_finish(req_ctx *c, hsq_task *t) {
    hsq_queue *q = c->q;
    const hsq_req_done *r = &c->m->req.done;
    int rc = unlease(q, t);
    set_state(q, t, HSQ_STATE_SUCCEEDED);
    t->n_outputs = r->n_outputs;
    memcpy(t->outputs, r->outputs, sizeof(hsq_wire_output) * r->n_outputs);
    t->info = r->info;
    t->progress = 100;
    t->err_code = 0;
    t->err_msg.len = 0;
    if (rc == 0)
        rc = task_ended(q, t, 1);
    if (rc == 0) {
        /* Announced before the write, while t's views of its old record
         * are valid: then the write needs no re-decode. A failed write
         * fails the turn, and its events are dropped. */
        t->updated_ms = q->now;
        changed(q, t);
        rc = put_task(q, t, &q->scratch);
    }
    if (rc != 0) {
        fail_store(c, rc);
        return;
    }
    for (uint32_t i = 0; i < r->n_outputs; i++)
        blob_bytes_add(q, (int64_t)r->outputs[i].size);
    q->completed_total++;
    reply_empty(c);
}

/* Copy the done request into k: its outputs, their keys (NUL-terminated)
 * and the info map in one allocation (k->mem). */
static void check_make(req_ctx *c, hsq_check *k) {
    const hsq_req_done *r = &c->m->req.done;
    size_t bytes = r->n_outputs * sizeof(hsq_wire_output) + r->info.len;
    for (uint32_t i = 0; i < r->n_outputs; i++)
        bytes += r->outputs[i].key.len + 1;
    memset(k, 0, sizeof *k);
    k->task = r->task;
    k->token = r->token;
    k->rid = c->m->rid;
    k->n_outputs = r->n_outputs;
    k->peer_len = c->plen;
    memcpy(k->peer, c->peer, c->plen);
    uint8_t *mem = hsq_xmalloc(bytes ? bytes : 1);
    k->mem = mem;
    k->outputs = (hsq_wire_output *)mem;
    memcpy(k->outputs, r->outputs, r->n_outputs * sizeof(hsq_wire_output));
    char *p = (char *)(mem + r->n_outputs * sizeof(hsq_wire_output));
    for (uint32_t i = 0; i < r->n_outputs; i++) {
        memcpy(p, r->outputs[i].key.ptr, r->outputs[i].key.len);
        p[r->outputs[i].key.len] = '\0';
        k->outputs[i].key.ptr = p;
        p += r->outputs[i].key.len + 1;
    }
    if (r->info.len) {
        memcpy(p, r->info.ptr, r->info.len);
        k->info.ptr = (const uint8_t *)p;
        k->info.len = r->info.len;
    }
    k->bad = -1;
}

/* A done for a task that is not there (erased meanwhile, or a lease that
 * left before a commit that failed or never came, see hsq_queue_end_turn):
 * no record will ever point at the files the worker wrote for it, so they
 * go now, the directory "u/<hash>/<task>/" of each output key that names
 * this task. A key of any other shape is left alone (it is refused as
 * outside the task's prefix in any case). */
static void discard_outputs(hsq_queue *q, const hsq_req_done *r) {
    char dir[HSQ_BLOB_KEY_MAX + 1], last[HSQ_BLOB_KEY_MAX + 1] = "";
    char id[24];
    int il = snprintf(id, sizeof id, "%" PRIu64 "/", r->task);
    uint64_t bytes = 0, dirs = 0;
    for (uint32_t i = 0; i < r->n_outputs; i++) {
        hsq_str k = r->outputs[i].key;
        size_t dl = HSQ_BLOB_PREFIX_LEN + (size_t)il;
        if (k.len <= dl || k.len > HSQ_BLOB_KEY_MAX || memcmp(k.ptr, "u/", 2) != 0 ||
            k.ptr[HSQ_BLOB_PREFIX_LEN - 1] != '/' ||
            memcmp(k.ptr + HSQ_BLOB_PREFIX_LEN, id, (size_t)il) != 0)
            continue;
        memcpy(dir, k.ptr, k.len);
        dir[k.len] = '\0';
        if (!hsq_blob_key_ok(dir))
            continue;
        dir[dl] = '\0';
        if (strcmp(dir, last) == 0)
            continue;
        memcpy(last, dir, dl + 1);
        uint64_t b = 0;
        q->blob_ops++;
        if (hsq_blob_delete_prefix_flags(q->blob, dir, &b, HSQ_BLOB_DEFER) == 0) {
            bytes += b;
            dirs++;
        }
    }
    if (dirs)
        hsq_log(HSQ_LOG_NOTICE, "queue",
                "late result discarded task=%" PRIu64 " dirs=%" PRIu64 " bytes=%" PRIu64, r->task,
                dirs, bytes);
}

/* The lease is current and every output key lies under the task's prefix:
 * 0 with t loaded, else answered. */
static int done_validate(req_ctx *c, hsq_task *t) {
    const hsq_req_done *r = &c->m->req.done;
    int rc = check_lease(c, r->task, r->token, t);
    if (rc != 0) {
        if (rc == HSQ_ENOTFOUND)
            discard_outputs(c->q, r);
        return HSQ_ESTALE;
    }
    char prefix[HSQ_BLOB_KEY_MAX + 1];
    out_prefix(c->q, t->user, t->id, prefix, sizeof prefix);
    size_t pl = strlen(prefix);
    for (uint32_t i = 0; i < r->n_outputs; i++) {
        const hsq_wire_output *o = &r->outputs[i];
        if (o->key.len <= pl || o->key.len > HSQ_BLOB_KEY_MAX ||
            memcmp(o->key.ptr, prefix, pl) != 0) {
            FAIL(c, HSQ_EBADREQ, "output %u key is outside the task's prefix %s", i, prefix);
            return HSQ_EBADREQ;
        }
    }
    return 0;
}

static void check_answer(hsq_queue *q, const hsq_check *k);

static void h_done(req_ctx *c) {
    hsq_queue *q = c->q;
    worker_touch(q, c->peer, c->plen);
    if (q->checks_inflight + q->n_checks < q->check_max) {
        /* Everything is validated when the stats are back (a stat of a
         * key outside the prefix tells the worker nothing: it is refused
         * then either way). */
        q->checks = hsq_xgrow(q->checks, q->n_checks, &q->cap_checks, sizeof *q->checks, 64);
        check_make(c, &q->checks[q->n_checks++]);
        return;
    }
    /* Checking off (or past its limit): the same check, now, on the loop. */
    hsq_check k;
    check_make(c, &k);
    hsq_checks_run(q->blob, &k, 1);
    check_answer(q, &k);
    free(k.mem);
}

void hsq_queue_set_checking(hsq_queue *q, size_t max) {
    q->check_max = max;
}

hsq_check *hsq_queue_take_checks(hsq_queue *q, size_t *n) {
    hsq_check *v = q->checks;
    *n = q->n_checks;
    q->checks_inflight += q->n_checks;
    q->checks = NULL;
    q->n_checks = q->cap_checks = 0;
    return v;
}

void hsq_checks_run(hsq_blob *b, hsq_check *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        hsq_check *k = &v[i];
        k->bad = -1;
        k->rc = 0;
        for (uint32_t j = 0; j < k->n_outputs; j++) {
            uint64_t size = 0;
            int rc = hsq_blob_size(b, k->outputs[j].key.ptr, &size);
            if (rc != 0 || size != k->outputs[j].size) {
                k->bad = (int)j;
                k->rc = rc;
                break;
            }
        }
    }
}

/* Answer a done whose stats ran: validated as it stands now, then the
 * missing output refused or the task recorded. */
static void check_answer(hsq_queue *q, const hsq_check *k) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.kind = HSQ_KIND_REQUEST;
    m.op = HSQ_OP_DONE;
    m.rid = k->rid;
    hsq_req_done *r = &m.req.done;
    r->task = k->task;
    r->token = k->token;
    r->n_outputs = k->n_outputs;
    memcpy(r->outputs, k->outputs, k->n_outputs * sizeof *k->outputs);
    r->info = k->info;
    req_ctx c = {q, HSQ_SOCK_WORKER, NULL, k->peer, k->peer_len, &m, NULL, 0};
    hsq_task t;
    if (q->turn_err)
        fail_store(&c, q->turn_err);
    else if (done_validate(&c, &t) != 0)
        return;
    else if (k->bad >= 0)
        output_missing(&c, (uint32_t)k->bad, &k->outputs[k->bad]);
    else
        done_finish(&c, &t);
}

void hsq_queue_checked(hsq_queue *q, hsq_check *v, size_t n) {
    assert(q->in_turn);
    q->checks_inflight = q->checks_inflight > n ? q->checks_inflight - n : 0;
    for (size_t i = 0; i < n; i++) {
        q->turn_msgs++;
        check_answer(q, &v[i]);
    }
    hsq_checks_free(v, n);
}

size_t hsq_queue_checks_inflight(const hsq_queue *q) {
    return q->checks_inflight;
}

void hsq_checks_free(hsq_check *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(v[i].mem);
    free(v);
}

void hsq_queue_set_staging(hsq_queue *q, uint64_t max_bytes) {
    q->stage_max = max_bytes;
}

hsq_stage *hsq_queue_take_stages(hsq_queue *q, size_t *n) {
    hsq_stage *v = q->stages;
    *n = q->n_stages;
    q->stages_inflight += q->n_stages;
    q->stages = NULL;
    q->n_stages = q->cap_stages = 0;
    return v;
}

void hsq_stages_run(hsq_blob *b, hsq_stage *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        hsq_stage *s = &v[i];
        s->rc = 0;
        for (size_t j = 0; j + 1 < s->nframes; j++) {
            s->staged[j][0] = '\0';
            if (s->frames[j + 1].len <= s->inline_max)
                continue;
            s->rc =
                hsq_blob_stage(b, s->dir, s->frames[j + 1].ptr, s->frames[j + 1].len, s->staged[j]);
            if (s->rc != 0) {
                for (size_t k = 0; k < j; k++)
                    if (s->staged[k][0])
                        (void)hsq_blob_unstage(b, s->staged[k]);
                memset(s->staged, 0, sizeof s->staged);
                break;
            }
        }
    }
}

void hsq_queue_staged(hsq_queue *q, hsq_stage *v, size_t n) {
    assert(q->in_turn);
    q->stages_inflight = q->stages_inflight > n ? q->stages_inflight - n : 0;
    for (size_t i = 0; i < n; i++) {
        hsq_stage *s = &v[i];
        q->turn_msgs++;
        q->staged_bytes = q->staged_bytes > s->bytes ? q->staged_bytes - s->bytes : 0;
        hsq_wire_msg m;
        memset(&m, 0, sizeof m);
        int rc = hsq_wire_decode(s->frames[0].ptr, s->frames[0].len, s->nframes - 1, &m);
        req_ctx c = {q,  s->sock,       NULL,           s->peer,   s->peer_len,
                     &m, s->frames + 1, s->nframes - 1, s->frames, s};
        if (rc != 0) /* it decoded when it was staged */
            FAIL(&c, HSQ_EINTERNAL, "staged submit does not decode (%s)", hsq_strerror(rc));
        else if (q->turn_err)
            fail_store(&c, q->turn_err);
        else if (s->rc != 0)
            input_write_failed(&c, s->rc);
        else {
            q->durable = 1;
            h_submit(&c);
        }
        hsq_wire_msg_free(&m);
    }
    /* What h_submit did not place (refused, or failed midway) goes. */
    hsq_stages_free(q->blob, v, n);
}

size_t hsq_queue_stages_inflight(const hsq_queue *q, uint64_t *bytes) {
    if (bytes)
        *bytes = q->staged_bytes;
    return q->stages_inflight + q->n_stages;
}

void hsq_stages_free(hsq_blob *b, hsq_stage *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; b && j + 1 < v[i].nframes; j++)
            if (v[i].staged[j][0])
                (void)hsq_blob_unstage(b, v[i].staged[j]);
        free(v[i].buf);
    }
    free(v);
}

static void h_fail(req_ctx *c) {
    hsq_queue *q = c->q;
    const hsq_req_fail *r = &c->m->req.fail;
    worker_touch(q, c->peer, c->plen);
    hsq_task t;
    if (check_lease(c, r->task, r->token, &t) != 0)
        return;
    /* A worker that hands a job back unstarted (it is stopping) did not use
     * up an attempt. */
    if (r->retryable && r->code == HSQ_EUNAVAIL && t.attempts > 0)
        t.attempts--;
    if (retry_or_fail(q, &t, r->code, r->message, r->retryable) != 0) {
        fail_store(c, q->turn_err);
        return;
    }
    if (t.state == HSQ_STATE_FAILED)
        q->completed_total++;
    reply_empty(c);
}

/* ---- audit log ---- */

/* Hex of the keyed hash of a user id under the audit key (a different key
 * from the blob store's, so the audit log cannot be joined to paths). */
static void audit_subject(hsq_queue *q, hsq_str user, char out[33]) {
    uint8_t h[16];
    crypto_generichash(h, sizeof h, (const uint8_t *)user.ptr, user.len, q->audit_key,
                       sizeof q->audit_key);
    hsq_hex(h, sizeof h, out);
}

static void audit(hsq_queue *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void audit(hsq_queue *q, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    uint8_t k[16];
    hsq_be64(k, (uint64_t)q->now);
    hsq_be64(k + 8, q->audit_seq++);
    note(q, hsq_store_put(q->st, HSQ_DB_AUDIT, k, sizeof k, line,
                          (size_t)n < sizeof line ? (size_t)n : sizeof line - 1));
}

/* Audit lines older than retention_audit go, a bounded number per turn. */
static void sweep_audit(hsq_queue *q, uint32_t budget) {
    int64_t cut = q->now - (int64_t)q->conf.retention_audit_ms;
    while (budget-- > 0 && q->turn_err == 0) {
        hsq_cursor *cur;
        if (note(q, hsq_cursor_open(q->st, HSQ_DB_AUDIT, &cur)) != 0)
            return;
        hsq_bytes k;
        int rc = hsq_cursor_get(cur, HSQ_CUR_FIRST, &k, NULL);
        int due = rc == 0 && k.len == 16 && (int64_t)hsq_rd_be64(k.ptr) < cut;
        if (due)
            note(q, hsq_cursor_del(cur));
        hsq_cursor_close(&cur);
        if (!due)
            return;
    }
}

/* ---- purge ---- */

#define PURGE_MAX 2000      /* entries deleted per purge request */
#define PURGE_DRY_MAX 20000 /* entries counted per dry-run request (reads only) */
#define PURGE_TURN 64       /* sweep budget per turn while a purge pass runs */
#define ROOM_TURN 4         /* the sweep and rewrite budget on a full disk (disk_paced) */
#define PURGE_REAP_MAX 512  /* entries per request when the reaper deletes (the
                               reply comes after them: about a second or two) */

static uint32_t sweep(hsq_queue *q, uint32_t budget, int dry, int reap, hsq_sweep_counts *sc);

static void counts_add(hsq_sweep_counts *dst, const hsq_sweep_counts *src) {
    dst->inputs += src->inputs;
    dst->outputs += src->outputs;
    dst->tasks += src->tasks;
    dst->tombstones += src->tombstones;
    dst->cancelled += src->cancelled;
    dst->bytes += src->bytes;
    dst->errors += src->errors;
}

/* ---- free-page scrub (store.h, hsq_store_scrub) ---- */

/* The scrub's progress into META with the turn: a restart continues it. */
static void scrub_save(hsq_queue *q) {
    uint64_t s[2] = {q->scrub_next, q->scrub_upto};
    note(q, hsq_store_put(q->st, HSQ_DB_META, SCRUB_KEY, strlen(SCRUB_KEY), s, sizeof s));
}

/* Scrub the free list up to this turn's transaction: deleted records (an
 * erasure's, retention's) lie in pages LMDB has freed but not reused, and
 * in older copies of them. A scrub under way is extended, not restarted. */
static void scrub_request(hsq_queue *q) {
    if (q->scrub_upto == 0) {
        q->scrub_next = 0;
        q->scrub_pages = 0;
    }
    q->scrub_upto = hsq_store_txn_id(q->st);
    scrub_save(q);
}

/* One bounded scrub step, before the turn's commit (which syncs the zeros).
 * A failed step is logged and tried again a minute later: it leaves nothing
 * inconsistent, only bytes not yet overwritten. */
static void scrub_step(hsq_queue *q) {
    if (q->now < q->scrub_retry_ms)
        return;
    uint64_t next = q->scrub_next, pages = 0;
    int done = 0;
    int rc = hsq_store_scrub(q->st, &next, q->scrub_upto, SCRUB_PAGES, &pages, &done);
    if (rc != 0) {
        hsq_log(HSQ_LOG_WARN, "queue", "free-page scrub failed err=%s retry_s=%d",
                hsq_strerror(rc), SCRUB_RETRY_MS / 1000);
        q->scrub_retry_ms = q->now + SCRUB_RETRY_MS;
        return;
    }
    q->scrub_next = next;
    q->scrub_pages += pages;
    q->scrub_pages_total += pages;
    if (done) {
        hsq_log(HSQ_LOG_NOTICE, "queue", "free-page scrub done pages=%" PRIu64, q->scrub_pages);
        q->scrub_upto = 0;
        note(q, hsq_store_del(q->st, HSQ_DB_META, SCRUB_KEY, strlen(SCRUB_KEY)));
        /* And the journal's files, which hold the deleted records too. */
        hsq_store_forget(q->st);
        return;
    }
    /* Written every step even without progress: the commit then takes a
     * new txnid, which is what makes the newest freed pages unreachable. */
    scrub_save(q);
}

/* ---- the rewrite after an erasure or a purge ----
 *
 * The scrub zeroes free pages; what it cannot reach is the unused middle of
 * live pages. LMDB builds a page it writes in a buffer it keeps from earlier
 * transactions, without clearing it, and copies a page into one without its
 * unused middle; a deleted record's bytes stay in the middle of its page
 * too. So after an erasure the user's bytes can ride along into pages
 * written later (test_erase_scrub found 63 copies of the id that way). The
 * cure: reopen the store (store.h: the kept buffers go, and new ones are
 * zeroed), then put every record of every tree again with its own value,
 * which writes every page anew from clean memory, a bounded number a turn,
 * and scrub the pages that frees. */

/* Records copied out of a cursor walk, so that the tree can be written while
 * they are read back: u32 key length | key | u32 value length | value. */
static void batch_add(hsq_wbuf *b, hsq_bytes k, hsq_bytes v) {
    uint32_t kl = (uint32_t)k.len, vl = (uint32_t)v.len;
    hsq_wbuf_append(b, &kl, sizeof kl);
    hsq_wbuf_append(b, k.ptr, k.len);
    hsq_wbuf_append(b, &vl, sizeof vl);
    hsq_wbuf_append(b, v.ptr, v.len);
}

/* The record at p into *k and *v (views into the batch); the next one's
 * start. */
static const uint8_t *batch_next(const uint8_t *p, hsq_bytes *k, hsq_bytes *v) {
    uint32_t kl, vl;
    memcpy(&kl, p, sizeof kl);
    k->ptr = p + sizeof kl;
    k->len = kl;
    memcpy(&vl, k->ptr + kl, sizeof vl);
    v->ptr = k->ptr + kl + sizeof vl;
    v->len = vl;
    return v->ptr + vl;
}

static void rewrite_save(hsq_queue *q) {
    uint8_t v[5 + sizeof q->rewrite_key];
    uint32_t db = (uint32_t)q->rewrite_db;
    memcpy(v, &db, sizeof db);
    v[sizeof db] = (uint8_t)(q->rewrite_again != 0);
    memcpy(v + sizeof db + 1, q->rewrite_key, q->rewrite_klen);
    note(q, hsq_store_put(q->st, HSQ_DB_META, REWRITE_KEY, strlen(REWRITE_KEY), v,
                          sizeof db + 1 + q->rewrite_klen));
}

static uint64_t swept_total(const hsq_queue *q) {
    return q->swept.inputs + q->swept.outputs + q->swept.tasks + q->swept.tombstones +
           q->swept.cancelled;
}

static void rewrite_start(hsq_queue *q) {
    q->rewrite_db = 0;
    q->rewrite_klen = 0;
    q->rewrite_again = 0;
    q->rewrite_reopen = 1;
    q->rewrite_entries = 0;
    q->rewrite_at_ms = q->now;
    q->rewrite_swept = swept_total(q);
    note(q, hsq_store_put(q->st, HSQ_DB_META, REWRITE_AT_KEY, strlen(REWRITE_AT_KEY),
                          &q->rewrite_at_ms, sizeof q->rewrite_at_ms));
    rewrite_save(q);
}

/* The continuous sweeper deletes without a purge request: when it has
 * deleted anything since the last pass began and that was a day ago, a
 * pass (where cron runs `hsq purge` daily, its request has started one). */
static void rewrite_daily(hsq_queue *q) {
    if (q->rewrite_db < 0 && swept_total(q) != q->rewrite_swept &&
        q->now - q->rewrite_at_ms >= REWRITE_EVERY_MS)
        rewrite_start(q);
}

/* After an erasure, or a purge request that finished (cron's, daily). A
 * pass under way goes on (what it rewrites still cleans the earlier
 * deletions), and another one follows it for this deletion, whose pages may
 * be among those already rewritten: each deletion is cleaned by at most
 * two passes, however often they come. */
static void rewrite_request(hsq_queue *q) {
    if (q->rewrite_db >= 0) {
        q->rewrite_again = 1;
        rewrite_save(q);
        return;
    }
    rewrite_start(q);
}

static void rewrite_step(hsq_queue *q, uint32_t budget) {
    hsq_wbuf b;
    hsq_wbuf_init(&b);
    while (budget > 0 && q->rewrite_db < HSQ_DB_COUNT_ && q->turn_err == 0) {
        hsq_cursor *cur;
        if (note(q, hsq_cursor_open(q->st, (hsq_db)q->rewrite_db, &cur)) != 0)
            break;
        hsq_bytes k = {q->rewrite_key, q->rewrite_klen}, v;
        int rc = q->rewrite_klen ? hsq_cursor_get(cur, HSQ_CUR_SET_RANGE, &k, &v)
                                 : hsq_cursor_get(cur, HSQ_CUR_FIRST, &k, &v);
        if (rc == 0 && q->rewrite_klen && k.len == q->rewrite_klen &&
            memcmp(k.ptr, q->rewrite_key, k.len) == 0)
            rc = hsq_cursor_get(cur, HSQ_CUR_NEXT, &k, &v);
        hsq_wbuf_reset(&b);
        uint32_t n = 0;
        for (; rc == 0 && n < budget; rc = hsq_cursor_get(cur, HSQ_CUR_NEXT, &k, &v), n++)
            batch_add(&b, k, v);
        hsq_cursor_close(&cur);
        if (rc != 0 && rc != HSQ_ENOTFOUND) {
            note(q, rc);
            break;
        }
        const uint8_t *p = (const uint8_t *)b.data;
        for (uint32_t i = 0; i < n && q->turn_err == 0; i++) {
            hsq_bytes rk, rv;
            p = batch_next(p, &rk, &rv);
            if (note(q, hsq_store_put(q->st, (hsq_db)q->rewrite_db, rk.ptr, rk.len, rv.ptr,
                                      rv.len)) != 0)
                break;
            if (rk.len <= sizeof q->rewrite_key) {
                memcpy(q->rewrite_key, rk.ptr, rk.len);
                q->rewrite_klen = rk.len;
            }
        }
        budget -= n;
        q->rewrite_entries += n;
        if (rc == HSQ_ENOTFOUND) { /* the end of this tree */
            q->rewrite_db++;
            q->rewrite_klen = 0;
        }
    }
    hsq_wbuf_free(&b);
    if (q->turn_err != 0)
        return;
    if (q->rewrite_db >= HSQ_DB_COUNT_) {
        hsq_log(HSQ_LOG_NOTICE, "queue", "page rewrite done records=%" PRIu64 " again=%d",
                q->rewrite_entries, q->rewrite_again);
        scrub_request(q); /* the pages the rewrite freed */
        if (q->rewrite_again) {
            rewrite_start(q);
        } else {
            q->rewrite_db = -1;
            note(q, hsq_store_del(q->st, HSQ_DB_META, REWRITE_KEY, strlen(REWRITE_KEY)));
        }
    } else {
        rewrite_save(q);
    }
}

/* The reply to a purge request, and its audit line when anything went. */
static void purge_reply(hsq_queue *q, hsq_sock sock, const uint8_t *peer, size_t plen,
                        uint64_t rid, int dry, int more, const hsq_sweep_counts *sc) {
    /* The end of a purge (cron's, or hsq purge by hand): what retention
     * deleted since the last scrub leaves LMDB's free pages, and the
     * unused middle of its live pages, too. */
    if (!dry && !more) {
        scrub_request(q);
        rewrite_request(q);
    }
    if (!dry && (sc->inputs || sc->outputs || sc->tasks || sc->tombstones || sc->cancelled ||
                 sc->errors))
        audit(q,
              "op=purge inputs=%" PRIu64 " outputs=%" PRIu64 " tasks=%" PRIu64
              " tombstones=%" PRIu64 " cancelled=%" PRIu64 " bytes=%" PRIu64,
              sc->inputs, sc->outputs, sc->tasks, sc->tombstones, sc->cancelled, sc->bytes);
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_PURGE;
    m.rid = rid;
    hsq_rep_purge *p = &m.rep.purge;
    p->dry_run = dry;
    p->more = more;
    p->inputs = sc->inputs;
    p->outputs = sc->outputs;
    p->tasks = sc->tasks;
    p->tombstones = sc->tombstones;
    p->cancelled = sc->cancelled;
    p->bytes = sc->bytes;
    p->errors = sc->errors;
    reply(q, sock, peer, plen, &m);
}

/* One bounded pass on the loop, answered at once: dry runs, and every pass
 * when there is no reaper. `reaped` (or NULL) adds what the janitor removed
 * for a pass that waited on it. */
static void purge_pass(hsq_queue *q, hsq_sock sock, const uint8_t *peer, size_t plen, uint64_t rid,
                       uint32_t limit, int dry, const hsq_sweep_counts *reaped) {
    hsq_sweep_counts sc;
    memset(&sc, 0, sizeof sc);
    uint32_t n = sweep(q, limit, dry, 0, &sc);
    if (q->turn_err) {
        /* (the turn fails: fail_turn rewrites this as the store error) */
        reply_error(q, sock, peer, plen, HSQ_OP_PURGE, rid, HSQ_EUNAVAIL,
                    "storage error (%s); nothing was purged", hsq_strerror(q->turn_err));
        return;
    }
    if (reaped)
        counts_add(&sc, reaped);
    /* The sweep stops once its cost reaches the limit, and an entry that
     * deletes files costs more than one: it may pass the limit. (A pass
     * that ended exactly there with nothing left says more once too much.) */
    purge_reply(q, sock, peer, plen, rid, dry, n >= limit, &sc);
}

static void h_purge(req_ctx *c) {
    hsq_queue *q = c->q;
    const hsq_req_purge *r = &c->m->req.purge;
    /* Bounded work per request, like every turn: the loop keeps serving
     * submits while a big purge runs; clients ask again while `more`. */
    uint32_t cap = r->dry_run ? PURGE_DRY_MAX : PURGE_MAX;
    uint32_t limit = r->limit && r->limit < cap ? r->limit : cap;
    if (!r->dry_run && (q->reap_max > 0 || q->recovering)) {
        /* With a reaper the pass runs in the turns' sweeps, its file
         * deletions on the reaper's thread (a pass on the loop fsynced its
         * way through up to 2,000 entries in one turn); "a pass now"
         * includes what the reaper holds and the uploads a crash left. The
         * reply comes once all of it is done (answer_purge_waits), so the
         * files it counts are gone. Requests arriving meanwhile join the
         * pass in progress. */
        if (q->n_purge_waits == 0) {
            q->purge_used = 0;
            q->purge_exhausted = 0;
        }
        q->purge_waits = hsq_xgrow(q->purge_waits, q->n_purge_waits, &q->cap_purge_waits,
                                   sizeof *q->purge_waits, 4);
        purge_wait *w = &q->purge_waits[q->n_purge_waits++];
        w->sock = c->sock;
        memcpy(w->peer, c->peer, c->plen);
        w->peer_len = c->plen;
        w->rid = c->m->rid;
        w->limit = q->reap_max > 0 && limit > PURGE_REAP_MAX ? PURGE_REAP_MAX : limit;
        return;
    }
    purge_pass(q, c->sock, c->peer, c->plen, c->m->rid, limit, r->dry_run, NULL);
}

/* A new, zeroed entry for the reaper, in flight once the turn hands the
 * list over (hsq_queue_take_reaps); the caller fills it in. */
static hsq_reap *reap_push(hsq_queue *q) {
    q->reaps = hsq_xgrow(q->reaps, q->n_reaps, &q->cap_reaps, sizeof *q->reaps, 16);
    hsq_reap *r = &q->reaps[q->n_reaps++];
    memset(r, 0, sizeof *r);
    return r;
}

/* ---- erase-user ----
 *
 * The request records the user in the ledger and waits; the ledger entry
 * reaches the disk with the turn, and from then on it is what finds the
 * user's data: every record through the user's history, every file under
 * the user's blob prefix. A later turn deletes every record, index entry and
 * counter of theirs and hands the prefix to the reaper (one erasure at a
 * time; a large user's files took the loop seconds to delete); while it
 * deletes, submits for the user are refused. When the reaper is done, a turn
 * deletes the ledger entry, writes the audit line and answers with a
 * receipt. Without a reaper all of it happens in one turn, files first. A
 * crash anywhere leaves the ledger entry, and the first turn after a restart
 * finishes the erasure; running it twice is harmless. */

static void h_erase(req_ctx *c) {
    hsq_queue *q = c->q;
    hsq_str user = c->m->req.erase.user;
    uint8_t k[USER_KEY_LEN];
    size_t kl = user_key(q, k, user);
    hsq_bytes v;
    int rc = hsq_store_get(q->st, HSQ_DB_LEDGER, k, kl, &v);
    if (rc == HSQ_ENOTFOUND) {
        uint8_t at[8 + HSQ_MAX_USER_LEN];
        hsq_be64(at, (uint64_t)q->now);
        memcpy(at + 8, user.ptr, user.len);
        rc = note(q, hsq_store_put(q->st, HSQ_DB_LEDGER, k, kl, at, 8 + user.len));
        q->ledger_added = 1;
    }
    if (rc != 0) {
        fail_store(c, note(q, rc));
        return;
    }
    q->erase_waits =
        hsq_xgrow(q->erase_waits, q->n_erase_waits, &q->cap_erase_waits, sizeof *q->erase_waits, 8);
    struct erase_wait *w = &q->erase_waits[q->n_erase_waits++];
    memcpy(w->peer, c->peer, c->plen);
    w->peer_len = c->plen;
    w->rid = c->m->rid;
    memcpy(w->user, user.ptr, user.len);
    w->user[user.len] = '\0';
    q->ledger_pending = 1;
}

/* Remove one task of an erased user: indexes, inline inputs, idempotency
 * key, record, history; tell its worker to stop. */
static int erase_task(hsq_queue *q, hsq_task *t, uint64_t *active) {
    int rc = 0;
    if (t->state == HSQ_STATE_QUEUED) {
        rc = unqueue(q, t);
        (*active)++;
    } else if (t->state == HSQ_STATE_LEASED) {
        rc = abort_lease(q, t);
        (*active)++;
    }
    if (rc == 0)
        rc = credit_settle(q, t, 0);
    if (t->dead && q->counts.dead > 0)
        q->counts.dead--;
    uint64_t *cnt = state_count(q, t->state);
    if (*cnt > 0)
        (*cnt)--;
    if (t->state == HSQ_STATE_QUEUED && q->counts.queued_by_prio[t->prio] > 0)
        q->counts.queued_by_prio[t->prio]--;
    q->meta_dirty = 1;
    for (uint32_t i = 0; rc == 0 && i < t->n_inputs; i++) {
        uint8_t k[9];
        hsq_be64(k, t->id);
        k[8] = (uint8_t)i;
        rc = note(q, hsq_store_del(q->st, HSQ_DB_INPUTS, k, sizeof k));
    }
    if (rc == 0 && t->key.len) {
        uint8_t ik[IDEM_KEY_LEN];
        size_t ikl = idem_key(q, ik, t->user, t->key);
        rc = note(q, hsq_store_del(q->st, HSQ_DB_IDEM, ik, ikl));
    }
    uint8_t tk[8];
    task_key(tk, t->id);
    if (rc == 0)
        rc = note(q, hsq_store_del(q->st, HSQ_DB_TASKS, tk, sizeof tk));
    return rc;
}

/* Erase one task of the user being erased, if it still exists. */
static int erase_one(hsq_queue *q, uint64_t id, hsq_rep_erase *out) {
    hsq_task t;
    int rc = load_task(q, id, &t);
    if (rc == HSQ_ENOTFOUND)
        return 0;
    if (rc == 0)
        rc = erase_task(q, &t, &out->active);
    if (rc == 0)
        out->tasks++;
    return rc;
}

/* Every record, index entry and counter of the user, not the files and not
 * the ledger entry; counts added to *out. Stops after about `budget` tasks
 * (0: no limit) with *more set; called again, it goes on where it stopped. */
static int erase_user_records(hsq_queue *q, hsq_str user, hsq_rep_erase *out, uint64_t budget,
                              int *more) {
    uint8_t k[USER_KEY_LEN + 8];
    size_t ul = user_key(q, k, user);
    int rc;
    uint64_t start = out->tasks;
    *more = 0;
    /* History holds every task the user has: take its chunks one by one
     * (each deleted before its tasks), then the ids in the user record. */
    for (;;) {
        if (budget && out->tasks - start >= budget) {
            *more = 1;
            return q->turn_err;
        }
        hsq_cursor *cur;
        if ((rc = note(q, hsq_cursor_open(q->st, HSQ_DB_HISTORY, &cur))) != 0)
            return rc;
        memset(k + ul, 0, 8);
        hsq_bytes key = {k, ul + 8}, v;
        rc = hsq_cursor_get(cur, HSQ_CUR_SET_RANGE, &key, &v);
        hist_chunk ch = {.n = 0};
        int mine = rc == 0 && chunk_mine(key, k, ul);
        if (mine && (rc = chunk_parse(key, ul, v, &ch)) == 0)
            rc = note(q, hsq_cursor_del(cur));
        hsq_cursor_close(&cur);
        if (!mine)
            break;
        if (rc != 0)
            return note(q, rc);
        for (size_t i = 0; i < ch.n; i++)
            if ((rc = erase_one(q, ch.ids[i], out)) != 0)
                return rc;
    }
    user_rec u;
    if ((rc = load_user(q, user, &u)) != 0)
        return rc;
    for (size_t i = 0; i < u.n_recent; i++)
        if ((rc = erase_one(q, u.recent[i], out)) != 0)
            return rc;
    if ((rc = note(q, hsq_store_del(q->st, HSQ_DB_USERS, k, ul))) != 0)
        return rc;
    user_forget(q, user);
    /* The credit record goes too (its reservations were refunded above). */
    hsq_bytes cv;
    if ((rc = hsq_store_get(q->st, HSQ_DB_CREDITS, k, ul, &cv)) == 0) {
        credit_rec cr;
        if ((rc = load_credits(q, user, &cr)) != 0)
            return rc;
        if ((rc = note(q, hsq_store_del(q->st, HSQ_DB_CREDITS, k, ul))) != 0)
            return rc;
        char subject[33];
        audit_subject(q, user, subject);
        audit(q, "op=credit_erase subject=%s balance=%" PRId64 " reserved=%" PRId64, subject,
              cr.balance, cr.reserved);
    } else if (rc != HSQ_ENOTFOUND) {
        return note(q, rc);
    }
    return q->turn_err;
}

/* The user's data is gone: the ledger entry goes, the audit line is
 * written, and the receipt is complete. */
static int erase_user_done(hsq_queue *q, hsq_str user, hsq_rep_erase *out) {
    uint8_t k[USER_KEY_LEN];
    size_t ul = user_key(q, k, user);
    int rc = note(q, hsq_store_del(q->st, HSQ_DB_LEDGER, k, ul));
    if (rc != 0)
        return rc;
    user_prefix_forget(q, user);
    scrub_request(q);
    rewrite_request(q);
    char subject[33];
    audit_subject(q, user, subject);
    out->at_ms = q->now;
    audit(q, "op=erase_user subject=%s tasks=%" PRIu64 " active=%" PRIu64 " bytes=%" PRIu64,
          subject, out->tasks, out->active, out->bytes);
    q->durable = 1;
    return q->turn_err;
}

/* All of it in this turn: no reaper. */
static int erase_user_now(hsq_queue *q, hsq_str user, hsq_rep_erase *out) {
    memset(out, 0, sizeof out[0]);
    char prefix[HSQ_BLOB_PREFIX_LEN + 1];
    hsq_blob_user_prefix(q->blob, user.ptr, user.len, prefix);
    /* Files first: a crash after this leaves the ledger entry to redo it
     * (durable with the turn's flush, before its commit). */
    int rc = hsq_blob_delete_prefix_flags(q->blob, prefix, &out->bytes, HSQ_BLOB_DEFER);
    if (rc != 0)
        return rc;
    blob_bytes_add(q, -(int64_t)out->bytes);
    hsq_fault("erase.after_blobs");
    int more;
    if ((rc = erase_user_records(q, user, out, 0, &more)) != 0)
        return rc;
    return erase_user_done(q, user, out);
}

/* Answer everyone who asked to erase user: the receipt, or why not yet. */
static void erase_answer(hsq_queue *q, const char *user, int rc, const hsq_rep_erase *rec) {
    char subject[33];
    audit_subject(q, hsq_str_c(user), subject);
    size_t j = 0;
    for (size_t i = 0; i < q->n_erase_waits; i++) {
        struct erase_wait *w = &q->erase_waits[i];
        if (strcmp(w->user, user) != 0) {
            q->erase_waits[j++] = *w;
            continue;
        }
        if (rc != 0) {
            reply_error(q, HSQ_SOCK_CLIENT, w->peer, w->peer_len, HSQ_OP_ERASE, w->rid,
                        rc == HSQ_EDISKFULL ? HSQ_EDISKFULL : HSQ_EUNAVAIL,
                        "erasure could not finish (%s); it will complete automatically",
                        hsq_strerror(rc));
            continue;
        }
        hsq_wire_msg m;
        memset(&m, 0, sizeof m);
        m.op = HSQ_OP_ERASE;
        m.rid = w->rid;
        m.rep.erase = *rec;
        m.rep.erase.subject = hsq_str_c(subject);
        reply(q, HSQ_SOCK_CLIENT, w->peer, w->peer_len, &m);
    }
    q->n_erase_waits = j;
}

/* With a reaper an erasure goes through these states, one user at a time:
 * RECORDS deletes up to ERASE_TURN_TASKS of the user's tasks per turn (a
 * user with 100,000 would hold one turn for a second); DONE: all of them
 * are committed, and the next turn hands the user's blob prefix to the
 * reaper (never the turn that deleted records: if its commit failed, the
 * records would outlive the files and the ledger entry); FILES: the reaper
 * has it (the entry's kind EXP_ERASE; erase_reaped takes the result). */
enum { ERASE_NONE, ERASE_RECORDS, ERASE_DONE, ERASE_FILES };
#define ERASE_TURN_TASKS 1024

static void erase_handoff(hsq_queue *q) {
    hsq_reap *r = reap_push(q);
    r->entry[16] = EXP_ERASE;
    hsq_blob_user_prefix(q->blob, q->erase_user, q->erase_ulen, r->prefix);
    q->reap_inflight++;
    q->erase_state = ERASE_FILES;
}

/* The reaper's result for the erasure's files. */
static void erase_reaped(hsq_queue *q, const hsq_reap *r) {
    if (q->erase_state != ERASE_FILES)
        return; /* (cannot happen: one erasure at a time) */
    hsq_str user = {q->erase_user, q->erase_ulen};
    q->erase_state = ERASE_NONE;
    q->ledger_pending = 1; /* this user again after a failure, or the next one */
    if (r->rc != 0) {
        /* The records are gone already; the ledger entry hands the prefix
         * over again in a minute. */
        q->erase_retry_ms = q->now + 60000;
        erase_answer(q, q->erase_user, r->rc, &q->erase_rec);
        return;
    }
    hsq_fault("erase.after_blobs");
    q->erase_rec.bytes += r->bytes;
    blob_bytes_add(q, -(int64_t)r->bytes);
    int rc = erase_user_done(q, user, &q->erase_rec);
    erase_answer(q, q->erase_user, rc, &q->erase_rec);
}

/* 1 when user is being erased: no submit for them now (its files would land
 * under the prefix the reaper deletes). */
static int erasing(const hsq_queue *q, hsq_str user) {
    return q->erase_state != ERASE_NONE && user.len == q->erase_ulen &&
           memcmp(user.ptr, q->erase_user, user.len) == 0;
}

/* The first user in the ledger, into user[]; 0, or HSQ_ENOTFOUND when the
 * ledger is empty. */
static int ledger_first(hsq_queue *q, char user[HSQ_MAX_USER_LEN + 1], size_t *ulen) {
    hsq_cursor *cur;
    int rc = note(q, hsq_cursor_open(q->st, HSQ_DB_LEDGER, &cur));
    if (rc != 0)
        return rc;
    hsq_bytes k, v;
    rc = hsq_cursor_get(cur, HSQ_CUR_FIRST, &k, &v);
    *ulen = 0;
    if (rc == 0 && v.len > 8 && v.len - 8 <= HSQ_MAX_USER_LEN) {
        *ulen = v.len - 8;
        memcpy(user, v.ptr + 8, *ulen);
    }
    user[*ulen] = '\0';
    hsq_cursor_close(&cur);
    return rc;
}

/* One step of the erasure in progress (reaper). */
static void erase_step(hsq_queue *q) {
    if (q->erase_state == ERASE_DONE) {
        erase_handoff(q);
        return;
    }
    hsq_str user = {q->erase_user, q->erase_ulen};
    int more = 0;
    int rc = erase_user_records(q, user, &q->erase_rec, ERASE_TURN_TASKS, &more);
    if (rc != 0) {
        erase_answer(q, q->erase_user, rc, &q->erase_rec);
        return; /* the turn fails and goes back to where it began */
    }
    hsq_fault("erase.records");
    if (!more)
        q->erase_state = ERASE_DONE;
}

/* Erasures in the ledger: with a reaper one at a time in steps, else a few
 * users per turn, inline. */
static void process_ledger(hsq_queue *q) {
    if (!q->ledger_pending || q->ledger_added || q->erase_state == ERASE_FILES ||
        q->now < q->erase_retry_ms)
        return;
    if (q->reap_max > 0) {
        if (q->erase_state == ERASE_NONE) {
            int rc = ledger_first(q, q->erase_user, &q->erase_ulen);
            if (rc != 0) {
                if (rc == HSQ_ENOTFOUND)
                    q->ledger_pending = 0;
                return;
            }
            q->erase_state = ERASE_RECORDS;
            memset(&q->erase_rec, 0, sizeof q->erase_rec);
        }
        erase_step(q);
        return;
    }
    q->durable = 1;
    for (int budget = 4; budget > 0 && q->turn_err == 0; budget--) {
        char user[HSQ_MAX_USER_LEN + 1];
        size_t ulen;
        int rc = ledger_first(q, user, &ulen);
        if (rc != 0) {
            if (rc == HSQ_ENOTFOUND)
                q->ledger_pending = 0;
            return;
        }
        hsq_str u = {user, ulen};
        hsq_rep_erase rec;
        rc = erase_user_now(q, u, &rec);
        erase_answer(q, user, rc, &rec);
        if (rc != 0)
            return; /* a blob error: the ledger entry stays, retried next turn */
    }
}

/* ---- export-user ---- */

static void h_export(req_ctx *c) {
    hsq_queue *q = c->q;
    const hsq_req_export *r = &c->m->req.export_;
    uint64_t ids[2] = {0, 0};
    int n = hist_after(q, r->user, r->after, ids, 2);
    if (n < 0) {
        fail_store(c, n);
        return;
    }
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_EXPORT;
    m.rid = c->m->rid;
    hsq_rep_export *e = &m.rep.export_;
    hsq_task t;
    if (n == 0 || load_task(q, ids[0], &t) != 0) {
        reply(q, c->sock, c->peer, c->plen, &m); /* has_task = 0: done */
        return;
    }
    e->has_task = 1;
    e->next = n == 2 ? ids[0] : 0;
    hsq_task_to_wire(&t, &e->task);
    e->prompt = t.prompt;
    e->n_inputs = t.n_inputs;
    /* Frames: each input still stored, then each output still stored. */
    uint8_t *data[HSQ_MAX_INPUTS + HSQ_MAX_OUTPUTS];
    size_t lens[HSQ_MAX_INPUTS + HSQ_MAX_OUTPUTS];
    uint32_t nf = 0;
    for (uint32_t i = 0; i < t.n_inputs; i++) {
        hsq_wire_input *in = &e->inputs[i];
        in->kind = t.inputs[i].kind;
        in->name = t.inputs[i].name;
        in->size = t.inputs[i].size;
        in->frame = HSQ_NO_FRAME;
        if (t.inputs[i].where == HSQ_IN_INLINE) {
            uint8_t ik[9];
            hsq_be64(ik, t.id);
            ik[8] = (uint8_t)i;
            hsq_bytes v;
            if (hsq_store_get(q->st, HSQ_DB_INPUTS, ik, sizeof ik, &v) == 0) {
                data[nf] = hsq_xmalloc(v.len);
                memcpy(data[nf], v.ptr, v.len);
                lens[nf] = v.len;
                in->frame = nf++;
            }
        } else if (t.inputs[i].where == HSQ_IN_BLOB) {
            char bk[HSQ_BLOB_KEY_MAX + 1];
            snprintf(bk, sizeof bk, "%.*s", (int)t.inputs[i].key.len, t.inputs[i].key.ptr);
            if (hsq_blob_get(q->blob, bk, q->conf.max_frame_bytes, &data[nf], &lens[nf]) == 0)
                in->frame = nf++;
        }
    }
    for (uint32_t i = 0; i < t.n_outputs; i++) {
        char bk[HSQ_BLOB_KEY_MAX + 1];
        snprintf(bk, sizeof bk, "%.*s", (int)t.outputs[i].key.len, t.outputs[i].key.ptr);
        e->out_frames[i] = HSQ_NO_FRAME;
        if (hsq_blob_get(q->blob, bk, q->conf.max_frame_bytes * 4, &data[nf], &lens[nf]) == 0)
            e->out_frames[i] = nf++;
    }
    hsq_out *o = reply(q, c->sock, c->peer, c->plen, &m);
    o->frames = hsq_xcalloc(nf ? nf : 1, sizeof *o->frames);
    for (uint32_t i = 0; i < nf; i++) {
        o->frames[i].ptr = data[i];
        o->frames[i].len = lens[i];
    }
    o->nframes = nf;
}

/* ---- credits (operator) ---- */

static void h_credits(req_ctx *c) {
    hsq_queue *q = c->q;
    const hsq_req_credits *r = &c->m->req.credits;
    credit_rec cr;
    if (load_credits(q, r->user, &cr) != 0) {
        fail_store(c, q->turn_err);
        return;
    }
    if (r->grant != 0) {
        int64_t balance;
        if (__builtin_add_overflow(cr.balance, r->grant, &balance)) {
            FAIL(c, HSQ_EINVAL, "granting %" PRId64 " credits overflows the balance of %" PRId64,
                 r->grant, cr.balance);
            return;
        }
        /* Reserved credits belong to running tasks: they cannot be taken
         * back, or a success would drive the balance below zero. */
        if (balance < cr.reserved) {
            FAIL(c, HSQ_ECONFLICT,
                 "taking back %" PRId64 " credits would leave %" PRId64 ", below the %" PRId64
                 " reserved by unfinished tasks",
                 -r->grant, balance, cr.reserved);
            return;
        }
        cr.balance = balance;
        if (save_credits(q, r->user, &cr) != 0) {
            fail_store(c, q->turn_err);
            return;
        }
        char subject[33];
        audit_subject(q, r->user, subject);
        audit(q,
              "op=credit_grant subject=%s amount=%" PRId64 " balance=%" PRId64 " reserved=%" PRId64,
              subject, r->grant, cr.balance, cr.reserved);
    }
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_CREDITS;
    m.rid = c->m->rid;
    m.rep.credits.user = r->user;
    m.rep.credits.balance = cr.balance;
    m.rep.credits.reserved = cr.reserved;
    reply(q, c->sock, c->peer, c->plen, &m);
}

typedef void (*handler)(req_ctx *);

#define R(r) (1u << (r))
#define CLIENTS (R(HSQ_ROLE_WEB) | R(HSQ_ROLE_OPERATOR))
#define OPS R(HSQ_ROLE_OPERATOR)
#define WORKERS R(HSQ_ROLE_WORKER)

static const struct {
    handler fn;
    hsq_sock sock;
    unsigned roles; /* roles allowed when the peer has one */
} handlers[HSQ_OP_COUNT_] = {
    [HSQ_OP_SUBMIT] = {h_submit, HSQ_SOCK_CLIENT, CLIENTS},
    [HSQ_OP_STATUS] = {h_status, HSQ_SOCK_CLIENT, CLIENTS},
    [HSQ_OP_WAIT] = {h_wait, HSQ_SOCK_CLIENT, CLIENTS},
    [HSQ_OP_RESULT] = {h_result, HSQ_SOCK_CLIENT, CLIENTS},
    [HSQ_OP_CANCEL] = {h_cancel, HSQ_SOCK_CLIENT, CLIENTS},
    [HSQ_OP_LIST] = {h_list, HSQ_SOCK_CLIENT, CLIENTS},
    [HSQ_OP_STATS] = {h_stats, HSQ_SOCK_CLIENT, CLIENTS},
    [HSQ_OP_REQUEUE] = {h_requeue, HSQ_SOCK_CLIENT, OPS},
    [HSQ_OP_READY] = {h_ready, HSQ_SOCK_WORKER, WORKERS},
    [HSQ_OP_LEASE] = {h_lease, HSQ_SOCK_WORKER, WORKERS},
    [HSQ_OP_HEARTBEAT] = {h_heartbeat, HSQ_SOCK_WORKER, WORKERS},
    [HSQ_OP_PROGRESS] = {h_progress, HSQ_SOCK_WORKER, WORKERS},
    [HSQ_OP_DONE] = {h_done, HSQ_SOCK_WORKER, WORKERS},
    [HSQ_OP_FAIL] = {h_fail, HSQ_SOCK_WORKER, WORKERS},
    [HSQ_OP_PURGE] = {h_purge, HSQ_SOCK_CLIENT, OPS},
    [HSQ_OP_ERASE] = {h_erase, HSQ_SOCK_CLIENT, OPS},
    [HSQ_OP_EXPORT] = {h_export, HSQ_SOCK_CLIENT, OPS},
    [HSQ_OP_CREDITS] = {h_credits, HSQ_SOCK_CLIENT, OPS},
};

static const char *const role_names[] = {"any", "web", "worker", "operator"};

const char *hsq_role_name(hsq_role r) {
    return (unsigned)r < 4 ? role_names[r] : "?";
}

int hsq_role_from_name(const char *name) {
    for (int i = 0; i < 4; i++)
        if (strcmp(name, role_names[i]) == 0)
            return i;
    return -1;
}

void hsq_queue_handle(hsq_queue *q, hsq_sock sock, hsq_role role, const char *key,
                      const uint8_t *peer, size_t plen, const hsq_bytes *frames, size_t nframes) {
    assert(q->in_turn);
    q->turn_msgs++;
    if (nframes == 0) {
        hsq_queue_reject(q, sock, peer, plen, HSQ_EBADREQ, "message has no meta frame");
        return;
    }
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    int rc = hsq_wire_decode(frames[0].ptr, frames[0].len, nframes - 1, &m);
    req_ctx c = {q, sock, key, peer, plen, &m, frames + 1, nframes - 1, frames, NULL};
    if (rc != 0) {
        FAIL(&c, rc, "%s", m.errmsg[0] ? m.errmsg : hsq_strerror(rc));
    } else if (m.kind != HSQ_KIND_REQUEST || m.op >= HSQ_OP_COUNT_ || !handlers[m.op].fn) {
        FAIL(&c, HSQ_EBADREQ, "'%s' is not a request this socket accepts", hsq_op_name(m.op));
    } else if (handlers[m.op].sock != sock) {
        FAIL(&c, HSQ_EFORBIDDEN, "'%s' is not allowed on the %s socket", hsq_op_name(m.op),
             sock == HSQ_SOCK_CLIENT ? "client" : "worker");
    } else if (role != HSQ_ROLE_ANY && !(handlers[m.op].roles & R(role))) {
        FAIL(&c, HSQ_EFORBIDDEN, "a %s key may not '%s'", hsq_role_name(role), hsq_op_name(m.op));
    } else if (q->turn_err) {
        fail_store(&c, q->turn_err);
    } else {
        /* Anything a client is told (accepted, cancelled, requeued, erased,
         * purged) must be on disk before the reply leaves; what workers are
         * told can be redone after a power cut. */
        if (m.op == HSQ_OP_SUBMIT || m.op == HSQ_OP_CANCEL || m.op == HSQ_OP_REQUEUE ||
            m.op == HSQ_OP_ERASE || m.op == HSQ_OP_PURGE || m.op == HSQ_OP_CREDITS)
            q->durable = 1;
        handlers[m.op].fn(&c);
    }
    hsq_wire_msg_free(&m);
}

void hsq_queue_reject(hsq_queue *q, hsq_sock sock, const uint8_t *peer, size_t plen, int code,
                      const char *why) {
    reply_error(q, sock, peer, plen, HSQ_OP_NONE, 0, code, "%s", why);
}

/* ---- timers and dispatch ---- */

/* The first entry of a (time, id) index when it is due: 1 with *at and *id
 * set, else 0 (empty, not yet due, or a store error noted for the turn). */
static int first_due(hsq_queue *q, hsq_db db, int64_t *at, uint64_t *id) {
    hsq_cursor *cur;
    if (note(q, hsq_cursor_open(q->st, db, &cur)) != 0)
        return 0;
    hsq_bytes k;
    int rc = hsq_cursor_get(cur, HSQ_CUR_FIRST, &k, NULL);
    int ok = rc == 0 && k.len == 16;
    if (ok) {
        *at = (int64_t)hsq_rd_be64(k.ptr);
        *id = hsq_rd_be64(k.ptr + 8);
    }
    hsq_cursor_close(&cur);
    return ok && *at <= q->now;
}

static void expire_leases(hsq_queue *q) {
    int budget = MAX_TIMER_WORK;
    while (budget-- > 0 && q->turn_err == 0) {
        int64_t at;
        uint64_t id;
        if (!first_due(q, HSQ_DB_LEASES, &at, &id))
            return;
        uint64_t deadline = (uint64_t)at;
        hsq_task t;
        int rc = load_task(q, id, &t);
        if (rc != 0 || t.state != HSQ_STATE_LEASED || (uint64_t)t.deadline_ms != deadline) {
            /* An index entry without its lease (cannot happen; heal it). */
            uint8_t kk[16];
            time_key(kk, (int64_t)deadline, id);
            note(q, hsq_store_del(q->st, HSQ_DB_LEASES, kk, sizeof kk));
            continue;
        }
        char why[128];
        snprintf(why, sizeof why, "worker stopped renewing its lease (attempt %u of %" PRIu64 ")",
                 t.attempts, q->conf.max_attempts);
        /* retry_or_fail copies `why` into the record before returning. */
        retry_or_fail(q, &t, HSQ_ELOST, hsq_str_c(why), 1);
    }
}

static void promote_delayed(hsq_queue *q) {
    int budget = MAX_TIMER_WORK;
    while (budget-- > 0 && q->turn_err == 0) {
        int64_t at;
        uint64_t id;
        if (!first_due(q, HSQ_DB_DELAYED, &at, &id))
            return;
        uint8_t kk[16];
        time_key(kk, at, id);
        if (note(q, hsq_store_del(q->st, HSQ_DB_DELAYED, kk, sizeof kk)) != 0)
            return;
        hsq_task t;
        if (load_task(q, id, &t) != 0 || t.state != HSQ_STATE_QUEUED)
            continue;
        t.not_before_ms = 0;
        if (q->counts.delayed > 0)
            q->counts.delayed--;
        /* The task keeps its original round: a retry goes to the front of
         * its user's line, it has waited its turn already. */
        if (pending_put(q, &t) == 0 && save_task(q, &t) == 0)
            q->dispatch_needed = 1;
    }
}

/* Upper bound of one job's encoded size in a lease reply. */
#define LEASE_META_BUDGET (HSQ_MAX_META_BYTES - 4096)
static size_t job_bytes(const hsq_task *t) {
    size_t n = 256 + t->prompt.len + t->settings.len + 32u * t->n_specs;
    for (uint32_t i = 0; i < t->n_inputs; i++)
        n += 64 + t->inputs[i].kind.len + t->inputs[i].name.len + t->inputs[i].key.len;
    return n;
}

/* Lease up to p->max tasks to a parked worker. Returns the number leased. */
static uint32_t dispatch_one(hsq_queue *q, parked_lease *p) {
    hsq_wire_job *jobs = NULL;
    hsq_wbuf *bufs = NULL;
    uint32_t n = 0;
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_LEASE;
    m.rid = p->rid;
    hsq_out *o = NULL;
    size_t out_index = 0;
    char prefixes[HSQ_MAX_BATCH][HSQ_BLOB_KEY_MAX + 1];
    uint32_t max = p->max < HSQ_MAX_BATCH ? p->max : HSQ_MAX_BATCH;
    worker_rec *w = worker_find(q, p->peer, p->peer_len);
    size_t bytes = 64;

    while (n < max && q->turn_err == 0) {
        hsq_cursor *cur;
        if (note(q, hsq_cursor_open(q->st, HSQ_DB_PENDING, &cur)) != 0)
            break;
        hsq_bytes k;
        int rc = hsq_cursor_get(cur, HSQ_CUR_FIRST, &k, NULL);
        uint8_t key[17];
        if (rc == 0 && k.len == 17)
            memcpy(key, k.ptr, 17);
        if (rc == 0)
            rc = note(q, hsq_cursor_del(cur));
        hsq_cursor_close(&cur);
        if (rc != 0)
            break;
        uint64_t id = hsq_rd_be64(key + 9);
        hsq_task t;
        if (load_task(q, id, &t) != 0 || t.state != HSQ_STATE_QUEUED)
            continue; /* stale index entry; already removed */
        /* Keep the reply under the meta frame limit: a job with a long
         * prompt and many inputs is several KiB. An unfit task goes back. */
        size_t est = job_bytes(&t);
        if (n > 0 && bytes + est > LEASE_META_BUDGET) {
            note(q, hsq_store_put(q->st, HSQ_DB_PENDING, key, sizeof key, "", 0));
            break;
        }
        bytes += est;
        if (!jobs) {
            jobs = hsq_xcalloc(max, sizeof *jobs);
            bufs = hsq_xcalloc(max, sizeof *bufs);
            o = out_push(q, HSQ_SOCK_WORKER, p->peer, p->peer_len);
            out_index = q->n_out - 1;
        }
        uint64_t round = hsq_rd_be64(key + 1);
        if (round > q->rounds[t.prio]) {
            q->rounds[t.prio] = round;
            q->meta_dirty = 1;
        }
        set_state(q, &t, HSQ_STATE_LEASED);
        t.attempts++;
        t.token = q->ids.next_token++;
        t.deadline_ms = q->now + (int64_t)q->conf.lease_ms;
        t.worker.ptr = (const char *)p->peer;
        t.worker.len = p->peer_len;
        t.progress = 0;
        uint8_t lk[16];
        time_key(lk, t.deadline_ms, t.id);
        if (note(q, hsq_store_put(q->st, HSQ_DB_LEASES, lk, sizeof lk, "", 0)) != 0)
            break;
        hsq_wbuf_init(&bufs[n]);
        if (save_task_into(q, &t, &bufs[n]) != 0)
            break;
        if (w)
            w->leases++;

        hsq_wire_job *j = &jobs[n];
        j->task = t.id;
        j->token = t.token;
        j->attempt = t.attempts;
        j->prio = t.prio;
        j->deadline_ms = t.deadline_ms;
        out_prefix(q, t.user, t.id, prefixes[n], sizeof prefixes[n]);
        j->out_prefix = hsq_str_c(prefixes[n]);
        j->prompt = t.prompt;
        j->n_inputs = t.n_inputs;
        for (uint32_t i = 0; i < t.n_inputs; i++) {
            hsq_wire_input *in = &j->inputs[i];
            in->kind = t.inputs[i].kind;
            in->name = t.inputs[i].name;
            in->size = t.inputs[i].size;
            in->frame = HSQ_NO_FRAME;
            if (t.inputs[i].where == HSQ_IN_BLOB) {
                in->key = t.inputs[i].key;
                continue;
            }
            uint8_t ik[9];
            hsq_be64(ik, t.id);
            ik[8] = (uint8_t)i;
            hsq_bytes v;
            if (note(q, hsq_store_get(q->st, HSQ_DB_INPUTS, ik, sizeof ik, &v)) != 0)
                break;
            in->frame = q->out[out_index].nframes;
            out_frame(&q->out[out_index], v.ptr, v.len);
        }
        j->n_outputs = t.n_specs;
        memcpy(j->outputs, t.specs, sizeof(hsq_wire_outspec) * t.n_specs);
        j->settings = t.settings;
        n++;
        changed(q, &t);
        o = &q->out[out_index]; /* changed() may have grown the outbox */
    }
    if (n > 0) {
        m.rep.lease.n = n;
        m.rep.lease.jobs = jobs;
        o = &q->out[out_index];
        o->op = HSQ_OP_LEASE;
        o->rid = p->rid;
        o->is_reply = 1;
        m.v = HSQ_WIRE_VERSION;
        m.kind = HSQ_KIND_REPLY;
        if (hsq_wire_encode(&m, &o->meta) != 0)
            note(q, HSQ_EINTERNAL);
    }
    for (uint32_t i = 0; i < n; i++)
        hsq_wbuf_free(&bufs[i]);
    free(bufs);
    free(jobs);
    return n;
}

static void reply_lease_empty(hsq_queue *q, const parked_lease *p) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof m);
    m.op = HSQ_OP_LEASE;
    m.rid = p->rid;
    reply(q, HSQ_SOCK_WORKER, p->peer, p->peer_len, &m);
}

static void dispatch(hsq_queue *q) {
    size_t i = 0;
    while (i < q->n_parked && !q->draining && q->turn_err == 0) {
        uint32_t n = dispatch_one(q, &q->parked[i]);
        if (n == 0)
            break; /* nothing left to lease */
        memmove(&q->parked[i], &q->parked[i + 1], (q->n_parked - i - 1) * sizeof *q->parked);
        q->n_parked--;
    }
}

static void expire_parked_and_waits(hsq_queue *q) {
    size_t j = 0;
    for (size_t i = 0; i < q->n_parked; i++) {
        parked_lease *p = &q->parked[i];
        if (p->deadline_ms <= q->now || q->draining)
            reply_lease_empty(q, p);
        else
            q->parked[j++] = *p;
    }
    q->n_parked = j;
    while (q->n_waits > 0 && q->wheap[0]->deadline_ms <= q->now) {
        waiter *w = q->wheap[0];
        hsq_task t;
        int rc = load_task(q, w->task, &t);
        if (rc == 0)
            reply_task(q, HSQ_SOCK_CLIENT, w->peer, w->peer_len, HSQ_OP_WAIT, w->rid, &t, 1);
        else
            reply_error(q, HSQ_SOCK_CLIENT, w->peer, w->peer_len, HSQ_OP_WAIT, w->rid,
                        HSQ_ENOTFOUND, "task %" PRIu64 " not found", w->task);
        waiter_drop(q, w);
    }
}

/* ---- retention sweeper ----
 *
 * Crash-safe order: files are deleted first (each unlink fsyncs its
 * directory), then the records that point at them change in the turn's
 * transaction. A crash in between leaves the index entry in place, so the
 * next pass deletes again (a missing file is success) and commits. Nothing
 * ever points at a file that is gone without its index entry still due. */

static int delete_blob_counted(hsq_queue *q, hsq_str key, uint64_t size, uint64_t *bytes) {
    char k[HSQ_BLOB_KEY_MAX + 1];
    if (key.len == 0 || key.len > HSQ_BLOB_KEY_MAX)
        return 0;
    if (q->reaped_io) {
        /* The reaper deleted it: only the books change. */
        *bytes += size;
        blob_bytes_add(q, -(int64_t)size);
        return 0;
    }
    memcpy(k, key.ptr, key.len);
    k[key.len] = '\0';
    if (hsq_blob_size(q->blob, k, &size) == 0) {
        *bytes += size;
        blob_bytes_add(q, -(int64_t)size);
    }
    q->blob_ops++;
    /* The directory syncs wait for the turn's flush, before its commit. */
    return hsq_blob_delete_flags(q->blob, k, HSQ_BLOB_DEFER);
}

/* Delete the inputs of one class (references or portraits). */
static int delete_inputs(hsq_queue *q, hsq_task *t, int references, hsq_sweep_counts *sc) {
    for (uint32_t i = 0; i < t->n_inputs; i++) {
        hsq_task_input *in = &t->inputs[i];
        if (in->where == HSQ_IN_GONE || is_reference(in) != references)
            continue;
        if (in->where == HSQ_IN_BLOB) {
            int rc = delete_blob_counted(q, in->key, in->size, &sc->bytes);
            if (rc != 0)
                return rc;
        } else {
            uint8_t k[9];
            hsq_be64(k, t->id);
            k[8] = (uint8_t)i;
            int rc = note(q, hsq_store_del(q->st, HSQ_DB_INPUTS, k, sizeof k));
            if (rc != 0)
                return rc;
            sc->bytes += in->size;
        }
        in->where = HSQ_IN_GONE;
        in->key.len = 0;
        sc->inputs++;
    }
    return 0;
}

/* Outputs and everything personal go; a tombstone (id, user, state,
 * dates) stays for retention_tombstone so history shows what happened. */
static int make_tombstone(hsq_queue *q, hsq_task *t, hsq_sweep_counts *sc) {
    int rc = delete_inputs(q, t, 0, sc);
    if (rc == 0)
        rc = delete_inputs(q, t, 1, sc);
    for (uint32_t i = 0; rc == 0 && i < t->n_outputs; i++)
        rc = delete_blob_counted(q, t->outputs[i].key, t->outputs[i].size, &sc->bytes);
    if (rc == 0) {
        /* Stray files (outputs of a worker whose lease was lost) too. */
        char prefix[HSQ_BLOB_KEY_MAX + 1];
        out_prefix(q, t->user, t->id, prefix, sizeof prefix);
        uint64_t b = 0;
        if (q->reaped_io) {
            b = q->reaped_bytes;
        } else {
            q->blob_ops++;
            rc = hsq_blob_delete_prefix_flags(q->blob, prefix, &b, HSQ_BLOB_DEFER);
        }
        sc->bytes += b;
        blob_bytes_add(q, -(int64_t)b);
    }
    if (rc != 0)
        return rc;
    if (t->key.len) {
        uint8_t ik[IDEM_KEY_LEN];
        size_t ikl = idem_key(q, ik, t->user, t->key);
        if ((rc = note(q, hsq_store_del(q->st, HSQ_DB_IDEM, ik, ikl))) != 0)
            return rc;
    }
    sc->outputs += t->n_outputs;
    t->n_outputs = 0;
    t->key.len = 0;
    t->prompt.len = 0;
    t->stage.len = 0;
    t->err_msg.len = 0; /* may name the user's files */
    t->settings.len = 0;
    t->info.len = 0;
    for (uint32_t i = 0; i < t->n_inputs; i++)
        t->inputs[i].name.len = 0;
    set_state(q, t, HSQ_STATE_EXPIRED);
    t->expires_ms = q->now + (int64_t)q->conf.retention_tombstone_ms;
    rc = expiry_add(q, t->expires_ms, t->id, EXP_TOMB);
    if (rc == 0)
        rc = save_task(q, t);
    if (rc == 0) {
        sc->tasks++;
        changed(q, t);
    }
    return rc;
}

static int destroy_task(hsq_queue *q, hsq_task *t, hsq_sweep_counts *sc) {
    uint8_t k[8];
    task_key(k, t->id);
    int rc = hist_remove(q, t->user, t->id);
    if (rc == 0)
        rc = note(q, hsq_store_del(q->st, HSQ_DB_TASKS, k, sizeof k));
    if (rc == 0) {
        if (q->counts.expired > 0)
            q->counts.expired--;
        q->meta_dirty = 1;
        sc->tombstones++;
    }
    return rc;
}

/* The slot of id in a table of cap slots: where it is, or the empty one
 * where it goes (linear probing from a Fibonacci hash). */
static uint64_t *idset_slot(uint64_t *slot, size_t cap, uint64_t id) {
    size_t i = (size_t)((id * 0x9e3779b97f4a7c15u) >> 32);
    for (;; i++) {
        uint64_t *e = &slot[i & (cap - 1)];
        if (*e == id || *e == 0)
            return e;
    }
}

/* Add id; 1 when it was not there yet. The table stays at most half full. */
static int idset_add(idset *set, uint64_t id) {
    if (2 * (set->n + 1) > set->cap) {
        size_t cap = set->cap ? 2 * set->cap : 64;
        uint64_t *slot = hsq_xcalloc(cap, sizeof *slot);
        for (size_t i = 0; i < set->cap; i++)
            if (set->slot[i])
                *idset_slot(slot, cap, set->slot[i]) = set->slot[i];
        free(set->slot);
        set->slot = slot;
        set->cap = cap;
    }
    uint64_t *e = idset_slot(set->slot, set->cap, id);
    if (*e == id)
        return 0;
    *e = id;
    set->n++;
    return 1;
}

static void idset_clear(idset *set) {
    if (set->n)
        memset(set->slot, 0, set->cap * sizeof *set->slot);
    set->n = 0;
}

/* Whether the index entry (at, kind) still matches its task's dates: when
 * it does not, the task moved on and the entry is stale. */
static int entry_current(const hsq_task *t, int64_t at, uint8_t kind) {
    switch (kind) {
    case EXP_INPUTS:
        return at == t->inputs_expire_ms;
    case EXP_REFS:
        return at == t->refs_expire_ms;
    case EXP_TASK:
        return at == t->expires_ms && t->state != HSQ_STATE_EXPIRED;
    case EXP_TOMB:
        return at == t->expires_ms && t->state == HSQ_STATE_EXPIRED;
    default:
        return 0;
    }
}

/* What handling an entry of `kind` due for t would delete, counted for a
 * dry run. */
static void dry_count(const hsq_task *t, uint8_t kind, hsq_sweep_counts *sc) {
    switch (kind) {
    case EXP_INPUTS:
    case EXP_REFS:
        if (!hsq_state_is_terminal(t->state)) {
            sc->cancelled++;
            return;
        }
        for (uint32_t i = 0; i < t->n_inputs; i++)
            if (t->inputs[i].where != HSQ_IN_GONE &&
                is_reference(&t->inputs[i]) == (kind == EXP_REFS)) {
                sc->inputs++;
                sc->bytes += t->inputs[i].size;
            }
        return;
    case EXP_TASK:
        sc->tasks++;
        sc->outputs += t->n_outputs;
        for (uint32_t i = 0; i < t->n_outputs; i++)
            sc->bytes += t->outputs[i].size;
        return;
    case EXP_TOMB:
        sc->tombstones++;
        return;
    default:
        return;
    }
}

/* A dry run meets an entry of t: the task's due dates that have no entry
 * of their own are covered by one of its entries (stamp_retention), so
 * they are counted at the first one the run meets (a requeued task can
 * hold several). */
static int dry_uncovered(hsq_queue *q, const hsq_task *t, hsq_sweep_counts *sc) {
    static const uint8_t kinds[] = {EXP_INPUTS, EXP_REFS, EXP_TASK, EXP_TOMB};
    if (!idset_add(&q->dry_seen, t->id))
        return 0;
    unsigned m = pending_dates(t);
    for (size_t i = 0; i < sizeof kinds; i++) {
        int64_t at = date_of(t, kinds[i]);
        if (!(m & (1u << kinds[i])) || at > q->now)
            continue;
        int has = expiry_has(q, at, t->id, kinds[i]);
        if (has < 0)
            return has;
        if (!has)
            dry_count(t, kinds[i], sc);
    }
    return 0;
}

/* Handle one due index entry. An entry whose date no longer matches the
 * task's is stale (the task moved on); it may have covered dates that have
 * no entry yet, so the task's dates with work left are indexed then, as
 * after every entry handled of a task that stays. */
static int sweep_entry(hsq_queue *q, uint64_t id, int64_t at, uint8_t kind, int dry,
                       hsq_sweep_counts *sc) {
    hsq_task t;
    int rc = load_task(q, id, &t);
    if (rc == HSQ_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    int current = entry_current(&t, at, kind);
    if (dry) {
        if (current)
            dry_count(&t, kind, sc);
        return dry_uncovered(q, &t, sc);
    }
    if (!current)
        return reindex(q, &t);
    switch (kind) {
    case EXP_INPUTS:
    case EXP_REFS:
        if (!hsq_state_is_terminal(t.state)) {
            /* Outlived retention_pending without running: cancelled, and
             * its inputs go now (their time is up), not a day later. */
            sc->cancelled++;
            rc = cancel_task(q, &t, HSQ_ECANCELLED, HSQ_STR_LIT("expired before it could run"));
            if (rc == 0)
                rc = delete_inputs(q, &t, 0, sc);
            if (rc == 0)
                rc = delete_inputs(q, &t, 1, sc);
            if (rc == 0) {
                t.inputs_expire_ms = q->now;
                t.refs_expire_ms = q->now;
                rc = save_task(q, &t);
            }
            return rc;
        }
        rc = delete_inputs(q, &t, kind == EXP_REFS, sc);
        if (rc == 0)
            rc = save_task(q, &t);
        return rc == 0 ? reindex(q, &t) : rc;
    case EXP_TASK:
        return make_tombstone(q, &t, sc);
    case EXP_TOMB:
        return destroy_task(q, &t, sc);
    default:
        return 0;
    }
}

/* A blob store error (not LMDB) leaves the entry for a pass a minute
 * later: the index entry (already deleted) comes back with the task's date. */
static void sweep_retry_later(hsq_queue *q, uint64_t id, uint8_t kind) {
    expiry_add(q, q->now + 60000, id, kind);
    if (kind == EXP_TOMB)
        return;
    hsq_task t;
    if (load_task(q, id, &t) != 0)
        return;
    if (kind == EXP_INPUTS)
        t.inputs_expire_ms = q->now + 60000;
    else if (kind == EXP_REFS)
        t.refs_expire_ms = q->now + 60000;
    else
        t.expires_ms = q->now + 60000;
    save_task(q, &t);
}

/* Append a NUL-terminated copy of key to the reap's key block. */
static void reap_key(hsq_reap *r, size_t *len, hsq_str key) {
    r->keys = hsq_xrealloc(r->keys, *len + key.len + 1);
    memcpy(r->keys + *len, key.ptr, key.len);
    r->keys[*len + key.len] = '\0';
    *len += key.len + 1;
    r->n_keys++;
}

/* Hand the due entry `key` to the reaper when its work deletes files of a
 * finished task. Returns 1 (handed off: leave the entry), 0 (no files, or
 * not due as indexed: handle it inline) or -1 (it deletes files but the
 * reaper is full: stop this sweep). */
static int try_handoff(hsq_queue *q, const uint8_t key[17]) {
    int64_t at = (int64_t)hsq_rd_be64(key);
    uint64_t id = hsq_rd_be64(key + 8);
    uint8_t kind = key[16];
    if (kind != EXP_INPUTS && kind != EXP_REFS && kind != EXP_TASK)
        return 0;
    hsq_task t;
    if (load_task(q, id, &t) != 0 || !hsq_state_is_terminal(t.state) ||
        !entry_current(&t, at, kind))
        return 0; /* gone or stale, or a cancel: inline */
    int whole = kind == EXP_TASK;
    int files = whole; /* a tombstone always looks for stray outputs */
    for (uint32_t i = 0; !files && i < t.n_inputs; i++)
        files = t.inputs[i].where == HSQ_IN_BLOB && is_reference(&t.inputs[i]) == (kind == EXP_REFS);
    if (!files)
        return 0;
    if (q->reap_inflight >= q->reap_max)
        return -1;
    hsq_reap *r = reap_push(q);
    memcpy(r->entry, key, 17);
    size_t len = 0;
    for (uint32_t i = 0; i < t.n_inputs; i++) {
        const hsq_task_input *in = &t.inputs[i];
        if (in->where == HSQ_IN_BLOB && in->key.len > 0 && in->key.len <= HSQ_BLOB_KEY_MAX &&
            (whole || is_reference(in) == (kind == EXP_REFS)))
            reap_key(r, &len, in->key);
    }
    if (whole) {
        for (uint32_t i = 0; i < t.n_outputs; i++)
            if (t.outputs[i].key.len > 0 && t.outputs[i].key.len <= HSQ_BLOB_KEY_MAX)
                reap_key(r, &len, t.outputs[i].key);
        out_prefix(q, t.user, t.id, r->prefix, sizeof r->prefix);
    }
    q->reap_inflight++;
    memcpy(q->reap_from, key, 17);
    for (int i = 16; i >= 0 && ++q->reap_from[i] == 0; i--)
        ;
    return 1;
}

/* Work through due entries, at most `budget` of them. With `reap` (the
 * continuous sweeper, reaping on) entries that delete files go to the
 * reaper. A blob store error (not LMDB) leaves the entry for the next pass a
 * minute later. Returns the budget used. */
static uint32_t sweep(hsq_queue *q, uint32_t budget, int dry, int reap, hsq_sweep_counts *sc) {
    uint32_t done = 0;
    uint8_t from[17] = {0};
    q->sweep_exhausted = 0;
    if (dry)
        idset_clear(&q->dry_seen);
    if (!dry && q->reap_inflight)
        memcpy(from, q->reap_from, 17); /* what lies before is in flight */
    reap = reap && !dry && q->reap_max > 0;
    while (done < budget && q->turn_err == 0) {
        hsq_cursor *cur;
        if (note(q, hsq_cursor_open(q->st, HSQ_DB_EXPIRY, &cur)) != 0)
            break;
        hsq_bytes k = {from, sizeof from};
        int rc = hsq_cursor_get(cur, HSQ_CUR_SET_RANGE, &k, NULL);
        uint8_t key[17];
        int ok = rc == 0 && k.len == 17;
        if (ok)
            memcpy(key, k.ptr, 17);
        hsq_cursor_close(&cur);
        if (!ok || (int64_t)hsq_rd_be64(key) > q->now) {
            q->sweep_exhausted = 1;
            break;
        }
        int64_t at = (int64_t)hsq_rd_be64(key);
        uint64_t id = hsq_rd_be64(key + 8);
        if (reap) {
            int h = try_handoff(q, key);
            if (h < 0)
                break;
            if (h > 0) {
                memcpy(from, q->reap_from, 17);
                done++;
                continue;
            }
        }
        if (dry) {
            /* Leave the index alone: step past this entry. */
            memcpy(from, key, 17);
            for (int i = 16; i >= 0 && ++from[i] == 0; i--)
                ;
        } else if (note(q, hsq_store_del(q->st, HSQ_DB_EXPIRY, key, 17)) != 0) {
            break;
        }
        uint64_t ops = q->blob_ops;
        rc = sweep_entry(q, id, at, key[16], dry, sc);
        if (!dry)
            hsq_fault("sweep.entry");
        if (rc != 0 && q->turn_err == 0) {
            sc->errors++;
            sweep_retry_later(q, id, key[16]);
        }
        /* An entry that deleted files (a directory fsync each) costs the
         * turn far more than one that only rewrote records: count it so, so
         * a turn's sweep stays short whatever kind of entries are due. */
        done += 1 + SWEEP_BLOB_COST * (uint32_t)(q->blob_ops - ops);
    }
    if (!dry)
        counts_add(&q->swept, sc);
    return done;
}

void hsq_queue_set_reaping(hsq_queue *q, size_t max) {
    q->reap_max = max;
}

hsq_reap *hsq_queue_take_reaps(hsq_queue *q, size_t *n) {
    hsq_reap *r = q->reaps;
    *n = q->n_reaps;
    q->reaps = NULL;
    q->n_reaps = q->cap_reaps = 0;
    return r;
}

size_t hsq_queue_reaps_inflight(const hsq_queue *q) {
    return q->reap_inflight;
}

void hsq_reaps_free(hsq_reap *r, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(r[i].keys);
    free(r);
}

void hsq_queue_reaped(hsq_queue *q, hsq_reap *r, size_t n) {
    if (n == 0) {
        free(r);
        return;
    }
    /* Applied by the sweeps of the next turns, within their budgets. */
    for (size_t i = 0; i < q->results_head; i++)
        free(q->results[i].keys); /* applied already */
    size_t left = q->n_results - q->results_head;
    hsq_reap *all = hsq_xmalloc((left + n) * sizeof *all);
    if (left)
        memcpy(all, q->results + q->results_head, left * sizeof *all);
    memcpy(all + left, r, n * sizeof *r);
    free(q->results);
    free(r);
    q->results = all;
    q->n_results = left + n;
    q->results_head = 0;
}

/* Purge requests wait while their pass has work left (reaping: the turns'
 * sweeps hand its entries to the reaper until none is due or the first
 * request's limit is used), while the reaper holds entries, and while the
 * janitor has recovery ranges. Then all of them get the counts of what went
 * meanwhile (the first request; later ones joined it) or, without a
 * reaper, their pass on the loop. */
static void answer_purge_waits(hsq_queue *q) {
    if (q->reap_inflight > 0 || q->recovering)
        return;
    int reaping = q->reap_max > 0;
    if (q->n_purge_waits > 0 && reaping && !q->purge_exhausted &&
        q->purge_used < q->purge_waits[0].limit)
        return;
    for (size_t i = 0; i < q->n_purge_waits; i++) {
        purge_wait *w = &q->purge_waits[i];
        hsq_sweep_counts none;
        memset(&none, 0, sizeof none);
        if (reaping)
            purge_reply(q, w->sock, w->peer, w->peer_len, w->rid, 0, !q->purge_exhausted,
                        i == 0 ? &q->reaped_sum : &none);
        else
            purge_pass(q, w->sock, w->peer, w->peer_len, w->rid, w->limit, 0,
                       i == 0 ? &q->reaped_sum : NULL);
    }
    q->n_purge_waits = 0;
    memset(&q->reaped_sum, 0, sizeof q->reaped_sum);
}

/* Apply up to `budget` results from the reaper: the records of deleted files
 * change now. Returns how many were applied. */
static uint32_t apply_results(hsq_queue *q, uint32_t budget) {
    hsq_sweep_counts sc;
    memset(&sc, 0, sizeof sc);
    uint32_t done = 0;
    while (done < budget && q->results_head < q->n_results && q->turn_err == 0) {
        hsq_reap *r = &q->results[q->results_head++];
        done++;
        if (r->entry[16] == EXP_ERASE) {
            erase_reaped(q, r);
            continue;
        }
        const uint8_t *key = r->entry;
        uint64_t id = hsq_rd_be64(key + 8);
        if (note(q, hsq_store_del(q->st, HSQ_DB_EXPIRY, key, 17)) != 0)
            break;
        if (r->rc != 0) {
            sc.errors++;
            sweep_retry_later(q, id, key[16]);
            continue;
        }
        /* Re-read and re-checked: a stale entry (the task moved on, or was
         * erased meanwhile) changes nothing. */
        q->reaped_io = 1;
        q->reaped_bytes = r->bytes;
        int rc = sweep_entry(q, id, (int64_t)hsq_rd_be64(key), key[16], 0, &sc);
        q->reaped_io = 0;
        hsq_fault("sweep.entry");
        if (rc != 0 && q->turn_err == 0) {
            sc.errors++;
            sweep_retry_later(q, id, key[16]);
        }
    }
    counts_add(&q->swept, &sc);
    /* Counted as applied even when the turn fails: its entries are still
     * in the index then, and the next sweep hands them off again. */
    q->reap_inflight = q->reap_inflight > done ? q->reap_inflight - done : 0;
    if (q->results_head == q->n_results) {
        hsq_reaps_free(q->results, q->n_results);
        q->results = NULL;
        q->n_results = q->results_head = 0;
    }
    counts_add(&q->reaped_sum, &sc);
    if (q->reap_inflight == 0) {
        memset(q->reap_from, 0, sizeof q->reap_from);
        answer_purge_waits(q);
    }
    return done;
}

/* Earliest lease deadline or backoff end, read inside the turn. */
static int64_t first_store_deadline(hsq_queue *q) {
    int64_t t = INT64_MAX;
    hsq_db dbs[3] = {HSQ_DB_LEASES, HSQ_DB_DELAYED, HSQ_DB_EXPIRY};
    for (int i = 0; i < 3; i++) {
        /* Entries with the reaper are not due for the loop: the reaper's
         * results wake it. While it is full, neither is the rest. */
        int skip = dbs[i] == HSQ_DB_EXPIRY && q->reap_inflight > 0;
        if (skip && q->reap_inflight >= q->reap_max)
            continue;
        hsq_cursor *cur;
        if (hsq_cursor_open(q->st, dbs[i], &cur) != 0)
            continue;
        hsq_bytes k = {q->reap_from, sizeof q->reap_from};
        if (hsq_cursor_get(cur, skip ? HSQ_CUR_SET_RANGE : HSQ_CUR_FIRST, &k, NULL) == 0 &&
            k.len >= 16) {
            int64_t at = (int64_t)hsq_rd_be64(k.ptr);
            if (at < t)
                t = at;
        }
        hsq_cursor_close(&cur);
    }
    return t;
}

/* ---- turn ---- */

/* Background work (the sweeper, the rewrite) paced by the disk, in journal
 * mode: every page it changes is written back by the next checkpoint, whose
 * writes the journal's appends (the acknowledgements) queue behind. A
 * checkpoint that took longer than CK_SLOW_US halves the share of the
 * batch the next turns get (down to 1/64); one that did not gives back
 * 4/64 (about 1.6 s from the least to all of it at the default
 * checkpoint_interval). Without a journal the share stays whole. */
#define CK_SLOW_US 20000u

static uint32_t disk_paced(hsq_queue *q, uint32_t budget) {
    /* On a full disk, the sweeper's pages must fit the room data.mdb kept
     * (hsq_store_room): a few entries a turn, each turn checkpointed so
     * the pages it frees are reused. */
    if (hsq_store_room_low(q->st) && budget > ROOM_TURN)
        return ROOM_TURN;
    hsq_store_jstats js;
    hsq_store_journal_stats(q->st, &js);
    if (!js.on)
        return budget;
    if (js.checkpoints != q->ck_seen) {
        q->ck_seen = js.checkpoints;
        if (js.checkpoint_us > CK_SLOW_US)
            q->disk_share = q->disk_share > 1 ? q->disk_share / 2 : 1;
        else
            q->disk_share = q->disk_share + 4 < 64 ? q->disk_share + 4 : 64;
    }
    uint32_t b = (uint32_t)((uint64_t)budget * q->disk_share / 64);
    return b ? b : (budget ? 1 : 0);
}

int hsq_queue_begin_turn(hsq_queue *q, int64_t now_ms) {
    assert(!q->in_turn);
    /* Wall time may step backwards (NTP): never let it run back inside the
     * queue, or leases and backoffs would stretch. */
    q->now = now_ms > q->now ? now_ms : q->now;
    q->turn_err = 0;
    q->turn_msgs = 0;
    memset(&q->cost, 0, sizeof q->cost);
    q->ledger_added = 0;
    q->durable = 0;
    q->turn_first_id = q->ids.next_id;
    q->erase_saved_state = q->erase_state;
    q->erase_saved_rec = q->erase_rec;
    if (q->rewrite_reopen) {
        /* After the erasure's commit, before anything else is written. */
        int rc = hsq_store_reopen(q->st);
        if (rc != 0)
            return rc;
        q->rewrite_reopen = 0;
    }
    int rc = hsq_store_begin(q->st, 0);
    if (rc != 0)
        return rc;
    q->turn_seq++; /* the last turn's user slots are empty now */
    q->in_turn = 1;
    return 0;
}

static void turn_blobs_clear(hsq_queue *q, int delete_them) {
    for (size_t i = 0; i < q->n_turn_blobs; i++) {
        if (delete_them)
            hsq_blob_delete(q->blob, q->turn_blobs[i]);
        free(q->turn_blobs[i]);
    }
    q->n_turn_blobs = 0;
}

/* The turn's transaction is lost: nothing in it may be acknowledged. */
static void fail_turn(hsq_queue *q, int err) {
    size_t j = 0;
    for (size_t i = 0; i < q->n_out; i++) {
        hsq_out *o = &q->out[i];
        if (!o->is_reply || o->sent) {
            out_free_frames(o);
            hsq_wbuf_free(&o->meta);
            continue;
        }
        out_free_frames(o);
        hsq_wbuf_reset(&o->meta);
        int code = err == HSQ_EDISKFULL || err == -ENOSPC ? HSQ_EDISKFULL : HSQ_EUNAVAIL;
        hsq_wire_encode_error(o->op, o->rid, code,
                              code == HSQ_EDISKFULL
                                  ? "storage is full; nothing was changed, retry later"
                                  : "storage error; nothing was changed, retry later",
                              &o->meta);
        /* Swap, not copy: every slot keeps owning exactly one buffer. */
        hsq_out keep = *o;
        *o = q->out[j];
        q->out[j++] = keep;
    }
    q->n_out = j;
    turn_blobs_clear(q, 1);
    /* An erasure's records were rolled back: redo them from where this turn
     * began. (A hand-off changed no record, and a result taken is redone
     * from the ledger entry.) */
    if (q->erase_state == ERASE_RECORDS || q->erase_state == ERASE_DONE) {
        q->erase_state = q->erase_saved_state;
        q->erase_rec = q->erase_saved_rec;
    }
    /* Reload the cached counters from what is really on disk, except
     * that ids and tokens never go back: a lease reply may have left
     * before the commit (hsq_queue_end_turn), and a worker holding one
     * must never meet its task id or token on another task. */
    ids_rec handed = q->ids;
    if (hsq_store_begin(q->st, 1) == 0) {
        load_meta(q);
        hsq_store_abort(q->st);
    }
    if (q->ids.next_id < handed.next_id)
        q->ids.next_id = handed.next_id;
    if (q->ids.next_token < handed.next_token)
        q->ids.next_token = handed.next_token;
    q->meta_dirty = 1;
    if (err == HSQ_EDISKFULL)
        hsq_store_grow(q->st, q->conf.map_max_bytes);
}

int hsq_queue_end_turn(hsq_queue *q) {
    assert(q->in_turn);
    if (q->turn_err == 0) {
        expire_leases(q);
        promote_delayed(q);
        if (q->dispatch_needed) {
            q->dispatch_needed = 0;
            dispatch(q);
        }
        expire_parked_and_waits(q);
        workers_expire(q);
        if (q->now - q->rate_pruned_ms >= 10000) {
            rate_prune(q);
            q->rate_pruned_ms = q->now;
        }
        uint64_t t0 = mono_us(q);
        process_ledger(q);
        /* A turn that serves requests gets a quarter of the batch (16 by
         * default): the records the sweep changes are pages the turn's
         * commit writes, and the requests wait for that commit. (A
         * sixteenth made purges four times slower and the acks no faster:
         * what costs is touching other parts of the trees at all, not how
         * many entries.) A purge pass in progress gets the whole batch even
         * then: someone asked for it now. */
        uint32_t batch = (uint32_t)q->conf.sweep_batch;
        int purging = q->n_purge_waits > 0 && q->reap_max > 0;
        if (purging && batch < PURGE_TURN)
            batch = PURGE_TURN;
        uint32_t budget = batch;
        if (q->turn_msgs > 0 && !purging)
            budget = budget / 4 ? budget / 4 : (batch ? 1 : 0);
        budget = disk_paced(q, budget);
        uint32_t used = 0;
        if (budget > 0)
            used = apply_results(q, budget);
        else if (q->results_head < q->n_results)
            apply_results(q, 64); /* sweeper off: an erasure's, or ones from before */
        if (used < budget) {
            hsq_sweep_counts sc;
            memset(&sc, 0, sizeof sc);
            uint32_t n = sweep(q, budget - used, 0, 1, &sc);
            used += n;
            if (purging) {
                /* Inline entries count now, handed-off ones as they come
                 * back (apply_results). */
                counts_add(&q->reaped_sum, &sc);
                q->purge_used += n;
                q->purge_exhausted = q->sweep_exhausted;
            }
        }
        q->cost.swept = used;
        if (q->conf.sweep_batch > 0)
            sweep_audit(q, (uint32_t)q->conf.sweep_batch);
        if (purging)
            answer_purge_waits(q);
        q->cost.sweep_us = mono_us(q) - t0;
        users_flush(q);
        if (q->meta_dirty)
            save_meta(q);
        q->store_deadline = first_store_deadline(q);
    }
    if (q->turn_err == 0)
        rewrite_daily(q);
    /* (not in the erasure's own turn: the store is reopened first) */
    if (q->turn_err == 0 && q->rewrite_db >= 0 && !q->rewrite_reopen)
        rewrite_step(q, disk_paced(q, q->turn_msgs > 0 ? REWRITE_BATCH / 16 : REWRITE_BATCH));
    if (q->turn_err == 0 && q->scrub_upto)
        scrub_step(q);
    int rc = q->turn_err;
    uint64_t t1 = mono_us(q);
    if (rc == 0)
        rc = hsq_blob_flush(q->blob);
    uint64_t t2 = mono_us(q);
    q->cost.flush_us = t2 - t1;
    q->in_turn = 0;
    if (rc != 0) {
        hsq_store_abort(q->st);
        fail_turn(q, rc);
        return rc;
    }
    if (q->before_commit)
        q->before_commit(q->before_commit_ud);
    hsq_fault("turn.before_commit");
    rc = q->durable ? hsq_store_commit(q->st) : hsq_store_commit_lazy(q->st);
    q->cost.commit_us = mono_us(q) - t2;
    if (rc != 0) {
        fail_turn(q, rc);
        return rc;
    }
    hsq_fault("turn.after_commit");
    q->meta_dirty = 0;
    q->durable_next_id = q->ids.next_id;
    turn_blobs_clear(q, 0);
    return 0;
}

int hsq_out_early(const hsq_out *o) {
    return o->sock == HSQ_SOCK_WORKER && o->is_reply && o->op == HSQ_OP_LEASE && !o->sent;
}

void hsq_queue_set_before_commit(hsq_queue *q, void (*fn)(void *ud), void *ud) {
    q->before_commit = fn;
    q->before_commit_ud = ud;
}

void hsq_queue_turn_cost(const hsq_queue *q, hsq_turn_cost *out) {
    *out = q->cost;
}

void hsq_queue_set_event_filter(hsq_queue *q,
                                int (*wanted)(void *ud, const void *topic, size_t len), void *ud) {
    q->event_wanted = wanted;
    q->event_ud = ud;
}

void hsq_queue_set_cost_clock(hsq_queue *q, uint64_t (*fn)(void)) {
    q->mono_us = fn;
}

hsq_out *hsq_queue_outbox(hsq_queue *q, size_t *n) {
    *n = q->n_out;
    return q->out;
}

void hsq_queue_outbox_clear(hsq_queue *q) {
    for (size_t i = 0; i < q->n_out; i++) {
        out_free_frames(&q->out[i]);
        if (q->out[i].meta.cap > OUT_KEEP_BYTES)
            hsq_wbuf_free(&q->out[i].meta); /* a big lease or list page */
        else
            hsq_wbuf_reset(&q->out[i].meta);
    }
    q->n_out = 0;
}

const char *hsq_queue_store_error(const hsq_queue *q) {
    return hsq_store_lasterr(q->st);
}

void hsq_queue_maintain(hsq_queue *q) {
    assert(!q->in_turn);
    hsq_store_maintain(q->st);
}

int64_t hsq_queue_next_deadline(hsq_queue *q) {
    int64_t t = INT64_MAX;
    for (size_t i = 0; i < q->n_parked; i++)
        if (q->parked[i].deadline_ms < t)
            t = q->parked[i].deadline_ms;
    if (q->n_waits && q->wheap[0]->deadline_ms < t)
        t = q->wheap[0]->deadline_ms;
    if (q->store_deadline < t)
        t = q->store_deadline;
    if (q->ledger_pending && q->erase_state != ERASE_FILES) /* (the reaper's result wakes the loop) */
        t = q->erase_retry_ms > q->now ? (q->erase_retry_ms < t ? q->erase_retry_ms : t) : q->now;
    if (q->results_head < q->n_results)
        t = q->now;
    if (q->rewrite_db >= 0 && q->now + SCRUB_TICK_MS < t)
        t = q->now + SCRUB_TICK_MS;
    if (hsq_store_forget_pending(q->st) && q->now + SCRUB_TICK_MS < t)
        t = q->now + SCRUB_TICK_MS;
    uint32_t flush = hsq_store_flush_in_ms(q->st); /* the journal's open batch */
    if (flush != UINT32_MAX && q->now + (int64_t)flush < t)
        t = q->now + (int64_t)flush;
    if (q->scrub_upto) {
        int64_t at = q->now + SCRUB_TICK_MS;
        if (q->scrub_retry_ms > at)
            at = q->scrub_retry_ms;
        if (at < t)
            t = at;
    }
    return t;
}

/* ---- start-up recovery (queue.h) ---- */

#define RECOVER_KEY "recover" /* meta: hsq_id_range[], the ranges not yet recovered */
#define CLEAN_KEY "clean"     /* meta: present while stopped cleanly */

int hsq_recover_ranges(hsq_store *st, hsq_id_range r[HSQ_RECOVER_RANGES], size_t *n) {
    *n = 0;
    hsq_bytes v;
    int rc = hsq_store_get(st, HSQ_DB_META, RECOVER_KEY, strlen(RECOVER_KEY), &v);
    if (rc == HSQ_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    if (v.len % sizeof *r != 0 || v.len / sizeof *r > HSQ_RECOVER_RANGES)
        return HSQ_ECORRUPT;
    size_t k = v.len / sizeof *r;
    memcpy(r, v.ptr, v.len);
    for (size_t i = 0; i < k; i++)
        if (r[i].lo == 0 || r[i].lo >= r[i].hi)
            return HSQ_ECORRUPT;
    *n = k;
    return 0;
}

int hsq_recover_forget(hsq_store *st) {
    return hsq_store_del(st, HSQ_DB_META, RECOVER_KEY, strlen(RECOVER_KEY));
}

int hsq_recover_match(const char *key, const hsq_id_range *r, size_t n) {
    if (strncmp(key, "u/", 2) != 0)
        return 0;
    const char *p = strchr(key + 2, '/');
    if (!p || p[1] < '0' || p[1] > '9')
        return 0;
    char *end;
    errno = 0;
    unsigned long long id = strtoull(p + 1, &end, 10);
    if (errno != 0 || *end != '/' ||
        (strncmp(end + 1, "in-", 3) != 0 && strncmp(end + 1, "out-", 4) != 0))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (id >= r[i].lo && id < r[i].hi)
            return 1;
    return 0;
}

typedef struct {
    const hsq_id_range *r;
    size_t n;
    int (*stop)(void *ud);
    void *ud;
    char **keys;
    uint64_t *sizes;
    size_t nk, cap;
    uint64_t walked;
} recover_ctx;

static int recover_visit(const char *key, uint64_t size, void *ud) {
    recover_ctx *c = ud;
    if (c->stop && c->stop(c->ud))
        return -ECANCELED;
    c->walked++;
    if (!hsq_recover_match(key, c->r, c->n))
        return 0;
    if (c->nk == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->keys = hsq_xrealloc(c->keys, c->cap * sizeof *c->keys);
        c->sizes = hsq_xrealloc(c->sizes, c->cap * sizeof *c->sizes);
    }
    c->keys[c->nk] = hsq_xstrndup(key, strlen(key));
    c->sizes[c->nk++] = size;
    return 0;
}

int hsq_recover_walk(hsq_blob *b, const hsq_id_range *r, size_t n, int (*stop)(void *ud), void *ud,
                     hsq_recover_counts *out) {
    memset(out, 0, sizeof *out);
    /* Collected first, deleted after: the walk's directory reads never see
     * their own deletions. */
    recover_ctx c = {r, n, stop, ud, NULL, NULL, 0, 0, 0};
    int rc = hsq_blob_walk_clean(b, recover_visit, &c, &out->tmp);
    for (size_t i = 0; i < c.nk; i++) {
        if (rc == 0 && stop && stop(ud))
            rc = -ECANCELED;
        if (rc == 0 && (rc = hsq_blob_delete(b, c.keys[i])) == 0) {
            out->files++;
            out->bytes += c.sizes[i];
            hsq_fault("recover.deleted");
        }
        free(c.keys[i]);
    }
    free(c.keys);
    free(c.sizes);
    out->walked = c.walked;
    return rc;
}

int hsq_queue_recover(hsq_queue *q, uint64_t *removed) {
    assert(!q->in_turn);
    hsq_id_range r[HSQ_RECOVER_RANGES + 1];
    size_t n = 0;
    int rc = hsq_store_begin(q->st, 1);
    if (rc != 0)
        return rc;
    rc = hsq_recover_ranges(q->st, r, &n);
    hsq_store_abort(q->st);
    if (rc != 0)
        return rc;
    r[n].lo = q->ids.next_id; /* nothing is served yet: no id above is taken */
    r[n].hi = UINT64_MAX;
    n++;
    hsq_recover_counts counts;
    rc = hsq_recover_walk(q->blob, r, n, NULL, NULL, &counts);
    if (rc == 0 && n > 1 && (rc = hsq_store_begin(q->st, 0)) == 0) {
        rc = hsq_recover_forget(q->st);
        rc = rc == 0 ? hsq_store_commit(q->st) : (hsq_store_abort(q->st), rc);
    }
    if (removed)
        *removed = counts.files + counts.tmp;
    return rc;
}

int hsq_queue_recover_begin(hsq_queue *q, hsq_id_range out[HSQ_RECOVER_RANGES], size_t *n) {
    assert(!q->in_turn);
    *n = 0;
    hsq_id_range r[HSQ_RECOVER_RANGES];
    size_t k = 0;
    int rc = hsq_store_begin(q->st, 0);
    if (rc != 0)
        return rc;
    rc = hsq_recover_ranges(q->st, r, &k);
    hsq_bytes v;
    /* A store that has run (its ids are recorded) and was not stopped
     * cleanly may hold uploads of a lost turn. */
    int ran = rc == 0 && hsq_store_get(q->st, HSQ_DB_META, "ids", 3, &v) == 0;
    int clean = rc == 0 && hsq_store_get(q->st, HSQ_DB_META, CLEAN_KEY, strlen(CLEAN_KEY), &v) == 0;
    int crashed = rc == 0 && ran && !clean;
    if (rc == 0 && ran && !clean && k == HSQ_RECOVER_RANGES) {
        /* Every earlier start crashed before its walk ended: walk now. */
        hsq_store_abort(q->st);
        if ((rc = hsq_queue_recover(q, NULL)) != 0)
            return rc;
        if ((rc = hsq_store_begin(q->st, 0)) != 0)
            return rc;
        k = 0;
        ran = 0; /* nothing is left to set aside */
    }
    ids_rec ids = q->ids;
    if (rc == 0 && ran && !clean) {
        r[k].lo = ids.next_id;
        r[k].hi = ids.next_id + HSQ_RECOVER_SPAN;
        ids.next_id = r[k].hi;
        k++;
    }
    /* Leases leave before their commit (hsq_queue_end_turn): a crash may
     * have handed out tokens past the recorded counter, so it jumps past
     * any that many. */
    if (crashed)
        ids.next_token += HSQ_TOKEN_JUMP;
    /* From here on a crash is not a clean stop (hsq_queue_mark_clean). */
    if (rc == 0)
        rc = hsq_store_del(q->st, HSQ_DB_META, CLEAN_KEY, strlen(CLEAN_KEY));
    if (rc == 0)
        rc = hsq_store_put(q->st, HSQ_DB_META, "ids", 3, &ids, sizeof ids);
    if (rc == 0)
        rc = k ? hsq_store_put(q->st, HSQ_DB_META, RECOVER_KEY, strlen(RECOVER_KEY), r,
                               k * sizeof *r)
               : hsq_recover_forget(q->st);
    if (rc != 0) {
        hsq_store_abort(q->st);
        return rc;
    }
    if ((rc = hsq_store_commit(q->st)) != 0)
        return rc;
    q->ids = ids;
    q->durable_next_id = ids.next_id;
    memcpy(out, r, k * sizeof *r);
    *n = k;
    q->recovering = q->recover_recorded = k > 0;
    return 0;
}

int hsq_queue_mark_clean(hsq_queue *q) {
    assert(!q->in_turn);
    int rc = hsq_store_begin(q->st, 0);
    if (rc != 0)
        return rc;
    if ((rc = hsq_store_put(q->st, HSQ_DB_META, CLEAN_KEY, strlen(CLEAN_KEY), "", 0)) != 0) {
        hsq_store_abort(q->st);
        return rc;
    }
    return hsq_store_commit(q->st);
}

int hsq_queue_recovering(const hsq_queue *q) {
    return q->recovering;
}

void hsq_queue_scrub_state(const hsq_queue *q, int *pending, uint64_t *pages_total) {
    *pending = q->scrub_upto != 0 || q->rewrite_db >= 0 || hsq_store_forget_pending(q->st);
    *pages_total = q->scrub_pages_total;
}

void hsq_queue_recovered(hsq_queue *q, int rc, int final, uint64_t files, uint64_t bytes) {
    assert(q->in_turn);
    if (rc == 0 && q->recover_recorded) {
        q->reaped_sum.inputs += files;
        q->reaped_sum.bytes += bytes;
    }
    if (rc == 0 && final && q->recover_recorded) {
        /* A failed commit keeps the ranges: the next start walks them again. */
        note(q, hsq_recover_forget(q->st));
        q->recover_recorded = 0;
    }
    if (q->recovering) {
        /* (after a failed walk, purges go on without it: it may keep failing) */
        q->recovering = 0;
        answer_purge_waits(q);
    }
}

void hsq_queue_sweep_totals(const hsq_queue *q, hsq_sweep_counts *swept, uint64_t *rate_limited) {
    *swept = q->swept;
    *rate_limited = q->rate_limited_total;
}

uint64_t hsq_queue_blob_bytes(const hsq_queue *q) {
    return q->counts.blob_bytes;
}

void hsq_queue_waits(const hsq_queue *q, uint64_t *parked, uint64_t *refused) {
    *parked = q->n_waits;
    *refused = q->waits_refused;
}

void hsq_queue_workers_by_backend(const hsq_queue *q, uint64_t *cpu, uint64_t *cuda) {
    *cpu = *cuda = 0;
    for (size_t i = 0; i < q->n_workers; i++) {
        if (strcmp(q->workers[i].backend, "cuda") == 0)
            (*cuda)++;
        else
            (*cpu)++;
    }
}

void hsq_queue_drain(hsq_queue *q) {
    q->draining = 1;
}

void hsq_queue_stats(hsq_queue *q, hsq_wire_stats *s) {
    memset(s, 0, sizeof *s);
    s->queued = q->counts.queued;
    s->leased = q->counts.leased;
    s->succeeded = q->counts.succeeded;
    s->failed = q->counts.failed;
    s->cancelled = q->counts.cancelled;
    s->expired = q->counts.expired;
    memcpy(s->queued_by_prio, q->counts.queued_by_prio, sizeof s->queued_by_prio);
    s->delayed = q->counts.delayed;
    s->dead = q->counts.dead;
    s->workers = q->n_workers;
    for (size_t i = 0; i < q->n_workers; i++)
        if (q->workers[i].leases > 0)
            s->workers_busy++;
    s->submitted_total = q->submitted_total;
    s->completed_total = q->completed_total;
    s->retries_total = q->retries_total;
    s->uptime_s = (uint64_t)((q->now - q->started_ms) / 1000);
    s->oldest_queued_ms = 0;
}

/* ---- lifecycle ---- */

/* A 32-byte key kept in META under `name`, made at the first start. */
static int load_key(hsq_queue *q, const char *name, uint8_t key[32]) {
    hsq_bytes v;
    int rc = hsq_store_get(q->st, HSQ_DB_META, name, strlen(name), &v);
    if (rc == 0 && v.len == 32) {
        memcpy(key, v.ptr, 32);
        return 0;
    }
    if (rc != 0 && rc != HSQ_ENOTFOUND)
        return rc;
    randombytes_buf(key, 32);
    return hsq_store_put(q->st, HSQ_DB_META, name, strlen(name), key, 32);
}

#define REKEY_BATCH 4096

/* One tree of a store written before HSQ_USER_KEY_MARK keys: every key that
 * starts with u8 len | user gets the hashed form, in batches (raw keys sort
 * before the 0xff ones, so each batch starts at the first). `rest` is what
 * follows the id: nothing (users, credits), a chunk's first id (history),
 * the client's idempotency key (hashed too). */
static int rekey_tree(hsq_queue *q, hsq_db db, uint64_t *moved) {
    hsq_wbuf b;
    hsq_wbuf_init(&b);
    int rc = 0;
    for (;;) {
        hsq_cursor *cur;
        if ((rc = hsq_cursor_open(q->st, db, &cur)) != 0)
            break;
        hsq_wbuf_reset(&b);
        size_t n = 0;
        hsq_bytes k, v;
        for (rc = hsq_cursor_get(cur, HSQ_CUR_FIRST, &k, &v); rc == 0 && n < REKEY_BATCH;
             rc = hsq_cursor_get(cur, HSQ_CUR_NEXT, &k, &v), n++) {
            if (k.len > 0 && k.ptr[0] == HSQ_USER_KEY_MARK)
                break;
            batch_add(&b, k, v);
        }
        hsq_cursor_close(&cur);
        if (rc != 0 && rc != HSQ_ENOTFOUND)
            break;
        rc = 0;
        if (n == 0)
            break;
        const uint8_t *p = (const uint8_t *)b.data;
        for (size_t i = 0; i < n && rc == 0; i++) {
            hsq_bytes rk, rv;
            p = batch_next(p, &rk, &rv);
            const uint8_t *ok = rk.ptr, *ov = rv.ptr;
            uint32_t kl = (uint32_t)rk.len, vl = (uint32_t)rv.len;
            if (kl < 2 || ok[0] == 0 || ok[0] > HSQ_MAX_USER_LEN || kl < 1u + ok[0]) {
                hsq_log(HSQ_LOG_ERR, "queue",
                        "rekey: a key of %u bytes in the %s tree is not "
                        "u8 len | user",
                        kl, db == HSQ_DB_IDEM ? "idempotency" : "per-user");
                rc = HSQ_ECORRUPT;
                break;
            }
            hsq_str user = {(const char *)ok + 1, ok[0]};
            const uint8_t *rest = ok + 1 + ok[0];
            size_t rl = kl - 1u - ok[0];
            uint8_t nk[IDEM_KEY_LEN + 8];
            size_t nl = USER_KEY_LEN;
            user_hash(q, user, nk);
            if (db == HSQ_DB_IDEM) {
                idem_hash(q, (hsq_str){(const char *)rest, rl}, nk + nl);
                nl += 16;
            } else if (rl <= 8) {
                memcpy(nk + nl, rest, rl);
                nl += rl;
            } else {
                rc = HSQ_ECORRUPT;
                break;
            }
            uint8_t lv[8 + HSQ_MAX_USER_LEN];
            if (db == HSQ_DB_LEDGER) { /* u64be requested_at, then the id */
                if (vl != 8) {
                    rc = HSQ_ECORRUPT;
                    break;
                }
                memcpy(lv, ov, 8);
                memcpy(lv + 8, user.ptr, user.len);
                ov = lv;
                vl = (uint32_t)(8 + user.len);
            }
            rc = hsq_store_del(q->st, db, ok, kl);
            if (rc == 0)
                rc = hsq_store_put(q->st, db, nk, nl, ov, vl);
        }
        if (rc != 0)
            break;
        *moved += n;
    }
    hsq_wbuf_free(&b);
    return rc;
}

/* The audit and user-key hash keys, and the per-user trees keyed by the
 * latter: a store from before it had raw ids there, rekeyed once here, and
 * its freed pages (which hold the ids) scrubbed like an erasure's. After
 * load_meta. */
static int load_keys(hsq_queue *q) {
    if (sodium_init() < 0)
        return HSQ_EINTERNAL;
    int rc = hsq_store_begin(q->st, 0);
    if (rc != 0)
        return rc;
    if ((rc = load_key(q, "audit_key", q->audit_key)) == 0)
        rc = load_key(q, DB_KEY_META, q->db_key);
    hsq_bytes v;
    if (rc == 0 && (rc = hsq_store_get(q->st, HSQ_DB_META, UKEYS_META, strlen(UKEYS_META), &v)) ==
                       HSQ_ENOTFOUND) {
        static const hsq_db trees[] = {HSQ_DB_USERS, HSQ_DB_HISTORY, HSQ_DB_IDEM, HSQ_DB_CREDITS,
                                       HSQ_DB_LEDGER};
        uint64_t moved = 0;
        rc = 0;
        for (size_t i = 0; rc == 0 && i < sizeof trees / sizeof trees[0]; i++)
            rc = rekey_tree(q, trees[i], &moved);
        if (rc == 0)
            rc = hsq_store_put(q->st, HSQ_DB_META, UKEYS_META, strlen(UKEYS_META), "1", 1);
        if (rc == 0 && moved > 0) {
            scrub_request(q); /* (load_meta has read the scrub under way) */
            rc = q->turn_err;
            hsq_log(HSQ_LOG_NOTICE, "queue",
                    "per-user records rekeyed by a keyed hash of the user id records=%" PRIu64,
                    moved);
        }
    }
    if (rc != 0) {
        hsq_store_abort(q->st);
        return rc;
    }
    return hsq_store_commit(q->st);
}

int hsq_queue_new(hsq_queue **out, hsq_store *st, hsq_blob *blob, const hsq_queue_conf *conf,
                  int64_t now_ms) {
    hsq_queue *q = hsq_xcalloc(1, sizeof *q);
    q->disk_share = 64;
    q->st = st;
    q->blob = blob;
    q->conf = *conf;
    q->now = now_ms;
    q->started_ms = now_ms;
    hsq_wbuf_init(&q->scratch);
    int rc = hsq_store_begin(st, 1);
    if (rc == 0) {
        rc = load_meta(q);
        hsq_store_abort(st);
    }
    if (rc == 0)
        rc = load_keys(q);
    if (rc != 0) {
        free(q);
        *out = NULL;
        return rc;
    }
    q->durable_next_id = q->ids.next_id;
    /* Leases and backoffs left by a previous run are due at once: the first
     * turn looks at them, and finishes any erasure a crash interrupted. */
    q->store_deadline = now_ms;
    q->ledger_pending = 1;
    q->prefixes = hsq_xcalloc(PREFIX_CACHE, sizeof *q->prefixes);
    q->users = hsq_xcalloc(USER_CACHE, sizeof *q->users);
    *out = q;
    return 0;
}

void hsq_queue_free(hsq_queue **qp) {
    hsq_queue *q = *qp;
    if (!q)
        return;
    if (q->in_turn)
        hsq_store_abort(q->st);
    hsq_queue_outbox_clear(q);
    for (size_t i = 0; i < q->n_out_init; i++)
        hsq_wbuf_free(&q->out[i].meta);
    free(q->out);
    memset(q->prefixes, 0, PREFIX_CACHE * sizeof *q->prefixes);
    free(q->prefixes);
    memset(q->users, 0, USER_CACHE * sizeof *q->users);
    free(q->users);
    turn_blobs_clear(q, 0);
    free(q->turn_blobs);
    free(q->workers);
    free(q->parked);
    free(q->erase_waits);
    free(q->purge_waits);
    hsq_reaps_free(q->reaps, q->n_reaps);
    hsq_reaps_free(q->results, q->n_results);
    free(q->dry_seen.slot);
    hsq_checks_free(q->checks, q->n_checks);
    hsq_stages_free(NULL, q->stages, q->n_stages); /* made, never run: nothing staged */
    for (size_t i = 0; i < RATE_BUCKETS; i++) {
        rate_bucket *b = q->rate[i];
        while (b) {
            rate_bucket *n = b->next;
            free(b);
            b = n;
        }
    }
    for (size_t i = 0; i < q->n_waits; i++)
        free(q->wheap[i]);
    free(q->wheap);
    hsq_wbuf_free(&q->scratch);
    free(q);
    *qp = NULL;
}

/* ---- read-only accessors for the shell's metrics ---- */

int64_t hsq_queue_oldest_queued_ms(hsq_queue *q) {
    if (q->in_turn)
        return oldest_queued(q);
    /* Outside a turn: a short read transaction of its own (bounded scan). */
    if (hsq_store_begin(q->st, 1) != 0)
        return 0;
    int64_t t = oldest_queued(q);
    hsq_store_abort(q->st);
    return t;
}
