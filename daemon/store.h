/* store.h - the LMDB adapter: hsqd's only durable state.
 *
 * LMDB's caveats, restated for hsq:
 *  - one transaction per thread at a time; this adapter holds at most one
 *    (read or write) and asserts it;
 *  - never use an environment across fork(): child processes are started with
 *    posix_spawn/exec, and workers never open the store;
 *  - no long-lived read transactions: they pin pages and make the file grow;
 *  - every pointer returned from a get or cursor (hsq_bytes views) is valid
 *    only until the transaction ends or the same database is written again;
 *    copy what must survive;
 *  - a failed write transaction is aborted, never retried in place; a
 *    MAP_FULL grows the map (hsq_store_grow) for the next attempt.
 * MDB_* codes never leave store_lmdb.c: not found is HSQ_ENOTFOUND, a full map
 * or disk is HSQ_EDISKFULL, anything else HSQ_ESTORE (the LMDB code and text
 * are kept for the log line in hsq_store_lasterr()).
 */
#ifndef HSQ_DAEMON_STORE_H
#define HSQ_DAEMON_STORE_H

#include "common/buf.h"

#include <stddef.h>
#include <stdint.h>

typedef enum {
    HSQ_DB_META = 0, /* schema version, id/token counters, rounds, counts */
    HSQ_DB_TASKS,    /* u64be id -> task record */
    HSQ_DB_PENDING,  /* u8 prio | u64be round | u64be id -> "" */
    HSQ_DB_DELAYED,  /* u64be not_before | u64be id -> "" */
    HSQ_DB_LEASES,   /* u64be deadline | u64be id -> "" */
    /* Per-user trees are keyed by `ukey` = 0xff | 16-byte keyed BLAKE2b of
     * the user id, never the id (queue.h, HSQ_USER_KEY_MARK: LMDB keeps deleted
     * keys as branch separators). */
    HSQ_DB_USERS,   /* ukey -> user record (with the newest task ids) */
    HSQ_DB_HISTORY, /* ukey | u64be first id -> older task ids, u64be
                       ascending, in chunks (queue.c "per-user history"); an
                       empty value (schema 1) holds just the key's id */
    HSQ_DB_IDEM,    /* ukey | 16-byte keyed hash of the idempotency key -> u64be id */
    HSQ_DB_EXPIRY,  /* u64be expire_at | u64be id | u8 kind -> "" */
    HSQ_DB_INPUTS,  /* u64be id | u8 index -> bytes (small inputs, inline) */
    HSQ_DB_LEDGER,  /* ukey -> u64be requested_at | user id: erasures not yet complete */
    HSQ_DB_AUDIT,   /* u64be at | u64be seq -> one text line, no personal data */
    HSQ_DB_CREDITS, /* ukey -> {int64 balance, int64 reserved} (host order) */
    HSQ_DB_COUNT_
} hsq_db;

typedef enum {
    HSQ_CUR_FIRST,
    HSQ_CUR_LAST,
    HSQ_CUR_NEXT,
    HSQ_CUR_PREV,
    HSQ_CUR_SET_RANGE /* first key >= the given key */
} hsq_cur_op;

typedef struct hsq_store hsq_store;
typedef struct hsq_cursor hsq_cursor;

/* Open (creating) the environment in dir with the given map size in bytes.
 * Runs a stale-reader check. Errors: -errno, HSQ_ESTORE, HSQ_ECORRUPT (schema
 * version newer than this build). Journal mode (below) when dir has one. */
int hsq_store_open(hsq_store **out, const char *dir, uint64_t map_size);

/* Journal mode. A commit appends the transaction's changes (every put and
 * delete, as one record) to a journal file through an O_DSYNC descriptor,
 * and then commits to LMDB without a sync; it returns once the record is on
 * the disk, so what a commit returned is durable as before, for the price
 * of one small sequential write instead of LMDB's scattered pages and two
 * syncs. A thread checkpoints every checkpoint_ms (and when the active
 * journal file is half full): it syncs data.mdb and records LMDB's meta
 * pages for that snapshot, which a reader pins until the next checkpoint
 * is durable. The next open puts data.mdb back on the last checkpoint and
 * replays the journal past it (store_lmdb.c, "journal mode"): after a
 * process crash or a power cut alike, the store holds every commit that
 * returned, plus at most the one in progress.
 *
 * The files: <dir>/checkpoint (also the lock: one process owns the
 * journal; another that opens the store meanwhile gets read transactions
 * only, and a write begin answers HSQ_EUNAVAIL) and <dir>/journal-0,
 * journal-1 (journal_bytes each, zero-filled when created). A dir that has
 * a checkpoint is opened in journal mode whatever opts say. */
#define HSQ_STORE_JOURNAL_DEFAULT (32ull << 20)
#define HSQ_STORE_CHECKPOINT_MS 100u
typedef struct {
    uint64_t journal_bytes; /* each of the two files; 0: no journal (unless dir has one) */
    uint32_t checkpoint_ms; /* 0: HSQ_STORE_CHECKPOINT_MS */
} hsq_store_opts;

int hsq_store_open_opts(hsq_store **out, const char *dir, uint64_t map_size,
                        const hsq_store_opts *o);

/* Close; in journal mode after a last checkpoint, so the next open replays
 * nothing. */
void hsq_store_close(hsq_store **s);

/* Journal mode: checkpoint everything committed, now (no transaction open).
 * Without a journal, nothing to do. Errors: -errno, HSQ_ESTORE. */
int hsq_store_checkpoint(hsq_store *s);

/* Journal mode: the journal files hold every change of the last moments,
 * and older records beyond their tails, an erased user's among them. After
 * this, the next two checkpoints zero the file each one frees, so no byte
 * written before this call is left in either. Pending until then. */
void hsq_store_forget(hsq_store *s);
int hsq_store_forget_pending(const hsq_store *s);

/* Journal mode batches: write transactions are children of one LMDB
 * transaction that is committed (without a sync) every 20 ms (checkpoint_ms
 * if shorter), or 2 ms after the last commit, at the next hsq_store_begin or
 * hsq_store_maintain; so a page that many turns change is written once per
 * batch, not once per turn. A checkpoint begins right after a batch commit
 * once checkpoint_ms has passed since the last one. Another
 * process reads data.mdb as of the last batch. Milliseconds until the open
 * batch is due (UINT32_MAX: none open): the caller's loop should begin a
 * transaction by then. */
uint32_t hsq_store_flush_in_ms(const hsq_store *s);

/* Journal mode: 0 while data.mdb has room allocated ahead for the pages
 * of what is acknowledged now (LMDB writes them later, at the batch
 * commit), else HSQ_EDISKFULL (lasterr says why): the caller refuses new
 * data, and deletions go on in the room kept. A commit itself is refused
 * only when much less is left. 0 without a journal. */
int hsq_store_room(hsq_store *s);

/* Journal mode: whether, at the last look, under half that room was left
 * and the file could get no more (the disk is full). Batches and
 * checkpoints then come every turn; callers should keep turns small. */
int hsq_store_room_low(const hsq_store *s);

/* Journal mode, outside a transaction: commit the open batch if it is due
 * within a few milliseconds, and begin a checkpoint when one is due. For a
 * loop to call right after a turn's replies are sent, so the batch's page
 * writes do not come first in the next turn. No-op without a journal. */
void hsq_store_maintain(hsq_store *s);

/* For tests: the clock (monotonic microseconds) that the batch and
 * checkpoint intervals are measured by; NULL: CLOCK_MONOTONIC. */
void hsq_store_set_clock(hsq_store *s, uint64_t (*fn)(void));

/* For tests: fn runs on the checkpoint thread after data.mdb is synced and
 * before the checkpoint is written. */
void hsq_store_set_checkpoint_hook(hsq_store *s, void (*fn)(void *ud), void *ud);

typedef struct {
    int on;        /* journal mode */
    uint64_t lsn;  /* the last record appended */
    uint64_t used; /* bytes in the active file */
    uint64_t size; /* its size */
    uint64_t checkpoints;   /* made since the open */
    uint64_t checkpoint_us; /* how long the last one took (its writes and syncs) */
} hsq_store_jstats;
void hsq_store_journal_stats(const hsq_store *s, hsq_store_jstats *out);

/* Close the environment and open it again, with no transaction open (and
 * no cursor). What it is for: LMDB keeps the buffers of pages it wrote for
 * later transactions and reuses them without clearing them, and copies a
 * page into one without its unused middle, so bytes of deleted records ride
 * along into pages written later. A reopen drops those buffers: pages
 * written after it start from zeroed memory (see queue.c, the rewrite after
 * an erasure). Errors: those of hsq_store_open; the store is then unusable
 * (every transaction fails with HSQ_ESTORE) and the process should exit. */
int hsq_store_reopen(hsq_store *s);

/* Begin a transaction (write unless rdonly). Errors: HSQ_ESTORE. */
int hsq_store_begin(hsq_store *s, int rdonly);
/* Commit durably (default sync flags: data pages and the meta page are
 * flushed before this returns). On error the transaction is aborted.
 * Errors: HSQ_EDISKFULL, HSQ_ESTORE. */
int hsq_store_commit(hsq_store *s);

/* Commit a transaction whose changes nobody was promised yet (lease grants,
 * heartbeats, worker results): the data pages are flushed but the meta page
 * is not (MDB_NOMETASYNC for this one commit). Integrity holds; a power cut
 * may undo such commits back to the last durable one, which at-least-once
 * delivery already covers (an undone lease or result means the task runs
 * again). The next hsq_store_commit makes them durable too. A process crash
 * loses nothing either way: the pages are in the kernel's cache.
 * Errors: as hsq_store_commit. */
int hsq_store_commit_lazy(hsq_store *s);
void hsq_store_abort(hsq_store *s);
int hsq_store_in_txn(const hsq_store *s);

/* The id of the open write transaction (LMDB's txnid: each commit that
 * changed something takes the next one). */
uint64_t hsq_store_txn_id(const hsq_store *s);

/* Scrub LMDB's free pages: a deleted record leaves its bytes in the pages
 * that held it (and in older copies of them) until LMDB reuses them, so
 * `strings data.mdb` would still find an erased user. Inside the open write
 * transaction (which holds the writer lock, so no other process allocates
 * meanwhile), overwrite with zeros every page of the free list's records
 * keyed by a txnid in [*next, upto] that no snapshot can reach any more:
 * LMDB's own reuse rule, txnid < min(this txn - 1, every reader's
 * snapshot). Zeros go through the data file's descriptor into the page
 * cache, and the transaction's commit syncs them. Whole records, in key
 * order; a step stops before a record that would pass max_pages (unless it
 * is the step's first) and at the first record not yet unreachable.
 * *next advances past what was done; *done is 1 once no record keyed up to
 * `upto` is left. *pages counts the pages written.
 * Errors: HSQ_ESTORE, -errno of a failed write. */
int hsq_store_scrub(hsq_store *s, uint64_t *next, uint64_t upto, size_t max_pages, uint64_t *pages,
                    int *done);

/* Double the map size, up to max_bytes. Only outside a transaction.
 * Errors: HSQ_EDISKFULL (already at max), HSQ_ESTORE. */
int hsq_store_grow(hsq_store *s, uint64_t max_bytes);

/* Values (and cursor keys) are views into LMDB's pages. LMDB keeps them
 * valid only until the next write that touches their page: a write to the
 * same database may move them. The queue core holds views of a task record
 * (user, key, prompt, input names) while it writes other databases and then
 * rewrites the record from them; that is safe only because every database
 * is its own B-tree, so those writes never touch the task's page. Putting
 * several kinds of record in one tree (key prefixes) would break it: tried
 * for fewer pages per commit, and a task's input key was corrupted by the
 * delete of its inline input on the same page. */
int hsq_store_get(hsq_store *s, hsq_db db, const void *k, size_t klen, hsq_bytes *val);
int hsq_store_put(hsq_store *s, hsq_db db, const void *k, size_t klen, const void *v, size_t vlen);
/* Missing key is success. */
int hsq_store_del(hsq_store *s, hsq_db db, const void *k, size_t klen);

/* Cursors live inside the current transaction and are closed by
 * hsq_cursor_close or at commit/abort (whichever first). */
int hsq_cursor_open(hsq_store *s, hsq_db db, hsq_cursor **out);
/* For SET_RANGE pass the key in *key; returns HSQ_ENOTFOUND at the end. */
int hsq_cursor_get(hsq_cursor *c, hsq_cur_op op, hsq_bytes *key, hsq_bytes *val);
/* Delete the entry under the cursor. */
int hsq_cursor_del(hsq_cursor *c);
void hsq_cursor_close(hsq_cursor **c);

/* Number of entries in db (current transaction). */
int hsq_store_count(hsq_store *s, hsq_db db, uint64_t *n);

/* Bytes of the map in use and the map size. */
void hsq_store_usage(hsq_store *s, uint64_t *used, uint64_t *mapsize);

/* The last LMDB error as text, for the log line. */
const char *hsq_store_lasterr(const hsq_store *s);

/* Big-endian key helpers. */
static inline void hsq_be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline uint64_t hsq_rd_be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

#endif
