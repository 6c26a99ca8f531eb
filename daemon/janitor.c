#include "daemon/janitor.h"

#include "common/alloc.h"
#include "common/blob.h"
#include "common/clock.h"
#include "common/log.h"
#include "daemon/cond.h"
#include "schemas/err.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MS 60000 /* after a failed walk */

struct hsq_janitor {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    hsq_blob *blob; /* the thread's own handle */
    hsq_id_range r[HSQ_RECOVER_RANGES];
    size_t n;             /* ranges still to recover; thread only */
    uint64_t settle_ms;   /* from the first recovery walk to the second */
    uint64_t interval_ms; /* between temp-file walks; 0 = none after the first */
    atomic_int quit;      /* also read by the walk, between two files */
    int have_report;      /* guarded by mu */
    hsq_janitor_report report;
    hsq_janitor_totals totals; /* guarded by mu */
    void (*wake)(void *ud);
    void *ud;
};

static int quitting(void *ud) {
    hsq_janitor *j = ud;
    return atomic_load(&j->quit);
}

/* One walk (hsq_recover_walk): stale temp files, and the uploads of the
 * ranges still to recover. */
static int walk_once(hsq_janitor *j, hsq_janitor_report *rep) {
    uint64_t t0 = hsq_clock_mono_ms();
    rep->rc = hsq_recover_walk(j->blob, j->r, j->n, quitting, j, &rep->n);
    rep->ms = hsq_clock_mono_ms() - t0;
    return rep->rc;
}

/* Sleep until monotonic time `until_ms` or quit; called with mu held. */
static void rest_until(hsq_janitor *j, uint64_t until_ms) {
    while (!atomic_load(&j->quit) && hsq_clock_mono_ms() < until_ms)
        if (hsq_cond_wait_until_us(&j->cv, &j->mu, until_ms * 1000u) == ETIMEDOUT)
            break;
}

static void *janitor_main(void *arg) {
    hsq_janitor *j = arg;
    /* Walks that report: the first always (the core waits for it even with
     * no ranges), the second when there are ranges and a settle time. */
    int need = j->n > 0 && j->settle_ms > 0 ? 2 : 1;
    int passes = 0; /* of those, the ones that succeeded */
    for (;;) {
        hsq_janitor_report rep;
        memset(&rep, 0, sizeof rep);
        int rc = walk_once(j, &rep);
        if (atomic_load(&j->quit))
            break;
        int report = passes < need; /* failed ones too, until it succeeds */
        if (rc != 0)
            hsq_log(HSQ_LOG_WARN, "janitor", "walk of the blob store failed err=%s retry_s=%d",
                    hsq_strerror(rc), RETRY_MS / 1000);
        else
            hsq_log(report ? HSQ_LOG_NOTICE : HSQ_LOG_INFO, "janitor",
                    "walk objects=%" PRIu64 " uploads_removed=%" PRIu64 " bytes=%" PRIu64
                    " tmp_removed=%" PRIu64 " ms=%" PRIu64 " recovery_pass=%d",
                    rep.n.walked, rep.n.files, rep.n.bytes, rep.n.tmp, rep.ms,
                    report && j->n ? passes + 1 : 0);
        rep.final = report && rc == 0 && passes + 1 == need;
        pthread_mutex_lock(&j->mu);
        if (rc == 0) {
            j->totals.walks++;
            j->totals.uploads_removed += rep.n.files;
            j->totals.tmp_removed += rep.n.tmp;
            j->totals.last_ms = rep.ms;
        }
        if (report) {
            j->report = rep;
            j->have_report = 1;
        }
        pthread_mutex_unlock(&j->mu);
        if (report && rc == 0 && ++passes == need)
            j->n = 0;
        if (report && j->wake)
            j->wake(j->ud);
        uint64_t wait_ms = rc != 0 ? RETRY_MS : passes < need ? j->settle_ms : j->interval_ms;
        pthread_mutex_lock(&j->mu);
        if (wait_ms == 0) /* nothing more to do: wait for stop */
            while (!atomic_load(&j->quit))
                pthread_cond_wait(&j->cv, &j->mu);
        else
            rest_until(j, hsq_clock_mono_ms() + wait_ms);
        pthread_mutex_unlock(&j->mu);
        if (atomic_load(&j->quit))
            break;
    }
    return NULL;
}

int hsq_janitor_start(hsq_janitor **out, const char *blob_root, const hsq_id_range *r, size_t n,
                      uint64_t settle_ms, uint64_t interval_s, void (*wake)(void *ud), void *ud) {
    *out = NULL;
    if (n > HSQ_RECOVER_RANGES)
        return HSQ_EINVAL;
    hsq_janitor *j = hsq_xcalloc(1, sizeof *j);
    int rc = hsq_blob_open(&j->blob, blob_root);
    if (rc != 0) {
        free(j);
        return rc;
    }
    if (n)
        memcpy(j->r, r, n * sizeof *r);
    j->n = n;
    j->settle_ms = settle_ms;
    j->interval_ms = interval_s * 1000u;
    j->wake = wake;
    j->ud = ud;
    atomic_init(&j->quit, 0);
    pthread_mutex_init(&j->mu, NULL);
    hsq_cond_init_mono(&j->cv); /* rest_until's deadlines */
    rc = pthread_create(&j->thread, NULL, janitor_main, j);
    if (rc != 0) {
        pthread_cond_destroy(&j->cv);
        pthread_mutex_destroy(&j->mu);
        hsq_blob_close(&j->blob);
        free(j);
        return -rc;
    }
    *out = j;
    return 0;
}

int hsq_janitor_collect(hsq_janitor *j, hsq_janitor_report *out) {
    pthread_mutex_lock(&j->mu);
    int have = j->have_report;
    if (have) {
        *out = j->report;
        j->have_report = 0;
    }
    pthread_mutex_unlock(&j->mu);
    return have;
}

void hsq_janitor_get_totals(hsq_janitor *j, hsq_janitor_totals *out) {
    pthread_mutex_lock(&j->mu);
    *out = j->totals;
    pthread_mutex_unlock(&j->mu);
}

void hsq_janitor_stop(hsq_janitor **jp) {
    hsq_janitor *j = *jp;
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    atomic_store(&j->quit, 1);
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->thread, NULL);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    hsq_blob_close(&j->blob);
    free(j);
    *jp = NULL;
}
