/* frame.c - eye levelling and head-and-shoulders framing (see frame.h). */
#include "worker/frame.h"

#include "schemas/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    const int32_t half = nss * 32768, div = nss * 65536;
    for (uint32_t y = 0; y < xf->h; y++) {
        float cx0, cy0;
        to_src(xf, 0.5f, (float)y + 0.5f, &cx0, &cy0);
        for (uint32_t x = 0; x < xf->w; x++) {
            uint8_t *o = px + ((size_t)y * xf->w + x) * 3;
            float cx = cx0 + (float)x * kxx, cy = cy0 + (float)x * kyx;
            int in = 0;
            if (cx > lo_x && cx < hi_x && cy > lo_y && cy < hi_y) {
                int32_t acc[3] = {0, 0, 0};
                for (int k = 0; k < nss; k++)
                    sample_in(src->rgb, stride, cx + offx[k], cy + offy[k], acc);
                for (int c = 0; c < 3; c++)
                    o[c] = (uint8_t)((acc[c] + half) / div);
                in = nss;
            } else {
                float acc[3] = {0, 0, 0};
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
            }
            if (coverage)
                coverage[(size_t)y * xf->w + x] = (uint8_t)((in * 255 + nss / 2) / nss);
        }
    }
    out->w = xf->w;
    out->h = xf->h;
    out->rgb = px;
    return 0;
}
