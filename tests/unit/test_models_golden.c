/* test_models_golden.c - the two real models against MediaPipe's results.
 *
 * Golden values from shared/notes/models.md section 4 (MediaPipe's own
 * runtime on samples/astronaut.png). The pre-processing here is exactly the
 * one the notes describe, written out as the oracle:
 *  - face: letterbox the whole image into 128x128 (scaled to fit, centred,
 *    no rounding of the scaled size), one bilinear sample per tensor pixel
 *    at pixel centres (src = (dst + 0.5) * scale - 0.5 + offset), pixels
 *    outside the image are 0 before mapping (so -1.0 after), RGB,
 *    v / 127.5 - 1;
 *  - segmentation: stretch to 256x256, the same sampling, v / 255.
 * Half-pixel centres are what reproduces MediaPipe to 0.1 px; corner-aligned
 * sampling (OpenCV's warp without the half-pixel shift) moves the box by
 * about 4 px.
 * Decoding is the minimal version of the pipeline's: anchors (16x16x2 then
 * 8x8x6, centres only, unit size), sigmoid of the clipped logit, the anchor
 * decode of the box and keypoints, the score-weighted mean over the
 * detections with IoU > 0.3 with the best one (MediaPipe's weighted NMS for
 * the top cluster), then the letterbox undone.
 *
 * Needs models/ (scripts/models) and samples/ (scripts/samples); exits 77
 * (skip) when either is missing. The source root is argv[1] (meson passes
 * it; default "."); HSQ_MODELS_DIR / HSQ_SAMPLES_DIR override the defaults
 * <source>/models and <source>/samples.
 */
#include "worker/img.h"
#include "worker/model/internal.h"
#include "worker/model/model.h"

#include "schemas/err.h"
#include "test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char models_dir[1024], samples_dir[1024];

static void dirs(const char *root) {
    const char *m = getenv("HSQ_MODELS_DIR"), *s = getenv("HSQ_SAMPLES_DIR");
    if (m && *m)
        snprintf(models_dir, sizeof models_dir, "%s", m);
    else
        snprintf(models_dir, sizeof models_dir, "%s/models", root);
    if (s && *s)
        snprintf(samples_dir, sizeof samples_dir, "%s", s);
    else
        snprintf(samples_dir, sizeof samples_dir, "%s/samples", root);
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    rewind(fp);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    HSQ_ASSERT(buf);
    HSQ_ASSERT(fread(buf, 1, (size_t)n, fp) == (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static int have(const char *dir, const char *file) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *fp = fopen(path, "rb");
    if (fp)
        fclose(fp);
    return fp != NULL;
}

static hsq_img load_png(const char *file) {
    char path[1200];
    size_t len;
    snprintf(path, sizeof path, "%s/%s", samples_dir, file);
    uint8_t *buf = read_file(path, &len);
    HSQ_ASSERT(buf);
    hsq_img img = {0};
    HSQ_OK(hsq_img_decode(buf, len, NULL, NULL, 0, &img));
    free(buf);
    return img;
}

static hsq_model *load_model(const char *file) {
    char path[1200], err[256];
    snprintf(path, sizeof path, "%s/%s", models_dir, file);
    hsq_model *m = NULL;
    int rc = hsq_model_load(&m, path, err, sizeof err);
    if (rc)
        HSQ_FAIL_("load %s: %d %s", path, rc, err);
    return m;
}

/* ---- sampling ---- */

/* Channel c of pixel (x, y), 0 outside the image (zero border). */
static double px(const hsq_img *im, int x, int y, int c) {
    if (x < 0 || y < 0 || x >= (int)im->w || y >= (int)im->h)
        return 0.0;
    return im->rgb[((size_t)y * im->w + (size_t)x) * 3 + (size_t)c];
}

/* One bilinear sample at (sx, sy) in pixel-centre coordinates. clamp != 0
 * clamps the position into the image instead of blending with zeros. */
static double sample(const hsq_img *im, double sx, double sy, int c, int clamp) {
    if (clamp) {
        sx = sx < 0 ? 0 : (sx > im->w - 1 ? im->w - 1 : sx);
        sy = sy < 0 ? 0 : (sy > im->h - 1 ? im->h - 1 : sy);
    }
    int x0 = (int)floor(sx), y0 = (int)floor(sy);
    double fx = sx - x0, fy = sy - y0;
    return px(im, x0, y0, c) * (1 - fx) * (1 - fy) + px(im, x0 + 1, y0, c) * fx * (1 - fy) +
           px(im, x0, y0 + 1, c) * (1 - fx) * fy + px(im, x0 + 1, y0 + 1, c) * fx * fy;
}

/* ---- face detector ---- */

enum { FD = 128, NA = 896 };

static void face_tensor(const hsq_img *im, float *t) {
    double w = im->w, h = im->h, l = w > h ? w : h, s = l / FD;
    for (int ty = 0; ty < FD; ty++)
        for (int tx = 0; tx < FD; tx++) {
            double sx = (tx + 0.5) * s - 0.5 + (w - l) / 2;
            double sy = (ty + 0.5) * s - 0.5 + (h - l) / 2;
            for (int c = 0; c < 3; c++)
                t[((size_t)ty * FD + (size_t)tx) * 3 + (size_t)c] =
                    (float)(sample(im, sx, sy, c, 0) / 127.5 - 1.0);
        }
}

typedef struct {
    double score;
    double box[4]; /* x0, y0, x1, y1 in image pixels */
    double kp[6][2];
} det;

/* Decode anchor i, letterbox undone. */
static det decode_one(const hsq_img *im, const float *reg, const float *cls, int i) {
    int cx_, cy_, grid;
    if (i < 512) {
        grid = 16;
        cx_ = (i / 2) % 16;
        cy_ = (i / 2) / 16;
    } else {
        grid = 8;
        cx_ = ((i - 512) / 6) % 8;
        cy_ = ((i - 512) / 6) / 8;
    }
    double acx = (cx_ + 0.5) / grid, acy = (cy_ + 0.5) / grid;
    double w = im->w, h = im->h, l = w > h ? w : h;
    double pxf = (1 - w / l) / 2, pyf = (1 - h / l) / 2;
    const float *r = reg + (size_t)i * 16;
    double cx = r[0] / 128.0 + acx, cy = r[1] / 128.0 + acy, bw = r[2] / 128.0, bh = r[3] / 128.0;
    det d;
    double logit = cls[i] < -100 ? -100 : (cls[i] > 100 ? 100 : cls[i]);
    d.score = 1.0 / (1.0 + exp(-logit));
    double nb[4] = {cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2};
    for (int k = 0; k < 4; k++)
        d.box[k] =
            k % 2 == 0 ? (nb[k] - pxf) / (1 - 2 * pxf) * w : (nb[k] - pyf) / (1 - 2 * pyf) * h;
    for (int k = 0; k < 6; k++) {
        d.kp[k][0] = (r[4 + 2 * k] / 128.0 + acx - pxf) / (1 - 2 * pxf) * w;
        d.kp[k][1] = (r[5 + 2 * k] / 128.0 + acy - pyf) / (1 - 2 * pyf) * h;
    }
    return d;
}

static double iou(const double *a, const double *b) {
    double ix = fmin(a[2], b[2]) - fmax(a[0], b[0]), iy = fmin(a[3], b[3]) - fmax(a[1], b[1]);
    double inter = ix > 0 && iy > 0 ? ix * iy : 0;
    double u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    return u > 0 ? inter / u : 0;
}

/* The best detection and its weighted cluster. */
static void face_decode(const hsq_img *im, const float *reg, const float *cls, det *best_out,
                        det *weighted) {
    int best = 0;
    for (int i = 1; i < NA; i++)
        if (cls[i] > cls[best])
            best = i;
    det b = decode_one(im, reg, cls, best), acc;
    memset(&acc, 0, sizeof acc);
    double ws = 0;
    for (int i = 0; i < NA; i++) {
        det d = decode_one(im, reg, cls, i);
        if (d.score < 0.5 || iou(d.box, b.box) <= 0.3)
            continue;
        for (int k = 0; k < 4; k++)
            acc.box[k] += d.score * d.box[k];
        for (int k = 0; k < 6; k++) {
            acc.kp[k][0] += d.score * d.kp[k][0];
            acc.kp[k][1] += d.score * d.kp[k][1];
        }
        ws += d.score;
    }
    *best_out = b;
    *weighted = acc;
    weighted->score = b.score;
    if (ws > 0) {
        for (int k = 0; k < 4; k++)
            weighted->box[k] /= ws;
        for (int k = 0; k < 6; k++) {
            weighted->kp[k][0] /= ws;
            weighted->kp[k][1] /= ws;
        }
    } else {
        *weighted = b;
    }
}

static void near(const char *what, double got, double want, double tol) {
    if (!(fabs(got - want) <= tol))
        HSQ_FAIL_("%s: got %.4f, want %.4f +/- %g", what, got, want, tol);
}

/* Run the face model on the images (batch = n), return outputs copied. */
static void face_run(hsq_model *m, int reference, const hsq_img *const *ims, int n, float *reg,
                     float *cls) {
    float *t = malloc((size_t)n * FD * FD * 3 * sizeof(float));
    HSQ_ASSERT(t);
    for (int i = 0; i < n; i++)
        face_tensor(ims[i], t + (size_t)i * FD * FD * 3);
    hsq_model_ctx *c;
    HSQ_OK(hsq_model_ctx_new(&c, m));
    hsq_model_ctx_set_reference(c, reference);
    const float *in[1] = {t}, *outs[2];
    HSQ_OK(hsq_model_run(c, n, in, outs));
    memcpy(reg, outs[0], (size_t)n * NA * 16 * sizeof(float));
    memcpy(cls, outs[1], (size_t)n * NA * sizeof(float));
    hsq_model_ctx_free(&c);
    free(t);
}

static void test_face(void) {
    hsq_model *m = load_model("face_detection_short_range.tflite");
    HSQ_ASSERT_EQ(hsq_model_n_inputs(m), 1);
    hsq_shape is = hsq_model_input_shape(m, 0);
    HSQ_ASSERT(is.rank == 4 && is.dims[0] == 1 && is.dims[1] == FD && is.dims[2] == FD &&
               is.dims[3] == 3);
    HSQ_ASSERT_EQ(hsq_model_n_outputs(m), 2);
    HSQ_ASSERT_STR_EQ(hsq_model_output_name(m, 0), "regressors");
    HSQ_ASSERT_STR_EQ(hsq_model_output_name(m, 1), "classificators");
    hsq_shape r = hsq_model_output_shape(m, 0), c = hsq_model_output_shape(m, 1);
    HSQ_ASSERT(r.rank == 3 && r.dims[1] == NA && r.dims[2] == 16);
    HSQ_ASSERT(c.rank == 3 && c.dims[1] == NA && c.dims[2] == 1);
    /* ~30.8 M multiply-accumulates (models.md) */
    HSQ_ASSERT(hsq_model_macs(m) > 30700000 && hsq_model_macs(m) < 30900000);

    hsq_img astro = load_png("astronaut.png");
    HSQ_ASSERT(astro.w == 512 && astro.h == 512);
    float *reg = malloc(2 * NA * 16 * sizeof(float)), *cls = malloc(2 * NA * sizeof(float));
    float *rreg = malloc(NA * 16 * sizeof(float)), *rcls = malloc(NA * sizeof(float));
    HSQ_ASSERT(reg && cls && rreg && rcls);

    /* Batch of two identical images: identical outputs. */
    const hsq_img *two[2] = {&astro, &astro};
    face_run(m, 0, two, 2, reg, cls);
    HSQ_ASSERT(memcmp(reg, reg + NA * 16, NA * 16 * sizeof(float)) == 0);
    HSQ_ASSERT(memcmp(cls, cls + NA, NA * sizeof(float)) == 0);

    det best, w;
    face_decode(&astro, reg, cls, &best, &w);
    printf("face: score %.4f box %.1f %.1f %.1f %.1f (best anchor alone: %.1f %.1f %.1f %.1f)\n",
           w.score, w.box[0], w.box[1], w.box[2], w.box[3], best.box[0], best.box[1], best.box[2],
           best.box[3]);
    near("face score", w.score, 0.9208, 0.01);
    static const double gbox[4] = {179.1, 81.4, 271.6, 173.9};
    static const double gkp[6][2] = {{205.2, 100.5}, {249.3, 108.4}, {223.9, 123.8},
                                     {220.4, 144.6}, {177.9, 109.3}, {271.0, 125.2}};
    for (int k = 0; k < 4; k++) {
        near("face box (weighted)", w.box[k], gbox[k], 2.0);
        near("face box (best anchor)", best.box[k], gbox[k], 2.0);
    }
    for (int k = 0; k < 6; k++) {
        near("keypoint x", w.kp[k][0], gkp[k][0], 2.0);
        near("keypoint y", w.kp[k][1], gkp[k][1], 2.0);
    }
    /* Exactly one detection over 0.5 after suppression: every detection
     * over the threshold overlaps the best one. */
    for (int i = 0; i < NA; i++) {
        det d = decode_one(&astro, reg, cls, i);
        if (d.score >= 0.5)
            HSQ_ASSERT(iou(d.box, best.box) > 0.3);
    }

    /* The naive reference kernels, and the portable ones (what a CPU
     * without AVX2 runs), agree with the fast ones. */
    const hsq_img *one[1] = {&astro};
    for (int pass = 0; pass < 2; pass++) {
        hsq_ops_force_portable(pass == 1);
        face_run(m, pass == 0, one, 1, rreg, rcls);
        hsq_ops_force_portable(0);
        for (int i = 0; i < NA * 16; i++)
            near(pass ? "portable regressor" : "reference regressor", rreg[i], reg[i],
                 1e-3 * (1 + fabs(reg[i])));
        for (int i = 0; i < NA; i++)
            near(pass ? "portable logit" : "reference logit", rcls[i], cls[i],
                 1e-3 * (1 + fabs(cls[i])));
    }

    /* Letterbox path: the centred 320x512 portrait crop moves the box by
     * the crop offset (96) and keeps the score. */
    hsq_img crop = {320, 512, malloc(320 * 512 * 3)};
    HSQ_ASSERT(crop.rgb);
    for (int y = 0; y < 512; y++)
        memcpy(crop.rgb + (size_t)y * 320 * 3, astro.rgb + ((size_t)y * 512 + 96) * 3, 320 * 3);
    one[0] = &crop;
    face_run(m, 0, one, 1, reg, cls);
    face_decode(&crop, reg, cls, &best, &w);
    printf("face (320x512 crop): score %.4f box %.1f %.1f %.1f %.1f\n", w.score, w.box[0], w.box[1],
           w.box[2], w.box[3]);
    near("crop score", w.score, 0.9208, 0.01);
    for (int k = 0; k < 4; k++)
        near("crop box", w.box[k], gbox[k] - (k % 2 == 0 ? 96 : 0), 2.0);
    hsq_img_free(&crop);

    /* The cat: best score 0.49, no detection. */
    if (have(samples_dir, "chelsea.png")) {
        hsq_img cat = load_png("chelsea.png");
        one[0] = &cat;
        face_run(m, 0, one, 1, reg, cls);
        face_decode(&cat, reg, cls, &best, &w);
        printf("face (chelsea.png): best score %.4f\n", best.score);
        near("cat score", best.score, 0.49, 0.01);
        HSQ_ASSERT(best.score < 0.5);
        hsq_img_free(&cat);
    }
    hsq_img_free(&astro);
    free(reg);
    free(cls);
    free(rreg);
    free(rcls);
    hsq_model_free(&m);
}

/* ---- segmentation ---- */

enum { SD = 256 };

static void test_segmentation(void) {
    hsq_model *m = load_model("selfie_segmentation.tflite");
    hsq_shape is = hsq_model_input_shape(m, 0), os = hsq_model_output_shape(m, 0);
    HSQ_ASSERT(is.rank == 4 && is.dims[1] == SD && is.dims[2] == SD && is.dims[3] == 3);
    HSQ_ASSERT(os.rank == 4 && os.dims[1] == SD && os.dims[2] == SD && os.dims[3] == 1);
    HSQ_ASSERT_STR_EQ(hsq_model_output_name(m, 0), "activation_10");
    HSQ_ASSERT(hsq_model_macs(m) > 59100000 && hsq_model_macs(m) < 59300000);

    hsq_img im = load_png("astronaut.png");
    float *t = malloc((size_t)SD * SD * 3 * sizeof(float));
    HSQ_ASSERT(t);
    double sx = (double)im.w / SD, sy = (double)im.h / SD;
    for (int ty = 0; ty < SD; ty++)
        for (int tx = 0; tx < SD; tx++)
            for (int c = 0; c < 3; c++)
                t[((size_t)ty * SD + (size_t)tx) * 3 + (size_t)c] =
                    (float)(sample(&im, (tx + 0.5) * sx - 0.5, (ty + 0.5) * sy - 0.5, c, 0) /
                            255.0);
    hsq_model_ctx *c, *rc;
    HSQ_OK(hsq_model_ctx_new(&c, m));
    HSQ_OK(hsq_model_ctx_new(&rc, m));
    hsq_model_ctx_set_reference(rc, 1);
    const float *in[1] = {t}, *outs[1], *routs[1];
    HSQ_OK(hsq_model_run(c, 1, in, outs));
    HSQ_OK(hsq_model_run(rc, 1, in, routs));
    const float *mask = outs[0];
    for (int i = 0; i < SD * SD; i++) {
        HSQ_ASSERT(mask[i] >= 0.0f && mask[i] <= 1.0f);
        near("reference mask", routs[0][i], mask[i], 1e-4);
    }
    hsq_ops_force_portable(1);
    hsq_model_ctx_set_reference(rc, 0);
    HSQ_OK(hsq_model_run(rc, 1, in, routs));
    hsq_ops_force_portable(0);
    for (int i = 0; i < SD * SD; i++)
        near("portable mask", routs[0][i], mask[i], 1e-4);
    /* The mask back at image size (bilinear, pixel centres, edges clamped). */
    long over = 0;
    double bx = (double)SD / im.w, by = (double)SD / im.h;
    for (uint32_t y = 0; y < im.h; y++)
        for (uint32_t x = 0; x < im.w; x++) {
            double fx = (x + 0.5) * bx - 0.5, fy = (y + 0.5) * by - 0.5;
            fx = fx < 0 ? 0 : (fx > SD - 1 ? SD - 1 : fx);
            fy = fy < 0 ? 0 : (fy > SD - 1 ? SD - 1 : fy);
            int x0 = (int)fx, y0 = (int)fy;
            int x1 = x0 + 1 < SD ? x0 + 1 : SD - 1, y1 = y0 + 1 < SD ? y0 + 1 : SD - 1;
            double ax = fx - x0, ay = fy - y0;
            double v = mask[y0 * SD + x0] * (1 - ax) * (1 - ay) +
                       mask[y0 * SD + x1] * ax * (1 - ay) + mask[y1 * SD + x0] * (1 - ax) * ay +
                       mask[y1 * SD + x1] * ax * ay;
            over += v > 0.5;
        }
    double frac = (double)over / ((double)im.w * im.h);
    printf("segmentation: %.4f of the pixels > 0.5\n", frac);
    near("mask fraction", frac, 0.545, 0.01);
    hsq_model_ctx_free(&c);
    hsq_model_ctx_free(&rc);
    hsq_img_free(&im);
    free(t);
    hsq_model_free(&m);
}

int main(int argc, char **argv) {
    dirs(argc > 1 ? argv[1] : ".");
    if (!have(models_dir, "face_detection_short_range.tflite") ||
        !have(models_dir, "selfie_segmentation.tflite")) {
        printf("SKIP: models not found in %s (run scripts/models or set HSQ_MODELS_DIR)\n",
               models_dir);
        return 77;
    }
    if (!have(samples_dir, "astronaut.png")) {
        printf("SKIP: astronaut.png not found in %s (run scripts/samples or set "
               "HSQ_SAMPLES_DIR)\n",
               samples_dir);
        return 77;
    }
    test_face();
    test_segmentation();
    printf("golden: ok (%s kernels)\n", hsq_ops_simd() ? "AVX2+FMA" : "portable");
    return 0;
}
