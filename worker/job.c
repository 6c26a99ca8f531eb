/* job.c - one job through the CPU pipeline (see job.h). */
#include "worker/job.h"

#include "worker/resize.h"

#include "common/alloc.h"
#include "schemas/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert((int)HSQ_IMG_JPEG == (int)HSQ_FMT_JPEG && (int)HSQ_IMG_PNG == (int)HSQ_FMT_PNG,
               "hsq_img_fmt mirrors hsq_fmt");

static void copy_str(char *dst, size_t cap, hsq_str s) {
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    if (n)
        memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

static int kind_index(hsq_str kind) {
    if (hsq_str_eq(kind, "portrait"))
        return HSQ_JOB_IN_PORTRAIT;
    if (hsq_str_eq(kind, "clothing"))
        return HSQ_JOB_IN_CLOTHING;
    if (hsq_str_eq(kind, "background"))
        return HSQ_JOB_IN_BACKGROUND;
    return -1;
}

int hsq_job_new(hsq_job **out, const hsq_wire_job *wj, const hsq_bytes *frames, size_t nframes) {
    hsq_job *j = hsq_xcalloc(1, sizeof *j);
    j->task = wj->task;
    j->token = wj->token;
    j->attempt = wj->attempt;
    atomic_init(&j->aborted, 0);
    copy_str(j->out_prefix, sizeof j->out_prefix, wj->out_prefix);
    j->n_specs = wj->n_outputs <= HSQ_MAX_OUTPUTS ? wj->n_outputs : HSQ_MAX_OUTPUTS;
    memcpy(j->specs, wj->outputs, sizeof(hsq_wire_outspec) * j->n_specs);
    if (wj->settings.len) {
        j->settings = hsq_trymalloc(wj->settings.len);
        if (!j->settings) {
            hsq_job_free(&j);
            return HSQ_ENOMEM;
        }
        memcpy(j->settings, wj->settings.ptr, wj->settings.len);
        j->settings_len = wj->settings.len;
    }

    for (uint32_t i = 0; i < wj->n_inputs && i < HSQ_MAX_INPUTS; i++) {
        const hsq_wire_input *in = &wj->inputs[i];
        int k = kind_index(in->kind);
        if (k < 0 || j->in[k].present)
            continue;
        j->in[k].present = 1;
        copy_str(j->in[k].name, sizeof j->in[k].name, in->name);
        if (in->key.len > 0) {
            copy_str(j->in[k].key, sizeof j->in[k].key, in->key);
            continue;
        }
        if (in->frame >= nframes) {
            hsq_job_free(&j);
            return HSQ_EBADREQ;
        }
        const hsq_bytes *f = &frames[in->frame];
        j->in[k].data = hsq_trymalloc(f->len ? f->len : 1);
        if (!j->in[k].data) {
            hsq_job_free(&j);
            return HSQ_ENOMEM;
        }
        if (f->len)
            memcpy(j->in[k].data, f->ptr, f->len);
        j->in[k].len = f->len;
    }
    j->has_portrait = j->in[HSQ_JOB_IN_PORTRAIT].present;
    *out = j;
    return 0;
}

static void drop_inputs(hsq_job *j) {
    for (int k = 0; k < 3; k++) {
        free(j->in[k].data);
        j->in[k].data = NULL;
        j->in[k].len = 0;
    }
}

void hsq_job_free(hsq_job **jp) {
    hsq_job *j = *jp;
    if (!j)
        return;
    drop_inputs(j);
    free(j->settings);
    free(j);
    *jp = NULL;
}

int hsq_job_output_key(const hsq_job *j, uint32_t i, uint8_t fmt, char *out, size_t outlen) {
    hsq_img_fmt f = fmt == HSQ_FMT_PNG ? HSQ_IMG_PNG : HSQ_IMG_JPEG;
    int n = snprintf(out, outlen, "%sout-%u-%llu.%s", j->out_prefix, i,
                     (unsigned long long)j->token, hsq_img_fmt_ext(f));
    if (n < 0 || (size_t)n >= outlen || n > HSQ_MAX_KEY_LEN || !hsq_blob_key_ok(out))
        return HSQ_EINVAL;
    return 0;
}

int hsq_job_delete_outputs(hsq_job *j, hsq_blob *blob) {
    int first = 0;
    for (uint32_t i = 0; i < j->n_out; i++) {
        int r = hsq_blob_delete(blob, j->out_keys[i]);
        if (r && !first)
            first = r;
    }
    j->n_out = 0;
    return first;
}

static int is_aborted(hsq_job *j) { return atomic_load(&j->aborted) != 0; }

static hsq_job_status set_failed(hsq_job *j, int err, int retryable, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static hsq_job_status set_failed(hsq_job *j, int err, int retryable, const char *fmt, ...) {
    j->status = HSQ_JOB_FAILED;
    j->err = err;
    j->retryable = retryable;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->errmsg, sizeof j->errmsg, fmt, ap);
    va_end(ap);
    return j->status;
}

/* "portrait 'me.jpg'" or "portrait" when the client sent no name. */
static void photo_label(const hsq_job *j, int k, char *out, size_t cap) {
    static const char *const what[3] = {"portrait", "clothing", "background"};
    if (j->in[k].name[0])
        snprintf(out, cap, "%s '%s'", what[k], j->in[k].name);
    else
        snprintf(out, cap, "%s", what[k]);
}

/* Storage errors travel as hsq codes: a full disk as disk_full, anything else
 * from the filesystem as store_error; all of them may succeed elsewhere or
 * later, so they are retryable. */
static int store_code(int r) {
    if (r == -ENOSPC || r == -EDQUOT)
        return HSQ_EDISKFULL;
    if (r == -ENOMEM || r == HSQ_ENOMEM)
        return HSQ_ENOMEM;
    if (r <= HSQ_ERR_BASE && r > HSQ_ERR_LAST_)
        return r;
    return HSQ_ESTORE;
}

static hsq_job_status fail_stored(hsq_job *j, hsq_blob *blob, hsq_job_status st) {
    hsq_job_delete_outputs(j, blob);
    return st;
}

/* Fetch the blob-store inputs of j into its in[].data. 0, or j FAILED. */
static int fetch(hsq_job *j, const hsq_job_env *env) {
    for (int k = 0; k < 3; k++) {
        if (!j->in[k].present || !j->in[k].key[0] || j->in[k].data)
            continue;
        char label[HSQ_MAX_NAME_LEN + 16];
        photo_label(j, k, label, sizeof label);
        uint8_t *data = NULL;
        size_t len = 0;
        int r = hsq_blob_get(env->blob, j->in[k].key, env->lim.max_bytes, &data, &len);
        if (r == HSQ_ETOOLARGE)
            set_failed(j, HSQ_EIMGTOOLARGE, 0, "fetch: %s: %s", label,
                       hsq_strerror(HSQ_EIMGTOOLARGE));
        else if (r == HSQ_EINVAL)
            set_failed(j, HSQ_EBADREQ, 0, "fetch: %s: invalid blob key", label);
        else if (r == -ENOENT)
            set_failed(j, HSQ_ESTORE, 1, "fetch: %s: input is missing from the blob store", label);
        else if (r)
            set_failed(j, store_code(r), 1, "fetch: %s: cannot read input: %s", label,
                       hsq_strerror(r));
        if (r)
            return r;
        j->in[k].data = data;
        j->in[k].len = len;
    }
    return 0;
}

static hsq_pipe_input pipe_input(const hsq_job *j, int k) {
    if (!j->in[k].present || !j->in[k].data)
        return (hsq_pipe_input){NULL, 0, NULL};
    return (hsq_pipe_input){j->in[k].data, j->in[k].len, j->in[k].name};
}

/* Store the pipeline's outputs of j under its keys and record them. */
static hsq_job_status store(hsq_job *j, hsq_pipe_job *pj, hsq_blob *blob) {
    for (uint32_t i = 0; i < pj->n_out; i++) {
        if (is_aborted(j))
            return fail_stored(j, blob, j->status = HSQ_JOB_ABORTED);
        const hsq_pipe_output *po = &pj->out[i];
        char *key = j->out_keys[i];
        if (hsq_job_output_key(j, i, po->format, key, sizeof j->out_keys[i]))
            return fail_stored(j, blob,
                               set_failed(j, HSQ_EINTERNAL, 0, "store: output %u: bad key", i));
        int r = hsq_blob_put(blob, key, po->data, po->len, HSQ_BLOB_SYNC);
        if (r)
            return fail_stored(j, blob,
                               set_failed(j, store_code(r), 1, "store: output %u: %s", i,
                                          hsq_strerror(r)));
        hsq_wire_output *o = &j->out[i];
        memset(o, 0, sizeof *o);
        o->key = hsq_str_c(key);
        o->size = po->len;
        hsq_sha256(po->data, po->len, o->sha256);
        o->width = po->width;
        o->height = po->height;
        o->format = po->format;
        o->background = po->background;
        o->style = po->style;
        o->spec = po->spec;
        j->n_out = i + 1;
    }
    return j->status = HSQ_JOB_DONE;
}

static void reset(hsq_job *j) {
    j->status = HSQ_JOB_PENDING;
    j->err = 0;
    j->retryable = 0;
    j->errmsg[0] = '\0';
    j->n_out = 0;
    j->info_len = 0;
}

struct hsq_job_batch {
    size_t m;            /* jobs that go through the pipeline */
    hsq_pipe_job *pj;    /* [n] */
    hsq_pipe_job **run;  /* [m] */
    hsq_job **who;       /* [m] */
    hsq_pipe_batch *dec; /* decoded by hsq_job_prepare_batch, or NULL */
};

/* Check and fetch every job; the ones that can run go into b->run. */
static hsq_job_batch *batch_prepare(hsq_job *const *jobs, size_t n, const hsq_job_env *env) {
    hsq_job_batch *b = hsq_xcalloc(1, sizeof *b);
    b->pj = hsq_xcalloc(n, sizeof *b->pj);
    b->run = hsq_xcalloc(n, sizeof *b->run);
    b->who = hsq_xcalloc(n, sizeof *b->who);
    for (size_t i = 0; i < n; i++) {
        hsq_job *j = jobs[i];
        reset(j);
        if (is_aborted(j)) {
            j->status = HSQ_JOB_ABORTED;
            continue;
        }
        if (!j->has_portrait) {
            set_failed(j, HSQ_EBADREQ, 0, "job has no portrait input");
            continue;
        }
        if (j->n_specs == 0) {
            set_failed(j, HSQ_EBADREQ, 0, "job requests no outputs");
            continue;
        }
        if (fetch(j, env))
            continue;
        hsq_pipe_job *p = &b->pj[b->m];
        p->portrait = pipe_input(j, HSQ_JOB_IN_PORTRAIT);
        p->clothing = pipe_input(j, HSQ_JOB_IN_CLOTHING);
        p->background = pipe_input(j, HSQ_JOB_IN_BACKGROUND);
        p->n_specs = j->n_specs;
        p->specs = j->specs;
        p->settings = (hsq_bytes){j->settings, j->settings_len};
        p->abort = &j->aborted;
        b->run[b->m] = p;
        b->who[b->m++] = j;
    }
    return b;
}

/* Store each job's outputs (or record its failure) and free b. */
static void batch_store(hsq_job_batch *b, const hsq_job_env *env) {
    for (size_t i = 0; i < b->m; i++) {
        hsq_job *j = b->who[i];
        hsq_pipe_job *p = b->run[i];
        drop_inputs(j); /* no longer needed */
        if (p->aborted || is_aborted(j)) {
            j->status = HSQ_JOB_ABORTED;
        } else if (p->err) {
            set_failed(j, p->err, p->retryable, "%s", p->errmsg);
        } else if (store(j, p, env->blob) == HSQ_JOB_DONE) {
            hsq_wbuf wb;
            hsq_wbuf_init(&wb);
            if (hsq_wire_info_encode(&p->info, &wb) == 0 && wb.len <= sizeof j->info) {
                memcpy(j->info, wb.data, wb.len);
                j->info_len = wb.len;
            }
            hsq_wbuf_free(&wb);
            if (is_aborted(j))
                fail_stored(j, env->blob, j->status = HSQ_JOB_ABORTED);
        }
        hsq_pipe_job_clear(p);
    }
    free(b->pj);
    free(b->run);
    free(b->who);
    free(b);
}

void hsq_job_run_batch(hsq_job *const *jobs, size_t n, const hsq_job_env *env) {
    hsq_job_batch *b = batch_prepare(jobs, n, env);
    if (b->m > 0 && env->pipe) {
        hsq_pipe_run(env->pipe, b->run, b->m);
    } else {
        for (size_t i = 0; i < b->m; i++)
            hsq_resize_run(b->run[i], &env->lim);
    }
    batch_store(b, env);
}

hsq_job_batch *hsq_job_prepare_batch(hsq_job *const *jobs, size_t n, const hsq_job_env *env) {
    hsq_job_batch *b = batch_prepare(jobs, n, env);
    if (b->m > 0 && env->pipe)
        hsq_pipe_decode(env->pipe, b->run, b->m, &b->dec);
    return b;
}

void hsq_job_finish_batch(hsq_job_batch *b, const hsq_job_env *env) {
    if (b->dec) {
        hsq_pipe_finish(env->pipe, &b->dec);
    } else if (!env->pipe) {
        for (size_t i = 0; i < b->m; i++)
            hsq_resize_run(b->run[i], &env->lim);
    }
    batch_store(b, env);
}

hsq_job_status hsq_job_run(hsq_job *j, const hsq_job_env *env) {
    hsq_job *one[1] = {j};
    hsq_job_run_batch(one, 1, env);
    return j->status;
}
