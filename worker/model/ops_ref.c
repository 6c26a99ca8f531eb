/* ops_ref.c - naive reference convolutions: direct loops over the output,
 * the window and the channels, no packing, no im2col, no intrinsics.
 *
 * They are the baseline the bench measures the fast kernels against and a
 * second opinion in tests; hsq_model_ctx_set_reference() runs a whole model
 * on them.
 */
#include "worker/model/internal.h"

#include <stddef.h>

static float clamp(float v, hsq_act act) {
    v = v < act.lo ? act.lo : v;
    return v > act.hi ? act.hi : v;
}

void hsq_ref_conv2d(const hsq_geom *g, const float *in, const float *ohwi, const float *bias,
                    hsq_act act, float *out) {
    for (int b = 0; b < g->n; b++)
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++)
                for (int o = 0; o < g->oc; o++) {
                    float s = bias ? bias[o] : 0.0f;
                    for (int ky = 0; ky < g->kh; ky++) {
                        int iy = oy * g->sh - g->pad_t + ky * g->dh;
                        if (iy < 0 || iy >= g->ih)
                            continue;
                        for (int kx = 0; kx < g->kw; kx++) {
                            int ix = ox * g->sw - g->pad_l + kx * g->dw;
                            if (ix < 0 || ix >= g->iw)
                                continue;
                            const float *ip =
                                in +
                                (((size_t)b * g->ih + (size_t)iy) * g->iw + (size_t)ix) * g->ic;
                            const float *wp =
                                ohwi +
                                (((size_t)o * g->kh + (size_t)ky) * g->kw + (size_t)kx) * g->ic;
                            for (int i = 0; i < g->ic; i++)
                                s += ip[i] * wp[i];
                        }
                    }
                    out[(((size_t)b * g->oh + (size_t)oy) * g->ow + (size_t)ox) * g->oc +
                        (size_t)o] = clamp(s, act);
                }
}

void hsq_ref_dwconv2d(const hsq_geom *g, const float *in, const float *w, const float *bias,
                      hsq_act act, float *out) {
    const int mult = g->oc / g->ic;
    for (int b = 0; b < g->n; b++)
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++)
                for (int o = 0; o < g->oc; o++) {
                    float s = bias ? bias[o] : 0.0f;
                    for (int ky = 0; ky < g->kh; ky++) {
                        int iy = oy * g->sh - g->pad_t + ky * g->dh;
                        if (iy < 0 || iy >= g->ih)
                            continue;
                        for (int kx = 0; kx < g->kw; kx++) {
                            int ix = ox * g->sw - g->pad_l + kx * g->dw;
                            if (ix < 0 || ix >= g->iw)
                                continue;
                            s +=
                                in[(((size_t)b * g->ih + (size_t)iy) * g->iw + (size_t)ix) * g->ic +
                                   (size_t)(o / mult)] *
                                w[((size_t)ky * g->kw + (size_t)kx) * g->oc + (size_t)o];
                        }
                    }
                    out[(((size_t)b * g->oh + (size_t)oy) * g->ow + (size_t)ox) * g->oc +
                        (size_t)o] = clamp(s, act);
                }
}

void hsq_ref_tconv2d(const hsq_geom *g, const float *in, const float *w, const float *bias,
                     hsq_act act, float *out) {
    for (int b = 0; b < g->n; b++)
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++)
                for (int o = 0; o < g->oc; o++) {
                    float s = bias ? bias[o] : 0.0f;
                    for (int ky = 0; ky < g->kh; ky++) {
                        int ty = oy + g->pad_t - ky; /* = iy * sh */
                        if (ty < 0 || ty % g->sh || ty / g->sh >= g->ih)
                            continue;
                        for (int kx = 0; kx < g->kw; kx++) {
                            int tx = ox + g->pad_l - kx;
                            if (tx < 0 || tx % g->sw || tx / g->sw >= g->iw)
                                continue;
                            const float *ip =
                                in + (((size_t)b * g->ih + (size_t)(ty / g->sh)) * g->iw +
                                      (size_t)(tx / g->sw)) *
                                         g->ic;
                            const float *wp =
                                w + (((size_t)o * g->kh + (size_t)ky) * g->kw + (size_t)kx) * g->ic;
                            for (int i = 0; i < g->ic; i++)
                                s += ip[i] * wp[i];
                        }
                    }
                    out[(((size_t)b * g->oh + (size_t)oy) * g->ow + (size_t)ox) * g->oc +
                        (size_t)o] = clamp(s, act);
                }
}
