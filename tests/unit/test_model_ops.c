/* test_model_ops.c - worker/model: every op against naive reference loops.
 *
 * Each case builds a small .tflite in memory (tfl_build.c) holding one op,
 * loads it through hsq_model_load_mem (so the loader's shape, padding and
 * option handling is under test too) and runs it at batch 1 and batch 3 with
 * three kernel sets: the AVX2 kernels (when the CPU has them), the portable
 * C kernels and the naive reference kernels. The expected values come from
 * straightforward loops written here in double precision. Shapes are random
 * and include odd sizes, strides 1..3, dilation, SAME and VALID, every fused
 * activation, fp32 and fp16 (DEQUANTIZE) weights.
 *
 * Tolerance: |got - want| <= 1e-5 * (sum of |terms| of that output) + 1e-6,
 * i.e. relative 1e-5 of the magnitudes involved (float accumulation order
 * differs between the kernels and from the double reference).
 */
#include "worker/model/internal.h"
#include "worker/model/model.h"
#include "worker/model/tflite.h"

#include "schemas/err.h"
#include "test.h"
#include "tfl_build.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- random numbers (xorshift64*, fixed seed) ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

static int irand(int lo, int hi) { return lo + (int)(rnd() % (uint32_t)(hi - lo + 1)); }

static float frand(float a) { return ((float)rnd() / 4294967296.0f * 2.0f - 1.0f) * a; }

/* Exactly representable in fp16: k / 1024 with |k| <= 1024. */
static float wrand(void) { return (float)irand(-1024, 1024) / 1024.0f; }

static float *frand_array(size_t n, float a) {
    float *p = malloc(n * sizeof *p);
    HSQ_ASSERT(p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand(a);
    return p;
}

static float *wrand_array(size_t n) {
    float *p = malloc(n * sizeof *p);
    HSQ_ASSERT(p);
    for (size_t i = 0; i < n; i++)
        p[i] = wrand();
    return p;
}

/* ---- expected values ---- */

/* want[i] and scale[i] (sum of |terms|) for one output tensor, all images. */
typedef struct {
    double *want, *scale;
    size_t n;
} expect;

static expect expect_new(size_t n) {
    expect e = {calloc(n ? n : 1, sizeof(double)), calloc(n ? n : 1, sizeof(double)), n};
    HSQ_ASSERT(e.want && e.scale);
    return e;
}

static void expect_free(expect *e) {
    free(e->want);
    free(e->scale);
}

static double act_apply(int act, double v) {
    switch (act) {
    case HSQ_TFL_ACT_RELU:
        return v < 0 ? 0 : v;
    case HSQ_TFL_ACT_RELU6:
        return v < 0 ? 0 : (v > 6 ? 6 : v);
    case HSQ_TFL_ACT_RELU_N1_TO_1:
        return v < -1 ? -1 : (v > 1 ? 1 : v);
    default:
        return v;
    }
}

static void check(const char *what, const float *got, const expect *e) {
    for (size_t i = 0; i < e->n; i++) {
        double tol = 1e-5 * e->scale[i] + 1e-6;
        double d = fabs((double)got[i] - e->want[i]);
        if (!(d <= tol))
            HSQ_FAIL_("%s: element %zu: got %.9g want %.9g (diff %.3g, tol %.3g)", what, i,
                      (double)got[i], e->want[i], d, tol);
    }
}

/* ---- build, load and run ---- */

static hsq_model *load(tfb *b) {
    size_t len;
    uint8_t *buf = tfb_finish(b, &len);
    hsq_model *m = NULL;
    char err[256];
    int rc = hsq_model_load_mem(&m, buf, len, "test.tflite", err, sizeof err);
    free(buf);
    if (rc)
        HSQ_FAIL_("load failed: %d (%s)", rc, err);
    return m;
}

/* Load expecting an error; returns the code and copies the message. */
static int load_err(tfb *b, char *err, size_t errlen) {
    size_t len;
    uint8_t *buf = tfb_finish(b, &len);
    hsq_model *m = NULL;
    int rc = hsq_model_load_mem(&m, buf, len, "test.tflite", err, errlen);
    free(buf);
    HSQ_ASSERT(rc != 0);
    HSQ_ASSERT(m == NULL);
    return rc;
}

enum { MODE_SIMD, MODE_PORTABLE, MODE_REF, NMODES };
static const char *const mode_names[] = {"simd", "portable", "reference"};

/* Run m on n images (inputs given for n images each) in every mode and
 * check output 0 against e. */
static void run_check(const char *what, hsq_model *m, int n, const float *const *in,
                      const expect *e) {
    for (int mode = 0; mode < NMODES; mode++) {
        if (mode == MODE_SIMD && !hsq_ops_simd())
            continue;
        hsq_ops_force_portable(mode == MODE_PORTABLE);
        hsq_model_ctx *c = NULL;
        HSQ_OK(hsq_model_ctx_new(&c, m));
        hsq_model_ctx_set_reference(c, mode == MODE_REF);
        const float *outs[4];
        HSQ_OK(hsq_model_run(c, n, in, outs));
        char label[160];
        snprintf(label, sizeof label, "%s [%s, batch %d]", what, mode_names[mode], n);
        check(label, outs[0], e);
        /* A second run on the same context gives the same answer. */
        HSQ_OK(hsq_model_run(c, n, in, outs));
        check(label, outs[0], e);
        hsq_model_ctx_free(&c);
        HSQ_ASSERT(c == NULL);
    }
    hsq_ops_force_portable(0);
}

/* TFLite padding, written out independently of the runtime. */
static void same_pad(int same, int in, int k, int s, int d, int *out, int *before) {
    int eff = (k - 1) * d + 1;
    if (same) {
        *out = (in + s - 1) / s;
        int total = (*out - 1) * s + eff - in;
        *before = total > 0 ? total / 2 : 0;
    } else {
        *out = in >= eff ? (in - eff) / s + 1 : 0;
        *before = 0;
    }
}

static void opt(tfb_opts *o, int id, int size, int32_t v) {
    o->f[o->nf].id = id;
    o->f[o->nf].size = size;
    o->f[o->nf].v = v;
    o->nf++;
}

/* ---- CONV_2D and DEPTHWISE_CONV_2D ---- */

static void conv_case(int depthwise, int n, int ih, int iw, int ic, int mult_or_oc, int kh, int kw,
                      int sh, int sw, int dh, int dw, int same, int act, int has_bias, int f16) {
    int oh, ow, pt, pl;
    same_pad(same, ih, kh, sh, dh, &oh, &pt);
    same_pad(same, iw, kw, sw, dw, &ow, &pl);
    HSQ_ASSERT(oh > 0 && ow > 0);
    int oc = depthwise ? ic * mult_or_oc : mult_or_oc;
    size_t nin = (size_t)ih * iw * ic, nout = (size_t)oh * ow * oc;
    size_t nw = depthwise ? (size_t)kh * kw * oc : (size_t)oc * kh * kw * ic;
    float *x = frand_array(nin * (size_t)n, 2.0f);
    float *w = wrand_array(nw);
    float *bias = wrand_array((size_t)oc);

    tfb *b = tfb_new();
    int xd[4] = {1, ih, iw, ic}, yd[4] = {1, oh, ow, oc};
    int wd[4];
    if (depthwise) {
        wd[0] = 1;
        wd[1] = kh;
        wd[2] = kw;
        wd[3] = oc;
    } else {
        wd[0] = oc;
        wd[1] = kh;
        wd[2] = kw;
        wd[3] = ic;
    }
    int tx = tfb_tensor(b, 0, 4, xd, 0, "x");
    int tw = f16 ? tfb_const_f16(b, 4, wd, w) : tfb_const_f32(b, 4, wd, w);
    int bd[1] = {oc};
    int tb = has_bias ? (f16 ? tfb_const_f16(b, 1, bd, bias) : tfb_const_f32(b, 1, bd, bias)) : -1;
    int ty = tfb_tensor(b, 0, 4, yd, 0, "y");
    tfb_opts o = {0};
    opt(&o, 0, 1, same ? HSQ_TFL_PAD_SAME : HSQ_TFL_PAD_VALID);
    opt(&o, 1, 4, sw);
    opt(&o, 2, 4, sh);
    if (depthwise) {
        opt(&o, 3, 4, mult_or_oc);
        opt(&o, 4, 1, act);
        opt(&o, 5, 4, dw);
        opt(&o, 6, 4, dh);
    } else {
        opt(&o, 3, 1, act);
        opt(&o, 4, 4, dw);
        opt(&o, 5, 4, dh);
    }
    int ins[3] = {tx, tw, tb};
    tfb_op(b, depthwise ? HSQ_TFL_OP_DEPTHWISE_CONV_2D : HSQ_TFL_OP_CONV_2D, NULL, 3, ins, 1, &ty,
           depthwise ? HSQ_TFL_OPT_DEPTHWISE : HSQ_TFL_OPT_CONV2D, &o, NULL, 0);
    tfb_io(b, 1, &tx, 1, &ty);
    hsq_model *m = load(b);
    tfb_free(b);
    HSQ_ASSERT_U64_EQ(hsq_model_macs(m),
                      (uint64_t)oh * ow * oc * kh * kw * (depthwise ? 1 : (uint64_t)ic));

    expect e = expect_new(nout * (size_t)n);
    for (int bi = 0; bi < n; bi++)
        for (int y = 0; y < oh; y++)
            for (int xx = 0; xx < ow; xx++)
                for (int o2 = 0; o2 < oc; o2++) {
                    double s = has_bias ? bias[o2] : 0, mag = fabs(s);
                    for (int ky = 0; ky < kh; ky++)
                        for (int kx = 0; kx < kw; kx++) {
                            int iy = y * sh - pt + ky * dh, ix = xx * sw - pl + kx * dw;
                            if (iy < 0 || iy >= ih || ix < 0 || ix >= iw)
                                continue;
                            const float *px = x + (size_t)bi * nin + ((size_t)iy * iw + ix) * ic;
                            if (depthwise) {
                                double t = (double)px[o2 / mult_or_oc] *
                                           w[((size_t)ky * kw + kx) * oc + o2];
                                s += t;
                                mag += fabs(t);
                            } else {
                                for (int c = 0; c < ic; c++) {
                                    double t = (double)px[c] *
                                               w[(((size_t)o2 * kh + ky) * kw + kx) * ic + c];
                                    s += t;
                                    mag += fabs(t);
                                }
                            }
                        }
                    size_t idx = (size_t)bi * nout + ((size_t)y * ow + xx) * oc + o2;
                    e.want[idx] = act_apply(act, s);
                    e.scale[idx] = mag;
                }
    char what[200];
    snprintf(what, sizeof what,
             "%s in %dx%dx%d %s %d k %dx%d s %d,%d d %d,%d %s act %d bias %d f16 %d",
             depthwise ? "DEPTHWISE_CONV_2D" : "CONV_2D", ih, iw, ic, depthwise ? "mult" : "oc",
             mult_or_oc, kh, kw, sh, sw, dh, dw, same ? "SAME" : "VALID", act, has_bias, f16);
    const float *in[1] = {x};
    run_check(what, m, n, in, &e);
    expect_free(&e);
    hsq_model_free(&m);
    HSQ_ASSERT(m == NULL);
    free(x);
    free(w);
    free(bias);
}

static void test_conv(void) {
    /* The shapes the two models use, including the asymmetric SAME cases. */
    conv_case(0, 1, 16, 16, 3, 24, 5, 5, 2, 2, 1, 1, 1, 0, 1, 1); /* stem 5x5/s2 */
    conv_case(0, 3, 17, 15, 3, 16, 3, 3, 2, 2, 1, 1, 1, 0, 1, 0); /* stem 3x3/s2 */
    conv_case(0, 3, 9, 9, 24, 28, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1);  /* pointwise VALID */
    conv_case(0, 1, 8, 8, 96, 6, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0);   /* head */
    conv_case(0, 1, 7, 6, 33, 32, 1, 1, 2, 2, 1, 1, 1, 1, 0, 0);  /* 1x1 stride 2 */
    conv_case(0, 3, 5, 5, 4, 17, 3, 3, 1, 1, 2, 2, 1, 3, 1, 0);   /* dilation */
    for (int i = 0; i < 70; i++) {
        int k = (int[]){1, 2, 3, 5}[irand(0, 3)], kw = irand(0, 3) ? k : irand(1, 4);
        int s = irand(1, 3), d = k > 1 && irand(0, 4) == 0 ? 2 : 1;
        int same = irand(0, 1), ih = irand(1, 12), iw = irand(1, 12);
        if (!same && (ih < (k - 1) * d + 1 || iw < (kw - 1) * d + 1))
            same = 1;
        conv_case(0, irand(0, 1) ? 3 : 1, ih, iw, irand(1, 19), irand(1, 37), k, kw, s, irand(1, 3),
                  d, d, same, irand(0, 3), irand(0, 1), irand(0, 1));
    }
}

static void test_depthwise(void) {
    conv_case(1, 1, 20, 20, 24, 1, 3, 3, 1, 1, 1, 1, 1, 0, 1, 1); /* 3x3/s1 */
    conv_case(1, 3, 16, 16, 28, 1, 3, 3, 2, 2, 1, 1, 1, 0, 1, 1); /* 3x3/s2: pad (0,1) */
    conv_case(1, 1, 16, 16, 96, 1, 5, 5, 2, 2, 1, 1, 1, 0, 1, 0); /* 5x5/s2: pad (1,2) */
    conv_case(1, 3, 13, 11, 42, 1, 5, 5, 1, 1, 1, 1, 1, 1, 0, 0); /* 5x5/s1, tail of 2 */
    conv_case(1, 1, 9, 9, 5, 3, 3, 3, 1, 2, 1, 1, 0, 2, 1, 0);    /* multiplier 3 */
    conv_case(1, 1, 12, 19, 16, 1, 3, 3, 1, 1, 2, 2, 1, 0, 1, 0); /* dilation */
    for (int i = 0; i < 70; i++) {
        int k = (int[]){1, 2, 3, 5}[irand(0, 3)], kw = irand(0, 3) ? k : irand(1, 4);
        int s = irand(1, 3), d = k > 1 && irand(0, 4) == 0 ? 2 : 1;
        int same = irand(0, 1), ih = irand(1, 13), iw = irand(1, 22);
        if (!same && (ih < (k - 1) * d + 1 || iw < (kw - 1) * d + 1))
            same = 1;
        conv_case(1, irand(0, 1) ? 3 : 1, ih, iw, irand(1, 37), irand(0, 3) ? 1 : irand(2, 3), k,
                  kw, s, irand(1, 3), d, irand(0, 4) ? d : 1, same, irand(0, 3), irand(0, 1),
                  irand(0, 1));
    }
}

/* ---- Convolution2DTransposeBias ---- */

static void tconv_case(int n, int ih, int iw, int ic, int oc, int kh, int kw, int sh, int sw,
                       int same, int has_bias) {
    int fh = (ih - 1) * sh + kh, fw = (iw - 1) * sw + kw;
    int oh = same ? ih * sh : fh, ow = same ? iw * sw : fw;
    int pt = fh > oh ? (fh - oh) / 2 : 0, pl = fw > ow ? (fw - ow) / 2 : 0;
    size_t nin = (size_t)ih * iw * ic, nout = (size_t)oh * ow * oc;
    float *x = frand_array(nin * (size_t)n, 2.0f);
    float *w = wrand_array((size_t)oc * kh * kw * ic);
    float *bias = wrand_array((size_t)oc);
    tfb *b = tfb_new();
    int xd[4] = {1, ih, iw, ic}, yd[4] = {1, oh, ow, oc}, wd[4] = {oc, kh, kw, ic}, bd[1] = {oc};
    int tx = tfb_tensor(b, 0, 4, xd, 0, "x");
    int tw = tfb_const_f16(b, 4, wd, w);
    int tb = has_bias ? tfb_const_f32(b, 1, bd, bias) : -1;
    int ty = tfb_tensor(b, 0, 4, yd, 0, "y");
    int32_t copts[3] = {same ? 1 : 2, sw, sh};
    uint8_t raw[12];
    for (int i = 0; i < 12; i++)
        raw[i] = (uint8_t)((uint32_t)copts[i / 4] >> (8 * (i % 4)));
    int ins[3] = {tx, tw, tb};
    tfb_op(b, HSQ_TFL_OP_CUSTOM, "Convolution2DTransposeBias", 3, ins, 1, &ty, 0, NULL, raw, 12);
    tfb_io(b, 1, &tx, 1, &ty);
    hsq_model *m = load(b);
    tfb_free(b);

    expect e = expect_new(nout * (size_t)n);
    for (int bi = 0; bi < n; bi++) {
        for (size_t p = 0; p < (size_t)oh * ow; p++)
            for (int o = 0; o < oc; o++) {
                e.want[(size_t)bi * nout + p * oc + o] = has_bias ? bias[o] : 0;
                e.scale[(size_t)bi * nout + p * oc + o] = has_bias ? fabs(bias[o]) : 0;
            }
        for (int iy = 0; iy < ih; iy++)
            for (int ix = 0; ix < iw; ix++)
                for (int ky = 0; ky < kh; ky++)
                    for (int kx = 0; kx < kw; kx++) {
                        int y = iy * sh + ky - pt, xx = ix * sw + kx - pl;
                        if (y < 0 || y >= oh || xx < 0 || xx >= ow)
                            continue;
                        for (int o = 0; o < oc; o++)
                            for (int c = 0; c < ic; c++) {
                                double t =
                                    (double)x[(size_t)bi * nin + ((size_t)iy * iw + ix) * ic + c] *
                                    w[(((size_t)o * kh + ky) * kw + kx) * ic + c];
                                size_t idx = (size_t)bi * nout + ((size_t)y * ow + xx) * oc + o;
                                e.want[idx] += t;
                                e.scale[idx] += fabs(t);
                            }
                    }
    }
    char what[160];
    snprintf(what, sizeof what, "Convolution2DTransposeBias in %dx%dx%d oc %d k %dx%d s %d,%d %s",
             ih, iw, ic, oc, kh, kw, sh, sw, same ? "SAME" : "VALID");
    const float *in[1] = {x};
    run_check(what, m, n, in, &e);
    expect_free(&e);
    hsq_model_free(&m);
    free(x);
    free(w);
    free(bias);
}

static void test_tconv(void) {
    tconv_case(1, 16, 16, 16, 1, 2, 2, 2, 2, 1, 1); /* the segmentation model's output layer */
    tconv_case(3, 7, 5, 16, 1, 2, 2, 2, 2, 1, 1);
    for (int i = 0; i < 30; i++)
        tconv_case(irand(0, 1) ? 3 : 1, irand(1, 9), irand(1, 9), irand(1, 17), irand(1, 5),
                   irand(1, 3), irand(1, 3), irand(1, 3), irand(1, 3), irand(0, 1), irand(0, 1));
}

/* ---- pooling ---- */

static void pool_case(int is_max, int n, int ih, int iw, int c, int fh, int fw, int sh, int sw,
                      int same, int act) {
    int oh, ow, pt, pl;
    same_pad(same, ih, fh, sh, 1, &oh, &pt);
    same_pad(same, iw, fw, sw, 1, &ow, &pl);
    HSQ_ASSERT(oh > 0 && ow > 0);
    size_t nin = (size_t)ih * iw * c, nout = (size_t)oh * ow * c;
    float *x = frand_array(nin * (size_t)n, 3.0f);
    tfb *b = tfb_new();
    int xd[4] = {1, ih, iw, c}, yd[4] = {1, oh, ow, c};
    int tx = tfb_tensor(b, 0, 4, xd, 0, "x"), ty = tfb_tensor(b, 0, 4, yd, 0, "y");
    tfb_opts o = {0};
    opt(&o, 0, 1, same ? HSQ_TFL_PAD_SAME : HSQ_TFL_PAD_VALID);
    opt(&o, 1, 4, sw);
    opt(&o, 2, 4, sh);
    opt(&o, 3, 4, fw);
    opt(&o, 4, 4, fh);
    opt(&o, 5, 1, act);
    tfb_op(b, is_max ? HSQ_TFL_OP_MAX_POOL_2D : HSQ_TFL_OP_AVERAGE_POOL_2D, NULL, 1, &tx, 1, &ty,
           HSQ_TFL_OPT_POOL2D, &o, NULL, 0);
    tfb_io(b, 1, &tx, 1, &ty);
    hsq_model *m = load(b);
    tfb_free(b);
    expect e = expect_new(nout * (size_t)n);
    for (int bi = 0; bi < n; bi++)
        for (int y = 0; y < oh; y++)
            for (int xx = 0; xx < ow; xx++)
                for (int ch = 0; ch < c; ch++) {
                    double s = is_max ? -INFINITY : 0, mag = 0;
                    int cnt = 0;
                    for (int ky = 0; ky < fh; ky++)
                        for (int kx = 0; kx < fw; kx++) {
                            int iy = y * sh - pt + ky, ix = xx * sw - pl + kx;
                            if (iy < 0 || iy >= ih || ix < 0 || ix >= iw)
                                continue;
                            double v = x[(size_t)bi * nin + ((size_t)iy * iw + ix) * c + ch];
                            s = is_max ? (v > s ? v : s) : s + v;
                            mag += fabs(v);
                            cnt++;
                        }
                    size_t idx = (size_t)bi * nout + ((size_t)y * ow + xx) * c + ch;
                    e.want[idx] = act_apply(act, is_max ? s : s / cnt);
                    e.scale[idx] = is_max ? fabs(s) : mag / cnt;
                }
    char what[160];
    snprintf(what, sizeof what, "%s in %dx%dx%d f %dx%d s %d,%d %s",
             is_max ? "MAX_POOL_2D" : "AVERAGE_POOL_2D", ih, iw, c, fh, fw, sh, sw,
             same ? "SAME" : "VALID");
    const float *in[1] = {x};
    run_check(what, m, n, in, &e);
    expect_free(&e);
    hsq_model_free(&m);
    free(x);
}

static void test_pool(void) {
    pool_case(1, 3, 16, 16, 28, 2, 2, 2, 2, 1, 0);     /* BlazeFace shortcut */
    pool_case(0, 3, 16, 16, 16, 16, 16, 16, 16, 0, 0); /* global average */
    pool_case(0, 1, 7, 5, 9, 3, 3, 2, 2, 1, 0);        /* SAME border: fewer elements */
    for (int i = 0; i < 40; i++) {
        int fh = irand(1, 4), fw = irand(1, 4), ih = irand(1, 11), iw = irand(1, 11);
        int same = irand(0, 1);
        if (ih < fh || iw < fw)
            same = 1;
        pool_case(irand(0, 1), irand(0, 1) ? 3 : 1, ih, iw, irand(1, 20), fh, fw, irand(1, 3),
                  irand(1, 3), same, irand(0, 3));
    }
}

/* ---- ADD / MUL with broadcasting ---- */

/* a and b: rank r shapes; const_a / const_b make them constants (no batch). */
static void binary_case(int op, int n, int r, const int *ad, const int *bd, int const_a,
                        int const_b, int act) {
    int od[4];
    size_t na = 1, nb = 1, no = 1;
    for (int i = 0; i < r; i++) {
        od[i] = ad[i] > bd[i] ? ad[i] : bd[i];
        na *= (size_t)ad[i];
        nb *= (size_t)bd[i];
        no *= (size_t)od[i];
    }
    float *a = frand_array(na * (size_t)n, 3.0f), *bv = frand_array(nb * (size_t)n, 3.0f);
    tfb *b = tfb_new();
    int ta = const_a ? tfb_const_f32(b, r, ad, a) : tfb_tensor(b, 0, r, ad, 0, "a");
    int tb = const_b ? tfb_const_f32(b, r, bd, bv) : tfb_tensor(b, 0, r, bd, 0, "b");
    int ty = tfb_tensor(b, 0, r, od, 0, "y");
    tfb_opts o = {0};
    opt(&o, 0, 1, act);
    int ins[2] = {ta, tb};
    tfb_op(b, op == HSQ_BIN_ADD ? HSQ_TFL_OP_ADD : HSQ_TFL_OP_MUL, NULL, 2, ins, 1, &ty,
           op == HSQ_BIN_ADD ? HSQ_TFL_OPT_ADD : HSQ_TFL_OPT_MUL, &o, NULL, 0);
    int gin[2], ngin = 0;
    if (!const_a)
        gin[ngin++] = ta;
    if (!const_b)
        gin[ngin++] = tb;
    tfb_io(b, ngin, gin, 1, &ty);
    hsq_model *m = load(b);
    tfb_free(b);
    expect e = expect_new(no * (size_t)n);
    for (int bi = 0; bi < n; bi++)
        for (size_t i = 0; i < no; i++) {
            /* unravel i over od, then ravel into a and b with broadcasting */
            size_t rem = i, ia = 0, ib = 0, sa = 1, sb = 1;
            for (int d = r - 1; d >= 0; d--) {
                size_t k = rem % (size_t)od[d];
                rem /= (size_t)od[d];
                ia += (ad[d] == 1 ? 0 : k) * sa;
                ib += (bd[d] == 1 ? 0 : k) * sb;
                sa *= (size_t)ad[d];
                sb *= (size_t)bd[d];
            }
            double x = a[(const_a ? 0 : (size_t)bi * na) + ia];
            double y = bv[(const_b ? 0 : (size_t)bi * nb) + ib];
            double v = op == HSQ_BIN_ADD ? x + y : x * y;
            e.want[(size_t)bi * no + i] = act_apply(act, v);
            e.scale[(size_t)bi * no + i] = op == HSQ_BIN_ADD ? fabs(x) + fabs(y) : fabs(v);
        }
    const float *in[2];
    int k = 0;
    if (!const_a)
        in[k++] = a;
    if (!const_b)
        in[k++] = bv;
    char what[120];
    snprintf(what, sizeof what, "%s rank %d const %d%d act %d", op == HSQ_BIN_ADD ? "ADD" : "MUL",
             r, const_a, const_b, act);
    run_check(what, m, n, in, &e);
    expect_free(&e);
    hsq_model_free(&m);
    free(a);
    free(bv);
}

static void test_binary(void) {
    for (int op = 0; op < 2; op++)
        for (int i = 0; i < 12; i++) {
            int h = irand(1, 9), w = irand(1, 9), c = irand(1, 40), n = irand(0, 1) ? 3 : 1;
            int act = irand(0, 3);
            int full[4] = {1, h, w, c}, chan[4] = {1, 1, 1, c}, pix[4] = {1, h, w, 1};
            int cvec[1] = {c};
            binary_case(op, n, 4, full, full, 0, 0, act); /* residual */
            binary_case(op, n, 4, full, chan, 0, 0, act); /* SE gate [1,1,1,C] */
            binary_case(op, n, 4, chan, full, 0, 0, act);
            binary_case(op, n, 4, full, pix, 0, 0, act);
            binary_case(op, n, 4, full, chan, 0, 1, act); /* constant per channel */
            binary_case(op, n, 4, full, full, 1, 0, act); /* constant full map */
            /* a rank-1 constant against a rank-4 activation */
            tfb *b = tfb_new();
            float *cv = frand_array((size_t)c, 2.0f), *x = frand_array((size_t)h * w * c * n, 2.0f);
            int tx = tfb_tensor(b, 0, 4, full, 0, "x"), tc = tfb_const_f32(b, 1, cvec, cv);
            int ty = tfb_tensor(b, 0, 4, full, 0, "y");
            int ins[2] = {tx, tc};
            tfb_op(b, op == HSQ_BIN_ADD ? HSQ_TFL_OP_ADD : HSQ_TFL_OP_MUL, NULL, 2, ins, 1, &ty, 0,
                   NULL, NULL, 0);
            tfb_io(b, 1, &tx, 1, &ty);
            hsq_model *m = load(b);
            tfb_free(b);
            size_t no = (size_t)h * w * c;
            expect e = expect_new(no * (size_t)n);
            for (size_t k = 0; k < no * (size_t)n; k++) {
                double v = op == HSQ_BIN_ADD ? (double)x[k] + cv[k % (size_t)c]
                                             : (double)x[k] * cv[k % (size_t)c];
                e.want[k] = v;
                e.scale[k] = fabs(x[k]) + fabs(cv[k % (size_t)c]);
            }
            const float *in[1] = {x};
            run_check("binary with rank-1 constant", m, n, in, &e);
            expect_free(&e);
            hsq_model_free(&m);
            free(cv);
            free(x);
            /* rank 3, as after a RESHAPE */
            int l = irand(1, 30);
            int r3[3] = {1, l, c}, r3c[3] = {1, 1, c};
            binary_case(op, n, 3, r3, r3c, 0, 0, act);
        }
}

/* ---- unary ---- */

static void test_unary(void) {
    const int ops[] = {HSQ_TFL_OP_RELU, HSQ_TFL_OP_RELU6, HSQ_TFL_OP_RELU_N1_TO_1,
                       HSQ_TFL_OP_HARD_SWISH, HSQ_TFL_OP_LOGISTIC};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++)
        for (int i = 0; i < 6; i++) {
            int n = i % 2 ? 3 : 1, r = irand(1, 4), d[4] = {1, 1, 1, 1};
            size_t cnt = 1;
            for (int j = 1; j < r; j++) {
                d[j] = irand(1, 17);
                cnt *= (size_t)d[j];
            }
            float *x = frand_array(cnt * (size_t)n, 9.0f);
            if (cnt * (size_t)n >= 6) {
                x[0] = -100.0f; /* logistic tails, relu6 clip */
                x[1] = 100.0f;
                x[2] = -3.0f; /* hard-swish knees */
                x[3] = 3.0f;
                x[4] = 0.0f;
                x[5] = -89.0f;
            }
            tfb *b = tfb_new();
            int tx = tfb_tensor(b, 0, r, d, 0, "x"), ty = tfb_tensor(b, 0, r, d, 0, "y");
            tfb_op(b, ops[k], NULL, 1, &tx, 1, &ty, 0, NULL, NULL, 0);
            tfb_io(b, 1, &tx, 1, &ty);
            hsq_model *m = load(b);
            tfb_free(b);
            expect e = expect_new(cnt * (size_t)n);
            for (size_t j = 0; j < cnt * (size_t)n; j++) {
                double v = x[j], y;
                switch (ops[k]) {
                case HSQ_TFL_OP_RELU:
                    y = v < 0 ? 0 : v;
                    break;
                case HSQ_TFL_OP_RELU6:
                    y = v < 0 ? 0 : (v > 6 ? 6 : v);
                    break;
                case HSQ_TFL_OP_RELU_N1_TO_1:
                    y = v < -1 ? -1 : (v > 1 ? 1 : v);
                    break;
                case HSQ_TFL_OP_HARD_SWISH: {
                    double r6 = v + 3 < 0 ? 0 : (v + 3 > 6 ? 6 : v + 3);
                    y = v * r6 / 6;
                    break;
                }
                default:
                    y = 1.0 / (1.0 + exp(-v));
                    break;
                }
                e.want[j] = y;
                e.scale[j] = fabs(y);
            }
            char what[64];
            snprintf(what, sizeof what, "%s rank %d", hsq_tfl_op_name(ops[k]), r);
            const float *in[1] = {x};
            run_check(what, m, n, in, &e);
            expect_free(&e);
            hsq_model_free(&m);
            free(x);
        }
}

/* ---- PAD, RESHAPE, CONCATENATION ---- */

static void test_pad(void) {
    for (int i = 0; i < 25; i++) {
        int n = irand(0, 1) ? 3 : 1, r = irand(2, 4), d[4] = {1, 1, 1, 1}, od[4];
        int32_t p[8] = {0};
        size_t ni = 1, no = 1;
        od[0] = 1;
        for (int j = 1; j < r; j++) {
            d[j] = irand(1, 7);
            p[2 * j] = irand(0, 3);
            p[2 * j + 1] = irand(0, 3);
            od[j] = d[j] + p[2 * j] + p[2 * j + 1];
            ni *= (size_t)d[j];
            no *= (size_t)od[j];
        }
        float *x = frand_array(ni * (size_t)n, 2.0f);
        tfb *b = tfb_new();
        int pd[2] = {r, 2};
        int tx = tfb_tensor(b, 0, r, d, 0, "x"), tp = tfb_const_i32(b, 2, pd, p);
        int ty = tfb_tensor(b, 0, r, od, 0, "y");
        int ins[2] = {tx, tp};
        tfb_op(b, HSQ_TFL_OP_PAD, NULL, 2, ins, 1, &ty, 0, NULL, NULL, 0);
        tfb_io(b, 1, &tx, 1, &ty);
        hsq_model *m = load(b);
        tfb_free(b);
        expect e = expect_new(no * (size_t)n);
        for (int bi = 0; bi < n; bi++)
            for (size_t k = 0; k < no; k++) {
                size_t rem = k, src = 0, stride = 1;
                int inside = 1;
                for (int j = r - 1; j >= 1; j--) {
                    int c = (int)(rem % (size_t)od[j]) - p[2 * j];
                    rem /= (size_t)od[j];
                    if (c < 0 || c >= d[j])
                        inside = 0;
                    else
                        src += (size_t)c * stride;
                    stride *= (size_t)d[j];
                }
                double v = inside ? x[(size_t)bi * ni + src] : 0.0;
                e.want[(size_t)bi * no + k] = v;
                e.scale[(size_t)bi * no + k] = fabs(v);
            }
        const float *in[1] = {x};
        run_check("PAD", m, n, in, &e);
        expect_free(&e);
        hsq_model_free(&m);
        free(x);
    }
    /* Padding the batch is refused at load. */
    tfb *b = tfb_new();
    int d[4] = {1, 2, 2, 1}, od[4] = {2, 2, 2, 1}, pd[2] = {4, 2};
    int32_t p[8] = {0, 1, 0, 0, 0, 0, 0, 0};
    int tx = tfb_tensor(b, 0, 4, d, 0, "x"), tp = tfb_const_i32(b, 2, pd, p);
    int ty = tfb_tensor(b, 0, 4, od, 0, "y"), ins[2] = {tx, tp};
    tfb_op(b, HSQ_TFL_OP_PAD, NULL, 2, ins, 1, &ty, 0, NULL, NULL, 0);
    tfb_io(b, 1, &tx, 1, &ty);
    char err[256];
    HSQ_ASSERT(load_err(b, err, sizeof err) != 0);
    tfb_free(b);
}

/* RESHAPE to rank 3 then RELU: the reshape is an alias of its input. */
static void test_reshape(void) {
    for (int i = 0; i < 10; i++) {
        int n = i % 2 ? 3 : 1, h = irand(1, 9), w = irand(1, 9), c = irand(1, 20);
        int xd[4] = {1, h, w, c}, rd[3] = {1, h * w, c};
        size_t cnt = (size_t)h * w * c;
        float *x = frand_array(cnt * (size_t)n, 2.0f);
        tfb *b = tfb_new();
        int tx = tfb_tensor(b, 0, 4, xd, 0, "x"), tr = tfb_tensor(b, 0, 3, rd, 0, "r");
        int ty = tfb_tensor(b, 0, 3, rd, 0, "y");
        tfb_opts o = {0};
        o.has_vec = 1;
        o.vec_id = 0;
        o.nvec = 3;
        o.vec[0] = -1;
        o.vec[1] = h * w;
        o.vec[2] = c;
        tfb_op(b, HSQ_TFL_OP_RESHAPE, NULL, 1, &tx, 1, &tr, HSQ_TFL_OPT_RESHAPE, &o, NULL, 0);
        tfb_op(b, HSQ_TFL_OP_RELU, NULL, 1, &tr, 1, &ty, 0, NULL, NULL, 0);
        tfb_io(b, 1, &tx, 1, &ty);
        hsq_model *m = load(b);
        tfb_free(b);
        hsq_shape s = hsq_model_output_shape(m, 0);
        HSQ_ASSERT_EQ(s.rank, 3);
        HSQ_ASSERT_EQ(s.dims[1], h * w);
        expect e = expect_new(cnt * (size_t)n);
        for (size_t k = 0; k < cnt * (size_t)n; k++) {
            e.want[k] = x[k] < 0 ? 0 : x[k];
            e.scale[k] = fabs(x[k]);
        }
        const float *in[1] = {x};
        run_check("RESHAPE+RELU", m, n, in, &e);
        expect_free(&e);
        hsq_model_free(&m);
        free(x);
    }
}

static void test_concat(void) {
    for (int i = 0; i < 25; i++) {
        int n = irand(0, 1) ? 3 : 1, r = irand(3, 4), nin = irand(1, 3);
        int axis = irand(1, r - 1), d[3][4], od[4];
        int base[4] = {1, irand(1, 6), irand(1, 6), irand(1, 6)};
        size_t cnt[3], no = 1;
        float *x[3];
        tfb *b = tfb_new();
        int t[3];
        memcpy(od, base, sizeof od);
        od[axis] = 0;
        for (int k = 0; k < nin; k++) {
            memcpy(d[k], base, sizeof base);
            d[k][axis] = irand(1, 6);
            od[axis] += d[k][axis];
            cnt[k] = 1;
            for (int j = 0; j < r; j++)
                cnt[k] *= (size_t)d[k][j];
            x[k] = frand_array(cnt[k] * (size_t)n, 2.0f);
            t[k] = tfb_tensor(b, 0, r, d[k], 0, "x");
        }
        for (int j = 0; j < r; j++)
            no *= (size_t)od[j];
        int ty = tfb_tensor(b, 0, r, od, 0, "y");
        tfb_opts o = {0};
        opt(&o, 0, 4, irand(0, 1) ? axis : axis - r); /* negative axis too */
        tfb_op(b, HSQ_TFL_OP_CONCATENATION, NULL, nin, t, 1, &ty, HSQ_TFL_OPT_CONCAT, &o, NULL, 0);
        tfb_io(b, nin, t, 1, &ty);
        hsq_model *m = load(b);
        tfb_free(b);
        expect e = expect_new(no * (size_t)n);
        for (int bi = 0; bi < n; bi++)
            for (size_t k = 0; k < no; k++) {
                size_t rem = k;
                int idx[4];
                for (int j = r - 1; j >= 0; j--) {
                    idx[j] = (int)(rem % (size_t)od[j]);
                    rem /= (size_t)od[j];
                }
                int which = 0, a = idx[axis];
                while (a >= d[which][axis])
                    a -= d[which++][axis];
                idx[axis] = a;
                size_t src = 0;
                for (int j = 0; j < r; j++)
                    src = src * (size_t)d[which][j] + (size_t)idx[j];
                double v = x[which][(size_t)bi * cnt[which] + src];
                e.want[(size_t)bi * no + k] = v;
                e.scale[(size_t)bi * no + k] = fabs(v);
            }
        const float *in[3] = {x[0], nin > 1 ? x[1] : NULL, nin > 2 ? x[2] : NULL};
        run_check("CONCATENATION", m, n, in, &e);
        expect_free(&e);
        hsq_model_free(&m);
        for (int k = 0; k < nin; k++)
            free(x[k]);
    }
}

/* ---- RESIZE_BILINEAR ---- */

static void resize_case(int n, int ih, int iw, int c, int oh, int ow, int align, int half) {
    size_t ni = (size_t)ih * iw * c, no = (size_t)oh * ow * c;
    float *x = frand_array(ni * (size_t)n, 2.0f);
    tfb *b = tfb_new();
    int xd[4] = {1, ih, iw, c}, yd[4] = {1, oh, ow, c}, sd[1] = {2};
    int32_t size[2] = {oh, ow};
    int tx = tfb_tensor(b, 0, 4, xd, 0, "x"), ts = tfb_const_i32(b, 1, sd, size);
    int ty = tfb_tensor(b, 0, 4, yd, 0, "y"), ins[2] = {tx, ts};
    tfb_opts o = {0};
    opt(&o, 2, 1, align);
    opt(&o, 3, 1, half);
    tfb_op(b, HSQ_TFL_OP_RESIZE_BILINEAR, NULL, 2, ins, 1, &ty, HSQ_TFL_OPT_RESIZE_BILINEAR, &o,
           NULL, 0);
    tfb_io(b, 1, &tx, 1, &ty);
    hsq_model *m = load(b);
    tfb_free(b);
    expect e = expect_new(no * (size_t)n);
    double sy = align && oh > 1 ? (double)(ih - 1) / (oh - 1) : (double)ih / oh;
    double sx = align && ow > 1 ? (double)(iw - 1) / (ow - 1) : (double)iw / ow;
    for (int bi = 0; bi < n; bi++)
        for (int y = 0; y < oh; y++)
            for (int xx = 0; xx < ow; xx++) {
                double fy = half ? (y + 0.5) * sy - 0.5 : y * sy;
                double fx = half ? (xx + 0.5) * sx - 0.5 : xx * sx;
                /* clamp the sample position into the input */
                fy = fy < 0 ? 0 : (fy > ih - 1 ? ih - 1 : fy);
                fx = fx < 0 ? 0 : (fx > iw - 1 ? iw - 1 : fx);
                int y0 = (int)floor(fy), x0 = (int)floor(fx);
                int y1 = y0 + 1 < ih ? y0 + 1 : ih - 1, x1 = x0 + 1 < iw ? x0 + 1 : iw - 1;
                double dy = fy - y0, dx = fx - x0;
                for (int ch = 0; ch < c; ch++) {
                    const float *p = x + (size_t)bi * ni;
#define AT(yy, xq) ((double)p[((size_t)(yy)*iw + (xq)) * c + ch])
                    double v = AT(y0, x0) * (1 - dy) * (1 - dx) + AT(y0, x1) * (1 - dy) * dx +
                               AT(y1, x0) * dy * (1 - dx) + AT(y1, x1) * dy * dx;
                    double mag =
                        fabs(AT(y0, x0)) + fabs(AT(y0, x1)) + fabs(AT(y1, x0)) + fabs(AT(y1, x1));
#undef AT
                    size_t idx = (size_t)bi * no + ((size_t)y * ow + xx) * c + ch;
                    e.want[idx] = v;
                    /* positions are computed in float: allow their rounding */
                    e.scale[idx] = 4 * mag;
                }
            }
    char what[120];
    snprintf(what, sizeof what, "RESIZE_BILINEAR %dx%d -> %dx%d align %d half %d", ih, iw, oh, ow,
             align, half);
    const float *in[1] = {x};
    run_check(what, m, n, in, &e);
    expect_free(&e);
    hsq_model_free(&m);
    free(x);
}

static void test_resize(void) {
    resize_case(3, 16, 16, 16, 32, 32, 0, 1); /* the segmentation decoder */
    resize_case(1, 8, 8, 3, 16, 16, 1, 0);
    resize_case(1, 8, 8, 3, 16, 16, 0, 0);
    for (int i = 0; i < 30; i++) {
        int mode = irand(0, 2);
        resize_case(irand(0, 1) ? 3 : 1, irand(1, 9), irand(1, 9), irand(1, 9), irand(1, 20),
                    irand(1, 20), mode == 1, mode == 2);
    }
}

/* ---- a small graph: fusion, aliases, arena reuse, two outputs ---- */

/* x -> CONV 3x3 (fp16) -> RELU -> r; r -> DW 3x3 -> ADD(r) -> RELU -> y0;
 * r -> MAX_POOL 2x2/2 -> y1. */
static void test_graph(void) {
    const int h = 9, w = 10, ic = 5, c = 12;
    for (int n = 1; n <= 3; n += 2) {
        float *x = frand_array((size_t)h * w * ic * n, 2.0f);
        float *cw = wrand_array((size_t)c * 9 * ic), *cb = wrand_array((size_t)c);
        float *dw = wrand_array((size_t)9 * c), *db = wrand_array((size_t)c);
        tfb *b = tfb_new();
        int xd[4] = {1, h, w, ic}, fd[4] = {1, h, w, c}, pd[4] = {1, (h + 1) / 2, (w + 1) / 2, c};
        int cwd[4] = {c, 3, 3, ic}, dwd[4] = {1, 3, 3, c}, bd[1] = {c};
        int tx = tfb_tensor(b, 0, 4, xd, 0, "x");
        int tcw = tfb_const_f16(b, 4, cwd, cw), tcb = tfb_const_f16(b, 1, bd, cb);
        int tdw = tfb_const_f32(b, 4, dwd, dw), tdb = tfb_const_f32(b, 1, bd, db);
        int t1 = tfb_tensor(b, 0, 4, fd, 0, "conv"), tr = tfb_tensor(b, 0, 4, fd, 0, "relu");
        int t2 = tfb_tensor(b, 0, 4, fd, 0, "dw"), t3 = tfb_tensor(b, 0, 4, fd, 0, "add");
        int ty0 = tfb_tensor(b, 0, 4, fd, 0, "out0"), ty1 = tfb_tensor(b, 0, 4, pd, 0, "out1");
        tfb_opts co = {0}, dwo = {0}, po = {0};
        opt(&co, 0, 1, HSQ_TFL_PAD_SAME);
        opt(&co, 1, 4, 1);
        opt(&co, 2, 4, 1);
        opt(&dwo, 0, 1, HSQ_TFL_PAD_SAME);
        opt(&dwo, 1, 4, 1);
        opt(&dwo, 2, 4, 1);
        opt(&dwo, 3, 4, 1);
        opt(&po, 0, 1, HSQ_TFL_PAD_SAME);
        opt(&po, 1, 4, 2);
        opt(&po, 2, 4, 2);
        opt(&po, 3, 4, 2);
        opt(&po, 4, 4, 2);
        int ci[3] = {tx, tcw, tcb}, di[3] = {tr, tdw, tdb}, ai[2] = {t2, tr};
        tfb_op(b, HSQ_TFL_OP_CONV_2D, NULL, 3, ci, 1, &t1, HSQ_TFL_OPT_CONV2D, &co, NULL, 0);
        tfb_op(b, HSQ_TFL_OP_RELU, NULL, 1, &t1, 1, &tr, 0, NULL, NULL, 0);
        tfb_op(b, HSQ_TFL_OP_DEPTHWISE_CONV_2D, NULL, 3, di, 1, &t2, HSQ_TFL_OPT_DEPTHWISE, &dwo,
               NULL, 0);
        tfb_op(b, HSQ_TFL_OP_ADD, NULL, 2, ai, 1, &t3, 0, NULL, NULL, 0);
        tfb_op(b, HSQ_TFL_OP_RELU, NULL, 1, &t3, 1, &ty0, 0, NULL, NULL, 0);
        tfb_op(b, HSQ_TFL_OP_MAX_POOL_2D, NULL, 1, &tr, 1, &ty1, HSQ_TFL_OPT_POOL2D, &po, NULL, 0);
        int outs_t[2] = {ty0, ty1};
        tfb_io(b, 1, &tx, 2, outs_t);
        hsq_model *m = load(b);
        tfb_free(b);
        HSQ_ASSERT_EQ(hsq_model_n_inputs(m), 1);
        HSQ_ASSERT_EQ(hsq_model_n_outputs(m), 2);
        HSQ_ASSERT_STR_EQ(hsq_model_output_name(m, 0), "out0");
        HSQ_ASSERT_STR_EQ(hsq_model_output_name(m, 1), "out1");
        HSQ_ASSERT(hsq_model_output_name(m, 2) == NULL);
        HSQ_ASSERT_EQ(hsq_model_output_shape(m, 1).dims[1], (h + 1) / 2);

        size_t nf = (size_t)h * w * c, np = (size_t)pd[1] * pd[2] * c;
        double *r = calloc(nf * n, sizeof *r);
        expect e0 = expect_new(nf * n), e1 = expect_new(np * n);
        HSQ_ASSERT(r);
        for (int bi = 0; bi < n; bi++) {
            double *rb = r + (size_t)bi * nf;
            for (int y = 0; y < h; y++)
                for (int xx = 0; xx < w; xx++)
                    for (int o = 0; o < c; o++) {
                        double s = cb[o];
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                int iy = y - 1 + ky, ix = xx - 1 + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                    continue;
                                for (int k = 0; k < ic; k++)
                                    s += (double)x[(size_t)bi * h * w * ic +
                                                   ((size_t)iy * w + ix) * ic + k] *
                                         cw[(((size_t)o * 3 + ky) * 3 + kx) * ic + k];
                            }
                        rb[((size_t)y * w + xx) * c + o] = s < 0 ? 0 : s;
                    }
            for (int y = 0; y < h; y++)
                for (int xx = 0; xx < w; xx++)
                    for (int o = 0; o < c; o++) {
                        double s = db[o], mag = fabs(s);
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                int iy = y - 1 + ky, ix = xx - 1 + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                    continue;
                                double t = rb[((size_t)iy * w + ix) * c + o] *
                                           dw[((size_t)ky * 3 + kx) * c + o];
                                s += t;
                                mag += fabs(t);
                            }
                        double v = s + rb[((size_t)y * w + xx) * c + o];
                        size_t idx = (size_t)bi * nf + ((size_t)y * w + xx) * c + o;
                        e0.want[idx] = v < 0 ? 0 : v;
                        /* the conv's own rounding feeds through: be generous */
                        e0.scale[idx] = 10 * (mag + fabs(rb[((size_t)y * w + xx) * c + o]) + 1);
                    }
            for (int y = 0; y < pd[1]; y++)
                for (int xx = 0; xx < pd[2]; xx++)
                    for (int o = 0; o < c; o++) {
                        double best = -INFINITY;
                        for (int ky = 0; ky < 2; ky++)
                            for (int kx = 0; kx < 2; kx++) {
                                int iy = 2 * y + ky, ix = 2 * xx + kx;
                                if (iy < h && ix < w && rb[((size_t)iy * w + ix) * c + o] > best)
                                    best = rb[((size_t)iy * w + ix) * c + o];
                            }
                        size_t idx = (size_t)bi * np + ((size_t)y * pd[2] + xx) * c + o;
                        e1.want[idx] = best;
                        e1.scale[idx] = 10 * (fabs(best) + 1);
                    }
        }
        for (int mode = 0; mode < NMODES; mode++) {
            if (mode == MODE_SIMD && !hsq_ops_simd())
                continue;
            hsq_ops_force_portable(mode == MODE_PORTABLE);
            hsq_model_ctx *ctx;
            HSQ_OK(hsq_model_ctx_new(&ctx, m));
            hsq_model_ctx_set_reference(ctx, mode == MODE_REF);
            const float *in[1] = {x}, *outs[2];
            HSQ_OK(hsq_model_run(ctx, n, in, outs));
            check("graph out0", outs[0], &e0);
            check("graph out1", outs[1], &e1);
            hsq_model_ctx_free(&ctx);
        }
        hsq_ops_force_portable(0);
        /* Image i of a batch is bit-identical to a batch-1 run of it. */
        if (n > 1) {
            hsq_model_ctx *cb, *c1;
            HSQ_OK(hsq_model_ctx_new(&cb, m));
            HSQ_OK(hsq_model_ctx_new(&c1, m));
            const float *in[1] = {x}, *ob[2], *o1[2];
            HSQ_OK(hsq_model_run(cb, n, in, ob));
            for (int i = 0; i < n; i++) {
                const float *xi[1] = {x + (size_t)i * h * w * ic};
                HSQ_OK(hsq_model_run(c1, 1, xi, o1));
                HSQ_ASSERT(memcmp(o1[0], ob[0] + (size_t)i * nf, nf * sizeof(float)) == 0);
                HSQ_ASSERT(memcmp(o1[1], ob[1] + (size_t)i * np, np * sizeof(float)) == 0);
            }
            hsq_model_ctx_free(&cb);
            hsq_model_ctx_free(&c1);
        }
        expect_free(&e0);
        expect_free(&e1);
        free(r);
        hsq_model_free(&m);
        free(x);
        free(cw);
        free(cb);
        free(dw);
        free(db);
    }
}

/* ---- errors and helpers ---- */

static void test_errors(void) {
    char err[256];
    /* An op the runtime does not implement is named at load. */
    tfb *b = tfb_new();
    int d[4] = {1, 2, 2, 1};
    int tx = tfb_tensor(b, 0, 4, d, 0, "x"), ty = tfb_tensor(b, 0, 4, d, 0, "y");
    tfb_op(b, 92, NULL, 1, &tx, 1, &ty, 0, NULL, NULL, 0);
    tfb_io(b, 1, &tx, 1, &ty);
    HSQ_ASSERT_EQ(load_err(b, err, sizeof err), HSQ_EINVAL);
    HSQ_ASSERT(strstr(err, "unsupported op SQUARE (builtin 92)") != NULL);
    HSQ_ASSERT(strstr(err, "test.tflite") == err);
    tfb_free(b);

    /* An unknown custom op, and a builtin code past the old byte field. */
    b = tfb_new();
    tx = tfb_tensor(b, 0, 4, d, 0, "x");
    ty = tfb_tensor(b, 0, 4, d, 0, "y");
    tfb_op(b, HSQ_TFL_OP_CUSTOM, "FancyOp", 1, &tx, 1, &ty, 0, NULL, NULL, 0);
    tfb_io(b, 1, &tx, 1, &ty);
    HSQ_ASSERT_EQ(load_err(b, err, sizeof err), HSQ_EINVAL);
    HSQ_ASSERT(strstr(err, "unsupported custom op FancyOp") != NULL);
    tfb_free(b);
    b = tfb_new();
    tx = tfb_tensor(b, 0, 4, d, 0, "x");
    ty = tfb_tensor(b, 0, 4, d, 0, "y");
    tfb_op(b, 150, NULL, 1, &tx, 1, &ty, 0, NULL, NULL, 0);
    tfb_io(b, 1, &tx, 1, &ty);
    HSQ_ASSERT_EQ(load_err(b, err, sizeof err), HSQ_EINVAL);
    HSQ_ASSERT(strstr(err, "GELU (builtin 150)") != NULL);
    tfb_free(b);

    /* A declared output shape that disagrees with the op is corrupt. */
    b = tfb_new();
    int bad[4] = {1, 2, 3, 1};
    tx = tfb_tensor(b, 0, 4, d, 0, "x");
    ty = tfb_tensor(b, 0, 4, bad, 0, "y");
    tfb_op(b, HSQ_TFL_OP_RELU, NULL, 1, &tx, 1, &ty, 0, NULL, NULL, 0);
    tfb_io(b, 1, &tx, 1, &ty);
    HSQ_ASSERT_EQ(load_err(b, err, sizeof err), HSQ_ECORRUPT);
    HSQ_ASSERT(strstr(err, "declared [1,2,3,1], computed [1,2,2,1]") != NULL);
    tfb_free(b);

    /* A batch outside 1..64 and a missing input are refused. */
    b = tfb_new();
    tx = tfb_tensor(b, 0, 4, d, 0, "x");
    ty = tfb_tensor(b, 0, 4, d, 0, "y");
    tfb_op(b, HSQ_TFL_OP_RELU, NULL, 1, &tx, 1, &ty, 0, NULL, NULL, 0);
    tfb_io(b, 1, &tx, 1, &ty);
    hsq_model *m = load(b);
    tfb_free(b);
    hsq_model_ctx *c;
    HSQ_OK(hsq_model_ctx_new(&c, m));
    float x[4 * 65] = {0};
    const float *in[1] = {x}, *outs[1], *none[1] = {NULL};
    HSQ_ASSERT_EQ(hsq_model_run(c, 0, in, outs), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_model_run(c, 65, in, outs), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_model_run(c, 1, none, outs), HSQ_EINVAL);
    HSQ_OK(hsq_model_run(c, 64, in, outs));
    hsq_model_ctx_free(&c);
    hsq_model_ctx_free(&c); /* harmless twice */
    hsq_model_free(&m);
    hsq_model_free(&m);

    /* Missing file: -errno with the file's name in the message. */
    HSQ_ASSERT_EQ(hsq_model_load(&m, "/nonexistent/dir/none.tflite", err, sizeof err), -ENOENT);
    HSQ_ASSERT(m == NULL);
    HSQ_ASSERT(strstr(err, "none.tflite") != NULL);
}

static void test_helpers(void) {
    /* SAME padding as models.md states it for the two models. */
    int o, p;
    hsq_pad_same_valid(1, 128, 5, 2, 1, &o, &p);
    HSQ_ASSERT(o == 64 && p == 1); /* (1,2) */
    hsq_pad_same_valid(1, 64, 3, 2, 1, &o, &p);
    HSQ_ASSERT(o == 32 && p == 0); /* (0,1) */
    hsq_pad_same_valid(1, 32, 5, 2, 1, &o, &p);
    HSQ_ASSERT(o == 16 && p == 1); /* (1,2) */
    hsq_pad_same_valid(1, 64, 3, 1, 1, &o, &p);
    HSQ_ASSERT(o == 64 && p == 1);
    hsq_pad_same_valid(1, 16, 5, 1, 1, &o, &p);
    HSQ_ASSERT(o == 16 && p == 2);
    hsq_pad_same_valid(0, 64, 64, 64, 1, &o, &p);
    HSQ_ASSERT(o == 1 && p == 0);
    hsq_pad_same_valid(0, 4, 5, 1, 1, &o, &p);
    HSQ_ASSERT(o == 0);

    /* Every half value against ldexp arithmetic. */
    for (uint32_t h = 0; h < 65536; h++) {
        int e = (int)(h >> 10) & 0x1f, man = (int)(h & 0x3ff);
        double v;
        if (e == 0x1f)
            v = man ? NAN : INFINITY;
        else if (e == 0)
            v = ldexp(man, -24);
        else
            v = ldexp(1024 + man, e - 25);
        if (h & 0x8000)
            v = -v;
        float f = hsq_half_to_float((uint16_t)h);
        if (isnan(v))
            HSQ_ASSERT(isnan(f));
        else if ((double)f != v || !signbit(f) != !signbit(v))
            HSQ_FAIL_("half 0x%04x: got %.10g want %.10g", h, (double)f, v);
    }
    /* ... and the test builder's encoder round-trips through it. */
    for (int k = -1024; k <= 1024; k++) {
        float f = (float)k / 1024.0f;
        HSQ_ASSERT(hsq_half_to_float(tfb_half(f)) == f);
    }
}

int main(void) {
    test_helpers();
    test_errors();
    test_conv();
    test_depthwise();
    test_tconv();
    test_pool();
    test_binary();
    test_unary();
    test_pad();
    test_reshape();
    test_concat();
    test_resize();
    test_graph();
    printf("model ops: ok (%s kernels available)\n", hsq_ops_simd() ? "AVX2+FMA" : "portable");
    return 0;
}
