/* face.c - BlazeFace short-range pre/post-processing (see face.h). */
#include "worker/face.h"

#include "schemas/err.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- anchors */

/* SsdAnchorsCalculator with the package's options: strides 8,16,16,16; the
 * three stride-16 layers merge into one 8x8 grid; each layer gives 2 anchors
 * per cell (aspect 1.0 + the interpolated one), fixed size 1. */
void hsq_face_anchors(float *cx, float *cy) {
    static const struct { int grid, per_cell; } layers[] = {{16, 2}, {8, 6}};
    size_t k = 0;
    for (size_t l = 0; l < 2; l++) {
        int g = layers[l].grid;
        for (int y = 0; y < g; y++)
            for (int x = 0; x < g; x++)
                for (int a = 0; a < layers[l].per_cell; a++) {
                    cx[k] = ((float)x + 0.5f) / (float)g;
                    cy[k] = ((float)y + 0.5f) / (float)g;
                    k++;
                }
    }
}

/* ---------------------------------------------------------------- letterbox */

hsq_face_lb hsq_face_letterbox(uint32_t w, uint32_t h) {
    hsq_face_lb lb = {w, h, 0.0f, 0.0f};
    if (w >= h)
        lb.py = (1.0f - (float)h / (float)w) / 2.0f;
    else
        lb.px = (1.0f - (float)w / (float)h) / 2.0f;
    return lb;
}

/* One channel value at (sx, sy) in pixel-centre coordinates, bilinear; the
 * caller guarantees the point lies in the image's extent, and coordinates are
 * clamped to the outermost pixel centres. */
static void sample_rgb(const hsq_img *img, float sx, float sy, float out[3]) {
    float mx = (float)(img->w - 1), my = (float)(img->h - 1);
    sx = sx < 0 ? 0 : sx > mx ? mx : sx;
    sy = sy < 0 ? 0 : sy > my ? my : sy;
    uint32_t x0 = (uint32_t)sx, y0 = (uint32_t)sy;
    uint32_t x1 = x0 + 1 < img->w ? x0 + 1 : x0, y1 = y0 + 1 < img->h ? y0 + 1 : y0;
    float fx = sx - (float)x0, fy = sy - (float)y0;
    const uint8_t *r0 = img->rgb + (size_t)y0 * img->w * 3,
                  *r1 = img->rgb + (size_t)y1 * img->w * 3;
    for (int c = 0; c < 3; c++) {
        float a = r0[x0 * 3 + c] + (r0[x1 * 3 + c] - r0[x0 * 3 + c]) * fx;
        float b = r1[x0 * 3 + c] + (r1[x1 * 3 + c] - r1[x0 * 3 + c]) * fx;
        out[c] = a + (b - a) * fy;
    }
}

void hsq_face_preprocess(const hsq_img *img, float *t) {
    const int n = HSQ_FACE_INPUT;
    hsq_face_lb lb = hsq_face_letterbox(img->w, img->h);
    float sxn = 1.0f - 2.0f * lb.px, syn = 1.0f - 2.0f * lb.py;
    for (int ty = 0; ty < n; ty++) {
        /* tensor pixel centre -> normalised image coordinate */
        float v = (((float)ty + 0.5f) / (float)n - lb.py) / syn;
        for (int tx = 0; tx < n; tx++) {
            float u = (((float)tx + 0.5f) / (float)n - lb.px) / sxn;
            float *o = t + ((size_t)ty * n + tx) * 3;
            if (u < 0.0f || u > 1.0f || v < 0.0f || v > 1.0f) {
                o[0] = o[1] = o[2] = -1.0f; /* zero border, then the range map */
                continue;
            }
            float rgb[3];
            sample_rgb(img, u * (float)img->w - 0.5f, v * (float)img->h - 0.5f, rgb);
            for (int c = 0; c < 3; c++)
                o[c] = rgb[c] / 127.5f - 1.0f;
        }
    }
}

/* ---------------------------------------------------------------- decode */

size_t hsq_face_decode(const float *reg, const float *logits, hsq_face *out, size_t max,
                       float *best) {
    float acx[HSQ_FACE_ANCHORS], acy[HSQ_FACE_ANCHORS];
    const float s = (float)HSQ_FACE_INPUT;
    size_t n = 0;
    float top = 0.0f;
    hsq_face_anchors(acx, acy);
    for (size_t i = 0; i < HSQ_FACE_ANCHORS; i++) {
        float l = logits[i];
        if (l != l) /* NaN */
            continue;
        l = l < -100.0f ? -100.0f : l > 100.0f ? 100.0f : l;
        float score = 1.0f / (1.0f + expf(-l));
        if (score > top)
            top = score;
        if (score < HSQ_FACE_MIN_SCORE)
            continue;
        const float *r = reg + i * HSQ_FACE_COORDS;
        float cx = r[0] / s + acx[i], cy = r[1] / s + acy[i];
        float w = r[2] / s, h = r[3] / s;
        if (!(w >= 0.0f) || !(h >= 0.0f)) /* negative or NaN size */
            continue;
        if (n < max) {
            hsq_face *f = &out[n];
            f->x0 = cx - w / 2;
            f->y0 = cy - h / 2;
            f->x1 = cx + w / 2;
            f->y1 = cy + h / 2;
            for (int k = 0; k < HSQ_FACE_KP_COUNT; k++) {
                f->kp[k].x = r[4 + 2 * k] / s + acx[i];
                f->kp[k].y = r[5 + 2 * k] / s + acy[i];
            }
            f->score = score;
        }
        n++;
    }
    if (best)
        *best = top;
    return n;
}

/* ---------------------------------------------------------------- NMS */

float hsq_face_iou(const hsq_face *a, const hsq_face *b) {
    float ix0 = fmaxf(a->x0, b->x0), iy0 = fmaxf(a->y0, b->y0);
    float ix1 = fminf(a->x1, b->x1), iy1 = fminf(a->y1, b->y1);
    float aa = (a->x1 - a->x0) * (a->y1 - a->y0), ab = (b->x1 - b->x0) * (b->y1 - b->y0);
    if (!(aa > 0.0f) || !(ab > 0.0f) || ix1 <= ix0 || iy1 <= iy0)
        return 0.0f;
    float inter = (ix1 - ix0) * (iy1 - iy0);
    return inter / (aa + ab - inter);
}

static int by_score_desc(const void *pa, const void *pb) {
    const hsq_face *a = pa, *b = pb;
    return a->score < b->score ? 1 : a->score > b->score ? -1 : 0;
}

/* MediaPipe's WeightedNonMaxSuppression: take the best remaining detection;
 * every remaining one with IoU > threshold against it (itself included)
 * joins its cluster; emit the score-weighted mean of the cluster's corners
 * and keypoints with the best score; repeat on what is left. */
size_t hsq_face_nms(hsq_face *f, size_t n) {
    if (n == 0)
        return 0;
    qsort(f, n, sizeof(*f), by_score_desc);
    unsigned char *used = calloc(n, 1);
    hsq_face *res = malloc(n * sizeof(*res));
    if (!used || !res) {
        /* Bookkeeping-sized (n <= 896): follow the project rule, abort on OOM. */
        abort();
    }
    size_t nout = 0;
    for (size_t i = 0; i < n; i++) {
        if (used[i])
            continue;
        double wsum = 0, x0 = 0, y0 = 0, x1 = 0, y1 = 0, kx[HSQ_FACE_KP_COUNT] = {0},
               ky[HSQ_FACE_KP_COUNT] = {0};
        const hsq_face *best = &f[i];
        for (size_t j = i; j < n; j++) {
            if (used[j])
                continue;
            if (j != i && !(hsq_face_iou(best, &f[j]) > HSQ_FACE_NMS_IOU))
                continue;
            used[j] = 1;
            double w = f[j].score;
            wsum += w;
            x0 += w * f[j].x0;
            y0 += w * f[j].y0;
            x1 += w * f[j].x1;
            y1 += w * f[j].y1;
            for (int k = 0; k < HSQ_FACE_KP_COUNT; k++) {
                kx[k] += w * f[j].kp[k].x;
                ky[k] += w * f[j].kp[k].y;
            }
        }
        hsq_face *o = &res[nout++];
        o->x0 = (float)(x0 / wsum);
        o->y0 = (float)(y0 / wsum);
        o->x1 = (float)(x1 / wsum);
        o->y1 = (float)(y1 / wsum);
        for (int k = 0; k < HSQ_FACE_KP_COUNT; k++) {
            o->kp[k].x = (float)(kx[k] / wsum);
            o->kp[k].y = (float)(ky[k] / wsum);
        }
        o->score = best->score;
    }
    memcpy(f, res, nout * sizeof(*res));
    free(res);
    free(used);
    return nout;
}

/* ---------------------------------------------------------------- mapping */

void hsq_face_unletterbox(hsq_face *f, const hsq_face_lb *lb) {
    float sx = (float)lb->w / (1.0f - 2.0f * lb->px), sy = (float)lb->h / (1.0f - 2.0f * lb->py);
    f->x0 = (f->x0 - lb->px) * sx;
    f->x1 = (f->x1 - lb->px) * sx;
    f->y0 = (f->y0 - lb->py) * sy;
    f->y1 = (f->y1 - lb->py) * sy;
    for (int k = 0; k < HSQ_FACE_KP_COUNT; k++) {
        f->kp[k].x = (f->kp[k].x - lb->px) * sx;
        f->kp[k].y = (f->kp[k].y - lb->py) * sy;
    }
}

void hsq_face_toletterbox(hsq_face *f, const hsq_face_lb *lb) {
    float sx = (1.0f - 2.0f * lb->px) / (float)lb->w, sy = (1.0f - 2.0f * lb->py) / (float)lb->h;
    f->x0 = f->x0 * sx + lb->px;
    f->x1 = f->x1 * sx + lb->px;
    f->y0 = f->y0 * sy + lb->py;
    f->y1 = f->y1 * sy + lb->py;
    for (int k = 0; k < HSQ_FACE_KP_COUNT; k++) {
        f->kp[k].x = f->kp[k].x * sx + lb->px;
        f->kp[k].y = f->kp[k].y * sy + lb->py;
    }
}

int hsq_face_pick(const hsq_face *f, size_t n, uint32_t w, uint32_t h) {
    int best = -1;
    float best_key = -1.0f;
    float hx = (float)w / 2, hy = (float)h / 2, half_diag = sqrtf(hx * hx + hy * hy);
    for (size_t i = 0; i < n; i++) {
        float cx = (f[i].x0 + f[i].x1) / 2, cy = (f[i].y0 + f[i].y1) / 2;
        float d = sqrtf((cx - hx) * (cx - hx) + (cy - hy) * (cy - hy)) / half_diag;
        d = d > 1.0f ? 1.0f : d;
        float key = (f[i].x1 - f[i].x0) * (1.0f - 0.5f * d);
        if (key > best_key) {
            best_key = key;
            best = (int)i;
        }
    }
    return best;
}

/* ---------------------------------------------------------------- messages */

#define NAME_BUF 280 /* a 255-byte client file name, quoted */

static const char *quoted(const char *name, char *buf, size_t cap) {
    if (!name || !name[0])
        return "";
    snprintf(buf, cap, " '%s'", name);
    return buf;
}

int hsq_face_check_found(const hsq_face_result *r, const char *name, char *msg, size_t msglen) {
    if (r->n > 0 && r->subject >= 0)
        return 0;
    char q[NAME_BUF];
    if (msg && msglen)
        snprintf(msg, msglen,
                 "no face found in portrait%s: use a photo where your face is clearly visible "
                 "and faces the camera",
                 quoted(name, q, sizeof(q)));
    return HSQ_ENOFACE;
}

int hsq_face_check_size(const hsq_face *s, float out_face_px, const char *name, char *msg,
                        size_t msglen) {
    float need = out_face_px / HSQ_FACE_MAX_UPSCALE;
    if (need < (float)HSQ_FACE_MIN_PX)
        need = (float)HSQ_FACE_MIN_PX;
    float have = s->x1 - s->x0;
    if (have >= need)
        return 0;
    char q[NAME_BUF];
    if (msg && msglen)
        snprintf(msg, msglen,
                 "the face in%s is %.0f px wide; use a photo where your face is at least %.0f px "
                 "wide",
                 name && name[0] ? quoted(name, q, sizeof(q)) : " the portrait", (double)have,
                 (double)ceilf(need));
    return HSQ_EFACESMALL;
}
