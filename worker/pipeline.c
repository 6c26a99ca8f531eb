/* pipeline.c - the headshot pipeline over a batch of jobs (see pipeline.h).
 *
 * DESIGN. A batch goes through six phases; phases 1, 3 and 5 are "parallel
 * for" loops over independent items (a job, or a job's output size) on the
 * pool, phases 2 and 4 are the model runs on the calling thread, 6 is
 * bookkeeping. Between phases every job's abort flag is read; a job that
 * failed or was aborted takes no further part (`live` = 0), so one job's
 * failure never touches another's.
 *
 *   1 decode   settings, portrait (reduced JPEG scale for the output sizes),
 *              clothing reference (-> its Lab stats), background reference
 *   2 detect   one BlazeFace run over all live portraits; no_face and
 *              face_too_small per job
 *   3 frame    if the portrait was decoded at a reduced scale and the face
 *              would be upscaled, decode again at full scale; a second
 *              detection on a levelled crop (one run for the batch) refines
 *              the eye line; then render the frame of every output size;
 *              one group per distinct aspect
 *   4 segment  one selfie-segmentation run over every group's crop
 *   5 output   per (job, size): matte, masks, style x background, encode
 *   6 info     stage timings, face count and score
 *
 * Phase 5 carves its float planes from its thread's scratch block (see
 * scratch_get), and phase 1 decodes JPEG portraits into one of the pipe's
 * photo buffers (photo_take) until phase 3 is done with them; the pipe keeps
 * both from batch to batch.
 *
 * The pool is a mutex, two condition variables and a generation counter:
 * parallel_for publishes (fn, arg, n) under the lock, helpers and the caller
 * take item indexes under the same lock, the caller waits until all n have
 * finished. Items never share mutable state (each writes its own slot), so
 * the only synchronisation is the pool's lock.
 */
#include "worker/pipeline.h"

#include "common/alloc.h"
#include "common/clock.h"
#include "schemas/err.h"
#include "worker/compose.h"
#include "worker/face.h"
#include "worker/frame.h"
#include "worker/model/model.h"
#include "worker/seg.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Defaults when the settings name none (wire.h, PROTOCOL.md). */
static const hsq_wire_background default_bg = {HSQ_BG_VIGNETTE, {214, 214, 214}, {0, 0, 0}, 0};
static const hsq_wire_style default_style = {{"natural", 7}, 30, 50, 30, 80};

/* Stage indexes into jstate.ms and the info's stage list. */
enum { ST_DECODE, ST_DETECT, ST_FRAME, ST_SEGMENT, ST_MATTE, ST_COMPOSE, ST_ENCODE, ST_N };
static const char *const stage_name[ST_N] = {"decode", "detect",  "frame", "segment",
                                             "matte",  "compose", "encode"};

/* ---------------------------------------------------------------- pool */

/* tid: the thread running the item, 0 (the caller) .. nthr; an item may use
 * that thread's scratch (hsq_pipe.scratch) for the length of the call. */
typedef void (*item_fn)(void *arg, size_t i, int tid);

/* Grow-only memory of one pool thread, kept across batches: phase 5's
 * planes take about 51 bytes per output pixel with one background (67 MB at
 * 1024x1280), and fresh pages cost a fault each (about 0.6 ms per MB
 * measured, more than the arithmetic of some stages), so one block per
 * thread is reused from job to job instead. Retained: the largest phase 5
 * item the thread ran. */
typedef struct {
    void *p;
    size_t cap;
} scratch;

/* Decoded photos are the one large buffer a job holds across phases (36 MB
 * for 12 MP, alive from decode to frame, one per job of the batch), and a
 * fresh one costs about 20 ms of page faults, almost as much as the decode,
 * and its munmap 4 ms more. So the pipe keeps a few grow-only photo buffers
 * that jobs borrow from decode until their frames are rendered: as many as
 * the default max_batch, each at most PHOTO_KEEP_MAX bytes, so that what
 * stays allocated is bounded (4 x 48 MB); a job that finds none free, or a
 * larger photo, decodes into fresh memory as before. */
#define PHOTO_SLOTS 4
#define PHOTO_KEEP_MAX ((size_t)48 << 20)

typedef struct {
    void *p;
    size_t cap;
    int busy;
} photo_buf;

struct hsq_pipe;
typedef struct {
    struct hsq_pipe *p;
    int tid;
} helper;

struct hsq_pipe {
    hsq_model *face, *seg;
    hsq_model_ctx *face_ctx, *seg_ctx;
    hsq_img_limits lim;

    pthread_mutex_t mu;
    pthread_cond_t work;     /* a new generation, or quit */
    pthread_cond_t finished; /* ndone reached n */
    item_fn fn;
    void *arg;
    size_t n, next, ndone;
    uint64_t gen;
    int quit;
    int nthr;
    pthread_t thr[HSQ_PIPE_MAX_THREADS];
    helper helpers[HSQ_PIPE_MAX_THREADS];
    scratch scratch[HSQ_PIPE_MAX_THREADS]; /* [tid]; tid 0 is the caller */
    pthread_mutex_t photo_mu;              /* guards photos[].busy and their growth */
    photo_buf photos[PHOTO_SLOTS];
};

/* A free photo buffer of at least n bytes, marked busy: its index, or -1
 * (none free, n too large to keep, or no memory to grow one: the caller
 * then allocates as usual). */
static int photo_take(hsq_pipe *p, size_t n) {
    if (n > PHOTO_KEEP_MAX)
        return -1;
    pthread_mutex_lock(&p->photo_mu);
    /* The smallest free one that fits, else the largest free one, grown. */
    int fit = -1, grow = -1;
    for (int i = 0; i < PHOTO_SLOTS; i++) {
        size_t cap = p->photos[i].cap;
        if (p->photos[i].busy)
            continue;
        if (cap >= n && (fit < 0 || cap < p->photos[fit].cap))
            fit = i;
        else if (cap < n && (grow < 0 || cap > p->photos[grow].cap))
            grow = i;
    }
    int best = fit >= 0 ? fit : grow;
    if (best >= 0)
        p->photos[best].busy = 1;
    pthread_mutex_unlock(&p->photo_mu);
    if (best < 0)
        return -1;
    /* Growth outside the lock: the slot is ours while busy. */
    photo_buf *b = &p->photos[best];
    if (b->cap < n) {
        void *q = hsq_trymalloc(n);
        if (!q) {
            pthread_mutex_lock(&p->photo_mu);
            b->busy = 0;
            pthread_mutex_unlock(&p->photo_mu);
            return -1;
        }
        free(b->p);
        b->p = q;
        b->cap = n;
    }
    return best;
}

static void photo_give(hsq_pipe *p, int slot) {
    if (slot < 0)
        return;
    pthread_mutex_lock(&p->photo_mu);
    p->photos[slot].busy = 0;
    pthread_mutex_unlock(&p->photo_mu);
}

/* At least n bytes of thread tid's scratch, valid until the next call for
 * the same tid; NULL when that much cannot be had (the old block is kept). */
static void *scratch_get(hsq_pipe *p, int tid, size_t n) {
    scratch *s = &p->scratch[tid];
    if (n > s->cap) {
        void *q = hsq_trymalloc(n);
        if (!q)
            return NULL;
        free(s->p);
        s->p = q;
        s->cap = n;
    }
    return s->p;
}

/* Take and run items of the current generation until none are left. Called
 * with the lock held; returns with it held. */
static void run_items(hsq_pipe *p, int tid) {
    while (p->next < p->n) {
        size_t i = p->next++;
        item_fn fn = p->fn;
        void *arg = p->arg;
        pthread_mutex_unlock(&p->mu);
        fn(arg, i, tid);
        pthread_mutex_lock(&p->mu);
        if (++p->ndone == p->n)
            pthread_cond_signal(&p->finished);
    }
}

static void *helper_main(void *arg) {
    const helper *h = arg;
    hsq_pipe *p = h->p;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->gen == seen)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->quit)
            break;
        seen = p->gen;
        run_items(p, h->tid);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void parallel_for(hsq_pipe *p, size_t n, item_fn fn, void *arg) {
    if (n == 0)
        return;
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->next = 0;
    p->ndone = 0;
    p->gen++;
    pthread_cond_broadcast(&p->work);
    run_items(p, 0);
    while (p->ndone < p->n)
        pthread_cond_wait(&p->finished, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

/* ---------------------------------------------------------------- setup */

static int load_one(hsq_model **m, hsq_model_ctx **ctx, const char *dir, const char *file,
                    char *err, size_t errlen) {
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s", dir, file);
    if (n < 0 || (size_t)n >= sizeof path) {
        snprintf(err, errlen, "models_dir is too long");
        return HSQ_EINVAL;
    }
    char why[256] = "";
    int r = hsq_model_load(m, path, why, sizeof why);
    if (r) {
        snprintf(err, errlen, "cannot load model %s: %s (run scripts/models and set models_dir)",
                 path, why[0] ? why : hsq_strerror(r));
        return r;
    }
    r = hsq_model_ctx_new(ctx, *m);
    if (r)
        snprintf(err, errlen, "model %s: %s", path, hsq_strerror(r));
    return r;
}

int hsq_pipe_new(hsq_pipe **out, const char *models_dir, int threads, const hsq_img_limits *lim,
                 char *err, size_t errlen) {
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (threads < 1 || threads > HSQ_PIPE_MAX_THREADS || !models_dir) {
        snprintf(err, errlen, "threads must be 1..%d", HSQ_PIPE_MAX_THREADS);
        return HSQ_EINVAL;
    }
    hsq_pipe *p = hsq_xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->photo_mu, NULL);
    if (lim)
        p->lim = *lim;
    else
        hsq_img_limits_default(&p->lim);
    int r = load_one(&p->face, &p->face_ctx, models_dir, HSQ_PIPE_FACE_MODEL, err, errlen);
    if (!r)
        r = load_one(&p->seg, &p->seg_ctx, models_dir, HSQ_PIPE_SEG_MODEL, err, errlen);
    if (r) {
        hsq_pipe_free(&p);
        return r;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->finished, NULL);
    for (int i = 0; i < threads - 1; i++) {
        p->helpers[i] = (helper){p, i + 1};
        if (pthread_create(&p->thr[i], NULL, helper_main, &p->helpers[i]) != 0) {
            snprintf(err, errlen, "cannot start pipeline thread %d", i + 1);
            hsq_pipe_free(&p);
            return HSQ_ENOMEM;
        }
        p->nthr++;
    }
    *out = p;
    return 0;
}

void hsq_pipe_free(hsq_pipe **pp) {
    hsq_pipe *p = *pp;
    if (!p)
        return;
    if (p->face_ctx && p->seg_ctx) { /* the pool was initialised */
        pthread_mutex_lock(&p->mu);
        p->quit = 1;
        pthread_cond_broadcast(&p->work);
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < p->nthr; i++)
            pthread_join(p->thr[i], NULL);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->work);
        pthread_cond_destroy(&p->finished);
    }
    hsq_model_ctx_free(&p->face_ctx);
    hsq_model_ctx_free(&p->seg_ctx);
    hsq_model_free(&p->face);
    hsq_model_free(&p->seg);
    for (int i = 0; i < HSQ_PIPE_MAX_THREADS; i++)
        free(p->scratch[i].p);
    for (int i = 0; i < PHOTO_SLOTS; i++)
        free(p->photos[i].p);
    pthread_mutex_destroy(&p->photo_mu);
    free(p);
    *pp = NULL;
}

uint64_t hsq_pipe_face_macs(const hsq_pipe *p) {
    return hsq_model_macs(p->face);
}
uint64_t hsq_pipe_seg_macs(const hsq_pipe *p) {
    return hsq_model_macs(p->seg);
}

void hsq_pipe_settings_effective(hsq_wire_settings *s) {
    if (s->n_backgrounds == 0) {
        s->n_backgrounds = 1;
        s->backgrounds[0] = default_bg;
    }
    if (s->n_styles == 0) {
        s->n_styles = 1;
        s->styles[0] = default_style;
    }
}

uint32_t hsq_pipe_dpi_for(const hsq_wire_settings *s, uint32_t w, uint32_t h) {
    if (s->dpi)
        return s->dpi;
    for (const hsq_frame_preset *pr = hsq_frame_presets; pr->name; pr++)
        if (pr->w == w && pr->h == h && pr->dpi)
            return pr->dpi;
    return 0;
}

void hsq_pipe_job_clear(hsq_pipe_job *j) {
    for (uint32_t i = 0; i < j->n_out; i++)
        free(j->out[i].data);
    j->n_out = 0;
    memset(j->out, 0, sizeof j->out);
    j->err = 0;
    j->retryable = 0;
    j->aborted = 0;
    j->errmsg[0] = '\0';
    memset(&j->info, 0, sizeof j->info);
}

/* ---------------------------------------------------------------- batch state */

typedef struct {
    uint32_t w, h; /* the largest size of this aspect: the crop segmented */
    int spec;      /* its spec index */
    float *mask;   /* HSQ_SEG_INPUT^2, from phase 4 */
} group;

typedef struct {
    hsq_frame_xf xf;
    hsq_img frame;
    uint8_t *cov;
    int group;
    uint64_t us[ST_N]; /* phase 5 time of this size, per stage */
    int err;           /* phase 5 failure of this size (items of one job run
                          concurrently, so each writes only its own slot) */
    char errmsg[64];
} spec_state;

typedef struct {
    hsq_pipe_job *j;
    int live;
    hsq_wire_settings set; /* effective */
    hsq_img portrait, bgref;
    int photo;               /* the pipe's photo buffer portrait.rgb lives in, or -1: owned */
    uint32_t full_w, full_h; /* the portrait at full decode scale */
    int has_cloth;
    hsq_cmp_lab_stats cloth;
    hsq_face_result faces;
    hsq_face subject;       /* in portrait (decoded) pixels */
    hsq_frame_xf align_xf;  /* the levelling pass's square crop */
    hsq_img align, align_m; /* the crop and its mirror image */
    uint32_t n_groups;
    group groups[HSQ_MAX_OUTPUTS];
    spec_state sp[HSQ_MAX_OUTPUTS];
    uint64_t us[ST_N];
} jstate;

typedef struct hsq_pipe_batch {
    hsq_pipe *p;
    jstate *js;
    size_t n;
    size_t items[HSQ_MAX_BATCH * HSQ_MAX_OUTPUTS]; /* phase 5: job * HSQ_MAX_OUTPUTS + spec */
} batch;

static uint64_t now_us(void) {
    return hsq_clock_mono_us();
}

static void fail(jstate *s, int err, int retryable, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail(jstate *s, int err, int retryable, const char *fmt, ...) {
    if (!s->live)
        return;
    s->live = 0;
    s->j->err = err;
    s->j->retryable = retryable;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->j->errmsg, sizeof s->j->errmsg, fmt, ap);
    va_end(ap);
}

/* Between phases: a job whose abort flag is set stops here. */
static void check_aborts(batch *b) {
    for (size_t i = 0; i < b->n; i++) {
        jstate *s = &b->js[i];
        if (s->live && s->j->abort && atomic_load(s->j->abort)) {
            fail(s, HSQ_ECANCELLED, 0, "aborted");
            s->j->aborted = 1;
        }
    }
}

/* ---------------------------------------------------------------- 1 decode */

/* Release the portrait: back to the pipe's buffers, or freed. */
static void portrait_free(hsq_pipe *p, jstate *s) {
    if (s->photo >= 0) {
        photo_give(p, s->photo);
        s->photo = -1;
        s->portrait = (hsq_img){0};
    } else {
        hsq_img_free(&s->portrait);
    }
}

/* dst, cap: memory to decode into (hsq_img_decode_opts), or NULL, 0. */
static int decode_input(jstate *s, const hsq_img_limits *lim, const hsq_pipe_input *in,
                        const char *what, const hsq_img_size *targets, size_t nt, uint8_t *dst,
                        size_t cap, hsq_img *out) {
    char msg[HSQ_IMG_MSG_MAX];
    hsq_img_decode_opts o = {lim, targets, nt, 0, what, in->name, dst, cap};
    int r = hsq_img_decode_ex(in->data, in->len, &o, out, msg, sizeof msg);
    if (r)
        fail(s, r, r == HSQ_ENOMEM, "decode: %s", msg);
    return r;
}

/* The clothing reference's garment colour, from a copy of at most 256 px a
 * side (the statistics need no more). */
static int cloth_stats(const hsq_img *ref, hsq_cmp_lab_stats *st) {
    uint32_t w = ref->w, h = ref->h;
    if (w > 256 || h > 256) {
        double k = 256.0 / (double)(w > h ? w : h);
        w = (uint32_t)fmax(1.0, round(w * k));
        h = (uint32_t)fmax(1.0, round(h * k));
    }
    hsq_img small = {0};
    int r = hsq_img_resize(ref, 0, 0, ref->w, ref->h, w, h, &small);
    if (r)
        return r;
    float *f = hsq_trymalloc((size_t)w * h * 3 * sizeof(float));
    if (!f) {
        hsq_img_free(&small);
        return HSQ_ENOMEM;
    }
    hsq_cmp_from_u8(small.rgb, w, h, f);
    r = hsq_cmp_cloth_ref_stats(f, w, h, NULL, st);
    free(f);
    hsq_img_free(&small);
    return r;
}

static void phase_decode(void *arg, size_t i, int tid) {
    (void)tid;
    batch *b = arg;
    jstate *s = &b->js[i];
    hsq_pipe_job *j = s->j;
    const hsq_img_limits *lim = &b->p->lim;
    uint64_t t0 = now_us();

    char err[256] = "";
    int r = hsq_wire_settings_decode(j->settings, &s->set, err, sizeof err);
    if (r) {
        fail(s, r, 0, "settings: %s", err);
        return;
    }
    hsq_pipe_settings_effective(&s->set);
    size_t nout = (size_t)s->set.n_backgrounds * s->set.n_styles * j->n_specs;
    if (j->n_specs == 0 || nout > HSQ_MAX_OUTPUTS) {
        fail(s, HSQ_EBADREQ, 0, "settings: %zu outputs requested; 1..%d allowed", nout,
             HSQ_MAX_OUTPUTS);
        return;
    }
    int wants_ref = 0;
    for (uint32_t k = 0; k < s->set.n_backgrounds; k++)
        wants_ref |= s->set.backgrounds[k].kind == HSQ_BG_REFERENCE;
    if (!j->portrait.data) {
        fail(s, HSQ_EBADREQ, 0, "decode: job has no portrait input");
        return;
    }
    if (wants_ref && !j->background.data) {
        fail(s, HSQ_EBADREQ, 0, "settings: a reference background needs a background photo");
        return;
    }

    hsq_img_size targets[HSQ_MAX_OUTPUTS];
    for (uint32_t k = 0; k < j->n_specs; k++)
        targets[k] = (hsq_img_size){j->specs[k].width, j->specs[k].height};
    hsq_img_info info;
    int probed = hsq_img_probe(j->portrait.data, j->portrait.len, lim, &info);
    if (probed == 0) {
        s->full_w = info.w;
        s->full_h = info.h;
    }
    /* Probed at full size, which any reduced decode scale fits in too. */
    s->photo = probed == 0 ? photo_take(b->p, (size_t)info.w * info.h * 3) : -1;
    uint8_t *dst = s->photo >= 0 ? b->p->photos[s->photo].p : NULL;
    r = decode_input(s, lim, &j->portrait, "portrait", targets, j->n_specs, dst,
                     dst ? b->p->photos[s->photo].cap : 0, &s->portrait);
    if (s->photo >= 0 && (r || s->portrait.rgb != dst)) { /* not used after all */
        photo_give(b->p, s->photo);
        s->photo = -1;
    }
    if (r)
        goto out;
    if (probed) { /* probe failed but decode did not: cannot happen; be safe */
        s->full_w = s->portrait.w;
        s->full_h = s->portrait.h;
    }
    if (wants_ref &&
        decode_input(s, lim, &j->background, "background", targets, j->n_specs, NULL, 0, &s->bgref))
        goto out;
    if (j->clothing.data) {
        /* Only a style with clothing > 0 uses it, but a bad file is still
         * an error the client should hear about. */
        hsq_img cl = {0};
        hsq_img_size small = {128, 128};
        if (decode_input(s, lim, &j->clothing, "clothing", &small, 1, NULL, 0, &cl))
            goto out;
        r = cloth_stats(&cl, &s->cloth);
        hsq_img_free(&cl);
        if (r == HSQ_ENOMEM) {
            fail(s, r, 1, "decode: clothing: out of memory");
            goto out;
        }
        s->has_cloth = r == 0; /* a degenerate reference recolours nothing */
    }
out:
    s->us[ST_DECODE] += now_us() - t0;
}

/* ---------------------------------------------------------------- 2 detect */

static float max_face_px(const hsq_pipe_job *j) {
    float m = 0;
    for (uint32_t k = 0; k < j->n_specs; k++) {
        float f = hsq_frame_face_px(j->specs[k].width, j->specs[k].height);
        if (f > m)
            m = f;
    }
    return m;
}

static void phase_detect(batch *b) {
    const hsq_img *imgs[HSQ_MAX_BATCH];
    jstate *who[HSQ_MAX_BATCH];
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++)
        if (b->js[i].live) {
            who[n] = &b->js[i];
            imgs[n++] = &b->js[i].portrait;
        }
    if (n == 0)
        return;
    hsq_face_result *res = hsq_trymalloc(n * sizeof *res);
    uint64_t t0 = now_us();
    int r = res ? hsq_face_detect(b->p->face_ctx, b->p->face, imgs, n, res) : HSQ_ENOMEM;
    uint64_t dt = now_us() - t0;
    for (size_t k = 0; k < n; k++) {
        jstate *s = who[k];
        s->us[ST_DETECT] = dt;
        if (r) {
            fail(s, r == HSQ_ENOMEM ? r : HSQ_EINTERNAL, 1, "detect: %s", hsq_strerror(r));
            continue;
        }
        s->faces = res[k];
        char msg[512];
        int e = hsq_face_check_found(&s->faces, s->j->portrait.name, msg, sizeof msg);
        if (e) {
            fail(s, e, 0, "detect: %s", msg);
            continue;
        }
        s->subject = s->faces.faces[s->faces.subject];
        /* Size rule on the photo's full resolution. */
        hsq_face full = s->subject;
        float k_full = (float)s->full_w / (float)s->portrait.w;
        full.x0 *= k_full;
        full.x1 *= k_full;
        e = hsq_face_check_size(&full, max_face_px(s->j), s->j->portrait.name, msg, sizeof msg);
        if (e) {
            fail(s, e, 0, "detect: %s", msg);
            continue;
        }
    }
    free(res);
}

/* ---------------------------------------------------------------- 3 frame */

static void scale_face(hsq_face *f, float k) {
    f->x0 *= k;
    f->y0 *= k;
    f->x1 *= k;
    f->y1 *= k;
    for (int i = 0; i < HSQ_FACE_KP_COUNT; i++) {
        f->kp[i].x *= k;
        f->kp[i].y *= k;
    }
}

/* Keypoints from a small photo are coarse: on astronaut.png the eye line
 * BlazeFace reports on the whole 512 px photo is tilted by 10 degrees, on a
 * head-and-shoulders crop of the same photo by 3. So the eyes are levelled
 * in two passes: frame a square crop from the first detection (prep), detect
 * again on all crops and their mirror images in one run (phase_align), and
 * plan the outputs from that second detection mapped back to the photo. */
#define ALIGN_SIDE 320

static void phase_align_prep(void *arg, size_t i, int tid) {
    (void)tid;
    batch *b = arg;
    jstate *s = &b->js[i];
    if (!s->live)
        return;
    hsq_pipe_job *j = s->j;
    uint64_t t0 = now_us();

    /* A reduced-scale decode that would leave the face upscaled: decode the
     * whole photo again (rare: only small faces in large JPEGs). */
    float need = max_face_px(j);
    if (s->portrait.w < s->full_w && s->subject.x1 - s->subject.x0 < need) {
        hsq_img full = {0};
        uint64_t d0 = now_us();
        if (decode_input(s, &b->p->lim, &j->portrait, "portrait", NULL, 0, NULL, 0, &full))
            return;
        s->us[ST_DECODE] += now_us() - d0;
        scale_face(&s->subject, (float)full.w / (float)s->portrait.w);
        portrait_free(b->p, s);
        s->portrait = full;
    }
    if (hsq_frame_plan(&s->subject, ALIGN_SIDE, ALIGN_SIDE, &s->align_xf) == 0 &&
        hsq_frame_render(&s->portrait, &s->align_xf, &s->align, NULL) == 0) {
        size_t row = (size_t)ALIGN_SIDE * 3;
        s->align_m = (hsq_img){ALIGN_SIDE, ALIGN_SIDE, hsq_trymalloc(row * ALIGN_SIDE)};
        if (!s->align_m.rgb) {
            hsq_img_free(&s->align); /* no second pass for this job */
        } else {
            for (size_t y = 0; y < ALIGN_SIDE; y++)
                for (size_t x = 0; x < ALIGN_SIDE; x++)
                    memcpy(s->align_m.rgb + y * row + x * 3,
                           s->align.rgb + y * row + (ALIGN_SIDE - 1 - x) * 3, 3);
        }
    }
    s->us[ST_FRAME] += now_us() - t0;
}

/* The average of a detection on the crop and the mirrored detection on the
 * mirror image (x -> side - x, left and right swapped): BlazeFace's eye
 * keypoints carry a pose-dependent bias of a few degrees, which the mirror
 * turns around, so the average levels the eyes more truly than either. */
static hsq_face mirror_average(const hsq_face *a, const hsq_face *m, float side) {
    static const int swap[HSQ_FACE_KP_COUNT] = {1, 0, 2, 3, 5, 4};
    hsq_face o = *a;
    o.x0 = (a->x0 + side - m->x1) / 2;
    o.x1 = (a->x1 + side - m->x0) / 2;
    o.y0 = (a->y0 + m->y0) / 2;
    o.y1 = (a->y1 + m->y1) / 2;
    for (int q = 0; q < HSQ_FACE_KP_COUNT; q++) {
        o.kp[q].x = (a->kp[q].x + side - m->kp[swap[q]].x) / 2;
        o.kp[q].y = (a->kp[q].y + m->kp[swap[q]].y) / 2;
    }
    return o;
}

static void phase_align(batch *b) {
    const hsq_img *imgs[2 * HSQ_MAX_BATCH];
    jstate *who[HSQ_MAX_BATCH];
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++)
        if (b->js[i].live && b->js[i].align.rgb)
            who[n++] = &b->js[i];
    /* One model run: crops first, then their mirrors (<= 64 each run). */
    uint64_t t0 = now_us();
    for (size_t base = 0; base < n; base += 32) {
        size_t m = n - base < 32 ? n - base : 32;
        for (size_t k = 0; k < m; k++) {
            imgs[k] = &who[base + k]->align;
            imgs[m + k] = &who[base + k]->align_m;
        }
        hsq_face_result *res = hsq_trymalloc(2 * m * sizeof *res);
        int r = res ? hsq_face_detect(b->p->face_ctx, b->p->face, imgs, 2 * m, res) : HSQ_ENOMEM;
        for (size_t k = 0; k < m && !r; k++) {
            jstate *s = who[base + k];
            if (res[k].subject < 0 || res[m + k].subject < 0)
                continue; /* keep the first detection */
            hsq_face f = mirror_average(&res[k].faces[res[k].subject],
                                        &res[m + k].faces[res[m + k].subject], ALIGN_SIDE);
            const hsq_frame_xf *xf = &s->align_xf;
            hsq_face o = f;
            float cx, cy;
            hsq_frame_to_src(xf, (f.x0 + f.x1) / 2, (f.y0 + f.y1) / 2, &cx, &cy);
            float hw = (f.x1 - f.x0) / xf->scale / 2, hh = (f.y1 - f.y0) / xf->scale / 2;
            o.x0 = cx - hw;
            o.x1 = cx + hw;
            o.y0 = cy - hh;
            o.y1 = cy + hh;
            for (int q = 0; q < HSQ_FACE_KP_COUNT; q++)
                hsq_frame_to_src(xf, f.kp[q].x, f.kp[q].y, &o.kp[q].x, &o.kp[q].y);
            o.score = s->subject.score; /* report the photo's own detection */
            s->subject = o;
        }
        free(res);
    }
    uint64_t dt = now_us() - t0;
    for (size_t k = 0; k < n; k++) {
        who[k]->us[ST_DETECT] += dt;
        hsq_img_free(&who[k]->align);
        hsq_img_free(&who[k]->align_m);
    }
}

static void phase_frame(void *arg, size_t i, int tid) {
    (void)tid;
    batch *b = arg;
    jstate *s = &b->js[i];
    if (!s->live)
        return;
    hsq_pipe_job *j = s->j;
    uint64_t t0 = now_us();

    for (uint32_t k = 0; k < j->n_specs; k++) {
        spec_state *sp = &s->sp[k];
        uint32_t w = j->specs[k].width, h = j->specs[k].height;
        int r = hsq_frame_plan(&s->subject, w, h, &sp->xf);
        if (r) {
            fail(s, HSQ_ENOFACE, 0, "frame: the face in %s cannot be framed",
                 j->portrait.name && j->portrait.name[0] ? j->portrait.name : "the portrait");
            return;
        }
        sp->cov = hsq_trymalloc((size_t)w * h);
        r = sp->cov ? hsq_frame_render(&s->portrait, &sp->xf, &sp->frame, sp->cov) : HSQ_ENOMEM;
        if (r) {
            fail(s, r == HSQ_ENOMEM ? r : HSQ_EINTERNAL, r == HSQ_ENOMEM, "frame: %s",
                 hsq_strerror(r));
            return;
        }
        /* Same aspect (exact ratio) = same mapping up to scale: one group,
         * segmented once at its largest size. */
        uint32_t g = 0;
        for (; g < s->n_groups; g++)
            if ((uint64_t)s->groups[g].w * h == (uint64_t)w * s->groups[g].h)
                break;
        if (g == s->n_groups) {
            s->groups[g] = (group){w, h, (int)k, NULL};
            s->n_groups++;
        } else if (w > s->groups[g].w) {
            s->groups[g].w = w;
            s->groups[g].h = h;
            s->groups[g].spec = (int)k;
        }
        sp->group = (int)g;
    }
    portrait_free(b->p, s); /* the frames hold everything from here on */
    s->us[ST_FRAME] += now_us() - t0;
}

/* ---------------------------------------------------------------- 4 segment */

static void phase_segment(batch *b) {
    const hsq_img *crops[64];
    group *dst[64];
    jstate *own[64];
    size_t n = 0, total = 0;
    uint64_t t0 = now_us();
    int r = 0;
    const size_t per = (size_t)HSQ_SEG_INPUT * HSQ_SEG_INPUT;
    /* Chunks of at most 64 crops (the runtime's batch limit). */
    for (size_t i = 0; i <= b->n; i++) {
        int flush = i == b->n;
        if (!flush) {
            jstate *s = &b->js[i];
            if (!s->live)
                continue;
            if (n + s->n_groups > 64)
                flush = 1, i--; /* run what we have, then revisit job i */
            else
                for (uint32_t g = 0; g < s->n_groups; g++) {
                    crops[n] = &s->sp[s->groups[g].spec].frame;
                    dst[n] = &s->groups[g];
                    own[n++] = s;
                }
        }
        if (!flush || n == 0)
            continue;
        float *masks = hsq_trymalloc(n * per * sizeof(float));
        r = masks ? hsq_seg_run(b->p->seg_ctx, b->p->seg, crops, n, masks) : HSQ_ENOMEM;
        for (size_t k = 0; k < n; k++) {
            if (r) {
                fail(own[k], r == HSQ_ENOMEM ? r : HSQ_EINTERNAL, 1, "segment: %s",
                     hsq_strerror(r));
                continue;
            }
            dst[k]->mask = hsq_trymalloc(per * sizeof(float));
            if (!dst[k]->mask) {
                fail(own[k], HSQ_ENOMEM, 1, "segment: %s", hsq_strerror(HSQ_ENOMEM));
                continue;
            }
            memcpy(dst[k]->mask, masks + k * per, per * sizeof(float));
        }
        free(masks);
        total += n;
        n = 0;
        if (i == b->n)
            break;
    }
    uint64_t dt = now_us() - t0;
    for (size_t i = 0; i < b->n; i++)
        if (b->js[i].n_groups)
            b->js[i].us[ST_SEGMENT] = dt;
    (void)total;
}

/* ---------------------------------------------------------------- 5 output */

static float smoothstep(float e0, float e1, float x) {
    float t = (x - e0) / (e1 - e0);
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    return t * t * (3 - 2 * t);
}

/* Face region (an ellipse around the detection, soft edge) and clothing
 * region (the person below the chin line), both times alpha. The chin line
 * comes from the keypoints: the mouth plus 0.75 of the eye-to-mouth
 * distance; the garment starts 0.6 of that distance lower (the neck) and is
 * fully in 1.2 below. */
static void region_masks(const hsq_face *f, const float *alpha, uint32_t w, uint32_t h, float *face,
                         float *cloth) {
    float ey = (f->kp[HSQ_FACE_KP_REYE].y + f->kp[HSQ_FACE_KP_LEYE].y) / 2;
    float my = f->kp[HSQ_FACE_KP_MOUTH].y;
    float d = my - ey > 1 ? my - ey : 1;
    float chin = my + 0.75f * d;
    float c0 = chin + 0.6f * d, c1 = chin + 1.2f * d;
    float cx = (f->x0 + f->x1) / 2, cy = (f->y0 + f->y1) / 2 - 0.08f * (f->y1 - f->y0);
    float rx = 0.58f * (f->x1 - f->x0), ry = 0.68f * (f->y1 - f->y0);
    for (uint32_t y = 0; y < h; y++) {
        float py = (float)y + 0.5f;
        float cl = smoothstep(c0, c1, py);
        float dy = (py - cy) / ry;
        for (uint32_t x = 0; x < w; x++) {
            size_t i = (size_t)y * w + x;
            float dx = ((float)x + 0.5f - cx) / rx;
            float e = sqrtf(dx * dx + dy * dy);
            float fm = 1.0f - smoothstep(0.8f, 1.0f, e);
            face[i] = fm * alpha[i];
            cloth[i] = cl * (1.0f - fm) * alpha[i];
        }
    }
}

static void make_background(const hsq_wire_background *bg, const hsq_img *ref, uint32_t w,
                            uint32_t h, float *out, int *rc) {
    float c1[3], c2[3];
    for (int k = 0; k < 3; k++) {
        c1[k] = bg->color[k] / 255.0f;
        c2[k] = bg->color2[k] / 255.0f;
    }
    switch (bg->kind) {
    case HSQ_BG_SOLID:
        *rc = hsq_cmp_bg_solid(out, w, h, c1);
        break;
    case HSQ_BG_GRADIENT:
        *rc = hsq_cmp_bg_gradient(out, w, h, c1, c2);
        break;
    case HSQ_BG_REFERENCE:
        *rc = hsq_cmp_bg_image(ref, w, h, (float)bg->blur_px, out);
        break;
    default: {
        hsq_cmp_vignette v;
        hsq_cmp_vignette_default(&v, c1);
        *rc = hsq_cmp_bg_vignette(out, w, h, &v);
        break;
    }
    }
}

static void phase_output(void *arg, size_t item, int tid) {
    batch *b = arg;
    size_t ji = b->items[item] / HSQ_MAX_OUTPUTS;
    uint32_t k = (uint32_t)(b->items[item] % HSQ_MAX_OUTPUTS);
    jstate *s = &b->js[ji];
    hsq_pipe_job *j = s->j;
    spec_state *sp = &s->sp[k];
    const hsq_wire_outspec *os = &j->specs[k];
    uint32_t w = os->width, h = os->height;
    size_t npx = (size_t)w * h;
    const hsq_wire_settings *set = &s->set;
    uint32_t nb = set->n_backgrounds, ns = set->n_styles;
    int r = 0;
    const char *stage = "matte";

    /* matte: alpha at full size, the photo's coverage, foreground colour */
    uint64_t t0 = now_us();
    /* The planes, carved from this thread's scratch. The photo's float copy
     * is needed only until the foreground colour exists, so the styled
     * foreground reuses it; with one background the composite is written
     * over the styled foreground (hsq_cmp_composite allows out == fg), which
     * is rebuilt from fg for each style anyway. */
    const size_t pl = npx * sizeof(float);
    const size_t ncomp = nb > 1 ? 3 : 0;
    float *base =
        scratch_get(b->p, tid, pl * (3 + 1 + 3 + 1 + 1 + ncomp + 3 * (size_t)nb) + npx * 3);
    if (!base) {
        r = HSQ_ENOMEM;
        goto out;
    }
    float *rgb = base, *alpha = rgb + 3 * npx, *fg = alpha + npx, *face = fg + 3 * npx;
    float *cloth = face + npx, *bgs = cloth + npx, *comp = bgs + 3 * npx * nb;
    uint8_t *u8 = (uint8_t *)(comp + ncomp * npx);
    float *sty = rgb;
    if (nb == 1)
        comp = sty;
    hsq_cmp_from_u8(sp->frame.rgb, w, h, rgb);
    r = hsq_cmp_matte_refine(rgb, w, h, s->groups[sp->group].mask, HSQ_SEG_INPUT, HSQ_SEG_INPUT,
                             NULL, alpha);
    if (r)
        goto out;
    for (size_t i = 0; i < npx; i++)
        alpha[i] *= sp->cov[i] * (1.0f / 255.0f);
    r = hsq_cmp_fg_estimate(rgb, alpha, w, h, fg);
    if (r)
        goto out;
    hsq_face fo;
    hsq_frame_face_to_out(&sp->xf, &s->subject, &fo);
    region_masks(&fo, alpha, w, h, face, cloth);
    sp->us[ST_MATTE] += now_us() - t0;

    /* backgrounds, once per size */
    t0 = now_us();
    stage = "compose";
    for (uint32_t bi = 0; bi < nb && !r; bi++)
        make_background(&set->backgrounds[bi], &s->bgref, w, h, bgs + bi * npx * 3, &r);
    if (r)
        goto out;
    sp->us[ST_COMPOSE] += now_us() - t0;

    uint32_t dpi = hsq_pipe_dpi_for(set, w, h);
    for (uint32_t si = 0; si < ns; si++) {
        const hsq_wire_style *st = &set->styles[si];
        t0 = now_us();
        stage = "compose";
        memcpy(sty, fg, npx * 3 * sizeof(float));
        if (s->has_cloth && st->clothing) {
            hsq_cmp_cloth cp;
            hsq_cmp_cloth_default(&cp);
            cp.strength = st->clothing / 100.0f;
            r = hsq_cmp_cloth_transfer(sty, w, h, cloth, &s->cloth, &cp);
        }
        if (!r && st->retouch)
            r = hsq_cmp_skin_smooth(sty, w, h, face, st->retouch / 100.0f, 0);
        if (!r && st->tone)
            r = hsq_cmp_tone(sty, w, h, alpha, st->tone / 100.0f);
        if (r)
            goto out;
        sp->us[ST_COMPOSE] += now_us() - t0;
        for (uint32_t bi = 0; bi < nb; bi++) {
            t0 = now_us();
            stage = "compose";
            r = hsq_cmp_composite(sty, bgs + bi * npx * 3, alpha, w, h, NULL, comp);
            if (!r && st->sharpen)
                r = hsq_cmp_sharpen(comp, w, h, st->sharpen / 100.0f, 0);
            if (!r)
                r = hsq_cmp_to_u8(comp, w, h, u8);
            if (r)
                goto out;
            sp->us[ST_COMPOSE] += now_us() - t0;

            t0 = now_us();
            stage = "encode";
            hsq_img im = {w, h, u8};
            uint8_t *enc = NULL;
            size_t len = 0;
            if (os->format == HSQ_FMT_PNG)
                r = hsq_img_encode_png(&im, dpi, &enc, &len);
            else
                r = hsq_img_encode_jpeg_dpi(&im, os->quality, dpi, &enc, &len);
            if (r)
                goto out;
            size_t idx = ((size_t)bi * ns + si) * j->n_specs + k;
            j->out[idx] = (hsq_pipe_output){enc,
                                            len,
                                            w,
                                            h,
                                            os->format == HSQ_FMT_PNG ? HSQ_FMT_PNG : HSQ_FMT_JPEG,
                                            (uint8_t)bi,
                                            (uint8_t)si,
                                            (uint8_t)k};
            sp->us[ST_ENCODE] += now_us() - t0;
        }
    }
out:
    if (r) {
        sp->err = r;
        snprintf(sp->errmsg, sizeof sp->errmsg, "%s: %s", stage, hsq_strerror(r));
    }
}

/* ---------------------------------------------------------------- run */

static void finish_info(jstate *s) {
    hsq_pipe_job *j = s->j;
    j->info.faces = s->faces.n;
    j->info.face_score = s->faces.subject >= 0 ? (uint32_t)lroundf(s->subject.score * 1000.0f) : 0;
    j->info.backend = HSQ_STR_LIT("cpu");
    j->info.n_stages = 0;
    for (int st = 0; st < ST_N; st++) {
        if (s->us[st] == 0 && !(st == ST_DECODE))
            continue;
        snprintf(j->stage_names[j->info.n_stages], HSQ_PIPE_STAGE_LEN, "%s", stage_name[st]);
        j->info.stages[j->info.n_stages].name = hsq_str_c(j->stage_names[j->info.n_stages]);
        j->info.stages[j->info.n_stages].ms = (uint32_t)((s->us[st] + 500) / 1000);
        j->info.n_stages++;
    }
}

static batch *batch_new(hsq_pipe *p, hsq_pipe_job *const *jobs, size_t n) {
    batch *b = hsq_xcalloc(1, sizeof *b);
    b->p = p;
    b->n = n;
    b->js = hsq_xcalloc(n, sizeof *b->js);
    for (size_t i = 0; i < n; i++) {
        hsq_pipe_job_clear(jobs[i]);
        b->js[i].j = jobs[i];
        b->js[i].live = 1;
        b->js[i].faces.subject = -1;
        b->js[i].photo = -1;
    }
    check_aborts(b);
    return b;
}

static void batch_finish(hsq_pipe *p, batch *b);

int hsq_pipe_run(hsq_pipe *p, hsq_pipe_job *const *jobs, size_t n) {
    if (!p || n < 1 || n > HSQ_MAX_BATCH)
        return HSQ_EINVAL;
    batch *b = batch_new(p, jobs, n);
    parallel_for(p, n, phase_decode, b);
    batch_finish(p, b);
    return 0;
}

int hsq_pipe_decode(hsq_pipe *p, hsq_pipe_job *const *jobs, size_t n, hsq_pipe_batch **out) {
    *out = NULL;
    if (!p || n < 1 || n > HSQ_MAX_BATCH)
        return HSQ_EINVAL;
    /* On the calling thread only: the pool may be running another batch's
     * later phases right now (parallel_for serves one caller at a time). */
    batch *b = batch_new(p, jobs, n);
    for (size_t i = 0; i < n; i++)
        if (b->js[i].live)
            phase_decode(b, i, 0);
    *out = b;
    return 0;
}

void hsq_pipe_finish(hsq_pipe *p, hsq_pipe_batch **b) {
    if (!*b)
        return;
    batch_finish(p, *b);
    *b = NULL;
}

/* Phases 2-6 of a decoded batch, then its cleanup; frees b. */
static void batch_finish(hsq_pipe *p, batch *b) {
    size_t n = b->n;
    check_aborts(b);
    phase_detect(b);
    check_aborts(b);
    parallel_for(p, n, phase_align_prep, b);
    phase_align(b);
    check_aborts(b);
    parallel_for(p, n, phase_frame, b);
    check_aborts(b);
    phase_segment(b);
    check_aborts(b);

    size_t ni = 0;
    for (size_t i = 0; i < n; i++)
        if (b->js[i].live)
            for (uint32_t k = 0; k < b->js[i].j->n_specs; k++)
                b->items[ni++] = i * HSQ_MAX_OUTPUTS + k;
    parallel_for(p, ni, phase_output, b);

    for (size_t i = 0; i < n; i++) {
        jstate *s = &b->js[i];
        hsq_pipe_job *j = s->j;
        if (s->live) {
            for (uint32_t k = 0; k < j->n_specs; k++) {
                spec_state *sp = &s->sp[k];
                if (sp->err) {
                    fail(s, sp->err == HSQ_ENOMEM ? HSQ_ENOMEM : HSQ_EINTERNAL, 1, "%s",
                         sp->errmsg);
                    break;
                }
                for (int st = ST_MATTE; st < ST_N; st++)
                    s->us[st] += sp->us[st];
            }
        }
        if (s->live && j->abort && atomic_load(j->abort)) {
            fail(s, HSQ_ECANCELLED, 0, "aborted");
            j->aborted = 1;
        }
        if (s->live) {
            j->n_out = s->set.n_backgrounds * s->set.n_styles * j->n_specs;
        } else {
            for (uint32_t o = 0; o < HSQ_MAX_OUTPUTS; o++) {
                free(j->out[o].data);
                j->out[o] = (hsq_pipe_output){0};
            }
            j->n_out = 0;
        }
        finish_info(s);
        portrait_free(p, s);
        hsq_img_free(&s->bgref);
        hsq_img_free(&s->align);
        hsq_img_free(&s->align_m);
        for (uint32_t k = 0; k < HSQ_MAX_OUTPUTS; k++) {
            hsq_img_free(&s->sp[k].frame);
            free(s->sp[k].cov);
        }
        for (uint32_t g = 0; g < s->n_groups; g++)
            free(s->groups[g].mask);
    }
    free(b->js);
    free(b);
}
