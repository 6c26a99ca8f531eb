/* test_pipeline.c - the whole headshot pipeline (worker/pipeline.h) on the
 * real models and sample photos.
 *
 * Usage: test_pipeline SRCDIR. Needs SRCDIR/models (scripts/models) and
 * SRCDIR/samples (scripts/samples); exits 77 without them.
 *
 * Checks: output sizes for the portrait, square and passport presets; the
 * eyes level on the output (the detector run again on it: eye y difference
 * < 2 % of the face width); the face centred horizontally within 3 % of the
 * width; a solid background exact in the top corners; a reference
 * background; the subject's share of the frame; no_face naming the photo;
 * a corrupt portrait naming the stage; a batch of 3 equal to 3 single runs;
 * combination order and indexes; DPI and the info map.
 */
#include "schemas/err.h"
#include "schemas/wire.h"
#include "test.h"
#include "worker/face.h"
#include "worker/img.h"
#include "worker/model/model.h"
#include "worker/pipeline.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n);
    if (fread(b, 1, (size_t)n, f) != (size_t)n)
        HSQ_FAIL_("short read %s", path);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static hsq_bytes settings_of(const hsq_wire_settings *s, hsq_wbuf *wb) {
    hsq_wbuf_reset(wb);
    HSQ_OK(hsq_wire_settings_encode(s, wb));
    return (hsq_bytes){(const uint8_t *)wb->data, wb->len};
}

static void job_init(hsq_pipe_job *j, const uint8_t *data, size_t len, const char *name,
                     const hsq_wire_outspec *specs, uint32_t n, hsq_bytes settings) {
    memset(j, 0, sizeof *j);
    j->portrait = (hsq_pipe_input){data, len, name};
    j->specs = specs;
    j->n_specs = n;
    j->settings = settings;
}

static hsq_model *face_m;
static hsq_model_ctx *face_ctx;

/* Decode an output and run the detector on it. */
static void check_framing(const hsq_pipe_output *o) {
    hsq_img im;
    if (getenv("HSQ_TEST_SAVE")) {
        char pth[256];
        snprintf(pth, sizeof pth, "%s/pipe-%ux%u.%s", getenv("HSQ_TEST_SAVE"), o->width,
                 o->height, o->format == HSQ_FMT_PNG ? "png" : "jpg");
        FILE *sf = fopen(pth, "wb");
        if (sf) {
            fwrite(o->data, 1, o->len, sf);
            fclose(sf);
        }
    }
    HSQ_OK(hsq_img_decode(o->data, o->len, NULL, NULL, 0, &im));
    HSQ_ASSERT_EQ(im.w, o->width);
    HSQ_ASSERT_EQ(im.h, o->height);
    /* Level = the eye line's slope, measured on the output and (negated) on
     * its mirror image and averaged: BlazeFace's eye keypoints carry a
     * pose-dependent bias of a few degrees that the mirror turns around. */
    hsq_img mir = {im.w, im.h, malloc((size_t)im.w * im.h * 3)};
    for (size_t y = 0; y < im.h; y++)
        for (size_t x = 0; x < im.w; x++)
            memcpy(mir.rgb + (y * im.w + x) * 3, im.rgb + (y * im.w + im.w - 1 - x) * 3, 3);
    hsq_face_result r[2];
    const hsq_img *two[2] = {&im, &mir};
    HSQ_OK(hsq_face_detect(face_ctx, face_m, two, 2, r));
    HSQ_ASSERT(r[0].n >= 1 && r[0].subject >= 0 && r[1].subject >= 0);
    const hsq_face *f = &r[0].faces[r[0].subject], *g = &r[1].faces[r[1].subject];
    float fw = f->x1 - f->x0;
    float ed = f->kp[HSQ_FACE_KP_LEYE].x - f->kp[HSQ_FACE_KP_REYE].x;
    float s0 = (f->kp[HSQ_FACE_KP_LEYE].y - f->kp[HSQ_FACE_KP_REYE].y) / ed;
    float s1 = (g->kp[HSQ_FACE_KP_LEYE].y - g->kp[HSQ_FACE_KP_REYE].y) /
               (g->kp[HSQ_FACE_KP_LEYE].x - g->kp[HSQ_FACE_KP_REYE].x);
    float dy = (s0 - s1) / 2 * ed;
    float cx = (f->x0 + f->x1) / 2;
    printf("  %ux%u: face w %.0f px (%.1f %% of w), eye dy %+.2f px (%.2f %% of face; "
           "plain %+.2f, mirror %+.2f), centre off %.2f %% of w, score %.3f\n",
           im.w, im.h, fw, 100.0 * fw / im.w, dy, 100.0 * dy / fw, s0 * ed, -s1 * ed,
           100.0 * fabs(cx - im.w / 2.0) / im.w, f->score);
    if (!(fabsf(dy) < 0.02f * fw))
        HSQ_FAIL_("eyes not level: dy %.2f, face w %.1f", dy, fw);
    if (!(fabsf(cx - (float)im.w / 2) < 0.03f * (float)im.w))
        HSQ_FAIL_("face not centred: cx %.1f of %u", cx, im.w);
    hsq_img_free(&mir);
    hsq_img_free(&im);
}

static int near_px(const uint8_t *p, const uint8_t c[3], int tol) {
    for (int k = 0; k < 3; k++)
        if (abs((int)p[k] - (int)c[k]) > tol)
            return 0;
    return 1;
}

/* Decoded output; the share of pixels far from the background colour. */
static double subject_share(const hsq_pipe_output *o, const uint8_t c[3], hsq_img *im) {
    HSQ_OK(hsq_img_decode(o->data, o->len, NULL, NULL, 0, im));
    size_t n = (size_t)im->w * im->h, far = 0;
    for (size_t i = 0; i < n; i++)
        far += !near_px(im->rgb + 3 * i, c, 24);
    return (double)far / (double)n;
}

static void test_presets(hsq_pipe *p, const uint8_t *astro, size_t alen, hsq_wbuf *wb) {
    printf("presets, solid background, DPI, info:\n");
    hsq_wire_outspec specs[3] = {
        {1024, 1280, HSQ_FMT_PNG, 0}, {1024, 1024, HSQ_FMT_PNG, 0}, {600, 600, HSQ_FMT_JPEG, 95}};
    hsq_wire_settings s;
    memset(&s, 0, sizeof s);
    s.n_backgrounds = 1;
    s.backgrounds[0] = (hsq_wire_background){HSQ_BG_SOLID, {0, 200, 0}, {0, 0, 0}, 0};
    hsq_pipe_job j;
    job_init(&j, astro, alen, "astronaut.png", specs, 3, settings_of(&s, wb));
    hsq_pipe_job *jobs[1] = {&j};
    HSQ_OK(hsq_pipe_run(p, jobs, 1));
    if (j.err)
        HSQ_FAIL_("job failed: %s", j.errmsg);
    HSQ_ASSERT_EQ(j.n_out, 3);
    const uint8_t green[3] = {0, 200, 0};
    for (uint32_t i = 0; i < 3; i++) {
        const hsq_pipe_output *o = &j.out[i];
        HSQ_ASSERT_EQ(o->width, specs[i].width);
        HSQ_ASSERT_EQ(o->height, specs[i].height);
        HSQ_ASSERT_EQ(o->spec, i);
        HSQ_ASSERT_EQ(o->background, 0);
        HSQ_ASSERT_EQ(o->style, 0);
        HSQ_ASSERT_EQ(o->format, specs[i].format);
        check_framing(o);
        hsq_img im;
        double share = subject_share(o, green, &im);
        printf("  %ux%u: subject covers %.1f %% of the frame\n", im.w, im.h, 100 * share);
        HSQ_ASSERT(share > 0.25 && share < 0.85);
        /* The top corners are backdrop (JPEG: a little looser). */
        int tol = o->format == HSQ_FMT_PNG ? 2 : 6;
        HSQ_ASSERT(near_px(im.rgb, green, tol));
        HSQ_ASSERT(near_px(im.rgb + 3 * (im.w - 1), green, tol));
        hsq_img_free(&im);
    }
    /* Passport JPEG: 300 DPI in the JFIF header (units 1, density 300). */
    const uint8_t *jp = j.out[2].data;
    HSQ_ASSERT(j.out[2].len > 20 && memcmp(jp + 6, "JFIF", 5) == 0);
    HSQ_ASSERT_EQ(jp[13], 1);
    HSQ_ASSERT_EQ((jp[14] << 8) | jp[15], 300);
    /* Info: one face, the golden score, the stages. */
    HSQ_ASSERT_EQ(j.info.faces, 1);
    HSQ_ASSERT(j.info.face_score >= 910 && j.info.face_score <= 931);
    HSQ_ASSERT(hsq_str_eq(j.info.backend, "cpu"));
    int have_detect = 0, have_segment = 0;
    for (uint32_t i = 0; i < j.info.n_stages; i++) {
        have_detect |= hsq_str_eq(j.info.stages[i].name, "detect");
        have_segment |= hsq_str_eq(j.info.stages[i].name, "segment");
        printf("  stage %.*s %u ms\n", (int)j.info.stages[i].name.len, j.info.stages[i].name.ptr,
               j.info.stages[i].ms);
    }
    HSQ_ASSERT(have_detect && have_segment);
    hsq_wbuf_reset(wb);
    HSQ_OK(hsq_wire_info_encode(&j.info, wb));
    hsq_pipe_job_clear(&j);
}

static void test_combinations(hsq_pipe *p, const uint8_t *astro, size_t alen, hsq_wbuf *wb) {
    printf("combinations (background x style x size) with a reference background:\n");
    /* A reference backdrop: a flat orange PNG of another aspect. */
    hsq_img ref = {300, 200, malloc(300 * 200 * 3)};
    for (size_t i = 0; i < 300 * 200; i++) {
        ref.rgb[3 * i] = 230;
        ref.rgb[3 * i + 1] = 120;
        ref.rgb[3 * i + 2] = 20;
    }
    uint8_t *refpng;
    size_t reflen;
    HSQ_OK(hsq_img_encode_png(&ref, 0, &refpng, &reflen));
    hsq_img_free(&ref);

    hsq_wire_outspec specs[2] = {{400, 500, HSQ_FMT_PNG, 0}, {300, 300, HSQ_FMT_PNG, 0}};
    hsq_wire_settings s;
    memset(&s, 0, sizeof s);
    s.n_backgrounds = 2;
    s.backgrounds[0] = (hsq_wire_background){HSQ_BG_REFERENCE, {0, 0, 0}, {0, 0, 0}, 4};
    s.backgrounds[1] = (hsq_wire_background){HSQ_BG_GRADIENT, {250, 250, 250}, {40, 40, 90}, 0};
    s.n_styles = 2;
    s.styles[0] = (hsq_wire_style){HSQ_STR_LIT("off"), 0, 0, 0, 0};
    s.styles[1] = (hsq_wire_style){HSQ_STR_LIT("strong"), 80, 80, 60, 100};
    s.dpi = 150;
    hsq_pipe_job j;
    job_init(&j, astro, alen, "astronaut.png", specs, 2, settings_of(&s, wb));
    j.background = (hsq_pipe_input){refpng, reflen, "orange.png"};
    hsq_pipe_job *jobs[1] = {&j};
    HSQ_OK(hsq_pipe_run(p, jobs, 1));
    if (j.err)
        HSQ_FAIL_("job failed: %s", j.errmsg);
    HSQ_ASSERT_EQ(j.n_out, 8);
    for (uint32_t i = 0; i < 8; i++) {
        HSQ_ASSERT_EQ(j.out[i].background, i / 4);
        HSQ_ASSERT_EQ(j.out[i].style, (i / 2) % 2);
        HSQ_ASSERT_EQ(j.out[i].spec, i % 2);
        HSQ_ASSERT_EQ(j.out[i].width, specs[i % 2].width);
    }
    /* Reference background: the corners are the reference's orange. */
    const uint8_t orange[3] = {230, 120, 20};
    hsq_img im;
    double share = subject_share(&j.out[0], orange, &im);
    printf("  reference: subject covers %.1f %%\n", 100 * share);
    HSQ_ASSERT(share > 0.25 && share < 0.85);
    HSQ_ASSERT(near_px(im.rgb, orange, 2));
    HSQ_ASSERT(near_px(im.rgb + 3 * (im.w - 1), orange, 2));
    hsq_img_free(&im);
    /* Gradient: the top row is the top colour. */
    HSQ_OK(hsq_img_decode(j.out[4].data, j.out[4].len, NULL, NULL, 0, &im));
    const uint8_t top[3] = {250, 250, 250};
    HSQ_ASSERT(near_px(im.rgb, top, 2));
    hsq_img_free(&im);
    /* The styles differ; the "off" and "strong" outputs of one size are not
     * the same image. */
    HSQ_ASSERT(j.out[0].len != j.out[2].len || memcmp(j.out[0].data, j.out[2].data,
                                                      j.out[0].len) != 0);
    /* PNG pHYs at 150 DPI = 5906 px/m. */
    const uint8_t *pp = j.out[1].data;
    size_t pl = j.out[1].len;
    int found = 0;
    for (size_t i = 8; i + 12 < pl; i++)
        if (memcmp(pp + i, "pHYs", 4) == 0) {
            uint32_t d = (uint32_t)pp[i + 4] << 24 | pp[i + 5] << 16 | pp[i + 6] << 8 | pp[i + 7];
            HSQ_ASSERT(d == 5905 || d == 5906);
            found = 1;
        }
    HSQ_ASSERT(found);
    hsq_pipe_job_clear(&j);

    /* A reference background without the photo is refused. */
    job_init(&j, astro, alen, "astronaut.png", specs, 2, settings_of(&s, wb));
    HSQ_OK(hsq_pipe_run(p, jobs, 1));
    HSQ_ASSERT_EQ(j.err, HSQ_EBADREQ);
    HSQ_ASSERT_EQ(j.n_out, 0);
    hsq_pipe_job_clear(&j);
    free(refpng);
}

/* The PNG portrait re-encoded as a JPEG (quality 90); the caller frees it. */
static uint8_t *jpeg_of(const uint8_t *png, size_t len, size_t *jlen) {
    hsq_img src = {0};
    uint8_t *jpg;
    HSQ_OK(hsq_img_decode(png, len, NULL, NULL, 0, &src));
    HSQ_OK(hsq_img_encode_jpeg(&src, 90, &jpg, jlen));
    hsq_img_free(&src);
    return jpg;
}

/* JPEG portraits decode into the pipe's kept photo buffers (4 of them):
 * a batch of 6, one truncated, more than there are buffers, gives every
 * job the bytes a single run gives, and the buffers are reused. */
static void test_jpeg_photo_buffers(hsq_pipe *p, const uint8_t *astro, size_t alen) {
    printf("jpeg portraits, kept photo buffers:\n");
    size_t jlen;
    uint8_t *jpg = jpeg_of(astro, alen, &jlen);
    hsq_wire_outspec spec = {320, 400, HSQ_FMT_PNG, 0};
    hsq_bytes none = {NULL, 0};
    hsq_pipe_job one, batch[6];
    hsq_pipe_job *pb[6], *po[1] = {&one};
    job_init(&one, jpg, jlen, "a.jpg", &spec, 1, none);
    HSQ_OK(hsq_pipe_run(p, po, 1));
    HSQ_ASSERT_EQ(one.err, 0);
    for (int i = 0; i < 6; i++) {
        job_init(&batch[i], jpg, i == 3 ? jlen / 3 : jlen, "a.jpg", &spec, 1, none);
        pb[i] = &batch[i];
    }
    for (int round = 0; round < 2; round++) {
        HSQ_OK(hsq_pipe_run(p, pb, 6));
        for (int i = 0; i < 6; i++) {
            if (i == 3) {
                HSQ_ASSERT_EQ(batch[i].err, HSQ_EIMGCORRUPT);
                continue;
            }
            HSQ_ASSERT_EQ(batch[i].err, 0);
            HSQ_ASSERT_EQ(batch[i].n_out, 1);
            HSQ_ASSERT(batch[i].out[0].len == one.out[0].len &&
                       memcmp(batch[i].out[0].data, one.out[0].data, one.out[0].len) == 0);
        }
    }
    for (int i = 0; i < 6; i++)
        hsq_pipe_job_clear(&batch[i]);
    hsq_pipe_job_clear(&one);
    free(jpg);
}

/* A batch decoded on one thread while another finishes the previous batch
 * on the same pipe (the worker's overlap) gives what hsq_pipe_run gives. */
typedef struct {
    hsq_pipe *p;
    hsq_pipe_batch *b;
} finish_arg;

static void *finish_thread(void *arg) {
    finish_arg *a = arg;
    hsq_pipe_finish(a->p, &a->b);
    return NULL;
}

static void test_decode_finish_overlap(hsq_pipe *p, const uint8_t *astro, size_t alen,
                                       const uint8_t *cat, size_t clen) {
    printf("decode of one batch while another finishes:\n");
    size_t jlen;
    uint8_t *jpg = jpeg_of(astro, alen, &jlen);
    hsq_wire_outspec spec = {256, 320, HSQ_FMT_PNG, 0};
    hsq_bytes none = {NULL, 0};
    enum { N = 3 };
    hsq_pipe_job ref[2][N], got[2][N];
    hsq_pipe_job *rp[2][N], *gp[2][N];
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < N; i++) {
            /* batch 0: jpeg, png, cat (no face); batch 1: png, truncated, jpeg */
            const uint8_t *d = k == 0 ? (i == 0 ? jpg : i == 1 ? astro : cat)
                                      : (i == 2 ? jpg : astro);
            size_t len = k == 0 ? (i == 0 ? jlen : i == 1 ? alen : clen)
                                : (i == 2 ? jlen : i == 1 ? alen / 2 : alen);
            job_init(&ref[k][i], d, len, "p.img", &spec, 1, none);
            job_init(&got[k][i], d, len, "p.img", &spec, 1, none);
            rp[k][i] = &ref[k][i];
            gp[k][i] = &got[k][i];
        }
        HSQ_OK(hsq_pipe_run(p, rp[k], N));
    }
    HSQ_ASSERT_EQ(ref[0][0].err, 0);
    HSQ_ASSERT_EQ(ref[0][2].err, HSQ_ENOFACE);
    HSQ_ASSERT_EQ(ref[1][1].err, HSQ_EIMGCORRUPT);
    hsq_pipe_batch *b0, *b1;
    HSQ_OK(hsq_pipe_decode(p, gp[0], N, &b0));
    finish_arg fa = {p, b0};
    pthread_t t;
    HSQ_ASSERT_EQ(pthread_create(&t, NULL, finish_thread, &fa), 0);
    HSQ_OK(hsq_pipe_decode(p, gp[1], N, &b1)); /* while batch 0 is in the models */
    HSQ_ASSERT_EQ(pthread_join(t, NULL), 0);
    HSQ_ASSERT(fa.b == NULL);
    hsq_pipe_finish(p, &b1);
    HSQ_ASSERT(b1 == NULL);
    HSQ_ASSERT_EQ(hsq_pipe_decode(p, gp[0], 0, &b0), HSQ_EINVAL);
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < N; i++) {
            HSQ_ASSERT_EQ(got[k][i].err, ref[k][i].err);
            HSQ_ASSERT_EQ(got[k][i].n_out, ref[k][i].n_out);
            for (uint32_t o = 0; o < got[k][i].n_out; o++)
                HSQ_ASSERT(got[k][i].out[o].len == ref[k][i].out[o].len &&
                           memcmp(got[k][i].out[o].data, ref[k][i].out[o].data,
                                  got[k][i].out[o].len) == 0);
            hsq_pipe_job_clear(&got[k][i]);
            hsq_pipe_job_clear(&ref[k][i]);
        }
    }
    free(jpg);
}

static void test_failures_and_batch(hsq_pipe *p, const uint8_t *astro, size_t alen,
                                    const uint8_t *cat, size_t clen) {
    printf("failures and batching:\n");
    hsq_wire_outspec spec = {320, 400, HSQ_FMT_PNG, 0};
    hsq_pipe_job jobs[4];
    hsq_pipe_job *pj[4] = {&jobs[0], &jobs[1], &jobs[2], &jobs[3]};
    hsq_bytes none = {NULL, 0};

    /* cat, astronaut, truncated astronaut, astronaut: one batch. */
    job_init(&jobs[0], cat, clen, "chelsea.png", &spec, 1, none);
    job_init(&jobs[1], astro, alen, "a1.png", &spec, 1, none);
    job_init(&jobs[2], astro, alen / 3, "broken.png", &spec, 1, none);
    job_init(&jobs[3], astro, alen, "a2.png", &spec, 1, none);
    HSQ_OK(hsq_pipe_run(p, pj, 4));
    printf("  chelsea: %s\n  broken: %s\n", jobs[0].errmsg, jobs[2].errmsg);
    HSQ_ASSERT_EQ(jobs[0].err, HSQ_ENOFACE);
    HSQ_ASSERT(strncmp(jobs[0].errmsg, "detect: ", 8) == 0);
    HSQ_ASSERT(strstr(jobs[0].errmsg, "'chelsea.png'") != NULL);
    HSQ_ASSERT_EQ(jobs[0].retryable, 0);
    HSQ_ASSERT_EQ(jobs[0].n_out, 0);
    HSQ_ASSERT_EQ(jobs[0].info.faces, 0);
    HSQ_ASSERT_EQ(jobs[2].err, HSQ_EIMGCORRUPT);
    HSQ_ASSERT(strncmp(jobs[2].errmsg, "decode: portrait 'broken.png'", 29) == 0);
    for (int i = 1; i <= 3; i += 2) {
        HSQ_ASSERT_EQ(jobs[i].err, 0);
        HSQ_ASSERT_EQ(jobs[i].n_out, 1);
    }

    /* The batch of three (astronaut, astronaut, astronaut with other
     * settings) gives what three single runs give. */
    hsq_wire_settings s;
    memset(&s, 0, sizeof s);
    s.n_backgrounds = 1;
    s.backgrounds[0] = (hsq_wire_background){HSQ_BG_VIGNETTE, {90, 110, 160}, {0, 0, 0}, 0};
    hsq_wbuf wb;
    hsq_wbuf_init(&wb);
    hsq_bytes set2 = settings_of(&s, &wb);
    hsq_wire_outspec spec2[2] = {{256, 320, HSQ_FMT_PNG, 0}, {200, 200, HSQ_FMT_PNG, 0}};
    hsq_pipe_job batch[3], single[3];
    hsq_pipe_job *pb[3] = {&batch[0], &batch[1], &batch[2]};
    for (int i = 0; i < 3; i++) {
        job_init(&batch[i], astro, alen, "astronaut.png", i == 2 ? spec2 : &spec, i == 2 ? 2 : 1,
                 i == 2 ? set2 : none);
        single[i] = batch[i];
    }
    HSQ_OK(hsq_pipe_run(p, pb, 3));
    for (int i = 0; i < 3; i++) {
        hsq_pipe_job *one[1] = {&single[i]};
        HSQ_OK(hsq_pipe_run(p, one, 1));
        HSQ_ASSERT_EQ(batch[i].err, 0);
        HSQ_ASSERT_EQ(single[i].err, 0);
        HSQ_ASSERT_EQ(batch[i].n_out, single[i].n_out);
        for (uint32_t o = 0; o < batch[i].n_out; o++) {
            hsq_img a, b;
            HSQ_OK(hsq_img_decode(batch[i].out[o].data, batch[i].out[o].len, NULL, NULL, 0, &a));
            HSQ_OK(hsq_img_decode(single[i].out[o].data, single[i].out[o].len, NULL, NULL, 0, &b));
            HSQ_ASSERT_EQ(a.w, b.w);
            HSQ_ASSERT_EQ(a.h, b.h);
            int maxd = 0;
            for (size_t k = 0; k < (size_t)a.w * a.h * 3; k++) {
                int d = abs((int)a.rgb[k] - (int)b.rgb[k]);
                maxd = d > maxd ? d : maxd;
            }
            printf("  job %d output %u: batch vs single max diff %d%s\n", i, o, maxd,
                   batch[i].out[o].len == single[i].out[o].len &&
                           memcmp(batch[i].out[o].data, single[i].out[o].data,
                                  single[i].out[o].len) == 0
                       ? " (identical bytes)"
                       : "");
            HSQ_ASSERT(maxd <= 2);
            hsq_img_free(&a);
            hsq_img_free(&b);
        }
        hsq_pipe_job_clear(&batch[i]);
        hsq_pipe_job_clear(&single[i]);
    }
    for (int i = 0; i < 4; i++)
        hsq_pipe_job_clear(&jobs[i]);

    /* An aborted job stops and leaves nothing. */
    atomic_int ab = 1;
    job_init(&jobs[0], astro, alen, "a.png", &spec, 1, none);
    jobs[0].abort = &ab;
    HSQ_OK(hsq_pipe_run(p, pj, 1));
    HSQ_ASSERT_EQ(jobs[0].aborted, 1);
    HSQ_ASSERT_EQ(jobs[0].n_out, 0);
    hsq_pipe_job_clear(&jobs[0]);
    hsq_wbuf_free(&wb);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: test_pipeline SRCDIR\n");
        return 2;
    }
    char mdir[1024], path[1200], err[512];
    snprintf(mdir, sizeof mdir, "%s/models", argv[1]);
    size_t alen = 0, clen = 0;
    snprintf(path, sizeof path, "%s/samples/astronaut.png", argv[1]);
    uint8_t *astro = slurp(path, &alen);
    snprintf(path, sizeof path, "%s/samples/chelsea.png", argv[1]);
    uint8_t *cat = slurp(path, &clen);
    snprintf(path, sizeof path, "%s/%s", mdir, HSQ_PIPE_FACE_MODEL);
    FILE *f = fopen(path, "rb");
    if (!astro || !cat || !f) {
        fprintf(stderr, "test_pipeline: SKIP: models/ or samples/ missing in %s "
                        "(run scripts/models and scripts/samples)\n",
                argv[1]);
        return 77;
    }
    fclose(f);
    if (hsq_model_load(&face_m, path, err, sizeof err) != 0)
        HSQ_FAIL_("load %s: %s", path, err);
    HSQ_OK(hsq_model_ctx_new(&face_ctx, face_m));

    hsq_pipe *p = NULL;
    HSQ_ASSERT_EQ(hsq_pipe_new(&p, "/nonexistent", 2, NULL, err, sizeof err) < 0, 1);
    HSQ_ASSERT(strstr(err, "/nonexistent/") != NULL);
    if (hsq_pipe_new(&p, mdir, 3, NULL, err, sizeof err) != 0)
        HSQ_FAIL_("pipe: %s", err);

    hsq_wbuf wb;
    hsq_wbuf_init(&wb);
    test_presets(p, astro, alen, &wb);
    test_combinations(p, astro, alen, &wb);
    test_failures_and_batch(p, astro, alen, cat, clen);
    test_jpeg_photo_buffers(p, astro, alen);
    test_decode_finish_overlap(p, astro, alen, cat, clen);
    hsq_wbuf_free(&wb);

    hsq_pipe_free(&p);
    HSQ_ASSERT(p == NULL);
    hsq_model_ctx_free(&face_ctx);
    hsq_model_free(&face_m);
    free(astro);
    free(cat);
    printf("test_pipeline: ok\n");
    return 0;
}
