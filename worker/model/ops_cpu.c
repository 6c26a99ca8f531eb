/* ops_cpu.c - the CPU kernels of the model runtime (NHWC float32, batch
 * outermost).
 *
 * CONV_2D goes through the packed GEMM (gemm.c): a 1x1 unpadded conv reads
 * the input pixels in place, any other window is unrolled (im2col) a chunk of
 * output pixels at a time into a small scratch buffer that stays in cache.
 * The depthwise conv is a direct loop vectorized over channels: AVX2+FMA
 * intrinsics behind the run-time check (3x3 windows keep their nine weight
 * vectors in registers along a row; other sizes take interior pixels four at
 * a time so one weight load feeds four accumulators), and a portable loop
 * otherwise. The remaining ops are memory-bound and written as plain loops
 * whose innermost dimension is the contiguous channel axis; the elementwise,
 * pooling and resize loops are compiled twice from one always-inline body,
 * for the baseline ISA and with target("avx2,fma"), and picked at run time
 * like the kernels above (gcc vectorizes both; 8 lanes halve the cost of the
 * exp polynomial in LOGISTIC).
 */
#include "worker/model/internal.h"

#include "schemas/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* AVX2+FMA kernels on x86 with gcc/clang (-DHSQ_HAVE_AVX2_KERNELS=0 builds
 * the portable kernels alone, as on other CPUs). */
#ifndef HSQ_HAVE_AVX2_KERNELS
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define HSQ_HAVE_AVX2_KERNELS 1
#else
#define HSQ_HAVE_AVX2_KERNELS 0
#endif
#endif
#if HSQ_HAVE_AVX2_KERNELS
#include <immintrin.h>
#endif

/* Output pixels per GEMM call: a multiple of the kernel's 6 rows, small
 * enough that an im2col chunk (MC x K floats) stays in L2. */
#define MC 96

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Define name(params) from the always-inline body name##_body: the baseline
 * version and, on x86, an AVX2+FMA clone chosen at run time. */
#if HSQ_HAVE_AVX2_KERNELS
#define DISPATCH(name, params, args)                                                               \
    static void name##_base params { name##_body args; }                                           \
    __attribute__((target("avx2,fma"))) static void name##_avx2 params { name##_body args; }       \
    static void name params {                                                                      \
        if (hsq_ops_simd())                                                                        \
            name##_avx2 args;                                                                      \
        else                                                                                       \
            name##_base args;                                                                      \
    }
#else
#define DISPATCH(name, params, args)                                                               \
    static void name params { name##_body args; }
#endif

ALWAYS_INLINE float clampf(float v, hsq_act act) {
    v = v < act.lo ? act.lo : v;
    return v > act.hi ? act.hi : v;
}

static inline int imin(int a, int b) { return a < b ? a : b; }

static inline int imax(int a, int b) { return a > b ? a : b; }

void hsq_pad_same_valid(int same, int in, int k, int stride, int dil, int *out, int *before) {
    int eff = (k - 1) * dil + 1;
    if (same) {
        int o = (in + stride - 1) / stride;
        int total = (o - 1) * stride + eff - in;
        *out = o;
        *before = total > 0 ? total / 2 : 0;
    } else {
        *out = in >= eff ? (in - eff) / stride + 1 : 0;
        *before = 0;
    }
}

float hsq_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf / NaN */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        /* Subnormal half: value = man * 2^-24; normalize it. */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* ---- CONV_2D ---- */

static int conv_is_direct(const hsq_geom *g) {
    return g->kh == 1 && g->kw == 1 && g->pad_t == 0 && g->pad_l == 0;
}

/* How the GEMM sees a patch: kh segments of kw * ic floats when the window
 * row is contiguous in the input (no horizontal dilation), kh * kw segments
 * of ic floats otherwise; 0 when that is more than HSQ_GEMM_MAXSEG and the
 * conv falls back to a full im2col. */
static int conv_segments(const hsq_geom *g) {
    int n = g->dw == 1 ? g->kh : g->kh * g->kw;
    return n <= HSQ_GEMM_MAXSEG ? n : 0;
}

size_t hsq_conv2d_scratch(const hsq_geom *g) {
    if (conv_is_direct(g))
        return 0;
    /* MC im2col rows, plus one zero segment for rows off the input. */
    size_t k = (size_t)g->kh * (size_t)g->kw * (size_t)g->ic;
    return (size_t)MC * k + k;
}

static inline void copyf(float *restrict dst, const float *restrict src, size_t n) {
    memcpy(dst, src, n * sizeof(float));
}

static inline void zerof(float *dst, size_t n) { memset(dst, 0, n * sizeof(float)); }

/* One im2col row: the kh x kw x ic patch of output pixel (b, oy, ox), zeros
 * where the window hangs over the border. */
static void im2col_row(const hsq_geom *g, const float *in, int b, int oy, int ox, float *dst) {
    const size_t ic = (size_t)g->ic, run = (size_t)g->kw * ic;
    for (int ky = 0; ky < g->kh; ky++, dst += run) {
        int iy = oy * g->sh - g->pad_t + ky * g->dh;
        if (iy < 0 || iy >= g->ih) {
            zerof(dst, run);
            continue;
        }
        const float *row = in + ((size_t)b * g->ih + (size_t)iy) * g->iw * ic;
        int ix0 = ox * g->sw - g->pad_l;
        for (int kx = 0; kx < g->kw; kx++) {
            int ix = ix0 + kx * g->dw;
            if (ix < 0 || ix >= g->iw)
                zerof(dst + (size_t)kx * ic, ic);
            else
                copyf(dst + (size_t)kx * ic, row + (size_t)ix * ic, ic);
        }
    }
}

/* The segment pointers of output pixel (b, oy, ox): straight into the input
 * where a segment lies inside it, the zero segment where its input row is
 * off the image, and an im2col copy (in own, K floats) where it straddles
 * the left or right border. */
static void conv_segs(const hsq_geom *g, const float *in, int nseg, int b, int oy, int ox,
                      const float *zero, float *own, const float **seg) {
    const size_t ic = (size_t)g->ic;
    const int per_ky = nseg == g->kh; /* one segment per kernel row */
    const int ix0 = ox * g->sw - g->pad_l;
    const int x_in = ix0 >= 0 && ix0 + (g->kw - 1) * g->dw < g->iw;
    if (!x_in)
        im2col_row(g, in, b, oy, ox, own);
    for (int s = 0; s < nseg; s++) {
        int ky = per_ky ? s : s / g->kw, kx = per_ky ? 0 : s % g->kw;
        int iy = oy * g->sh - g->pad_t + ky * g->dh;
        size_t off = per_ky ? (size_t)ky * g->kw * ic : ((size_t)ky * g->kw + kx) * ic;
        if (iy < 0 || iy >= g->ih)
            seg[s] = zero;
        else if (!x_in)
            seg[s] = own + off;
        else
            seg[s] =
                in + (((size_t)b * g->ih + (size_t)iy) * g->iw + (size_t)(ix0 + kx * g->dw)) * ic;
    }
}

void hsq_conv2d(const hsq_geom *g, const float *in, const hsq_wpack *w, hsq_act act, float *out,
                float *scratch) {
    const size_t m = (size_t)g->n * g->oh * g->ow;
    const size_t k = (size_t)g->kh * g->kw * g->ic;
    const int direct = conv_is_direct(g);
    const int nseg = direct ? 1 : conv_segments(g);
    const float *rows[MC * HSQ_GEMM_MAXSEG];
    float *zero = scratch + (size_t)MC * k;
    if (!direct)
        zerof(zero, k);
    int b = 0, oy = 0, ox = 0; /* output pixel of the next row */
    for (size_t m0 = 0; m0 < m; m0 += MC) {
        int mc = m - m0 < MC ? (int)(m - m0) : MC;
        for (int i = 0; i < mc; i++) {
            if (direct) {
                rows[i] =
                    in +
                    (((size_t)b * g->ih + (size_t)oy * g->sh) * g->iw + (size_t)ox * g->sw) * g->ic;
            } else if (nseg) {
                conv_segs(g, in, nseg, b, oy, ox, zero, scratch + (size_t)i * k,
                          rows + (size_t)i * nseg);
            } else {
                float *dst = scratch + (size_t)i * k;
                im2col_row(g, in, b, oy, ox, dst);
                rows[i] = dst;
            }
            if (++ox == g->ow) {
                ox = 0;
                if (++oy == g->oh) {
                    oy = 0;
                    b++;
                }
            }
        }
        hsq_gemm(mc, nseg ? nseg : 1, rows, w, act, out + m0 * (size_t)g->oc, (size_t)g->oc);
    }
}

/* ---- DEPTHWISE_CONV_2D ---- */

/* Portable: any depth multiplier. The output pixel is the accumulator; the
 * channel loops vectorize. */
static void dw_portable(const hsq_geom *g, const float *in, const float *w, const float *bias,
                        hsq_act act, float *out) {
    const int ic = g->ic, oc = g->oc, mult = g->oc / g->ic;
    for (int b = 0; b < g->n; b++)
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                float *restrict op =
                    out + (((size_t)b * g->oh + (size_t)oy) * g->ow + (size_t)ox) * oc;
                for (int o = 0; o < oc; o++)
                    op[o] = bias ? bias[o] : 0.0f;
                for (int ky = 0; ky < g->kh; ky++) {
                    int iy = oy * g->sh - g->pad_t + ky * g->dh;
                    if (iy < 0 || iy >= g->ih)
                        continue;
                    for (int kx = 0; kx < g->kw; kx++) {
                        int ix = ox * g->sw - g->pad_l + kx * g->dw;
                        if (ix < 0 || ix >= g->iw)
                            continue;
                        const float *restrict ip =
                            in + (((size_t)b * g->ih + (size_t)iy) * g->iw + (size_t)ix) * ic;
                        const float *restrict wp = w + ((size_t)ky * g->kw + (size_t)kx) * oc;
                        if (mult == 1) {
                            for (int o = 0; o < oc; o++)
                                op[o] += ip[o] * wp[o];
                        } else {
                            for (int o = 0; o < oc; o++)
                                op[o] += ip[o / mult] * wp[o];
                        }
                    }
                }
                for (int o = 0; o < oc; o++)
                    op[o] = clampf(op[o], act);
            }
}

#if HSQ_HAVE_AVX2_KERNELS
/* Lane mask for the first r (< 8) channels of a block. */
__attribute__((target("avx2"))) static __m256i lane_mask(int r) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* One output pixel, all channels, taps limited to [ky0,ky1) x [kx0,kx1).
 * img is the batch item; (iy0, ix0) the window's top-left input position,
 * possibly outside the input (only in-range taps are addressed). */
__attribute__((target("avx2,fma"))) static void
dw_pixel_avx2(const hsq_geom *g, const float *img, int iy0, int ix0, const float *w,
              const float *bias, __m256 lo, __m256 hi, float *op, int ky0, int ky1, int kx0,
              int kx1, __m256i tail) {
    const int c = g->oc;
    for (int c0 = 0; c0 < c; c0 += 8) {
        __m256i mk = c - c0 >= 8 ? _mm256_set1_epi32(-1) : tail;
        __m256 acc = bias ? _mm256_maskload_ps(bias + c0, mk) : _mm256_setzero_ps();
        for (int ky = ky0; ky < ky1; ky++) {
            const float *ipr = img + (size_t)(iy0 + ky * g->dh) * g->iw * c + c0;
            for (int kx = kx0; kx < kx1; kx++) {
                const float *ip = ipr + (size_t)(ix0 + kx * g->dw) * c;
                const float *wp = w + ((size_t)ky * g->kw + (size_t)kx) * c + c0;
                acc = _mm256_fmadd_ps(_mm256_maskload_ps(ip, mk), _mm256_maskload_ps(wp, mk), acc);
            }
        }
        acc = _mm256_min_ps(_mm256_max_ps(acc, lo), hi);
        _mm256_maskstore_ps(op + c0, mk, acc);
    }
}

/* Four horizontally adjacent output pixels whose windows lie inside the
 * input along x (ix0 >= 0 and the fourth window ends inside): one weight
 * load per tap feeds four accumulators. */
__attribute__((target("avx2,fma"))) static void
dw_quad_avx2(const hsq_geom *g, const float *img, int iy0, int ix0, const float *w,
             const float *bias, __m256 lo, __m256 hi, float *op, int ky0, int ky1, __m256i tail) {
    const int c = g->oc;
    const size_t xstep = (size_t)g->dw * c;
    const size_t pstep = (size_t)g->sw * c; /* next output pixel's input */
    for (int c0 = 0; c0 < c; c0 += 8) {
        __m256i mk = c - c0 >= 8 ? _mm256_set1_epi32(-1) : tail;
        __m256 a0 = bias ? _mm256_maskload_ps(bias + c0, mk) : _mm256_setzero_ps();
        __m256 a1 = a0, a2 = a0, a3 = a0;
        for (int ky = ky0; ky < ky1; ky++) {
            const float *ipr = img + ((size_t)(iy0 + ky * g->dh) * g->iw + (size_t)ix0) * c + c0;
            const float *wpr = w + (size_t)ky * g->kw * c + c0;
            for (int kx = 0; kx < g->kw; kx++) {
                const float *ip = ipr + (size_t)kx * xstep;
                __m256 wv = _mm256_maskload_ps(wpr + (size_t)kx * c, mk);
                a0 = _mm256_fmadd_ps(_mm256_maskload_ps(ip, mk), wv, a0);
                a1 = _mm256_fmadd_ps(_mm256_maskload_ps(ip + pstep, mk), wv, a1);
                a2 = _mm256_fmadd_ps(_mm256_maskload_ps(ip + 2 * pstep, mk), wv, a2);
                a3 = _mm256_fmadd_ps(_mm256_maskload_ps(ip + 3 * pstep, mk), wv, a3);
            }
        }
        a0 = _mm256_min_ps(_mm256_max_ps(a0, lo), hi);
        a1 = _mm256_min_ps(_mm256_max_ps(a1, lo), hi);
        a2 = _mm256_min_ps(_mm256_max_ps(a2, lo), hi);
        a3 = _mm256_min_ps(_mm256_max_ps(a3, lo), hi);
        _mm256_maskstore_ps(op + c0, mk, a0);
        _mm256_maskstore_ps(op + c + c0, mk, a1);
        _mm256_maskstore_ps(op + 2 * (size_t)c + c0, mk, a2);
        _mm256_maskstore_ps(op + 3 * (size_t)c + c0, mk, a3);
    }
}

/* 3x3 windows, output columns [x_lo, x_hi) of one row whose windows lie
 * wholly inside the input: per block of 8 channels the nine weight vectors
 * stay in registers, so a pixel costs nine loads and nine FMAs. */
__attribute__((target("avx2,fma"))) static void
dw3x3_row_avx2(const hsq_geom *g, const float *img, int iy0, const float *w, const float *bias,
               __m256 lo, __m256 hi, float *orow, int x_lo, int x_hi, __m256i tail) {
    const int c = g->oc;
    const size_t ys = (size_t)g->dh * g->iw * c, xs = (size_t)g->dw * c, ps = (size_t)g->sw * c;
    for (int c0 = 0; c0 < c; c0 += 8) {
        const int full = c - c0 >= 8;
        const __m256i mk = full ? _mm256_set1_epi32(-1) : tail;
        __m256 w0 = _mm256_maskload_ps(w + 0 * (size_t)c + c0, mk);
        __m256 w1 = _mm256_maskload_ps(w + 1 * (size_t)c + c0, mk);
        __m256 w2 = _mm256_maskload_ps(w + 2 * (size_t)c + c0, mk);
        __m256 w3 = _mm256_maskload_ps(w + 3 * (size_t)c + c0, mk);
        __m256 w4 = _mm256_maskload_ps(w + 4 * (size_t)c + c0, mk);
        __m256 w5 = _mm256_maskload_ps(w + 5 * (size_t)c + c0, mk);
        __m256 w6 = _mm256_maskload_ps(w + 6 * (size_t)c + c0, mk);
        __m256 w7 = _mm256_maskload_ps(w + 7 * (size_t)c + c0, mk);
        __m256 w8 = _mm256_maskload_ps(w + 8 * (size_t)c + c0, mk);
        const __m256 bv = bias ? _mm256_maskload_ps(bias + c0, mk) : _mm256_setzero_ps();
        const float *ip = img + ((size_t)iy0 * g->iw + (size_t)(x_lo * g->sw - g->pad_l)) * c + c0;
        float *op = orow + (size_t)x_lo * c + c0;
        if (full) {
            for (int ox = x_lo; ox < x_hi; ox++, ip += ps, op += c) {
                __m256 a = _mm256_fmadd_ps(_mm256_loadu_ps(ip), w0, bv);
                __m256 b = _mm256_mul_ps(_mm256_loadu_ps(ip + ys), w3);
                __m256 d = _mm256_mul_ps(_mm256_loadu_ps(ip + 2 * ys), w6);
                a = _mm256_fmadd_ps(_mm256_loadu_ps(ip + xs), w1, a);
                b = _mm256_fmadd_ps(_mm256_loadu_ps(ip + ys + xs), w4, b);
                d = _mm256_fmadd_ps(_mm256_loadu_ps(ip + 2 * ys + xs), w7, d);
                a = _mm256_fmadd_ps(_mm256_loadu_ps(ip + 2 * xs), w2, a);
                b = _mm256_fmadd_ps(_mm256_loadu_ps(ip + ys + 2 * xs), w5, b);
                d = _mm256_fmadd_ps(_mm256_loadu_ps(ip + 2 * ys + 2 * xs), w8, d);
                a = _mm256_add_ps(_mm256_add_ps(a, b), d);
                _mm256_storeu_ps(op, _mm256_min_ps(_mm256_max_ps(a, lo), hi));
            }
        } else {
            for (int ox = x_lo; ox < x_hi; ox++, ip += ps, op += c) {
#define L(p) _mm256_maskload_ps(p, mk)
                __m256 a = _mm256_fmadd_ps(L(ip), w0, bv);
                __m256 b = _mm256_mul_ps(L(ip + ys), w3);
                __m256 d = _mm256_mul_ps(L(ip + 2 * ys), w6);
                a = _mm256_fmadd_ps(L(ip + xs), w1, a);
                b = _mm256_fmadd_ps(L(ip + ys + xs), w4, b);
                d = _mm256_fmadd_ps(L(ip + 2 * ys + xs), w7, d);
                a = _mm256_fmadd_ps(L(ip + 2 * xs), w2, a);
                b = _mm256_fmadd_ps(L(ip + ys + 2 * xs), w5, b);
                d = _mm256_fmadd_ps(L(ip + 2 * ys + 2 * xs), w8, d);
#undef L
                a = _mm256_add_ps(_mm256_add_ps(a, b), d);
                _mm256_maskstore_ps(op, mk, _mm256_min_ps(_mm256_max_ps(a, lo), hi));
            }
        }
    }
}

/* Depth multiplier 1 only (ic == oc). */
__attribute__((target("avx2,fma"))) static void dw_avx2(const hsq_geom *g, const float *in,
                                                        const float *w, const float *bias,
                                                        hsq_act act, float *out) {
    const int c = g->oc;
    const __m256 lo = _mm256_set1_ps(act.lo), hi = _mm256_set1_ps(act.hi);
    const __m256i tail = lane_mask(c % 8);
    for (int b = 0; b < g->n; b++) {
        const float *img = in + (size_t)b * g->ih * g->iw * c;
        for (int oy = 0; oy < g->oh; oy++) {
            int iy0 = oy * g->sh - g->pad_t;
            /* ky with 0 <= iy0 + ky * dh < ih */
            int ky0 = iy0 < 0 ? (-iy0 + g->dh - 1) / g->dh : 0;
            int ky1 = g->ih - iy0 <= 0 ? 0 : imin(g->kh, (g->ih - iy0 - 1) / g->dh + 1);
            float *orow = out + (((size_t)b * g->oh + (size_t)oy) * g->ow) * c;
            if (g->kh == 3 && g->kw == 3 && ky0 == 0 && ky1 == 3) {
                /* Interior columns: ox * sw - pad_l >= 0 and the last tap
                 * ox * sw - pad_l + 2 * dw <= iw - 1. */
                int xa = (g->pad_l + g->sw - 1) / g->sw;
                int num = g->iw - 1 - 2 * g->dw + g->pad_l;
                int xb = num < 0 ? 0 : imin(num / g->sw + 1, g->ow);
                if (xa < xb) {
                    for (int ox = 0; ox < xa; ox++) {
                        int ix0 = ox * g->sw - g->pad_l;
                        int kx0 = ix0 < 0 ? (-ix0 + g->dw - 1) / g->dw : 0;
                        int kx1 = g->iw - ix0 <= 0 ? 0 : imin(3, (g->iw - ix0 - 1) / g->dw + 1);
                        dw_pixel_avx2(g, img, iy0, ix0, w, bias, lo, hi, orow + (size_t)ox * c, 0,
                                      3, kx0, kx1, tail);
                    }
                    dw3x3_row_avx2(g, img, iy0, w, bias, lo, hi, orow, xa, xb, tail);
                    for (int ox = xb; ox < g->ow; ox++) {
                        int ix0 = ox * g->sw - g->pad_l;
                        int kx0 = ix0 < 0 ? (-ix0 + g->dw - 1) / g->dw : 0;
                        int kx1 = g->iw - ix0 <= 0 ? 0 : imin(3, (g->iw - ix0 - 1) / g->dw + 1);
                        dw_pixel_avx2(g, img, iy0, ix0, w, bias, lo, hi, orow + (size_t)ox * c, 0,
                                      3, kx0, kx1, tail);
                    }
                    continue;
                }
            }
            for (int ox = 0; ox < g->ow;) {
                int ix0 = ox * g->sw - g->pad_l;
                int last = ix0 + 3 * g->sw + (g->kw - 1) * g->dw; /* 4th window's end */
                if (ix0 >= 0 && ox + 4 <= g->ow && last < g->iw) {
                    dw_quad_avx2(g, img, iy0, ix0, w, bias, lo, hi, orow + (size_t)ox * c, ky0, ky1,
                                 tail);
                    ox += 4;
                    continue;
                }
                int kx0 = ix0 < 0 ? (-ix0 + g->dw - 1) / g->dw : 0;
                int kx1 = g->iw - ix0 <= 0 ? 0 : imin(g->kw, (g->iw - ix0 - 1) / g->dw + 1);
                dw_pixel_avx2(g, img, iy0, ix0, w, bias, lo, hi, orow + (size_t)ox * c, ky0, ky1,
                              kx0, kx1, tail);
                ox++;
            }
        }
    }
}
#endif

void hsq_dwconv2d(const hsq_geom *g, const float *in, const float *w, const float *bias,
                  hsq_act act, float *out) {
#if HSQ_HAVE_AVX2_KERNELS
    if (g->oc == g->ic && hsq_ops_simd()) {
        dw_avx2(g, in, w, bias, act, out);
        return;
    }
#endif
    dw_portable(g, in, w, bias, act, out);
}

/* ---- Convolution2DTransposeBias ---- */

int hsq_tconv2d_pack(hsq_wpack *wp, const hsq_geom *g, const float *w, const float *bias) {
    const int oc = g->oc, kk = g->kh * g->kw * oc;
    float *rw = malloc((size_t)kk * (size_t)g->ic * sizeof(float));
    float *rb = malloc((size_t)kk * sizeof(float));
    if (!rw || !rb) {
        free(rw);
        free(rb);
        return HSQ_ENOMEM;
    }
    for (int ky = 0; ky < g->kh; ky++)
        for (int kx = 0; kx < g->kw; kx++)
            for (int o = 0; o < oc; o++) {
                size_t j = ((size_t)ky * g->kw + (size_t)kx) * oc + (size_t)o;
                memcpy(rw + j * g->ic, w + (((size_t)o * g->kh + ky) * g->kw + kx) * g->ic,
                       (size_t)g->ic * sizeof(float));
                rb[j] = bias ? bias[o] : 0.0f;
            }
    int rc = hsq_wpack_init(wp, rw, hsq_tconv2d_tiles(g) ? rb : NULL, kk, g->ic);
    free(rw);
    free(rb);
    return rc;
}

size_t hsq_tconv2d_scratch(const hsq_geom *g) { return (size_t)MC * (size_t)g->oc * g->kh * g->kw; }

int hsq_tconv2d_tiles(const hsq_geom *g) {
    return g->kh == g->sh && g->kw == g->sw && g->pad_t == 0 && g->pad_l == 0 &&
           g->oh == g->ih * g->sh && g->ow == g->iw * g->sw;
}

/* Each input pixel times the weights viewed as a [kh*kw*oc][ic] matrix gives
 * its kh x kw x oc contribution (one GEMM per chunk of pixels). When the
 * windows tile the output exactly (kernel = stride, no padding: the case in
 * hsq's model) each output pixel gets exactly one contribution and the GEMM
 * carries the bias, so the result is copied out row by row; otherwise the
 * contributions are added into an output that starts as the bias, and
 * overlapping windows simply add up. Weight row order is (ky, kx, o), so one
 * kernel row of a contribution is kw * oc contiguous output floats. */
void hsq_tconv2d(const hsq_geom *g, const float *in, const hsq_wpack *w, const float *bias,
                 hsq_act act, float *out, float *scratch) {
    const int oc = g->oc, kk = g->kh * g->kw * oc, krow = g->kw * oc;
    const size_t opix = (size_t)g->oh * g->ow;
    const float *rows[MC];
    if (hsq_tconv2d_tiles(g)) {
        for (int b = 0; b < g->n; b++) {
            float *ob = out + (size_t)b * opix * oc;
            const float *ib = in + (size_t)b * g->ih * g->iw * g->ic;
            const size_t m = (size_t)g->ih * g->iw;
            int iy = 0, ix = 0;
            for (size_t m0 = 0; m0 < m; m0 += MC) {
                int mc = m - m0 < MC ? (int)(m - m0) : MC;
                for (int i = 0; i < mc; i++)
                    rows[i] = ib + (m0 + (size_t)i) * g->ic;
                hsq_gemm(mc, 1, rows, w, act, scratch, (size_t)kk);
                for (int i = 0; i < mc; i++, ix = ix + 1 == g->iw ? (iy++, 0) : ix + 1) {
                    const float *src = scratch + (size_t)i * kk;
                    float *dst = ob + ((size_t)iy * g->sh * g->ow + (size_t)ix * g->sw) * oc;
                    for (int ky = 0; ky < g->kh; ky++, src += krow, dst += (size_t)g->ow * oc)
                        for (int j = 0; j < krow; j++)
                            dst[j] = src[j];
                }
            }
        }
        return;
    }
    for (int b = 0; b < g->n; b++) {
        float *ob = out + (size_t)b * opix * oc;
        const float *ib = in + (size_t)b * g->ih * g->iw * g->ic;
        for (size_t p = 0; p < opix; p++)
            for (int o = 0; o < oc; o++)
                ob[p * oc + (size_t)o] = bias ? bias[o] : 0.0f;
        const size_t m = (size_t)g->ih * g->iw;
        int iy = 0, ix = 0; /* input pixel of the chunk's first row */
        for (size_t m0 = 0; m0 < m; m0 += MC) {
            int mc = m - m0 < MC ? (int)(m - m0) : MC;
            for (int i = 0; i < mc; i++)
                rows[i] = ib + (m0 + (size_t)i) * g->ic;
            hsq_gemm(mc, 1, rows, w, hsq_act_none(), scratch, (size_t)kk);
            for (int i = 0; i < mc; i++, ix = ix + 1 == g->iw ? (iy++, 0) : ix + 1) {
                const float *src = scratch + (size_t)i * kk; /* [ky][kx][o] */
                for (int ky = 0; ky < g->kh; ky++) {
                    int oy = iy * g->sh + ky - g->pad_t;
                    if (oy < 0 || oy >= g->oh)
                        continue;
                    for (int kx = 0; kx < g->kw; kx++) {
                        int ox = ix * g->sw + kx - g->pad_l;
                        if (ox < 0 || ox >= g->ow)
                            continue;
                        float *op = ob + ((size_t)oy * g->ow + (size_t)ox) * oc;
                        const float *sp = src + ((size_t)ky * g->kw + (size_t)kx) * oc;
                        for (int o = 0; o < oc; o++)
                            op[o] += sp[o];
                    }
                }
            }
        }
        if (act.lo > -INFINITY || act.hi < INFINITY)
            for (size_t p = 0; p < opix * (size_t)oc; p++)
                ob[p] = clampf(ob[p], act);
    }
}

/* ---- pooling ---- */

ALWAYS_INLINE void pool_body(const hsq_geom *g, int is_max, const float *in, hsq_act act,
                             float *out) {
    const int c = g->ic;
    for (int b = 0; b < g->n; b++)
        for (int oy = 0; oy < g->oh; oy++) {
            int iy0 = oy * g->sh - g->pad_t;
            int y0 = imax(iy0, 0), y1 = imin(iy0 + g->kh, g->ih);
            for (int ox = 0; ox < g->ow; ox++) {
                int ix0 = ox * g->sw - g->pad_l;
                int x0 = imax(ix0, 0), x1 = imin(ix0 + g->kw, g->iw);
                float *restrict op =
                    out + (((size_t)b * g->oh + (size_t)oy) * g->ow + (size_t)ox) * c;
                for (int i = 0; i < c; i++)
                    op[i] = is_max ? -INFINITY : 0.0f;
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++) {
                        const float *restrict ip =
                            in + (((size_t)b * g->ih + (size_t)y) * g->iw + (size_t)x) * c;
                        if (is_max) {
                            for (int i = 0; i < c; i++)
                                op[i] = ip[i] > op[i] ? ip[i] : op[i];
                        } else {
                            for (int i = 0; i < c; i++)
                                op[i] += ip[i];
                        }
                    }
                int cnt = (y1 - y0) * (x1 - x0);
                float scale = !is_max && cnt > 0 ? 1.0f / (float)cnt : 1.0f;
                for (int i = 0; i < c; i++)
                    op[i] = clampf(is_max ? op[i] : op[i] * scale, act);
            }
        }
}

DISPATCH(pool, (const hsq_geom *g, int is_max, const float *in, hsq_act act, float *out),
         (g, is_max, in, act, out))

void hsq_pool2d(const hsq_geom *g, int is_max, const float *in, hsq_act act, float *out) {
    pool(g, is_max, in, act, out);
}

/* ---- elementwise ---- */

ALWAYS_INLINE float bin(int op, float x, float y) { return op == HSQ_BIN_ADD ? x + y : x * y; }

ALWAYS_INLINE void binary_body(int op, const int ad[4], const float *a, const int bd[4],
                               const float *b, const int od[4], hsq_act act, float *out) {
    size_t as[4], bs[4], sa = 1, sb = 1;
    for (int d = 3; d >= 0; d--) {
        as[d] = ad[d] == 1 && od[d] != 1 ? 0 : sa;
        bs[d] = bd[d] == 1 && od[d] != 1 ? 0 : sb;
        sa *= (size_t)ad[d];
        sb *= (size_t)bd[d];
    }
    const int n3 = od[3];
    if (memcmp(ad, od, 4 * sizeof(int)) == 0 && memcmp(bd, od, 4 * sizeof(int)) == 0) {
        size_t n = (size_t)od[0] * od[1] * od[2] * od[3];
        if (op == HSQ_BIN_ADD)
            for (size_t i = 0; i < n; i++)
                out[i] = clampf(a[i] + b[i], act);
        else
            for (size_t i = 0; i < n; i++)
                out[i] = clampf(a[i] * b[i], act);
        return;
    }
    float *restrict o = out;
    for (int i0 = 0; i0 < od[0]; i0++)
        for (int i1 = 0; i1 < od[1]; i1++)
            for (int i2 = 0; i2 < od[2]; i2++) {
                const float *restrict pa = a + i0 * as[0] + i1 * as[1] + i2 * as[2];
                const float *restrict pb = b + i0 * bs[0] + i1 * bs[1] + i2 * bs[2];
                if (as[3] && bs[3]) {
                    for (int j = 0; j < n3; j++)
                        o[j] = clampf(bin(op, pa[j], pb[j]), act);
                } else if (as[3]) {
                    for (int j = 0; j < n3; j++)
                        o[j] = clampf(bin(op, pa[j], pb[0]), act);
                } else if (bs[3]) {
                    for (int j = 0; j < n3; j++)
                        o[j] = clampf(bin(op, pa[0], pb[j]), act);
                } else {
                    for (int j = 0; j < n3; j++)
                        o[j] = clampf(bin(op, pa[0], pb[0]), act);
                }
                o += n3;
            }
}

DISPATCH(binary,
         (int op, const int ad[4], const float *a, const int bd[4], const float *b, const int od[4],
          hsq_act act, float *out),
         (op, ad, a, bd, b, od, act, out))

void hsq_binary(int op, const int ad[4], const float *a, const int bd[4], const float *b,
                const int od[4], hsq_act act, float *out) {
    binary(op, ad, a, bd, b, od, act, out);
}

/* e^x with about 1 ulp of error over the float range, in straight-line
 * arithmetic that vectorizes (libm's expf is a call per element): x = n ln2
 * + r with |r| <= ln2/2, e^r by its degree-7 Taylor polynomial (truncation
 * error < 3e-9 relative), 2^n built in the exponent bits. Results below
 * 2^-126 flush to 0 and inputs over 88.7 clamp to about 3.4e38. */
ALWAYS_INLINE float exp_approx(float x) {
    x = x < -87.33f ? -87.33f : (x > 88.7f ? 88.7f : x);
    /* round(x / ln2) by the 1.5 * 2^23 trick (round-to-nearest mode). */
    float t = x * 1.44269504f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = x - n * 0.693145752f; /* ln2 split in two for exactness */
    r = r - n * 1.42860677e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t e = (int32_t)n + 127;
    union {
        uint32_t u;
        float f;
    } s = {.u = (uint32_t)e << 23};
    return p * s.f;
}

ALWAYS_INLINE void unary_body(int op, hsq_act act, const float *in, size_t n, float *out) {
    switch (op) {
    case HSQ_UN_CLAMP:
        for (size_t i = 0; i < n; i++)
            out[i] = clampf(in[i], act);
        break;
    case HSQ_UN_HSWISH:
        /* TFLite: x * relu6(x + 3) / 6 */
        for (size_t i = 0; i < n; i++) {
            float x = in[i], r = x + 3.0f;
            r = r < 0.0f ? 0.0f : (r > 6.0f ? 6.0f : r);
            out[i] = clampf(x * r / 6.0f, act);
        }
        break;
    case HSQ_UN_LOGISTIC:
        for (size_t i = 0; i < n; i++)
            out[i] = clampf(1.0f / (1.0f + exp_approx(-in[i])), act);
        break;
    }
}

DISPATCH(unary, (int op, hsq_act act, const float *in, size_t n, float *out), (op, act, in, n, out))

void hsq_unary(int op, hsq_act act, const float *in, size_t n, float *out) {
    unary(op, act, in, n, out);
}

/* ---- data movement ---- */

void hsq_pad4(const int id[4], const int before[4], const int od[4], const float *in, float *out) {
    size_t total = (size_t)od[0] * od[1] * od[2] * od[3];
    memset(out, 0, total * sizeof(float));
    for (int i0 = 0; i0 < id[0]; i0++)
        for (int i1 = 0; i1 < id[1]; i1++)
            for (int i2 = 0; i2 < id[2]; i2++) {
                const float *src =
                    in + (((size_t)i0 * id[1] + (size_t)i1) * id[2] + (size_t)i2) * id[3];
                float *dst =
                    out + ((((size_t)(i0 + before[0]) * od[1] + (size_t)(i1 + before[1])) * od[2] +
                            (size_t)(i2 + before[2])) *
                               od[3] +
                           (size_t)before[3]);
                memcpy(dst, src, (size_t)id[3] * sizeof(float));
            }
}

void hsq_concat(size_t outer, int nin, const float *const *in, const size_t *inner, float *out) {
    for (size_t o = 0; o < outer; o++)
        for (int i = 0; i < nin; i++) {
            memcpy(out, in[i] + o * inner[i], inner[i] * sizeof(float));
            out += inner[i];
        }
}

/* TFLite's interpolation bookkeeping for one axis. */
ALWAYS_INLINE void lerp_axis(int dst, float scale, int half_pixel, int in, int *i0, int *i1,
                             float *f) {
    float v = half_pixel ? ((float)dst + 0.5f) * scale - 0.5f : (float)dst * scale;
    float fl = floorf(v);
    int lo = (int)fl;
    *i0 = lo < 0 ? 0 : (lo > in - 1 ? in - 1 : lo);
    int hi = (int)ceilf(v);
    *i1 = hi > in - 1 ? in - 1 : (hi < 0 ? 0 : hi);
    *f = v - (float)*i0;
    if (*i0 == *i1)
        *f = 0.0f;
}

ALWAYS_INLINE void resize_body(int n, int ih, int iw, int c, int oh, int ow, int align_corners,
                               int half_pixel, const float *in, float *out) {
    enum { XCHUNK = 256 };
    int x0s[XCHUNK], x1s[XCHUNK];
    float fxs[XCHUNK];
    float sy = align_corners && oh > 1 ? (float)(ih - 1) / (float)(oh - 1) : (float)ih / (float)oh;
    float sx = align_corners && ow > 1 ? (float)(iw - 1) / (float)(ow - 1) : (float)iw / (float)ow;
    for (int xc = 0; xc < ow; xc += XCHUNK) {
        int xn = imin(XCHUNK, ow - xc);
        for (int j = 0; j < xn; j++)
            lerp_axis(xc + j, sx, half_pixel, iw, &x0s[j], &x1s[j], &fxs[j]);
        for (int b = 0; b < n; b++)
            for (int oy = 0; oy < oh; oy++) {
                int y0, y1;
                float fy;
                lerp_axis(oy, sy, half_pixel, ih, &y0, &y1, &fy);
                const float *r0 = in + ((size_t)b * ih + (size_t)y0) * iw * c;
                const float *r1 = in + ((size_t)b * ih + (size_t)y1) * iw * c;
                float *orow = out + (((size_t)b * oh + (size_t)oy) * ow + (size_t)xc) * c;
                for (int j = 0; j < xn; j++) {
                    const float *restrict p00 = r0 + (size_t)x0s[j] * c;
                    const float *restrict p01 = r0 + (size_t)x1s[j] * c;
                    const float *restrict p10 = r1 + (size_t)x0s[j] * c;
                    const float *restrict p11 = r1 + (size_t)x1s[j] * c;
                    float *restrict op = orow + (size_t)j * c;
                    float fx = fxs[j];
                    float w00 = (1 - fy) * (1 - fx), w01 = (1 - fy) * fx, w10 = fy * (1 - fx),
                          w11 = fy * fx;
                    for (int i = 0; i < c; i++)
                        op[i] = p00[i] * w00 + p01[i] * w01 + p10[i] * w10 + p11[i] * w11;
                }
            }
    }
}

DISPATCH(resize,
         (int n, int ih, int iw, int c, int oh, int ow, int align_corners, int half_pixel,
          const float *in, float *out),
         (n, ih, iw, c, oh, ow, align_corners, half_pixel, in, out))

void hsq_resize_bilinear(int n, int ih, int iw, int c, int oh, int ow, int align_corners,
                         int half_pixel, const float *in, float *out) {
    resize(n, ih, iw, c, oh, ow, align_corners, half_pixel, in, out);
}
