/* seg.c - selfie segmentation pre-processing and batched run (see seg.h). */
#include "worker/seg.h"

#include "schemas/err.h"

#include <stdlib.h>
#include <string.h>

void hsq_seg_preprocess(const hsq_img *img, float *t) {
    const int n = HSQ_SEG_INPUT;
    float kx = (float)img->w / (float)n, ky = (float)img->h / (float)n;
    float mx = (float)(img->w - 1), my = (float)(img->h - 1);
    for (int ty = 0; ty < n; ty++) {
        float sy = ((float)ty + 0.5f) * ky - 0.5f;
        sy = sy < 0 ? 0 : sy > my ? my : sy;
        uint32_t y0 = (uint32_t)sy, y1 = y0 + 1 < img->h ? y0 + 1 : y0;
        float fy = sy - (float)y0;
        const uint8_t *r0 = img->rgb + (size_t)y0 * img->w * 3;
        const uint8_t *r1 = img->rgb + (size_t)y1 * img->w * 3;
        for (int tx = 0; tx < n; tx++) {
            float sx = ((float)tx + 0.5f) * kx - 0.5f;
            sx = sx < 0 ? 0 : sx > mx ? mx : sx;
            uint32_t x0 = (uint32_t)sx, x1 = x0 + 1 < img->w ? x0 + 1 : x0;
            float fx = sx - (float)x0;
            float *o = t + ((size_t)ty * n + tx) * 3;
            for (int c = 0; c < 3; c++) {
                float a = r0[x0 * 3 + c] + (r0[x1 * 3 + c] - r0[x0 * 3 + c]) * fx;
                float b = r1[x0 * 3 + c] + (r1[x1 * 3 + c] - r1[x0 * 3 + c]) * fx;
                o[c] = (a + (b - a) * fy) / 255.0f;
            }
        }
    }
}

int hsq_seg_run(hsq_model_ctx *ctx, const hsq_model *m, const hsq_img *const *imgs, size_t n,
                float *masks) {
    const size_t side = HSQ_SEG_INPUT, per_in = side * side * 3, per_out = side * side;
    if (n < 1 || n > 64 || !ctx || !m || !masks)
        return HSQ_EINVAL;
    if (hsq_model_n_inputs(m) != 1 || hsq_model_n_outputs(m) != 1)
        return HSQ_EINVAL;
    hsq_shape in = hsq_model_input_shape(m, 0), out = hsq_model_output_shape(m, 0);
    if (in.rank != 4 || in.dims[1] != (int)side || in.dims[2] != (int)side || in.dims[3] != 3 ||
        out.rank != 4 || out.dims[1] != (int)side || out.dims[2] != (int)side || out.dims[3] != 1)
        return HSQ_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!imgs[i] || !imgs[i]->rgb || imgs[i]->w == 0 || imgs[i]->h == 0)
            return HSQ_EINVAL;
    float *t = malloc(per_in * n * sizeof(float));
    if (!t)
        return HSQ_ENOMEM;
    for (size_t i = 0; i < n; i++)
        hsq_seg_preprocess(imgs[i], t + i * per_in);
    const float *ins[1] = {t};
    const float *outs[1] = {NULL};
    int rc = hsq_model_run(ctx, (int)n, ins, outs);
    free(t);
    if (rc)
        return rc;
    memcpy(masks, outs[0], per_out * n * sizeof(float));
    return 0;
}
