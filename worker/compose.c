/* compose.c - matte refinement, backgrounds, compositing, clothing recolour,
 * retouch and tone on float RGB (see compose.h).
 *
 * DESIGN. Every filter is built on one primitive, box_mean(): the mean over
 * (2r+1)^2 windows clipped at the borders (normalised by the pixels actually
 * inside, as in He's reference code), computed with running sums in double,
 * so its cost does not depend on r and a constant input comes out exactly
 * constant. Its input rows come from a producer callback, so the products a
 * guided filter needs (I*p, I*I, ...) are computed row by row and never
 * stored as whole planes: a colour guided filter holds 13 mean channels plus
 * 4 coefficient channels, and the subsampled ("fast") variant holds them at
 * 1/s^2 of the size. Strength-0 calls return before touching a pixel, which
 * is what makes them bit-exact no-ops.
 */
#include "worker/compose.h"

#include "common/alloc.h"
#include "schemas/err.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <immintrin.h>
#endif

/* ---- argument checks ---- */

static int dims_ok(uint32_t w, uint32_t h) {
    return w > 0 && h > 0 && (uint64_t)w * h <= HSQ_CMP_MAX_PIXELS;
}

static int unit(float v) {
    return v >= 0.0f && v <= 1.0f;
} /* false for NaN */

static int rgb_ok(const float c[3]) {
    return c && unit(c[0]) && unit(c[1]) && unit(c[2]);
}

static float clamp01(float v) {
    if (!(v > 0.0f)) /* NaN too */
        return 0.0f;
    return v < 1.0f ? v : 1.0f;
}

static float lerpf(float a, float b, float t) {
    return a + t * (b - a);
} /* a == b -> a exactly */

static float luma601(const float *p) {
    return 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2];
}

/* ---- conversion ---- */

int hsq_cmp_from_u8(const uint8_t *rgb, uint32_t w, uint32_t h, float *out) {
    if (!rgb || !out || !dims_ok(w, h))
        return HSQ_EINVAL;
    for (size_t i = 0, n = (size_t)w * h * 3; i < n; i++)
        out[i] = rgb[i] / 255.0f;
    return 0;
}

int hsq_cmp_to_u8(const float *rgb, uint32_t w, uint32_t h, uint8_t *out) {
    if (!rgb || !out || !dims_ok(w, h))
        return HSQ_EINVAL;
    for (size_t i = 0, n = (size_t)w * h * 3; i < n; i++)
        out[i] = (uint8_t)(clamp01(rgb[i]) * 255.0f + 0.5f);
    return 0;
}

/* ---- box mean: the one filter primitive ---- */

/* Returns row y (w * nc floats), either a pointer into existing memory or
 * scratch filled in. Called twice per row (entering and leaving the window). */
typedef const float *(*row_fn)(void *ctx, uint32_t y, float *scratch);

typedef struct {
    const float *buf;
    size_t stride; /* floats per row */
} plain_rows;

static const float *plain_row(void *ctx, uint32_t y, float *scratch) {
    (void)scratch;
    const plain_rows *p = ctx;
    return p->buf + (size_t)y * p->stride;
}

/* The arithmetic loops of the filters are written as flat loops over
 * contiguous arrays, compiled twice from one always-inline body: for the
 * baseline ISA and with target("avx2"), picked at run time (DISPATCH). The
 * library is built with -O3 (worker/meson.build), where gcc vectorizes such
 * loops; neither build reassociates or contracts floating point (no
 * -ffast-math, ISO C's -ffp-contract=off), so both give the same results. */
#ifndef CMP_AVX2 /* -DCMP_AVX2=0 builds the portable loops alone */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define CMP_AVX2 1
#else
#define CMP_AVX2 0
#endif
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))

static int force_portable;

void hsq_cmp_force_portable(int on) {
    force_portable = on != 0;
}

#if CMP_AVX2
static int use_avx2(void) {
    return !force_portable && __builtin_cpu_supports("avx2");
}

#define DISPATCH(name, params, args)                                                               \
    static void name##_base params {                                                               \
        name##_body args;                                                                          \
    }                                                                                              \
    __attribute__((target("avx2"))) static void name##_avx2 params {                               \
        name##_body args;                                                                          \
    }                                                                                              \
    static void name params {                                                                      \
        if (use_avx2())                                                                            \
            name##_avx2 args;                                                                      \
        else                                                                                       \
            name##_base args;                                                                      \
    }
#else
#define DISPATCH(name, params, args)                                                               \
    static void name params {                                                                      \
        name##_body args;                                                                          \
    }
#endif

/* col += row (sign > 0) or col -= row, n values. */
ALWAYS_INLINE void col_add_body(double *restrict col, const float *restrict row, size_t n,
                                int sign) {
    if (sign > 0)
        for (size_t i = 0; i < n; i++)
            col[i] += row[i];
    else
        for (size_t i = 0; i < n; i++)
            col[i] -= row[i];
}
DISPATCH(col_add, (double *restrict col, const float *restrict row, size_t n, int sign),
         (col, row, n, sign))

/* One output row of box_mean from the column sums col (w x nc): a running
 * window sum per channel along x, windows clipped at the ends, times k[x]
 * (1 / the window's pixel count). The channels of a pixel are the inner
 * loop, so the nc running sums advance side by side (independent chains)
 * and the loop vectorizes across them; nc <= 16. */
ALWAYS_INLINE void box_row_body(const double *restrict col, float *restrict o, size_t w, size_t nc,
                                size_t R, const double *restrict k) {
    double s[16] = {0};
    for (size_t x = 0; x <= R && x < w; x++)
        for (size_t c = 0; c < nc; c++)
            s[c] += col[x * nc + c];
    for (size_t x = 0; x < w; x++) {
        const double kx = k[x];
        float *ox = o + x * nc;
        for (size_t c = 0; c < nc; c++)
            ox[c] = (float)(s[c] * kx);
        /* Slide to x + 1: add the column entering, drop the one leaving. */
        if (x + R + 1 < w && x >= R) {
            const double *in = col + (x + R + 1) * nc, *out = col + (x - R) * nc;
            for (size_t c = 0; c < nc; c++)
                s[c] += in[c] - out[c];
        } else if (x + R + 1 < w) {
            const double *in = col + (x + R + 1) * nc;
            for (size_t c = 0; c < nc; c++)
                s[c] += in[c];
        } else if (x >= R) {
            const double *out = col + (x - R) * nc;
            for (size_t c = 0; c < nc; c++)
                s[c] -= out[c];
        }
    }
}
DISPATCH(box_row,
         (const double *restrict col, float *restrict o, size_t w, size_t nc, size_t R,
          const double *restrict k),
         (col, o, w, nc, R, k))

/* dst (w x h x nc) = mean of the rows' values over clipped (2r+1)^2 windows.
 * dst must not be memory the producer reads. Sums are in double: window
 * sums of floats are exact there (a constant input gives n c exactly), and
 * a guided filter's variances (E[I^2] - E[I]^2, of the order of eps = 1e-4)
 * keep their digits. */
static int box_mean(row_fn row, void *ctx, uint32_t w, uint32_t h, int nc, int r, float *dst) {
    assert(nc >= 1 && nc <= 16);
    const size_t rw = (size_t)w * (size_t)nc;
    double *col = hsq_trymalloc(rw * sizeof *col);
    float *scratch = hsq_trymalloc(rw * sizeof *scratch);
    double *k = hsq_trymalloc((size_t)w * sizeof *k);
    if (!col || !scratch || !k) {
        free(col);
        free(scratch);
        free(k);
        return HSQ_ENOMEM;
    }
    memset(col, 0, rw * sizeof *col);
    const int64_t R = r, W = w, H = h;
    double *inv_nx = k; /* reused: k[x] = inv_nx[x] * inv_ny per row */
    double *knx = hsq_trymalloc((size_t)w * sizeof *knx);
    if (!knx) {
        free(col);
        free(scratch);
        free(k);
        return HSQ_ENOMEM;
    }
    /* Reciprocals of the window widths: a multiply per output instead of a
     * division. s is an exact sum of floats (n c for a constant c), and
     * n c * (1/n) is within a double ulp or two of c, which rounds back to
     * the float c: a constant input still comes out exactly constant. */
    for (int64_t x = 0; x < W; x++) {
        int64_t x0 = x - R < 0 ? 0 : x - R, x1 = x + R >= W ? W - 1 : x + R;
        knx[x] = 1.0 / (double)(x1 - x0 + 1);
    }
    for (int64_t y = 0; y <= R && y < H; y++)
        col_add(col, row(ctx, (uint32_t)y, scratch), rw, 1);
    for (int64_t y = 0; y < H; y++) {
        int64_t y0 = y - R < 0 ? 0 : y - R, y1 = y + R >= H ? H - 1 : y + R;
        double inv_ny = 1.0 / (double)(y1 - y0 + 1);
        for (int64_t x = 0; x < W; x++)
            inv_nx[x] = knx[x] * inv_ny;
        box_row(col, dst + (size_t)y * rw, (size_t)w, (size_t)nc, (size_t)r, inv_nx);
        if (y + R + 1 < H)
            col_add(col, row(ctx, (uint32_t)(y + R + 1), scratch), rw, 1);
        if (y - R >= 0)
            col_add(col, row(ctx, (uint32_t)(y - R), scratch), rw, -1);
    }
    free(knx);
    free(k);
    free(col);
    free(scratch);
    return 0;
}

static int box_mean_buf(const float *src, uint32_t w, uint32_t h, int nc, int r, float *dst) {
    plain_rows pr = {src, (size_t)w * (size_t)nc};
    return box_mean(plain_row, &pr, w, h, nc, r, dst);
}

/* ---- bilinear resampling tables ---- */

/* For each destination index i: source indexes i0, i1 and weight f of i1,
 * with source position (i + 0.5) / scale - 0.5, clamped to the edges. */
typedef struct {
    uint32_t *i0, *i1;
    float *f;
} lerp_axis;

static void lerp_axis_free(lerp_axis *a) {
    free(a->i0);
    free(a->i1);
    free(a->f);
    a->i0 = a->i1 = NULL;
    a->f = NULL;
}

static int lerp_axis_build(lerp_axis *a, uint32_t dn, uint32_t sn, double scale) {
    a->i0 = hsq_trymalloc(sizeof(uint32_t) * dn);
    a->i1 = hsq_trymalloc(sizeof(uint32_t) * dn);
    a->f = hsq_trymalloc(sizeof(float) * dn);
    if (!a->i0 || !a->i1 || !a->f) {
        lerp_axis_free(a);
        return HSQ_ENOMEM;
    }
    for (uint32_t i = 0; i < dn; i++) {
        double s = (i + 0.5) / scale - 0.5;
        if (s < 0)
            s = 0;
        if (s > sn - 1)
            s = sn - 1;
        uint32_t j = (uint32_t)s;
        a->i0[i] = j;
        a->i1[i] = j + 1 < sn ? j + 1 : j;
        a->f[i] = (float)(s - j);
    }
    return 0;
}

/* dst (dw x dh x nc) from src (sw x sh x nc), scale = dst pixels per src pixel. */
static int resample_bilinear(const float *src, uint32_t sw, uint32_t sh, int nc, float *dst,
                             uint32_t dw, uint32_t dh, double sx, double sy) {
    lerp_axis ax, ay;
    if (lerp_axis_build(&ax, dw, sw, sx))
        return HSQ_ENOMEM;
    if (lerp_axis_build(&ay, dh, sh, sy)) {
        lerp_axis_free(&ax);
        return HSQ_ENOMEM;
    }
    for (uint32_t y = 0; y < dh; y++) {
        const float *r0 = src + (size_t)ay.i0[y] * sw * nc, *r1 = src + (size_t)ay.i1[y] * sw * nc;
        float fy = ay.f[y];
        float *o = dst + (size_t)y * dw * nc;
        for (uint32_t x = 0; x < dw; x++) {
            size_t a = (size_t)ax.i0[x] * nc, b = (size_t)ax.i1[x] * nc;
            float fx = ax.f[x];
            for (int c = 0; c < nc; c++) {
                float top = lerpf(r0[a + c], r0[b + c], fx);
                float bot = lerpf(r1[a + c], r1[b + c], fx);
                o[(size_t)x * nc + c] = lerpf(top, bot, fy);
            }
        }
    }
    lerp_axis_free(&ax);
    lerp_axis_free(&ay);
    return 0;
}

int hsq_cmp_mask_upsample(const float *src, uint32_t sw, uint32_t sh, float *dst, uint32_t dw,
                          uint32_t dh) {
    if (!src || !dst || !dims_ok(sw, sh) || !dims_ok(dw, dh))
        return HSQ_EINVAL;
    return resample_bilinear(src, sw, sh, 1, dst, dw, dh, (double)dw / sw, (double)dh / sh);
}

/* Mean of each s x s block (partial blocks at the right and bottom edges
 * average what they have). dst is ceil(w/s) x ceil(h/s) x nc. */
static void downsample_box(const float *src, uint32_t w, uint32_t h, int nc, uint32_t s,
                           float *dst) {
    uint32_t wl = (w + s - 1) / s, hl = (h + s - 1) / s;
    for (uint32_t ly = 0; ly < hl; ly++) {
        uint32_t y0 = ly * s, y1 = y0 + s < h ? y0 + s : h;
        for (uint32_t lx = 0; lx < wl; lx++) {
            uint32_t x0 = lx * s, x1 = x0 + s < w ? x0 + s : w;
            double acc[3] = {0, 0, 0};
            for (uint32_t y = y0; y < y1; y++)
                for (uint32_t x = x0; x < x1; x++)
                    for (int c = 0; c < nc; c++)
                        acc[c] += src[((size_t)y * w + x) * nc + c];
            double n = (double)(y1 - y0) * (x1 - x0);
            for (int c = 0; c < nc; c++)
                dst[((size_t)ly * wl + lx) * nc + c] = (float)(acc[c] / n);
        }
    }
}

/* ---- guided filter ---- */

typedef struct {
    const float *I; /* guide, ci channels */
    const float *p;
    uint32_t w;
    int ci;
} gf_rows;

/* Colour: I0 I1 I2 p, I0p I1p I2p, I0I0 I0I1 I0I2 I1I1 I1I2 I2I2 (13).
 * Grey: I p Ip II (4). */
static const float *gf_stats_row(void *ctx, uint32_t y, float *o) {
    const gf_rows *g = ctx;
    const float *I = g->I + (size_t)y * g->w * g->ci, *p = g->p + (size_t)y * g->w;
    if (g->ci == 3) {
        for (uint32_t x = 0; x < g->w; x++) {
            float r = I[3 * x], gg = I[3 * x + 1], b = I[3 * x + 2], v = p[x];
            float *d = o + 13 * (size_t)x;
            d[0] = r;
            d[1] = gg;
            d[2] = b;
            d[3] = v;
            d[4] = r * v;
            d[5] = gg * v;
            d[6] = b * v;
            d[7] = r * r;
            d[8] = r * gg;
            d[9] = r * b;
            d[10] = gg * gg;
            d[11] = gg * b;
            d[12] = b * b;
        }
    } else {
        for (uint32_t x = 0; x < g->w; x++) {
            float i = I[x], v = p[x];
            float *d = o + 4 * (size_t)x;
            d[0] = i;
            d[1] = v;
            d[2] = i * v;
            d[3] = i * i;
        }
    }
    return o;
}

/* Per pixel, from the window means: a = (Sigma + eps U)^-1 cov(I, p),
 * b = mean p - a . mean I, written compacted in place (colour: 13 -> 4
 * channels a0 a1 a2 b; grey: 4 -> 2 channels a b). Writing 4 floats at 4i
 * never reaches the 13 floats still to be read at 13j, j >= i. */
static void gf_coeffs(float *m, size_t n, int ci, double eps) {
    for (size_t i = 0; i < n; i++) {
        if (ci == 3) {
            const float *s = m + 13 * i;
            double mi[3] = {s[0], s[1], s[2]}, mp = s[3];
            double c0 = s[4] - mi[0] * mp, c1 = s[5] - mi[1] * mp, c2 = s[6] - mi[2] * mp;
            double a00 = s[7] - mi[0] * mi[0] + eps, a01 = s[8] - mi[0] * mi[1];
            double a02 = s[9] - mi[0] * mi[2], a11 = s[10] - mi[1] * mi[1] + eps;
            double a12 = s[11] - mi[1] * mi[2], a22 = s[12] - mi[2] * mi[2] + eps;
            /* symmetric 3x3 inverse by cofactors */
            double k00 = a11 * a22 - a12 * a12, k01 = a02 * a12 - a01 * a22;
            double k02 = a01 * a12 - a02 * a11, k11 = a00 * a22 - a02 * a02;
            double k12 = a01 * a02 - a00 * a12, k22 = a00 * a11 - a01 * a01;
            double det = a00 * k00 + a01 * k01 + a02 * k02;
            double r0 = 0, r1 = 0, r2 = 0;
            if (det > 1e-30) {
                r0 = (k00 * c0 + k01 * c1 + k02 * c2) / det;
                r1 = (k01 * c0 + k11 * c1 + k12 * c2) / det;
                r2 = (k02 * c0 + k12 * c1 + k22 * c2) / det;
            }
            double b = mp - r0 * mi[0] - r1 * mi[1] - r2 * mi[2];
            float *d = m + 4 * i;
            d[0] = (float)r0;
            d[1] = (float)r1;
            d[2] = (float)r2;
            d[3] = (float)b;
        } else {
            const float *s = m + 4 * i;
            double mi = s[0], mp = s[1];
            double a = (s[2] - mi * mp) / (s[3] - mi * mi + eps);
            float *d = m + 2 * i;
            d[0] = (float)a;
            d[1] = (float)(mp - a * mi);
        }
    }
}

int hsq_cmp_guided_filter(const float *guide, const float *p, uint32_t w, uint32_t h,
                          const hsq_cmp_gf *prm, float *q) {
    if (!guide || !p || !q || !prm || !dims_ok(w, h) || prm->radius < 1 || !(prm->eps > 0) ||
        prm->subsample < 1)
        return HSQ_EINVAL;
    const uint32_t s = (uint32_t)prm->subsample;
    const int ci = prm->color ? 3 : 1, nst = ci == 3 ? 13 : 4, nco = ci + 1;
    const uint32_t wl = (w + s - 1) / s, hl = (h + s - 1) / s;
    const size_t nl = (size_t)wl * hl;
    int rl = (int)lround((double)prm->radius / s);
    if (rl < 1)
        rl = 1;

    float *Il = NULL, *pl = NULL, *st = NULL, *mco = NULL;
    int r = HSQ_ENOMEM;
    /* The low-resolution guide (or luma) and input. At s = 1 the colour
     * guide and p are used where they are. */
    const float *Iuse = guide, *puse = p;
    if (s > 1 || ci == 1) {
        Il = hsq_trymalloc(nl * 3 * sizeof(float));
        if (!Il)
            goto done;
        if (s > 1)
            downsample_box(guide, w, h, 3, s, Il);
        else
            memcpy(Il, guide, nl * 3 * sizeof(float));
        if (ci == 1)
            for (size_t i = 0; i < nl; i++)
                Il[i] = luma601(Il + 3 * i); /* i <= 3i: in place is safe */
        Iuse = Il;
    }
    if (s > 1) {
        pl = hsq_trymalloc(nl * sizeof(float));
        if (!pl)
            goto done;
        downsample_box(p, w, h, 1, s, pl);
        puse = pl;
    }
    st = hsq_trymalloc(nl * (size_t)nst * sizeof(float));
    mco = hsq_trymalloc(nl * (size_t)nco * sizeof(float));
    if (!st || !mco)
        goto done;
    gf_rows g = {Iuse, puse, wl, ci};
    if ((r = box_mean(gf_stats_row, &g, wl, hl, nst, rl, st)) != 0)
        goto done;
    gf_coeffs(st, nl, ci, prm->eps);
    if ((r = box_mean_buf(st, wl, hl, nco, rl, mco)) != 0)
        goto done;
    free(st);
    st = NULL;

    /* q = mean_a . I + mean_b at full size, the coefficients sampled
     * bilinearly from the low-resolution grid (exactly, at s = 1). */
    lerp_axis ax, ay;
    if ((r = lerp_axis_build(&ax, w, wl, (double)s)) != 0)
        goto done;
    if ((r = lerp_axis_build(&ay, h, hl, (double)s)) != 0) {
        lerp_axis_free(&ax);
        goto done;
    }
    for (uint32_t y = 0; y < h; y++) {
        const float *r0 = mco + (size_t)ay.i0[y] * wl * nco,
                    *r1 = mco + (size_t)ay.i1[y] * wl * nco;
        float fy = ay.f[y];
        for (uint32_t x = 0; x < w; x++) {
            size_t a = (size_t)ax.i0[x] * nco, b = (size_t)ax.i1[x] * nco;
            float fx = ax.f[x], c[4];
            for (int k = 0; k < nco; k++)
                c[k] = lerpf(lerpf(r0[a + k], r0[b + k], fx), lerpf(r1[a + k], r1[b + k], fx), fy);
            const float *I = guide + ((size_t)y * w + x) * 3;
            size_t i = (size_t)y * w + x;
            if (ci == 3)
                q[i] = c[0] * I[0] + c[1] * I[1] + c[2] * I[2] + c[3];
            else
                q[i] = c[0] * luma601(I) + c[1];
        }
    }
    lerp_axis_free(&ax);
    lerp_axis_free(&ay);
    r = 0;
done:
    free(Il);
    free(pl);
    free(st);
    free(mco);
    return r;
}

/* ---- matte refinement ---- */

void hsq_cmp_matte_default(hsq_cmp_matte *m) {
    m->radius = 0;
    m->eps = 1e-4f;
    m->contrast = 4.0f;
    m->subsample = 0;
    m->lo = 0.02f;
    m->hi = 0.98f;
}

int hsq_cmp_matte_refine(const float *rgb, uint32_t w, uint32_t h, const float *coarse, uint32_t cw,
                         uint32_t ch, const hsq_cmp_matte *prm, float *alpha) {
    hsq_cmp_matte m;
    hsq_cmp_matte_default(&m);
    if (prm)
        m = *prm;
    if (!rgb || !coarse || !alpha || !dims_ok(w, h) || !dims_ok(cw, ch) || m.radius < 0 ||
        !(m.eps > 0) || !(m.contrast >= 1 && m.contrast <= 1000) || m.subsample < 0 ||
        !(m.lo >= 0 && m.hi <= 1 && m.lo < m.hi))
        return HSQ_EINVAL;
    int r = m.radius;
    if (r == 0) {
        /* Two coarse pixels: about the width of the model's soft edge. */
        double sc = fmax((double)w / cw, (double)h / ch);
        r = (int)lround(2 * sc);
        r = r < 2 ? 2 : r > 64 ? 64 : r;
    }
    int s = m.subsample;
    if (s == 0) {
        double mp = (double)w * h / 1e6;
        s = mp <= 1 ? 1 : (int)ceil(sqrt(mp));
        while (s > 1 && r / s < 2)
            s--;
    }
    int rc;
    if (cw == w && ch == h)
        memcpy(alpha, coarse, sizeof(float) * w * h);
    else if ((rc = hsq_cmp_mask_upsample(coarse, cw, ch, alpha, w, h)) != 0)
        return rc;
    if (m.contrast != 1)
        for (size_t i = 0, n = (size_t)w * h; i < n; i++)
            alpha[i] = clamp01((alpha[i] - 0.5f) * m.contrast + 0.5f);
    hsq_cmp_gf g = {r, m.eps, s, 1};
    if ((rc = hsq_cmp_guided_filter(rgb, alpha, w, h, &g, alpha)) != 0)
        return rc;
    float span = m.hi - m.lo;
    for (size_t i = 0, n = (size_t)w * h; i < n; i++)
        alpha[i] = clamp01((alpha[i] - m.lo) / span);
    return 0;
}

/* ---- foreground colour estimation (blur fusion) ---- */

typedef struct {
    const float *F, *B, *a;
    uint32_t w;
} bf_rows;

/* F*a (3), a, B*(1-a) (3), 1-a: 8 channels. */
static const float *bf_row(void *ctx, uint32_t y, float *o) {
    const bf_rows *b = ctx;
    size_t off = (size_t)y * b->w;
    for (uint32_t x = 0; x < b->w; x++) {
        float a = b->a[off + x], na = 1.0f - a;
        const float *F = b->F + (off + x) * 3, *B = b->B + (off + x) * 3;
        float *d = o + 8 * (size_t)x;
        d[0] = F[0] * a;
        d[1] = F[1] * a;
        d[2] = F[2] * a;
        d[3] = a;
        d[4] = B[0] * na;
        d[5] = B[1] * na;
        d[6] = B[2] * na;
        d[7] = na;
    }
    return o;
}

/* The window means of one blur-fusion step: Fh = blur(F a) / blur(a),
 * Bh = blur(B (1-a)) / blur(1-a) (the photo's own pixel where a window has
 * no weight on that side). */
static int bf_means(const float *I, const float *a, const float *Fin, const float *Bin, uint32_t w,
                    uint32_t h, int r, float *m8, float *Fh, float *Bh) {
    bf_rows br = {Fin, Bin, a, w};
    int rc = box_mean(bf_row, &br, w, h, 8, r, m8);
    if (rc)
        return rc;
    for (size_t i = 0, n = (size_t)w * h; i < n; i++) {
        const float *m = m8 + 8 * i, *px = I + 3 * i;
        for (int c = 0; c < 3; c++) {
            Fh[3 * i + c] = m[3] > 1e-6f ? m[c] / m[3] : px[c];
            Bh[3 * i + c] = m[7] > 1e-6f ? m[4 + c] / m[7] : px[c];
        }
    }
    return 0;
}

/* The compositing-residual correction of one pixel: with res = I - a Fh -
 * (1-a) Bh, F = Fh + a res and B = Bh + (1-a) res, clamped. */
static void bf_correct(const float *px, float av, const float *fh, const float *bh, float *F,
                       float *B) {
    float na = 1.0f - av;
    for (int c = 0; c < 3; c++) {
        float res = px[c] - av * fh[c] - na * bh[c];
        F[c] = clamp01(fh[c] + av * res);
        if (B)
            B[c] = clamp01(bh[c] + na * res);
    }
}

/* Blur fusion on one grid (the image itself, or a reduced copy): pass 1 at
 * radius r1 gives corrected F1, B1; pass 2 at r2 over them gives the means
 * Fh, Bh, which the caller corrects against the full-size pixels. */
static int bf_grid(const float *I, const float *a, uint32_t w, uint32_t h, int r1, int r2,
                   float *Fh, float *Bh) {
    const size_t n = (size_t)w * h;
    float *m8 = hsq_trymalloc(n * 8 * sizeof(float));
    float *F1 = hsq_trymalloc(n * 3 * sizeof(float));
    float *B1 = hsq_trymalloc(n * 3 * sizeof(float));
    int rc = HSQ_ENOMEM;
    if (!m8 || !F1 || !B1)
        goto done;
    /* pass 1 means into Fh, Bh (scratch), corrected into F1, B1 */
    if ((rc = bf_means(I, a, I, I, w, h, r1, m8, Fh, Bh)) != 0)
        goto done;
    for (size_t i = 0; i < n; i++)
        bf_correct(I + 3 * i, a[i], Fh + 3 * i, Bh + 3 * i, F1 + 3 * i, B1 + 3 * i);
    rc = bf_means(I, a, F1, B1, w, h, r2, m8, Fh, Bh);
done:
    free(m8);
    free(F1);
    free(B1);
    return rc;
}

int hsq_cmp_fg_estimate(const float *rgb, const float *alpha, uint32_t w, uint32_t h, float *fg) {
    if (!rgb || !alpha || !fg || fg == rgb || !dims_ok(w, h))
        return HSQ_EINVAL;
    const size_t n = (size_t)w * h;
    memcpy(fg, rgb, n * 3 * sizeof(float));
    /* Only the soft band (0 < alpha < 1) changes: its bounding box, plus the
     * reach of the filters, is all that is computed. */
    uint32_t bx0 = w, bx1 = 0, by0 = h, by1 = 0;
    for (uint32_t y = 0; y < h; y++) {
        const float *ar = alpha + (size_t)y * w;
        for (uint32_t x = 0; x < w; x++)
            if (ar[x] > 0.0f && ar[x] < 1.0f) {
                bx0 = x < bx0 ? x : bx0;
                bx1 = x > bx1 ? x : bx1;
                by0 = y < by0 ? y : by0;
                by1 = y > by1 ? y : by1;
            }
    }
    if (bx0 > bx1)
        return 0; /* a hard matte: nothing to estimate */
    /* Radii of the paper (90 then 6 px at about 1 MP), scaled to the image. */
    uint32_t side = w > h ? w : h;
    int r1 = (int)lround(side / 12.0), r2 = (int)lround(side / 170.0);
    r1 = r1 < 3 ? 3 : r1;
    r2 = r2 < 1 ? 1 : r2;
    /* Both passes are window means: smooth at the scale of r2 (8 px at
     * 1280), so they are computed on an s-times smaller grid (keeping r2 / s
     * >= 4) and sampled bilinearly at the full-size band pixels, where the
     * residual correction against the full-size photo restores the detail
     * (as the fast guided filter does with its coefficients). */
    uint32_t s = r2 / 4 > 1 ? (uint32_t)(r2 / 4) : 1;
    const uint32_t wl = (w + s - 1) / s, hl = (h + s - 1) / s;
    const size_t nl = (size_t)wl * hl;
    int r1l = (int)lround((double)r1 / s), r2l = (int)lround((double)r2 / s);
    r1l = r1l < 1 ? 1 : r1l;
    r2l = r2l < 1 ? 1 : r2l;
    float *Il = NULL, *al = NULL;
    float *Fh = hsq_trymalloc(nl * 3 * sizeof(float));
    float *Bh = hsq_trymalloc(nl * 3 * sizeof(float));
    lerp_axis ax = {0}, ay = {0};
    int rc = HSQ_ENOMEM;
    if (!Fh || !Bh)
        goto done;
    const float *Iuse = rgb, *ause = alpha;
    if (s > 1) {
        Il = hsq_trymalloc(nl * 3 * sizeof(float));
        al = hsq_trymalloc(nl * sizeof(float));
        if (!Il || !al)
            goto done;
        downsample_box(rgb, w, h, 3, s, Il);
        downsample_box(alpha, w, h, 1, s, al);
        Iuse = Il;
        ause = al;
    }
    if ((rc = bf_grid(Iuse, ause, wl, hl, r1l, r2l, Fh, Bh)) != 0)
        goto done;
    if ((rc = lerp_axis_build(&ax, w, wl, (double)s)) != 0 ||
        (rc = lerp_axis_build(&ay, h, hl, (double)s)) != 0)
        goto done;
    for (uint32_t y = by0; y <= by1; y++) {
        const size_t r0 = (size_t)ay.i0[y] * wl * 3, r1o = (size_t)ay.i1[y] * wl * 3;
        const float fy = ay.f[y];
        for (uint32_t x = bx0; x <= bx1; x++) {
            size_t i = (size_t)y * w + x;
            float av = alpha[i];
            if (!(av > 0.0f && av < 1.0f))
                continue;
            float fh[3], bh[3];
            if (s == 1) {
                memcpy(fh, Fh + 3 * i, sizeof fh);
                memcpy(bh, Bh + 3 * i, sizeof bh);
            } else {
                size_t a0 = (size_t)ax.i0[x] * 3, a1 = (size_t)ax.i1[x] * 3;
                float fx = ax.f[x];
                for (int c = 0; c < 3; c++) {
                    fh[c] = lerpf(lerpf(Fh[r0 + a0 + c], Fh[r0 + a1 + c], fx),
                                  lerpf(Fh[r1o + a0 + c], Fh[r1o + a1 + c], fx), fy);
                    bh[c] = lerpf(lerpf(Bh[r0 + a0 + c], Bh[r0 + a1 + c], fx),
                                  lerpf(Bh[r1o + a0 + c], Bh[r1o + a1 + c], fx), fy);
                }
            }
            bf_correct(rgb + 3 * i, av, fh, bh, fg + 3 * i, NULL);
        }
    }
    rc = 0;
done:
    lerp_axis_free(&ax);
    lerp_axis_free(&ay);
    free(Il);
    free(al);
    free(Fh);
    free(Bh);
    return rc;
}

/* ---- backgrounds ---- */

int hsq_cmp_bg_solid(float *out, uint32_t w, uint32_t h, const float rgb[3]) {
    if (!out || !dims_ok(w, h) || !rgb_ok(rgb))
        return HSQ_EINVAL;
    for (size_t i = 0, n = (size_t)w * h; i < n; i++)
        memcpy(out + 3 * i, rgb, 3 * sizeof(float));
    return 0;
}

int hsq_cmp_bg_gradient(float *out, uint32_t w, uint32_t h, const float top[3],
                        const float bottom[3]) {
    if (!out || !dims_ok(w, h) || !rgb_ok(top) || !rgb_ok(bottom))
        return HSQ_EINVAL;
    for (uint32_t y = 0; y < h; y++) {
        float t = h > 1 ? (float)y / (float)(h - 1) : 0.0f, c[3];
        for (int k = 0; k < 3; k++)
            c[k] = y + 1 == h && h > 1 ? bottom[k] : lerpf(top[k], bottom[k], t);
        float *o = out + (size_t)y * w * 3;
        for (uint32_t x = 0; x < w; x++)
            memcpy(o + 3 * (size_t)x, c, sizeof c);
    }
    return 0;
}

void hsq_cmp_vignette_default(hsq_cmp_vignette *v, const float rgb[3]) {
    memcpy(v->rgb, rgb, sizeof v->rgb);
    v->lift = 0.12f;
    v->dark = 0.35f;
    v->cx = 0.5f;
    v->cy = 0.42f;
}

int hsq_cmp_bg_vignette(float *out, uint32_t w, uint32_t h, const hsq_cmp_vignette *v) {
    if (!out || !v || !dims_ok(w, h) || !rgb_ok(v->rgb) || !(v->lift >= 0 && v->lift <= 4) ||
        !unit(v->dark) || !unit(v->cx) || !unit(v->cy))
        return HSQ_EINVAL;
    /* Coordinates in [0, 1] from the first to the last pixel centre: an
     * isotropic distance there is an ellipse with the image's aspect. */
    double mx = fmax(v->cx, 1 - v->cx), my = fmax(v->cy, 1 - v->cy);
    double dmax = sqrt(mx * mx + my * my);
    /* Float per pixel (the backdrop is smooth; float's 1e-7 is far below a
     * level), with the squared horizontal distances computed once. */
    float *du2 = hsq_trymalloc((size_t)w * sizeof(float));
    if (!du2)
        return HSQ_ENOMEM;
    for (uint32_t x = 0; x < w; x++) {
        double du = ((w > 1 ? (double)x / (w - 1) : 0.5) - v->cx) / dmax;
        du2[x] = (float)(du * du);
    }
    const float lift = 1 + v->lift, span = v->dark + v->lift;
    for (uint32_t y = 0; y < h; y++) {
        double dvd = ((h > 1 ? (double)y / (h - 1) : 0.5) - v->cy) / dmax;
        const float dv2 = (float)(dvd * dvd);
        float *o = out + (size_t)y * w * 3;
        for (uint32_t x = 0; x < w; x++) {
            float d = sqrtf(du2[x] + dv2);
            d = d < 1 ? d : 1;
            float f = lift - span * (d * d * (3 - 2 * d));
            for (int k = 0; k < 3; k++)
                o[3 * (size_t)x + k] = clamp01(v->rgb[k] * f);
        }
    }
    free(du2);
    return 0;
}

int hsq_cmp_blur(float *buf, uint32_t w, uint32_t h, int channels, float sigma) {
    if (!buf || !dims_ok(w, h) || channels < 1 || channels > 16 || !(sigma >= 0 || sigma < 0))
        return HSQ_EINVAL;
    if (!(sigma > 0.5f))
        return 0;
    /* Three box passes whose variances sum to sigma^2 (Kovesi): widths wl
     * (odd) for the first m passes, wl + 2 for the rest. */
    double s2 = (double)sigma * sigma;
    int wl = (int)floor(sqrt(12 * s2 / 3 + 1));
    if (wl % 2 == 0)
        wl--;
    int m = (int)lround((12 * s2 - 3.0 * wl * wl - 12.0 * wl - 9) / (-4.0 * wl - 4));
    const size_t n = (size_t)w * h * (size_t)channels;
    float *tmp = hsq_trymalloc(n * sizeof(float));
    if (!tmp)
        return HSQ_ENOMEM;
    float *src = buf, *dst = tmp;
    for (int pass = 0; pass < 3; pass++) {
        int r = ((pass < m ? wl : wl + 2) - 1) / 2;
        if (r < 1)
            continue;
        int rc = box_mean_buf(src, w, h, channels, r, dst);
        if (rc) {
            free(tmp);
            return rc;
        }
        float *t = src;
        src = dst;
        dst = t;
    }
    if (src != buf)
        memcpy(buf, src, n * sizeof(float));
    free(tmp);
    return 0;
}

int hsq_cmp_bg_image(const hsq_img *ref, uint32_t w, uint32_t h, float blur_sigma, float *out) {
    if (!ref || !ref->rgb || ref->w == 0 || ref->h == 0 || !out || !dims_ok(w, h) ||
        !(blur_sigma >= 0))
        return HSQ_EINVAL;
    hsq_img fit = {0};
    int r = hsq_img_fit(ref, w, h, &fit);
    if (r)
        return r;
    hsq_cmp_from_u8(fit.rgb, w, h, out);
    hsq_img_free(&fit);
    return hsq_cmp_blur(out, w, h, 3, blur_sigma);
}

/* ---- compositing ---- */

void hsq_cmp_comp_default(hsq_cmp_comp *c) {
    c->wrap = 0.35f;
    c->wrap_sigma = 0;
    c->harmonize = 0.12f;
}

/* One output row of the composite, flat over its 3w values (value j of
 * pixel j / 3: its alpha a3[j], wrap light lt[j], 0 where there is none, and
 * its channel's shift sh3[j]), into o: screen with the light, the shift,
 * the blend. Flat, so that it vectorizes; the same operations per value as
 * the per-pixel loop it replaced. */
ALWAYS_INLINE void comp_row_body(const float *restrict fg, const float *restrict bg,
                                 const float *restrict a3, const float *restrict lt,
                                 const float *restrict sh3, float wrap, int do_shift,
                                 float *restrict o, size_t n) {
    for (size_t j = 0; j < n; j++) {
        float a = a3[j], f = fg[j];
        float l = wrap * a * lt[j];
        float cl = !(l > 0.0f) ? 0.0f : l < 1.0f ? l : 1.0f; /* clamp01 */
        float sc = 1.0f - (1.0f - f) * (1.0f - cl);          /* screen */
        f = l > 0.0f ? sc : f;
        float fs = f + sh3[j];
        fs = !(fs > 0.0f) ? 0.0f : fs < 1.0f ? fs : 1.0f;
        f = do_shift ? fs : f;
        o[j] = a * f + (1.0f - a) * bg[j];
    }
}
DISPATCH(comp_row,
         (const float *restrict fg, const float *restrict bg, const float *restrict a3,
          const float *restrict lt, const float *restrict sh3, float wrap, int do_shift,
          float *restrict o, size_t n),
         (fg, bg, a3, lt, sh3, wrap, do_shift, o, n))

/* Rec. 709 weights: they sum to 1, so delta - Y(delta) has Y = 0. */
static float luma709(const double *p) {
    return (float)(0.2126 * p[0] + 0.7152 * p[1] + 0.0722 * p[2]);
}

int hsq_cmp_composite(const float *fg, const float *bg, const float *alpha, uint32_t w, uint32_t h,
                      const hsq_cmp_comp *prm, float *out) {
    hsq_cmp_comp c;
    hsq_cmp_comp_default(&c);
    if (prm)
        c = *prm;
    if (!fg || !bg || !alpha || !out || !dims_ok(w, h) || !unit(c.wrap) || !(c.wrap_sigma >= 0) ||
        !unit(c.harmonize))
        return HSQ_EINVAL;
    const size_t n = (size_t)w * h;

    /* Harmonisation: the chroma part of mean(bg, visible) - mean(fg, alpha). */
    float shift[3] = {0, 0, 0};
    int do_shift = 0;
    if (c.harmonize > 0) {
        double sf[3] = {0, 0, 0}, sb[3] = {0, 0, 0}, sbu[3] = {0, 0, 0}, wf = 0, wb = 0;
        for (size_t i = 0; i < n; i++) {
            double a = alpha[i];
            for (int k = 0; k < 3; k++) {
                sf[k] += a * fg[3 * i + k];
                sb[k] += (1 - a) * bg[3 * i + k];
                sbu[k] += bg[3 * i + k];
            }
            wf += a;
            wb += 1 - a;
        }
        if (wf >= 1) {
            double d[3];
            for (int k = 0; k < 3; k++)
                d[k] = (wb >= 1 ? sb[k] / wb : sbu[k] / (double)n) - sf[k] / wf;
            float y = luma709(d);
            for (int k = 0; k < 3; k++)
                shift[k] = c.harmonize * ((float)d[k] - y);
            do_shift = shift[0] != 0 || shift[1] != 0 || shift[2] != 0;
        }
    }

    /* Light wrap: blur(bg * (1 - alpha)), only where it is needed. */
    float *light = NULL;
    uint32_t ls = 1, lw = w, lh = h;
    lerp_axis ax = {0}, ay = {0};
    if (c.wrap > 0) {
        float sigma = c.wrap_sigma;
        if (sigma == 0) {
            sigma = 0.006f * (float)(w > h ? w : h);
            if (sigma < 2)
                sigma = 2;
        }
        /* A wide blur is smooth at the scale of sigma: computed on a grid
         * ls times smaller (block means of bg (1 - alpha), sigma / ls >= 2.5)
         * and sampled bilinearly where alpha > 0, the only place it is used. */
        ls = (uint32_t)(sigma / 2.5f);
        ls = ls < 1 ? 1 : ls > 8 ? 8 : ls;
        lw = (w + ls - 1) / ls;
        lh = (h + ls - 1) / ls;
        light = hsq_trymalloc((size_t)lw * lh * 3 * sizeof(float));
        if (!light)
            return HSQ_ENOMEM;
        for (uint32_t ly = 0; ly < lh; ly++)
            for (uint32_t lx = 0; lx < lw; lx++) {
                uint32_t y0 = ly * ls, y1 = y0 + ls < h ? y0 + ls : h;
                uint32_t x0 = lx * ls, x1 = x0 + ls < w ? x0 + ls : w;
                float acc[3] = {0, 0, 0};
                for (uint32_t y = y0; y < y1; y++)
                    for (uint32_t x = x0; x < x1; x++) {
                        size_t i = (size_t)y * w + x;
                        float na = 1.0f - alpha[i];
                        for (int k = 0; k < 3; k++)
                            acc[k] += bg[3 * i + k] * na;
                    }
                float inv = 1.0f / (float)((y1 - y0) * (x1 - x0));
                for (int k = 0; k < 3; k++)
                    light[((size_t)ly * lw + lx) * 3 + k] = acc[k] * inv;
            }
        int rc = hsq_cmp_blur(light, lw, lh, 3, sigma / (float)ls);
        if (!rc && ls > 1 &&
            ((rc = lerp_axis_build(&ax, w, lw, (double)ls)) != 0 ||
             (rc = lerp_axis_build(&ay, h, lh, (double)ls)) != 0))
            lerp_axis_free(&ax);
        if (rc) {
            free(light);
            return rc;
        }
    }

    /* Per row: each value's alpha and light (the two light grid rows the
     * output row falls between are looked up once), then the flat blend
     * (comp_row) into a row buffer, copied to out (which may be fg or bg). */
    const size_t rn = (size_t)w * 3;
    float *rowbuf = hsq_trymalloc(4 * rn * sizeof(float));
    if (!rowbuf) {
        free(light);
        lerp_axis_free(&ax);
        lerp_axis_free(&ay);
        return HSQ_ENOMEM;
    }
    float *a3 = rowbuf, *lt = a3 + rn, *sh3 = lt + rn, *o = sh3 + rn;
    for (uint32_t x = 0; x < w; x++)
        for (int k = 0; k < 3; k++)
            sh3[3 * (size_t)x + k] = shift[k];
    const float wrap = light ? c.wrap : 0.0f;
    for (uint32_t y = 0; y < h; y++) {
        const float *r0 = NULL, *r1 = NULL;
        float fy = 0;
        if (light && ls > 1) {
            r0 = light + (size_t)ay.i0[y] * lw * 3;
            r1 = light + (size_t)ay.i1[y] * lw * 3;
            fy = ay.f[y];
        }
        const float *ar = alpha + (size_t)y * w;
        for (uint32_t x = 0; x < w; x++) {
            float a = ar[x], *l = lt + 3 * (size_t)x;
            a3[3 * (size_t)x] = a3[3 * (size_t)x + 1] = a3[3 * (size_t)x + 2] = a;
            l[0] = l[1] = l[2] = 0.0f;
            if (light && a > 0) {
                if (ls == 1) {
                    memcpy(l, light + 3 * ((size_t)y * w + x), 3 * sizeof(float));
                } else {
                    size_t a0 = (size_t)ax.i0[x] * 3, a1 = (size_t)ax.i1[x] * 3;
                    float fx = ax.f[x];
                    for (int k = 0; k < 3; k++)
                        l[k] = lerpf(lerpf(r0[a0 + k], r0[a1 + k], fx),
                                     lerpf(r1[a0 + k], r1[a1 + k], fx), fy);
                }
            }
        }
        size_t off = (size_t)y * rn;
        comp_row(fg + off, bg + off, a3, lt, sh3, wrap, do_shift, o, rn);
        memcpy(out + off, o, rn * sizeof(float));
    }
    free(rowbuf);
    free(light);
    lerp_axis_free(&ax);
    lerp_axis_free(&ay);
    return 0;
}

/* ---- CIE Lab ---- */

/* sRGB D65 -> XYZ (IEC 61966-2-1) and back; the white point is the first
 * matrix's row sums, so sRGB white is exactly L = 100, a = b = 0. */
static const double M_RGB2XYZ[3][3] = {{0.4124564, 0.3575761, 0.1804375},
                                       {0.2126729, 0.7151522, 0.0721750},
                                       {0.0193339, 0.1191920, 0.9503041}};
static const double M_XYZ2RGB[3][3] = {{3.2404542, -1.5371385, -0.4985314},
                                       {-0.9692660, 1.8760108, 0.0415560},
                                       {0.0556434, -0.2040259, 1.0572252}};
#define WHITE_X (0.4124564 + 0.3575761 + 0.1804375)
#define WHITE_Y (0.2126729 + 0.7151522 + 0.0721750)
#define WHITE_Z (0.0193339 + 0.1191920 + 0.9503041)
#define LAB_D (6.0 / 29.0)

static double srgb_to_lin(double c) {
    return c <= 0.04045 ? c / 12.92 : pow((c + 0.055) / 1.055, 2.4);
}

static double lin_to_srgb(double c) {
    return c <= 0.0031308 ? 12.92 * c : 1.055 * pow(c, 1 / 2.4) - 0.055;
}

/* The sRGB decoding curve tabulated at 4096 steps and interpolated: the
 * error (about 2e-8 on the curved part) is below float precision of the
 * results, and the hot loops (tone, clothing) avoid a pow() per channel.
 * Built per call (4097 pow()s), so there is no shared state. */
#define LIN_LUT 4096

typedef struct {
    float v[LIN_LUT + 2];
    float e[LIN_LUT + 2]; /* the encoding curve, linear -> sRGB, same steps */
} lin_lut;

static void lin_lut_init(lin_lut *t) {
    for (int i = 0; i <= LIN_LUT + 1; i++) {
        t->v[i] = (float)srgb_to_lin((double)i / LIN_LUT);
        t->e[i] = (float)lin_to_srgb((double)i / LIN_LUT);
    }
}

/* lin_to_srgb(y) for y in [0, 1] from the table: exact on the linear toe,
 * within about 2e-5 just above the knee (the curve's bend is largest there)
 * and 1e-7 elsewhere, far below an 8-bit output step; tone runs it three
 * times per subject pixel, where pow() was a third of its time. */
static float srgb_of(const lin_lut *t, double y) {
    float x = (float)y * LIN_LUT;
    int i = (int)x;
    i = i < 0 ? 0 : i > LIN_LUT ? LIN_LUT : i;
    return t->e[i] + (x - (float)i) * (t->e[i + 1] - t->e[i]);
}

static double lin_of(const lin_lut *t, float c) {
    if (!t || !(c > 0) || c >= 1)
        return srgb_to_lin(c > 0 || c <= 0 ? c : 0); /* NaN -> 0 */
    float x = c * LIN_LUT;
    int i = (int)x;
    return t->v[i] + (x - (float)i) * (t->v[i + 1] - t->v[i]);
}

static double lab_f(double t) {
    return t > LAB_D * LAB_D * LAB_D ? cbrt(t) : t / (3 * LAB_D * LAB_D) + 4.0 / 29.0;
}

static double lab_finv(double f) {
    return f > LAB_D ? f * f * f : 3 * LAB_D * LAB_D * (f - 4.0 / 29.0);
}

/* t NULL = the exact curve. */
static void px_rgb_to_lab_t(const float *rgb, float *lab, const lin_lut *t) {
    double l[3], xyz[3];
    for (int k = 0; k < 3; k++)
        l[k] = lin_of(t, rgb[k]);
    for (int r = 0; r < 3; r++)
        xyz[r] = M_RGB2XYZ[r][0] * l[0] + M_RGB2XYZ[r][1] * l[1] + M_RGB2XYZ[r][2] * l[2];
    double fx = lab_f(xyz[0] / WHITE_X), fy = lab_f(xyz[1] / WHITE_Y), fz = lab_f(xyz[2] / WHITE_Z);
    lab[0] = (float)(116 * fy - 16);
    lab[1] = (float)(500 * (fx - fy));
    lab[2] = (float)(200 * (fy - fz));
}

static void px_rgb_to_lab(const float *rgb, float *lab) {
    px_rgb_to_lab_t(rgb, lab, NULL);
}

static void px_lab_to_rgb(const float *lab, float *rgb) {
    double fy = (lab[0] + 16) / 116.0, fx = fy + lab[1] / 500.0, fz = fy - lab[2] / 200.0;
    double xyz[3] = {lab_finv(fx) * WHITE_X, lab_finv(fy) * WHITE_Y, lab_finv(fz) * WHITE_Z};
    for (int r = 0; r < 3; r++) {
        double v = M_XYZ2RGB[r][0] * xyz[0] + M_XYZ2RGB[r][1] * xyz[1] + M_XYZ2RGB[r][2] * xyz[2];
        v = v < 0 ? 0 : v > 1 ? 1 : v;
        rgb[r] = (float)lin_to_srgb(v);
    }
}

void hsq_cmp_rgb_to_lab(const float *rgb, size_t n, float *lab) {
    for (size_t i = 0; i < n; i++) {
        float t[3];
        px_rgb_to_lab(rgb + 3 * i, t);
        memcpy(lab + 3 * i, t, sizeof t);
    }
}

void hsq_cmp_lab_to_rgb(const float *lab, size_t n, float *rgb) {
    for (size_t i = 0; i < n; i++) {
        float t[3];
        px_lab_to_rgb(lab + 3 * i, t);
        memcpy(rgb + 3 * i, t, sizeof t);
    }
}

/* Weighted mean and SD accumulators. */
typedef struct {
    double w, s[3], s2[3];
} lab_acc;

static void acc_add(lab_acc *a, const float *lab, double wt) {
    a->w += wt;
    for (int k = 0; k < 3; k++) {
        a->s[k] += wt * lab[k];
        a->s2[k] += wt * lab[k] * lab[k];
    }
}

static void acc_stats(const lab_acc *a, hsq_cmp_lab_stats *out) {
    out->weight = a->w;
    for (int k = 0; k < 3; k++) {
        double m = a->s[k] / a->w, v = a->s2[k] / a->w - m * m;
        out->mean[k] = (float)m;
        out->sd[k] = (float)sqrt(v > 0 ? v : 0);
    }
}

int hsq_cmp_lab_stats_of(const float *rgb, uint32_t w, uint32_t h, const float *mask,
                         hsq_cmp_lab_stats *out) {
    if (!rgb || !out || !dims_ok(w, h))
        return HSQ_EINVAL;
    lab_acc a = {0};
    for (size_t i = 0, n = (size_t)w * h; i < n; i++) {
        double wt = mask ? mask[i] : 1.0;
        if (!(wt > 0))
            continue;
        float lab[3];
        px_rgb_to_lab(rgb + 3 * i, lab);
        acc_add(&a, lab, wt);
    }
    if (!(a.w > 0))
        return HSQ_EINVAL;
    acc_stats(&a, out);
    return 0;
}

/* ---- clothing ---- */

#define KM_K 4
#define KM_ITERS 12
#define KM_MERGE_DE 12.0
#define KM_GRID 128

static double de2(const float *a, const float *b) {
    double d0 = a[0] - b[0], d1 = a[1] - b[1], d2 = a[2] - b[2];
    return d0 * d0 + d1 * d1 + d2 * d2;
}

/* Shades of one colour differ mostly in lightness: L at half weight. */
static double shade_de2(const float *a, const float *b) {
    double d0 = 0.5 * (a[0] - b[0]), d1 = a[1] - b[1], d2 = a[2] - b[2];
    return d0 * d0 + d1 * d1 + d2 * d2;
}

/* Lab samples on a grid of at most KM_GRID x KM_GRID points, each with a
 * weight (the mask's value, or a centre-weighting Gaussian) and a flag for
 * the outer 8 % border. Samples of weight 0 are not kept. */
typedef struct {
    float *lab, *wt;
    uint8_t *border, *label;
    size_t n;
} samples;

static void samples_free(samples *s) {
    free(s->lab);
    free(s->wt);
    free(s->border);
    free(s->label);
}

static int samples_take(samples *s, const float *rgb, uint32_t w, uint32_t h, const float *mask,
                        int centre) {
    memset(s, 0, sizeof *s);
    uint32_t side = w > h ? w : h;
    uint32_t step = (side + KM_GRID - 1) / KM_GRID;
    size_t cap = (size_t)((w + step - 1) / step) * ((h + step - 1) / step);
    s->lab = hsq_trymalloc(cap * 3 * sizeof(float));
    s->wt = hsq_trymalloc(cap * sizeof(float));
    s->border = hsq_trymalloc(cap);
    s->label = hsq_trymalloc(cap);
    if (!s->lab || !s->wt || !s->border || !s->label) {
        samples_free(s);
        return HSQ_ENOMEM;
    }
    for (uint32_t y = step / 2; y < h; y += step)
        for (uint32_t x = step / 2; x < w && s->n < cap; x += step) {
            size_t i = (size_t)y * w + x;
            double u = (x + 0.5) / w - 0.5, v = (y + 0.5) / h - 0.5;
            float wt = mask ? mask[i] : 1.0f;
            if (centre)
                wt *= (float)exp(-0.5 * (u * u + v * v) / (0.35 * 0.35));
            if (!(wt > 0))
                continue;
            px_rgb_to_lab(rgb + 3 * i, s->lab + 3 * s->n);
            s->wt[s->n] = wt > 1 ? 1 : wt;
            s->border[s->n] = fabs(u) > 0.42 || fabs(v) > 0.42;
            s->n++;
        }
    return 0;
}

/* The dominant colour of the samples: weighted k-means (k = 4) in Lab from a
 * deterministic farthest-point start (the heaviest sample, then each next
 * centre maximising weight x squared distance to the chosen ones), clusters
 * that are shades of one colour merged, and the cluster with the largest
 * weight wins; with border_rule its weight is first multiplied by the share
 * of its samples off the border (a plain backdrop owns the border). Its
 * stats are weighted when weighted_stats, plain otherwise.
 * Errors: HSQ_EINVAL (no samples). */
static int dominant(samples *s, int border_rule, int weighted_stats, hsq_cmp_lab_stats *out) {
    const size_t n = s->n;
    const float *lab = s->lab, *wt = s->wt;
    if (n == 0)
        return HSQ_EINVAL;
    float cen[KM_K][3];
    int k = 0;
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (wt[i] > wt[best])
            best = i;
    memcpy(cen[k++], lab + 3 * best, sizeof cen[0]);
    while (k < KM_K) {
        double bs = 0;
        size_t bi = 0;
        for (size_t i = 0; i < n; i++) {
            double d = 1e300;
            for (int j = 0; j < k; j++)
                d = fmin(d, de2(lab + 3 * i, cen[j]));
            if (wt[i] * d > bs) {
                bs = wt[i] * d;
                bi = i;
            }
        }
        if (bs <= 1e-9) /* everything already covered: fewer clusters */
            break;
        memcpy(cen[k++], lab + 3 * bi, sizeof cen[0]);
    }
    for (int it = 0; it < KM_ITERS; it++) {
        double sum[KM_K][3] = {{0}}, sw[KM_K] = {0};
        for (size_t i = 0; i < n; i++) {
            int bj = 0;
            double bd = de2(lab + 3 * i, cen[0]);
            for (int j = 1; j < k; j++) {
                double d = de2(lab + 3 * i, cen[j]);
                if (d < bd) {
                    bd = d;
                    bj = j;
                }
            }
            s->label[i] = (uint8_t)bj;
            for (int c = 0; c < 3; c++)
                sum[bj][c] += wt[i] * lab[3 * i + c];
            sw[bj] += wt[i];
        }
        for (int j = 0; j < k; j++)
            if (sw[j] > 0)
                for (int c = 0; c < 3; c++)
                    cen[j][c] = (float)(sum[j][c] / sw[j]);
    }
    /* A swatch or a folded garment splits into light and dark halves:
     * merge clusters that are shades of one colour. */
    int root[KM_K];
    for (int j = 0; j < k; j++) {
        root[j] = j;
        for (int q = 0; q < j; q++)
            if (root[q] == q && shade_de2(cen[j], cen[q]) < KM_MERGE_DE * KM_MERGE_DE) {
                root[j] = q;
                break;
            }
    }
    double mass[KM_K] = {0}, cnt[KM_K] = {0}, bcnt[KM_K] = {0};
    for (size_t i = 0; i < n; i++) {
        int j = root[s->label[i]];
        mass[j] += wt[i];
        cnt[j] += 1;
        bcnt[j] += s->border[i];
    }
    int bj = -1;
    double bscore = -1;
    for (int j = 0; j < k; j++) {
        if (root[j] != j || cnt[j] == 0)
            continue;
        double score = border_rule ? mass[j] * (1 - bcnt[j] / cnt[j]) : mass[j];
        if (score > bscore) {
            bscore = score;
            bj = j;
        }
    }
    if (bj < 0)
        return HSQ_EINVAL;
    lab_acc acc = {0};
    for (size_t i = 0; i < n; i++)
        if (root[s->label[i]] == bj)
            acc_add(&acc, lab + 3 * i, weighted_stats ? wt[i] : 1.0);
    if (!(acc.w > 0))
        return HSQ_EINVAL;
    acc_stats(&acc, out);
    return 0;
}

int hsq_cmp_cloth_ref_stats(const float *ref, uint32_t rw, uint32_t rh, const float *ref_mask,
                            hsq_cmp_lab_stats *out) {
    if (!ref || !out || !dims_ok(rw, rh))
        return HSQ_EINVAL;
    if (ref_mask) /* the caller knows where the garment is */
        return hsq_cmp_lab_stats_of(ref, rw, rh, ref_mask, out);
    samples s;
    int rc = samples_take(&s, ref, rw, rh, NULL, 1);
    if (rc)
        return rc;
    rc = dominant(&s, 1, 0, out);
    samples_free(&s);
    return rc;
}

int hsq_cmp_cloth_src_stats(const float *rgb, uint32_t w, uint32_t h, const float *mask,
                            hsq_cmp_lab_stats *out) {
    if (!rgb || !mask || !out || !dims_ok(w, h))
        return HSQ_EINVAL;
    samples s;
    int rc = samples_take(&s, rgb, w, h, mask, 0);
    if (rc)
        return rc;
    rc = dominant(&s, 0, 1, out);
    samples_free(&s);
    return rc;
}

void hsq_cmp_cloth_default(hsq_cmp_cloth *c) {
    c->strength = 1.0f;
    c->l_strength = 0.85f;
    c->max_ratio = 2.0f;
    c->select = 35.0f;
}

int hsq_cmp_cloth_transfer(float *rgb, uint32_t w, uint32_t h, const float *mask,
                           const hsq_cmp_lab_stats *ref, const hsq_cmp_cloth *prm) {
    hsq_cmp_cloth c;
    hsq_cmp_cloth_default(&c);
    if (prm)
        c = *prm;
    if (!rgb || !mask || !ref || !dims_ok(w, h) || !unit(c.strength) || !unit(c.l_strength) ||
        !(c.max_ratio >= 1 && c.max_ratio <= 100) || !(c.select >= 0 && c.select <= 1000))
        return HSQ_EINVAL;
    for (int k = 0; k < 3; k++)
        if (!isfinite(ref->mean[k]) || !(ref->sd[k] >= 0 && isfinite(ref->sd[k])))
            return HSQ_EINVAL;
    if (c.strength == 0)
        return 0;
    hsq_cmp_lab_stats src;
    int rc = hsq_cmp_cloth_src_stats(rgb, w, h, mask, &src);
    if (rc == HSQ_EINVAL)
        return 0; /* nothing selected */
    if (rc)
        return rc;
    float ratio[3];
    for (int k = 0; k < 3; k++) {
        double rt = src.sd[k] > 1e-3f ? ref->sd[k] / src.sd[k] : c.max_ratio;
        rt = fmax(1.0 / c.max_ratio, fmin(c.max_ratio, rt));
        ratio[k] = (float)rt;
    }
    lin_lut *lut = hsq_trymalloc(sizeof *lut);
    if (!lut)
        return HSQ_ENOMEM;
    lin_lut_init(lut);
    for (size_t i = 0, n = (size_t)w * h; i < n; i++) {
        float m = mask[i];
        if (!(m > 0))
            continue;
        float *px = rgb + 3 * i, lab[3], t[3], out[3];
        px_rgb_to_lab_t(px, lab, lut);
        float sel = 1;
        if (c.select > 0) {
            /* full up to select / 2, smoothstep down to 0 at select */
            double d = sqrt(shade_de2(lab, src.mean)), d0 = 0.5 * c.select;
            if (d >= c.select)
                continue;
            if (d > d0) {
                double u = (c.select - d) / (c.select - d0);
                sel = (float)(u * u * (3 - 2 * u));
            }
        }
        for (int k = 0; k < 3; k++)
            t[k] = (lab[k] - src.mean[k]) * ratio[k] + ref->mean[k];
        t[0] = lab[0] + c.l_strength * (t[0] - lab[0]);
        px_lab_to_rgb(t, out);
        float s = c.strength * (m < 1 ? m : 1) * sel;
        for (int k = 0; k < 3; k++)
            px[k] = px[k] + s * (out[k] - px[k]);
    }
    free(lut);
    return 0;
}

/* ---- retouch ---- */

typedef struct {
    const float *x;
    uint32_t w;
} self_rows;

/* x_c, x_c^2 for c = 0..2 (6 channels). */
static const float *self_row(void *ctx, uint32_t y, float *o) {
    const self_rows *s = ctx;
    const float *x = s->x + (size_t)y * s->w * 3;
    for (uint32_t i = 0; i < s->w; i++)
        for (int c = 0; c < 3; c++) {
            float v = x[3 * i + c];
            o[6 * (size_t)i + 2 * c] = v;
            o[6 * (size_t)i + 2 * c + 1] = v * v;
        }
    return o;
}

#define SKIN_EPS (0.05 * 0.05)

int hsq_cmp_skin_smooth(float *rgb, uint32_t w, uint32_t h, const float *mask, float strength,
                        int radius) {
    if (!rgb || !mask || !dims_ok(w, h) || !unit(strength) || radius < 0)
        return HSQ_EINVAL;
    if (strength == 0)
        return 0;
    uint32_t x0 = w, x1 = 0, y0 = h, y1 = 0;
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++)
            if (mask[(size_t)y * w + x] > 0) {
                x0 = x < x0 ? x : x0;
                x1 = x > x1 ? x : x1;
                y0 = y < y0 ? y : y0;
                y1 = y > y1 ? y : y1;
            }
    if (x0 > x1)
        return 0; /* empty mask */
    int r = radius ? radius : (int)lround((x1 - x0 + 1) / 60.0);
    if (r < 2)
        r = 2;
    /* The box plus a margin of r, so windows near the mask see real pixels. */
    uint32_t bx0 = x0 > (uint32_t)r ? x0 - (uint32_t)r : 0,
             by0 = y0 > (uint32_t)r ? y0 - (uint32_t)r : 0;
    uint32_t bx1 = x1 + (uint32_t)r < w ? x1 + (uint32_t)r : w - 1;
    uint32_t by1 = y1 + (uint32_t)r < h ? y1 + (uint32_t)r : h - 1;
    uint32_t cw = bx1 - bx0 + 1, ch = by1 - by0 + 1;
    size_t n = (size_t)cw * ch;
    float *crop = hsq_trymalloc(n * 3 * sizeof(float));
    float *st = hsq_trymalloc(n * 6 * sizeof(float));
    float *mc = hsq_trymalloc(n * 6 * sizeof(float));
    int rc = HSQ_ENOMEM;
    if (!crop || !st || !mc)
        goto done;
    for (uint32_t y = 0; y < ch; y++)
        memcpy(crop + (size_t)y * cw * 3, rgb + ((size_t)(by0 + y) * w + bx0) * 3,
               (size_t)cw * 3 * sizeof(float));
    self_rows sr = {crop, cw};
    if ((rc = box_mean(self_row, &sr, cw, ch, 6, r, st)) != 0)
        goto done;
    /* Self-guided: a = var / (var + eps), b = (1 - a) mean, per channel. */
    for (size_t i = 0; i < n * 3; i++) {
        double mean = st[2 * i], var = st[2 * i + 1] - mean * mean;
        double a = var > 0 ? var / (var + SKIN_EPS) : 0;
        st[2 * i] = (float)a;
        st[2 * i + 1] = (float)((1 - a) * mean);
    }
    if ((rc = box_mean_buf(st, cw, ch, 6, r, mc)) != 0)
        goto done;
    for (uint32_t y = 0; y < ch; y++)
        for (uint32_t x = 0; x < cw; x++) {
            size_t gi = (size_t)(by0 + y) * w + bx0 + x, li = (size_t)y * cw + x;
            float m = mask[gi];
            if (!(m > 0))
                continue;
            float s = strength * (m < 1 ? m : 1);
            for (int c = 0; c < 3; c++) {
                float v = rgb[3 * gi + c];
                float sm = mc[6 * li + 2 * c] * v + mc[6 * li + 2 * c + 1];
                rgb[3 * gi + c] = clamp01(v + s * (sm - v));
            }
        }
    rc = 0;
done:
    free(crop);
    free(st);
    free(mc);
    return rc;
}

/* ---- tone ---- */

#define TONE_BINS 4096
#define TONE_TARGET 0.80  /* linear luminance of the 99th percentile */
#define TONE_SHOULDER 0.8 /* linear: above this, gains roll off instead of clipping */

static double pct(const double *hist, double total, double q) {
    double want = q * total, run = 0;
    for (int b = 0; b < TONE_BINS; b++) {
        run += hist[b];
        if (run >= want)
            return (b + 0.5) / TONE_BINS;
    }
    return 1.0;
}

static double shoulder(double y) {
    const double k = TONE_SHOULDER;
    return y <= k ? y : k + (1 - k) * (1 - exp(-(y - k) / (1 - k)));
}

#define TONE_MAP 8192 /* steps of the per-channel mapping table */

/* The tone mapping of one channel value c with gain g: to linear, gain,
 * shoulder when brightening, clamp, back to sRGB. */
static float tone_map_exact(const lin_lut *lut, float c, double g) {
    double y = lin_of(lut, c) * g;
    if (g > 1)
        y = shoulder(y);
    return srgb_of(lut, y < 0 ? 0 : y > 1 ? 1 : y);
}

/* lin_of of 8 pixels (24 values, interleaved as in rgb) into l: 1 when
 * done, 0 when a value lies outside [0, 1) (then nothing is written and
 * the caller takes lin_of, whose exact branch those values need). */
static int lin_of8(const lin_lut *t, const float *p, float *l);

/* The mapping pass of tone over pixels [i0, i1): the table lookup of each
 * channel value, blended by the mask. */
static void tone_apply(float *rgb, const float *mask, size_t i0, size_t i1, const float *map,
                       const lin_lut *lut, const double gain[3]) {
    for (size_t i = i0; i < i1; i++) {
        float m = mask ? mask[i] : 1.0f;
        if (!(m > 0))
            continue;
        m = m < 1 ? m : 1;
        float *p = rgb + 3 * i;
        for (int k = 0; k < 3; k++) {
            float c = p[k], v;
            if (c >= 0.0f && c < 1.0f) {
                float x = c * TONE_MAP;
                int j = (int)x;
                const float *t = map + k * (TONE_MAP + 2) + j;
                v = t[0] + (x - (float)j) * (t[1] - t[0]);
            } else {
                v = tone_map_exact(lut, c, gain[k]);
            }
            p[k] = m == 1 ? v : c + m * (v - c);
        }
    }
}

#if CMP_AVX2
/* The 24 values of 8 interleaved RGB pixels are three vectors; lane l of
 * vector q holds channel (8q + l) % 3 of pixel (8q + l) / 3. */
#define TONE_CH(q)                                                                                 \
    _mm256_setr_epi32((8 * q + 0) % 3, (8 * q + 1) % 3, (8 * q + 2) % 3, (8 * q + 3) % 3,          \
                      (8 * q + 4) % 3, (8 * q + 5) % 3, (8 * q + 6) % 3, (8 * q + 7) % 3)
#define TONE_PX(q)                                                                                 \
    _mm256_setr_epi32((8 * q + 0) / 3, (8 * q + 1) / 3, (8 * q + 2) / 3, (8 * q + 3) / 3,          \
                      (8 * q + 4) / 3, (8 * q + 5) / 3, (8 * q + 6) / 3, (8 * q + 7) / 3)

/* (x, j) of a table lookup, as the scalar code: x = c * steps, j = (int)x
 * (truncation, c >= 0). Returns the interpolated t[j] + (x - j)(t[j+1] -
 * t[j]) with the same float operations, base added to the index. */
__attribute__((target("avx2"))) static inline __m256 lut8(const float *tab, __m256 c, float steps,
                                                          __m256i base) {
    __m256 x = _mm256_mul_ps(c, _mm256_set1_ps(steps));
    __m256i j = _mm256_cvttps_epi32(x);
    __m256i idx = _mm256_add_epi32(j, base);
    __m256 t0 = _mm256_i32gather_ps(tab, idx, 4);
    __m256 t1 = _mm256_i32gather_ps(tab + 1, idx, 4);
    return _mm256_add_ps(
        t0, _mm256_mul_ps(_mm256_sub_ps(x, _mm256_cvtepi32_ps(j)), _mm256_sub_ps(t1, t0)));
}

/* All of v in [0, 1)? (NaN fails.) */
__attribute__((target("avx2"))) static inline int in01(__m256 v) {
    __m256 ok = _mm256_and_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ),
                              _mm256_cmp_ps(v, _mm256_set1_ps(1.0f), _CMP_LT_OQ));
    return _mm256_movemask_ps(ok) == 0xff;
}

__attribute__((target("avx2"))) static int lin_of8_avx2(const lin_lut *t, const float *p,
                                                        float *l) {
    __m256 v[3];
    for (int q = 0; q < 3; q++) {
        v[q] = _mm256_loadu_ps(p + 8 * q);
        if (!in01(v[q]))
            return 0;
    }
    for (int q = 0; q < 3; q++)
        _mm256_storeu_ps(l + 8 * q, lut8(t->v, v[q], LIN_LUT, _mm256_setzero_si256()));
    return 1;
}

/* tone_apply, 8 pixels at a time: the same lookups and blend; a block with
 * a value outside [0, 1) takes tone_apply. */
__attribute__((target("avx2"))) static void tone_apply_avx2(float *rgb, const float *mask, size_t n,
                                                            const float *map, const lin_lut *lut,
                                                            const double gain[3]) {
    const __m256i ch[3] = {TONE_CH(0), TONE_CH(1), TONE_CH(2)};
    const __m256i px[3] = {TONE_PX(0), TONE_PX(1), TONE_PX(2)};
    const __m256i stride = _mm256_set1_epi32(TONE_MAP + 2);
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 m8 = mask ? _mm256_loadu_ps(mask + i) : one;
        __m256 on = _mm256_cmp_ps(m8, zero, _CMP_GT_OQ); /* !(m > 0): untouched */
        if (_mm256_movemask_ps(on) == 0)
            continue;
        float *p = rgb + 3 * i;
        __m256 c[3];
        int ok = 1;
        for (int q = 0; q < 3; q++) {
            c[q] = _mm256_loadu_ps(p + 8 * q);
            ok &= in01(c[q]);
        }
        if (!ok) {
            tone_apply(rgb, mask, i, i + 8, map, lut, gain);
            continue;
        }
        m8 = _mm256_min_ps(m8, one); /* m < 1 ? m : 1 */
        for (int q = 0; q < 3; q++) {
            __m256 v = lut8(map, c[q], TONE_MAP, _mm256_mullo_epi32(ch[q], stride));
            __m256 m = _mm256_permutevar8x32_ps(m8, px[q]);
            __m256 o = _mm256_permutevar8x32_ps(on, px[q]);
            __m256 mix = _mm256_add_ps(c[q], _mm256_mul_ps(m, _mm256_sub_ps(v, c[q])));
            __m256 r = _mm256_blendv_ps(mix, v, _mm256_cmp_ps(m, one, _CMP_EQ_OQ));
            _mm256_storeu_ps(p + 8 * q, _mm256_blendv_ps(c[q], r, o));
        }
    }
    tone_apply(rgb, mask, i, n, map, lut, gain);
}
#endif

static int lin_of8(const lin_lut *t, const float *p, float *l) {
#if CMP_AVX2
    if (use_avx2())
        return lin_of8_avx2(t, p, l);
#endif
    for (int k = 0; k < 24; k++) {
        if (!(p[k] >= 0.0f && p[k] < 1.0f))
            return 0;
    }
    for (int k = 0; k < 24; k++)
        l[k] = (float)lin_of(t, p[k]);
    return 1;
}

int hsq_cmp_tone(float *rgb, uint32_t w, uint32_t h, const float *mask, float strength) {
    if (!rgb || !dims_ok(w, h) || !unit(strength))
        return HSQ_EINVAL;
    if (strength == 0)
        return 0;
    const size_t n = (size_t)w * h;
    double *hist = hsq_trymalloc(TONE_BINS * sizeof(double));
    lin_lut *lut = hsq_trymalloc(sizeof *lut);
    if (!hist || !lut) {
        free(hist);
        free(lut);
        return HSQ_ENOMEM;
    }
    /* Each pixel's histogram bin, kept for the white balance pass (which
     * looks at a narrow band of bins only); NULL is fine, that pass then
     * looks at every pixel. */
    uint16_t *bins = hsq_trymalloc(n * sizeof *bins);
    lin_lut_init(lut);
    memset(hist, 0, TONE_BINS * sizeof(double));
    double total = 0, clipped = 0;
    /* The curve of 8 pixels at a time (lin_of8), the rest per pixel. */
    float l8[24];
    int have8 = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 8 == 0) {
            have8 = 0;
            if (i + 8 <= n) {
                int any = !mask;
                for (size_t q = i; q < i + 8 && !any; q++)
                    any = mask[q] > 0;
                if (!any) {
                    i += 7; /* no weight in the block */
                    continue;
                }
                have8 = lin_of8(lut, rgb + 3 * i, l8);
            }
        }
        double wt = mask ? mask[i] : 1.0;
        if (!(wt > 0))
            continue;
        const float *p = rgb + 3 * i;
        const float *l = l8 + 3 * (i % 8);
        double y = have8 ? 0.2126 * (double)l[0] + 0.7152 * (double)l[1] + 0.0722 * (double)l[2]
                         : 0.2126 * lin_of(lut, p[0]) + 0.7152 * lin_of(lut, p[1]) +
                               0.0722 * lin_of(lut, p[2]);
        int b = (int)(y * TONE_BINS);
        b = b < 0 ? 0 : b >= TONE_BINS ? TONE_BINS - 1 : b;
        if (bins)
            bins[i] = (uint16_t)b;
        hist[b] += wt;
        total += wt;
        if (fmaxf(p[0], fmaxf(p[1], p[2])) >= 0.995f)
            clipped += wt;
    }
    if (!(total > 0)) {
        free(hist);
        free(lut);
        free(bins);
        return 0;
    }
    double p95 = pct(hist, total, 0.95), p99 = pct(hist, total, 0.99);
    double p995 = pct(hist, total, 0.995);
    free(hist);

    /* Exposure from the highlights, so that darker skin is not "normalised"
     * towards a fixed mean. */
    double g = p99 > 0 ? TONE_TARGET / p99 : 1.6;
    g = fmax(0.85, fmin(1.6, g));
    if (clipped > 0.005 * total && g < 1)
        g = 1;

    /* White balance from the bright, unclipped pixels. A pixel of the band
     * [p95 - half a bin, p995 + half a bin] = [b95 / BINS, (b995 + 1) /
     * BINS] lies in bins b95 .. b995 + 1, so one whose bin is farther out
     * than that (one more either side for safety) is skipped without
     * recomputing its luminance; the others take the exact test below, so
     * the sums are the same as without the bins. */
    const int b_lo = (int)(p95 * TONE_BINS) - 1, b_hi = (int)(p995 * TONE_BINS) + 2;
    double s[3] = {0, 0, 0}, sw = 0;
    for (size_t i = 0; i < n; i++) {
        double wt = mask ? mask[i] : 1.0;
        if (!(wt > 0))
            continue;
        if (bins && (bins[i] < b_lo || bins[i] > b_hi))
            continue;
        const float *p = rgb + 3 * i;
        if (fmaxf(p[0], fmaxf(p[1], p[2])) >= 0.98f)
            continue;
        double l[3] = {lin_of(lut, p[0]), lin_of(lut, p[1]), lin_of(lut, p[2])};
        double y = 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2];
        if (y < p95 - 0.5 / TONE_BINS || y > p995 + 0.5 / TONE_BINS)
            continue;
        for (int k = 0; k < 3; k++)
            s[k] += wt * l[k];
        sw += wt;
    }
    free(bins);
    double gain[3] = {g, g, g};
    if (sw > 0.001 * total && s[0] > 0 && s[1] > 0 && s[2] > 0) {
        double ym = (0.2126 * s[0] + 0.7152 * s[1] + 0.0722 * s[2]) / sw;
        for (int k = 0; k < 3; k++)
            gain[k] *= fmax(0.9, fmin(1.1, ym / (s[k] / sw)));
    }
    for (int k = 0; k < 3; k++)
        gain[k] = pow(gain[k], strength);

    /* Each channel's mapping is a function of that channel alone, so it is
     * tabulated once (TONE_MAP + 1 steps over [0, 1], interpolated): the
     * composite of the two sRGB curves, the gain and the shoulder is
     * linear on the toe and smooth elsewhere, so the table is within about
     * 1e-6 of the exact chain, and the per-pixel pow/exp chain becomes a
     * lookup. Values outside [0, 1] take the exact chain. */
    float *map = hsq_trymalloc(3 * (TONE_MAP + 2) * sizeof(float));
    if (!map) {
        free(lut);
        return HSQ_ENOMEM;
    }
    for (int k = 0; k < 3; k++)
        for (int i = 0; i <= TONE_MAP + 1; i++)
            map[k * (TONE_MAP + 2) + i] = tone_map_exact(lut, (float)i / TONE_MAP, gain[k]);
#if CMP_AVX2
    if (use_avx2())
        tone_apply_avx2(rgb, mask, n, map, lut, gain);
    else
#endif
        tone_apply(rgb, mask, 0, n, map, lut, gain);
    free(map);
    free(lut);
    return 0;
}

/* ---- sharpening ---- */

int hsq_cmp_sharpen(float *rgb, uint32_t w, uint32_t h, float amount, float sigma) {
    if (!rgb || !dims_ok(w, h) || !unit(amount) || !(sigma >= 0))
        return HSQ_EINVAL;
    if (amount == 0)
        return 0;
    if (sigma == 0)
        sigma = 1.0f;
    const size_t n = (size_t)w * h;
    float *y = hsq_trymalloc(n * sizeof(float));
    float *yb = hsq_trymalloc(n * sizeof(float));
    if (!y || !yb) {
        free(y);
        free(yb);
        return HSQ_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        y[i] = yb[i] = luma601(rgb + 3 * i);
    int rc = hsq_cmp_blur(yb, w, h, 1, sigma);
    if (rc == 0)
        for (size_t i = 0; i < n; i++) {
            float d = amount * (y[i] - yb[i]);
            for (int k = 0; k < 3; k++)
                rgb[3 * i + k] = clamp01(rgb[3 * i + k] + d);
        }
    free(y);
    free(yb);
    return rc;
}
