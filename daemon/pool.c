#include "daemon/pool.h"

#include "common/alloc.h"
#include "common/blob.h"
#include "common/fault.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* What came back and was not collected yet, of one kind. */
typedef struct {
    void *v;
    size_t n, cap;
} backlog;

typedef enum { CHECKS, STAGES } kind;

typedef struct batch {
    uv_work_t req; /* first: the callbacks get &req */
    hsq_pool *owner;
    kind kind;
    void *v;
    size_t n;
} batch;

struct hsq_pool {
    uv_loop_t *loop;
    /* Pool threads share it: checks only fstatat on its root, stages only
     * write temp files (blob.h). */
    hsq_blob *blob;
    void (*ready)(void *ud);
    void *ud;
    size_t busy;
    backlog back[2]; /* by kind */
};

static const size_t item_size[2] = {sizeof(hsq_check), sizeof(hsq_stage)};

int hsq_pool_new(hsq_pool **out, uv_loop_t *loop, const char *blob_root, void (*ready)(void *ud),
                 void *ud) {
    hsq_pool *p = hsq_xcalloc(1, sizeof *p);
    int rc = hsq_blob_open(&p->blob, blob_root);
    if (rc != 0) {
        free(p);
        return rc;
    }
    p->loop = loop;
    p->ready = ready;
    p->ud = ud;
    *out = p;
    return 0;
}

static void run(hsq_blob *blob, batch *b) {
    if (b->kind == CHECKS) {
        hsq_fault("check.run"); /* tests: "check.run~MS" keeps checks in flight */
        hsq_checks_run(blob, b->v, b->n);
    } else {
        hsq_stages_run(blob, b->v, b->n);
        hsq_fault("stage.run"); /* ... and stages, written but not back */
    }
}

static void on_work(uv_work_t *req) {
    batch *b = (batch *)req;
    run(b->owner->blob, b);
}

static void on_after_work(uv_work_t *req, int status) {
    batch *b = (batch *)req;
    hsq_pool *p = b->owner;
    /* UV_ECANCELED comes only after uv_cancel, which nothing calls; still,
     * a batch the pool did not run is run here: nothing passes unrun. */
    if (status != 0)
        run(p->blob, b);
    backlog *bl = &p->back[b->kind];
    size_t sz = item_size[b->kind];
    if (bl->n + b->n > bl->cap) {
        size_t cap = bl->cap ? bl->cap : 64;
        while (cap < bl->n + b->n)
            cap *= 2;
        bl->v = hsq_xrealloc(bl->v, cap * sz);
        bl->cap = cap;
    }
    memcpy((char *)bl->v + bl->n * sz, b->v, b->n * sz);
    bl->n += b->n;
    free(b->v);
    free(b);
    p->busy--;
    p->ready(p->ud);
}

static void submit(hsq_pool *p, kind k, void *v, size_t n) {
    if (n == 0) {
        free(v);
        return;
    }
    batch *b = hsq_xcalloc(1, sizeof *b);
    b->owner = p;
    b->kind = k;
    b->v = v;
    b->n = n;
    p->busy++;
    if (uv_queue_work(p->loop, &b->req, on_work, on_after_work) != 0)
        on_after_work(&b->req, UV_EINVAL); /* only without a work callback */
}

void hsq_pool_check(hsq_pool *p, hsq_check *v, size_t n) {
    submit(p, CHECKS, v, n);
}

void hsq_pool_stage(hsq_pool *p, hsq_stage *v, size_t n) {
    /* One request each: a turn's uploads are written by the pool's threads
     * side by side, not one after another on one of them. */
    for (size_t i = 1; i < n; i++) {
        hsq_stage *one = hsq_xmalloc(sizeof *one);
        *one = v[i];
        submit(p, STAGES, one, 1);
    }
    submit(p, STAGES, v, n ? 1 : 0);
}

static void *collect(hsq_pool *p, kind k, size_t *n) {
    backlog *bl = &p->back[k];
    void *v = bl->v;
    *n = bl->n;
    memset(bl, 0, sizeof *bl);
    return v;
}

hsq_check *hsq_pool_checked(hsq_pool *p, size_t *n) {
    return collect(p, CHECKS, n);
}

hsq_stage *hsq_pool_staged(hsq_pool *p, size_t max, size_t *n) {
    backlog *bl = &p->back[STAGES];
    if (bl->n <= max)
        return collect(p, STAGES, n);
    hsq_stage *all = bl->v, *v = hsq_xmalloc(max * sizeof *v);
    memcpy(v, all, max * sizeof *v);
    memmove(all, all + max, (bl->n - max) * sizeof *all);
    bl->n -= max;
    *n = max;
    return v;
}

size_t hsq_pool_staged_left(const hsq_pool *p) {
    return p->back[STAGES].n;
}

size_t hsq_pool_busy(const hsq_pool *p) {
    return p->busy;
}

void hsq_pool_free(hsq_pool **pp) {
    hsq_pool *p = *pp;
    if (!p)
        return;
    assert(p->busy == 0);
    hsq_checks_free(p->back[CHECKS].v, p->back[CHECKS].n);
    hsq_stages_free(p->blob, p->back[STAGES].v, p->back[STAGES].n);
    hsq_blob_close(&p->blob);
    free(p);
    *pp = NULL;
}
