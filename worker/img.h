/* img.h - image I/O for the worker: decode untrusted JPEG/PNG, centre-crop and
 * resize, encode outputs.
 *
 * Input is untrusted. The format is sniffed from magic bytes only (never from
 * a file name). Limits on bytes, width, height and pixel count are checked
 * against the file's header before any pixel memory is allocated, so a small
 * file that declares a huge image costs nothing. Decoder warnings are fatal:
 * a truncated file is HSQ_EIMGCORRUPT, never a half-grey "success".
 *
 * Pixels are always 8-bit RGB, tightly packed (stride = 3 * w). Every hsq_img
 * owns its pixels; hsq_img_free() releases them.
 *
 * Thread safety: every function is reentrant (no global state); a decode or
 * encode may run on any thread.
 */
#ifndef HSQ_WORKER_IMG_H
#define HSQ_WORKER_IMG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Same values as hsq_fmt in schemas/wire.h (checked there by the worker). */
typedef enum { HSQ_IMG_NONE = 0, HSQ_IMG_JPEG = 1, HSQ_IMG_PNG = 2 } hsq_img_fmt;

#define HSQ_IMG_DEFAULT_MAX_BYTES (50ull * 1024 * 1024)
#define HSQ_IMG_DEFAULT_MAX_SIDE 20000u
#define HSQ_IMG_DEFAULT_MAX_PIXELS (100ull * 1000 * 1000)
#define HSQ_IMG_DEFAULT_QUALITY 90

typedef struct {
    uint64_t max_bytes;  /* encoded size */
    uint32_t max_side;   /* width and height, each */
    uint64_t max_pixels; /* width * height */
} hsq_img_limits;

/* 8-bit RGB, tightly packed, owned. */
typedef struct {
    uint32_t w, h;
    uint8_t *rgb;
} hsq_img;

/* A requested output size, used to choose a reduced JPEG decode scale. */
typedef struct {
    uint32_t w, h;
} hsq_img_size;

/* What a header says, without decoding pixels. */
typedef struct {
    hsq_img_fmt fmt;
    uint32_t w, h;
} hsq_img_info;

void hsq_img_limits_default(hsq_img_limits *lim);

/* Format from magic bytes: HSQ_IMG_JPEG, HSQ_IMG_PNG or HSQ_IMG_NONE. */
hsq_img_fmt hsq_img_sniff(const void *data, size_t len);

const char *hsq_img_fmt_ext(hsq_img_fmt fmt); /* "jpg", "png", "bin" */

/* Read the header only and check it against lim (NULL = defaults).
 * Errors: HSQ_EIMGCORRUPT (empty, truncated or invalid header, zero size),
 * HSQ_EIMGUNSUPP (not JPEG/PNG; CMYK JPEG), HSQ_EIMGTOOLARGE, HSQ_ENOMEM. */
int hsq_img_probe(const void *data, size_t len, const hsq_img_limits *lim, hsq_img_info *info);

/* Decode data into *out (RGB8; PNG alpha composited over white, grey, palette
 * and 16-bit converted). For a JPEG much larger than needed, pass the output
 * sizes the caller will produce (targets, n): the decoder then uses the
 * smallest DCT scale at which the centre crop for every target is still at
 * least twice the target in both dimensions. targets may be NULL (n = 0) for
 * full size. *out is untouched on failure.
 * Errors: as hsq_img_probe. */
int hsq_img_decode(const void *data, size_t len, const hsq_img_limits *lim,
                   const hsq_img_size *targets, size_t n, hsq_img *out);

/* Release img->rgb and zero img. Harmless on a zeroed image. */
void hsq_img_free(hsq_img *img);

/* The centre crop of a sw x sh image with the aspect ratio of tw x th:
 * *cx, *cy the top-left corner, *cw, *ch the size (each >= 1). All inputs
 * must be >= 1. */
void hsq_img_crop_box(uint32_t sw, uint32_t sh, uint32_t tw, uint32_t th, uint32_t *cx,
                      uint32_t *cy, uint32_t *cw, uint32_t *ch);

/* Resample the region (cx, cy, cw, ch) of src to tw x th into *out: area
 * averaging along an axis that shrinks, bilinear along one that grows,
 * separable, float accumulation, rounded to nearest.
 * Errors: HSQ_EINVAL (empty or out-of-bounds region, zero target),
 * HSQ_ENOMEM. */
int hsq_img_resize(const hsq_img *src, uint32_t cx, uint32_t cy, uint32_t cw, uint32_t ch,
                   uint32_t tw, uint32_t th, hsq_img *out);

/* hsq_img_crop_box + hsq_img_resize: fill tw x th from the centre of src. */
int hsq_img_fit(const hsq_img *src, uint32_t tw, uint32_t th, hsq_img *out);

/* Encode as baseline JPEG, 4:2:0, JFIF header only (no EXIF or other
 * metadata). quality 1..100; 0 = HSQ_IMG_DEFAULT_QUALITY. *out is a malloc'd
 * buffer (caller frees) of *len bytes.
 * Errors: HSQ_EINVAL (empty image, quality > 100), HSQ_ENOMEM, HSQ_EINTERNAL. */
int hsq_img_encode_jpeg(const hsq_img *img, int quality, uint8_t **out, size_t *len);

/* Encode as 8-bit RGB PNG with no ancillary chunks except pHYs when dpi > 0.
 * *out is a malloc'd buffer (caller frees) of *len bytes.
 * Errors: HSQ_EINVAL (empty image), HSQ_ENOMEM, HSQ_EINTERNAL. */
int hsq_img_encode_png(const hsq_img *img, uint32_t dpi, uint8_t **out, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
