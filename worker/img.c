/* img.c - JPEG/PNG decode (untrusted input), centre-crop + resize, encode.
 *
 * DESIGN. Every decode goes through the same three gates, in this order:
 * (1) byte limit and magic-byte sniff, (2) header parse and the limits on
 * width, height and pixel count, (3) pixel allocation with hsq_trymalloc. No
 * pixel memory exists before (2) has passed, which is what makes a 300-byte
 * "48010 x 16173" bomb cheap to refuse. For PNG the IHDR is read by hand
 * before libpng even sees the file, so an over-limit image is reported as
 * too large rather than as whatever libpng's own user limit would say.
 *
 * JPEG files are walked marker by marker before libjpeg sees them (bounded:
 * every segment length is checked against the buffer, the entropy-coded data
 * is skipped with memchr). The walk finds the first Exif APP1, notes an Adobe
 * APP14 (inverted CMYK) and counts SOS markers, so that a file with too many
 * progressive scans is refused before any decoding. Where the walk meets
 * something it does not understand it stops counting and leaves the verdict
 * to libjpeg, which is strict (STOPONWARNING) and has its own scan limit as a
 * backstop (TJFLAG_LIMITSCANS, 500 in 2.1).
 *
 * libpng reports errors by longjmp. Each setjmp lives in a small function
 * whose only local state is a pointer to a struct owned by its caller, so no
 * automatic variable is modified between setjmp and longjmp (C11 7.13.2.1)
 * and the caller frees everything on either path.
 */
#include "worker/img.h"

#include "common/alloc.h"
#include "schemas/err.h"

#include <limits.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
static const uint8_t jpeg_magic[3] = {0xff, 0xd8, 0xff};

/* Ancillary PNG chunk limits: we use none of them, so keep them tiny. */
#define PNG_CHUNK_CACHE_MAX 128
#define PNG_CHUNK_MALLOC_MAX (8u * 1024 * 1024)

/* A specific reason for a failure, for the client's message ("" = none). */
#define WHY_MAX 160

static void say(char *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(char *why, const char *fmt, ...) {
    if (!why)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, WHY_MAX, fmt, ap);
    va_end(ap);
}

void hsq_img_limits_default(hsq_img_limits *lim) {
    lim->max_bytes = HSQ_IMG_DEFAULT_MAX_BYTES;
    lim->max_side = HSQ_IMG_DEFAULT_MAX_SIDE;
    lim->max_pixels = HSQ_IMG_DEFAULT_MAX_PIXELS;
    lim->max_scans = HSQ_IMG_DEFAULT_MAX_SCANS;
}

hsq_img_fmt hsq_img_sniff(const void *data, size_t len) {
    const uint8_t *p = data;
    if (len >= sizeof png_magic && memcmp(p, png_magic, sizeof png_magic) == 0)
        return HSQ_IMG_PNG;
    if (len >= sizeof jpeg_magic && memcmp(p, jpeg_magic, sizeof jpeg_magic) == 0)
        return HSQ_IMG_JPEG;
    return HSQ_IMG_NONE;
}

const char *hsq_img_fmt_ext(hsq_img_fmt fmt) {
    switch (fmt) {
    case HSQ_IMG_JPEG:
        return "jpg";
    case HSQ_IMG_PNG:
        return "png";
    default:
        return "bin";
    }
}

void hsq_img_free(hsq_img *img) {
    free(img->rgb);
    img->rgb = NULL;
    img->w = img->h = 0;
}

/* A buffer shorter than a magic number but equal to its start is a truncated
 * upload, not a foreign format (an empty buffer counts as truncated). */
static int is_magic_prefix(const uint8_t *p, size_t len) {
    return (len < sizeof png_magic && memcmp(p, png_magic, len) == 0) ||
           (len < sizeof jpeg_magic && memcmp(p, jpeg_magic, len) == 0);
}

static int check_dims(uint64_t w, uint64_t h, const hsq_img_limits *lim, char *why) {
    if (w == 0 || h == 0)
        return HSQ_EIMGCORRUPT;
    if (w > lim->max_side || h > lim->max_side) {
        say(why, "image is %llux%llu pixels; the limit is %lu pixels per side",
            (unsigned long long)w, (unsigned long long)h, (unsigned long)lim->max_side);
        return HSQ_EIMGTOOLARGE;
    }
    if (w * h > lim->max_pixels) {
        say(why, "image is %llux%llu pixels (%.1f MP); the limit is %.1f MP", (unsigned long long)w,
            (unsigned long long)h, (double)(w * h) / 1e6, (double)lim->max_pixels / 1e6);
        return HSQ_EIMGTOOLARGE;
    }
    return 0;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- PNG header, read by hand ---- */

/* Signature, then the IHDR chunk: length 13, "IHDR", width, height, ... */
static int png_header(const uint8_t *p, size_t len, const hsq_img_limits *lim, hsq_img_info *info,
                      char *why) {
    if (len < 8 + 8 + 13)
        return HSQ_EIMGCORRUPT;
    if (be32(p + 8) != 13 || memcmp(p + 12, "IHDR", 4) != 0)
        return HSQ_EIMGCORRUPT;
    uint32_t w = be32(p + 16), h = be32(p + 20);
    if (w > 0x7fffffffu || h > 0x7fffffffu) /* PNG's own maximum */
        return HSQ_EIMGCORRUPT;
    int r = check_dims(w, h, lim, why);
    if (r)
        return r;
    info->fmt = HSQ_IMG_PNG;
    info->w = w;
    info->h = h;
    info->orientation = 1;
    return 0;
}

/* ---- JPEG ---- */

/* Map a TurboJPEG failure to our vocabulary. A warning (TJERR_WARNING, e.g.
 * "Premature end of JPEG file") is as fatal as an error: with
 * TJFLAG_STOPONWARNING the image is incomplete. libjpeg's out-of-memory error
 * is the only one that is not the file's fault. */
static int tj_error(tjhandle h) {
    const char *msg = tjGetErrorStr2(h);
    if (msg && (strstr(msg, "Insufficient memory") || strstr(msg, "Memory allocation failure")))
        return HSQ_ENOMEM;
    return HSQ_EIMGCORRUPT;
}

/* The stored size (before orientation) and colour space (TJCS_*). */
static int jpeg_header(tjhandle tj, const uint8_t *p, size_t len, const hsq_img_limits *lim,
                       hsq_img_info *info, int *cs, char *why) {
    int w = 0, h = 0, subsamp = 0;
    *cs = 0;
    if (len > ULONG_MAX)
        return HSQ_EIMGTOOLARGE;
    if (tjDecompressHeader3(tj, p, (unsigned long)len, &w, &h, &subsamp, cs) != 0)
        return tj_error(tj);
    if (w <= 0 || h <= 0)
        return HSQ_EIMGCORRUPT;
    int r = check_dims((uint64_t)w, (uint64_t)h, lim, why);
    if (r)
        return r;
    info->fmt = HSQ_IMG_JPEG;
    info->w = (uint32_t)w;
    info->h = (uint32_t)h;
    info->orientation = 1;
    return 0;
}

/* What the marker walk found. */
typedef struct {
    const uint8_t *exif; /* TIFF block of the first Exif APP1 before the first scan */
    size_t exif_len;
    int adobe;      /* an APP14 "Adobe" segment: CMYK values are stored inverted */
    uint32_t scans; /* SOS markers seen (the walk stops at max_scans + 1) */
} jpeg_walk;

/* Walk the segments after SOI. max_scans 0 stops at the first SOS (header
 * only); otherwise the walk skips each scan's entropy-coded data and goes on
 * until EOI, the end of the buffer, more than max_scans scans, or something
 * that is not a well-formed segment. Reads nothing outside p[0..len). */
static void jpeg_walk_markers(const uint8_t *p, size_t len, uint32_t max_scans, jpeg_walk *jw) {
    memset(jw, 0, sizeof *jw);
    size_t i = 2;
    while (i < len) {
        if (p[i] != 0xff)
            return;                     /* garbage between segments: libjpeg's call */
        while (i < len && p[i] == 0xff) /* fill bytes */
            i++;
        if (i >= len)
            return;
        uint8_t m = p[i++];
        if (m == 0xd9 || m == 0xd8 || m == 0x00) /* EOI, a second SOI, a stuffed zero */
            return;
        if ((m >= 0xd0 && m <= 0xd7) || m == 0x01) /* RSTn, TEM: no length */
            continue;
        if (len - i < 2)
            return;
        size_t seg = (size_t)p[i] << 8 | p[i + 1]; /* counts its own two bytes */
        if (seg < 2 || seg > len - i)
            return;
        const uint8_t *d = p + i + 2;
        size_t dn = seg - 2;
        if (m == 0xe1 && !jw->exif && jw->scans == 0 && dn >= 6 && memcmp(d, "Exif\0\0", 6) == 0) {
            jw->exif = d + 6;
            jw->exif_len = dn - 6;
        } else if (m == 0xee && dn >= 5 && memcmp(d, "Adobe", 5) == 0) {
            jw->adobe = 1;
        }
        i += seg;
        if (m != 0xda)
            continue;
        jw->scans++;
        if (max_scans == 0 || jw->scans > max_scans)
            return;
        /* Entropy-coded data ends at 0xff followed by a byte that is not a
         * stuffed 0x00, a fill 0xff or an RSTn marker. */
        for (;;) {
            const uint8_t *f = memchr(p + i, 0xff, len - i);
            if (!f)
                return;
            size_t k = (size_t)(f - p);
            if (len - k < 2)
                return;
            uint8_t b = p[k + 1];
            if (b == 0x00 || (b >= 0xd0 && b <= 0xd7)) {
                i = k + 2;
            } else if (b == 0xff) {
                i = k + 1;
            } else {
                i = k;
                break;
            }
        }
    }
}

/* ---- EXIF orientation ---- */

static uint32_t tiff16(const uint8_t *p, int be) {
    return be ? (uint32_t)p[0] << 8 | p[1] : (uint32_t)p[1] << 8 | p[0];
}

static uint32_t tiff32(const uint8_t *p, int be) {
    return be ? be32(p) : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* TIFF header: "II" or "MM", 42, offset of IFD0. IFD: entry count (2), then
 * 12-byte entries {tag 2, type 2, count 4, value-or-offset 4}; a SHORT value
 * sits in the first two bytes of the value field, in the file's byte order.
 * Offsets are from the start of the TIFF block. Nothing here follows a
 * pointer: orientation lives in IFD0, and a tag found only in the EXIF SubIFD
 * or in IFD1 (the thumbnail's) is deliberately not used, so there is no chain
 * to loop over and no recursion to bound. */
int hsq_img_exif_orientation(const void *tiff, size_t len) {
    const uint8_t *t = tiff;
    if (!t || len < 8)
        return 1;
    int be;
    if (t[0] == 'I' && t[1] == 'I')
        be = 0;
    else if (t[0] == 'M' && t[1] == 'M')
        be = 1;
    else
        return 1;
    if (tiff16(t + 2, be) != 42)
        return 1;
    uint32_t off = tiff32(t + 4, be); /* odd offsets break the spec but occur: accepted */
    if (off < 8 || off > len - 2)
        return 1;
    /* Only entries wholly inside the block are read: a truncated IFD keeps
     * what it has, and a count of 65535 costs at most len / 12 steps. */
    size_t n = tiff16(t + off, be);
    size_t room = (len - off - 2) / 12;
    if (n > room)
        n = room;
    for (size_t k = 0; k < n; k++) {
        const uint8_t *e = t + off + 2 + 12 * k;
        if (tiff16(e, be) != 0x0112)
            continue;
        if (tiff16(e + 2, be) != 3 || tiff32(e + 4, be) != 1) /* SHORT, count 1 */
            return 1;
        uint32_t v = tiff16(e + 8, be);
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

/* CRC-32 as PNG defines it (ISO 3309), bit by bit: only the eXIf chunk is
 * checked here (libpng checks the rest). */
static uint32_t png_crc(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

/* The first eXIf chunk, wherever it is (the 2017 extension allowed it after
 * IDAT too); a bad CRC or a damaged chunk list means 1. libpng itself is told
 * to ignore eXIf. Some writers keep the JPEG "Exif\0\0" prefix: tolerated. */
static int png_orientation(const uint8_t *p, size_t len) {
    size_t i = 8;
    while (i <= len && len - i >= 12) {
        uint32_t n = be32(p + i);
        if (n > 0x7fffffffu || n > len - i - 12)
            return 1;
        const uint8_t *type = p + i + 4;
        if (memcmp(type, "IEND", 4) == 0)
            return 1;
        if (memcmp(type, "eXIf", 4) == 0) {
            if (png_crc(type, (size_t)n + 4) != be32(type + 4 + n))
                return 1;
            const uint8_t *d = type + 4;
            size_t dn = n;
            if (dn >= 6 && memcmp(d, "Exif\0\0", 6) == 0) {
                d += 6;
                dn -= 6;
            }
            return hsq_img_exif_orientation(d, dn);
        }
        i += 12 + (size_t)n;
    }
    return 1;
}

int hsq_img_orientation(const void *data, size_t len) {
    switch (data ? hsq_img_sniff(data, len) : HSQ_IMG_NONE) {
    case HSQ_IMG_PNG:
        return png_orientation(data, len);
    case HSQ_IMG_JPEG: {
        jpeg_walk jw;
        jpeg_walk_markers(data, len, 0, &jw);
        return jw.exif ? hsq_img_exif_orientation(jw.exif, jw.exif_len) : 1;
    }
    default:
        return 1;
    }
}

static void swap3(uint8_t *a, uint8_t *b) {
    uint8_t t[3];
    memcpy(t, a, 3);
    memcpy(a, b, 3);
    memcpy(b, t, 3);
}

int hsq_img_orient(hsq_img *img, int o) {
    if (o < 1 || o > 8 || !img->rgb || img->w == 0 || img->h == 0)
        return HSQ_EINVAL;
    const size_t w = img->w, h = img->h, stride = w * 3;
    uint8_t *s = img->rgb;
    switch (o) {
    case 1:
        return 0;
    case 2: /* mirror: each row reversed */
        for (size_t y = 0; y < h; y++)
            for (size_t x = 0; x < w / 2; x++)
                swap3(s + y * stride + x * 3, s + y * stride + (w - 1 - x) * 3);
        return 0;
    case 3: /* rotate 180: the pixel sequence reversed */
        for (size_t i = 0, n = w * h; i < n / 2; i++)
            swap3(s + i * 3, s + (n - 1 - i) * 3);
        return 0;
    case 4: /* flip: rows swapped */
        for (size_t y = 0; y < h / 2; y++)
            for (size_t b = 0; b < stride; b++) {
                uint8_t t = s[y * stride + b];
                s[y * stride + b] = s[(h - 1 - y) * stride + b];
                s[(h - 1 - y) * stride + b] = t;
            }
        return 0;
    default:
        break;
    }
    /* 5-8: the output is h wide and w tall. For output (x, y) the source is
     * 5 (y, x), 6 (y, h-1-x), 7 (w-1-y, h-1-x), 8 (w-1-y, x). Tiled, so that
     * the column-wise reads stay in cache. */
    uint8_t *d = hsq_trymalloc(w * h * 3);
    if (!d)
        return HSQ_ENOMEM;
    const size_t dw = h, dh = w, T = 64;
    for (size_t ty = 0; ty < dh; ty += T)
        for (size_t tx = 0; tx < dw; tx += T)
            for (size_t y = ty; y < dh && y < ty + T; y++)
                for (size_t x = tx; x < dw && x < tx + T; x++) {
                    size_t sx = o <= 6 ? y : w - 1 - y;
                    size_t sy = o == 5 || o == 8 ? x : h - 1 - x;
                    memcpy(d + (y * dw + x) * 3, s + sy * stride + sx * 3, 3);
                }
    free(s);
    img->rgb = d;
    img->w = (uint32_t)dw;
    img->h = (uint32_t)dh;
    return 0;
}

/* CMYK -> RGB in place (4 bytes in, 3 out; the write index never passes the
 * read index), R = (1 - C)(1 - K) and so on, with no colour management.
 * Adobe (Photoshop) stores the values inverted, 255 = no ink, so those are
 * used directly as (1 - C). */
static void cmyk_to_rgb(uint8_t *pix, size_t npix, int inverted) {
    for (size_t i = 0; i < npix; i++) {
        const uint8_t *s = pix + 4 * i;
        unsigned c = s[0], m = s[1], y = s[2], k = s[3];
        if (!inverted) {
            c = 255 - c;
            m = 255 - m;
            y = 255 - y;
            k = 255 - k;
        }
        uint8_t *d = pix + 3 * i;
        d[0] = (uint8_t)((c * k + 127) / 255);
        d[1] = (uint8_t)((m * k + 127) / 255);
        d[2] = (uint8_t)((y * k + 127) / 255);
    }
}

/* Smallest DCT scale (<= 1) at which the centre crop for every target is
 * still >= 2x the target in both dimensions; full size when none is. Only
 * 1/2, 1/4 and 1/8 are candidates: libjpeg-turbo has SIMD IDCTs for those
 * alone, and the other n/8 scales run plain C IDCTs that cost more than a
 * full-size decode (a 4000x3000 photo, one core: full 36 ms, 1/2 19 ms,
 * 5/8 45 ms, 7/8 100 ms). vipsthumbnail's shrink-on-load makes the same
 * choice. */
static void jpeg_pick_scale(int w, int h, const hsq_img_size *t, size_t n, int *sw, int *sh) {
    *sw = w;
    *sh = h;
    if (n == 0)
        return;
    int nsf = 0;
    tjscalingfactor *sf = tjGetScalingFactors(&nsf);
    if (!sf)
        return;
    uint64_t best = (uint64_t)w * (uint64_t)h;
    for (int i = 0; i < nsf; i++) {
        if (sf[i].num >= sf[i].denom || sf[i].num != 1 ||
            (sf[i].denom != 2 && sf[i].denom != 4 && sf[i].denom != 8))
            continue;
        int ow = TJSCALED(w, sf[i]), oh = TJSCALED(h, sf[i]);
        if (ow < 1 || oh < 1)
            continue;
        int ok = 1;
        for (size_t k = 0; k < n && ok; k++) {
            uint32_t cx, cy, cw, ch;
            if (t[k].w == 0 || t[k].h == 0)
                continue;
            hsq_img_crop_box((uint32_t)ow, (uint32_t)oh, t[k].w, t[k].h, &cx, &cy, &cw, &ch);
            if ((uint64_t)cw < 2ull * t[k].w || (uint64_t)ch < 2ull * t[k].h)
                ok = 0;
        }
        if (ok && (uint64_t)ow * (uint64_t)oh < best) {
            best = (uint64_t)ow * (uint64_t)oh;
            *sw = ow;
            *sh = oh;
        }
    }
}

/* dst, dst_cap: hsq_img_decode_opts'; dst NULL = allocate. */
static int decode_jpeg(const uint8_t *p, size_t len, const hsq_img_limits *lim,
                       const hsq_img_size *targets, size_t n, int orient, uint8_t *dst,
                       size_t dst_cap, hsq_img *out, char *why) {
    tjhandle tj = tjInitDecompress();
    if (!tj)
        return HSQ_ENOMEM;
    hsq_img_info info;
    int cs;
    int r = jpeg_header(tj, p, len, lim, &info, &cs, why);
    if (r) {
        tjDestroy(tj);
        return r;
    }
    /* Count the scans before libjpeg spends any time on them. */
    uint32_t max_scans = lim->max_scans ? lim->max_scans : HSQ_IMG_DEFAULT_MAX_SCANS;
    jpeg_walk jw;
    jpeg_walk_markers(p, len, max_scans, &jw);
    if (jw.scans > max_scans) {
        tjDestroy(tj);
        say(why, "too many progressive scans (more than %lu)", (unsigned long)max_scans);
        return HSQ_EIMGTOOLARGE;
    }
    int o = orient && jw.exif ? hsq_img_exif_orientation(jw.exif, jw.exif_len) : 1;
    /* Targets are in displayed orientation; for 5-8 the stored image is the
     * transpose, so pick the scale on swapped sides (TJSCALED is per side). */
    int sw, sh;
    if (o >= 5)
        jpeg_pick_scale((int)info.h, (int)info.w, targets, n, &sh, &sw);
    else
        jpeg_pick_scale((int)info.w, (int)info.h, targets, n, &sw, &sh);
    int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    size_t npix = (size_t)sw * (size_t)sh;
    /* Orientations 2-4 are done in place; 5-8 and CMYK need a buffer of
     * their own, so they never use the caller's. */
    int own = !(dst && !cmyk && o < 5 && npix * 3 <= dst_cap);
    uint8_t *pix = own ? hsq_trymalloc(npix * (cmyk ? 4 : 3)) : dst;
    if (!pix) {
        tjDestroy(tj);
        return HSQ_ENOMEM;
    }
    /* LIMITSCANS caps progressive scans (500 in 2.1) behind our own count.
     * STOPONWARNING makes a truncated or damaged stream an error. libjpeg
     * converts grey to RGB itself; CMYK/YCCK only comes out as CMYK. */
    if (tjDecompress2(tj, p, (unsigned long)len, pix, sw, 0, sh, cmyk ? TJPF_CMYK : TJPF_RGB,
                      TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) != 0) {
        r = tj_error(tj);
        if (own)
            free(pix);
        tjDestroy(tj);
        return r;
    }
    tjDestroy(tj);
    if (cmyk) {
        cmyk_to_rgb(pix, npix, jw.adobe);
        uint8_t *q = realloc(pix, npix * 3);
        if (q)
            pix = q;
    }
    hsq_img img = {(uint32_t)sw, (uint32_t)sh, pix};
    if (o != 1 && (r = hsq_img_orient(&img, o)) != 0) {
        if (own)
            free(pix);
        return r;
    }
    *out = img;
    return 0;
}

/* ---- PNG decode (classic API; the simplified png_image_* API is where the
 * recent CVEs cluster) ---- */

typedef struct {
    png_structp png;
    png_infop info;
    const uint8_t *data;
    size_t len, pos;
    const hsq_img_limits *lim;
    uint8_t *pix; /* w * h * channels */
    png_bytep *rows;
    uint32_t w, h;
    int channels; /* 3 or 4 after the transforms */
    int err;      /* set before png_error when the cause is not the file */
} png_rd;

static void png_on_error(png_structp png, png_const_charp msg) {
    (void)msg;
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void png_read_mem(png_structp png, png_bytep dst, size_t n) {
    png_rd *st = png_get_io_ptr(png);
    if (n > st->len - st->pos)
        png_error(png, "truncated");
    memcpy(dst, st->data + st->pos, n);
    st->pos += n;
}

static int png_read_all(png_rd *st) {
    if (setjmp(png_jmpbuf(st->png)))
        return st->err ? st->err : HSQ_EIMGCORRUPT;

    png_set_user_limits(st->png, st->lim->max_side, st->lim->max_side);
    png_set_chunk_cache_max(st->png, PNG_CHUNK_CACHE_MAX);
    png_set_chunk_malloc_max(st->png, PNG_CHUNK_MALLOC_MAX);
    /* Drop unknown chunks, and the metadata chunks we never use, unread. */
    png_set_keep_unknown_chunks(st->png, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
    static const png_byte ignored[] = "tEXt\0zTXt\0iTXt\0iCCP\0sPLT\0eXIf\0tIME\0hIST\0";
    png_set_keep_unknown_chunks(st->png, PNG_HANDLE_CHUNK_NEVER, ignored, 8);
    png_set_read_fn(st->png, st, png_read_mem);
    png_read_info(st->png, st->info);

    st->w = png_get_image_width(st->png, st->info);
    st->h = png_get_image_height(st->png, st->info);
    int r = check_dims(st->w, st->h, st->lim, NULL);
    if (r)
        return r;

    int ct = png_get_color_type(st->png, st->info);
    int depth = png_get_bit_depth(st->png, st->info);
    if (ct == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(st->png);
    if (ct == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(st->png);
    if (png_get_valid(st->png, st->info, PNG_INFO_tRNS))
        png_set_tRNS_to_alpha(st->png);
    if (depth == 16)
        png_set_scale_16(st->png);
    if (ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(st->png);
    png_set_interlace_handling(st->png);
    png_read_update_info(st->png, st->info);

    st->channels = png_get_channels(st->png, st->info);
    size_t rowbytes = png_get_rowbytes(st->png, st->info);
    if ((st->channels != 3 && st->channels != 4) || png_get_bit_depth(st->png, st->info) != 8 ||
        rowbytes != (size_t)st->w * (size_t)st->channels)
        return HSQ_EIMGUNSUPP; /* a transform combination we did not expect */

    st->pix = hsq_trymalloc(rowbytes * st->h);
    st->rows = hsq_trymalloc(sizeof(png_bytep) * st->h);
    if (!st->pix || !st->rows)
        return HSQ_ENOMEM;
    for (uint32_t y = 0; y < st->h; y++)
        st->rows[y] = st->pix + (size_t)y * rowbytes;
    png_read_image(st->png, st->rows);
    /* Read through IEND so that a file cut after its last IDAT is refused. */
    png_read_end(st->png, NULL);
    return 0;
}

/* RGBA -> RGB over white, in place (the write index never passes the read
 * index). */
static void composite_white(uint8_t *pix, size_t npix) {
    for (size_t i = 0; i < npix; i++) {
        const uint8_t *s = pix + 4 * i;
        uint8_t *d = pix + 3 * i;
        unsigned a = s[3], inv = 255 - a;
        uint8_t r = (uint8_t)((s[0] * a + 255 * inv + 127) / 255);
        uint8_t g = (uint8_t)((s[1] * a + 255 * inv + 127) / 255);
        uint8_t b = (uint8_t)((s[2] * a + 255 * inv + 127) / 255);
        d[0] = r;
        d[1] = g;
        d[2] = b;
    }
}

static int decode_png(const uint8_t *p, size_t len, const hsq_img_limits *lim, int orient,
                      hsq_img *out, char *why) {
    hsq_img_info info;
    int r = png_header(p, len, lim, &info, why);
    if (r)
        return r;
    png_rd st;
    memset(&st, 0, sizeof st);
    st.data = p;
    st.len = len;
    st.lim = lim;
    st.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &st, png_on_error, png_on_warning);
    if (!st.png)
        return HSQ_ENOMEM;
    st.info = png_create_info_struct(st.png);
    if (!st.info) {
        png_destroy_read_struct(&st.png, NULL, NULL);
        return HSQ_ENOMEM;
    }
    r = png_read_all(&st);
    png_destroy_read_struct(&st.png, &st.info, NULL);
    free(st.rows);
    if (r) {
        free(st.pix);
        return r;
    }
    size_t npix = (size_t)st.w * st.h;
    if (st.channels == 4) {
        composite_white(st.pix, npix);
        uint8_t *q = realloc(st.pix, npix * 3);
        if (q)
            st.pix = q;
    }
    hsq_img img = {st.w, st.h, st.pix};
    int o = orient ? png_orientation(p, len) : 1;
    if (o != 1 && (r = hsq_img_orient(&img, o)) != 0) {
        free(st.pix);
        return r;
    }
    *out = img;
    return 0;
}

/* ---- entry points ---- */

static int precheck(const void *data, size_t len, const hsq_img_limits *lim, hsq_img_fmt *fmt,
                    char *why) {
    if (len == 0 || data == NULL)
        return HSQ_EIMGCORRUPT;
    if (len > lim->max_bytes) {
        say(why, "file is %llu bytes; the limit is %llu", (unsigned long long)len,
            (unsigned long long)lim->max_bytes);
        return HSQ_EIMGTOOLARGE;
    }
    *fmt = hsq_img_sniff(data, len);
    if (*fmt == HSQ_IMG_NONE)
        return is_magic_prefix(data, len) ? HSQ_EIMGCORRUPT : HSQ_EIMGUNSUPP;
    return 0;
}

int hsq_img_probe(const void *data, size_t len, const hsq_img_limits *lim, hsq_img_info *info) {
    hsq_img_limits def;
    if (!lim) {
        hsq_img_limits_default(&def);
        lim = &def;
    }
    hsq_img_fmt fmt;
    int r = precheck(data, len, lim, &fmt, NULL);
    if (r)
        return r;
    hsq_img_info in;
    if (fmt == HSQ_IMG_PNG) {
        r = png_header(data, len, lim, &in, NULL);
    } else {
        tjhandle tj = tjInitDecompress();
        if (!tj)
            return HSQ_ENOMEM;
        int cs;
        r = jpeg_header(tj, data, len, lim, &in, &cs, NULL);
        tjDestroy(tj);
    }
    if (r)
        return r;
    in.orientation = hsq_img_orientation(data, len);
    if (in.orientation >= 5) {
        uint32_t t = in.w;
        in.w = in.h;
        in.h = t;
    }
    *info = in;
    return 0;
}

/* "portrait 'me.jpg': <detail>" (the worker's label), or "portrait: ..." */
static void decode_msg(char *msg, size_t msglen, const hsq_img_decode_opts *o, const char *detail) {
    const char *what = o->what && o->what[0] ? o->what : "image";
    if (o->name && o->name[0])
        snprintf(msg, msglen, "%s '%s': %s", what, o->name, detail);
    else
        snprintf(msg, msglen, "%s: %s", what, detail);
}

int hsq_img_decode_ex(const void *data, size_t len, const hsq_img_decode_opts *opts, hsq_img *out,
                      char *msg, size_t msglen) {
    static const hsq_img_decode_opts none;
    if (!opts)
        opts = &none;
    hsq_img_limits def;
    const hsq_img_limits *lim = opts->lim;
    if (!lim) {
        hsq_img_limits_default(&def);
        lim = &def;
    }
    char why[WHY_MAX] = "";
    int orient = !opts->keep_orientation;
    hsq_img_fmt fmt;
    int r = precheck(data, len, lim, &fmt, why);
    if (r == 0) {
        if (fmt == HSQ_IMG_PNG)
            r = decode_png(data, len, lim, orient, out, why);
        else
            r = decode_jpeg(data, len, lim, opts->targets, opts->targets ? opts->n_targets : 0,
                            orient, opts->dst, opts->dst ? opts->dst_cap : 0, out, why);
    }
    if (msg && msglen) {
        msg[0] = '\0';
        if (r)
            decode_msg(msg, msglen, opts, why[0] ? why : hsq_strerror(r));
    }
    return r;
}

int hsq_img_decode(const void *data, size_t len, const hsq_img_limits *lim,
                   const hsq_img_size *targets, size_t n, hsq_img *out) {
    hsq_img_decode_opts o = {0};
    o.lim = lim;
    o.targets = targets;
    o.n_targets = n;
    return hsq_img_decode_ex(data, len, &o, out, NULL, 0);
}

/* ---- crop and resize ---- */

void hsq_img_crop_box(uint32_t sw, uint32_t sh, uint32_t tw, uint32_t th, uint32_t *cx,
                      uint32_t *cy, uint32_t *cw, uint32_t *ch) {
    uint64_t w = sw, h = sh;
    if ((uint64_t)sw * th > (uint64_t)sh * tw) /* source is wider: trim the sides */
        w = ((uint64_t)sh * tw + th / 2) / th;
    else /* source is taller (or equal): trim top and bottom */
        h = ((uint64_t)sw * th + tw / 2) / tw;
    if (w < 1)
        w = 1;
    if (h < 1)
        h = 1;
    if (w > sw)
        w = sw;
    if (h > sh)
        h = sh;
    *cw = (uint32_t)w;
    *ch = (uint32_t)h;
    *cx = (uint32_t)((sw - w) / 2);
    *cy = (uint32_t)((sh - h) / 2);
}

/* For each output index i along one axis: the input indexes start[i] ..
 * start[i] + n[i] - 1 and their weights w[i * maxn ...], summing to 1. */
typedef struct {
    uint32_t *start;
    uint32_t *n;
    float *w;
    uint32_t maxn;
} axis;

static void axis_free(axis *a) {
    free(a->start);
    free(a->n);
    free(a->w);
    memset(a, 0, sizeof *a);
}

static int axis_build(axis *a, uint32_t off, uint32_t in, uint32_t out) {
    memset(a, 0, sizeof *a);
    double scale = (double)in / (double)out;
    a->maxn = in > out ? (uint32_t)ceil(scale) + 1 : 2;
    a->start = hsq_trymalloc(sizeof(uint32_t) * out);
    a->n = hsq_trymalloc(sizeof(uint32_t) * out);
    a->w = hsq_trymalloc(sizeof(float) * out * (size_t)a->maxn);
    if (!a->start || !a->n || !a->w) {
        axis_free(a);
        return HSQ_ENOMEM;
    }
    for (uint32_t i = 0; i < out; i++) {
        float *w = a->w + (size_t)i * a->maxn;
        if (in > out) {
            /* Area average: output pixel i covers [i*scale, (i+1)*scale). */
            double lo = i * scale, hi = (i + 1) * scale;
            uint32_t j0 = (uint32_t)floor(lo), j1 = (uint32_t)ceil(hi);
            if (j1 > in)
                j1 = in;
            if (j1 <= j0)
                j1 = j0 + 1;
            double sum = 0;
            uint32_t k = 0;
            for (uint32_t j = j0; j < j1 && k < a->maxn; j++, k++) {
                double l = j > lo ? j : lo, r = j + 1 < hi ? j + 1 : hi;
                double wt = r > l ? r - l : 0;
                w[k] = (float)wt;
                sum += wt;
            }
            for (uint32_t q = 0; q < k; q++)
                w[q] = sum > 0 ? (float)(w[q] / sum) : (q == 0 ? 1.0f : 0.0f);
            a->start[i] = off + j0;
            a->n[i] = k;
        } else if (in < out) {
            /* Bilinear, pixel centres aligned, edges clamped. */
            double s = (i + 0.5) * scale - 0.5;
            if (s < 0)
                s = 0;
            if (s > in - 1)
                s = in - 1;
            uint32_t j = (uint32_t)floor(s);
            double f = s - j;
            a->start[i] = off + j;
            if (j + 1 < in && f > 0) {
                w[0] = (float)(1 - f);
                w[1] = (float)f;
                a->n[i] = 2;
            } else {
                w[0] = 1;
                a->n[i] = 1;
            }
        } else {
            w[0] = 1;
            a->start[i] = off + i;
            a->n[i] = 1;
        }
    }
    return 0;
}

/* Horizontally resampled source rows, with a two-entry cache: consecutive
 * output rows share at most their boundary rows. */
typedef struct {
    const hsq_img *src;
    const axis *ax;
    uint32_t tw;
    float *buf[2];
    int64_t tag[2];
    int next;
} hrows;

static const float *hrow_get(hrows *hr, uint32_t y) {
    for (int s = 0; s < 2; s++)
        if (hr->tag[s] == (int64_t)y)
            return hr->buf[s];
    int s = hr->next;
    hr->next ^= 1;
    hr->tag[s] = y;
    const uint8_t *row = hr->src->rgb + (size_t)y * hr->src->w * 3;
    float *o = hr->buf[s];
    for (uint32_t x = 0; x < hr->tw; x++) {
        const float *w = hr->ax->w + (size_t)x * hr->ax->maxn;
        const uint8_t *p = row + (size_t)hr->ax->start[x] * 3;
        float r = 0, g = 0, b = 0;
        for (uint32_t k = 0; k < hr->ax->n[x]; k++, p += 3) {
            r += w[k] * p[0];
            g += w[k] * p[1];
            b += w[k] * p[2];
        }
        o[3 * x] = r;
        o[3 * x + 1] = g;
        o[3 * x + 2] = b;
    }
    return o;
}

static uint8_t to_u8(float v) {
    if (v <= 0)
        return 0;
    if (v >= 255)
        return 255;
    return (uint8_t)(v + 0.5f);
}

int hsq_img_resize(const hsq_img *src, uint32_t cx, uint32_t cy, uint32_t cw, uint32_t ch,
                   uint32_t tw, uint32_t th, hsq_img *out) {
    if (!src->rgb || cw == 0 || ch == 0 || tw == 0 || th == 0 || cx > src->w || cw > src->w - cx ||
        cy > src->h || ch > src->h - cy)
        return HSQ_EINVAL;
    axis ax, ay;
    int r = axis_build(&ax, cx, cw, tw);
    if (r)
        return r;
    r = axis_build(&ay, cy, ch, th);
    if (r) {
        axis_free(&ax);
        return r;
    }
    size_t rowf = (size_t)tw * 3;
    uint8_t *pix = hsq_trymalloc(rowf * th);
    float *acc = hsq_trymalloc(sizeof(float) * rowf);
    hrows hr = {src, &ax, tw, {NULL, NULL}, {-1, -1}, 0};
    hr.buf[0] = hsq_trymalloc(sizeof(float) * rowf);
    hr.buf[1] = hsq_trymalloc(sizeof(float) * rowf);
    if (!pix || !acc || !hr.buf[0] || !hr.buf[1]) {
        r = HSQ_ENOMEM;
        free(pix);
        goto done;
    }
    for (uint32_t y = 0; y < th; y++) {
        const float *w = ay.w + (size_t)y * ay.maxn;
        memset(acc, 0, sizeof(float) * rowf);
        for (uint32_t k = 0; k < ay.n[y]; k++) {
            const float *hrow = hrow_get(&hr, ay.start[y] + k);
            for (size_t i = 0; i < rowf; i++)
                acc[i] += w[k] * hrow[i];
        }
        uint8_t *o = pix + (size_t)y * rowf;
        for (size_t i = 0; i < rowf; i++)
            o[i] = to_u8(acc[i]);
    }
    out->w = tw;
    out->h = th;
    out->rgb = pix;
done:
    free(acc);
    free(hr.buf[0]);
    free(hr.buf[1]);
    axis_free(&ax);
    axis_free(&ay);
    return r;
}

int hsq_img_fit(const hsq_img *src, uint32_t tw, uint32_t th, hsq_img *out) {
    if (!src->rgb || src->w == 0 || src->h == 0 || tw == 0 || th == 0)
        return HSQ_EINVAL;
    uint32_t cx, cy, cw, ch;
    hsq_img_crop_box(src->w, src->h, tw, th, &cx, &cy, &cw, &ch);
    return hsq_img_resize(src, cx, cy, cw, ch, tw, th, out);
}

/* ---- encode ---- */

/* Set the density of the JFIF APP0 that libjpeg writes right after SOI:
 * FF D8, FF E0, length (>= 16), "JFIF\0", version (2), units (1),
 * Xdensity (2), Ydensity (2), thumbnail size (2). TurboJPEG 2.1 has no
 * parameter for it, so the bytes are patched, after checking they are what
 * we expect. */
static int jfif_set_density(uint8_t *p, size_t len, uint32_t dpi) {
    if (len < 20 || p[0] != 0xff || p[1] != 0xd8 || p[2] != 0xff || p[3] != 0xe0 ||
        ((size_t)p[4] << 8 | p[5]) < 16 || memcmp(p + 6, "JFIF\0", 5) != 0)
        return HSQ_EINTERNAL;
    p[13] = 1; /* dots per inch */
    p[14] = p[16] = (uint8_t)(dpi >> 8);
    p[15] = p[17] = (uint8_t)dpi;
    return 0;
}

int hsq_img_encode_jpeg(const hsq_img *img, int quality, uint8_t **out, size_t *len) {
    return hsq_img_encode_jpeg_dpi(img, quality, 0, out, len);
}

int hsq_img_encode_jpeg_dpi(const hsq_img *img, int quality, uint32_t dpi, uint8_t **out,
                            size_t *len) {
    if (!img->rgb || img->w == 0 || img->h == 0 || img->w > INT_MAX / 3 || img->h > INT_MAX ||
        quality < 0 || quality > 100 || dpi > 65535)
        return HSQ_EINVAL;
    if (quality == 0)
        quality = HSQ_IMG_DEFAULT_QUALITY;
    unsigned long cap = tjBufSize((int)img->w, (int)img->h, TJSAMP_420);
    if (cap == (unsigned long)-1)
        return HSQ_EINVAL;
    uint8_t *buf = hsq_trymalloc(cap);
    if (!buf)
        return HSQ_ENOMEM;
    tjhandle tj = tjInitCompress();
    if (!tj) {
        free(buf);
        return HSQ_ENOMEM;
    }
    unsigned long size = cap;
    /* tjBufSize is the worst case, so NOREALLOC never fails for space; the
     * output carries a JFIF APP0 and nothing else (no EXIF, no comment). */
    int rc = tjCompress2(tj, img->rgb, (int)img->w, 0, (int)img->h, TJPF_RGB, &buf, &size,
                         TJSAMP_420, quality, TJFLAG_NOREALLOC | TJFLAG_ACCURATEDCT);
    int r = 0;
    if (rc != 0)
        r = tj_error(tj) == HSQ_ENOMEM ? HSQ_ENOMEM : HSQ_EINTERNAL;
    tjDestroy(tj);
    if (r == 0 && dpi > 0)
        r = jfif_set_density(buf, size, dpi);
    if (r) {
        free(buf);
        return r;
    }
    uint8_t *q = realloc(buf, size);
    *out = q ? q : buf;
    *len = size;
    return 0;
}

typedef struct {
    png_structp png;
    png_infop info;
    const hsq_img *img;
    uint32_t dpi;
    uint8_t *p;
    size_t len, cap;
    int err;
} png_wr;

static void png_write_mem(png_structp png, png_bytep data, size_t n) {
    png_wr *st = png_get_io_ptr(png);
    if (n > st->cap - st->len) {
        size_t cap = st->cap ? st->cap : 64 * 1024;
        while (cap - st->len < n) {
            if (cap > SIZE_MAX / 2) {
                st->err = HSQ_ENOMEM;
                png_error(png, "too large");
            }
            cap *= 2;
        }
        uint8_t *q = realloc(st->p, cap);
        if (!q) {
            st->err = HSQ_ENOMEM;
            png_error(png, "out of memory");
        }
        st->p = q;
        st->cap = cap;
    }
    memcpy(st->p + st->len, data, n);
    st->len += n;
}

static void png_flush_mem(png_structp png) { (void)png; }

static int png_write_all(png_wr *st) {
    if (setjmp(png_jmpbuf(st->png)))
        return st->err ? st->err : HSQ_EINTERNAL;
    png_set_write_fn(st->png, st, png_write_mem, png_flush_mem);
    png_set_IHDR(st->png, st->info, st->img->w, st->img->h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (st->dpi > 0) {
        /* pHYs is in pixels per metre: dpi / 0.0254, rounded. */
        png_uint_32 ppm = (png_uint_32)(((uint64_t)st->dpi * 10000 + 127) / 254);
        png_set_pHYs(st->png, st->info, ppm, ppm, PNG_RESOLUTION_METER);
    }
    png_write_info(st->png, st->info);
    size_t stride = (size_t)st->img->w * 3;
    for (uint32_t y = 0; y < st->img->h; y++)
        png_write_row(st->png, st->img->rgb + (size_t)y * stride);
    png_write_end(st->png, NULL);
    return 0;
}

int hsq_img_encode_png(const hsq_img *img, uint32_t dpi, uint8_t **out, size_t *len) {
    if (!img->rgb || img->w == 0 || img->h == 0 || img->w > 0x7fffffffu / 3 || img->h > 0x7fffffffu)
        return HSQ_EINVAL;
    png_wr st;
    memset(&st, 0, sizeof st);
    st.img = img;
    st.dpi = dpi;
    st.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &st, png_on_error, png_on_warning);
    if (!st.png)
        return HSQ_ENOMEM;
    st.info = png_create_info_struct(st.png);
    if (!st.info) {
        png_destroy_write_struct(&st.png, NULL);
        return HSQ_ENOMEM;
    }
    int r = png_write_all(&st);
    png_destroy_write_struct(&st.png, &st.info);
    if (r) {
        free(st.p);
        return r;
    }
    uint8_t *q = realloc(st.p, st.len);
    *out = q ? q : st.p;
    *len = st.len;
    return 0;
}
