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
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
static const uint8_t jpeg_magic[3] = {0xff, 0xd8, 0xff};

/* Ancillary PNG chunk limits: we use none of them, so keep them tiny. */
#define PNG_CHUNK_CACHE_MAX 128
#define PNG_CHUNK_MALLOC_MAX (8u * 1024 * 1024)

void hsq_img_limits_default(hsq_img_limits *lim) {
    lim->max_bytes = HSQ_IMG_DEFAULT_MAX_BYTES;
    lim->max_side = HSQ_IMG_DEFAULT_MAX_SIDE;
    lim->max_pixels = HSQ_IMG_DEFAULT_MAX_PIXELS;
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

static int check_dims(uint64_t w, uint64_t h, const hsq_img_limits *lim) {
    if (w == 0 || h == 0)
        return HSQ_EIMGCORRUPT;
    if (w > lim->max_side || h > lim->max_side || w * h > lim->max_pixels)
        return HSQ_EIMGTOOLARGE;
    return 0;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- PNG header, read by hand ---- */

/* Signature, then the IHDR chunk: length 13, "IHDR", width, height, ... */
static int png_header(const uint8_t *p, size_t len, const hsq_img_limits *lim, hsq_img_info *info) {
    if (len < 8 + 8 + 13)
        return HSQ_EIMGCORRUPT;
    if (be32(p + 8) != 13 || memcmp(p + 12, "IHDR", 4) != 0)
        return HSQ_EIMGCORRUPT;
    uint32_t w = be32(p + 16), h = be32(p + 20);
    if (w > 0x7fffffffu || h > 0x7fffffffu) /* PNG's own maximum */
        return HSQ_EIMGCORRUPT;
    int r = check_dims(w, h, lim);
    if (r)
        return r;
    info->fmt = HSQ_IMG_PNG;
    info->w = w;
    info->h = h;
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

static int jpeg_header(tjhandle tj, const uint8_t *p, size_t len, const hsq_img_limits *lim,
                       hsq_img_info *info) {
    int w = 0, h = 0, subsamp = 0, cs = 0;
    if (len > ULONG_MAX)
        return HSQ_EIMGTOOLARGE;
    if (tjDecompressHeader3(tj, p, (unsigned long)len, &w, &h, &subsamp, &cs) != 0)
        return tj_error(tj);
    if (w <= 0 || h <= 0)
        return HSQ_EIMGCORRUPT;
    int r = check_dims((uint64_t)w, (uint64_t)h, lim);
    if (r)
        return r;
    /* libjpeg cannot convert CMYK/YCCK to RGB. */
    if (cs == TJCS_CMYK || cs == TJCS_YCCK)
        return HSQ_EIMGUNSUPP;
    info->fmt = HSQ_IMG_JPEG;
    info->w = (uint32_t)w;
    info->h = (uint32_t)h;
    return 0;
}

/* Smallest DCT scale (<= 1) at which the centre crop for every target is
 * still >= 2x the target in both dimensions; full size when none is. */
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
        if (sf[i].num >= sf[i].denom)
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

static int decode_jpeg(const uint8_t *p, size_t len, const hsq_img_limits *lim,
                       const hsq_img_size *targets, size_t n, hsq_img *out) {
    tjhandle tj = tjInitDecompress();
    if (!tj)
        return HSQ_ENOMEM;
    hsq_img_info info;
    int r = jpeg_header(tj, p, len, lim, &info);
    if (r) {
        tjDestroy(tj);
        return r;
    }
    int sw, sh;
    jpeg_pick_scale((int)info.w, (int)info.h, targets, n, &sw, &sh);
    uint8_t *pix = hsq_trymalloc((size_t)sw * (size_t)sh * 3);
    if (!pix) {
        tjDestroy(tj);
        return HSQ_ENOMEM;
    }
    /* LIMITSCANS caps progressive scans (500 in 2.1): the "80,000 scans" CPU
     * bomb. STOPONWARNING makes a truncated or damaged stream an error. */
    if (tjDecompress2(tj, p, (unsigned long)len, pix, sw, 0, sh, TJPF_RGB,
                      TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) != 0) {
        r = tj_error(tj);
        free(pix);
        tjDestroy(tj);
        return r;
    }
    tjDestroy(tj);
    out->w = (uint32_t)sw;
    out->h = (uint32_t)sh;
    out->rgb = pix;
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
    int r = check_dims(st->w, st->h, st->lim);
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

static int decode_png(const uint8_t *p, size_t len, const hsq_img_limits *lim, hsq_img *out) {
    hsq_img_info info;
    int r = png_header(p, len, lim, &info);
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
    out->w = st.w;
    out->h = st.h;
    out->rgb = st.pix;
    return 0;
}

/* ---- entry points ---- */

static int precheck(const void *data, size_t len, const hsq_img_limits *lim, hsq_img_fmt *fmt) {
    if (len == 0 || data == NULL)
        return HSQ_EIMGCORRUPT;
    if (len > lim->max_bytes)
        return HSQ_EIMGTOOLARGE;
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
    int r = precheck(data, len, lim, &fmt);
    if (r)
        return r;
    if (fmt == HSQ_IMG_PNG)
        return png_header(data, len, lim, info);
    tjhandle tj = tjInitDecompress();
    if (!tj)
        return HSQ_ENOMEM;
    r = jpeg_header(tj, data, len, lim, info);
    tjDestroy(tj);
    return r;
}

int hsq_img_decode(const void *data, size_t len, const hsq_img_limits *lim,
                   const hsq_img_size *targets, size_t n, hsq_img *out) {
    hsq_img_limits def;
    if (!lim) {
        hsq_img_limits_default(&def);
        lim = &def;
    }
    hsq_img_fmt fmt;
    int r = precheck(data, len, lim, &fmt);
    if (r)
        return r;
    if (fmt == HSQ_IMG_PNG)
        return decode_png(data, len, lim, out);
    return decode_jpeg(data, len, lim, targets, n, out);
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

int hsq_img_encode_jpeg(const hsq_img *img, int quality, uint8_t **out, size_t *len) {
    if (!img->rgb || img->w == 0 || img->h == 0 || img->w > INT_MAX / 3 || img->h > INT_MAX ||
        quality < 0 || quality > 100)
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
