/* gemm.c - the matrix multiply under every CONV_2D: C = act(A * W + bias).
 *
 * DESIGN. The convolutions in hsq's models are small in K (input channels,
 * or kh * kw * ic after im2col: 16..128, 27, 75) and in N (output channels,
 * 1..128) but long in M (pixels x batch). So the weights are packed once at
 * load into panels of K x 16 floats that stay in L1 while a chunk of A rows
 * streams past, and A is not packed at all: the microkernel reads six rows
 * through pointers and keeps a 6 x 16 tile of C in twelve AVX registers. A
 * row may come in segments (K = nseg x seglen, one pointer per segment):
 * a KxK conv's patch is kh runs of kw x ic contiguous input floats, so
 * interior pixels are read straight from the input with no im2col copy, and
 * a 1x1 conv with stride 2 skips pixels the same way. A short tile (fewer rows or columns) is
 * computed in full with repeated row pointers and zero-padded weights, then only its valid part is
 * stored.
 *
 * There are two kernels with the same contract: AVX2+FMA intrinsics, chosen
 * at run time when the CPU has them, and a portable C kernel that gcc
 * vectorizes with whatever the target offers (SSE2 on baseline x86-64). The
 * binary itself never needs more than the baseline ISA.
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

#define MR 6
#define NR HSQ_GEMM_NR

static int force_portable;

void hsq_ops_force_portable(int on) { force_portable = on != 0; }

int hsq_ops_simd(void) {
#if HSQ_HAVE_AVX2_KERNELS
    return !force_portable && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

hsq_act hsq_act_none(void) {
    hsq_act a = {-INFINITY, INFINITY};
    return a;
}

int hsq_wpack_init(hsq_wpack *w, const float *ohwi, const float *bias, int oc, int k) {
    memset(w, 0, sizeof *w);
    int np = (oc + NR - 1) / NR;
    size_t n = (size_t)np * (size_t)k * NR;
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    size_t bbytes = ((size_t)np * NR * sizeof(float) + 63) / 64 * 64;
    w->panels = aligned_alloc(64, bytes ? bytes : 64);
    w->bias = aligned_alloc(64, bbytes ? bbytes : 64);
    if (!w->panels || !w->bias) {
        hsq_wpack_free(w);
        return HSQ_ENOMEM;
    }
    memset(w->panels, 0, bytes);
    memset(w->bias, 0, bbytes);
    for (int o = 0; o < oc; o++) {
        float *panel = w->panels + (size_t)(o / NR) * (size_t)k * NR;
        for (int p = 0; p < k; p++)
            panel[(size_t)p * NR + (size_t)(o % NR)] = ohwi[(size_t)o * (size_t)k + (size_t)p];
        if (bias)
            w->bias[o] = bias[o];
    }
    w->k = k;
    w->oc = oc;
    w->npanels = np;
    return 0;
}

void hsq_wpack_free(hsq_wpack *w) {
    free(w->panels);
    free(w->bias);
    memset(w, 0, sizeof *w);
}

/* Store the valid mr x nr corner of a full tile. */
static void store_tile(const float tile[MR][NR], float *c, size_t ldc, int mr, int nr) {
    for (int i = 0; i < mr; i++)
        memcpy(c + (size_t)i * ldc, tile[i], (size_t)nr * sizeof(float));
}

/* Portable kernel: a 6 x 16 tile in a local array; the j loops vectorize.
 * a holds nseg x MR pointers, segment-major. */
static void ukr_c(int nseg, int seglen, const float *const *a, const float *b, const float *bias,
                  hsq_act act, float *c, size_t ldc, int mr, int nr) {
    float acc[MR][NR];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++)
            acc[i][j] = bias[j];
    for (int s = 0; s < nseg; s++, a += MR)
        for (int p = 0; p < seglen; p++, b += NR) {
            for (int i = 0; i < MR; i++) {
                float av = a[i][p];
                for (int j = 0; j < NR; j++)
                    acc[i][j] += av * b[j];
            }
        }
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) {
            float v = acc[i][j];
            v = v < act.lo ? act.lo : v;
            acc[i][j] = v > act.hi ? act.hi : v;
        }
    store_tile((const float(*)[NR])acc, c, ldc, mr, nr);
}

#if HSQ_HAVE_AVX2_KERNELS
__attribute__((target("avx2,fma"))) static void ukr_avx2(int nseg, int seglen,
                                                         const float *const *a, const float *b,
                                                         const float *bias, hsq_act act, float *c,
                                                         size_t ldc, int mr, int nr) {
    __m256 b0 = _mm256_load_ps(bias), b1 = _mm256_load_ps(bias + 8);
    __m256 c00 = b0, c01 = b1, c10 = b0, c11 = b1, c20 = b0, c21 = b1;
    __m256 c30 = b0, c31 = b1, c40 = b0, c41 = b1, c50 = b0, c51 = b1;
    for (int s = 0; s < nseg; s++, a += MR) {
        const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
        for (int p = 0; p < seglen; p++) {
            b0 = _mm256_load_ps(b);
            b1 = _mm256_load_ps(b + 8);
            b += NR;
            __m256 x = _mm256_broadcast_ss(a0 + p);
            c00 = _mm256_fmadd_ps(x, b0, c00);
            c01 = _mm256_fmadd_ps(x, b1, c01);
            x = _mm256_broadcast_ss(a1 + p);
            c10 = _mm256_fmadd_ps(x, b0, c10);
            c11 = _mm256_fmadd_ps(x, b1, c11);
            x = _mm256_broadcast_ss(a2 + p);
            c20 = _mm256_fmadd_ps(x, b0, c20);
            c21 = _mm256_fmadd_ps(x, b1, c21);
            x = _mm256_broadcast_ss(a3 + p);
            c30 = _mm256_fmadd_ps(x, b0, c30);
            c31 = _mm256_fmadd_ps(x, b1, c31);
            x = _mm256_broadcast_ss(a4 + p);
            c40 = _mm256_fmadd_ps(x, b0, c40);
            c41 = _mm256_fmadd_ps(x, b1, c41);
            x = _mm256_broadcast_ss(a5 + p);
            c50 = _mm256_fmadd_ps(x, b0, c50);
            c51 = _mm256_fmadd_ps(x, b1, c51);
        }
    }
    const __m256 lo = _mm256_set1_ps(act.lo), hi = _mm256_set1_ps(act.hi);
#define CLAMP(v) v = _mm256_min_ps(_mm256_max_ps(v, lo), hi)
    CLAMP(c00);
    CLAMP(c01);
    CLAMP(c10);
    CLAMP(c11);
    CLAMP(c20);
    CLAMP(c21);
    CLAMP(c30);
    CLAMP(c31);
    CLAMP(c40);
    CLAMP(c41);
    CLAMP(c50);
    CLAMP(c51);
#undef CLAMP
    if (mr == MR && nr == NR) {
        _mm256_storeu_ps(c, c00);
        _mm256_storeu_ps(c + 8, c01);
        c += ldc;
        _mm256_storeu_ps(c, c10);
        _mm256_storeu_ps(c + 8, c11);
        c += ldc;
        _mm256_storeu_ps(c, c20);
        _mm256_storeu_ps(c + 8, c21);
        c += ldc;
        _mm256_storeu_ps(c, c30);
        _mm256_storeu_ps(c + 8, c31);
        c += ldc;
        _mm256_storeu_ps(c, c40);
        _mm256_storeu_ps(c + 8, c41);
        c += ldc;
        _mm256_storeu_ps(c, c50);
        _mm256_storeu_ps(c + 8, c51);
        return;
    }
    float tile[MR][NR];
    _mm256_storeu_ps(tile[0], c00);
    _mm256_storeu_ps(tile[0] + 8, c01);
    _mm256_storeu_ps(tile[1], c10);
    _mm256_storeu_ps(tile[1] + 8, c11);
    _mm256_storeu_ps(tile[2], c20);
    _mm256_storeu_ps(tile[2] + 8, c21);
    _mm256_storeu_ps(tile[3], c30);
    _mm256_storeu_ps(tile[3] + 8, c31);
    _mm256_storeu_ps(tile[4], c40);
    _mm256_storeu_ps(tile[4] + 8, c41);
    _mm256_storeu_ps(tile[5], c50);
    _mm256_storeu_ps(tile[5] + 8, c51);
    store_tile((const float(*)[NR])tile, c, ldc, mr, nr);
}
#endif

typedef void (*ukr_fn)(int, int, const float *const *, const float *, const float *, hsq_act,
                       float *, size_t, int, int);

void hsq_gemm(int m, int nseg, const float *const *rows, const hsq_wpack *w, hsq_act act, float *c,
              size_t ldc) {
    ukr_fn ukr = ukr_c;
#if HSQ_HAVE_AVX2_KERNELS
    if (hsq_ops_simd())
        ukr = ukr_avx2;
#endif
    const size_t psize = (size_t)w->k * NR;
    const int seglen = w->k / nseg;
    const float *a[HSQ_GEMM_MAXSEG * MR];
    for (int pn = 0; pn < w->npanels; pn++) {
        const float *panel = w->panels + (size_t)pn * psize;
        const float *bias = w->bias + (size_t)pn * NR;
        int nr = w->oc - pn * NR < NR ? w->oc - pn * NR : NR;
        for (int i0 = 0; i0 < m; i0 += MR) {
            int mr = m - i0 < MR ? m - i0 : MR;
            for (int i = 0; i < MR; i++) {
                const float *const *r = rows + (size_t)(i0 + (i < mr ? i : 0)) * nseg;
                for (int s = 0; s < nseg; s++)
                    a[s * MR + i] = r[s];
            }
            ukr(nseg, seglen, a, panel, bias, act, c + (size_t)i0 * ldc + (size_t)pn * NR, ldc, mr,
                nr);
        }
    }
}
