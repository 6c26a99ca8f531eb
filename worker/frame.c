/* frame.c - eye levelling and head-and-shoulders framing (see frame.h). */
#include "worker/frame.h"

#include "schemas/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The fast path's AVX2 version on x86 with gcc/clang, chosen at run time
 * (-DFRAME_AVX2=0 builds the portable one alone, as on other CPUs). */
#ifndef FRAME_AVX2
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define FRAME_AVX2 1
#else
#define FRAME_AVX2 0
#endif
#endif
#if FRAME_AVX2
#include <immintrin.h>
#endif

const hsq_frame_preset hsq_frame_presets[] = {
    {"portrait", 1024, 1280, 0},
    {"square", 1024, 1024, 0},
    {"passport", 600, 600, 300},
    {NULL, 0, 0, 0},
};

const hsq_frame_preset *hsq_frame_preset_find(const char *name) {
    for (const hsq_frame_preset *p = hsq_frame_presets; p->name; p++)
        if (strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

hsq_frame_rule hsq_frame_rule_for(uint32_t w, uint32_t h) {
    float a = (float)w / (float)h;
    if (a < 0.9f)
        return (hsq_frame_rule){0.37f, 0.36f, 0};
    if (a <= 1.1f)
        return (hsq_frame_rule){0.42f, 0.40f, 0};
    return (hsq_frame_rule){0.40f, 0.36f, 1};
}

float hsq_frame_face_px(uint32_t w, uint32_t h) {
    hsq_frame_rule r = hsq_frame_rule_for(w, h);
    return r.face_w * (float)(r.by_height ? h : w);
}

int hsq_frame_plan(const hsq_face *s, uint32_t w, uint32_t h, hsq_frame_xf *xf) {
    float fw = s->x1 - s->x0;
    if (w == 0 || h == 0 || !(fw > 1.0f) || !(s->y1 - s->y0 > 1.0f))
        return HSQ_EINVAL;
    const hsq_face_pt *re = &s->kp[HSQ_FACE_KP_REYE], *le = &s->kp[HSQ_FACE_KP_LEYE];
    float ex = le->x - re->x, ey = le->y - re->y, el = sqrtf(ex * ex + ey * ey);
    float ux = 1.0f, uy = 0.0f;
    if (el > 1e-3f) {
        ux = ex / el;
        uy = ey / el;
    }
    if (ux < 0.0f) { /* a face upside down is not what we level; keep upright */
        ux = 1.0f;
        uy = 0.0f;
    }
    /* Eye midpoint, and the box centre's offset along the eye line: the anchor
     * is on the eye line, below/above the box centre. */
    float mx = (re->x + le->x) / 2, my = (re->y + le->y) / 2;
    float cx = (s->x0 + s->x1) / 2, cy = (s->y0 + s->y1) / 2;
    float along = (cx - mx) * ux + (cy - my) * uy;
    hsq_frame_rule r = hsq_frame_rule_for(w, h);
    xf->w = w;
    xf->h = h;
    xf->angle = atan2f(uy, ux);
    xf->scale = hsq_frame_face_px(w, h) / fw;
    xf->ax = mx + along * ux;
    xf->ay = my + along * uy;
    xf->ox = (float)w / 2;
    xf->oy = r.eye_y * (float)h;
    xf->ux = ux;
    xf->uy = uy;
    return 0;
}

/* Output (ox, oy) -> photo: d = (o - anchor_out) / scale in the levelled
 * frame, then rotated back: src = anchor + d.x * u + d.y * v, v = (-uy, ux). */
void hsq_frame_to_src(const hsq_frame_xf *xf, float ox, float oy, float *sx, float *sy) {
    float dx = (ox - xf->ox) / xf->scale, dy = (oy - xf->oy) / xf->scale;
    *sx = xf->ax + dx * xf->ux - dy * xf->uy;
    *sy = xf->ay + dx * xf->uy + dy * xf->ux;
}

void hsq_frame_to_out(const hsq_frame_xf *xf, float sx, float sy, float *ox, float *oy) {
    float px = sx - xf->ax, py = sy - xf->ay;
    float dx = px * xf->ux + py * xf->uy, dy = -px * xf->uy + py * xf->ux;
    *ox = xf->ox + dx * xf->scale;
    *oy = xf->oy + dy * xf->scale;
}

void hsq_frame_face_to_out(const hsq_frame_xf *xf, const hsq_face *in, hsq_face *out) {
    float xs[4] = {in->x0, in->x1, in->x0, in->x1}, ys[4] = {in->y0, in->y0, in->y1, in->y1};
    hsq_face o = *in;
    o.x0 = o.y0 = INFINITY;
    o.x1 = o.y1 = -INFINITY;
    for (int k = 0; k < 4; k++) {
        float x, y;
        hsq_frame_to_out(xf, xs[k], ys[k], &x, &y);
        o.x0 = fminf(o.x0, x);
        o.y0 = fminf(o.y0, y);
        o.x1 = fmaxf(o.x1, x);
        o.y1 = fmaxf(o.y1, y);
    }
    for (int k = 0; k < HSQ_FACE_KP_COUNT; k++)
        hsq_frame_to_out(xf, in->kp[k].x, in->kp[k].y, &o.kp[k].x, &o.kp[k].y);
    *out = o;
}

/* Bilinear at continuous photo point (x, y) (pixel centres at +0.5), clamped
 * to the edge; accumulates into acc. Returns 1 when the point is inside. */
static int sample(const hsq_img *src, float x, float y, float acc[3]) {
    int inside = x >= 0.0f && y >= 0.0f && x < (float)src->w && y < (float)src->h;
    float fx = x - 0.5f, fy = y - 0.5f;
    float mx = (float)(src->w - 1), my = (float)(src->h - 1);
    fx = fx < 0 ? 0 : fx > mx ? mx : fx;
    fy = fy < 0 ? 0 : fy > my ? my : fy;
    uint32_t x0 = (uint32_t)fx, y0 = (uint32_t)fy;
    uint32_t x1 = x0 + 1 < src->w ? x0 + 1 : x0, y1 = y0 + 1 < src->h ? y0 + 1 : y0;
    float ax = fx - (float)x0, ay = fy - (float)y0;
    const uint8_t *r0 = src->rgb + (size_t)y0 * src->w * 3,
                  *r1 = src->rgb + (size_t)y1 * src->w * 3;
    for (int c = 0; c < 3; c++) {
        float a = r0[x0 * 3 + c] + (r0[x1 * 3 + c] - r0[x0 * 3 + c]) * ax;
        float b = r1[x0 * 3 + c] + (r1[x1 * 3 + c] - r1[x0 * 3 + c]) * ax;
        acc[c] += a + (b - a) * ay;
    }
    return inside;
}

/* hsq_frame_to_src, inlined into the render loop (the same expression, so
 * the same result). */
static inline void to_src(const hsq_frame_xf *xf, float ox, float oy, float *sx, float *sy) {
    float dx = (ox - xf->ox) / xf->scale, dy = (oy - xf->oy) / xf->scale;
    *sx = xf->ax + dx * xf->ux - dy * xf->uy;
    *sy = xf->ay + dx * xf->uy + dy * xf->ux;
}

/* The bilinear sample of a point whose four taps are inside the photo, in
 * 8-bit fixed point: weights in 1/256ths, the result in 1/65536ths of a
 * level, added to acc. The clamped float path (sample()) stays for pixels
 * near the photo's edge; the two agree to within 1/128 of a level. */
static inline void sample_in(const uint8_t *rgb, size_t stride, float x, float y, int32_t acc[3]) {
    float fx = x - 0.5f, fy = y - 0.5f;
    int32_t x0 = (int32_t)fx, y0 = (int32_t)fy;
    int32_t wx = (int32_t)((fx - (float)x0) * 256.0f + 0.5f);
    int32_t wy = (int32_t)((fy - (float)y0) * 256.0f + 0.5f);
    const uint8_t *a0 = rgb + (size_t)y0 * stride + (size_t)x0 * 3, *b0 = a0 + stride;
    for (int c = 0; c < 3; c++) {
        int32_t t = a0[c] * 256 + (a0[3 + c] - a0[c]) * wx;
        int32_t u = b0[c] * 256 + (b0[3 + c] - b0[c]) * wx;
        acc[c] += t * 256 + (u - t) * wy;
    }
}

/* What one row of the fast path needs: the photo, the row's first pixel
 * centre in the photo and the step per output pixel, the samples' offsets
 * from the centre, and the rounding division of the sum. */
typedef struct {
    const uint8_t *rgb;
    size_t stride;
    float cx0, cy0, kxx, kyx;
    const float *offx, *offy;
    int nss;
    uint32_t half;  /* nss * 32768: rounds the sum to nearest */
    uint32_t recip; /* ceil(2^20 / nss): see div_sum */
} fast_row;

/* (acc + half) / (nss * 65536) without a division: floor(floor(a / 65536) /
 * nss) is floor(a / (65536 nss)), and v = (acc + half) >> 16 <= 16 * 255 + 8,
 * so v * ceil(2^20 / nss) >> 20 overshoots v / nss by less than 4088 / 2^20,
 * too little to cross the next integer (v / nss is at least 1 / nss below
 * it): exact. An integer division per channel was a third of the render. */
static inline uint32_t div_sum(const fast_row *f, int32_t acc) {
    return (((uint32_t)acc + f->half) >> 16) * f->recip >> 20;
}

/* Output pixels [x0, x1) of a row whose samples are all inside: the scalar
 * version, for CPUs without AVX2 and for the ends of a run. */
static void fast_run_c(const fast_row *f, uint32_t x0, uint32_t x1, uint8_t *o) {
    for (uint32_t x = x0; x < x1; x++) {
        float cx = f->cx0 + (float)x * f->kxx, cy = f->cy0 + (float)x * f->kyx;
        int32_t acc[3] = {0, 0, 0};
        for (int k = 0; k < f->nss; k++)
            sample_in(f->rgb, f->stride, cx + f->offx[k], cy + f->offy[k], acc);
        for (int c = 0; c < 3; c++)
            o[(size_t)x * 3 + c] = (uint8_t)div_sum(f, acc[c]);
    }
}

#if FRAME_AVX2
/* fast_run_c for 8 output pixels at a time: the same float operations in the
 * same order (so the same tap and weights) and the same integer sums, so the
 * same bytes; the taps are gathered as 32-bit words (R G B of a pixel and the
 * next pixel's R; the margin of the fast path keeps the word inside). */
__attribute__((target("avx2"))) static void fast_run_avx2(const fast_row *f, uint32_t x0,
                                                          uint32_t x1, uint8_t *o) {
    const __m256 lane = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 half_px = _mm256_set1_ps(0.5f), k256 = _mm256_set1_ps(256.0f);
    const __m256i mask = _mm256_set1_epi32(0xff), stride = _mm256_set1_epi32((int)f->stride);
    const __m256i half = _mm256_set1_epi32((int)f->half), recip = _mm256_set1_epi32((int)f->recip);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i unperm = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    uint32_t x = x0;
    for (; x + 8 <= x1; x += 8) {
        __m256 xs = _mm256_add_ps(_mm256_set1_ps((float)x), lane); /* exact below 2^24 */
        __m256 cx =
            _mm256_add_ps(_mm256_set1_ps(f->cx0), _mm256_mul_ps(xs, _mm256_set1_ps(f->kxx)));
        __m256 cy =
            _mm256_add_ps(_mm256_set1_ps(f->cy0), _mm256_mul_ps(xs, _mm256_set1_ps(f->kyx)));
        __m256i acc[3] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int k = 0; k < f->nss; k++) {
            __m256 fx = _mm256_sub_ps(_mm256_add_ps(cx, _mm256_set1_ps(f->offx[k])), half_px);
            __m256 fy = _mm256_sub_ps(_mm256_add_ps(cy, _mm256_set1_ps(f->offy[k])), half_px);
            __m256i ix = _mm256_cvttps_epi32(fx), iy = _mm256_cvttps_epi32(fy);
            __m256i wx = _mm256_cvttps_epi32(_mm256_add_ps(
                _mm256_mul_ps(_mm256_sub_ps(fx, _mm256_cvtepi32_ps(ix)), k256), half_px));
            __m256i wy = _mm256_cvttps_epi32(_mm256_add_ps(
                _mm256_mul_ps(_mm256_sub_ps(fy, _mm256_cvtepi32_ps(iy)), k256), half_px));
            __m256i idx = _mm256_add_epi32(_mm256_mullo_epi32(iy, stride),
                                           _mm256_add_epi32(ix, _mm256_add_epi32(ix, ix)));
            /* Two 64-bit words per sample (bytes 0-7 from the tap: R G B of
             * both pixels) instead of four 32-bit ones: a gather costs per
             * element. Lanes come out as samples 0 4 1 5 2 6 3 7 (perm). */
            uint32_t ia[8];
            uint64_t wa[8], wb[8];
            _mm256_storeu_si256((__m256i *)(void *)ia, idx);
            for (int i = 0; i < 8; i++) {
                memcpy(&wa[i], f->rgb + ia[i], 8);
                memcpy(&wb[i], f->rgb + f->stride + ia[i], 8);
            }
            __m256i alo = _mm256_loadu_si256((const __m256i *)(const void *)wa);
            __m256i ahi = _mm256_loadu_si256((const __m256i *)(const void *)(wa + 4));
            __m256i blo = _mm256_loadu_si256((const __m256i *)(const void *)wb);
            __m256i bhi = _mm256_loadu_si256((const __m256i *)(const void *)(wb + 4));
            __m256i a0 = _mm256_blend_epi32(alo, _mm256_slli_epi64(ahi, 32), 0xaa);
            __m256i a1 =
                _mm256_blend_epi32(_mm256_srli_epi64(alo, 24), _mm256_slli_epi64(ahi, 8), 0xaa);
            __m256i b0 = _mm256_blend_epi32(blo, _mm256_slli_epi64(bhi, 32), 0xaa);
            __m256i b1 =
                _mm256_blend_epi32(_mm256_srli_epi64(blo, 24), _mm256_slli_epi64(bhi, 8), 0xaa);
            wx = _mm256_permutevar8x32_epi32(wx, perm);
            wy = _mm256_permutevar8x32_epi32(wy, perm);
            for (int c = 0; c < 3; c++) {
                __m128i sh = _mm_cvtsi32_si128(8 * c);
                __m256i l = _mm256_and_si256(_mm256_srl_epi32(a0, sh), mask);
                __m256i r = _mm256_and_si256(_mm256_srl_epi32(a1, sh), mask);
                __m256i t = _mm256_add_epi32(_mm256_slli_epi32(l, 8),
                                             _mm256_mullo_epi32(_mm256_sub_epi32(r, l), wx));
                l = _mm256_and_si256(_mm256_srl_epi32(b0, sh), mask);
                r = _mm256_and_si256(_mm256_srl_epi32(b1, sh), mask);
                __m256i u = _mm256_add_epi32(_mm256_slli_epi32(l, 8),
                                             _mm256_mullo_epi32(_mm256_sub_epi32(r, l), wx));
                acc[c] = _mm256_add_epi32(
                    acc[c], _mm256_add_epi32(_mm256_slli_epi32(t, 8),
                                             _mm256_mullo_epi32(_mm256_sub_epi32(u, t), wy)));
            }
        }
        uint32_t v[3][8];
        for (int c = 0; c < 3; c++) {
            __m256i q = _mm256_permutevar8x32_epi32(acc[c], unperm);
            q = _mm256_srli_epi32(_mm256_add_epi32(q, half), 16);
            q = _mm256_srli_epi32(_mm256_mullo_epi32(q, recip), 20);
            _mm256_storeu_si256((__m256i *)(void *)v[c], q);
        }
        uint8_t *d = o + (size_t)x * 3;
        for (int i = 0; i < 8; i++) {
            d[3 * i] = (uint8_t)v[0][i];
            d[3 * i + 1] = (uint8_t)v[1][i];
            d[3 * i + 2] = (uint8_t)v[2][i];
        }
    }
    fast_run_c(f, x, x1, o);
}
#endif

static int force_portable;

void hsq_frame_force_portable(int on) {
    force_portable = on != 0;
}

static int use_avx2(void) {
#if FRAME_AVX2
    return !force_portable && __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

int hsq_frame_render(const hsq_img *src, const hsq_frame_xf *xf, hsq_img *out, uint8_t *coverage) {
    if (!src || !src->rgb || src->w == 0 || src->h == 0 || xf->w == 0 || xf->h == 0)
        return HSQ_EINVAL;
    uint8_t *px = malloc((size_t)xf->w * xf->h * 3);
    if (!px)
        return HSQ_ENOMEM;
    /* Samples per axis: one per photo pixel the output pixel spans, 1..4. */
    int ss = (int)ceilf(1.0f / xf->scale - 0.5f);
    ss = ss < 1 ? 1 : ss > 4 ? 4 : ss;
    float inv = 1.0f / (float)(ss * ss);
    /* An output pixel whose centre is this far inside the photo has every
     * sample's four taps inside (the samples lie within half a pixel's
     * footprint, 1 / scale photo px, of the centre; one more px for the
     * right/bottom tap and the float rounding): the fast path, with
     * coverage 255. Pixels near or past the edge take the clamped one. */
    const float margin = 1.0f / xf->scale + 2.0f;
    const float lo_x = margin, hi_x = (float)src->w - margin;
    const float lo_y = margin, hi_y = (float)src->h - margin;
    const size_t stride = (size_t)src->w * 3;
    /* Photo coordinates are affine in output coordinates: hsq_frame_to_src
     * with its division by scale folded into the steps. */
    const float kxx = xf->ux / xf->scale, kxy = -xf->uy / xf->scale; /* dsx/dox, dsx/doy */
    const float kyx = xf->uy / xf->scale, kyy = xf->ux / xf->scale;  /* dsy/dox, dsy/doy */
    float offx[16], offy[16]; /* each sample's offset from the pixel centre */
    for (int j = 0; j < ss; j++)
        for (int i = 0; i < ss; i++) {
            float dx = ((float)i + 0.5f) / (float)ss - 0.5f,
                  dy = ((float)j + 0.5f) / (float)ss - 0.5f;
            offx[j * ss + i] = dx * kxx + dy * kxy;
            offy[j * ss + i] = dx * kyx + dy * kyy;
        }
    const int nss = ss * ss;
    uint8_t cov_of[17]; /* coverage byte for 0..nss samples inside */
    for (int k = 0; k <= nss; k++)
        cov_of[k] = (uint8_t)((k * 255 + nss / 2) / nss);
    fast_row f = {src->rgb,
                  stride,
                  0,
                  0,
                  kxx,
                  kyx,
                  offx,
                  offy,
                  nss,
                  (uint32_t)nss * 32768u,
                  ((1u << 20) + (uint32_t)nss - 1) / (uint32_t)nss};
    /* The gathers index the photo with 32-bit offsets. */
    const int simd = use_avx2() && (uint64_t)src->h * stride < ((uint64_t)1 << 31);
    for (uint32_t y = 0; y < xf->h; y++) {
        uint8_t *orow = px + (size_t)y * xf->w * 3;
        float cx0, cy0;
        to_src(xf, 0.5f, (float)y + 0.5f, &cx0, &cy0);
        f.cx0 = cx0;
        f.cy0 = cy0;
        /* The fast pixels of a row are one run [xa, xb): each bound is a
         * monotone function of x (a rounded affine one), so each of the four
         * tests holds on an interval, and so does their conjunction. */
#define FAST(x)                                                                                    \
    (cx0 + (float)(x)*kxx > lo_x && cx0 + (float)(x)*kxx < hi_x && cy0 + (float)(x)*kyx > lo_y &&  \
     cy0 + (float)(x)*kyx < hi_y)
        uint32_t xa = 0, xb = xf->w;
        while (xa < xf->w && !FAST(xa))
            xa++;
        while (xb > xa && !FAST(xb - 1))
            xb--;
#undef FAST
        if (xa < xb) {
#if FRAME_AVX2
            if (simd)
                fast_run_avx2(&f, xa, xb, orow);
            else
#endif
                fast_run_c(&f, xa, xb, orow);
            if (coverage)
                memset(coverage + (size_t)y * xf->w + xa, 255, xb - xa);
        }
        for (uint32_t x = 0; x < xf->w; x++) {
            if (x == xa && xa < xb)
                x = xb; /* skip the run */
            if (x >= xf->w)
                break;
            uint8_t *o = orow + (size_t)x * 3;
            float acc[3] = {0, 0, 0};
            int in = 0;
            for (int j = 0; j < ss; j++)
                for (int i = 0; i < ss; i++) {
                    float sx, sy;
                    to_src(xf, (float)x + ((float)i + 0.5f) / (float)ss,
                           (float)y + ((float)j + 0.5f) / (float)ss, &sx, &sy);
                    in += sample(src, sx, sy, acc);
                }
            for (int c = 0; c < 3; c++) {
                float v = acc[c] * inv + 0.5f;
                o[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
            if (coverage)
                coverage[(size_t)y * xf->w + x] = cov_of[in];
        }
    }
    (void)simd;
    out->w = xf->w;
    out->h = xf->h;
    out->rgb = px;
    return 0;
}
