/* face.h - face detection with MediaPipe's BlazeFace short-range model.
 *
 * The pre- and post-processing reproduce MediaPipe's FaceDetection graph as
 * docs in /work/shared/notes/models.md describe it, so that scores, boxes and
 * keypoints match MediaPipe's own runtime (score +/- 0.01, box +/- 2 px):
 *   - letterbox the whole photo into 128x128 (aspect kept, centred, the
 *     scaled size not rounded), one plain bilinear sample per tensor pixel
 *     (no antialiasing even when shrinking: the model was fed that way),
 *     zero border, RGB, v = pixel / 127.5 - 1 (so the border is -1.0);
 *   - 896 SSD anchors (16x16 x 2 + 8x8 x 6), fixed size 1, centres
 *     ((x + 0.5) / grid, (y + 0.5) / grid) in (layer, y, x, anchor) order;
 *   - linear box and 6-keypoint decoding in 128-pixel units, score =
 *     sigmoid(clamp(logit, -100, 100)) >= 0.5;
 *   - weighted non-maximum suppression (IoU > 0.3 joins a cluster; corners
 *     and keypoints are the score-weighted mean, the score the best one);
 *   - undo the letterbox to image pixels.
 *
 * The subject is the face with the largest box width x centrality weight,
 * where centrality = 1 - 0.5 * d and d is the distance from the face centre
 * to the image centre divided by the half-diagonal (0 at the centre, 1 in a
 * corner): a face in the middle counts fully, one in a corner at half its
 * width, so a large bystander at the edge does not beat the person who
 * framed themselves, but a clearly larger face still wins.
 *
 * Pure computation except hsq_face_detect, which runs a model context. No
 * global state; reentrant.
 */
#ifndef HSQ_WORKER_FACE_H
#define HSQ_WORKER_FACE_H

#include "worker/img.h"
#include "worker/model/model.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HSQ_FACE_INPUT 128 /* tensor side */
#define HSQ_FACE_ANCHORS 896
#define HSQ_FACE_COORDS 16 /* values per anchor in "regressors" */
#define HSQ_FACE_MIN_SCORE 0.5f
#define HSQ_FACE_NMS_IOU 0.3f
#define HSQ_FACE_MAX 32 /* faces kept per image after NMS (best first) */

/* Face size rule (hsq_face_check_size): the subject's box width in source
 * pixels must be at least the largest face width any requested output
 * frames it at, divided by HSQ_FACE_MAX_UPSCALE, and never below
 * HSQ_FACE_MIN_PX. Beyond a 5x upscale a face is visibly soft. */
#define HSQ_FACE_MAX_UPSCALE 5.0f
#define HSQ_FACE_MIN_PX 40u

/* Keypoint order in the model (the subject's right/left: the right eye is on
 * the image's left in a non-mirrored photo). */
enum {
    HSQ_FACE_KP_REYE = 0,
    HSQ_FACE_KP_LEYE = 1,
    HSQ_FACE_KP_NOSE = 2,
    HSQ_FACE_KP_MOUTH = 3,
    HSQ_FACE_KP_REAR = 4,
    HSQ_FACE_KP_LEAR = 5,
    HSQ_FACE_KP_COUNT = 6
};

typedef struct {
    float x, y;
} hsq_face_pt;

/* One detection. Coordinates are normalised to the letterboxed tensor
 * ([0,1]) until hsq_face_unletterbox, then image pixels. */
typedef struct {
    float x0, y0, x1, y1;
    hsq_face_pt kp[HSQ_FACE_KP_COUNT];
    float score;
} hsq_face;

/* Letterbox of a w x h image into the square tensor: the fraction of the
 * tensor padded on each side, horizontally (px) and vertically (py). */
typedef struct {
    uint32_t w, h;
    float px, py;
} hsq_face_lb;

/* The faces found in one image, best score first, in image pixels. */
typedef struct {
    uint32_t n;     /* faces found (0 = none) */
    int subject;    /* index of the subject in faces, -1 when n == 0 */
    float best_raw; /* best score before the threshold, for messages and tests */
    hsq_face faces[HSQ_FACE_MAX];
} hsq_face_result;

/* Anchor centres (normalised) in model order; cx, cy hold HSQ_FACE_ANCHORS. */
void hsq_face_anchors(float *cx, float *cy);

hsq_face_lb hsq_face_letterbox(uint32_t w, uint32_t h);

/* Fill a 128x128x3 float tensor (NHWC, one image) from img as described at
 * the top. img must be non-empty. */
void hsq_face_preprocess(const hsq_img *img, float *tensor);

/* Decode one image's raw outputs (regressors [896][16], logits [896]) into
 * detections that pass the score threshold, in normalised tensor
 * coordinates. Writes at most max; returns how many passed (may exceed max:
 * the rest are dropped, lowest anchors first). *best gets the best score
 * seen (thresholded or not). */
size_t hsq_face_decode(const float *regressors, const float *logits, hsq_face *out, size_t max,
                       float *best);

/* Weighted NMS in place: faces[0..n) become the merged detections, best
 * score first; returns their count. */
size_t hsq_face_nms(hsq_face *faces, size_t n);

/* IoU of two boxes (0 when either is empty). */
float hsq_face_iou(const hsq_face *a, const hsq_face *b);

/* Map a detection from normalised letterbox coordinates to image pixels,
 * and back (the inverse, used by tests). */
void hsq_face_unletterbox(hsq_face *f, const hsq_face_lb *lb);
void hsq_face_toletterbox(hsq_face *f, const hsq_face_lb *lb);

/* The subject among n faces of a w x h image (rule above); -1 when n == 0. */
int hsq_face_pick(const hsq_face *faces, size_t n, uint32_t w, uint32_t h);

/* Detect faces in n images with one model run (n <= 64). ctx must run the
 * face model (input [n,128,128,3], outputs regressors and classificators).
 * res[i] gets image i's faces.
 * Errors: HSQ_EINVAL (n out of range, an empty image, a model whose shapes
 * are not BlazeFace's), HSQ_ENOMEM, and what hsq_model_run returns. */
int hsq_face_detect(hsq_model_ctx *ctx, const hsq_model *m, const hsq_img *const *imgs, size_t n,
                    hsq_face_result *res);

/* The error for a result: 0 when it has a subject, else HSQ_ENOFACE with
 * "no face found in portrait 'name': use a photo where your face is clearly
 * visible and faces the camera" in msg (name may be NULL or ""). */
int hsq_face_check_found(const hsq_face_result *r, const char *name, char *msg, size_t msglen);

/* HSQ_EFACESMALL when the subject's box width (image px) is below what an
 * output needing a face out_face_px wide allows (rule above), with "the face
 * in 'name' is 80 px wide; use a photo where your face is at least 200 px
 * wide" in msg; else 0. */
int hsq_face_check_size(const hsq_face *subject, float out_face_px, const char *name, char *msg,
                        size_t msglen);

#ifdef __cplusplus
}
#endif

#endif
