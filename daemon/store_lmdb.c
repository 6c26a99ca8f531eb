#include "daemon/store.h"

#include "common/alloc.h"
#include "schemas/err.h"

#include <assert.h>
#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SCHEMA_VERSION 1

static const char *const db_names[HSQ_DB_COUNT_] = {
    "meta",   "tasks", "pending", "delayed", "leases", "users",
    "history", "idem", "expiry",  "inputs",  "ledger", "audit",
    "credits",
};

struct hsq_store {
    MDB_env *env; /* NULL after a reopen that failed: every call then fails */
    char *dir;
    MDB_txn *txn;
    MDB_dbi dbi[HSQ_DB_COUNT_];
    uint64_t map_size;
    char lasterr[160];
};

struct hsq_cursor {
    MDB_cursor *c;
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
    /* Default sync flags on purpose: an acknowledged submit must survive a
     * power cut. MDB_NOTLS lets a read txn be used from a thread other than
     * the loop's later on without reader-slot surprises. */
    if (rc == 0)
        rc = mdb_env_open(s->env, dir, MDB_NOTLS, 0600);
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

int hsq_store_open(hsq_store **out, const char *dir, uint64_t map_size) {
    *out = NULL;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -errno;
    hsq_store *s = hsq_xcalloc(1, sizeof *s);
    s->map_size = map_size;
    int rc = env_open(s, dir);
    if (rc != 0) {
        free(s);
        return rc;
    }
    s->dir = hsq_xstrndup(dir, strlen(dir));
    *out = s;
    return 0;
}

int hsq_store_reopen(hsq_store *s) {
    assert(!s->txn);
    if (s->env) {
        /* The map may have grown since the open (another process, or us). */
        MDB_envinfo info;
        if (mdb_env_info(s->env, &info) == 0 && info.me_mapsize > s->map_size)
            s->map_size = info.me_mapsize;
        mdb_env_close(s->env);
        s->env = NULL;
    }
    return env_open(s, s->dir);
}

void hsq_store_close(hsq_store **sp) {
    hsq_store *s = *sp;
    if (!s)
        return;
    if (s->txn)
        mdb_txn_abort(s->txn);
    if (s->env)
        mdb_env_close(s->env);
    free(s->dir);
    free(s);
    *sp = NULL;
}

int hsq_store_begin(hsq_store *s, int rdonly) {
    assert(!s->txn);
    if (!s->env) {
        snprintf(s->lasterr, sizeof s->lasterr, "the environment could not be reopened");
        return HSQ_ESTORE;
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
    int rc = mdb_txn_commit(s->txn);
    s->txn = NULL;
    return xlate(s, rc, "mdb_txn_commit");
}

int hsq_store_commit_lazy(hsq_store *s) {
    assert(s->txn);
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
    return xlate(s, mdb_put(s->txn, s->dbi[db], &key, &val, 0), "mdb_put");
}

int hsq_store_del(hsq_store *s, hsq_db db, const void *k, size_t klen) {
    assert(s->txn);
    MDB_val key = {klen, (void *)k};
    int rc = mdb_del(s->txn, s->dbi[db], &key, NULL);
    if (rc == MDB_NOTFOUND)
        return 0;
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
    int rc = mdb_cursor_del(c->c, 0);
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
