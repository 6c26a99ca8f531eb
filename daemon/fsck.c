#include "daemon/fsck.h"

#include "common/alloc.h"
#include "daemon/queue.h"
#include "daemon/task.h"
#include "schemas/err.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* A set of strings (blob keys), open addressing, grows at 1/2 load. */
typedef struct {
    char **slots;
    size_t cap, n;
} keyset;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static void set_add(keyset *ks, const char *key, size_t len);

static void set_grow(keyset *ks) {
    keyset big = {hsq_xcalloc(ks->cap ? ks->cap * 2 : 1024, sizeof(char *)),
                  ks->cap ? ks->cap * 2 : 1024, 0};
    for (size_t i = 0; i < ks->cap; i++)
        if (ks->slots[i]) {
            size_t j = hash_str(ks->slots[i]) & (big.cap - 1);
            while (big.slots[j])
                j = (j + 1) & (big.cap - 1);
            big.slots[j] = ks->slots[i];
            big.n++;
        }
    free(ks->slots);
    *ks = big;
}

static int set_has(const keyset *ks, const char *key) {
    if (!ks->cap)
        return 0;
    for (size_t j = hash_str(key) & (ks->cap - 1); ks->slots[j]; j = (j + 1) & (ks->cap - 1))
        if (strcmp(ks->slots[j], key) == 0)
            return 1;
    return 0;
}

static void set_add(keyset *ks, const char *key, size_t len) {
    char *k = hsq_xstrndup(key, len);
    if (set_has(ks, k)) {
        free(k);
        return;
    }
    if ((ks->n + 1) * 2 > ks->cap)
        set_grow(ks);
    size_t j = hash_str(k) & (ks->cap - 1);
    while (ks->slots[j])
        j = (j + 1) & (ks->cap - 1);
    ks->slots[j] = k;
    ks->n++;
}

static void set_free(keyset *ks) {
    for (size_t i = 0; i < ks->cap; i++)
        free(ks->slots[i]);
    free(ks->slots);
}

typedef struct {
    hsq_blob *blob;
    keyset refs;     /* keys records point at */
    keyset leased;   /* "<task id>" of leased tasks: their dirs may be in use */
    keyset found;    /* keys present in the blob store */
    keyset orphans;
    /* Deletions recorded as intents: "u/<hash>/" of each user in the erasure
     * ledger, and start-up recovery's id ranges. */
    keyset erasing;
    hsq_id_range recover[HSQ_RECOVER_RANGES];
    size_t n_recover;
    uint64_t max_id; /* tasks above this were created after pass 1 began */
    int64_t now;
    int repair;
    FILE *log;
    hsq_fsck_report *r;
} fsck_ctx;

/* "u/<hash>/<id>/name" -> "<id>" (or "" when the shape differs). */
static void task_of_key(const char *key, char *out, size_t n) {
    out[0] = '\0';
    const char *p = strchr(key, '/');
    p = p ? strchr(p + 1, '/') : NULL;
    if (!p)
        return;
    const char *e = strchr(p + 1, '/');
    if (!e || (size_t)(e - p - 1) >= n)
        return;
    memcpy(out, p + 1, (size_t)(e - p - 1));
    out[e - p - 1] = '\0';
}

static int on_blob(const char *key, uint64_t size, void *ud) {
    fsck_ctx *c = ud;
    c->r->blobs++;
    set_add(&c->found, key, strlen(key));
    if (set_has(&c->refs, key))
        return 0;
    char id[32];
    task_of_key(key, id, sizeof id);
    if (id[0] && set_has(&c->leased, id))
        return 0;
    /* hsqd writes a new task's inputs before its record commits. Not with
     * a corrupt recovery record: hsqd does not start on one, so nothing is
     * in progress, and the uploads it stood for are above every record. */
    if (id[0] && strtoull(id, NULL, 10) > c->max_id && !c->r->recover_corrupt)
        return 0;
    /* Deleted by an erasure or by start-up recovery, both recorded. */
    char prefix[HSQ_BLOB_PREFIX_LEN + 1];
    snprintf(prefix, sizeof prefix, "%s", key);
    if (set_has(&c->erasing, prefix) || hsq_recover_match(key, c->recover, c->n_recover)) {
        c->r->pending++;
        return 0;
    }
    c->r->orphans++;
    c->r->orphan_bytes += size;
    set_add(&c->orphans, key, strlen(key));
    if (c->log)
        fprintf(c->log, "orphan blob %s (%" PRIu64 " bytes)\n", key, size);
    return 0;
}

/* The blob prefixes of the users in the erasure ledger: the id is in the
 * value (u64be requested_at | id) under a hashed key, or, in a store hsqd
 * has not opened since before the hashed keys, the key (u8 len | id). */
static int erasing_prefixes(hsq_store *st, fsck_ctx *c) {
    hsq_cursor *cur;
    int rc = hsq_cursor_open(st, HSQ_DB_LEDGER, &cur);
    if (rc != 0)
        return rc;
    hsq_bytes k, v;
    for (rc = hsq_cursor_get(cur, HSQ_CUR_FIRST, &k, &v); rc == 0;
         rc = hsq_cursor_get(cur, HSQ_CUR_NEXT, &k, &v)) {
        const char *id;
        size_t len;
        if (k.len >= 1 && k.ptr[0] == HSQ_USER_KEY_MARK && v.len > 8) {
            id = (const char *)v.ptr + 8;
            len = v.len - 8;
        } else if (k.len >= 1 && k.len == 1u + k.ptr[0]) {
            id = (const char *)k.ptr + 1;
            len = k.ptr[0];
        } else {
            continue;
        }
        char prefix[HSQ_BLOB_PREFIX_LEN + 1];
        hsq_blob_user_prefix(c->blob, id, len, prefix);
        set_add(&c->erasing, prefix, strlen(prefix));
    }
    hsq_cursor_close(&cur);
    return rc == HSQ_ENOTFOUND ? 0 : rc;
}

/* Pass 1: collect every referenced key, the leased task ids and the
 * deletions recorded as intents (erasures, start-up recovery). */
static int collect(hsq_store *st, fsck_ctx *c) {
    int rc = hsq_store_begin(st, 1);
    if (rc != 0)
        return rc;
    hsq_cursor *cur;
    if ((rc = hsq_cursor_open(st, HSQ_DB_TASKS, &cur)) != 0) {
        hsq_store_abort(st);
        return rc;
    }
    hsq_bytes k, v;
    for (rc = hsq_cursor_get(cur, HSQ_CUR_FIRST, &k, &v); rc == 0;
         rc = hsq_cursor_get(cur, HSQ_CUR_NEXT, &k, &v)) {
        hsq_task t;
        if (hsq_task_decode(v.ptr, v.len, &t) != 0) {
            if (c->log)
                fprintf(c->log, "corrupt task record (%zu bytes)\n", v.len);
            continue;
        }
        c->r->tasks++;
        if (t.id > c->max_id)
            c->max_id = t.id;
        for (uint32_t i = 0; i < t.n_inputs; i++)
            if (t.inputs[i].where == HSQ_IN_BLOB)
                set_add(&c->refs, t.inputs[i].key.ptr, t.inputs[i].key.len);
        for (uint32_t i = 0; i < t.n_outputs; i++)
            set_add(&c->refs, t.outputs[i].key.ptr, t.outputs[i].key.len);
        if (t.state == HSQ_STATE_LEASED) {
            char id[32];
            int n = snprintf(id, sizeof id, "%" PRIu64, t.id);
            set_add(&c->leased, id, (size_t)n);
        }
    }
    hsq_cursor_close(&cur);
    if (rc == HSQ_ENOTFOUND)
        rc = erasing_prefixes(st, c);
    if (rc == 0) {
        rc = hsq_recover_ranges(st, c->recover, &c->n_recover);
        if (rc == HSQ_ECORRUPT) {
            /* Without the ranges, their uploads are what they are: files
             * without a record. */
            c->r->recover_corrupt = 1;
            c->n_recover = 0;
            rc = 0;
            if (c->log)
                fprintf(c->log, "corrupt start-up recovery record: its uploads are orphans%s\n",
                        c->repair ? "; deleting the record after them" : "");
        }
    }
    hsq_store_abort(st);
    return rc;
}

/* Pass 3: records whose blobs are gone; with repair, drop the references. */
static int dangling(hsq_store *st, fsck_ctx *c) {
    uint64_t from = 0;
    for (;;) {
        int rc = hsq_store_begin(st, !c->repair);
        if (rc != 0)
            return rc;
        hsq_cursor *cur;
        if ((rc = hsq_cursor_open(st, HSQ_DB_TASKS, &cur)) != 0) {
            hsq_store_abort(st);
            return rc;
        }
        uint8_t kb[8];
        hsq_be64(kb, from);
        hsq_bytes k = {kb, 8}, v;
        int batch = 0, last = 1;
        hsq_wbuf buf;
        hsq_wbuf_init(&buf);
        for (rc = hsq_cursor_get(cur, HSQ_CUR_SET_RANGE, &k, &v); rc == 0;
             rc = hsq_cursor_get(cur, HSQ_CUR_NEXT, &k, &v)) {
            if (batch++ == 1000) {
                last = 0;
                from = hsq_rd_be64(k.ptr);
                break;
            }
            hsq_task t;
            if (hsq_task_decode(v.ptr, v.len, &t) != 0)
                continue;
            int changed = 0;
            for (uint32_t i = 0; i < t.n_inputs; i++) {
                hsq_task_input *in = &t.inputs[i];
                char key[HSQ_BLOB_KEY_MAX + 1];
                if (in->where != HSQ_IN_BLOB)
                    continue;
                snprintf(key, sizeof key, "%.*s", (int)in->key.len, in->key.ptr);
                if (set_has(&c->found, key))
                    continue;
                int64_t due = hsq_str_eq(in->kind, "portrait") ? t.inputs_expire_ms
                                                               : t.refs_expire_ms;
                if (due > 0 && due <= c->now) {
                    c->r->pending++; /* the sweeper deleted it; its record update is next */
                    continue;
                }
                c->r->dangling++;
                if (c->log)
                    fprintf(c->log, "task %" PRIu64 " input %u: missing blob %s\n", t.id, i, key);
                in->where = HSQ_IN_GONE;
                in->key.len = 0;
                changed = 1;
            }
            uint32_t kept = 0;
            for (uint32_t i = 0; i < t.n_outputs; i++) {
                char key[HSQ_BLOB_KEY_MAX + 1];
                snprintf(key, sizeof key, "%.*s", (int)t.outputs[i].key.len,
                         t.outputs[i].key.ptr);
                if (set_has(&c->found, key) || (t.expires_ms > 0 && t.expires_ms <= c->now)) {
                    if (!set_has(&c->found, key))
                        c->r->pending++;
                    t.outputs[kept++] = t.outputs[i];
                    continue;
                }
                c->r->dangling++;
                if (c->log)
                    fprintf(c->log, "task %" PRIu64 " output %u: missing blob %s\n", t.id, i,
                            key);
                changed = 1;
            }
            t.n_outputs = kept;
            if (changed && c->repair) {
                hsq_wbuf_reset(&buf);
                hsq_task_encode(&t, &buf);
                uint8_t tk[8];
                hsq_be64(tk, t.id);
                if ((rc = hsq_store_put(st, HSQ_DB_TASKS, tk, 8, buf.data, buf.len)) != 0)
                    break;
                c->r->repaired++;
            }
        }
        hsq_cursor_close(&cur);
        hsq_wbuf_free(&buf);
        if (rc != 0 && rc != HSQ_ENOTFOUND) {
            hsq_store_abort(st);
            return rc;
        }
        rc = c->repair ? hsq_store_commit(st) : (hsq_store_abort(st), 0);
        if (rc != 0 || last)
            return rc;
    }
}

int hsq_fsck_run(hsq_store *st, hsq_blob *blob, int repair, int64_t now_ms, FILE *log,
                 hsq_fsck_report *out) {
    memset(out, 0, sizeof *out);
    fsck_ctx c = {.blob = blob, .repair = repair, .log = log, .r = out, .now = now_ms};
    int rc = collect(st, &c);
    if (rc == 0)
        rc = hsq_blob_walk(blob, on_blob, &c);
    if (rc == 0 && repair) {
        for (size_t i = 0; i < c.orphans.cap; i++) {
            if (!c.orphans.slots[i])
                continue;
            if (hsq_blob_delete(blob, c.orphans.slots[i]) == 0)
                out->repaired++;
        }
        rc = hsq_blob_clean_tmp(blob, &out->tmp_removed);
        if (rc == 0 && out->recover_corrupt && (rc = hsq_store_begin(st, 0)) == 0) {
            rc = hsq_recover_forget(st);
            rc = rc == 0 ? hsq_store_commit(st) : (hsq_store_abort(st), rc);
            if (rc == 0)
                out->repaired++;
        }
    }
    if (rc == 0)
        rc = dangling(st, &c);
    set_free(&c.refs);
    set_free(&c.leased);
    set_free(&c.found);
    set_free(&c.orphans);
    set_free(&c.erasing);
    return rc;
}
