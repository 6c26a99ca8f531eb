#include "daemon/reaper.h"

#include "common/alloc.h"
#include "common/blob.h"
#include "common/clock.h"
#include "common/fault.h"
#include "common/log.h"
#include "daemon/cond.h"
#include "schemas/err.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define REAP_BATCH 64          /* entries deleted between two flushes */
#define REAP_REST_MAX_US 250000 /* longest pause after a batch */

typedef struct {
    hsq_reap *v;
    size_t n, cap;
} reap_list;

struct hsq_reaper {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    hsq_blob *blob; /* the thread's own handle: its deferred syncs are its own */
    reap_list todo; /* guarded by mu */
    reap_list done; /* guarded by mu */
    int quit;       /* guarded by mu */
    void (*wake)(void *ud);
    void *ud;
};

static void list_append(reap_list *l, hsq_reap *v, size_t n) {
    if (l->n + n > l->cap) {
        size_t cap = l->cap ? l->cap : 64;
        while (cap < l->n + n)
            cap *= 2;
        l->v = hsq_xrealloc(l->v, cap * sizeof *l->v);
        l->cap = cap;
    }
    memcpy(l->v + l->n, v, n * sizeof *v);
    l->n += n;
}

/* Delete one entry's files, the directory syncs left to the batch's flush. */
static void delete_entry(hsq_reaper *r, hsq_reap *e) {
    const char *k = e->keys;
    for (uint32_t i = 0; i < e->n_keys; i++, k += strlen(k) + 1) {
        int rc = hsq_blob_delete_flags(r->blob, k, HSQ_BLOB_DEFER);
        if (rc != 0 && e->rc == 0)
            e->rc = rc;
    }
    if (e->prefix[0]) {
        int rc = hsq_blob_delete_prefix_flags(r->blob, e->prefix, &e->bytes, HSQ_BLOB_DEFER);
        if (rc != 0 && e->rc == 0)
            e->rc = rc;
    }
}

/* Sleep until monotonic time `until` (us) or quit; called with mu held. */
static void rest_until(hsq_reaper *r, uint64_t until) {
    while (!r->quit && hsq_clock_mono_us() < until)
        if (hsq_cond_wait_until_us(&r->cv, &r->mu, until) == ETIMEDOUT)
            break;
}

static void *reaper_main(void *arg) {
    hsq_reaper *r = arg;
    reap_list batch = {NULL, 0, 0};
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->quit && r->todo.n == 0)
            pthread_cond_wait(&r->cv, &r->mu);
        if (r->quit)
            break;
        /* Up to REAP_BATCH entries: one flush for all of them. */
        size_t take = r->todo.n < REAP_BATCH ? r->todo.n : REAP_BATCH;
        list_append(&batch, r->todo.v, take);
        r->todo.n -= take;
        memmove(r->todo.v, r->todo.v + take, r->todo.n * sizeof *r->todo.v);
        pthread_mutex_unlock(&r->mu);

        uint64_t t0 = hsq_clock_mono_us();
        for (size_t i = 0; i < batch.n; i++)
            delete_entry(r, &batch.v[i]);
        hsq_fault("reap.deleted");
        int rc = hsq_blob_flush(r->blob);
        if (rc != 0) {
            /* Not durable: every entry of the batch is retried later. */
            hsq_log(HSQ_LOG_WARN, "reaper", "directory sync failed err=%s entries=%zu",
                    hsq_strerror(rc), batch.n);
            for (size_t i = 0; i < batch.n; i++)
                if (batch.v[i].rc == 0)
                    batch.v[i].rc = rc;
        }
        uint64_t t1 = hsq_clock_mono_us();

        pthread_mutex_lock(&r->mu);
        list_append(&r->done, batch.v, batch.n);
        batch.n = 0;
        if (r->wake)
            r->wake(r->ud);
        /* Rest as long as the batch took: deleting files keeps the
         * filesystem's journal busy, and the loop's LMDB commits wait on
         * the same disk. At most half of its time goes to the reaper. */
        uint64_t rest = t1 - t0 < REAP_REST_MAX_US ? t1 - t0 : REAP_REST_MAX_US;
        rest_until(r, t1 + rest);
    }
    pthread_mutex_unlock(&r->mu);
    free(batch.v);
    return NULL;
}

int hsq_reaper_start(hsq_reaper **out, const char *blob_root, void (*wake)(void *ud), void *ud) {
    *out = NULL;
    hsq_reaper *r = hsq_xcalloc(1, sizeof *r);
    int rc = hsq_blob_open(&r->blob, blob_root);
    if (rc != 0) {
        free(r);
        return rc;
    }
    hsq_blob_set_syncfs(r->blob, HSQ_BLOB_SYNCFS_MIN);
    r->wake = wake;
    r->ud = ud;
    pthread_mutex_init(&r->mu, NULL);
    hsq_cond_init_mono(&r->cv); /* rest_until's deadlines */
    rc = pthread_create(&r->thread, NULL, reaper_main, r);
    if (rc != 0) {
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        hsq_blob_close(&r->blob);
        free(r);
        return -rc;
    }
    *out = r;
    return 0;
}

void hsq_reaper_submit(hsq_reaper *r, hsq_reap *v, size_t n) {
    if (n > 0) {
        pthread_mutex_lock(&r->mu);
        list_append(&r->todo, v, n);
        pthread_cond_signal(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
    free(v); /* the entries' key blocks now belong to the lists */
}

hsq_reap *hsq_reaper_collect(hsq_reaper *r, size_t *n) {
    pthread_mutex_lock(&r->mu);
    hsq_reap *v = r->done.v;
    *n = r->done.n;
    r->done.v = NULL;
    r->done.n = r->done.cap = 0;
    pthread_mutex_unlock(&r->mu);
    return v;
}

void hsq_reaper_stop(hsq_reaper **rp) {
    hsq_reaper *r = *rp;
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->quit = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    hsq_reaps_free(r->todo.v, r->todo.n);
    hsq_reaps_free(r->done.v, r->done.n);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    hsq_blob_close(&r->blob);
    free(r);
    *rp = NULL;
}
