/* seg.h - person segmentation with MediaPipe's selfie segmentation model.
 *
 * Pre-processing as MediaPipe's SelfieSegmentation graph (notes/models.md
 * section 3): the whole crop is stretched to 256x256 (no letterbox), one
 * plain bilinear sample per tensor pixel at pixel centres, RGB, v = p / 255.
 * The output is already P(person) in [0,1] (the model ends in LOGISTIC): no
 * further sigmoid. The 256x256 mask maps back onto the crop by plain
 * bilinear resampling (hsq_cmp_mask_upsample) and is then refined against
 * the crop's pixels (hsq_cmp_matte_refine); both live in compose.h.
 *
 * Reentrant; hsq_seg_run uses the caller's model context.
 */
#ifndef HSQ_WORKER_SEG_H
#define HSQ_WORKER_SEG_H

#include "worker/img.h"
#include "worker/model/model.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HSQ_SEG_INPUT 256 /* tensor side; the mask has the same size */

/* Fill one 256x256x3 float tensor from img (non-empty). */
void hsq_seg_preprocess(const hsq_img *img, float *tensor);

/* Segment n crops (1..64) with one model run. masks receives n * 256 * 256
 * floats (crop i at masks + i * 256 * 256), caller-allocated.
 * Errors: HSQ_EINVAL (n out of range, an empty image, a model that is not
 * [n,256,256,3] -> [n,256,256,1]), HSQ_ENOMEM, and hsq_model_run's. */
int hsq_seg_run(hsq_model_ctx *ctx, const hsq_model *m, const hsq_img *const *imgs, size_t n,
                float *masks);

#ifdef __cplusplus
}
#endif

#endif
