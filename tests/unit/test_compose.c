/* test_compose.c - worker/compose: matte, backgrounds, compositing, Lab and
 * clothing colour, retouch and tone.
 *
 * Expected values are computed here independently (hand-derived formulas,
 * published CIE Lab values for the sRGB primaries) or are measurable
 * properties: an edge that stays sharp, noise that drops, a mean that moves
 * to a target, pixels outside a mask that stay bit-identical.
 */
#include "worker/compose.h"

#include "schemas/err.h"
#include "test.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

static uint32_t rng_state = 1;

static double urand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (rng_state >> 8) / 16777216.0;
}

/* Approximately normal, mean 0, SD 1 (Irwin-Hall with 12 terms). */
static double nrand(void) {
    double s = 0;
    for (int i = 0; i < 12; i++)
        s += urand();
    return s - 6;
}

static float *fbuf(size_t n) {
    float *p = calloc(n, sizeof(float));
    HSQ_ASSERT(p);
    return p;
}

static float *fdup(const float *src, size_t n) {
    float *p = fbuf(n);
    memcpy(p, src, n * sizeof(float));
    return p;
}

#define HSQ_ASSERT_NEAR(a, b, tol)                                                                 \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (!(fabs(a_ - b_) <= (tol)))                                                             \
            HSQ_FAIL_("%s ~= %s: %.6f vs %.6f (tol %g)", #a, #b, a_, b_, (double)(tol));           \
    } while (0)

static void fill_rgb(float *img, size_t n, float r, float g, float b) {
    for (size_t i = 0; i < n; i++) {
        img[3 * i] = r;
        img[3 * i + 1] = g;
        img[3 * i + 2] = b;
    }
}

static float clampf(float v) {
    return v < 0 ? 0 : v > 1 ? 1 : v;
}

/* ---- conversion ---- */

static void test_u8(void) {
    uint8_t in[4 * 3 * 2], out[sizeof in];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (uint8_t)(i * 11);
    float f[sizeof in];
    HSQ_OK(hsq_cmp_from_u8(in, 4, 2, f));
    HSQ_ASSERT_NEAR(f[3], 33 / 255.0, 1e-7);
    HSQ_OK(hsq_cmp_to_u8(f, 4, 2, out));
    HSQ_ASSERT(memcmp(in, out, sizeof in) == 0);
    float odd[3] = {-0.5f, 1.5f, NAN};
    HSQ_OK(hsq_cmp_to_u8(odd, 1, 1, out));
    HSQ_ASSERT_EQ(out[0], 0);
    HSQ_ASSERT_EQ(out[1], 255);
    HSQ_ASSERT_EQ(out[2], 0);
    HSQ_ASSERT_EQ(hsq_cmp_from_u8(in, 0, 2, f), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_cmp_to_u8(NULL, 1, 1, out), HSQ_EINVAL);
}

/* ---- matte ---- */

static void test_upsample(void) {
    /* A constant stays exactly constant, at any ratio. */
    enum { SW = 256, SH = 256 };
    float *src = fbuf(SW * SH);
    for (int i = 0; i < SW * SH; i++)
        src[i] = 0.37f;
    static const uint32_t sizes[][2] = {{1000, 1250}, {257, 3}, {1, 1}, {256, 256}, {100, 80}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = (size_t)sizes[k][0] * sizes[k][1];
        float *dst = fbuf(n);
        HSQ_OK(hsq_cmp_mask_upsample(src, SW, SH, dst, sizes[k][0], sizes[k][1]));
        for (size_t i = 0; i < n; i++)
            if (dst[i] != 0.37f)
                HSQ_FAIL_("size %ux%u pixel %zu: %.9f", sizes[k][0], sizes[k][1], i, dst[i]);
        free(dst);
    }
    free(src);
    /* 2 -> 4, centres aligned, edges clamped: 0, 0.25, 0.75, 1. */
    float two[2] = {0, 1}, four[4];
    HSQ_OK(hsq_cmp_mask_upsample(two, 2, 1, four, 4, 1));
    HSQ_ASSERT_NEAR(four[0], 0, 1e-7);
    HSQ_ASSERT_NEAR(four[1], 0.25, 1e-7);
    HSQ_ASSERT_NEAR(four[2], 0.75, 1e-7);
    HSQ_ASSERT_NEAR(four[3], 1, 1e-7);
    HSQ_ASSERT_EQ(hsq_cmp_mask_upsample(two, 0, 1, four, 4, 1), HSQ_EINVAL);
}

/* Mean over rows of q at column x. */
static double col_mean(const float *q, uint32_t w, uint32_t h, uint32_t x) {
    double s = 0;
    for (uint32_t y = 0; y < h; y++)
        s += q[(size_t)y * w + x];
    return s / h;
}

/* The largest jump between neighbouring column means, and where it is. */
static double max_jump(const float *q, uint32_t w, uint32_t h, uint32_t *at) {
    double best = 0;
    for (uint32_t x = 1; x < w; x++) {
        double d = col_mean(q, w, h, x) - col_mean(q, w, h, x - 1);
        if (d > best) {
            best = d;
            *at = x;
        }
    }
    return best;
}

/* Columns whose mean lies strictly between 0.1 and 0.9: the edge's width. */
static int edge_width(const float *q, uint32_t w, uint32_t h) {
    int n = 0;
    for (uint32_t x = 0; x < w; x++) {
        double m = col_mean(q, w, h, x);
        n += m > 0.1 && m < 0.9;
    }
    return n;
}

/* SD of q around its column means over columns [x0, x1). */
static double flat_noise(const float *q, uint32_t w, uint32_t h, uint32_t x0, uint32_t x1) {
    double s2 = 0;
    size_t n = 0;
    for (uint32_t x = x0; x < x1; x++) {
        double m = col_mean(q, w, h, x);
        for (uint32_t y = 0; y < h; y++) {
            double d = q[(size_t)y * w + x] - m;
            s2 += d * d;
            n++;
        }
    }
    return sqrt(s2 / n);
}

/* A step edge in the guide; p is the same step blurred (a coarse mask
 * upsampled: a 13 px ramp) plus noise. The filter must put the transition
 * back on the guide's edge, as one jump, and make the flat parts quieter.
 * (Where the guide is flat a guided filter is a box blur of p, so the ramp's
 * tails remain: hsq_cmp_matte_refine steepens p first, tested below.) */
static void test_guided_step(void) {
    enum { W = 96, H = 48, MID = 48 };
    float *I = fbuf(W * H * 3), *p = fbuf(W * H), *q = fbuf(W * H);
    rng_state = 7;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float v = x < MID ? 0.2f : 0.8f;
            for (int c = 0; c < 3; c++)
                I[(y * W + x) * 3 + c] = clampf(v + 0.01f * (float)nrand());
            float ramp = clampf((x - (MID - 6.5f)) / 13.0f);
            p[y * W + x] = ramp + 0.05f * (float)nrand();
        }
    uint32_t at = 0;
    double jp = max_jump(p, W, H, &at), np = flat_noise(p, W, H, 4, 30);
    HSQ_ASSERT(jp < 0.15);
    HSQ_ASSERT(edge_width(p, W, H) >= 9);

    struct {
        int color, sub;
    } cases[] = {{1, 1}, {0, 1}, {1, 2}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        hsq_cmp_gf g = {6, 1e-3f, cases[k].sub, cases[k].color};
        HSQ_OK(hsq_cmp_guided_filter(I, p, W, H, &g, q));
        double jq = max_jump(q, W, H, &at);
        double nq = flat_noise(q, W, H, 4, 30), nq2 = flat_noise(q, W, H, 66, 92);
        if (jq < 0.35 || at != MID || nq > 0.2 * np || nq2 > 0.2 * np)
            HSQ_FAIL_("case %zu: jump %.3f at %u (coarse %.3f), noise %.4f/%.4f (coarse %.4f)", k,
                      jq, at, jp, nq, nq2, np);
        /* the level on each side is kept */
        HSQ_ASSERT_NEAR(col_mean(q, W, H, 10), 0, 0.05);
        HSQ_ASSERT_NEAR(col_mean(q, W, H, 85), 1, 0.05);
    }

    /* The matte path (contrast, then the filter): a narrow edge on the
     * guide's edge, no tails. */
    hsq_cmp_matte m;
    hsq_cmp_matte_default(&m);
    m.radius = 6;
    HSQ_OK(hsq_cmp_matte_refine(I, W, H, p, W, H, &m, q));
    HSQ_ASSERT(edge_width(q, W, H) <= 2);
    HSQ_ASSERT(max_jump(q, W, H, &at) > 0.6 && at == MID);
    HSQ_ASSERT(col_mean(q, W, H, MID - 4) < 0.03 && col_mean(q, W, H, MID + 4) > 0.95);

    /* In place (q = p) gives the same answer as out of place. */
    hsq_cmp_gf g = {6, 1e-3f, 1, 1};
    HSQ_OK(hsq_cmp_guided_filter(I, p, W, H, &g, q));
    float *pp = fdup(p, W * H);
    HSQ_OK(hsq_cmp_guided_filter(I, pp, W, H, &g, pp));
    HSQ_ASSERT(memcmp(pp, q, sizeof(float) * W * H) == 0);
    free(pp);

    /* A constant input stays constant; a radius larger than the image is fine. */
    for (int i = 0; i < W * H; i++)
        p[i] = 0.6f;
    hsq_cmp_gf big = {500, 1e-4f, 1, 1};
    HSQ_OK(hsq_cmp_guided_filter(I, p, W, H, &big, q));
    for (int i = 0; i < W * H; i++)
        HSQ_ASSERT_NEAR(q[i], 0.6, 1e-4);

    hsq_cmp_gf bad = {0, 1e-3f, 1, 1};
    HSQ_ASSERT_EQ(hsq_cmp_guided_filter(I, p, W, H, &bad, q), HSQ_EINVAL);
    bad = (hsq_cmp_gf){4, 0, 1, 1};
    HSQ_ASSERT_EQ(hsq_cmp_guided_filter(I, p, W, H, &bad, q), HSQ_EINVAL);
    bad = (hsq_cmp_gf){4, 1e-3f, 0, 1};
    HSQ_ASSERT_EQ(hsq_cmp_guided_filter(I, p, W, H, &bad, q), HSQ_EINVAL);
    free(I);
    free(p);
    free(q);
}

/* A subject (a disc with thin "hairs" sticking out) on a plain backdrop; the
 * coarse mask is the truth averaged down to 32 x 32. Refinement must get
 * closer to the truth than plain upsampling, and stay in [0, 1]. */
static void test_matte_refine(void) {
    enum { W = 256, H = 256, C = 32 };
    float *img = fbuf(W * H * 3), *truth = fbuf(W * H), *coarse = fbuf(C * C);
    float *up = fbuf(W * H), *alpha = fbuf(W * H);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double dx = x - 128.0, dy = y - 150.0;
            int in = dx * dx + dy * dy < 80.0 * 80.0;
            /* hairs: 2-px vertical strands above the disc */
            if (!in && y > 40 && y < 80 && (x % 16) < 2 && x > 70 && x < 186)
                in = 1;
            truth[y * W + x] = (float)in;
            float *px = img + (y * W + x) * 3;
            if (in) {
                px[0] = 0.35f;
                px[1] = 0.22f;
                px[2] = 0.15f;
            } else {
                px[0] = 0.75f;
                px[1] = 0.85f;
                px[2] = 0.80f;
            }
        }
    for (int cy = 0; cy < C; cy++)
        for (int cx = 0; cx < C; cx++) {
            double s = 0;
            for (int y = 0; y < W / C; y++)
                for (int x = 0; x < W / C; x++)
                    s += truth[(cy * 8 + y) * W + cx * 8 + x];
            coarse[cy * C + cx] = (float)(s / 64);
        }
    HSQ_OK(hsq_cmp_mask_upsample(coarse, C, C, up, W, H));
    HSQ_OK(hsq_cmp_matte_refine(img, W, H, coarse, C, C, NULL, alpha));
    double eu = 0, er = 0;
    for (int i = 0; i < W * H; i++) {
        eu += fabs(up[i] - truth[i]);
        er += fabs(alpha[i] - truth[i]);
        HSQ_ASSERT(alpha[i] >= 0 && alpha[i] <= 1);
    }
    eu /= W * H;
    er /= W * H;
    if (!(er < 0.5 * eu))
        HSQ_FAIL_("refined MAE %.4f vs upsampled %.4f", er, eu);
    /* Far inside and far outside are exact after the lo/hi clip. */
    HSQ_ASSERT_EQ(alpha[150 * W + 128], 1.0f);
    HSQ_ASSERT_EQ(alpha[250 * W + 5], 0.0f);
    /* Same size coarse mask is accepted; explicit parameters too. */
    hsq_cmp_matte m;
    hsq_cmp_matte_default(&m);
    m.radius = 4;
    m.subsample = 2;
    HSQ_OK(hsq_cmp_matte_refine(img, W, H, truth, W, H, &m, alpha));
    m.contrast = 0.5f;
    HSQ_ASSERT_EQ(hsq_cmp_matte_refine(img, W, H, truth, W, H, &m, alpha), HSQ_EINVAL);
    m.contrast = 1;
    m.lo = 0.5f;
    m.hi = 0.5f;
    HSQ_ASSERT_EQ(hsq_cmp_matte_refine(img, W, H, truth, W, H, &m, alpha), HSQ_EINVAL);
    free(img);
    free(truth);
    free(coarse);
    free(up);
    free(alpha);
}

/* A red subject over green with an 8 px soft edge: the photo's edge pixels
 * are red/green mixtures; the estimate must give the subject's red back
 * there, and be exact where alpha is 0 or 1. (The method needs confident
 * pixels within about a twelfth of the image's side.) */
static void test_fg_estimate(void) {
    enum { W = 240, H = 40 };
    float *I = fbuf(W * H * 3), *a = fbuf(W * H), *F = fbuf(W * H * 3);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float av = clampf((x - 100) / 8.0f); /* 0 up to x = 100, 1 from x = 108 */
            a[y * W + x] = av;
            float *px = I + (y * W + x) * 3;
            px[0] = av * 0.9f + (1 - av) * 0.1f;
            px[1] = av * 0.1f + (1 - av) * 0.8f;
            px[2] = 0.1f;
        }
    HSQ_OK(hsq_cmp_fg_estimate(I, a, W, H, F));
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            size_t i = (size_t)y * W + x;
            if (a[i] == 0 || a[i] == 1) {
                HSQ_ASSERT(memcmp(F + 3 * i, I + 3 * i, 3 * sizeof(float)) == 0);
                continue;
            }
            HSQ_ASSERT_NEAR(F[3 * i], 0.9, 0.08);
            HSQ_ASSERT_NEAR(F[3 * i + 1], 0.1, 0.08);
            HSQ_ASSERT_NEAR(F[3 * i + 2], 0.1, 0.02);
        }
    HSQ_ASSERT_EQ(hsq_cmp_fg_estimate(I, a, W, H, I), HSQ_EINVAL);
    free(I);
    free(a);
    free(F);
}

/* ---- backgrounds ---- */

static void expect_rgb(const float *img, uint32_t w, uint32_t x, uint32_t y, double r, double g,
                       double b, double tol) {
    const float *p = img + ((size_t)y * w + x) * 3;
    if (fabs(p[0] - r) > tol || fabs(p[1] - g) > tol || fabs(p[2] - b) > tol)
        HSQ_FAIL_("(%u,%u) = (%.5f,%.5f,%.5f), want (%.5f,%.5f,%.5f) +-%g", x, y, p[0], p[1], p[2],
                  r, g, b, tol);
}

static void test_backgrounds(void) {
    enum { W = 41, H = 31 };
    float *bg = fbuf(W * H * 3);
    const float blue[3] = {0.1f, 0.3f, 0.8f}, white[3] = {1, 1, 1};
    HSQ_OK(hsq_cmp_bg_solid(bg, W, H, blue));
    for (int i = 0; i < W * H; i++)
        HSQ_ASSERT(memcmp(bg + 3 * i, blue, sizeof blue) == 0);
    const float bad[3] = {0, 1.5f, 0};
    HSQ_ASSERT_EQ(hsq_cmp_bg_solid(bg, W, H, bad), HSQ_EINVAL);

    /* Gradient: exact ends, the middle row (odd H) halfway, rows constant. */
    HSQ_OK(hsq_cmp_bg_gradient(bg, W, H, blue, white));
    HSQ_ASSERT(memcmp(bg, blue, sizeof blue) == 0);
    HSQ_ASSERT(memcmp(bg + ((size_t)(H - 1) * W + W - 1) * 3, white, sizeof white) == 0);
    expect_rgb(bg, W, 20, 15, 0.55, 0.65, 0.9, 1e-6);
    for (int x = 0; x < W; x++)
        HSQ_ASSERT(memcmp(bg + (7 * W + x) * 3, bg + 7 * W * 3, 3 * sizeof(float)) == 0);
    float *one = fbuf(3);
    HSQ_OK(hsq_cmp_bg_gradient(one, 1, 1, blue, white));
    HSQ_ASSERT(memcmp(one, blue, sizeof blue) == 0);
    free(one);

    /* Vignette centred: centre = rgb * (1 + lift), corners = rgb * (1 - dark),
     * symmetric, falling along the diagonal. */
    hsq_cmp_vignette v;
    const float grey[3] = {0.5f, 0.4f, 0.6f};
    hsq_cmp_vignette_default(&v, grey);
    HSQ_ASSERT_NEAR(v.lift, 0.12, 1e-6);
    v.cy = 0.5f;
    HSQ_OK(hsq_cmp_bg_vignette(bg, W, H, &v));
    expect_rgb(bg, W, 20, 15, 0.5 * 1.12, 0.4 * 1.12, 0.6 * 1.12, 1e-5);
    expect_rgb(bg, W, 0, 0, 0.5 * 0.65, 0.4 * 0.65, 0.6 * 0.65, 1e-5);
    expect_rgb(bg, W, W - 1, H - 1, 0.5 * 0.65, 0.4 * 0.65, 0.6 * 0.65, 1e-5);
    expect_rgb(bg, W, W - 1, 0, 0.5 * 0.65, 0.4 * 0.65, 0.6 * 0.65, 1e-5);
    for (int k = 1; k < 15; k++) {
        float a = bg[((size_t)(15 - k) * W + 20 - k) * 3],
              b = bg[((size_t)(16 - k) * W + 21 - k) * 3];
        HSQ_ASSERT(a < b);
    }
    /* Light above the head: the brightest row moves up. */
    v.cy = 0.3f;
    HSQ_OK(hsq_cmp_bg_vignette(bg, W, H, &v));
    HSQ_ASSERT(bg[(9 * W + 20) * 3] > bg[(15 * W + 20) * 3]);
    /* A white base clamps at 1 in the centre. */
    hsq_cmp_vignette_default(&v, white);
    HSQ_OK(hsq_cmp_bg_vignette(bg, W, H, &v));
    expect_rgb(bg, W, 20, 13, 1, 1, 1, 0);
    v.dark = 1.5f;
    HSQ_ASSERT_EQ(hsq_cmp_bg_vignette(bg, W, H, &v), HSQ_EINVAL);
    free(bg);
}

static hsq_img bands(uint32_t w, uint32_t h, int vertical) {
    hsq_img img = {w, h, malloc((size_t)w * h * 3)};
    HSQ_ASSERT(img.rgb);
    static const uint8_t col[3][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            uint32_t t = vertical ? x * 3 / w : y * 3 / h;
            memcpy(img.rgb + ((size_t)y * w + x) * 3, col[t], 3);
        }
    return img;
}

static void test_cover_fit(void) {
    /* 300 x 100 with three vertical bands, covering 100 x 100: only the
     * middle (green) band survives the centre crop. */
    hsq_img ref = bands(300, 100, 1);
    float *out = fbuf(100 * 100 * 3);
    HSQ_OK(hsq_cmp_bg_image(&ref, 100, 100, 0, out));
    for (int y = 0; y < 100; y++)
        for (int x = 0; x < 100; x++)
            expect_rgb(out, 100, x, y, 0, 1, 0, 0);
    free(out);
    hsq_img_free(&ref);

    /* Tall reference, horizontal bands, wide-ish target 60 x 40: scale 0.6,
     * crop rows 100..200 of 300 = the middle band; upscaling 30 x 20 -> the
     * same. And a small reference grown to cover. */
    ref = bands(100, 300, 0);
    out = fbuf(60 * 40 * 3);
    HSQ_OK(hsq_cmp_bg_image(&ref, 60, 40, 0, out));
    for (int y = 0; y < 40; y++)
        for (int x = 0; x < 60; x++)
            expect_rgb(out, 60, x, y, 0, 1, 0, 0);
    free(out);
    out = fbuf(400 * 300 * 3);
    HSQ_OK(hsq_cmp_bg_image(&ref, 400, 300, 0, out)); /* 100 x 75 crop of the middle rows */
    expect_rgb(out, 400, 0, 150, 0, 1, 0, 0);
    expect_rgb(out, 400, 399, 0, 0, 1, 0, 0);
    free(out);
    hsq_img_free(&ref);

    /* Blur: a half black / half white reference; far from the edge nothing
     * changes, at the edge the values are intermediate and monotone. */
    ref = (hsq_img){64, 64, malloc(64 * 64 * 3)};
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 64; x++)
            memset(ref.rgb + (y * 64 + x) * 3, x < 32 ? 0 : 255, 3);
    out = fbuf(64 * 64 * 3);
    HSQ_OK(hsq_cmp_bg_image(&ref, 64, 64, 3, out));
    expect_rgb(out, 64, 2, 30, 0, 0, 0, 1e-6);
    expect_rgb(out, 64, 61, 30, 1, 1, 1, 1e-6);
    HSQ_ASSERT(out[(30 * 64 + 31) * 3] > 0.2f && out[(30 * 64 + 31) * 3] < 0.5f);
    HSQ_ASSERT(out[(30 * 64 + 32) * 3] > 0.5f && out[(30 * 64 + 32) * 3] < 0.8f);
    for (int x = 1; x < 64; x++)
        HSQ_ASSERT(out[(30 * 64 + x) * 3] >= out[(30 * 64 + x - 1) * 3]);
    HSQ_ASSERT_EQ(hsq_cmp_bg_image(&ref, 64, 64, -1, out), HSQ_EINVAL);
    free(out);
    hsq_img_free(&ref);
}

/* The three-box blur of an impulse: sum 1, variance sigma^2 (as near as
 * three odd integer box widths get). */
static void test_blur(void) {
    enum { N = 101 };
    static const float sigmas[] = {1.0f, 2.5f, 6.0f};
    for (size_t k = 0; k < sizeof sigmas / sizeof sigmas[0]; k++) {
        float *b = fbuf(N * N);
        b[50 * N + 50] = 1;
        HSQ_OK(hsq_cmp_blur(b, N, N, 1, sigmas[k]));
        double s = 0, vx = 0;
        for (int y = 0; y < N; y++)
            for (int x = 0; x < N; x++) {
                s += b[y * N + x];
                vx += b[y * N + x] * (x - 50.0) * (x - 50.0);
            }
        HSQ_ASSERT_NEAR(s, 1, 1e-5);
        double want = (double)sigmas[k] * sigmas[k];
        /* odd integer box widths: near sigma 1 the nearest sum is 2/3 off */
        if (fabs(vx - want) > 0.06 * want + 0.34)
            HSQ_FAIL_("sigma %.1f: variance %.3f, want %.3f", sigmas[k], vx, want);
        free(b);
    }
    float c[12] = {0.3f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f};
    HSQ_OK(hsq_cmp_blur(c, 2, 2, 3, 10));
    for (int i = 0; i < 12; i++)
        HSQ_ASSERT_EQ(c[i], 0.3f);
    HSQ_OK(hsq_cmp_blur(c, 2, 2, 3, 0.4f)); /* no-op */
    HSQ_ASSERT_EQ(hsq_cmp_blur(c, 2, 2, 0, 1), HSQ_EINVAL);
}

/* ---- compositing ---- */

static void test_composite(void) {
    enum { W = 64, H = 48 };
    const size_t n = W * H;
    float *fg = fbuf(n * 3), *bg = fbuf(n * 3), *a = fbuf(n), *out = fbuf(n * 3);
    rng_state = 3;
    for (size_t i = 0; i < n * 3; i++) {
        fg[i] = (float)urand();
        bg[i] = (float)urand();
    }
    hsq_cmp_comp c;
    hsq_cmp_comp_default(&c);
    /* alpha 0: bg exactly, whatever the options */
    HSQ_OK(hsq_cmp_composite(fg, bg, a, W, H, &c, out));
    HSQ_ASSERT(memcmp(out, bg, n * 3 * sizeof(float)) == 0);
    HSQ_OK(hsq_cmp_composite(fg, bg, a, W, H, NULL, out));
    HSQ_ASSERT(memcmp(out, bg, n * 3 * sizeof(float)) == 0);
    /* alpha 1: fg exactly (no edge for the wrap; harmonize off) */
    for (size_t i = 0; i < n; i++)
        a[i] = 1;
    c.harmonize = 0;
    HSQ_OK(hsq_cmp_composite(fg, bg, a, W, H, &c, out));
    HSQ_ASSERT(memcmp(out, fg, n * 3 * sizeof(float)) == 0);
    /* A binary matte with the effects off: each pixel from its side. */
    for (size_t i = 0; i < n; i++)
        a[i] = (i % W) < W / 2;
    hsq_cmp_comp plain = {0, 0, 0};
    HSQ_OK(hsq_cmp_composite(fg, bg, a, W, H, &plain, out));
    for (size_t i = 0; i < n; i++)
        HSQ_ASSERT(memcmp(out + 3 * i, a[i] ? fg + 3 * i : bg + 3 * i, 3 * sizeof(float)) == 0);
    /* Half alpha: the average. */
    for (size_t i = 0; i < n; i++)
        a[i] = 0.5f;
    HSQ_OK(hsq_cmp_composite(fg, bg, a, W, H, &plain, out));
    HSQ_ASSERT_NEAR(out[100], 0.5 * fg[100] + 0.5 * bg[100], 1e-6);
    /* out may be fg. */
    float *fg2 = fdup(fg, n * 3);
    HSQ_OK(hsq_cmp_composite(fg2, bg, a, W, H, &plain, fg2));
    HSQ_ASSERT(memcmp(fg2, out, n * 3 * sizeof(float)) == 0);
    free(fg2);

    /* Light wrap: dark subject (left half) on a bright backdrop. Just inside
     * the edge gets brighter; deep inside stays exactly the subject. */
    fill_rgb(fg, n, 0.2f, 0.2f, 0.2f);
    fill_rgb(bg, n, 0.9f, 0.9f, 0.7f);
    for (size_t i = 0; i < n; i++)
        a[i] = (i % W) < W / 2;
    hsq_cmp_comp wrap = {0.5f, 3, 0};
    HSQ_OK(hsq_cmp_composite(fg, bg, a, W, H, &wrap, out));
    size_t row = 20 * W;
    HSQ_ASSERT(out[(row + W / 2 - 1) * 3] > 0.3f);                       /* rim */
    HSQ_ASSERT(out[(row + W / 2 - 1) * 3] > out[(row + W / 2 - 4) * 3]); /* fades inwards */
    HSQ_ASSERT_EQ(out[(row + 2) * 3], 0.2f);                             /* deep inside */
    HSQ_ASSERT_EQ(out[(row + W - 3) * 3], 0.9f);                         /* backdrop untouched */
    HSQ_ASSERT(out[(row + W / 2 - 1) * 3 + 2] < out[(row + W / 2 - 1) * 3]); /* takes bg's tint */

    /* Harmonisation: a neutral subject over a blue backdrop picks up a
     * little blue; its luminance stays. */
    fill_rgb(fg, n, 0.5f, 0.5f, 0.5f);
    fill_rgb(bg, n, 0.2f, 0.3f, 0.9f);
    hsq_cmp_comp harm = {0, 0, 0.2f};
    HSQ_OK(hsq_cmp_composite(fg, bg, a, W, H, &harm, out));
    const float *s = out + (row + 5) * 3;
    HSQ_ASSERT(s[2] > 0.5f && s[0] < 0.5f);
    HSQ_ASSERT_NEAR(0.2126 * s[0] + 0.7152 * s[1] + 0.0722 * s[2], 0.5, 1e-5);
    HSQ_ASSERT(s[2] - s[0] < 0.2f); /* "a little" */

    c.wrap = 2;
    HSQ_ASSERT_EQ(hsq_cmp_composite(fg, bg, a, W, H, &c, out), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_cmp_composite(fg, bg, NULL, W, H, NULL, out), HSQ_EINVAL);
    free(fg);
    free(bg);
    free(a);
    free(out);
}

/* ---- Lab ---- */

static void test_lab(void) {
    /* Published CIE L*a*b* (D65) values of the sRGB primaries and greys. */
    static const struct {
        float rgb[3];
        double lab[3];
    } ref[] = {
        {{1, 1, 1}, {100, 0, 0}},
        {{0, 0, 0}, {0, 0, 0}},
        {{1, 0, 0}, {53.2408, 80.0925, 67.2032}},
        {{0, 1, 0}, {87.7347, -86.1827, 83.1793}},
        {{0, 0, 1}, {32.2970, 79.1875, -107.8602}},
        {{0.5f, 0.5f, 0.5f}, {53.3890, 0, 0}},
    };
    for (size_t k = 0; k < sizeof ref / sizeof ref[0]; k++) {
        float lab[3];
        hsq_cmp_rgb_to_lab(ref[k].rgb, 1, lab);
        for (int c = 0; c < 3; c++)
            if (fabs(lab[c] - ref[k].lab[c]) > 0.01)
                HSQ_FAIL_("case %zu channel %d: %.4f, want %.4f", k, c, lab[c], ref[k].lab[c]);
        float back[3];
        hsq_cmp_lab_to_rgb(lab, 1, back);
        for (int c = 0; c < 3; c++)
            HSQ_ASSERT_NEAR(back[c], ref[k].rgb[c], 1e-4);
    }
    /* The whole cube, 17 steps per side, round trip within 1e-4, in place. */
    enum { S = 17 };
    float *cube = fbuf(S * S * S * 3), *orig;
    for (int i = 0; i < S * S * S; i++) {
        cube[3 * i] = (i % S) / (float)(S - 1);
        cube[3 * i + 1] = (i / S % S) / (float)(S - 1);
        cube[3 * i + 2] = (i / (S * S)) / (float)(S - 1);
    }
    orig = fdup(cube, S * S * S * 3);
    hsq_cmp_rgb_to_lab(cube, S * S * S, cube);
    hsq_cmp_lab_to_rgb(cube, S * S * S, cube);
    for (int i = 0; i < S * S * S * 3; i++)
        if (fabs(cube[i] - orig[i]) > 1e-4)
            HSQ_FAIL_("round trip %d: %.6f vs %.6f", i, cube[i], orig[i]);
    free(cube);
    free(orig);
    /* Out of gamut Lab clamps to [0, 1]. */
    float wild[3] = {50, 200, -200}, rgb[3];
    hsq_cmp_lab_to_rgb(wild, 1, rgb);
    for (int c = 0; c < 3; c++)
        HSQ_ASSERT(rgb[c] >= 0 && rgb[c] <= 1);
}

/* ---- clothing ---- */

static void lab_of(float r, float g, float b, float *lab) {
    float rgb[3] = {r, g, b};
    hsq_cmp_rgb_to_lab(rgb, 1, lab);
}

static void test_cloth_ref(void) {
    /* A navy garment in the middle of a white product shot, with a white
     * shirt strip and a skin patch: the dominant region is navy. */
    enum { RW = 200, RH = 240 };
    float *ref = fbuf(RW * RH * 3);
    rng_state = 11;
    for (int y = 0; y < RH; y++)
        for (int x = 0; x < RW; x++) {
            float *p = ref + (y * RW + x) * 3;
            int garment = x > 30 && x < 170 && y > 50;
            int shirt = garment && x > 90 && x < 110 && y < 150;
            int skin = x > 70 && x < 130 && y <= 50 && y > 10;
            float nz = 0.02f * (float)nrand();
            if (shirt) {
                p[0] = p[1] = p[2] = clampf(0.95f + nz);
            } else if (garment) {
                p[0] = clampf(0.10f + nz);
                p[1] = clampf(0.14f + nz);
                p[2] = clampf(0.30f + nz);
            } else if (skin) {
                p[0] = 0.85f;
                p[1] = 0.65f;
                p[2] = 0.55f;
            } else {
                p[0] = p[1] = p[2] = 0.97f;
            }
        }
    hsq_cmp_lab_stats st;
    HSQ_OK(hsq_cmp_cloth_ref_stats(ref, RW, RH, NULL, &st));
    float navy[3];
    lab_of(0.10f, 0.14f, 0.30f, navy);
    for (int c = 0; c < 3; c++)
        if (fabs(st.mean[c] - navy[c]) > 2.5)
            HSQ_FAIL_("ref channel %d: %.2f, want navy %.2f", c, st.mean[c], navy[c]);
    HSQ_ASSERT(st.sd[0] > 0.3 && st.sd[0] < 4);

    /* With a mask, exactly the masked statistics. */
    float *mask = fbuf(RW * RH);
    for (int y = 0; y < RH; y++)
        for (int x = 0; x < RW; x++)
            mask[y * RW + x] = (x < 20 && y < 20) ? 1.0f : 0.0f; /* the white corner */
    HSQ_OK(hsq_cmp_cloth_ref_stats(ref, RW, RH, mask, &st));
    float white[3];
    lab_of(0.97f, 0.97f, 0.97f, white);
    HSQ_ASSERT_NEAR(st.mean[0], white[0], 1e-3);
    memset(mask, 0, sizeof(float) * RW * RH);
    HSQ_ASSERT_EQ(hsq_cmp_cloth_ref_stats(ref, RW, RH, mask, &st), HSQ_EINVAL);
    free(mask);

    /* A fabric swatch filling the frame (light and dark shades of one red):
     * its mean, not one shade's. */
    for (int y = 0; y < RH; y++)
        for (int x = 0; x < RW; x++) {
            float *p = ref + (y * RW + x) * 3;
            float shade = (x / 10) % 2 ? 0.08f : -0.08f;
            p[0] = 0.6f + shade;
            p[1] = 0.1f + shade / 2;
            p[2] = 0.15f + shade / 2;
        }
    HSQ_OK(hsq_cmp_cloth_ref_stats(ref, RW, RH, NULL, &st));
    hsq_cmp_lab_stats all;
    HSQ_OK(hsq_cmp_lab_stats_of(ref, RW, RH, NULL, &all));
    for (int c = 0; c < 3; c++)
        HSQ_ASSERT_NEAR(st.mean[c], all.mean[c], 1.5);
    free(ref);
}

static void test_cloth_transfer(void) {
    enum { W = 64, H = 64 };
    const size_t n = W * H;
    float *img = fbuf(n * 3), *mask = fbuf(n), *orig;
    rng_state = 5;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float *p = img + (y * W + x) * 3;
            if (y < 32) { /* face and backdrop: random colours, must not change */
                p[0] = (float)urand();
                p[1] = (float)urand();
                p[2] = (float)urand();
            } else { /* a light grey shirt with folds */
                float shade = 0.06f * sinf(x * 0.4f) + 0.02f * (float)nrand();
                p[0] = clampf(0.78f + shade);
                p[1] = clampf(0.78f + shade);
                p[2] = clampf(0.80f + shade);
                mask[y * W + x] = 1;
            }
        }
    orig = fdup(img, n * 3);
    hsq_cmp_lab_stats navy;
    float nl[3];
    lab_of(0.12f, 0.16f, 0.35f, nl);
    memcpy(navy.mean, nl, sizeof nl);
    navy.sd[0] = 3;
    navy.sd[1] = 1.5f;
    navy.sd[2] = 2;
    navy.weight = 1;
    hsq_cmp_lab_stats before;
    HSQ_OK(hsq_cmp_lab_stats_of(img, W, H, mask, &before));

    /* Full transfer (l_strength 1): the region's Lab mean is the reference's. */
    hsq_cmp_cloth c;
    hsq_cmp_cloth_default(&c);
    HSQ_ASSERT_NEAR(c.l_strength, 0.85, 1e-6);
    c.l_strength = 1;
    HSQ_OK(hsq_cmp_cloth_transfer(img, W, H, mask, &navy, &c));
    hsq_cmp_lab_stats after;
    HSQ_OK(hsq_cmp_lab_stats_of(img, W, H, mask, &after));
    for (int k = 0; k < 3; k++)
        if (fabs(after.mean[k] - navy.mean[k]) > 1.0)
            HSQ_FAIL_("channel %d: mean %.2f, want %.2f", k, after.mean[k], navy.mean[k]);
    /* Shading survives: still varies, correlated with the original. */
    HSQ_ASSERT(after.sd[0] > 1.0);
    HSQ_ASSERT(memcmp(img, orig, 32 * W * 3 * sizeof(float)) == 0); /* outside the mask */

    /* Default: a, b reach the reference; L moves 85 % of the way. */
    memcpy(img, orig, n * 3 * sizeof(float));
    HSQ_OK(hsq_cmp_cloth_transfer(img, W, H, mask, &navy, NULL));
    HSQ_OK(hsq_cmp_lab_stats_of(img, W, H, mask, &after));
    HSQ_ASSERT_NEAR(after.mean[1], navy.mean[1], 1.0);
    HSQ_ASSERT_NEAR(after.mean[2], navy.mean[2], 1.0);
    HSQ_ASSERT_NEAR(after.mean[0], before.mean[0] + 0.85 * (navy.mean[0] - before.mean[0]), 1.5);
    HSQ_ASSERT(memcmp(img, orig, 32 * W * 3 * sizeof(float)) == 0);

    /* Strength 0: bit-exact no-op; strength 0.5: halfway in RGB. */
    memcpy(img, orig, n * 3 * sizeof(float));
    c.strength = 0;
    HSQ_OK(hsq_cmp_cloth_transfer(img, W, H, mask, &navy, &c));
    HSQ_ASSERT(memcmp(img, orig, n * 3 * sizeof(float)) == 0);
    float *full = fdup(orig, n * 3);
    c.strength = 1;
    HSQ_OK(hsq_cmp_cloth_transfer(full, W, H, mask, &navy, &c));
    c.strength = 0.5f;
    HSQ_OK(hsq_cmp_cloth_transfer(img, W, H, mask, &navy, &c));
    size_t i = (40 * W + 10) * 3;
    HSQ_ASSERT_NEAR(img[i], 0.5 * (orig[i] + full[i]), 1e-5);
    free(full);

    /* An empty mask is a no-op; a bad reference is refused. */
    float *none = fbuf(n);
    memcpy(img, orig, n * 3 * sizeof(float));
    HSQ_OK(hsq_cmp_cloth_transfer(img, W, H, none, &navy, NULL));
    HSQ_ASSERT(memcmp(img, orig, n * 3 * sizeof(float)) == 0);
    navy.sd[1] = NAN;
    HSQ_ASSERT_EQ(hsq_cmp_cloth_transfer(img, W, H, mask, &navy, NULL), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_cmp_cloth_transfer(img, W, H, NULL, &navy, NULL), HSQ_EINVAL);
    free(none);
    free(orig);
    free(img);
    free(mask);
}

/* A tie (dark, 20 % of the region) inside a light blue shirt's mask: the
 * source statistics are the shirt's, so the shirt itself lands on the
 * reference colour; the tie, far from the shirt's colour, keeps its own
 * (selectivity), or with select = 0 moves by the same mapping and stays
 * darker than the shirt. */
static void test_cloth_accessory(void) {
    enum { W = 80, H = 60 };
    const size_t n = W * H;
    float *img = fbuf(n * 3), *mask = fbuf(n), *shirt = fbuf(n);
    rng_state = 17;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float *p = img + (y * W + x) * 3;
            float nz = 0.015f * (float)nrand();
            int tie = x >= 32 && x < 48;
            if (tie) {
                p[0] = clampf(0.12f + nz);
                p[1] = clampf(0.08f + nz);
                p[2] = clampf(0.08f + nz);
            } else {
                p[0] = clampf(0.70f + nz);
                p[1] = clampf(0.80f + nz);
                p[2] = clampf(0.92f + nz);
            }
            mask[y * W + x] = 1;
            shirt[y * W + x] = tie ? 0.0f : 1.0f;
        }
    hsq_cmp_lab_stats src, want;
    HSQ_OK(hsq_cmp_cloth_src_stats(img, W, H, mask, &src));
    HSQ_OK(hsq_cmp_lab_stats_of(img, W, H, shirt, &want));
    for (int k = 0; k < 3; k++)
        HSQ_ASSERT_NEAR(src.mean[k], want.mean[k], 0.5);
    hsq_cmp_lab_stats ref = {{45, 40, 25}, {2, 2, 2}, 1}; /* a brick red */
    hsq_cmp_cloth c;
    hsq_cmp_cloth_default(&c);
    c.l_strength = 1;
    float *orig = fdup(img, n * 3);
    HSQ_OK(hsq_cmp_cloth_transfer(img, W, H, mask, &ref, &c));
    for (int y = 0; y < H; y++) /* the tie: untouched */
        HSQ_ASSERT(
            memcmp(img + (y * W + 32) * 3, orig + (y * W + 32) * 3, 16 * 3 * sizeof(float)) == 0);
    memcpy(img, orig, n * 3 * sizeof(float));
    free(orig);
    c.select = 0;
    HSQ_OK(hsq_cmp_cloth_transfer(img, W, H, mask, &ref, &c));
    hsq_cmp_lab_stats got_shirt, got_tie;
    HSQ_OK(hsq_cmp_lab_stats_of(img, W, H, shirt, &got_shirt));
    for (size_t i = 0; i < n; i++)
        shirt[i] = 1 - shirt[i];
    HSQ_OK(hsq_cmp_lab_stats_of(img, W, H, shirt, &got_tie));
    for (int k = 0; k < 3; k++)
        HSQ_ASSERT_NEAR(got_shirt.mean[k], ref.mean[k], 1.0);
    HSQ_ASSERT(got_tie.mean[0] < got_shirt.mean[0] - 15);
    HSQ_ASSERT_EQ(hsq_cmp_cloth_src_stats(img, W, H, NULL, &src), HSQ_EINVAL);
    free(img);
    free(mask);
    free(shirt);
}

/* ---- retouch and tone ---- */

static double region_var(const float *img, uint32_t w, uint32_t x0, uint32_t y0, uint32_t x1,
                         uint32_t y1, int c) {
    double s = 0, s2 = 0;
    size_t n = 0;
    for (uint32_t y = y0; y < y1; y++)
        for (uint32_t x = x0; x < x1; x++) {
            double v = img[((size_t)y * w + x) * 3 + c];
            s += v;
            s2 += v * v;
            n++;
        }
    double m = s / n;
    return s2 / n - m * m;
}

static double region_mean(const float *img, uint32_t w, uint32_t x0, uint32_t y0, uint32_t x1,
                          uint32_t y1, int c) {
    double s = 0;
    for (uint32_t y = y0; y < y1; y++)
        for (uint32_t x = x0; x < x1; x++)
            s += img[((size_t)y * w + x) * 3 + c];
    return s / ((double)(x1 - x0) * (y1 - y0));
}

static void test_skin(void) {
    enum { W = 120, H = 120 };
    const size_t n = W * H;
    float *img = fbuf(n * 3), *mask = fbuf(n), *orig;
    rng_state = 9;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float *p = img + (y * W + x) * 3;
            int face = x >= 20 && x < 100 && y >= 20 && y < 100;
            int eye = x >= 40 && x < 55 && y >= 45 && y < 52;
            float nz = 0.04f * (float)nrand(); /* blotchy skin */
            if (eye) {
                p[0] = 0.15f;
                p[1] = 0.1f;
                p[2] = 0.1f;
            } else {
                p[0] = clampf(0.80f + nz);
                p[1] = clampf(0.62f + nz);
                p[2] = clampf(0.52f + nz);
            }
            mask[y * W + x] = face ? 1.0f : 0.0f;
        }
    orig = fdup(img, n * 3);
    HSQ_OK(hsq_cmp_skin_smooth(img, W, H, mask, 0, 0));
    HSQ_ASSERT(memcmp(img, orig, n * 3 * sizeof(float)) == 0);

    HSQ_OK(hsq_cmp_skin_smooth(img, W, H, mask, 1, 0));
    double v0 = region_var(orig, W, 60, 60, 95, 95, 0), v1 = region_var(img, W, 60, 60, 95, 95, 0);
    if (!(v1 < 0.4 * v0))
        HSQ_FAIL_("skin variance %.6f -> %.6f", v0, v1);
    /* The eye keeps its darkness (edge preserved), the skin its tone. */
    HSQ_ASSERT_NEAR(region_mean(img, W, 42, 47, 53, 50, 0), 0.15, 0.05);
    HSQ_ASSERT_NEAR(region_mean(img, W, 60, 60, 95, 95, 0), region_mean(orig, W, 60, 60, 95, 95, 0),
                    0.01);
    /* Outside the mask: untouched. */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            if (!mask[y * W + x])
                HSQ_ASSERT(
                    memcmp(img + (y * W + x) * 3, orig + (y * W + x) * 3, 3 * sizeof(float)) == 0);
    /* Half strength: in between. */
    float *half = fdup(orig, n * 3);
    HSQ_OK(hsq_cmp_skin_smooth(half, W, H, mask, 0.5f, 0));
    double vh = region_var(half, W, 60, 60, 95, 95, 0);
    HSQ_ASSERT(vh < v0 && vh > v1);
    free(half);
    /* Empty mask: no-op. */
    memset(mask, 0, n * sizeof(float));
    memcpy(img, orig, n * 3 * sizeof(float));
    HSQ_OK(hsq_cmp_skin_smooth(img, W, H, mask, 1, 0));
    HSQ_ASSERT(memcmp(img, orig, n * 3 * sizeof(float)) == 0);
    HSQ_ASSERT_EQ(hsq_cmp_skin_smooth(img, W, H, mask, 1.5f, 0), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_cmp_skin_smooth(img, W, H, NULL, 1, 0), HSQ_EINVAL);
    free(orig);
    free(img);
    free(mask);
}

static double srgb_lin(double c) {
    return c <= 0.04045 ? c / 12.92 : pow((c + 0.055) / 1.055, 2.4);
}

static void test_tone(void) {
    enum { W = 80, H = 60 };
    const size_t n = W * H;
    float *img = fbuf(n * 3), *orig, *mask = fbuf(n);
    rng_state = 13;
    /* An underexposed subject with a blue cast: a grey card (bright) and
     * skin-ish tones, all dim. */
    for (size_t i = 0; i < n; i++) {
        float v = (float)(0.15 + 0.35 * urand());
        if (i % 10 == 0)
            v = 0.55f; /* highlights */
        img[3 * i] = v * 0.85f;
        img[3 * i + 1] = v * 0.95f;
        img[3 * i + 2] = v * 1.1f;
        mask[i] = (i % W) < W / 2 ? 1.0f : 0.0f;
    }
    orig = fdup(img, n * 3);
    HSQ_OK(hsq_cmp_tone(img, W, H, NULL, 0));
    HSQ_ASSERT(memcmp(img, orig, n * 3 * sizeof(float)) == 0);

    HSQ_OK(hsq_cmp_tone(img, W, H, NULL, 1));
    double y0 = 0, y1 = 0, b0 = 0, r0 = 0, b1 = 0, r1 = 0;
    for (size_t i = 0; i < n; i++) {
        y0 += srgb_lin(orig[3 * i + 1]);
        y1 += srgb_lin(img[3 * i + 1]);
        r0 += srgb_lin(orig[3 * i]);
        b0 += srgb_lin(orig[3 * i + 2]);
        r1 += srgb_lin(img[3 * i]);
        b1 += srgb_lin(img[3 * i + 2]);
    }
    HSQ_ASSERT(y1 > 1.2 * y0); /* brighter */
    /* Less blue (linear B/R); the white-balance gains are capped at +-10 %,
     * so a strong cast is reduced, never overturned. */
    double cast0 = b0 / r0, cast1 = b1 / r1;
    if (!(cast1 > 1 && cast1 < 0.85 * cast0))
        HSQ_FAIL_("linear B/R %.3f -> %.3f", cast0, cast1);
    for (size_t i = 0; i < n * 3; i++)
        HSQ_ASSERT(img[i] >= 0 && img[i] <= 1);

    /* Weighted by a mask: outside it, exact. */
    memcpy(img, orig, n * 3 * sizeof(float));
    HSQ_OK(hsq_cmp_tone(img, W, H, mask, 0.7f));
    for (size_t i = 0; i < n; i++)
        if (mask[i] == 0)
            HSQ_ASSERT(memcmp(img + 3 * i, orig + 3 * i, 3 * sizeof(float)) == 0);
        else
            HSQ_ASSERT(img[3 * i + 1] > orig[3 * i + 1]);

    /* A well-exposed neutral image barely moves. */
    for (size_t i = 0; i < n; i++) {
        float v = (float)(0.3 + 0.6 * urand());
        img[3 * i] = img[3 * i + 1] = img[3 * i + 2] = i % 50 == 0 ? 0.93f : v;
    }
    float *ok = fdup(img, n * 3);
    HSQ_OK(hsq_cmp_tone(img, W, H, NULL, 1));
    for (size_t i = 0; i < n * 3; i++)
        HSQ_ASSERT_NEAR(img[i], ok[i], 0.06);
    free(ok);
    HSQ_ASSERT_EQ(hsq_cmp_tone(img, W, H, NULL, -0.1f), HSQ_EINVAL);
    free(orig);
    free(img);
    free(mask);
}

static double max_step(const float *img, uint32_t w, uint32_t y) {
    double m = 0;
    for (uint32_t x = 1; x < w; x++) {
        double d = fabs(img[((size_t)y * w + x) * 3] - img[((size_t)y * w + x - 1) * 3]);
        m = d > m ? d : m;
    }
    return m;
}

static void test_sharpen(void) {
    enum { W = 64, H = 16 };
    const size_t n = W * H;
    float *img = fbuf(n * 3), *orig;
    for (size_t i = 0; i < n; i++) {
        float v = (i % W) < W / 2 ? 0.3f : 0.7f;
        fill_rgb(img + 3 * i, 1, v, v, v);
    }
    HSQ_OK(hsq_cmp_blur(img, W, H, 3, 1.5f)); /* a soft edge */
    orig = fdup(img, n * 3);
    HSQ_OK(hsq_cmp_sharpen(img, W, H, 0, 1));
    HSQ_ASSERT(memcmp(img, orig, n * 3 * sizeof(float)) == 0);
    HSQ_OK(hsq_cmp_sharpen(img, W, H, 1, 1.5f));
    double s0 = max_step(orig, W, 8), s1 = max_step(img, W, 8);
    if (!(s1 > 1.15 * s0))
        HSQ_FAIL_("edge step %.4f -> %.4f", s0, s1);
    /* Flat areas are exactly unchanged; channels move together (luma only). */
    HSQ_ASSERT_EQ(img[(8 * W + 3) * 3], orig[(8 * W + 3) * 3]);
    size_t e = (8 * W + W / 2) * 3;
    HSQ_ASSERT_NEAR(img[e] - orig[e], img[e + 2] - orig[e + 2], 1e-6);
    HSQ_ASSERT_EQ(hsq_cmp_sharpen(img, W, H, 2, 1), HSQ_EINVAL);
    free(img);
    free(orig);
}

/* ---- the AVX2 loops against the portable ones ---- */

/* The filters built on box_mean (guided filter, matte, foreground, blur,
 * skin smoothing, sharpening), the vignette and the composite give the same
 * floats with and without AVX2 (where the CPU has none, both runs take the
 * portable loops): an odd-sized noisy image, a soft matte. */
static void run_all(const float *rgb, const float *coarse, uint32_t w, uint32_t h, float *out) {
    size_t n = (size_t)w * h;
    float *alpha = out, *fg = out + n, *bg = out + 4 * n, *comp = out + 7 * n, *blur = out + 10 * n;
    float *sk = out + 13 * n;
    HSQ_OK(hsq_cmp_matte_refine(rgb, w, h, coarse, 32, 32, NULL, alpha));
    HSQ_OK(hsq_cmp_fg_estimate(rgb, alpha, w, h, fg));
    hsq_cmp_vignette v;
    const float grey[3] = {0.8f, 0.7f, 0.6f};
    hsq_cmp_vignette_default(&v, grey);
    HSQ_OK(hsq_cmp_bg_vignette(bg, w, h, &v));
    HSQ_OK(hsq_cmp_composite(fg, bg, alpha, w, h, NULL, comp));
    HSQ_OK(hsq_cmp_sharpen(comp, w, h, 0.7f, 0));
    memcpy(blur, rgb, n * 3 * sizeof(float));
    HSQ_OK(hsq_cmp_blur(blur, w, h, 3, 4.5f));
    memcpy(sk, rgb, n * 3 * sizeof(float));
    HSQ_OK(hsq_cmp_skin_smooth(sk, w, h, alpha, 0.8f, 0));
    HSQ_OK(hsq_cmp_tone(sk, w, h, alpha, 0.6f));
}

static void test_simd_same(void) {
    const uint32_t w = 203, h = 251;
    const size_t n = (size_t)w * h;
    float *rgb = fbuf(n * 3), *coarse = fbuf(32 * 32);
    for (size_t i = 0; i < n * 3; i++)
        rgb[i] = (float)urand();
    for (uint32_t y = 0; y < 32; y++)
        for (uint32_t x = 0; x < 32; x++) {
            double dx = (x - 15.5) / 10, dy = (y - 18.0) / 13;
            coarse[y * 32 + x] = (float)(1 / (1 + exp((sqrt(dx * dx + dy * dy) - 1) * 6)));
        }
    float *a = fbuf(n * 16), *b = fbuf(n * 16);
    hsq_cmp_force_portable(0);
    run_all(rgb, coarse, w, h, a);
    hsq_cmp_force_portable(1);
    run_all(rgb, coarse, w, h, b);
    hsq_cmp_force_portable(0);
    for (size_t i = 0; i < n * 16; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
            HSQ_FAIL_("AVX2 and portable differ at plane %zu pixel %zu: %.9g vs %.9g", i / n, i % n,
                      a[i], b[i]);
    free(rgb);
    free(coarse);
    free(a);
    free(b);
}

/* Tone's AVX2 passes take 8 pixels at a time and hand a block with a value
 * outside [0, 1) (exactly 1, above, below, NaN) to the scalar code, and skip
 * blocks the mask leaves out: both paths give the same floats on an image
 * full of such blocks, with a mask of zeros, NaNs, partial and full
 * weights, and an odd pixel count (a scalar tail). */
static void test_tone_simd_edges(void) {
    const uint32_t w = 37, h = 29;
    const size_t n = (size_t)w * h;
    float *img = fbuf(n * 3), *mask = fbuf(n), *a, *b;
    for (size_t i = 0; i < n * 3; i++)
        img[i] = (float)urand();
    for (size_t i = 0; i < n; i++) {
        double u = urand();
        mask[i] = u < 0.2 ? 0.0f : u < 0.25 ? NAN : u < 0.6 ? 1.0f : (float)urand();
    }
    for (size_t i = 0; i < n * 3; i += 97)
        img[i] = 1.0f;
    for (size_t i = 5; i < n * 3; i += 131)
        img[i] = 1.25f;
    for (size_t i = 11; i < n * 3; i += 173)
        img[i] = -0.1f;
    img[200] = NAN;
    for (size_t i = 8 * 3 * 10; i < 8 * 3 * 11; i++)
        img[i] = 0.0f; /* a black block */
    for (size_t i = 8 * 20; i < 8 * 21; i++)
        mask[i] = 0.0f; /* a block the mask leaves out */
    a = fdup(img, n * 3);
    b = fdup(img, n * 3);
    for (int pass = 0; pass < 2; pass++) {
        const float *m = pass ? NULL : mask;
        hsq_cmp_force_portable(0);
        HSQ_OK(hsq_cmp_tone(a, w, h, m, 0.8f));
        hsq_cmp_force_portable(1);
        HSQ_OK(hsq_cmp_tone(b, w, h, m, 0.8f));
        hsq_cmp_force_portable(0);
        for (size_t i = 0; i < n * 3; i++)
            if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
                HSQ_FAIL_("tone: AVX2 and portable differ at value %zu: %.9g vs %.9g", i, a[i],
                          b[i]);
    }
    free(img);
    free(mask);
    free(a);
    free(b);
}

int main(void) {
    test_simd_same();
    test_tone_simd_edges();
    test_u8();
    test_upsample();
    test_guided_step();
    test_matte_refine();
    test_fg_estimate();
    test_backgrounds();
    test_cover_fit();
    test_blur();
    test_composite();
    test_lab();
    test_cloth_ref();
    test_cloth_transfer();
    test_cloth_accessory();
    test_skin();
    test_tone();
    test_sharpen();
    printf("test_compose: ok\n");
    return 0;
}
