/* face_run.c - hsq_face_detect: one model run for a batch of photos (see
 * face.h). Apart from face.c so that the pure pre/post-processing links
 * without the model runtime. */
#include "worker/face.h"

#include "schemas/err.h"

#include <stdlib.h>
#include <string.h>

int hsq_face_detect(hsq_model_ctx *ctx, const hsq_model *m, const hsq_img *const *imgs, size_t n,
                    hsq_face_result *res) {
    if (n < 1 || n > 64 || !ctx || !m)
        return HSQ_EINVAL;
    if (hsq_model_n_inputs(m) != 1 || hsq_model_n_outputs(m) != 2)
        return HSQ_EINVAL;
    hsq_shape in = hsq_model_input_shape(m, 0);
    if (in.rank != 4 || in.dims[1] != HSQ_FACE_INPUT || in.dims[2] != HSQ_FACE_INPUT ||
        in.dims[3] != 3)
        return HSQ_EINVAL;
    /* Find the outputs by shape: regressors [.,896,16], scores [.,896,1]. */
    int ireg = -1, icls = -1;
    for (int j = 0; j < 2; j++) {
        hsq_shape s = hsq_model_output_shape(m, j);
        int last = s.dims[s.rank - 1];
        if (s.rank == 3 && s.dims[1] == HSQ_FACE_ANCHORS && last == HSQ_FACE_COORDS)
            ireg = j;
        else if (s.rank == 3 && s.dims[1] == HSQ_FACE_ANCHORS && last == 1)
            icls = j;
    }
    if (ireg < 0 || icls < 0)
        return HSQ_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!imgs[i] || !imgs[i]->rgb || imgs[i]->w == 0 || imgs[i]->h == 0)
            return HSQ_EINVAL;

    const size_t per = (size_t)HSQ_FACE_INPUT * HSQ_FACE_INPUT * 3;
    float *t = malloc(per * n * sizeof(float));
    hsq_face *raw = malloc(HSQ_FACE_ANCHORS * sizeof(hsq_face));
    if (!t || !raw) {
        free(t);
        free(raw);
        return HSQ_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        hsq_face_preprocess(imgs[i], t + i * per);
    const float *ins[1] = {t};
    const float *outs[2] = {NULL, NULL};
    int rc = hsq_model_run(ctx, (int)n, ins, outs);
    free(t);
    if (rc) {
        free(raw);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        hsq_face_result *r = &res[i];
        memset(r, 0, sizeof(*r));
        size_t k =
            hsq_face_decode(outs[ireg] + i * HSQ_FACE_ANCHORS * HSQ_FACE_COORDS,
                            outs[icls] + i * HSQ_FACE_ANCHORS, raw, HSQ_FACE_ANCHORS, &r->best_raw);
        k = hsq_face_nms(raw, k);
        hsq_face_lb lb = hsq_face_letterbox(imgs[i]->w, imgs[i]->h);
        r->n = (uint32_t)(k < HSQ_FACE_MAX ? k : HSQ_FACE_MAX);
        for (uint32_t j = 0; j < r->n; j++) {
            r->faces[j] = raw[j];
            hsq_face_unletterbox(&r->faces[j], &lb);
        }
        r->subject = hsq_face_pick(r->faces, r->n, imgs[i]->w, imgs[i]->h);
    }
    free(raw);
    return 0;
}
