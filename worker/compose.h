/* compose.h - per-pixel compositing stages of the headshot pipeline: matte
 * refinement, backgrounds, compositing, clothing recolour, retouch and tone.
 *
 * Buffers. Colour images are float RGB, interleaved (R, G, B per pixel),
 * row-major, tightly packed (stride 3 * w floats), sRGB-encoded values in
 * [0, 1]: the pipeline converts its 8-bit hsq_img once with hsq_cmp_from_u8
 * and back once with hsq_cmp_to_u8. Masks and mattes are float, one value per
 * pixel, w * h, in [0, 1]. The caller allocates every output; sizes are
 * always passed explicitly. Compositing and blurs work on the sRGB-encoded
 * values (as matting datasets composite); colour statistics (clothing, tone)
 * convert to CIE Lab or linear light where the maths needs it.
 *
 * Strengths are in [0, 1]; a strength of 0 returns the input bit-exactly
 * (the functions return before touching a pixel). Pixels outside a mask
 * (mask == 0) are never written.
 *
 * Errors: every function returns 0 or a negative hsq code: HSQ_EINVAL for a
 * NULL buffer, a zero size, more than HSQ_CMP_MAX_PIXELS pixels or a
 * parameter out of range; HSQ_ENOMEM when scratch memory (hsq_trymalloc)
 * cannot be had. Outputs are unspecified after a failure, inputs untouched
 * unless the function works in place.
 *
 * Thread safety: no global state; every function may run on any thread.
 * Cost: the filters are O(w * h) whatever their radius (running box sums).
 */
#ifndef HSQ_WORKER_COMPOSE_H
#define HSQ_WORKER_COMPOSE_H

#include "worker/img.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HSQ_CMP_MAX_PIXELS (1ull << 28)

/* ---- conversion ---- */

/* 8-bit RGB (stride 3 * w) -> float RGB, v / 255. */
int hsq_cmp_from_u8(const uint8_t *rgb, uint32_t w, uint32_t h, float *out);

/* float RGB -> 8-bit RGB, clamped to [0, 1] and rounded to nearest. */
int hsq_cmp_to_u8(const float *rgb, uint32_t w, uint32_t h, uint8_t *out);

/* Tests: on = 1 makes every function use its portable loops even where the
 * CPU has AVX2 (the two give the same results). Not thread-safe; call it
 * before any other function of this module. */
void hsq_cmp_force_portable(int on);

/* ---- 1. matte refinement ---- */

/* Bilinear upsampling (or resampling) of a one-channel mask sw x sh to
 * dw x dh, pixel centres aligned, edges clamped. A constant mask stays
 * exactly constant. The model's 256 x 256 mask of a squashed crop maps back
 * onto the crop's full size this way. dst must not overlap src. */
int hsq_cmp_mask_upsample(const float *src, uint32_t sw, uint32_t sh, float *dst, uint32_t dw,
                          uint32_t dh);

/* Guided filter parameters (He, Sun, Tang, "Guided Image Filtering", 2010/2013;
 * the subsampled variant from He & Sun, "Fast Guided Filter", 2015). */
typedef struct {
    int radius;    /* box radius in full-size pixels, >= 1: windows of (2r+1)^2 */
    float eps;     /* regularisation (variance units of [0,1] values), > 0; larger
                      = smoother, fewer guide edges transferred */
    int subsample; /* 1 = exact; s > 1 computes the coefficients on an s-times
                      smaller grid (radius / s) and upsamples them: ~s^2 faster */
    int color;     /* 1 = colour guide (3x3 covariance per window), 0 = the
                      guide's luma only */
} hsq_cmp_gf;

/* q = guided filter of p (one channel, w x h) under the guide (float RGB,
 * w x h). q may be p (in place). Output is not clamped.
 * Errors: HSQ_EINVAL, HSQ_ENOMEM. */
int hsq_cmp_guided_filter(const float *guide, const float *p, uint32_t w, uint32_t h,
                          const hsq_cmp_gf *prm, float *q);

typedef struct {
    int radius;     /* 0 = auto: 2 x the coarse mask's pixel size, in [2, 64] */
    float eps;      /* default 1e-4 */
    float contrast; /* before filtering, p = clamp((p - 0.5) * contrast + 0.5); default 4,
                       1 = off. A guided filter cannot sharpen a ramp where the guide
                       is flat (there it is a box blur of p), so the upsampled mask's
                       blur would survive as a halo; steepening it first and letting
                       the filter re-soften it along the image's own edges (He's
                       feathering takes a binary mask) removes the halo and keeps hair. */
    int subsample;  /* 0 = auto: 1 up to 1 MP, then about sqrt(MP), keeping radius/s >= 2 */
    float lo, hi;   /* after filtering: alpha <= lo -> 0, >= hi -> 1, linear in
                       between (kills the faint haze a filter leaves); defaults
                       0.02, 0.98; lo = 0, hi = 1 disables */
} hsq_cmp_matte;

void hsq_cmp_matte_default(hsq_cmp_matte *m);

/* The soft alpha for the image rgb (w x h) from a coarse segmentation mask
 * (cw x ch, any size; the same size as the image is allowed): bilinear
 * upsampling, contrast, colour guided filter against rgb (edges snap to the
 * image's edges: hair, ears, collars), clip to [lo, hi] and clamp. prm NULL =
 * defaults. alpha is w x h.
 * Errors: HSQ_EINVAL, HSQ_ENOMEM. */
int hsq_cmp_matte_refine(const float *rgb, uint32_t w, uint32_t h, const float *coarse, uint32_t cw,
                         uint32_t ch, const hsq_cmp_matte *prm, float *alpha);

/* Foreground colour estimation ("blur fusion", Forte & Pitie 2021): where
 * 0 < alpha < 1 the photo's pixel mixes subject and old background; fg gets
 * the subject's own colour there, estimated from nearby confident pixels, so
 * that hair over a green wall does not carry green onto the new background.
 * fg[i] = rgb[i] exactly where alpha is 0 or 1. fg may not be rgb.
 * Errors: HSQ_EINVAL, HSQ_ENOMEM. */
int hsq_cmp_fg_estimate(const float *rgb, const float *alpha, uint32_t w, uint32_t h, float *fg);

/* ---- 2. backgrounds (out: float RGB w x h) ---- */

/* Every pixel = rgb (each in [0, 1]). */
int hsq_cmp_bg_solid(float *out, uint32_t w, uint32_t h, const float rgb[3]);

/* Vertical linear gradient: row 0 = top, row h-1 = bottom exactly. */
int hsq_cmp_bg_gradient(float *out, uint32_t w, uint32_t h, const float top[3],
                        const float bottom[3]);

/* A studio backdrop: the base colour lifted towards a bright centre and
 * darkened towards the corners, along ellipses with the image's aspect. */
typedef struct {
    float rgb[3]; /* base colour */
    float lift;   /* centre = rgb * (1 + lift); default 0.12 */
    float dark;   /* farthest corner = rgb * (1 - dark); default 0.35, in [0, 1] */
    float cx, cy; /* centre as fractions of w and h; default 0.5, 0.42 (light above the head) */
} hsq_cmp_vignette;

void hsq_cmp_vignette_default(hsq_cmp_vignette *v, const float rgb[3]);

/* factor(d) = (1 + lift) + (-dark - lift) * smoothstep(d), d the elliptical
 * distance from (cx, cy), 1 at the farthest corner; results clamped to 1. */
int hsq_cmp_bg_vignette(float *out, uint32_t w, uint32_t h, const hsq_cmp_vignette *v);

/* A reference photo as background: scaled to cover w x h and centre-cropped
 * (hsq_img_fit: area averaging down, bilinear up), then, with blur_sigma > 0,
 * a Gaussian blur of that sigma in output pixels (three box passes) for a
 * shallow depth of field.
 * Errors: HSQ_EINVAL, HSQ_ENOMEM. */
int hsq_cmp_bg_image(const hsq_img *ref, uint32_t w, uint32_t h, float blur_sigma, float *out);

/* In-place Gaussian blur approximated by three box passes (the box sizes of
 * Kovesi's "Fast almost-Gaussian filtering"), channels interleaved (1..16),
 * borders handled by shrinking the window. sigma <= 0.5 is a no-op. */
int hsq_cmp_blur(float *buf, uint32_t w, uint32_t h, int channels, float sigma);

/* ---- 3. compositing ---- */

typedef struct {
    float wrap;       /* light wrap strength, 0..1; default 0.35 */
    float wrap_sigma; /* light wrap reach in px; 0 = auto (0.6 % of the longer side, >= 2) */
    float harmonize;  /* 0..1 shift of the subject's mean chroma towards the
                         background's (luminance kept); default 0.12 */
} hsq_cmp_comp;

void hsq_cmp_comp_default(hsq_cmp_comp *c);

/* out = alpha * fg' + (1 - alpha) * bg, where fg' is fg with
 * - light wrap: screen-blended with wrap * alpha * blur(bg * (1 - alpha)),
 *   i.e. background light that falls on the subject's rim from the visible
 *   backdrop, strongest just inside the edge and nothing deep inside;
 * - harmonisation: plus harmonize * (chroma of mean(bg, visible part) -
 *   chroma of mean(fg, alpha-weighted)), luminance unchanged.
 * With alpha 0 the output is bg exactly, with alpha 1 (and no edge within
 * the wrap's reach, harmonize 0) fg exactly. prm NULL = defaults. out may be
 * fg or bg.
 * Errors: HSQ_EINVAL, HSQ_ENOMEM. */
int hsq_cmp_composite(const float *fg, const float *bg, const float *alpha, uint32_t w, uint32_t h,
                      const hsq_cmp_comp *prm, float *out);

/* ---- 4. CIE Lab and clothing colour ---- */

/* sRGB (D65) <-> CIE L*a*b* (D65 white), n pixels, in and out may be the
 * same buffer. Exact formulas: the sRGB transfer curve, the IEC 61966-2-1
 * matrix, the CIE f(t) with (6/29)^3 and the white point the matrix rows
 * give (0.95047, 1, 1.08883). lab_to_rgb clamps to [0, 1]. */
void hsq_cmp_rgb_to_lab(const float *rgb, size_t n, float *lab);
void hsq_cmp_lab_to_rgb(const float *lab, size_t n, float *rgb);

/* Per-channel Lab mean and standard deviation of a region. */
typedef struct {
    float mean[3], sd[3];
    double weight; /* sum of the weights used (pixels, for a hard mask) */
} hsq_cmp_lab_stats;

/* Stats of the mask-weighted pixels of rgb (mask NULL = all pixels).
 * Errors: HSQ_EINVAL (also: the mask selects nothing). */
int hsq_cmp_lab_stats_of(const float *rgb, uint32_t w, uint32_t h, const float *mask,
                         hsq_cmp_lab_stats *out);

/* The colour of the garment in a clothing reference photo (rw x rh). With
 * ref_mask (rw x rh), the stats of the masked pixels. Without, the dominant
 * region: a weighted 4-means clustering in Lab of up to 128 x 128 samples,
 * weighted towards the centre (Gaussian, sigma 35 % of each side); clusters
 * closer than 12 (Delta E with lightness at half weight: shades of one
 * colour) are merged; each cluster scores its centre-weighted mass times the
 * share of its samples not on the outer 8 % border (which a plain backdrop
 * owns), and the best cluster's own mean and SD are returned. Deterministic.
 * The result depends only on the reference: compute it once per job.
 * Errors: HSQ_EINVAL (also: an all-zero ref_mask), HSQ_ENOMEM. */
int hsq_cmp_cloth_ref_stats(const float *ref, uint32_t rw, uint32_t rh, const float *ref_mask,
                            hsq_cmp_lab_stats *out);

/* The garment's own colour inside a clothing mask of the photo: the same
 * clustering over the mask-weighted samples (no centre weight, no border
 * rule), the heaviest merged cluster, mask-weighted stats. A tie, a badge, a
 * hand or a helmet inside the mask does not pull the statistics off the
 * garment. Used by hsq_cmp_cloth_transfer.
 * Errors: HSQ_EINVAL (also: the mask selects nothing), HSQ_ENOMEM. */
int hsq_cmp_cloth_src_stats(const float *rgb, uint32_t w, uint32_t h, const float *mask,
                            hsq_cmp_lab_stats *out);

typedef struct {
    float strength;   /* 0..1 blend of the result; default 1 */
    float l_strength; /* 0..1 share of the lightness transfer; default 0.85: a dark
                         target lands a little lighter than the reference, so the
                         garment's own shading (folds, light) stays readable */
    float max_ratio;  /* clamp of the SD ratio per channel to [1/r, r]; default 2:
                         a flat white shirt must not amplify JPEG noise into speckle */
    float select;     /* colour selectivity: pixels whose colour is this far (Delta E,
                         lightness at half weight) from the garment's are left alone,
                         full effect up to half of it, smooth between; default 35;
                         0 = recolour everything in the mask */
} hsq_cmp_cloth;

void hsq_cmp_cloth_default(hsq_cmp_cloth *c);

/* Recolour the clothing region of rgb (in place) to the reference colour:
 * Reinhard et al. 2001 statistics transfer in CIE Lab,
 * t = (x - mean_src) * clamp(sd_ref / sd_src) + mean_ref per channel, with the
 * source stats from hsq_cmp_cloth_src_stats (the garment's dominant colour
 * in the mask); a and b take t, L moves l_strength of the way; the result is
 * blended in by strength * mask * selectivity. Colours far from the
 * garment's (the white shirt under a jacket, a tie, a badge, a hand) keep
 * theirs; nearer ones move by the same mapping. It recolours the garment
 * that is there; it does not change its cut, style or texture. A mask that
 * selects nothing is a no-op. prm NULL = defaults.
 * Errors: HSQ_EINVAL, HSQ_ENOMEM. */
int hsq_cmp_cloth_transfer(float *rgb, uint32_t w, uint32_t h, const float *mask,
                           const hsq_cmp_lab_stats *ref, const hsq_cmp_cloth *prm);

/* ---- 5. retouch and tone (in place) ---- */

/* Edge-preserving skin smoothing inside mask (the face region, soft edges
 * welcome): a self-guided filter per channel (eps = 0.05^2: blemishes and
 * pores, whose local variance is small, flatten; eyes, brows, lips and the
 * face outline, whose variance is large, stay), blended by strength * mask.
 * Only the mask's bounding box (plus the radius) is processed. radius 0 =
 * auto: the box's width / 60, at least 2.
 * Errors: HSQ_EINVAL, HSQ_ENOMEM. */
int hsq_cmp_skin_smooth(float *rgb, uint32_t w, uint32_t h, const float *mask, float strength,
                        int radius);

/* Exposure and white balance of the subject, mild by construction, in linear
 * light. Exposure: a gain that brings the subject's 99th luminance percentile
 * to 0.80 (linear), clamped to [0.85, 1.6], never darkening when more than
 * 0.5 % of the subject is clipped, with a soft shoulder above 0.8 so that
 * highlights do not clip. White balance: "bright pixels" (those between the
 * 95th and 99.5th percentile, unclipped) are taken as the illuminant and made
 * neutral, gains clamped to [0.9, 1.1]. Both are raised to the power strength
 * and applied weighted by mask (NULL = whole image): pass the alpha, or run
 * it on the foreground before compositing, so that a chosen background colour
 * stays exact. A mask selecting nothing is a no-op.
 * Errors: HSQ_EINVAL, HSQ_ENOMEM. */
int hsq_cmp_tone(float *rgb, uint32_t w, uint32_t h, const float *mask, float strength);

/* Unsharp mask on luma only (no colour fringes): x += amount * (Y - blur(Y)),
 * clamped to [0, 1]. amount 0..1 (1 = 100 %); sigma in px, 0 = 1.0.
 * Errors: HSQ_EINVAL, HSQ_ENOMEM. */
int hsq_cmp_sharpen(float *rgb, uint32_t w, uint32_t h, float amount, float sigma);

#ifdef __cplusplus
}
#endif

#endif
