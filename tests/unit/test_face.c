/* test_face.c - BlazeFace pre/post-processing, framing, and (when the model
 * runtime and the model files are there) the real detector against the
 * golden values in notes/models.md.
 *
 * Usage: test_face SRCDIR. The real-model part needs SRCDIR/models and
 * SRCDIR/samples (scripts/models, scripts/samples); without them that part
 * is skipped and, if nothing else ran, the test exits 77.
 */
#include "schemas/err.h"
#include "test.h"
#include "worker/face.h"
#include "worker/frame.h"
#include "worker/img.h"
#include "worker/seg.h"

#include <math.h>
#include <stdbool.h>

#define NEAR(a, b, tol)                                                                            \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (!(fabs(a_ - b_) <= (tol)))                                                             \
            HSQ_FAIL_("%s ~= %s: %.4f vs %.4f (tol %.4f)", #a, #b, a_, b_, (double)(tol));         \
    } while (0)

/* ------------------------------------------------------------ anchors */

static void test_anchors(void) {
    static float cx[HSQ_FACE_ANCHORS], cy[HSQ_FACE_ANCHORS];
    hsq_face_anchors(cx, cy);
    /* 16x16 x 2 then 8x8 x 6, in (layer, y, x, anchor) order. */
    NEAR(cx[0], 0.5 / 16, 1e-6);
    NEAR(cy[0], 0.5 / 16, 1e-6);
    NEAR(cx[1], cx[0], 1e-6); /* two anchors per cell */
    NEAR(cx[2], 1.5 / 16, 1e-6);
    NEAR(cx[31], 15.5 / 16, 1e-6);
    NEAR(cy[32], 1.5 / 16, 1e-6); /* next row */
    NEAR(cx[511], 15.5 / 16, 1e-6);
    NEAR(cy[511], 15.5 / 16, 1e-6);
    NEAR(cx[512], 0.5 / 8, 1e-6);
    NEAR(cy[512], 0.5 / 8, 1e-6);
    NEAR(cx[517], 0.5 / 8, 1e-6); /* six anchors per cell */
    NEAR(cx[518], 1.5 / 8, 1e-6);
    NEAR(cy[512 + 6 * 8], 1.5 / 8, 1e-6);
    NEAR(cx[895], 7.5 / 8, 1e-6);
    NEAR(cy[895], 7.5 / 8, 1e-6);
    for (int i = 0; i < HSQ_FACE_ANCHORS; i++)
        HSQ_ASSERT(cx[i] > 0 && cx[i] < 1 && cy[i] > 0 && cy[i] < 1);
}

/* ------------------------------------------------------------ decode */

static void test_decode(void) {
    static float reg[HSQ_FACE_ANCHORS * HSQ_FACE_COORDS], logit[HSQ_FACE_ANCHORS];
    static hsq_face out[HSQ_FACE_ANCHORS];
    static float cx[HSQ_FACE_ANCHORS], cy[HSQ_FACE_ANCHORS];
    hsq_face_anchors(cx, cy);
    for (int i = 0; i < HSQ_FACE_ANCHORS; i++)
        logit[i] = -10.0f;
    /* Anchor 600: box centre offset (+6.4, -3.2) px of 128, size 25.6 x 32,
     * keypoint k at (+k, -k) px. */
    int a = 600;
    float *r = reg + a * HSQ_FACE_COORDS;
    r[0] = 6.4f;
    r[1] = -3.2f;
    r[2] = 25.6f;
    r[3] = 32.0f;
    for (int k = 0; k < 6; k++) {
        r[4 + 2 * k] = (float)k;
        r[5 + 2 * k] = -(float)k;
    }
    logit[a] = 2.0f;
    logit[a + 1] = 1000.0f;                     /* clipped to 100: score 1.0 */
    reg[(a + 1) * HSQ_FACE_COORDS + 2] = -1.0f; /* negative width: dropped */
    logit[a + 2] = NAN;                         /* dropped */
    logit[a + 3] = 0.0f;                        /* score exactly 0.5: kept */
    float best = 0;
    size_t n = hsq_face_decode(reg, logit, out, HSQ_FACE_ANCHORS, &best);
    HSQ_ASSERT_EQ(n, 2);
    NEAR(best, 1.0, 1e-6);
    const hsq_face *f = &out[0];
    NEAR(f->score, 1.0 / (1.0 + exp(-2.0)), 1e-6);
    float ccx = 6.4f / 128 + cx[a], ccy = -3.2f / 128 + cy[a];
    NEAR(f->x0, ccx - 0.1, 1e-6);
    NEAR(f->x1, ccx + 0.1, 1e-6);
    NEAR(f->y0, ccy - 0.125, 1e-6);
    NEAR(f->y1, ccy + 0.125, 1e-6);
    for (int k = 0; k < 6; k++) {
        NEAR(f->kp[k].x, k / 128.0 + cx[a], 1e-6);
        NEAR(f->kp[k].y, -k / 128.0 + cy[a], 1e-6);
    }
    NEAR(out[1].score, 0.5, 1e-6);
    /* max caps what is written, not the count. */
    n = hsq_face_decode(reg, logit, out, 1, NULL);
    HSQ_ASSERT_EQ(n, 2);
}

/* ------------------------------------------------------------ NMS */

static hsq_face box(float x0, float y0, float x1, float y1, float s) {
    hsq_face f;
    memset(&f, 0, sizeof(f));
    f.x0 = x0;
    f.y0 = y0;
    f.x1 = x1;
    f.y1 = y1;
    f.score = s;
    for (int k = 0; k < 6; k++)
        f.kp[k] = (hsq_face_pt){x0 + k, y0};
    return f;
}

static void test_nms(void) {
    hsq_face f[5];
    /* Two overlapping boxes (IoU 0.6) and one apart, plus one that overlaps
     * the first by IoU exactly below the threshold. */
    f[0] = box(10, 10, 20, 20, 0.6f);
    f[1] = box(12, 10, 22, 20, 0.9f); /* IoU with f0: 80/120 = 0.667 */
    f[2] = box(50, 50, 60, 60, 0.7f);
    f[3] = box(17, 10, 27, 20, 0.55f); /* IoU with f1: 50/150 = 0.333 (> 0.3 joins) */
    f[4] = box(19, 10, 29, 20, 0.52f); /* IoU with f1: 30/170 = 0.18: own cluster */
    NEAR(hsq_face_iou(&f[0], &f[1]), 80.0 / 120.0, 1e-6);
    size_t n = hsq_face_nms(f, 5);
    HSQ_ASSERT_EQ(n, 3);
    /* Cluster {f1 0.9, f0 0.6, f3 0.55}: weighted mean, best score kept. */
    double w = 0.9 + 0.6 + 0.55;
    NEAR(f[0].score, 0.9, 1e-6);
    NEAR(f[0].x0, (0.9 * 12 + 0.6 * 10 + 0.55 * 17) / w, 1e-4);
    NEAR(f[0].x1, (0.9 * 22 + 0.6 * 20 + 0.55 * 27) / w, 1e-4);
    NEAR(f[0].y0, 10, 1e-4);
    NEAR(f[0].kp[3].x, (0.9 * 15 + 0.6 * 13 + 0.55 * 20) / w, 1e-4);
    NEAR(f[1].score, 0.7, 1e-6);
    NEAR(f[1].x0, 50, 1e-6);
    NEAR(f[2].score, 0.52, 1e-6);
    NEAR(f[2].x0, 19, 1e-6);
    HSQ_ASSERT_EQ(hsq_face_nms(f, 0), 0);
    hsq_face e = box(0, 0, 0, 0, 1);
    NEAR(hsq_face_iou(&e, &e), 0, 0);
}

/* ------------------------------------------------------------ letterbox */

static void test_letterbox(void) {
    hsq_face_lb lb = hsq_face_letterbox(512, 512);
    NEAR(lb.px, 0, 0);
    NEAR(lb.py, 0, 0);
    lb = hsq_face_letterbox(320, 512);
    NEAR(lb.px, (1 - 320.0 / 512) / 2, 1e-6);
    NEAR(lb.py, 0, 0);
    lb = hsq_face_letterbox(1920, 1080);
    NEAR(lb.py, (1 - 1080.0 / 1920) / 2, 1e-6);
    /* Round trip image -> tensor -> image. */
    hsq_face f = box(179.1f, 81.4f, 271.6f, 173.9f, 0.9f), g = f;
    f.kp[0] = (hsq_face_pt){205.2f, 100.5f};
    g = f;
    hsq_face_toletterbox(&g, &lb);
    HSQ_ASSERT(g.y0 > lb.py && g.y1 < 1 - lb.py);
    hsq_face_unletterbox(&g, &lb);
    NEAR(g.x0, f.x0, 1e-3);
    NEAR(g.y1, f.y1, 1e-3);
    NEAR(g.kp[0].y, f.kp[0].y, 1e-3);
    /* A point at the tensor centre is the image centre. */
    hsq_face c = box(0.5f, 0.5f, 0.5f, 0.5f, 1);
    hsq_face_unletterbox(&c, &lb);
    NEAR(c.x0, 960, 1e-3);
    NEAR(c.y0, 540, 1e-3);

    /* Pre-processing of a wide image: the pad bands are -1, the middle row
     * carries the image (white -> 1.0). */
    hsq_img img = {256, 128, malloc(256 * 128 * 3)};
    memset(img.rgb, 255, 256 * 128 * 3);
    static float t[128 * 128 * 3];
    hsq_face_preprocess(&img, t);
    NEAR(t[0], -1, 0);
    NEAR(t[(31 * 128 + 64) * 3], -1, 0);
    NEAR(t[(32 * 128 + 64) * 3], 1, 1e-6);
    NEAR(t[(64 * 128 + 0) * 3 + 2], 1, 1e-6);
    NEAR(t[(95 * 128 + 127) * 3], 1, 1e-6);
    NEAR(t[(96 * 128 + 64) * 3], -1, 0);
    hsq_img_free(&img);
}

/* ------------------------------------------------------------ pick, messages */

static void test_pick_and_messages(void) {
    hsq_face f[3];
    f[0] = box(0, 0, 100, 100, 0.9f);     /* corner, 100 wide */
    f[1] = box(450, 450, 530, 530, 0.8f); /* centre, 80 wide */
    f[2] = box(900, 900, 1000, 1000, 0.99f);
    HSQ_ASSERT_EQ(hsq_face_pick(f, 3, 1000, 1000), 1);
    f[0] = box(0, 0, 200, 200, 0.9f); /* twice as large wins even from the corner */
    HSQ_ASSERT_EQ(hsq_face_pick(f, 3, 1000, 1000), 0);
    HSQ_ASSERT_EQ(hsq_face_pick(f, 0, 1000, 1000), -1);

    char msg[400];
    hsq_face_result r;
    memset(&r, 0, sizeof(r));
    r.subject = -1;
    HSQ_ASSERT_EQ(hsq_face_check_found(&r, "cat.png", msg, sizeof(msg)), HSQ_ENOFACE);
    HSQ_ASSERT_STR_EQ(msg, "no face found in portrait 'cat.png': use a photo where your face is "
                           "clearly visible and faces the camera");
    HSQ_ASSERT_EQ(hsq_face_check_found(&r, NULL, msg, sizeof(msg)), HSQ_ENOFACE);
    HSQ_ASSERT(strstr(msg, "no face found in portrait: use") == msg);
    r.n = 1;
    r.subject = 0;
    HSQ_ASSERT_EQ(hsq_face_check_found(&r, "x", msg, sizeof(msg)), 0);

    hsq_face s = box(10, 10, 90, 90, 0.9f); /* 80 px wide */
    HSQ_ASSERT_EQ(hsq_face_check_size(&s, 1000, "x.jpg", msg, sizeof(msg)), HSQ_EFACESMALL);
    HSQ_ASSERT_STR_EQ(msg, "the face in 'x.jpg' is 80 px wide; use a photo where your face is at "
                           "least 200 px wide");
    HSQ_ASSERT_EQ(hsq_face_check_size(&s, 400, "x.jpg", msg, sizeof(msg)), 0);
    s = box(0, 0, 30, 30, 0.9f); /* below the absolute minimum */
    HSQ_ASSERT_EQ(hsq_face_check_size(&s, 40, "", msg, sizeof(msg)), HSQ_EFACESMALL);
    HSQ_ASSERT(strstr(msg, "the face in the portrait is 30 px wide") == msg);
}

/* ------------------------------------------------------------ framing */

static void test_frame(void) {
    HSQ_ASSERT(hsq_frame_preset_find("portrait")->h == 1280);
    HSQ_ASSERT(hsq_frame_preset_find("passport")->dpi == 300);
    HSQ_ASSERT(hsq_frame_preset_find("poster") == NULL);
    NEAR(hsq_frame_face_px(1024, 1280), 0.36 * 1024, 1e-3);
    NEAR(hsq_frame_face_px(600, 600), 240, 1e-3);
    NEAR(hsq_frame_face_px(1536, 1024), 0.36 * 1024, 1e-3);

    /* A face tilted by 10 degrees: after framing the eyes are level, the eye
     * line sits at 37 % of a portrait, the face box width is 36 % of it. */
    double th = 10 * M_PI / 180;
    hsq_face f = box(100, 100, 200, 200, 0.9f);
    f.kp[HSQ_FACE_KP_REYE] = (hsq_face_pt){130, 130};
    f.kp[HSQ_FACE_KP_LEYE] =
        (hsq_face_pt){(float)(130 + 40 * cos(th)), (float)(130 + 40 * sin(th))};
    hsq_frame_xf xf;
    HSQ_OK(hsq_frame_plan(&f, 400, 500, &xf));
    NEAR(xf.angle, th, 1e-5);
    NEAR(xf.scale, 0.36 * 400 / 100, 1e-5);
    hsq_face o;
    hsq_frame_face_to_out(&xf, &f, &o);
    NEAR(o.kp[0].y, o.kp[1].y, 1e-3);
    NEAR(o.kp[0].y, 0.37 * 500, 1e-3);
    NEAR(o.kp[1].x - o.kp[0].x, 40 * xf.scale, 1e-3);
    /* to_src inverts to_out. */
    float sx, sy, ox, oy;
    hsq_frame_to_out(&xf, 123.0f, 321.0f, &ox, &oy);
    hsq_frame_to_src(&xf, ox, oy, &sx, &sy);
    NEAR(sx, 123, 1e-3);
    NEAR(sy, 321, 1e-3);
    HSQ_ASSERT_EQ(hsq_frame_plan(&f, 0, 5, &xf), HSQ_EINVAL);
    hsq_face z = box(0, 0, 0, 0, 1);
    HSQ_ASSERT_EQ(hsq_frame_plan(&z, 5, 5, &xf), HSQ_EINVAL);

    /* Render a small gradient image: coverage 255 inside, 0 outside. */
    hsq_img src = {300, 300, malloc(300 * 300 * 3)};
    for (uint32_t i = 0; i < 300 * 300; i++) {
        src.rgb[i * 3] = (uint8_t)(i % 300 * 255 / 299);
        src.rgb[i * 3 + 1] = 10;
        src.rgb[i * 3 + 2] = 200;
    }
    hsq_face g = box(100, 100, 200, 200, 0.9f);
    g.kp[0] = (hsq_face_pt){130, 130};
    g.kp[1] = (hsq_face_pt){170, 130};
    HSQ_OK(hsq_frame_plan(&g, 120, 150, &xf));
    hsq_img out;
    uint8_t *cov = malloc(120 * 150);
    HSQ_OK(hsq_frame_render(&src, &xf, &out, cov));
    HSQ_ASSERT_EQ(out.w, 120);
    HSQ_ASSERT_EQ(out.h, 150);
    HSQ_ASSERT_EQ(cov[75 * 120 + 60], 255);
    HSQ_ASSERT_EQ(out.rgb[(75 * 120 + 60) * 3 + 2], 200);
    HSQ_ASSERT_EQ(cov[0], 255); /* scale 0.432: this frame stays inside the photo */
    hsq_img_free(&out);
    /* Zoomed out far enough, the corners fall outside. */
    g = box(150, 150, 290, 290, 0.9f);
    g.kp[0] = (hsq_face_pt){190, 190};
    g.kp[1] = (hsq_face_pt){250, 190};
    HSQ_OK(hsq_frame_plan(&g, 120, 150, &xf));
    HSQ_OK(hsq_frame_render(&src, &xf, &out, cov));
    HSQ_ASSERT_EQ(cov[150 * 120 - 1], 0); /* bottom right: beyond x = 300 */
    /* The edge colour is repeated there, not black. */
    HSQ_ASSERT_EQ(out.rgb[(150 * 120 - 1) * 3 + 2], 200);
    HSQ_ASSERT_EQ(cov[75 * 120 + 60], 255);
    hsq_img_free(&out);
    free(cov);
    hsq_img_free(&src);
}

/* The render's AVX2 fast path and its portable loops give the same bytes
 * (where the CPU has no AVX2 both runs take the portable loops): a noisy
 * photo, tilted frames shrinking it 1x..5x (1 to 16 samples per pixel), one
 * of them partly outside the photo, widths that leave tails of 1..7 pixels
 * after the 8-pixel blocks. Also: the fixed-point rounding division matches
 * a plain division for every sum the render can form. */
static void test_frame_simd(void) {
    for (uint32_t nss = 1; nss <= 16; nss++) {
        uint32_t recip = ((1u << 20) + nss - 1) / nss;
        for (uint32_t acc = 0; acc <= nss * 255u * 65536u; acc += 97)
            if ((((acc + nss * 32768u) >> 16) * recip >> 20) !=
                (acc + nss * 32768u) / (nss * 65536u))
                HSQ_FAIL_("rounding division: nss %u acc %u", nss, acc);
    }
    hsq_img src = {517, 389, malloc(517 * 389 * 3)};
    uint32_t st = 7;
    for (size_t i = 0; i < 517u * 389u * 3u; i++) {
        st = st * 1664525u + 1013904223u;
        src.rgb[i] = (uint8_t)(st >> 24);
    }
    static const float faces[][3] = {
        {60, 258, 194}, {130, 258, 194}, {260, 258, 194}, {330, 258, 194}, {200, 400, 150}};
    static const uint32_t sizes[][2] = {{123, 157}, {64, 64}, {89, 61}};
    for (size_t fi = 0; fi < sizeof faces / sizeof faces[0]; fi++)
        for (size_t si = 0; si < 3; si++) {
            float fw = faces[fi][0], cx = faces[fi][1], cy = faces[fi][2];
            hsq_face g = box(cx - fw / 2, cy - fw / 2, cx + fw / 2, cy + fw / 2, 0.9f);
            g.kp[0] = (hsq_face_pt){cx - fw / 4, cy - fw / 8};
            g.kp[1] = (hsq_face_pt){cx + fw / 4, cy - fw / 8 + fw / 12}; /* ~9.5 degrees */
            hsq_frame_xf xf;
            HSQ_OK(hsq_frame_plan(&g, sizes[si][0], sizes[si][1], &xf));
            size_t n = (size_t)xf.w * xf.h;
            uint8_t *c1 = malloc(n), *c2 = malloc(n);
            hsq_img a, b;
            hsq_frame_force_portable(0);
            HSQ_OK(hsq_frame_render(&src, &xf, &a, c1));
            hsq_frame_force_portable(1);
            HSQ_OK(hsq_frame_render(&src, &xf, &b, c2));
            hsq_frame_force_portable(0);
            HSQ_ASSERT(memcmp(a.rgb, b.rgb, n * 3) == 0);
            HSQ_ASSERT(memcmp(c1, c2, n) == 0);
            hsq_img_free(&a);
            hsq_img_free(&b);
            free(c1);
            free(c2);
        }
    hsq_img_free(&src);
}

/* ------------------------------------------------------------ the real model */

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = malloc((size_t)n + 1);
    HSQ_ASSERT(d && fread(d, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return d;
}

static void load_img(const char *path, hsq_img *img) {
    size_t len;
    uint8_t *d = slurp(path, &len);
    HSQ_ASSERT(d != NULL);
    HSQ_OK(hsq_img_decode(d, len, NULL, NULL, 0, img));
    free(d);
}

/* models.md golden values for astronaut.png (MediaPipe runtime). */
static void check_astronaut(const hsq_face_result *r, float dx, float tol) {
    HSQ_ASSERT_EQ(r->n, 1);
    HSQ_ASSERT_EQ(r->subject, 0);
    const hsq_face *f = &r->faces[0];
    NEAR(f->score, 0.9208, 0.01);
    NEAR(f->x0, 179.1 - dx, tol);
    NEAR(f->y0, 81.4, tol);
    NEAR(f->x1, 271.6 - dx, tol);
    NEAR(f->y1, 173.9, tol);
    NEAR(f->kp[HSQ_FACE_KP_REYE].x, 205.2 - dx, tol);
    NEAR(f->kp[HSQ_FACE_KP_REYE].y, 100.5, tol);
    NEAR(f->kp[HSQ_FACE_KP_LEYE].x, 249.3 - dx, tol);
    NEAR(f->kp[HSQ_FACE_KP_LEYE].y, 108.4, tol);
    NEAR(f->kp[HSQ_FACE_KP_MOUTH].x, 220.4 - dx, tol);
    NEAR(f->kp[HSQ_FACE_KP_MOUTH].y, 144.6, tol);
}

/* A JPEG of img carrying an EXIF APP1 with orientation o right after SOI. */
static uint8_t *jpeg_with_orientation(const hsq_img *img, int o, size_t *len) {
    uint8_t *j;
    size_t jl;
    HSQ_OK(hsq_img_encode_jpeg(img, 95, &j, &jl));
    static const uint8_t tiff_head[] = {'M', 'M',  0,    42, 0, 0, 0, 8, 0,
                                        1,   0x01, 0x12, 0,  3, 0, 0, 0, 1};
    uint8_t app1[2 + 2 + 6 + 26];
    size_t k = 0;
    app1[k++] = 0xff;
    app1[k++] = 0xe1;
    app1[k++] = 0;
    app1[k++] = 2 + 6 + 26;
    memcpy(app1 + k, "Exif\0\0", 6);
    k += 6;
    memcpy(app1 + k, tiff_head, sizeof(tiff_head));
    k += sizeof(tiff_head);
    app1[k++] = 0;
    app1[k++] = (uint8_t)o;
    app1[k++] = 0;
    app1[k++] = 0;
    memset(app1 + k, 0, 4); /* no next IFD */
    k += 4;
    HSQ_ASSERT_EQ(k, sizeof(app1));
    uint8_t *out = malloc(jl + k);
    memcpy(out, j, 2);
    memcpy(out + 2, app1, k);
    memcpy(out + 2 + k, j + 2, jl - 2);
    free(j);
    *len = jl + k;
    return out;
}

/* Fraction of an image's pixels whose mask value, resampled bilinearly (pixel
 * centres aligned, as MediaPipe does) from 256x256 to w x h, exceeds 0.5.
 * Test scaffolding: the worker uses compose.h's hsq_cmp_mask_upsample. */
static double mask_fraction(const float *m, uint32_t w, uint32_t h) {
    size_t above = 0;
    const int n = HSQ_SEG_INPUT;
    for (uint32_t y = 0; y < h; y++) {
        float sy = ((float)y + 0.5f) * n / (float)h - 0.5f;
        sy = sy < 0 ? 0 : sy > n - 1 ? n - 1 : sy;
        int y0 = (int)sy, y1 = y0 + 1 < n ? y0 + 1 : y0;
        float fy = sy - (float)y0;
        for (uint32_t x = 0; x < w; x++) {
            float sx = ((float)x + 0.5f) * n / (float)w - 0.5f;
            sx = sx < 0 ? 0 : sx > n - 1 ? n - 1 : sx;
            int x0 = (int)sx, x1 = x0 + 1 < n ? x0 + 1 : x0;
            float fx = sx - (float)x0;
            float a = m[y0 * n + x0] + (m[y0 * n + x1] - m[y0 * n + x0]) * fx;
            float b = m[y1 * n + x0] + (m[y1 * n + x1] - m[y1 * n + x0]) * fx;
            above += a + (b - a) * fy > 0.5f;
        }
    }
    return (double)above / ((double)w * h);
}

static void test_real_seg(const char *src, const hsq_img *astro, const hsq_img *cat) {
    char path[1024], err[256];
    snprintf(path, sizeof(path), "%s/models/selfie_segmentation.tflite", src);
    hsq_model *m = NULL;
    hsq_model_ctx *ctx = NULL;
    if (hsq_model_load(&m, path, err, sizeof(err)) != 0)
        HSQ_FAIL_("load %s: %s", path, err);
    HSQ_OK(hsq_model_ctx_new(&ctx, m));
    const size_t per = (size_t)HSQ_SEG_INPUT * HSQ_SEG_INPUT;
    float *masks = malloc(per * 2 * sizeof(float));
    const hsq_img *batch[2] = {astro, cat};
    HSQ_OK(hsq_seg_run(ctx, m, batch, 2, masks));
    double fa = mask_fraction(masks, astro->w, astro->h);
    NEAR(fa, 0.545, 0.01); /* models.md golden */
    for (size_t i = 0; i < 2 * per; i++)
        HSQ_ASSERT(masks[i] >= 0.0f && masks[i] <= 1.0f);
    /* The same image alone gives the same mask (batching is per image). */
    float *one = malloc(per * sizeof(float));
    HSQ_OK(hsq_seg_run(ctx, m, batch, 1, one));
    for (size_t i = 0; i < per; i++)
        NEAR(one[i], masks[i], 1e-4);
    free(one);
    free(masks);
    hsq_model_ctx_free(&ctx);
    hsq_model_free(&m);
}

static int test_real(const char *src) {
    char mpath[1024], apath[1024], cpath[1024];
    snprintf(mpath, sizeof(mpath), "%s/models/face_detection_short_range.tflite", src);
    snprintf(apath, sizeof(apath), "%s/samples/astronaut.png", src);
    snprintf(cpath, sizeof(cpath), "%s/samples/chelsea.png", src);
    FILE *f1 = fopen(mpath, "rb"), *f2 = fopen(apath, "rb"), *f3 = fopen(cpath, "rb");
    int have = f1 && f2 && f3;
    if (f1)
        fclose(f1);
    if (f2)
        fclose(f2);
    if (f3)
        fclose(f3);
    if (!have) {
        fprintf(stderr, "test_face: models/ or samples/ missing: real-model checks skipped\n");
        return 0;
    }
    char err[256];
    hsq_model *m = NULL;
    hsq_model_ctx *ctx = NULL;
    if (hsq_model_load(&m, mpath, err, sizeof(err)) != 0)
        HSQ_FAIL_("load %s: %s", mpath, err);
    HSQ_OK(hsq_model_ctx_new(&ctx, m));

    hsq_img astro, cat, crop;
    load_img(apath, &astro);
    load_img(cpath, &cat);
    /* The same portrait cropped to 320x512 (the letterbox's other axis). */
    crop.w = 320;
    crop.h = astro.h;
    crop.rgb = malloc((size_t)crop.w * crop.h * 3);
    for (uint32_t y = 0; y < crop.h; y++)
        memcpy(crop.rgb + (size_t)y * crop.w * 3, astro.rgb + ((size_t)y * astro.w + 96) * 3,
               (size_t)crop.w * 3);

    /* One batch of three. */
    const hsq_img *batch[3] = {&astro, &cat, &crop};
    static hsq_face_result res[3];
    HSQ_OK(hsq_face_detect(ctx, m, batch, 3, res));
    check_astronaut(&res[0], 0, 2.0);
    HSQ_ASSERT_EQ(res[1].n, 0);
    HSQ_ASSERT_EQ(res[1].subject, -1);
    HSQ_ASSERT(res[1].best_raw < 0.5f && res[1].best_raw > 0.3f);
    check_astronaut(&res[2], 96, 2.0);
    test_real_seg(src, &astro, &cat);

    /* The 8 EXIF orientations: store the pixels so that applying orientation o
     * gives the upright photo back (6 and 8 are each other's inverse). */
    for (int o = 1; o <= 8; o++) {
        hsq_img stored = {astro.w, astro.h, malloc((size_t)astro.w * astro.h * 3)};
        memcpy(stored.rgb, astro.rgb, (size_t)astro.w * astro.h * 3);
        HSQ_OK(hsq_img_orient(&stored, o == 6 ? 8 : o == 8 ? 6 : o));
        size_t jl;
        uint8_t *jpg = jpeg_with_orientation(&stored, o, &jl);
        HSQ_ASSERT_EQ(hsq_img_orientation(jpg, jl), o);
        hsq_img back;
        HSQ_OK(hsq_img_decode(jpg, jl, NULL, NULL, 0, &back));
        HSQ_ASSERT_EQ(back.w, astro.w);
        const hsq_img *one[1] = {&back};
        HSQ_OK(hsq_face_detect(ctx, m, one, 1, res));
        check_astronaut(&res[0], 0, 3.0); /* JPEG loss: a little looser */
        hsq_img_free(&back);
        hsq_img_free(&stored);
        free(jpg);
    }

    hsq_img_free(&astro);
    hsq_img_free(&cat);
    hsq_img_free(&crop);
    hsq_model_ctx_free(&ctx);
    hsq_model_free(&m);
    return 1;
}

int main(int argc, char **argv) {
    test_anchors();
    test_decode();
    test_nms();
    test_letterbox();
    test_pick_and_messages();
    test_frame();
    test_frame_simd();
    int real = argc > 1 ? test_real(argv[1]) : 0;
    printf("test_face: ok%s\n", real ? " (with the real model)" : "");
    /* Nothing real ran: report a skip so a missing models/ is visible. */
    return real ? 0 : 77;
}
