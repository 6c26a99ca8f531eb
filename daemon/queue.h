/* queue.h - the broker core: requests in, store writes and messages out.
 *
 * DESIGN. The core includes no libuv, no ZeroMQ and reads no clock. The shell
 * (srv.c) drives it in turns:
 *
 *     hsq_queue_begin_turn(q, now)          one LMDB write transaction opens
 *     hsq_queue_handle(q, sock, peer, ...)  for every message drained this turn
 *     hsq_queue_end_turn(q)                 timers, dispatch, group commit
 *     hsq_queue_outbox(q) ... send ...      replies leave only after the commit
 *     hsq_queue_outbox_clear(q)
 *
 * so an acknowledged submit is always on disk before its ack is sent, and one
 * fsync covers every request of the turn. If anything in the turn fails to
 * reach the disk, the whole transaction is aborted, every reply in the outbox
 * becomes an error reply for the same request (nothing unsaved is ever
 * acknowledged), events and commands are dropped, and the in-memory caches
 * are reloaded from LMDB.
 *
 * State lives in LMDB (see store.h for the databases). In memory the core
 * keeps only what it can rebuild or lose: counters (also persisted), the
 * worker registry, long-polling lease requests and `wait` requests. A
 * restart loses the parked requests; their peers time out and ask again.
 *
 * Dispatch order: priority class, then fair round-robin across users within
 * a class, then FIFO within a user. Each user has, per class, a "next round";
 * a submit takes round = max(user's next round, the class's current round)
 * and the pending key is (class, round, id). Taking the smallest key serves
 * one task per user per round, oldest first, and a user arriving late starts
 * at the current round instead of jumping ahead of everyone.
 */
#ifndef HSQ_DAEMON_QUEUE_H
#define HSQ_DAEMON_QUEUE_H

#include "common/blob.h"
#include "common/buf.h"
#include "daemon/store.h"
#include "schemas/wire.h"

#include <stddef.h>
#include <stdint.h>

/* Retention classes a priority class may override. */
enum { HSQ_RET_OUTPUTS = 0, HSQ_RET_UPLOADS, HSQ_RET_REFERENCES, HSQ_RET_FAILED, HSQ_RET_N_ };

/* Parse a per-priority override, "outputs:90d,uploads:14d" (classes
 * outputs, uploads, references, failed; durations as in the config: ms, s,
 * m, h, d). Unnamed classes stay 0 (= the default). An empty spec is valid.
 * Errors: HSQ_EINVAL with one sentence in err. */
int hsq_retention_override_parse(const char *spec, uint64_t out[HSQ_RET_N_], char *err,
                                 size_t errlen);

typedef struct {
    uint64_t max_queued;           /* active (queued + leased) tasks, all users */
    uint64_t max_queued_per_user;  /* active tasks of one user */
    uint64_t max_waits;            /* parked `wait` requests, all clients (0: no limit) */
    uint64_t lease_ms;             /* lease length; renewed by heartbeats */
    uint64_t heartbeat_ms;         /* interval workers are told to use */
    uint64_t max_attempts;         /* leases before a task is dead-lettered */
    uint64_t backoff_base_ms;      /* retry delay = base * 2^(attempts-1), capped */
    uint64_t backoff_max_ms;
    uint64_t inline_max;           /* inputs up to this size are kept in LMDB */
    uint64_t max_frame_bytes;      /* one image frame */
    uint64_t retention_outputs_ms; /* outputs and metadata after success */
    uint64_t retention_uploads_ms; /* uploads after the task ends */
    uint64_t retention_failed_ms;  /* inputs of failed or cancelled tasks */
    uint64_t retention_references_ms; /* clothing/background references after success */
    uint64_t retention_pending_ms; /* a task not finished by then is cancelled, inputs deleted */
    uint64_t retention_tombstone_ms; /* tombstones (no images, no prompt) after outputs expire */
    uint64_t sweep_batch;          /* expiry entries handled per loop turn (0 = sweeper off) */
    uint64_t retention_audit_ms;   /* audit log lines */
    /* per priority class, per HSQ_RET_*: an override in ms; 0 = the default */
    uint64_t retention_by_prio[HSQ_PRIO_COUNT_][HSQ_RET_N_];
    uint64_t submit_rate;          /* submits per second per user (token bucket); 0 = no limit */
    uint64_t submit_burst;         /* bucket size: submits a user may send at once */
    uint64_t key_submit_rate;      /* submits per second per CURVE key (web-tier instance); 0 = off */
    uint64_t key_submit_burst;
    uint64_t map_max_bytes;        /* the map may grow up to this */
    int credits;                   /* charge submits against the per-user credit ledger */
    uint64_t credit_cost;          /* credits per output (background x style x size) */
} hsq_queue_conf;

typedef enum { HSQ_SOCK_CLIENT = 0, HSQ_SOCK_WORKER = 1, HSQ_SOCK_EVENTS = 2 } hsq_sock;

/* Who sent a message. On ipc:// endpoints (protected by file permissions)
 * there is no per-peer identity: HSQ_ROLE_ANY, and only the socket decides.
 * On CURVE endpoints the ZAP handler maps each client key to one role, and
 * every operation checks it (a worker key cannot submit, a web key cannot
 * requeue, a client key cannot lease). */
typedef enum {
    HSQ_ROLE_ANY = 0,
    HSQ_ROLE_WEB = 1,
    HSQ_ROLE_WORKER = 2,
    HSQ_ROLE_OPERATOR = 3
} hsq_role;

const char *hsq_role_name(hsq_role r);   /* "any", "web", "worker", "operator" */
int hsq_role_from_name(const char *name); /* -1 when unknown */

#define HSQ_PEER_MAX 255

/* One outgoing message. All memory is owned by the outbox. For the events
 * socket, peer holds the topic (the user id). */
typedef struct {
    hsq_sock sock;
    uint8_t peer[HSQ_PEER_MAX];
    size_t peer_len;
    hsq_op op;       /* op of the request answered, or of the command */
    uint64_t rid;
    int is_reply;    /* a reply to a request (turned into an error on failure) */
    hsq_wbuf meta;
    uint32_t nframes;
    hsq_bytes *frames; /* each ptr malloc'd, owned */
    /* op HSQ_OP_EVENT: what meta says, for the daemon's histograms */
    uint64_t ev_task;
    uint8_t ev_state;
    int64_t ev_at_ms;
    int unsent; /* an event nobody subscribed to: not encoded, only counted */
    int sent;   /* sent before the commit (hsq_out_early): done with */
} hsq_out;

/* Whether o may leave before the turn's commit: a lease reply. Leases then
 * reach workers while the commit that records them (and, nearly always,
 * the submits of the tasks they carry) waits for the disk, which is most
 * of what a task's time from submit to lease was. It promises nothing a
 * crash or a failed commit could break: the task is leased again (or, if
 * its submit was lost, never existed and was never acknowledged); task ids
 * and tokens are never handed out twice (fail_turn, HSQ_TOKEN_JUMP); and a
 * worker's files for a task that is not there go when its done comes
 * (queue.c, discard_outputs), or with the recovery walk after a crash
 * (hsq_recover_match). Every other reply waits for the commit. */
int hsq_out_early(const hsq_out *o);

typedef struct hsq_queue hsq_queue;

/* What a sweep removed (or, for a dry run, would remove). */
typedef struct {
    uint64_t inputs;     /* uploaded photos and references */
    uint64_t outputs;    /* generated images */
    uint64_t tasks;      /* tasks reduced to tombstones */
    uint64_t tombstones; /* tombstones deleted */
    uint64_t cancelled;  /* unfinished tasks past retention_pending */
    uint64_t bytes;      /* bytes freed */
    uint64_t errors;     /* blob store failures (retried a minute later) */
} hsq_sweep_counts;

/* Create the core over an open store and blob store (both borrowed: they
 * must outlive the queue). Loads counters from the store.
 * Errors: HSQ_ESTORE, HSQ_ECORRUPT. */
int hsq_queue_new(hsq_queue **out, hsq_store *st, hsq_blob *blob, const hsq_queue_conf *conf,
                  int64_t now_ms);
void hsq_queue_free(hsq_queue **q);

/* Open the turn's write transaction. Errors: HSQ_ESTORE. */
int hsq_queue_begin_turn(hsq_queue *q, int64_t now_ms);

/* Handle one message: frames[0] is the msgpack meta, frames[1..] binary
 * frames. key is the sender's CURVE identity (the ZAP user id, "web:eu-1"),
 * or NULL on plaintext sockets; it selects the per-key submit limit. Frames
 * and key are borrowed for the duration of the call. Never fails: every
 * problem becomes an error reply in the outbox. */
void hsq_queue_handle(hsq_queue *q, hsq_sock sock, hsq_role role, const char *key,
                      const uint8_t *peer, size_t peer_len, const hsq_bytes *frames,
                      size_t nframes);

/* Tell the core a peer sent frames that are not a message at all (no meta
 * frame): answers bad_request without an rid. */
void hsq_queue_reject(hsq_queue *q, hsq_sock sock, const uint8_t *peer, size_t peer_len,
                      int code, const char *why);

/* Run timers (lease expiry, retry backoff, long-poll and wait timeouts),
 * dispatch to parked workers, persist counters, flush blobs and commit.
 * Returns 0, or the commit error after converting the outbox (see DESIGN).
 * Errors: HSQ_EDISKFULL, HSQ_ESTORE, -errno from the blob flush. */
int hsq_queue_end_turn(hsq_queue *q);

/* Where the last hsq_queue_end_turn spent its time (monotonic us): the
 * sweeper (blob deletions included), the blob flush and the LMDB commit;
 * plus how many index entries the sweep handled. For the slow-turn log line. */
typedef struct {
    uint64_t sweep_us, flush_us, commit_us;
    uint32_t swept;
} hsq_turn_cost;
void hsq_queue_turn_cost(const hsq_queue *q, hsq_turn_cost *out);

/* The clock behind hsq_turn_cost (monotonic us); NULL, the default, leaves
 * the figures 0. The core reads no clock of its own. */
void hsq_queue_set_cost_clock(hsq_queue *q, uint64_t (*mono_us)(void));

/* Events no subscriber would receive are not encoded: wanted(ud, topic, len)
 * says whether one on that topic would reach anyone (topics.h). Such an
 * event still takes an outbox entry, with `unsent` set and no meta, so the
 * shell's timing histograms see every state change. NULL, the default,
 * encodes every event. */
void hsq_queue_set_event_filter(hsq_queue *q,
                                int (*wanted)(void *ud, const void *topic, size_t len), void *ud);

/* ---- reaping: the continuous sweeper's file deletions, off the loop ----
 *
 * Deleting a file costs a directory fsync, and on a busy filesystem an fsync
 * can wait hundreds of milliseconds for the journal: the loop must not. With
 * reaping on, the sweeper in hsq_queue_end_turn hands every due entry whose
 * work includes deleting files (the inputs of a finished task, a task's
 * outputs when it becomes a tombstone) to the shell as an hsq_reap, the keys
 * to delete, and leaves the entry in the expiry index. The shell deletes them
 * elsewhere (daemon/reaper.c: one directory sync for a whole batch) and hands
 * the results back in a later turn (hsq_queue_reaped), which changes the
 * records and drops the entries. The order is the inline one, files first,
 * records after: a crash in between leaves the entry due, and the next pass
 * deletes again (a missing file is success). Entries in flight are skipped by
 * later sweeps and by purge requests. Purge requests, erasures and the
 * offline purge still delete inline. */
typedef struct {
    uint8_t entry[17]; /* the expiry index key (at, id, kind) */
    uint32_t n_keys;
    char *keys;        /* n_keys NUL-terminated blob keys, back to back (malloc'd) */
    char prefix[HSQ_BLOB_KEY_MAX + 1]; /* directory of stray outputs, "" if none */
    int rc;            /* set by the deleter: 0, or the first error (-errno, HSQ_E*) */
    uint64_t bytes;    /* set by the deleter: bytes freed under prefix */
} hsq_reap;

/* At most max entries in flight (handed off, results not back); 0 (the
 * default) deletes inline. */
void hsq_queue_set_reaping(hsq_queue *q, size_t max);

/* Outside a turn: the entries handed off since the last call, in an array
 * the caller owns (hsq_reaps_free); NULL and *n = 0 when none. */
hsq_reap *hsq_queue_take_reaps(hsq_queue *q, size_t *n);

/* The results of n entries taken with hsq_queue_take_reaps (rc and bytes
 * filled in); takes ownership of the array. The sweeps of the next turns
 * apply them within their budgets (hsq_queue_next_deadline says "now" while
 * any wait). An entry whose deletion failed is retried a minute later, like
 * an inline failure. */
void hsq_queue_reaped(hsq_queue *q, hsq_reap *r, size_t n);

/* Entries handed off whose results are not back yet. */
size_t hsq_queue_reaps_inflight(const hsq_queue *q);

void hsq_reaps_free(hsq_reap *r, size_t n);

/* ---- checking: a done's outputs, confirmed off the loop ----
 *
 * Before a task is recorded as succeeded, hsqd confirms that every output
 * the worker names is in the blob store with the size it reports: a stat per
 * output. On a local disk that is a tenth of the loop's time at full load;
 * on the shared mount that workers on other machines use it is a network
 * round trip, during which the loop would serve nobody. With checking on,
 * the done handler copies the request into an hsq_check and reads nothing;
 * the shell runs the stats elsewhere (hsq_checks_run, on a thread) and
 * hands the checks back in a later turn (hsq_queue_checked). That turn
 * validates the done at that moment (the lease may have expired, or the
 * task been cancelled or erased, since it arrived: then it is refused like
 * any late done; a key outside the task's prefix is refused whatever its
 * stat said), and records the result or refuses the missing output. With
 * checking off, or past its limit, the handler makes the same check, runs
 * it and answers it at once. The reply to the worker leaves after that
 * turn's commit, as every reply does. */
typedef struct {
    uint64_t task, token, rid;
    uint32_t n_outputs;
    hsq_wire_output *outputs; /* keys NUL-terminated; all in mem */
    hsq_bytes info;           /* the raw info map, in mem; empty when none */
    uint8_t peer[HSQ_PEER_MAX];
    size_t peer_len;
    void *mem; /* owned */
    int bad;   /* set by hsq_checks_run: -1 when every output is there with its
                  size, else the first that is not */
    int rc;    /* ... and the stat's error (0: there, with another size) */
} hsq_check;

/* At most max dones in flight (handed off, results not back); 0 (the
 * default) checks inline. Past max, dones are checked inline too. */
void hsq_queue_set_checking(hsq_queue *q, size_t max);

/* Outside a turn: the checks handed off since the last call, in an array the
 * caller owns; NULL and *n = 0 when none. */
hsq_check *hsq_queue_take_checks(hsq_queue *q, size_t *n);

/* Stat every output of n checks in the blob store b, setting bad and rc.
 * Touches nothing else: any thread may run it. */
void hsq_checks_run(hsq_blob *b, hsq_check *v, size_t n);

/* In a turn: n checks back from hsq_checks_run; takes ownership of the
 * array. Each is answered in this turn's outbox. */
void hsq_queue_checked(hsq_queue *q, hsq_check *v, size_t n);

/* Dones handed off whose checks are not back yet. */
size_t hsq_queue_checks_inflight(const hsq_queue *q);

void hsq_checks_free(hsq_check *v, size_t n);

/* ---- staging: a submit's large inputs, written off the loop ----
 *
 * Inputs above inline_max go to the blob store. Written in the turn, each
 * made every other request of that turn wait until a photo was on the disk
 * (docs/bench.md, uploads). With staging on, the submit handler makes every
 * check a submit makes (erasure, idempotency, rate, limits, credits), takes
 * the rate tokens, copies the request into an hsq_stage and answers nothing
 * yet. The shell writes the large inputs elsewhere (hsq_stages_run, on a
 * thread: each a staged temp file in the user's directory, fsync'd; blob.h)
 * and hands the stages back in a later turn (hsq_queue_staged). That turn
 * runs the submit again as things stand then (a limit, the credits or the
 * idempotency key may have changed meanwhile; the rate is not charged
 * twice), renames the staged files to their keys under the task id it
 * assigns, and records the task: the ack leaves after that turn's commit,
 * as every ack does. A refusal then, or a failed write, removes the staged
 * files. A crash in between acknowledged nothing; the staged files it
 * leaves are temp files, which the janitor removes as stale (blob.h). With
 * staging off, or past its limit in bytes, a submit writes its inputs in
 * the turn. */
typedef struct {
    uint8_t *buf;                         /* owned: the request's frames, one after another */
    size_t bytes;                         /* of buf */
    size_t nframes;                       /* meta frame + inputs */
    hsq_bytes frames[1 + HSQ_MAX_INPUTS]; /* views into buf */
    hsq_sock sock;
    uint8_t peer[HSQ_PEER_MAX];
    size_t peer_len;
    char dir[HSQ_BLOB_PREFIX_LEN + 1]; /* the user's directory: temp files go there */
    uint64_t inline_max;               /* inputs above this are staged */
    /* set by hsq_stages_run: each staged input's temp file ("" for the
     * inline ones), and 0 or the first failed write's error (then nothing
     * is staged) */
    char staged[HSQ_MAX_INPUTS][HSQ_BLOB_STAGED_MAX];
    int rc;
} hsq_stage;

/* At most max_bytes of requests in flight (handed off, not back); 0 (the
 * default) writes inputs in the turn, as does a submit past the limit. */
void hsq_queue_set_staging(hsq_queue *q, uint64_t max_bytes);

/* Outside a turn: the stages made since the last call, in an array the
 * caller owns; NULL and *n = 0 when none. */
hsq_stage *hsq_queue_take_stages(hsq_queue *q, size_t *n);

/* Write the large inputs of n stages to the blob store b as staged files,
 * setting staged and rc. Touches nothing else: any thread may run it (b may
 * be shared by threads that only stage, blob.h). */
void hsq_stages_run(hsq_blob *b, hsq_stage *v, size_t n);

/* In a turn: n stages back from hsq_stages_run; takes ownership of the
 * array. Each submit is answered in this turn's outbox. */
void hsq_queue_staged(hsq_queue *q, hsq_stage *v, size_t n);

/* Submits handed off whose inputs are not back yet, and their bytes. */
size_t hsq_queue_stages_inflight(const hsq_queue *q, uint64_t *bytes);

/* Free n stages; with b, their staged files are removed first. */
void hsq_stages_free(hsq_blob *b, hsq_stage *v, size_t n);

/* Messages to send, in order; valid until hsq_queue_outbox_clear. */
hsq_out *hsq_queue_outbox(hsq_queue *q, size_t *n);
void hsq_queue_outbox_clear(hsq_queue *q);

/* The store's last error in words (hsq_store_lasterr), for the log line
 * of a turn that failed. */
const char *hsq_queue_store_error(const hsq_queue *q);

/* Between turns, once the outbox is sent: the store's upkeep
 * (hsq_store_maintain), which then delays no request already answered. */
void hsq_queue_maintain(hsq_queue *q);

/* fn(ud) runs in hsq_queue_end_turn right before the commit, once nothing
 * short of the commit itself can fail the turn: the shell sends the
 * outbox entries for which hsq_out_early says so and sets their `sent`.
 * A turn that fails drops them (they were answered); the rest of the
 * outbox goes after the commit, as errors if it failed. */
void hsq_queue_set_before_commit(hsq_queue *q, void (*fn)(void *ud), void *ud);

/* Earliest wall-clock ms at which a turn has time-based work (INT64_MAX when
 * none), so the shell can arm one timer. */
int64_t hsq_queue_next_deadline(hsq_queue *q);

/* ---- start-up recovery ----
 *
 * hsqd writes a submit's inputs before the transaction that records them,
 * and sends leases before it too, so a crash can leave uploads (and a
 * worker's outputs) behind whose task ids were never committed: ids
 * from the persisted next id up to what the lost turn allocated (a turn
 * takes fewer than HSQ_RECOVER_SPAN submits: the core refuses more). Finding
 * them means walking the blob tree, which is O(files): that walk runs on the
 * janitor thread (janitor.h) while hsqd serves. For that, a start after a
 * crash first moves the next id past HSQ_RECOVER_SPAN ids, so that no new
 * submit uses an id the janitor may delete, and records that range durably:
 * a crash during the walk leaves it for the next start. A clean stop
 * (hsq_queue_mark_clean) leaves no uploads in flight, and the next start no
 * range and no gap in the ids. Ranges are [lo, hi). */
#define HSQ_RECOVER_SPAN 4096u
/* ... and moves the next fencing token this far past the recorded one, past
 * any token a lease sent before the lost commit carried. */
#define HSQ_TOKEN_JUMP (1ull << 32)
#define HSQ_RECOVER_RANGES 8

/* The first byte of a key in the per-user trees (users, history,
 * idempotency keys, credits, the erasure ledger): a keyed hash of the user
 * id follows, never the id (queue.c, user_key). A key written before that
 * starts with the id's length, at most HSQ_MAX_USER_LEN. */
#define HSQ_USER_KEY_MARK 0xff

typedef struct {
    uint64_t lo, hi;
} hsq_id_range;

/* Before the first turn. After a crash (no clean mark, and the store has run
 * before) records [next id, next id + HSQ_RECOVER_SPAN) and moves the next
 * id to its end; clears the clean mark; commits. Copies every range not yet
 * recovered (this one and those of earlier starts, HSQ_RECOVER_RANGES at
 * most) to out: *n = 0 when there are none. When the list is already full it
 * recovers at once instead (hsq_queue_recover). Until hsq_queue_recovered,
 * purge requests wait (their reply counts the uploads removed).
 * Errors: HSQ_ESTORE, HSQ_EDISKFULL, -errno of a synchronous walk. */
int hsq_queue_recover_begin(hsq_queue *q, hsq_id_range out[HSQ_RECOVER_RANGES], size_t *n);

/* After the last turn of a clean stop: nothing is in flight, so the next
 * start needs no recovery range. Errors: HSQ_ESTORE, HSQ_EDISKFULL. */
int hsq_queue_mark_clean(hsq_queue *q);

/* 1 while ranges handed out by hsq_queue_recover_begin are not recovered. */
int hsq_queue_recovering(const hsq_queue *q);

/* The free-page scrub after erasures and purges (store.h, hsq_store_scrub):
 * whether one is under way, and the pages zeroed since the queue was
 * loaded. */
void hsq_queue_scrub_state(const hsq_queue *q, int *pending, uint64_t *pages_total);

/* In a turn: a janitor's walk for the ranges handed out ended. rc 0: it
 * removed their uploads and outputs (files of them, bytes). The first
 * report, whatever its rc, ends the wait of purge requests. The ranges are
 * forgotten with the commit of the turn that gets the last walk (final,
 * with rc 0); until then they stay recorded, and a restart walks them
 * again. */
void hsq_queue_recovered(hsq_queue *q, int rc, int final, uint64_t files, uint64_t bytes);

/* The ranges recorded and not yet recovered, read in st's open transaction
 * (hsq fsck counts their uploads as deletions in progress).
 * Errors: HSQ_ESTORE, HSQ_ECORRUPT (a record of the wrong size or with an
 * empty range; hsqd will not start on it: hsq fsck --repair). */
int hsq_recover_ranges(hsq_store *st, hsq_id_range r[HSQ_RECOVER_RANGES], size_t *n);

/* Delete the ranges' record in st's open write transaction (a missing one
 * is no error): once the ranges are recovered, and what fsck's repair does
 * with a corrupt one after its own walk has deleted every upload without a
 * record (the uploads the ranges stood for among them). */
int hsq_recover_forget(hsq_store *st);

/* 1 when key is an upload ("u/<hash>/<id>/in-<n>") or an output
 * ("u/<hash>/<id>/out-...") of a task id in one of the n ranges, else 0. No
 * task of such an id was ever committed; an output there is one a worker
 * wrote for a lease that left before the lost turn's commit
 * (hsq_queue_end_turn). */
int hsq_recover_match(const char *key, const hsq_id_range *r, size_t n);

/* One walk of the blob store b for recovery: stale temp files removed, and
 * the uploads of the n ranges collected, then deleted each with its
 * directory sync (so a count means gone). stop(ud) (stop may be NULL) is
 * asked between two files; when it says so the walk ends with -ECANCELED.
 * Errors: -errno. */
typedef struct {
    uint64_t files;  /* uploads of the ranges deleted */
    uint64_t bytes;  /* their size */
    uint64_t tmp;    /* stale temp files deleted */
    uint64_t walked; /* objects looked at */
} hsq_recover_counts;
int hsq_recover_walk(hsq_blob *b, const hsq_id_range *r, size_t n, int (*stop)(void *ud), void *ud,
                     hsq_recover_counts *out);

/* The same in one call on this thread, for when there is no janitor: walk
 * the tree now, deleting uploads in the recorded ranges and of ids at or above
 * the next id, and temp files of interrupted writes; then forget the ranges.
 * *removed (optional) gets the files deleted. Errors: -errno from the walk,
 * store errors. */
int hsq_queue_recover(hsq_queue *q, uint64_t *removed);

/* Stop handing out leases and taking submits (shutdown): submits answer
 * unavailable. */
void hsq_queue_drain(hsq_queue *q);

/* What the sweeper (continuous and on request) removed since start, and
 * how many submits the rate limits refused. For metrics; no transaction. */
void hsq_queue_sweep_totals(const hsq_queue *q, hsq_sweep_counts *swept,
                            uint64_t *rate_limited);

/* Bytes of inputs and outputs hsqd has recorded in the blob store (what it
 * wrote or was told of, minus what it deleted). For metrics. */
uint64_t hsq_queue_blob_bytes(const hsq_queue *q);

/* Connected workers by backend ("cuda"; everything else counts as cpu). */
void hsq_queue_workers_by_backend(const hsq_queue *q, uint64_t *cpu, uint64_t *cuda);

/* `wait` long-polls parked now, and those refused at max_waits since
 * start. For metrics. */
void hsq_queue_waits(const hsq_queue *q, uint64_t *parked, uint64_t *refused);

/* Snapshot of counters for logs and tests (no transaction needed). */
void hsq_queue_stats(hsq_queue *q, hsq_wire_stats *out);

/* created_ms of the oldest queued task (0 when none), by a bounded scan; in
 * a turn it reads the turn's transaction, else a short read transaction of
 * its own. For metrics: at most about once a second. */
int64_t hsq_queue_oldest_queued_ms(hsq_queue *q);

#endif
