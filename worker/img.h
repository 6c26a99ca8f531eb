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
 * owns its pixels; hsq_img_free() releases them. Grey JPEGs become R = G = B;
 * CMYK and YCCK JPEGs are converted with the naive formula (no colour
 * management), taking the values as inverted when an Adobe APP14 segment is
 * present, which is how Photoshop writes them.
 *
 * EXIF orientation is applied by default: the decoded buffer is the image as
 * a viewer shows it (tags 5-8 swap width and height). The EXIF parser is our
 * own and reads one thing only, tag 0x0112 in IFD0, bounds-checked against
 * the segment; anything odd about it means orientation 1. A progressive JPEG
 * with more scans than the limit is refused before any decoding (the CPU bomb
 * of "Two Issues with the JPEG Standard"; libjpeg-turbo 2.1 has no limit of
 * its own below 500).
 *
 * Outputs carry no metadata beyond the resolution: JPEG gets a JFIF APP0 (its
 * density set when a DPI is given), PNG an optional pHYs. No EXIF, GPS, ICC,
 * comments or text chunks are ever written, whatever the input carried.
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
#define HSQ_IMG_DEFAULT_MAX_SCANS 100u
#define HSQ_IMG_MSG_MAX 320 /* enough for a label with a 255-byte name */

typedef struct {
    uint64_t max_bytes;  /* encoded size */
    uint32_t max_side;   /* width and height, each */
    uint64_t max_pixels; /* width * height */
    uint32_t max_scans;  /* SOS markers in a JPEG; 0 = HSQ_IMG_DEFAULT_MAX_SCANS */
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

/* What a header says, without decoding pixels. w and h are the size that
 * hsq_img_decode returns at full scale, i.e. after the EXIF orientation
 * (swapped for orientations 5-8). */
typedef struct {
    hsq_img_fmt fmt;
    uint32_t w, h;
    int orientation; /* EXIF orientation, 1..8; 1 when absent or invalid */
} hsq_img_info;

/* Options for hsq_img_decode_ex. Zero-initialised = hsq_img_decode's
 * behaviour with default limits. */
typedef struct {
    const hsq_img_limits *lim;   /* NULL = defaults */
    const hsq_img_size *targets; /* reduced JPEG scale, as hsq_img_decode; may be NULL */
    size_t n_targets;
    int keep_orientation; /* 1 = return the pixels as stored, ignoring EXIF */
    const char *what;     /* the photo's role in messages: "portrait"; NULL = "image" */
    const char *name;     /* the client's file name, or NULL / "" when none */
    /* Caller memory for the pixels (may be NULL): a JPEG whose result fits
     * in dst_cap bytes and needs no second buffer (RGB or grey, EXIF
     * orientation 1-4) is decoded straight into dst, and then out->rgb ==
     * dst: the caller's memory, never passed to hsq_img_free. Anything else
     * (PNG, CMYK, orientation 5-8, too small) is allocated as usual. A
     * buffer kept from job to job saves the page faults of fresh memory,
     * which cost about as much as the decode itself for a 12 MP photo. */
    uint8_t *dst;
    size_t dst_cap;
} hsq_img_decode_opts;

void hsq_img_limits_default(hsq_img_limits *lim);

/* Format from magic bytes: HSQ_IMG_JPEG, HSQ_IMG_PNG or HSQ_IMG_NONE. */
hsq_img_fmt hsq_img_sniff(const void *data, size_t len);

const char *hsq_img_fmt_ext(hsq_img_fmt fmt); /* "jpg", "png", "bin" */

/* Read the header (and the EXIF orientation) only and check it against lim
 * (NULL = defaults). The progressive scan count is not checked here: that
 * needs a walk over the whole file, which hsq_img_decode does.
 * Errors: HSQ_EIMGCORRUPT (empty, truncated or invalid header, zero size),
 * HSQ_EIMGUNSUPP (not JPEG/PNG), HSQ_EIMGTOOLARGE, HSQ_ENOMEM. */
int hsq_img_probe(const void *data, size_t len, const hsq_img_limits *lim, hsq_img_info *info);

/* Decode data into *out (RGB8; PNG alpha composited over white, grey, palette
 * and 16-bit converted). For a JPEG much larger than needed, pass the output
 * sizes the caller will produce (targets, n): the decoder then uses the
 * smallest DCT scale of 1/2, 1/4 and 1/8 (the fast ones) at which the centre
 * crop for every target is still at least twice the target in both
 * dimensions. targets may be NULL (n = 0) for
 * full size. Targets are in displayed orientation, like the result: EXIF
 * orientation is applied. *out is untouched on failure.
 * Errors: as hsq_img_probe, plus HSQ_EIMGTOOLARGE for a JPEG with more than
 * lim->max_scans scans. */
int hsq_img_decode(const void *data, size_t len, const hsq_img_limits *lim,
                   const hsq_img_size *targets, size_t n, hsq_img *out);

/* hsq_img_decode with options, and on failure one sentence for the client in
 * msg (if not NULL; msglen bytes, HSQ_IMG_MSG_MAX is always enough for the
 * text to be whole), naming the photo as the worker does:
 *   "portrait 'me.jpg': too many progressive scans (more than 100)"
 *   "background: image is corrupt or truncated"
 * The detail is specific where the decoder knows more than the code (limits
 * with their values, scans); otherwise it is hsq_strerror(code). msg is set
 * to "" on success.
 * Errors: as hsq_img_decode. */
int hsq_img_decode_ex(const void *data, size_t len, const hsq_img_decode_opts *opts, hsq_img *out,
                      char *msg, size_t msglen);

/* The orientation (1..8) in a TIFF block, the payload of an EXIF APP1 after
 * its "Exif\0\0" or of a PNG eXIf chunk. Reads only IFD0 tag 0x0112 (SHORT,
 * count 1) and follows no pointer (no next IFD, no SubIFD), so a hostile block
 * cannot loop; every offset is checked against len. Returns 1 for anything
 * missing, malformed or outside 1..8. */
int hsq_img_exif_orientation(const void *tiff, size_t len);

/* The EXIF orientation of a whole JPEG or PNG file (the first Exif APP1
 * before the first scan; the first eXIf chunk with a good CRC). 1 when none. */
int hsq_img_orientation(const void *data, size_t len);

/* Rotate/flip img in place (its buffer may be replaced) from EXIF orientation
 * o to the upright view: 1 none, 2 mirror, 3 rotate 180, 4 flip, 5 transpose,
 * 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise; 5-8 swap
 * w and h. img is unchanged on failure.
 * Errors: HSQ_EINVAL (o outside 1..8, empty image), HSQ_ENOMEM. */
int hsq_img_orient(hsq_img *img, int o);

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
 * buffer (caller frees) of *len bytes. Same as hsq_img_encode_jpeg_dpi with
 * dpi 0.
 * Errors: HSQ_EINVAL (empty image, quality > 100), HSQ_ENOMEM, HSQ_EINTERNAL. */
int hsq_img_encode_jpeg(const hsq_img *img, int quality, uint8_t **out, size_t *len);

/* hsq_img_encode_jpeg with the JFIF density set to dpi dots per inch in both
 * directions (units = 1), which is what Photoshop and print labs read as the
 * print size. dpi 0 leaves libjpeg's "aspect ratio 1:1, no unit" header.
 * Errors: as hsq_img_encode_jpeg, plus HSQ_EINVAL for dpi > 65535. */
int hsq_img_encode_jpeg_dpi(const hsq_img *img, int quality, uint32_t dpi, uint8_t **out,
                            size_t *len);

/* Encode as 8-bit RGB PNG with no ancillary chunks except pHYs when dpi > 0.
 * *out is a malloc'd buffer (caller frees) of *len bytes.
 * Errors: HSQ_EINVAL (empty image), HSQ_ENOMEM, HSQ_EINTERNAL. */
int hsq_img_encode_png(const hsq_img *img, uint32_t dpi, uint8_t **out, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
