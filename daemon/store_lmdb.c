#include "daemon/store.h"

#include "common/alloc.h"
#include "common/fileio.h"
#include "common/le.h"
#include "daemon/journal.h"
#include "schemas/err.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define SCHEMA_VERSION 1

static const char *const db_names[HSQ_DB_COUNT_] = {
    "meta",   "tasks", "pending", "delayed", "leases", "users",
    "history", "idem", "expiry",  "inputs",  "ledger", "audit",
    "credits",
};

enum { CK_IDLE, CK_QUEUED, CK_DONE };

struct hsq_store {
    MDB_env *env; /* NULL after a reopen that failed: every call then fails */
    char *dir;
    MDB_txn *txn;
    MDB_dbi dbi[HSQ_DB_COUNT_];
    uint64_t map_size;
    char lasterr[160];

    /* Journal mode (store.h); lock_fd < 0 and the rest zero without it. */
    int lock_fd;  /* the checkpoint file, flock'd for the process's life */
    int shared;   /* another process holds the journal: reads only */
    int data_fd;  /* LMDB's own descriptor of data.mdb */
    size_t psize; /* LMDB's page size */
    hsq_journal *jr[2];
    int jcur;      /* the file appends go to */
    uint64_t lsn;  /* the last lsn appended */
    uint8_t *redo; /* the open transaction's changes, as one record */
    size_t redo_len, redo_cap;
    int dirty;     /* changed since the last checkpoint began */
    int broken;    /* a change was acknowledged that LMDB then refused */
    MDB_txn *ptxn; /* the batch: each write transaction is a child of it */
    uint64_t p_began_us, last_commit_us;
    uint64_t plsn; /* the last lsn the committed batches hold */
    uint32_t ck_ms;
    uint64_t ck_began_us;
    MDB_txn *pin; /* a reader on the last durable checkpoint's snapshot */
    int forget;   /* journal files still to wipe (hsq_store_forget) */
    void (*ck_hook)(void *ud);
    void *ck_hook_ud;
    uint64_t (*clock_us)(void); /* hsq_store_set_clock */
    uint64_t room;              /* data.mdb is allocated up to here (keep_room); 0: not yet */
    int room_low;               /* under half the room, and no more to be had */

    /* The checkpoint in flight: the loop's thread fills these, sets CK_QUEUED
     * and leaves them alone until the checkpoint thread sets CK_DONE. */
    pthread_t thr;
    int thr_on;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ck_state, ck_stop, ck_rc; /* under mu */
    uint64_t ck_run_us;           /* under mu: how long the last one took */
    uint64_t ck_done, ck_last_us; /* the loop's: checkpoints made, the last one's time */
    int ck_busy, ck_retry;        /* the loop's own: posted and not reaped; post again */
    MDB_txn *ck_pin;
    uint64_t ck_lsn, ck_seq;
    int ck_clean;
    uint8_t *ck_meta; /* LMDB's two meta pages, as they were at ck_lsn */
    hsq_journal *ck_wipe;
};

struct hsq_cursor {
    MDB_cursor *c;
    hsq_store *s;
    hsq_db db;
};

/* Translate once, keeping the original text for the log. */
static int xlate(hsq_store *s, int rc, const char *what) {
    if (rc == 0)
        return 0;
    if (rc == MDB_NOTFOUND)
        return HSQ_ENOTFOUND;
    snprintf(s->lasterr, sizeof s->lasterr, "%s: %s (%d)", what, mdb_strerror(rc), rc);
    if (rc == MDB_MAP_FULL || rc == ENOSPC || rc == EDQUOT)
        return HSQ_EDISKFULL;
    return HSQ_ESTORE;
}

static int journal_on(const hsq_store *s) {
    return s->lock_fd >= 0;
}

/* Create and open s->env on dir with s->map_size, open every database and
 * check the schema. On failure s->env is NULL. */
static int env_open(hsq_store *s, const char *dir) {
    int rc = mdb_env_create(&s->env);
    if (rc != 0) {
        s->env = NULL;
        return xlate(s, rc, "mdb_env_create");
    }
    rc = mdb_env_set_maxdbs(s->env, HSQ_DB_COUNT_);
    if (rc == 0)
        rc = mdb_env_set_mapsize(s->env, s->map_size);
    /* An acknowledged submit must survive a power cut: without a journal
     * LMDB's default sync flags see to it; in journal mode the journal
     * makes a commit durable and checkpoints sync data.mdb (store.h), so
     * LMDB's own commits do not sync. MDB_NOTLS: the scrub and the
     * checkpoint's pin hold read txns beside the loop's write txn. */
    unsigned flags = MDB_NOTLS | (journal_on(s) ? MDB_NOSYNC : 0);
    if (rc == 0)
        rc = mdb_env_open(s->env, dir, flags, 0600);
    if (rc != 0) {
        int e = xlate(s, rc, "mdb_env_open");
        if (rc > 0 && rc < 1000 && e == HSQ_ESTORE)
            e = -rc;
        mdb_env_close(s->env);
        s->env = NULL;
        return e;
    }
    int dead = 0;
    mdb_reader_check(s->env, &dead);

    MDB_txn *txn;
    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    for (int i = 0; rc == 0 && i < HSQ_DB_COUNT_; i++)
        rc = mdb_dbi_open(txn, db_names[i], MDB_CREATE, &s->dbi[i]);
    int ret = 0;
    if (rc == 0) {
        MDB_val k = {6, "schema"}, v;
        rc = mdb_get(txn, s->dbi[HSQ_DB_META], &k, &v);
        if (rc == MDB_NOTFOUND) {
            uint32_t ver = SCHEMA_VERSION;
            v.mv_size = sizeof ver;
            v.mv_data = &ver;
            rc = mdb_put(txn, s->dbi[HSQ_DB_META], &k, &v, 0);
        } else if (rc == 0) {
            uint32_t ver = 0;
            if (v.mv_size == sizeof ver)
                memcpy(&ver, v.mv_data, sizeof ver);
            if (ver == 0 || ver > SCHEMA_VERSION)
                ret = HSQ_ECORRUPT;
        }
    }
    if (rc == 0 && ret == 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc != 0 || ret != 0) {
        if (ret == 0)
            ret = xlate(s, rc, "open dbs");
        mdb_env_close(s->env);
        s->env = NULL;
        return ret;
    }
    return 0;
}

/* ---- journal mode: the journal, the checkpoints, the recovery ----
 *
 * Files beside data.mdb: `checkpoint` (two slots, written in turn, each a
 * CRC'd header and LMDB's two meta pages as they were at a checkpoint's
 * lsn; the file is also flock'd by the process that owns the journal) and
 * `journal-0`, `journal-1` (journal.h), which take turns: when a checkpoint
 * begins, appends move to the other file, and the file left behind is free
 * once that checkpoint is durable.
 *
 * Why LMDB's meta pages. Commits run with MDB_NOSYNC, so after a power cut
 * data.mdb may hold a meta page whose tree pages never reached the disk.
 * What the checkpoint makes durable is one snapshot: its pages were synced
 * (the thread's fdatasync after the copy), and a reader pins it until the
 * next checkpoint is durable, so LMDB reuses none of its pages meanwhile
 * (LMDB's rule: pages freed after the oldest reader's snapshot stay). Writing
 * the saved meta pages back at the next open puts data.mdb back on exactly
 * that snapshot, and the journal's records after its lsn are applied again,
 * one transaction each, as they were first committed. A process crash takes
 * the same path, so every crash test exercises it. */

#define CK_NAME "checkpoint"
#define CK_MAGIC 0x43515348u /* "HSQC" read as a little-endian u32 */
#define CK_HEAD 64u
#define REDO_PUT 1
#define REDO_DEL 2
#define REDO_HEAD 10u /* u8 op | u8 db | u32 key length | u32 value length */

typedef struct {
    uint64_t seq, lsn;
    uint32_t psize;
    int clean;
    uint8_t *meta; /* 2 * psize bytes, owned */
} ck_rec;

static uint64_t mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The loop's clock for the batch and checkpoint intervals (tests set it). */
static uint64_t now_us(const hsq_store *s) {
    return s->clock_us ? s->clock_us() : mono_us();
}

/* Slot i is at i * CK_SLOT whatever the page size (LMDB's is at most 64
 * KiB), so either can be read without the other. */
#define CK_SLOT (CK_HEAD + 2 * 65536u)

static size_t ck_len(uint32_t psize) {
    return CK_HEAD + 2 * (size_t)psize;
}

static uint32_t ck_crc(const uint8_t *slot, uint32_t psize) {
    uint32_t crc = (uint32_t)crc32(0, slot, 32);
    return (uint32_t)crc32(crc, slot + CK_HEAD, (uInt)(2 * psize));
}

/* Write checkpoint slot seq % 2 and sync it. */
static int ck_write(int fd, uint32_t psize, uint64_t seq, uint64_t lsn, int clean,
                    const uint8_t *meta) {
    size_t n = ck_len(psize);
    uint8_t *b = hsq_xcalloc(1, n);
    hsq_le32(b, CK_MAGIC);
    hsq_le32(b + 4, 1);
    hsq_le64(b + 8, seq);
    hsq_le64(b + 16, lsn);
    hsq_le32(b + 24, psize);
    hsq_le32(b + 28, clean ? 1 : 0);
    memcpy(b + CK_HEAD, meta, 2 * (size_t)psize);
    hsq_le32(b + 32, ck_crc(b, psize));
    int rc = hsq_pwrite_all(fd, b, n, (seq & 1) * CK_SLOT);
    if (rc == 0 && fdatasync(fd) != 0)
        rc = -errno;
    free(b);
    return rc;
}

/* The newer whole slot: 0 and *out filled, HSQ_ENOTFOUND when the file is
 * empty (new), HSQ_ECORRUPT when it has bytes but no whole slot. */
static int ck_read(int fd, ck_rec *out) {
    memset(out, 0, sizeof *out);
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    if (st.st_size == 0)
        return HSQ_ENOTFOUND;
    uint8_t *b = hsq_xmalloc(CK_SLOT);
    int found = 0;
    for (int i = 0; i < 2; i++) {
        if (hsq_pread_all(fd, b, CK_HEAD, (uint64_t)i * CK_SLOT) != 0 || hsq_rd_le32(b) != CK_MAGIC)
            continue;
        uint32_t psize = hsq_rd_le32(b + 24);
        if (psize < 512 || psize > 65536 || (psize & (psize - 1)) ||
            hsq_pread_all(fd, b, ck_len(psize), (uint64_t)i * CK_SLOT) != 0 ||
            hsq_rd_le32(b + 32) != ck_crc(b, psize))
            continue;
        uint64_t seq = hsq_rd_le64(b + 8);
        if (found && seq <= out->seq)
            continue;
        found = 1;
        out->seq = seq;
        out->lsn = hsq_rd_le64(b + 16);
        out->psize = psize;
        out->clean = hsq_rd_le32(b + 28) != 0;
        free(out->meta);
        out->meta = hsq_xmalloc(2 * (size_t)psize);
        memcpy(out->meta, b + CK_HEAD, 2 * (size_t)psize);
    }
    free(b);
    return found ? 0 : HSQ_ECORRUPT;
}

/* Write data.mdb's dirty pages back a chunk at a time, each waited for
 * before the next is started: the disk's queue then holds at most a chunk
 * of checkpoint pages ahead of a journal append, instead of a whole
 * batch's (a purge dirties megabytes in 100 ms, and one fdatasync of them
 * held the appends of that time behind it). The fdatasync after finds
 * little left to write. */
#define CK_CHUNK (256u << 10)

static int ck_writeback(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    for (off_t off = 0; off < st.st_size; off += CK_CHUNK)
        if (sync_file_range(fd, off, CK_CHUNK,
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                SYNC_FILE_RANGE_WAIT_AFTER) != 0)
            return -errno;
    return 0;
}

/* The checkpoint thread: sync data.mdb (every page of the pinned snapshot,
 * and whatever came after), then write the checkpoint, then wipe the file
 * the loop left if asked to. */
static int ck_run(hsq_store *s) {
    int rc = ck_writeback(s->data_fd);
    if (rc == 0 && fdatasync(s->data_fd) != 0)
        rc = -errno;
    if (rc == 0 && s->ck_hook)
        s->ck_hook(s->ck_hook_ud);
    if (rc == 0)
        rc =
            ck_write(s->lock_fd, (uint32_t)s->psize, s->ck_seq, s->ck_lsn, s->ck_clean, s->ck_meta);
    if (rc == 0 && s->ck_wipe)
        rc = hsq_journal_wipe(s->ck_wipe);
    return rc;
}

static void *ck_main(void *arg) {
    hsq_store *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->ck_state != CK_QUEUED && !s->ck_stop)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->ck_state != CK_QUEUED)
            break;
        pthread_mutex_unlock(&s->mu);
        uint64_t t0 = mono_us();
        int rc = ck_run(s);
        uint64_t took = mono_us() - t0;
        pthread_mutex_lock(&s->mu);
        s->ck_run_us = took;
        s->ck_rc = rc;
        s->ck_state = CK_DONE;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void ck_post(hsq_store *s) {
    s->ck_busy = 1;
    pthread_mutex_lock(&s->mu);
    s->ck_state = CK_QUEUED;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Begin a checkpoint of what is committed now (s->lsn). This thread is the
 * only writer, so between its commits the meta pages it reads are the
 * snapshot the new reader pins. Appends move to the other file. */
static int ck_begin(hsq_store *s, int clean) {
    assert(!s->ck_busy && !s->ck_retry && !s->ck_pin && !s->ptxn);
    MDB_txn *pin;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &pin);
    if (rc != 0)
        return xlate(s, rc, "mdb_txn_begin(checkpoint)");
    if ((rc = hsq_pread_all(s->data_fd, s->ck_meta, 2 * s->psize, 0)) != 0) {
        mdb_txn_abort(pin);
        snprintf(s->lasterr, sizeof s->lasterr, "checkpoint: reading the meta pages: %s",
                 hsq_strerror(rc));
        return rc;
    }
    s->ck_pin = pin;
    s->ck_lsn = s->lsn;
    s->ck_seq++;
    s->ck_clean = clean;
    s->ck_wipe = s->forget > 0 ? s->jr[s->jcur] : NULL;
    s->jcur ^= 1;
    hsq_journal_restart(s->jr[s->jcur], s->lsn + 1);
    s->dirty = 0;
    s->ck_began_us = now_us(s);
    ck_post(s);
    return 0;
}

/* Take the result of a checkpoint the thread finished (wait: for the one in
 * flight). A durable one moves the pin to its snapshot and frees the file
 * it covers; a failed one is posted again later, pin and all. Returns the
 * finished checkpoint's error, 0 when none finished. */
static int ck_reap(hsq_store *s, int wait) {
    if (!s->ck_busy)
        return 0;
    pthread_mutex_lock(&s->mu);
    while (wait && s->ck_state == CK_QUEUED)
        pthread_cond_wait(&s->cv, &s->mu);
    int st = s->ck_state, rc = s->ck_rc;
    uint64_t took = s->ck_run_us;
    if (st == CK_DONE)
        s->ck_state = CK_IDLE;
    pthread_mutex_unlock(&s->mu);
    if (st != CK_DONE)
        return 0;
    s->ck_busy = 0;
    if (rc != 0) {
        s->ck_retry = 1;
        snprintf(s->lasterr, sizeof s->lasterr, "checkpoint: %s", hsq_strerror(rc));
        return rc;
    }
    s->ck_retry = 0;
    s->ck_done++;
    s->ck_last_us = took;
    if (s->pin)
        mdb_txn_abort(s->pin);
    s->pin = s->ck_pin;
    s->ck_pin = NULL;
    hsq_journal_restart(s->jr[s->jcur ^ 1], s->lsn + 1);
    if (s->ck_wipe) {
        s->ck_wipe = NULL;
        s->forget--;
    }
    return 0;
}

/* The changes acknowledged but not yet in LMDB are in the journal only:
 * if LMDB refuses them, every later transaction fails (HSQ_ESTORE) and the
 * next open replays them. */
static void set_broken(hsq_store *s, const char *why, const char *detail) {
    s->broken = 1;
    snprintf(s->lasterr, sizeof s->lasterr, "%s: %s; reopen the store (the journal has them)", why,
             detail);
}

/* What a caller of commit hears of an error from the journal or a
 * checkpoint (-errno or an HSQ_E code). */
static int store_code(int rc) {
    return rc == HSQ_EDISKFULL || rc == -ENOSPC || rc == -EDQUOT ? HSQ_EDISKFULL : HSQ_ESTORE;
}

static int redo_apply(void *ud, uint64_t lsn, const void *p, size_t n);

/* Commit the batch: the write transactions since it began reach data.mdb,
 * without a sync (the journal holds them until a checkpoint does). */
static int batch_flush(hsq_store *s) {
    assert(!s->txn);
    if (!s->ptxn)
        return 0;
    int rc = mdb_txn_commit(s->ptxn);
    s->ptxn = NULL;
    while (rc == MDB_MAP_FULL) {
        /* The commit's own pages (the free list) did not fit, and the
         * batch is gone. Its turns were acknowledged: grow the map and
         * apply them again from the journal, where all of them are, in the
         * active file (a file switch only comes right after a batch). */
        s->map_size *= 2;
        rc = mdb_env_set_mapsize(s->env, s->map_size);
        if (rc == 0) {
            uint64_t upto = s->lsn;
            s->lsn = s->plsn;
            int e = hsq_journal_scan(s->jr[s->jcur], s->plsn, redo_apply, s);
            if (e == 0 && s->lsn != upto)
                e = HSQ_ECORRUPT;
            if (e != 0) {
                s->lsn = upto;
                set_broken(s, "applying a batch again after a full map", hsq_strerror(e));
                return e;
            }
        }
    }
    if (rc != 0) {
        int e = xlate(s, rc, "mdb_txn_commit(batch)");
        set_broken(s, "committing a batch", mdb_strerror(rc));
        return e;
    }
    s->plsn = s->lsn;
    s->dirty = 1;
    return 0;
}

/* How long a batch stays open: at most the checkpoint interval, and a
 * moment once nothing is committed (so an idle store is soon whole in
 * data.mdb for other readers). When the open batch is due (monotonic us).
 * `early` moves the interval's end that much sooner (hsq_store_maintain). */
#define BATCH_IDLE_US 2000u
#define BATCH_MAX_US 20000u

static uint64_t batch_due_us(const hsq_store *s, uint64_t early) {
    uint64_t span = (uint64_t)s->ck_ms * 1000u;
    uint64_t at = s->p_began_us + (span < BATCH_MAX_US ? span : BATCH_MAX_US);
    at = at > early ? at - early : 0;
    return s->last_commit_us + BATCH_IDLE_US < at ? s->last_commit_us + BATCH_IDLE_US : at;
}

/* Outside a transaction: take a finished checkpoint; commit the batch when
 * it is time, and begin a checkpoint right after (the only moment the meta
 * pages and the last lsn describe the same snapshot). A journal file more
 * than half full forces both, waiting for the checkpoint in flight if need
 * be: a record of up to a quarter of a file then always fits. `early` as
 * for batch_due_us, and for the checkpoint's own interval. Errors stay in
 * lasterr; the journal still holds everything. */
static void ck_tick(hsq_store *s, uint64_t early) {
    ck_reap(s, 0);
    uint64_t now = now_us(s);
    hsq_journal *j = s->jr[s->jcur];
    int full = hsq_journal_used(j) > hsq_journal_size(j) / 2;
    /* (With little room left, a checkpoint as often as it can: the pages
     * that turns free are reused only once one covers them.) */
    int due = now + early - s->ck_began_us >= (uint64_t)s->ck_ms * 1000u || s->room_low;
    if (full && s->ck_busy)
        ck_reap(s, 1);
    if (s->ck_retry) {
        if (!s->ck_busy && (due || full)) {
            s->ck_began_us = now;
            ck_post(s);
        }
        return;
    }
    /* With little room left, the last page (keep_room's measure) must not
     * lag behind a batch's growth: a batch per turn. */
    if (s->ptxn && (full || s->forget > 0 || s->room_low || now >= batch_due_us(s, early)) &&
        batch_flush(s) != 0)
        return;
    if (!s->ck_busy && !s->ptxn && ((s->dirty && (due || full)) || s->forget > 0))
        ck_begin(s, 0);
}

/* A checkpoint of everything committed, before this returns. */
static int ck_sync(hsq_store *s, int clean) {
    int rc = batch_flush(s);
    if (rc != 0)
        return rc;
    rc = ck_reap(s, 1);
    if (s->ck_retry) {
        ck_post(s);
        if ((rc = ck_reap(s, 1)) != 0)
            return rc;
    }
    if ((rc = ck_begin(s, clean)) != 0)
        return rc;
    return ck_reap(s, 1);
}

/* Apply one journal record in its own transaction (so txnids go as they
 * went the first time). A full map grows; nothing else may fail. */
static int redo_apply(void *ud, uint64_t lsn, const void *p, size_t n) {
    hsq_store *s = ud;
    for (;;) {
        MDB_txn *t;
        int rc = mdb_txn_begin(s->env, NULL, 0, &t);
        if (rc != 0)
            return xlate(s, rc, "mdb_txn_begin(replay)");
        const uint8_t *b = p, *end = b + n;
        while (rc == 0 && b < end) {
            if ((size_t)(end - b) < REDO_HEAD) {
                rc = MDB_CORRUPTED;
                break;
            }
            uint8_t op = b[0], db = b[1];
            uint32_t kl = hsq_rd_le32(b + 2), vl = hsq_rd_le32(b + 6);
            b += REDO_HEAD;
            if (db >= HSQ_DB_COUNT_ || (op != REDO_PUT && op != REDO_DEL) ||
                (uint64_t)(end - b) < (uint64_t)kl + vl) {
                rc = MDB_CORRUPTED;
                break;
            }
            MDB_val k = {kl, (void *)b}, v = {vl, (void *)(b + kl)};
            if (op == REDO_PUT)
                rc = mdb_put(t, s->dbi[db], &k, &v, 0);
            else if ((rc = mdb_del(t, s->dbi[db], &k, NULL)) == MDB_NOTFOUND)
                rc = 0;
            b += kl + vl;
        }
        if (rc == 0)
            rc = mdb_txn_commit(t);
        else
            mdb_txn_abort(t);
        if (rc == MDB_MAP_FULL) {
            /* The map grew after the checkpoint: grow it again. */
            s->map_size *= 2;
            if ((rc = mdb_env_set_mapsize(s->env, s->map_size)) == 0)
                continue;
        }
        if (rc == MDB_CORRUPTED) {
            snprintf(s->lasterr, sizeof s->lasterr, "journal record %" PRIu64 " does not parse",
                     lsn);
            return HSQ_ECORRUPT;
        }
        if (rc != 0)
            return xlate(s, rc, "replay");
        s->lsn = lsn;
        return 0;
    }
}

/* Zero every free page no snapshot reaches, and cut data.mdb after its last
 * page: a crashed run's pages past the checkpoint may hold records that
 * were deleted again in the part replayed (an erasure's). */
static int recover_clean(hsq_store *s) {
    int rc = mdb_txn_begin(s->env, NULL, 0, &s->txn);
    if (rc != 0) {
        s->txn = NULL;
        return xlate(s, rc, "mdb_txn_begin(recovery scrub)");
    }
    uint64_t next = 0, pages = 0;
    int done = 0;
    rc = hsq_store_scrub(s, &next, (uint64_t)mdb_txn_id(s->txn), SIZE_MAX, &pages, &done);
    if (rc == 0)
        rc = xlate(s, mdb_txn_commit(s->txn), "mdb_txn_commit(recovery scrub)");
    else
        mdb_txn_abort(s->txn);
    s->txn = NULL;
    if (rc != 0)
        return rc;
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    if (ftruncate(s->data_fd, (off_t)((info.me_last_pgno + 1) * s->psize)) != 0)
        return -errno;
    s->room = 0; /* (the cut freed the room too) */
    return 0;
}

/* Open the journal files and apply what they hold past the checkpoint. The
 * file whose first record is older goes first. */
static int recover(hsq_store *s, const char *dir, uint64_t jbytes, const ck_rec *ck,
                   int *replayed) {
    char path[PATH_MAX];
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/journal-%d", dir, i);
        if (!ck)
            unlink(path); /* no checkpoint: nothing in it can be placed */
        struct stat st;
        uint64_t size = jbytes;
        if (stat(path, &st) == 0 && (uint64_t)st.st_size > size)
            size = (uint64_t)st.st_size;
        int rc = hsq_journal_open(&s->jr[i], path, size);
        if (rc != 0) {
            snprintf(s->lasterr, sizeof s->lasterr, "journal %.100s: %s", path, hsq_strerror(rc));
            return rc;
        }
    }
    uint64_t f[2] = {0, 0};
    int have0 = hsq_journal_first_lsn(s->jr[0], &f[0]) == 0;
    int have1 = hsq_journal_first_lsn(s->jr[1], &f[1]) == 0;
    int first = have0 && have1 ? f[1] < f[0] : have1;
    s->lsn = ck ? ck->lsn : 0;
    uint64_t from = s->lsn;
    int rc = hsq_journal_replay(s->jr[first], s->lsn, redo_apply, s);
    if (rc == 0)
        rc = hsq_journal_replay(s->jr[!first], s->lsn, redo_apply, s);
    if (rc == HSQ_ECORRUPT && !s->lasterr[0])
        snprintf(s->lasterr, sizeof s->lasterr,
                 "journal: records after lsn %" PRIu64 " are missing", s->lsn);
    *replayed = (int)(s->lsn - from > INT_MAX ? INT_MAX : s->lsn - from);
    return rc;
}

static void journal_free(hsq_store *s) {
    if (s->thr_on) {
        pthread_mutex_lock(&s->mu);
        s->ck_stop = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thr, NULL);
        s->thr_on = 0;
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
    }
    if (s->ptxn)
        mdb_txn_abort(s->ptxn); /* (a failed last checkpoint: the journal has it) */
    s->ptxn = NULL;
    if (s->ck_pin)
        mdb_txn_abort(s->ck_pin);
    if (s->pin)
        mdb_txn_abort(s->pin);
    s->ck_pin = s->pin = NULL;
    hsq_journal_close(&s->jr[0]);
    hsq_journal_close(&s->jr[1]);
    free(s->ck_meta);
    free(s->redo);
    s->ck_meta = s->redo = NULL;
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* the flock goes with it */
    s->lock_fd = -1;
}

/* Whether neither journal file holds a record at its start. */
static int journals_empty(const char *dir) {
    char path[PATH_MAX];
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/journal-%d", dir, i);
        struct stat st;
        hsq_journal *j = NULL;
        uint64_t lsn;
        if (stat(path, &st) != 0)
            continue;
        if (hsq_journal_open(&j, path, (uint64_t)st.st_size) != 0)
            return 0;
        int rc = hsq_journal_first_lsn(j, &lsn);
        hsq_journal_close(&j);
        if (rc != HSQ_ENOTFOUND)
            return 0;
    }
    return 1;
}

/* Journal mode's open: lock, put data.mdb back on the checkpoint, open,
 * replay, clean up after a crash, checkpoint. */
static int journal_open(hsq_store *s, const char *dir, const hsq_store_opts *o) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/" CK_NAME, dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        if (e != EWOULDBLOCK)
            return -e;
        s->shared = 1; /* hsqd has it: read what it committed, change nothing */
        return env_open(s, dir);
    }
    s->lock_fd = fd;
    ck_rec ck;
    int rc = ck_read(fd, &ck);
    int have = rc == 0;
    if (rc == HSQ_ENOTFOUND || (rc == HSQ_ECORRUPT && journals_empty(dir)))
        rc = 0; /* a new store (or one whose first checkpoint was torn: then
                   nothing was ever journaled, so nothing acknowledged) */
    else if (rc != 0)
        snprintf(s->lasterr, sizeof s->lasterr, "%.100s: no whole checkpoint in it", path);
    /* Both slots' blocks now, so that a checkpoint never needs new ones
     * (on a full disk its slot write would fail, and with it every
     * checkpoint: nothing freed could be reused). */
    if (rc == 0 && fallocate(fd, 0, 0, 2 * (off_t)CK_SLOT) != 0 && errno != EOPNOTSUPP &&
        errno != ENOSYS)
        rc = -errno;
    /* After a clean close data.mdb is whole as it is, and may be newer than
     * the checkpoint: LMDB's own tools (mdb_load) commit with their syncs. */
    if (rc == 0 && have && !ck.clean) {
        snprintf(path, sizeof path, "%s/data.mdb", dir);
        int dfd = open(path, O_RDWR | O_CLOEXEC);
        if (dfd < 0) {
            rc = errno == ENOENT ? HSQ_ECORRUPT : -errno;
            snprintf(s->lasterr, sizeof s->lasterr, "%.100s: %s (a checkpoint names it)", path,
                     strerror(errno));
        } else {
            rc = hsq_pwrite_all(dfd, ck.meta, 2 * (size_t)ck.psize, 0);
            if (rc == 0 && fdatasync(dfd) != 0)
                rc = -errno;
            close(dfd);
        }
    }
    if (rc == 0)
        rc = env_open(s, dir);
    MDB_stat st;
    if (rc == 0 && (rc = xlate(s, mdb_env_get_fd(s->env, &s->data_fd), "mdb_env_get_fd")) == 0 &&
        (rc = xlate(s, mdb_env_stat(s->env, &st), "mdb_env_stat")) == 0) {
        s->psize = st.ms_psize;
        if (have && ck.psize != st.ms_psize)
            rc = HSQ_ECORRUPT;
    }
    int replayed = 0;
    if (rc == 0)
        rc = recover(s, dir, o && o->journal_bytes ? o->journal_bytes : HSQ_STORE_JOURNAL_DEFAULT,
                     have ? &ck : NULL, &replayed);
    s->plsn = s->lsn; /* every record replayed is committed */
    if (rc == 0 && have && (replayed > 0 || !ck.clean))
        rc = recover_clean(s);
    free(ck.meta);
    if (rc != 0)
        return rc;
    s->ck_ms = o && o->checkpoint_ms ? o->checkpoint_ms : HSQ_STORE_CHECKPOINT_MS;
    s->ck_seq = have ? ck.seq : 0;
    s->ck_meta = hsq_xmalloc(2 * s->psize);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if ((rc = pthread_create(&s->thr, NULL, ck_main, s)) != 0) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        return -rc;
    }
    s->thr_on = 1;
    return ck_sync(s, 0);
}

int hsq_store_open_opts(hsq_store **out, const char *dir, uint64_t map_size,
                        const hsq_store_opts *o) {
    *out = NULL;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -errno;
    hsq_store *s = hsq_xcalloc(1, sizeof *s);
    s->map_size = map_size;
    s->lock_fd = -1;
    s->data_fd = -1;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/" CK_NAME, dir);
    int rc;
    if ((o && o->journal_bytes) || access(path, F_OK) == 0)
        rc = journal_open(s, dir, o);
    else
        rc = env_open(s, dir);
    if (rc != 0) {
        journal_free(s);
        if (s->env)
            mdb_env_close(s->env);
        free(s);
        return rc;
    }
    s->dir = hsq_xstrndup(dir, strlen(dir));
    *out = s;
    return 0;
}

int hsq_store_open(hsq_store **out, const char *dir, uint64_t map_size) {
    return hsq_store_open_opts(out, dir, map_size, NULL);
}

int hsq_store_reopen(hsq_store *s) {
    assert(!s->txn);
    if (s->env) {
        if (journal_on(s)) {
            /* Everything durable first: the pin must go with the env. */
            int rc = ck_sync(s, 0);
            if (rc != 0)
                return rc;
            mdb_txn_abort(s->pin);
            s->pin = NULL;
        }
        /* The map may have grown since the open (another process, or us). */
        MDB_envinfo info;
        if (mdb_env_info(s->env, &info) == 0 && info.me_mapsize > s->map_size)
            s->map_size = info.me_mapsize;
        mdb_env_close(s->env);
        s->env = NULL;
    }
    int rc = env_open(s, s->dir);
    if (rc == 0 && journal_on(s)) {
        /* The checkpoint's snapshot is the newest one: pin it again. */
        /* (data.mdb is the same file, its room with it: the lock keeps
         * every other writer out.) */
        rc = xlate(s, mdb_env_get_fd(s->env, &s->data_fd), "mdb_env_get_fd");
        if (rc == 0)
            rc = xlate(s, mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->pin), "mdb_txn_begin(pin)");
        if (rc != 0) {
            mdb_env_close(s->env);
            s->env = NULL;
        }
    }
    return rc;
}

void hsq_store_close(hsq_store **sp) {
    hsq_store *s = *sp;
    if (!s)
        return;
    if (s->txn)
        mdb_txn_abort(s->txn);
    s->txn = NULL;
    if (s->env && journal_on(s))
        ck_sync(s, 1); /* a failure leaves the journal to replay */
    journal_free(s);
    if (s->env)
        mdb_env_close(s->env);
    free(s->dir);
    free(s);
    *sp = NULL;
}

int hsq_store_checkpoint(hsq_store *s) {
    assert(!s->txn);
    if (!journal_on(s) || !s->env)
        return 0;
    return ck_sync(s, 0);
}

void hsq_store_forget(hsq_store *s) {
    if (journal_on(s))
        s->forget = 2;
}

int hsq_store_forget_pending(const hsq_store *s) {
    return s->forget > 0;
}

void hsq_store_set_clock(hsq_store *s, uint64_t (*fn)(void)) {
    s->clock_us = fn;
}

void hsq_store_set_checkpoint_hook(hsq_store *s, void (*fn)(void *ud), void *ud) {
    s->ck_hook = fn;
    s->ck_hook_ud = ud;
}

/* A batch committed at the next begin delays that turn's requests by the
 * commit's page writes (about a millisecond at 1,000 submits/s); committed
 * here, right after a turn's replies went, it delays none that are already
 * in. So one due this soon goes now. */
#define BATCH_EARLY_US 3000u

void hsq_store_maintain(hsq_store *s) {
    if (journal_on(s) && !s->txn && !s->broken)
        ck_tick(s, BATCH_EARLY_US);
}

uint32_t hsq_store_flush_in_ms(const hsq_store *s) {
    if (!journal_on(s) || !s->ptxn)
        return UINT32_MAX;
    uint64_t now = now_us(s), at = batch_due_us(s, 0);
    return at <= now ? 0 : (uint32_t)((at - now + 999) / 1000);
}

void hsq_store_journal_stats(const hsq_store *s, hsq_store_jstats *out) {
    memset(out, 0, sizeof *out);
    if (!journal_on(s))
        return;
    out->on = 1;
    out->lsn = s->lsn;
    out->checkpoints = s->ck_done;
    out->checkpoint_us = s->ck_last_us;
    out->used = hsq_journal_used(s->jr[s->jcur]);
    out->size = hsq_journal_size(s->jr[s->jcur]);
}

/* The open write transaction's changes, in the order made. */
static void redo_add(hsq_store *s, uint8_t op, hsq_db db, const void *k, size_t klen, const void *v,
                     size_t vlen) {
    size_t need = s->redo_len + REDO_HEAD + klen + vlen;
    if (need > s->redo_cap) {
        size_t cap = s->redo_cap ? s->redo_cap : 4096;
        while (cap < need)
            cap *= 2;
        s->redo = hsq_xrealloc(s->redo, cap);
        s->redo_cap = cap;
    }
    uint8_t *b = s->redo + s->redo_len;
    b[0] = op;
    b[1] = (uint8_t)db;
    hsq_le32(b + 2, (uint32_t)klen);
    hsq_le32(b + 6, (uint32_t)vlen);
    memcpy(b + REDO_HEAD, k, klen);
    if (vlen)
        memcpy(b + REDO_HEAD + klen, v, vlen);
    s->redo_len = need;
}

/* Journal mode acknowledges a commit before LMDB writes its pages (at the
 * batch commit, later), and that write must not meet a full disk: LMDB
 * would refuse the batch, and with it turns already acknowledged. So
 * data.mdb keeps room allocated past its last page (fallocate with
 * KEEP_SIZE: blocks that no other file can take). New data is refused
 * (hsq_store_room) once less than a quarter of the room is left and the
 * file cannot get more; a commit only below a sixteenth, so the turns that
 * delete data (the sweeper, an erasure) go on in what was kept. A quarter
 * of the map, 1 to 64 MiB. */
static uint64_t room_want(const hsq_store *s) {
    uint64_t w = s->map_size / 4;
    return w < (1u << 20) ? (1u << 20) : w > (64u << 20) ? (64u << 20) : w;
}

/* Bytes allocated past the last page, after trying to make it the whole
 * room when it is under half; UINT64_MAX where the filesystem cannot
 * allocate ahead (then as without the journal's promise: the batch may
 * fail). */
static uint64_t keep_room(hsq_store *s) {
    MDB_envinfo info;
    if (s->room == UINT64_MAX || mdb_env_info(s->env, &info) != 0)
        return UINT64_MAX;
    uint64_t end = ((uint64_t)info.me_last_pgno + 1) * s->psize, want = room_want(s);
    uint64_t left = s->room > end ? s->room - end : 0;
    s->room_low = 0;
    if (left >= want / 2)
        return left;
    if (fallocate(s->data_fd, FALLOC_FL_KEEP_SIZE, (off_t)end, (off_t)want) == 0) {
        s->room = end + want;
        return want;
    }
    if (errno == EOPNOTSUPP || errno == ENOSYS) {
        s->room = UINT64_MAX;
        return UINT64_MAX;
    }
    s->room_low = 1; /* batches of one turn from now on: see ck_tick */
    return left;
}

/* 0 while at least 1/part of the room is left (or can be had), else
 * HSQ_EDISKFULL with lasterr set. */
static int room_check(hsq_store *s, uint64_t part) {
    uint64_t floor = room_want(s) / part;
    if (keep_room(s) >= floor)
        return 0;
    snprintf(s->lasterr, sizeof s->lasterr,
             "the disk is full: data.mdb has under %" PRIu64 " KiB allocated ahead", floor / 1024);
    return HSQ_EDISKFULL;
}

int hsq_store_room_low(const hsq_store *s) {
    return s->room_low;
}

int hsq_store_room(hsq_store *s) {
    return journal_on(s) && !s->shared ? room_check(s, 4) : 0;
}

static int jappend(hsq_journal *j, const struct iovec *v, uint64_t *lsn, int sync) {
    return sync ? hsq_journal_append(j, v, 1, lsn) : hsq_journal_append_lazy(j, v, 1, lsn);
}

/* Journal mode's commit of a write transaction (a child of the batch): the
 * record first (the acknowledgement waits for it), then the child's changes
 * go into the batch, in memory. */
static int journal_commit(hsq_store *s, int sync) {
    uint64_t lsn = 0;
    size_t had = s->redo_len;
    int rc = 0;
    if (had > 0 && (rc = room_check(s, 16)) != 0) {
        mdb_txn_abort(s->txn);
        s->txn = NULL;
        s->redo_len = 0;
        return rc;
    }
    if (had > hsq_journal_size(s->jr[s->jcur]) / 4) {
        /* Too big for the journal (a rewrite's batch of large records):
         * commit and checkpoint at once, which costs what LMDB's own
         * durable commit costs. The lsn does not move. */
        rc = mdb_txn_commit(s->txn);
        s->txn = NULL;
        s->redo_len = 0;
        if (rc != 0)
            return xlate(s, rc, "mdb_txn_commit");
        if ((rc = ck_sync(s, 0)) != 0 && !s->broken)
            set_broken(s, "checkpointing a large commit",
                       hsq_strerror(rc)); /* the caller says nothing changed */
        return rc < 0 && (rc == -ENOSPC || rc == -EDQUOT) ? HSQ_EDISKFULL : rc ? HSQ_ESTORE : 0;
    }
    if (had > 0) {
        struct iovec v = {s->redo, had};
        rc = jappend(s->jr[s->jcur], &v, &lsn, sync);
        if (rc != 0) {
            mdb_txn_abort(s->txn);
            s->txn = NULL;
            s->redo_len = 0;
            snprintf(s->lasterr, sizeof s->lasterr, "journal append: %s", hsq_strerror(rc));
            return store_code(rc);
        }
    }
    rc = mdb_txn_commit(s->txn);
    s->txn = NULL;
    s->redo_len = 0;
    if (rc != 0) {
        int e = xlate(s, rc, "mdb_txn_commit");
        int d = had ? hsq_journal_drop_last(s->jr[s->jcur]) : 0;
        if (d != 0)
            set_broken(s, "taking back a journal record", hsq_strerror(d));
        return e;
    }
    if (had)
        s->lsn = lsn;
    s->last_commit_us = now_us(s);
    return 0;
}

int hsq_store_begin(hsq_store *s, int rdonly) {
    assert(!s->txn);
    if (!s->env) {
        snprintf(s->lasterr, sizeof s->lasterr, "the environment could not be reopened");
        return HSQ_ESTORE;
    }
    if (s->shared && !rdonly) {
        snprintf(s->lasterr, sizeof s->lasterr,
                 "another process (hsqd) holds this store's journal: stop it first");
        return HSQ_EUNAVAIL;
    }
    if (journal_on(s)) {
        ck_tick(s, 0);
        if (s->broken)
            return HSQ_ESTORE;
        /* A write transaction is a child of the batch; so is a read one
         * while a batch is open, which a read transaction would not see. */
        if (!rdonly || s->ptxn) {
            int rc = 0;
            if (!s->ptxn) {
                rc = mdb_txn_begin(s->env, NULL, 0, &s->ptxn);
                if (rc != 0)
                    s->ptxn = NULL;
                s->p_began_us = now_us(s);
            }
            if (rc == 0 && (rc = mdb_txn_begin(s->env, s->ptxn, 0, &s->txn)) != 0)
                s->txn = NULL;
            return xlate(s, rc, "mdb_txn_begin");
        }
    }
    int rc = mdb_txn_begin(s->env, NULL, rdonly ? MDB_RDONLY : 0, &s->txn);
    if (rc == MDB_MAP_RESIZED) {
        /* Another process (hsq purge, later) grew the map: adopt it. */
        mdb_env_set_mapsize(s->env, 0);
        rc = mdb_txn_begin(s->env, NULL, rdonly ? MDB_RDONLY : 0, &s->txn);
    }
    if (rc != 0) {
        s->txn = NULL;
        return xlate(s, rc, "mdb_txn_begin");
    }
    return 0;
}

int hsq_store_commit(hsq_store *s) {
    assert(s->txn);
    if (journal_on(s))
        return journal_commit(s, 1);
    int rc = mdb_txn_commit(s->txn);
    s->txn = NULL;
    return xlate(s, rc, "mdb_txn_commit");
}

int hsq_store_commit_lazy(hsq_store *s) {
    assert(s->txn);
    if (journal_on(s))
        return journal_commit(s, 0); /* a record that waits for the next sync */
    /* The flag is read at commit time; it is cleared again right after, so
     * every other commit keeps the full sync. */
    mdb_env_set_flags(s->env, MDB_NOMETASYNC, 1);
    int rc = mdb_txn_commit(s->txn);
    mdb_env_set_flags(s->env, MDB_NOMETASYNC, 0);
    s->txn = NULL;
    return xlate(s, rc, "mdb_txn_commit");
}

void hsq_store_abort(hsq_store *s) {
    if (s->txn)
        mdb_txn_abort(s->txn);
    s->txn = NULL;
    s->redo_len = 0;
}

int hsq_store_in_txn(const hsq_store *s) {
    return s->txn != NULL;
}

uint64_t hsq_store_txn_id(const hsq_store *s) {
    assert(s->txn);
    return (uint64_t)mdb_txn_id(s->txn);
}

/* mdb_reader_list's lines: "pid thread txnid", txnid "-" for an idle slot. */
static int oldest_reader(const char *line, void *ctx) {
    uint64_t *oldest = ctx;
    long pid;
    char thread[64], txnid[64];
    if (sscanf(line, "%ld %63s %63s", &pid, thread, txnid) == 3 && txnid[0] >= '0' &&
        txnid[0] <= '9') {
        uint64_t t = strtoull(txnid, NULL, 10);
        if (t < *oldest)
            *oldest = t;
    }
    return 0;
}

int hsq_store_scrub(hsq_store *s, uint64_t *next, uint64_t upto, size_t max_pages, uint64_t *pages,
                    int *done) {
    assert(s->txn);
    *pages = 0;
    *done = 0;
    uint64_t oldest = (uint64_t)mdb_txn_id(s->txn) - 1;
    mdb_reader_list(s->env, oldest_reader, &oldest);
    MDB_stat st;
    int fd;
    int rc = mdb_env_stat(s->env, &st);
    if (rc == 0)
        rc = mdb_env_get_fd(s->env, &fd);
    if (rc != 0)
        return xlate(s, rc, "mdb_env_stat");
    /* The free list (dbi 0) can only be read from a read-only transaction;
     * MDB_NOTLS lets this thread hold one beside its write transaction. */
    MDB_txn *r;
    MDB_cursor *c;
    if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &r)) != 0)
        return xlate(s, rc, "mdb_txn_begin(scrub)");
    if ((rc = mdb_cursor_open(r, 0, &c)) != 0) {
        mdb_txn_abort(r);
        return xlate(s, rc, "mdb_cursor_open(free list)");
    }
    uint8_t *zero = hsq_xcalloc(1, st.ms_psize);
    size_t from = (size_t)*next;
    MDB_val k = {sizeof from, &from}, v;
    int err = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        size_t t, n;
        memcpy(&t, k.mv_data, sizeof t);
        if (t > upto) {
            rc = MDB_NOTFOUND;
            break;
        }
        if (t >= oldest)
            break;                       /* a snapshot may still read these: a later step */
        memcpy(&n, v.mv_data, sizeof n); /* an IDL: count, then page numbers */
        if (v.mv_size < (n + 1) * sizeof(size_t)) {
            err = HSQ_ECORRUPT;
            break;
        }
        if (*pages > 0 && *pages + n > max_pages)
            break;
        for (size_t i = 1; i <= n && !err; i++) {
            size_t pg;
            memcpy(&pg, (const char *)v.mv_data + i * sizeof(size_t), sizeof pg);
            if (pwrite(fd, zero, st.ms_psize, (off_t)pg * st.ms_psize) != (ssize_t)st.ms_psize)
                err = errno ? -errno : -EIO;
        }
        if (err)
            break;
        *pages += n;
        *next = (uint64_t)t + 1;
    }
    if (*pages > 0)
        s->dirty = 1; /* the zeros reach the disk with the next checkpoint */
    if (rc == MDB_NOTFOUND && !err)
        *done = 1;
    else if (rc != 0 && rc != MDB_NOTFOUND && !err)
        err = xlate(s, rc, "mdb_cursor_get(free list)");
    free(zero);
    mdb_cursor_close(c);
    mdb_txn_abort(r);
    return err;
}

int hsq_store_grow(hsq_store *s, uint64_t max_bytes) {
    assert(!s->txn);
    if (!s->env)
        return HSQ_ESTORE;
    if (journal_on(s) && batch_flush(s) != 0)
        return HSQ_ESTORE; /* (no write transaction may be open) */
    if (s->map_size >= max_bytes)
        return HSQ_EDISKFULL;
    uint64_t n = s->map_size * 2;
    if (n > max_bytes)
        n = max_bytes;
    int rc = mdb_env_set_mapsize(s->env, n);
    if (rc != 0)
        return xlate(s, rc, "mdb_env_set_mapsize");
    s->map_size = n;
    return 0;
}

int hsq_store_get(hsq_store *s, hsq_db db, const void *k, size_t klen, hsq_bytes *val) {
    assert(s->txn);
    MDB_val key = {klen, (void *)k}, v;
    int rc = mdb_get(s->txn, s->dbi[db], &key, &v);
    if (rc != 0)
        return xlate(s, rc, "mdb_get");
    val->ptr = v.mv_data;
    val->len = v.mv_size;
    return 0;
}

int hsq_store_put(hsq_store *s, hsq_db db, const void *k, size_t klen, const void *v,
                  size_t vlen) {
    assert(s->txn);
    MDB_val key = {klen, (void *)k}, val = {vlen, (void *)v};
    int rc = mdb_put(s->txn, s->dbi[db], &key, &val, 0);
    if (rc == 0 && journal_on(s))
        redo_add(s, REDO_PUT, db, k, klen, v, vlen);
    return xlate(s, rc, "mdb_put");
}

int hsq_store_del(hsq_store *s, hsq_db db, const void *k, size_t klen) {
    assert(s->txn);
    MDB_val key = {klen, (void *)k};
    int rc = mdb_del(s->txn, s->dbi[db], &key, NULL);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc == 0 && journal_on(s))
        redo_add(s, REDO_DEL, db, k, klen, NULL, 0);
    return xlate(s, rc, "mdb_del");
}

int hsq_cursor_open(hsq_store *s, hsq_db db, hsq_cursor **out) {
    assert(s->txn);
    hsq_cursor *c = hsq_xmalloc(sizeof *c);
    int rc = mdb_cursor_open(s->txn, s->dbi[db], &c->c);
    if (rc != 0) {
        free(c);
        *out = NULL;
        return xlate(s, rc, "mdb_cursor_open");
    }
    c->s = s;
    c->db = db;
    *out = c;
    return 0;
}

int hsq_cursor_get(hsq_cursor *c, hsq_cur_op op, hsq_bytes *key, hsq_bytes *val) {
    static const MDB_cursor_op ops[] = {MDB_FIRST, MDB_LAST, MDB_NEXT, MDB_PREV, MDB_SET_RANGE};
    MDB_val k = {0, NULL}, v = {0, NULL};
    if (op == HSQ_CUR_SET_RANGE) {
        k.mv_size = key->len;
        k.mv_data = (void *)key->ptr;
    }
    int rc = mdb_cursor_get(c->c, &k, &v, ops[op]);
    if (rc == MDB_NOTFOUND)
        return HSQ_ENOTFOUND;
    if (rc != 0)
        return HSQ_ESTORE;
    key->ptr = k.mv_data;
    key->len = k.mv_size;
    if (val) {
        val->ptr = v.mv_data;
        val->len = v.mv_size;
    }
    return 0;
}

int hsq_cursor_del(hsq_cursor *c) {
    size_t mark = c->s->redo_len;
    if (journal_on(c->s)) {
        MDB_val k, v;
        int rc = mdb_cursor_get(c->c, &k, &v, MDB_GET_CURRENT);
        if (rc != 0)
            return rc == MDB_NOTFOUND ? HSQ_ENOTFOUND : HSQ_ESTORE;
        /* The key is in the page the delete changes: record it first. */
        redo_add(c->s, REDO_DEL, c->db, k.mv_data, k.mv_size, NULL, 0);
    }
    int rc = mdb_cursor_del(c->c, 0);
    if (rc != 0)
        c->s->redo_len = mark; /* not deleted: not recorded */
    if (rc == MDB_MAP_FULL)
        return HSQ_EDISKFULL;
    return rc == 0 ? 0 : HSQ_ESTORE;
}

void hsq_cursor_close(hsq_cursor **cp) {
    if (!*cp)
        return;
    mdb_cursor_close((*cp)->c);
    free(*cp);
    *cp = NULL;
}

int hsq_store_count(hsq_store *s, hsq_db db, uint64_t *n) {
    MDB_stat st;
    int rc = mdb_stat(s->txn, s->dbi[db], &st);
    if (rc != 0)
        return xlate(s, rc, "mdb_stat");
    *n = st.ms_entries;
    return 0;
}

void hsq_store_usage(hsq_store *s, uint64_t *used, uint64_t *mapsize) {
    MDB_envinfo info;
    MDB_stat st;
    *used = *mapsize = 0;
    if (!s->env)
        return;
    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &st);
    *used = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
    *mapsize = info.me_mapsize;
}

const char *hsq_store_lasterr(const hsq_store *s) {
    return s->lasterr;
}
