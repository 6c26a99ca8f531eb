/* job.c - one job through the CPU pipeline (see job.h). */
#include "worker/job.h"

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

int hsq_job_new(hsq_job **out, const hsq_wire_job *wj, const hsq_bytes *frames, size_t nframes) {
    hsq_job *j = hsq_xcalloc(1, sizeof *j);
    j->task = wj->task;
    j->token = wj->token;
    j->attempt = wj->attempt;
    atomic_init(&j->aborted, 0);
    copy_str(j->out_prefix, sizeof j->out_prefix, wj->out_prefix);
    j->n_specs = wj->n_outputs <= HSQ_MAX_OUTPUTS ? wj->n_outputs : HSQ_MAX_OUTPUTS;
    memcpy(j->specs, wj->outputs, sizeof(hsq_wire_outspec) * j->n_specs);

    for (uint32_t i = 0; i < wj->n_inputs && i < HSQ_MAX_INPUTS; i++) {
        const hsq_wire_input *in = &wj->inputs[i];
        if (!hsq_str_eq(in->kind, "portrait"))
            continue;
        j->has_portrait = 1;
        copy_str(j->in_name, sizeof j->in_name, in->name);
        if (in->key.len > 0) {
            copy_str(j->in_key, sizeof j->in_key, in->key);
        } else {
            if (in->frame >= nframes) {
                free(j);
                return HSQ_EBADREQ;
            }
            const hsq_bytes *f = &frames[in->frame];
            j->in_data = hsq_trymalloc(f->len);
            if (!j->in_data) {
                free(j);
                return HSQ_ENOMEM;
            }
            if (f->len)
                memcpy(j->in_data, f->ptr, f->len);
            j->in_len = f->len;
        }
        break;
    }
    *out = j;
    return 0;
}

void hsq_job_free(hsq_job **jp) {
    hsq_job *j = *jp;
    if (!j)
        return;
    free(j->in_data);
    free(j);
    *jp = NULL;
}

int hsq_job_output_key(const hsq_job *j, uint32_t i, char *out, size_t outlen) {
    hsq_img_fmt fmt = j->specs[i].format == HSQ_FMT_PNG ? HSQ_IMG_PNG : HSQ_IMG_JPEG;
    int n = snprintf(out, outlen, "%sout-%u-%llu.%s", j->out_prefix, i,
                     (unsigned long long)j->token, hsq_img_fmt_ext(fmt));
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
static void photo_label(const hsq_job *j, char *out, size_t cap) {
    if (j->in_name[0])
        snprintf(out, cap, "portrait '%s'", j->in_name);
    else
        snprintf(out, cap, "portrait");
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

static hsq_job_status run(hsq_job *j, const hsq_job_env *env) {
    char label[HSQ_MAX_NAME_LEN + 16];
    photo_label(j, label, sizeof label);

    if (is_aborted(j))
        return j->status = HSQ_JOB_ABORTED;
    if (!j->has_portrait)
        return set_failed(j, HSQ_EBADREQ, 0, "job has no portrait input");
    if (j->n_specs == 0)
        return set_failed(j, HSQ_EBADREQ, 0, "job requests no outputs");

    /* fetch */
    uint8_t *data = j->in_data;
    size_t len = j->in_len;
    uint8_t *fetched = NULL;
    if (j->in_key[0]) {
        int r = hsq_blob_get(env->blob, j->in_key, env->lim.max_bytes, &fetched, &len);
        if (r == HSQ_ETOOLARGE)
            return set_failed(j, HSQ_EIMGTOOLARGE, 0, "%s: %s", label,
                              hsq_strerror(HSQ_EIMGTOOLARGE));
        if (r == HSQ_EINVAL)
            return set_failed(j, HSQ_EBADREQ, 0, "%s: invalid blob key", label);
        if (r == -ENOENT)
            return set_failed(j, HSQ_ESTORE, 1, "%s: input is missing from the blob store", label);
        if (r)
            return set_failed(j, store_code(r), 1, "%s: cannot read input: %s", label,
                              hsq_strerror(r));
        data = fetched;
    }
    if (is_aborted(j)) {
        free(fetched);
        return j->status = HSQ_JOB_ABORTED;
    }

    /* decode, at a reduced JPEG scale when every output is much smaller */
    hsq_img_size targets[HSQ_MAX_OUTPUTS];
    for (uint32_t i = 0; i < j->n_specs; i++) {
        targets[i].w = j->specs[i].width;
        targets[i].h = j->specs[i].height;
    }
    hsq_img src = {0};
    int r = hsq_img_decode(data, len, &env->lim, targets, j->n_specs, &src);
    free(fetched);
    free(j->in_data); /* the input is no longer needed */
    j->in_data = NULL;
    j->in_len = 0;
    if (r == HSQ_ENOMEM)
        return set_failed(j, r, 1, "%s: out of memory while decoding", label);
    if (r)
        return set_failed(j, r, 0, "%s: %s", label, hsq_strerror(r));

    /* each output: crop + resize, encode, store */
    for (uint32_t i = 0; i < j->n_specs; i++) {
        const hsq_wire_outspec *sp = &j->specs[i];
        if (is_aborted(j)) {
            hsq_img_free(&src);
            return fail_stored(j, env->blob, j->status = HSQ_JOB_ABORTED);
        }
        char *key = j->out_keys[i];
        r = hsq_job_output_key(j, i, key, sizeof j->out_keys[i]);
        if (r) {
            hsq_img_free(&src);
            return fail_stored(j, env->blob,
                               set_failed(j, HSQ_EINTERNAL, 0, "output %u: bad output key", i));
        }
        hsq_img fit = {0};
        r = hsq_img_fit(&src, sp->width, sp->height, &fit);
        uint8_t *enc = NULL;
        size_t enclen = 0;
        if (r == 0) {
            if (sp->format == HSQ_FMT_PNG)
                r = hsq_img_encode_png(&fit, 0, &enc, &enclen);
            else
                r = hsq_img_encode_jpeg(&fit, sp->quality, &enc, &enclen);
        }
        hsq_img_free(&fit);
        if (r) {
            hsq_img_free(&src);
            return fail_stored(j, env->blob,
                               set_failed(j, r == HSQ_ENOMEM ? r : HSQ_EINTERNAL, 1,
                                          "output %u: %s", i, hsq_strerror(r)));
        }
        r = hsq_blob_put(env->blob, key, enc, enclen, HSQ_BLOB_SYNC);
        if (r) {
            free(enc);
            hsq_img_free(&src);
            return fail_stored(
                j, env->blob,
                set_failed(j, store_code(r), 1, "output %u: cannot store: %s", i, hsq_strerror(r)));
        }
        hsq_wire_output *o = &j->out[i];
        o->key = hsq_str_c(key);
        o->size = enclen;
        hsq_sha256(enc, enclen, o->sha256);
        o->width = sp->width;
        o->height = sp->height;
        o->format = sp->format == HSQ_FMT_PNG ? HSQ_FMT_PNG : HSQ_FMT_JPEG;
        j->n_out = i + 1;
        free(enc);
    }
    hsq_img_free(&src);
    if (is_aborted(j))
        return fail_stored(j, env->blob, j->status = HSQ_JOB_ABORTED);
    return j->status = HSQ_JOB_DONE;
}

hsq_job_status hsq_job_run(hsq_job *j, const hsq_job_env *env) {
    j->status = HSQ_JOB_PENDING;
    j->err = 0;
    j->retryable = 0;
    j->errmsg[0] = '\0';
    j->n_out = 0;
    return run(j, env);
}
