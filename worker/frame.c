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
    for (uint32_t y = 0; y < xf->h; y++) {
        for (uint32_t x = 0; x < xf->w; x++) {
            float acc[3] = {0, 0, 0};
            int in = 0;
            for (int j = 0; j < ss; j++)
                for (int i = 0; i < ss; i++) {
                    float sx, sy;
                    hsq_frame_to_src(xf, (float)x + ((float)i + 0.5f) / (float)ss,
                                     (float)y + ((float)j + 0.5f) / (float)ss, &sx, &sy);
                    in += sample(src, sx, sy, acc);
                }
            uint8_t *o = px + ((size_t)y * xf->w + x) * 3;
            for (int c = 0; c < 3; c++) {
                float v = acc[c] * inv + 0.5f;
                o[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
            if (coverage)
                coverage[(size_t)y * xf->w + x] = (uint8_t)((in * 255 + ss * ss / 2) / (ss * ss));
        }
    }
    out->w = xf->w;
    out->h = xf->h;
    out->rgb = px;
    return 0;
}
