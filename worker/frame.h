/* frame.h - eye levelling and head-and-shoulders framing.
 *
 * Given the subject's detection in the decoded photo, a frame maps every
 * output pixel to a point of the photo: the photo is rotated about the eyes
 * so that the eye line is horizontal, scaled so that the face box has a fixed
 * width in the output, and placed so that the eye line sits at a fixed height
 * and the face box centre at the horizontal middle. The fractions depend on
 * the output's shape (hsq_frame_rule_for):
 *
 *   shape                       eye line from top   face box width
 *   portrait  (w/h < 0.9)       37 % of h           36 % of w
 *   square    (0.9..1.1)        42 % of h           40 % of w
 *   landscape (w/h > 1.1)       40 % of h           36 % of h
 *
 * BlazeFace's box spans roughly brows to chin, so in a 4:5 portrait the hair
 * top lands near 16 % from the top and the chin near 63 %, leaving the
 * shoulders in frame; in a square 600x600 (US passport) the head (chin to
 * crown, ~1.4 box heights) is ~56 % of the height and the eyes ~58 % from the
 * bottom, inside the 50-69 % and 56-69 % the US rules ask for.
 *
 * Rendering samples the photo bilinearly (several samples per output pixel,
 * box-averaged, when the photo is shrunk by more than 1.5x, so large photos do
 * not alias) and writes a coverage mask: 255 where the output pixel lies
 * wholly inside the photo, 0 where wholly outside (those pixels get the
 * nearest edge colour and become background when composited).
 */
#ifndef HSQ_WORKER_FRAME_H
#define HSQ_WORKER_FRAME_H

#include "worker/face.h"
#include "worker/img.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    float eye_y;  /* eye line, fraction of the output height from the top */
    float face_w; /* face box width, fraction of the output width (landscape: height) */
    int by_height;
} hsq_frame_rule;

/* Output size presets (the CLI's --size names). dpi is the suggested DPI. */
typedef struct {
    const char *name;
    uint32_t w, h, dpi;
} hsq_frame_preset;

extern const hsq_frame_preset hsq_frame_presets[]; /* ends with {NULL} */

/* The preset called name, or NULL. */
const hsq_frame_preset *hsq_frame_preset_find(const char *name);

hsq_frame_rule hsq_frame_rule_for(uint32_t w, uint32_t h);

/* The face box width in output pixels for a w x h output. */
float hsq_frame_face_px(uint32_t w, uint32_t h);

/* The mapping from output pixels to photo pixels (continuous coordinates,
 * pixel (i, j) covers [i, i+1) x [j, j+1)). */
typedef struct {
    uint32_t w, h; /* output */
    float angle;   /* radians the photo is rotated by to level the eyes */
    float scale;   /* output px per photo px */
    float ax, ay;  /* anchor in the photo */
    float ox, oy;  /* the anchor's place in the output */
    float ux, uy;  /* unit vector along the eye line, in the photo */
} hsq_frame_xf;

/* Plan the frame of subject (image px) for a w x h output.
 * Errors: HSQ_EINVAL (zero size, degenerate face box). */
int hsq_frame_plan(const hsq_face *subject, uint32_t w, uint32_t h, hsq_frame_xf *xf);

void hsq_frame_to_src(const hsq_frame_xf *xf, float ox, float oy, float *sx, float *sy);
void hsq_frame_to_out(const hsq_frame_xf *xf, float sx, float sy, float *ox, float *oy);

/* Map a detection (boxes are mapped by their corners' bounding box,
 * keypoints exactly) from photo to output pixels. */
void hsq_frame_face_to_out(const hsq_frame_xf *xf, const hsq_face *in, hsq_face *out);

/* Render src through xf into *out (xf->w x xf->h, owned by the caller
 * afterwards) and, when coverage is not NULL, xf->w * xf->h coverage bytes.
 * Errors: HSQ_EINVAL (empty src), HSQ_ENOMEM. */
int hsq_frame_render(const hsq_img *src, const hsq_frame_xf *xf, hsq_img *out, uint8_t *coverage);

/* Tests: on = 1 makes hsq_frame_render use its portable loops even where
 * the CPU has AVX2 (the two give the same bytes). Not thread-safe; call it
 * before any render. */
void hsq_frame_force_portable(int on);

#ifdef __cplusplus
}
#endif

#endif
