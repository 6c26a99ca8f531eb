#include "daemon/checker.h"

#include "common/alloc.h"
#include "common/blob.h"
#include "common/fault.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

typedef struct batch {
    uv_work_t req; /* first: the callbacks get &req */
    hsq_checker *owner;
    hsq_check *v;
    size_t n;
} batch;

struct hsq_checker {
    uv_loop_t *loop;
    hsq_blob *blob; /* read only (fstatat on its root): pool threads share it */
    void (*ready)(void *ud);
    void *ud;
    size_t busy;
    hsq_check *done; /* back from the pool, not collected */
    size_t n_done, cap_done;
};

int hsq_checker_new(hsq_checker **out, uv_loop_t *loop, const char *blob_root,
                    void (*ready)(void *ud), void *ud) {
    hsq_checker *k = hsq_xcalloc(1, sizeof *k);
    int rc = hsq_blob_open(&k->blob, blob_root);
    if (rc != 0) {
        free(k);
        return rc;
    }
    k->loop = loop;
    k->ready = ready;
    k->ud = ud;
    *out = k;
    return 0;
}

static void on_work(uv_work_t *req) {
    batch *b = (batch *)req;
    hsq_fault("check.run"); /* tests: "check.run~MS" keeps checks in flight */
    hsq_checks_run(b->owner->blob, b->v, b->n);
}

static void on_after_work(uv_work_t *req, int status) {
    batch *b = (batch *)req;
    hsq_checker *k = b->owner;
    /* UV_ECANCELED comes only after uv_cancel, which nothing calls; still,
     * a batch the pool did not run is run here: no check passes unrun. */
    if (status != 0)
        hsq_checks_run(k->blob, b->v, b->n);
    if (k->n_done + b->n > k->cap_done) {
        size_t cap = k->cap_done ? k->cap_done : 64;
        while (cap < k->n_done + b->n)
            cap *= 2;
        k->done = hsq_xrealloc(k->done, cap * sizeof *k->done);
        k->cap_done = cap;
    }
    memcpy(k->done + k->n_done, b->v, b->n * sizeof *b->v);
    k->n_done += b->n;
    free(b->v);
    free(b);
    k->busy--;
    k->ready(k->ud);
}

void hsq_checker_submit(hsq_checker *k, hsq_check *v, size_t n) {
    if (n == 0) {
        free(v);
        return;
    }
    batch *b = hsq_xcalloc(1, sizeof *b);
    b->owner = k;
    b->v = v;
    b->n = n;
    k->busy++;
    if (uv_queue_work(k->loop, &b->req, on_work, on_after_work) != 0)
        on_after_work(&b->req, UV_EINVAL); /* only without a work callback */
}

hsq_check *hsq_checker_collect(hsq_checker *k, size_t *n) {
    hsq_check *v = k->done;
    *n = k->n_done;
    k->done = NULL;
    k->n_done = k->cap_done = 0;
    return v;
}

size_t hsq_checker_busy(const hsq_checker *k) {
    return k->busy;
}

void hsq_checker_free(hsq_checker **kp) {
    hsq_checker *k = *kp;
    if (!k)
        return;
    assert(k->busy == 0);
    hsq_checks_free(k->done, k->n_done);
    hsq_blob_close(&k->blob);
    free(k);
    *kp = NULL;
}
