/* test_img.c - worker/img: decode, limits, crop/resize, encode.
 *
 * Images are made in memory: a synthetic gradient through our own encoders,
 * and every PNG colour type through libpng directly, so the decoder's
 * conversions are checked against independently written expectations.
 * EXIF blocks are built by hand (tiff_build) and spliced into files made by
 * TurboJPEG or our PNG encoder; expected orientations come from the EXIF
 * definition (where stored row 0 and column 0 are shown), not from img.c.
 */
#include "worker/img.h"

#include "schemas/err.h"
#include "test.h"

#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <zlib.h>

/* ---- helpers ---- */

static hsq_img gradient(uint32_t w, uint32_t h) {
    hsq_img img = {w, h, malloc((size_t)w * h * 3)};
    HSQ_ASSERT(img.rgb);
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            uint8_t *p = img.rgb + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(x * 255 / (w > 1 ? w - 1 : 1));
            p[1] = (uint8_t)(y * 255 / (h > 1 ? h - 1 : 1));
            p[2] = (uint8_t)((x + y) * 255 / (w + h > 2 ? w + h - 2 : 1));
        }
    return img;
}

static hsq_img constant(uint32_t w, uint32_t h, uint8_t r, uint8_t g, uint8_t b) {
    hsq_img img = {w, h, malloc((size_t)w * h * 3)};
    HSQ_ASSERT(img.rgb);
    for (size_t i = 0; i < (size_t)w * h; i++) {
        img.rgb[3 * i] = r;
        img.rgb[3 * i + 1] = g;
        img.rgb[3 * i + 2] = b;
    }
    return img;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Mean and max absolute difference between two same-size images. */
static void diff(const hsq_img *a, const hsq_img *b, double *mean, int *max) {
    HSQ_ASSERT_EQ(a->w, b->w);
    HSQ_ASSERT_EQ(a->h, b->h);
    size_t n = (size_t)a->w * a->h * 3;
    double sum = 0;
    *max = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a->rgb[i] - (int)b->rgb[i]);
        sum += d;
        if (d > *max)
            *max = d;
    }
    *mean = sum / (double)n;
}

/* ---- PNG written with libpng directly ---- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} membuf;

static void mem_write(png_structp png, png_bytep d, size_t n) {
    membuf *m = png_get_io_ptr(png);
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->p = realloc(m->p, m->cap);
        HSQ_ASSERT(m->p);
    }
    memcpy(m->p + m->len, d, n);
    m->len += n;
}

static void mem_flush(png_structp png) { (void)png; }

typedef struct {
    uint32_t w, h;
    int color_type, depth, interlace;
    const uint8_t *rows; /* packed rows, rowbytes each */
    size_t rowbytes;
    const png_color *palette;
    int npalette;
    const uint8_t *trns;
    int ntrns;
    membuf out;
} pngspec;

static void write_png_inner(png_structp png, png_infop info, pngspec *s) {
    if (setjmp(png_jmpbuf(png)))
        HSQ_FAIL_("libpng write failed");
    png_set_write_fn(png, &s->out, mem_write, mem_flush);
    png_set_IHDR(png, info, s->w, s->h, s->depth, s->color_type, s->interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (s->palette)
        png_set_PLTE(png, info, s->palette, s->npalette);
    if (s->trns)
        png_set_tRNS(png, info, s->trns, s->ntrns, NULL);
    png_write_info(png, info);
    if (s->depth == 16)
        png_set_swap(png); /* our rows hold host-order (little-endian) uint16 */
    int passes = png_set_interlace_handling(png);
    for (int p = 0; p < passes; p++)
        for (uint32_t y = 0; y < s->h; y++)
            png_write_row(png, s->rows + (size_t)y * s->rowbytes);
    png_write_end(png, NULL);
}

static void write_png(pngspec *s) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    HSQ_ASSERT(png);
    png_infop info = png_create_info_struct(png);
    HSQ_ASSERT(info);
    write_png_inner(png, info, s);
    png_destroy_write_struct(&png, &info);
}

static void expect_pixel(const hsq_img *img, uint32_t x, uint32_t y, int r, int g, int b, int tol) {
    const uint8_t *p = img->rgb + ((size_t)y * img->w + x) * 3;
    if (abs(p[0] - r) > tol || abs(p[1] - g) > tol || abs(p[2] - b) > tol)
        HSQ_FAIL_("pixel (%u,%u) = (%d,%d,%d), want (%d,%d,%d) +-%d", x, y, p[0], p[1], p[2], r, g,
                  b, tol);
}

static int over_white(int c, int a) { return (int)lround((c * a + 255.0 * (255 - a)) / 255.0); }

/* ---- tests ---- */

static void test_sniff(void) {
    HSQ_ASSERT_EQ(hsq_img_sniff("\xff\xd8\xff\xe0", 4), HSQ_IMG_JPEG);
    HSQ_ASSERT_EQ(hsq_img_sniff("\x89PNG\r\n\x1a\n", 8), HSQ_IMG_PNG);
    HSQ_ASSERT_EQ(hsq_img_sniff("GIF89a", 6), HSQ_IMG_NONE);
    HSQ_ASSERT_EQ(hsq_img_sniff("\xff\xd8", 2), HSQ_IMG_NONE);
    HSQ_ASSERT_STR_EQ(hsq_img_fmt_ext(HSQ_IMG_JPEG), "jpg");
    HSQ_ASSERT_STR_EQ(hsq_img_fmt_ext(HSQ_IMG_PNG), "png");
}

/* Walk JPEG markers from SOI to SOS; return 1 when an APPn other than APP0
 * (JFIF) or a COM segment is present. */
static int jpeg_has_metadata(const uint8_t *p, size_t len) {
    size_t i = 2;
    while (i + 4 <= len) {
        HSQ_ASSERT_EQ(p[i], 0xff);
        uint8_t m = p[i + 1];
        if (m == 0xda) /* SOS */
            return 0;
        if ((m >= 0xe1 && m <= 0xef) || m == 0xfe)
            return 1;
        size_t seg = (size_t)p[i + 2] << 8 | p[i + 3];
        i += 2 + seg;
    }
    return 0;
}

static void test_jpeg_roundtrip(void) {
    hsq_img src = gradient(64, 48);
    uint8_t *buf = NULL;
    size_t len = 0;
    HSQ_OK(hsq_img_encode_jpeg(&src, 95, &buf, &len));
    HSQ_ASSERT(len > 100);
    HSQ_ASSERT_EQ(hsq_img_sniff(buf, len), HSQ_IMG_JPEG);
    HSQ_ASSERT(!jpeg_has_metadata(buf, len));

    hsq_img_info info;
    HSQ_OK(hsq_img_probe(buf, len, NULL, &info));
    HSQ_ASSERT_EQ(info.fmt, HSQ_IMG_JPEG);
    HSQ_ASSERT_EQ(info.w, 64);
    HSQ_ASSERT_EQ(info.h, 48);

    hsq_img dec = {0};
    HSQ_OK(hsq_img_decode(buf, len, NULL, NULL, 0, &dec));
    double mean;
    int max;
    diff(&src, &dec, &mean, &max);
    HSQ_ASSERT(mean < 2.0);
    HSQ_ASSERT(max < 24);
    hsq_img_free(&dec);
    HSQ_ASSERT(dec.rgb == NULL && dec.w == 0);
    free(buf);

    /* Default quality, and the bounds of the argument. */
    HSQ_OK(hsq_img_encode_jpeg(&src, 0, &buf, &len));
    free(buf);
    HSQ_ASSERT_EQ(hsq_img_encode_jpeg(&src, 101, &buf, &len), HSQ_EINVAL);
    hsq_img empty = {0};
    HSQ_ASSERT_EQ(hsq_img_encode_jpeg(&empty, 90, &buf, &len), HSQ_EINVAL);
    hsq_img_free(&src);
}

/* Chunk types of a PNG, concatenated ("IHDRpHYsIDATIEND"). */
static void png_chunks(const uint8_t *p, size_t len, char *out, size_t cap) {
    size_t i = 8, o = 0;
    out[0] = '\0';
    while (i + 12 <= len && o + 5 < cap) {
        uint32_t n = get_be32(p + i);
        if (!(o >= 4 && memcmp(out + o - 4, p + i + 4, 4) == 0)) { /* fold repeated IDAT */
            memcpy(out + o, p + i + 4, 4);
            o += 4;
            out[o] = '\0';
        }
        i += 12 + (size_t)n;
    }
}

static void test_png_roundtrip(void) {
    hsq_img src = gradient(37, 23); /* odd sizes on purpose */
    uint8_t *buf = NULL;
    size_t len = 0;
    char chunks[64];

    HSQ_OK(hsq_img_encode_png(&src, 0, &buf, &len));
    HSQ_ASSERT_EQ(hsq_img_sniff(buf, len), HSQ_IMG_PNG);
    png_chunks(buf, len, chunks, sizeof chunks);
    HSQ_ASSERT_STR_EQ(chunks, "IHDRIDATIEND");
    hsq_img dec = {0};
    HSQ_OK(hsq_img_decode(buf, len, NULL, NULL, 0, &dec));
    double mean;
    int max;
    diff(&src, &dec, &mean, &max);
    HSQ_ASSERT_EQ(max, 0);
    hsq_img_free(&dec);
    free(buf);

    /* 300 dpi = 11811 pixels per metre, in a pHYs chunk and nothing else. */
    HSQ_OK(hsq_img_encode_png(&src, 300, &buf, &len));
    png_chunks(buf, len, chunks, sizeof chunks);
    HSQ_ASSERT_STR_EQ(chunks, "IHDRpHYsIDATIEND");
    const uint8_t *phys = memmem(buf, len, "pHYs", 4);
    HSQ_ASSERT(phys);
    HSQ_ASSERT_EQ(get_be32(phys + 4), 11811);
    HSQ_ASSERT_EQ(get_be32(phys + 8), 11811);
    HSQ_ASSERT_EQ(phys[12], 1); /* unit: metre */
    free(buf);
    hsq_img_free(&src);
}

static void test_png_variants(void) {
    enum { W = 20, H = 10 };
    uint8_t rows[W * H * 8];
    hsq_img dec;

    /* 8-bit grey */
    for (int i = 0; i < W * H; i++)
        rows[i] = (uint8_t)(i * 7);
    pngspec s = {W, H, PNG_COLOR_TYPE_GRAY, 8, PNG_INTERLACE_NONE, rows, W, 0};
    write_png(&s);
    HSQ_OK(hsq_img_decode(s.out.p, s.out.len, NULL, NULL, 0, &dec));
    HSQ_ASSERT_EQ(dec.w, W);
    HSQ_ASSERT_EQ(dec.h, H);
    for (int i = 0; i < W * H; i++)
        expect_pixel(&dec, i % W, i / W, (uint8_t)(i * 7), (uint8_t)(i * 7), (uint8_t)(i * 7), 0);
    hsq_img_free(&dec);
    free(s.out.p);

    /* 4-bit grey: v -> v * 17 */
    memset(rows, 0, sizeof rows);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t v = (uint8_t)((x + y) & 15);
            rows[y * (W / 2) + x / 2] |= (uint8_t)(x % 2 ? v : v << 4);
        }
    s = (pngspec){W, H, PNG_COLOR_TYPE_GRAY, 4, PNG_INTERLACE_NONE, rows, W / 2, 0};
    write_png(&s);
    HSQ_OK(hsq_img_decode(s.out.p, s.out.len, NULL, NULL, 0, &dec));
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int v = ((x + y) & 15) * 17;
            expect_pixel(&dec, x, y, v, v, v, 0);
        }
    hsq_img_free(&dec);
    free(s.out.p);

    /* grey + alpha: composited over white */
    for (int i = 0; i < W * H; i++) {
        rows[2 * i] = (uint8_t)(i * 3);
        rows[2 * i + 1] = (uint8_t)(i * 13);
    }
    s = (pngspec){W, H, PNG_COLOR_TYPE_GRAY_ALPHA, 8, PNG_INTERLACE_NONE, rows, W * 2, 0};
    write_png(&s);
    HSQ_OK(hsq_img_decode(s.out.p, s.out.len, NULL, NULL, 0, &dec));
    for (int i = 0; i < W * H; i++) {
        int v = over_white((uint8_t)(i * 3), (uint8_t)(i * 13));
        expect_pixel(&dec, i % W, i / W, v, v, v, 1);
    }
    hsq_img_free(&dec);
    free(s.out.p);

    /* palette with a transparent and a half-transparent entry */
    png_color pal[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {10, 20, 30}};
    uint8_t trns[3] = {0, 128, 255};
    for (int i = 0; i < W * H; i++)
        rows[i] = (uint8_t)(i % 4);
    s = (pngspec){W, H,  PNG_COLOR_TYPE_PALETTE, 8, PNG_INTERLACE_NONE, rows, W, pal, 4, trns,
                  3, {0}};
    write_png(&s);
    HSQ_OK(hsq_img_decode(s.out.p, s.out.len, NULL, NULL, 0, &dec));
    for (int i = 0; i < W * H; i++) {
        int k = i % 4, a = k < 3 ? trns[k] : 255;
        expect_pixel(&dec, i % W, i / W, over_white(pal[k].red, a), over_white(pal[k].green, a),
                     over_white(pal[k].blue, a), 1);
    }
    hsq_img_free(&dec);
    free(s.out.p);

    /* 16-bit RGB: scaled to 8 bits with rounding */
    uint16_t *r16 = (uint16_t *)(void *)rows;
    for (int i = 0; i < W * H * 3; i++)
        r16[i] = (uint16_t)(i * 97);
    s = (pngspec){W, H, PNG_COLOR_TYPE_RGB, 16, PNG_INTERLACE_NONE, rows, W * 6, 0};
    write_png(&s);
    HSQ_OK(hsq_img_decode(s.out.p, s.out.len, NULL, NULL, 0, &dec));
    for (int i = 0; i < W * H; i++) {
        int c[3];
        for (int k = 0; k < 3; k++)
            c[k] = (int)lround((uint16_t)((3 * i + k) * 97) * 255.0 / 65535.0);
        expect_pixel(&dec, i % W, i / W, c[0], c[1], c[2], 1);
    }
    hsq_img_free(&dec);
    free(s.out.p);

    /* RGBA, and Adam7 interlacing on top */
    for (int i = 0; i < W * H; i++) {
        rows[4 * i] = (uint8_t)(i * 5);
        rows[4 * i + 1] = (uint8_t)(255 - i);
        rows[4 * i + 2] = (uint8_t)(i * 11);
        rows[4 * i + 3] = (uint8_t)(i * 17);
    }
    for (int il = 0; il < 2; il++) {
        s = (pngspec){
            W,     H, PNG_COLOR_TYPE_RGBA, 8, il ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, rows,
            W * 4, 0};
        write_png(&s);
        HSQ_OK(hsq_img_decode(s.out.p, s.out.len, NULL, NULL, 0, &dec));
        for (int i = 0; i < W * H; i++) {
            int a = (uint8_t)(i * 17);
            expect_pixel(&dec, i % W, i / W, over_white((uint8_t)(i * 5), a),
                         over_white((uint8_t)(255 - i), a), over_white((uint8_t)(i * 11), a), 1);
        }
        hsq_img_free(&dec);
        free(s.out.p);
    }
}

static void test_crop_box(void) {
    static const struct {
        uint32_t sw, sh, tw, th, cx, cy, cw, ch;
    } cases[] = {
        {400, 300, 100, 100, 50, 0, 300, 300}, /* wider: trim sides */
        {300, 400, 100, 100, 0, 50, 300, 300}, /* taller: trim top/bottom */
        {1000, 500, 16, 9, 55, 0, 889, 500},   /* 500*16/9 = 888.9 -> 889 */
        {640, 480, 1280, 960, 0, 0, 640, 480}, /* same aspect: whole image */
        {1, 1000, 1000, 1, 0, 499, 1, 1},      /* degenerate: at least 1 px */
        {1000, 1, 1, 1000, 499, 0, 1, 1},      {600, 800, 3, 4, 0, 0, 600, 800},
        {1001, 1001, 1, 2, 250, 0, 501, 1001}, /* 1001/2 = 500.5 -> 501 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t cx, cy, cw, ch;
        hsq_img_crop_box(cases[i].sw, cases[i].sh, cases[i].tw, cases[i].th, &cx, &cy, &cw, &ch);
        HSQ_ASSERT_EQ(cx, cases[i].cx);
        HSQ_ASSERT_EQ(cy, cases[i].cy);
        HSQ_ASSERT_EQ(cw, cases[i].cw);
        HSQ_ASSERT_EQ(ch, cases[i].ch);
    }
}

static void test_resize_constant(void) {
    static const uint32_t sizes[][4] = {
        {100, 80, 30, 20}, {30, 20, 100, 80}, {7, 13, 13, 7}, {1, 1, 9, 5},
        {97, 61, 96, 60},  {64, 64, 64, 64},  {500, 3, 7, 1}, {3, 500, 1, 7},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        hsq_img src = constant(sizes[i][0], sizes[i][1], 200, 17, 255);
        hsq_img out = {0};
        HSQ_OK(hsq_img_resize(&src, 0, 0, src.w, src.h, sizes[i][2], sizes[i][3], &out));
        HSQ_ASSERT_EQ(out.w, sizes[i][2]);
        HSQ_ASSERT_EQ(out.h, sizes[i][3]);
        for (uint32_t y = 0; y < out.h; y++)
            for (uint32_t x = 0; x < out.w; x++)
                expect_pixel(&out, x, y, 200, 17, 255, 0);
        hsq_img_free(&out);
        HSQ_OK(hsq_img_fit(&src, 11, 5, &out));
        HSQ_ASSERT_EQ(out.w, 11);
        HSQ_ASSERT_EQ(out.h, 5);
        expect_pixel(&out, 10, 4, 200, 17, 255, 0);
        hsq_img_free(&out);
        hsq_img_free(&src);
    }
}

static void test_resize_values(void) {
    /* Shrink by 2: area average of pairs. */
    hsq_img src = constant(4, 1, 0, 0, 0);
    for (int x = 0; x < 4; x++)
        src.rgb[3 * x] = (uint8_t)(x * 10);
    hsq_img out = {0};
    HSQ_OK(hsq_img_resize(&src, 0, 0, 4, 1, 2, 1, &out));
    HSQ_ASSERT_EQ(out.rgb[0], 5);
    HSQ_ASSERT_EQ(out.rgb[3], 25);
    hsq_img_free(&out);
    /* Shrink by 4/3: output 0 covers [0, 1.333) = 0.75*0 + 0.25*10 = 2.5 -> 3 (rounded). */
    HSQ_OK(hsq_img_resize(&src, 0, 0, 4, 1, 3, 1, &out));
    HSQ_ASSERT_EQ(out.rgb[0], 3);
    HSQ_ASSERT_EQ(out.rgb[3], 15);
    HSQ_ASSERT_EQ(out.rgb[6], 28); /* 0.25*20 + 0.75*30 = 27.5 */
    hsq_img_free(&out);
    /* A region: pixels 1..2 only, unchanged size. */
    HSQ_OK(hsq_img_resize(&src, 1, 0, 2, 1, 2, 1, &out));
    HSQ_ASSERT_EQ(out.rgb[0], 10);
    HSQ_ASSERT_EQ(out.rgb[3], 20);
    hsq_img_free(&out);
    hsq_img_free(&src);

    /* Grow 2 -> 4, bilinear with aligned centres and clamped edges. */
    src = constant(1, 2, 0, 0, 0);
    src.rgb[3] = 100;
    HSQ_OK(hsq_img_resize(&src, 0, 0, 1, 2, 1, 4, &out));
    HSQ_ASSERT_EQ(out.rgb[0], 0);
    HSQ_ASSERT_EQ(out.rgb[3], 25);
    HSQ_ASSERT_EQ(out.rgb[6], 75);
    HSQ_ASSERT_EQ(out.rgb[9], 100);
    hsq_img_free(&out);

    /* Bad regions. */
    HSQ_ASSERT_EQ(hsq_img_resize(&src, 0, 0, 2, 2, 1, 1, &out), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_img_resize(&src, 0, 1, 1, 2, 1, 1, &out), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_img_resize(&src, 0, 0, 1, 2, 0, 1, &out), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_img_resize(&src, 0, 0, 0, 2, 1, 1, &out), HSQ_EINVAL);
    hsq_img_free(&src);

    /* A gradient shrunk keeps its ends near their values. */
    src = gradient(300, 200);
    HSQ_OK(hsq_img_fit(&src, 30, 20, &out));
    HSQ_ASSERT(out.rgb[0] < 10);
    HSQ_ASSERT(out.rgb[(29) * 3] > 245);
    hsq_img_free(&out);
    hsq_img_free(&src);
}

static void test_scaled_decode(void) {
    hsq_img src = gradient(1600, 1200);
    uint8_t *buf = NULL;
    size_t len = 0;
    HSQ_OK(hsq_img_encode_jpeg(&src, 85, &buf, &len));
    hsq_img_free(&src);
    hsq_img dec = {0};

    HSQ_OK(hsq_img_decode(buf, len, NULL, NULL, 0, &dec));
    HSQ_ASSERT_EQ(dec.w, 1600);
    HSQ_ASSERT_EQ(dec.h, 1200);
    hsq_img_free(&dec);

    /* 200x200 needs a >= 400x400 crop: 1/4 gives 400x300 (crop 300, too
     * small), so 1/2 (crop 600); 3/8 would do too, but only the
     * power-of-two scales are candidates (they have fast IDCTs). */
    hsq_img_size t1[] = {{200, 200}};
    HSQ_OK(hsq_img_decode(buf, len, NULL, t1, 1, &dec));
    HSQ_ASSERT_EQ(dec.w, 800);
    HSQ_ASSERT_EQ(dec.h, 600);
    hsq_img_free(&dec);

    /* Every target counts: a second, larger one forces 1/2 (crop 600 >= 600). */
    hsq_img_size t2[] = {{200, 200}, {300, 300}};
    HSQ_OK(hsq_img_decode(buf, len, NULL, t2, 2, &dec));
    HSQ_ASSERT_EQ(dec.w, 800);
    HSQ_ASSERT_EQ(dec.h, 600);
    hsq_img_free(&dec);

    /* Nothing small enough: full size. */
    hsq_img_size t3[] = {{1000, 1000}};
    HSQ_OK(hsq_img_decode(buf, len, NULL, t3, 1, &dec));
    HSQ_ASSERT_EQ(dec.w, 1600);
    hsq_img_free(&dec);

    /* Tiny target: 1/8. */
    hsq_img_size t4[] = {{16, 16}};
    HSQ_OK(hsq_img_decode(buf, len, NULL, t4, 1, &dec));
    HSQ_ASSERT_EQ(dec.w, 200);
    HSQ_ASSERT_EQ(dec.h, 150);
    hsq_img_free(&dec);
    free(buf);
}

static void test_errors_basic(void) {
    hsq_img dec = {0};
    hsq_img_info info;
    HSQ_ASSERT_EQ(hsq_img_decode("", 0, NULL, NULL, 0, &dec), HSQ_EIMGCORRUPT);
    HSQ_ASSERT_EQ(hsq_img_decode(NULL, 0, NULL, NULL, 0, &dec), HSQ_EIMGCORRUPT);
    HSQ_ASSERT_EQ(hsq_img_probe("", 0, NULL, &info), HSQ_EIMGCORRUPT);
    const char gif[] = "GIF89a\x01\x00\x01\x00\x00\x00\x00";
    HSQ_ASSERT_EQ(hsq_img_decode(gif, sizeof gif - 1, NULL, NULL, 0, &dec), HSQ_EIMGUNSUPP);
    const char riff[] = "RIFF\x10\x00\x00\x00WEBPVP8 ";
    HSQ_ASSERT_EQ(hsq_img_probe(riff, sizeof riff - 1, NULL, &info), HSQ_EIMGUNSUPP);
    /* A magic-number prefix is a truncated file, not a foreign one. */
    HSQ_ASSERT_EQ(hsq_img_decode("\xff\xd8", 2, NULL, NULL, 0, &dec), HSQ_EIMGCORRUPT);
    HSQ_ASSERT_EQ(hsq_img_decode("\x89PNG", 4, NULL, NULL, 0, &dec), HSQ_EIMGCORRUPT);
    HSQ_ASSERT(dec.rgb == NULL);
}

static void test_truncation(void) {
    hsq_img src = gradient(40, 30);
    uint8_t *bufs[2];
    size_t lens[2];
    HSQ_OK(hsq_img_encode_jpeg(&src, 90, &bufs[0], &lens[0]));
    HSQ_OK(hsq_img_encode_png(&src, 0, &bufs[1], &lens[1]));
    hsq_img_free(&src);
    for (int f = 0; f < 2; f++) {
        /* Every byte offset (checklist I3): all corrupt, never a partial success. */
        for (size_t cut = 0; cut < lens[f]; cut++) {
            hsq_img dec = {0};
            int r = hsq_img_decode(bufs[f], cut, NULL, NULL, 0, &dec);
            if (r != HSQ_EIMGCORRUPT)
                HSQ_FAIL_("%s cut at %zu/%zu: got %d (%s)", f ? "png" : "jpeg", cut, lens[f], r,
                          hsq_errname(r));
            HSQ_ASSERT(dec.rgb == NULL);
        }
        /* Flipped bytes in the middle never crash (result may be either). */
        uint8_t *copy = malloc(lens[f]);
        for (size_t i = lens[f] / 3; i < lens[f]; i += 7) {
            memcpy(copy, bufs[f], lens[f]);
            copy[i] ^= 0x5a;
            hsq_img dec = {0};
            int r = hsq_img_decode(copy, lens[f], NULL, NULL, 0, &dec);
            HSQ_ASSERT(r == 0 || r == HSQ_EIMGCORRUPT || r == HSQ_EIMGUNSUPP ||
                       r == HSQ_EIMGTOOLARGE);
            hsq_img_free(&dec);
        }
        free(copy);
        free(bufs[f]);
    }
}

/* Signature + IHDR (w x h, 8-bit RGB) with a valid CRC, then IEND: no pixel
 * data at all, so only the header can be judged. */
static size_t png_header_only(uint8_t *p, uint32_t w, uint32_t h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(p, sig, 8);
    put_be32(p + 8, 13);
    memcpy(p + 12, "IHDR", 4);
    put_be32(p + 16, w);
    put_be32(p + 20, h);
    p[24] = 8; /* depth */
    p[25] = 2; /* RGB */
    p[26] = p[27] = p[28] = 0;
    put_be32(p + 29, (uint32_t)crc32(0, p + 12, 17));
    put_be32(p + 33, 0);
    memcpy(p + 37, "IEND", 4);
    put_be32(p + 41, (uint32_t)crc32(0, p + 37, 4));
    return 45;
}

static uint8_t *find_sof0(uint8_t *p, size_t len) {
    for (size_t i = 2; i + 9 < len; i++)
        if (p[i] == 0xff && p[i + 1] == 0xc0)
            return p + i;
    return NULL;
}

static void test_limits(void) {
    uint8_t png[64];
    hsq_img dec = {0};
    hsq_img_info info;

    size_t n = png_header_only(png, 30000, 30000);
    HSQ_ASSERT_EQ(hsq_img_probe(png, n, NULL, &info), HSQ_EIMGTOOLARGE);
    HSQ_ASSERT_EQ(hsq_img_decode(png, n, NULL, NULL, 0, &dec), HSQ_EIMGTOOLARGE);
    /* Within each side but over the pixel count (15000^2 = 225 MP). */
    n = png_header_only(png, 15000, 15000);
    HSQ_ASSERT_EQ(hsq_img_decode(png, n, NULL, NULL, 0, &dec), HSQ_EIMGTOOLARGE);
    /* PNG's own maximum is 2^31-1: beyond it the header is corrupt. */
    n = png_header_only(png, 0x80000000u, 10);
    HSQ_ASSERT_EQ(hsq_img_decode(png, n, NULL, NULL, 0, &dec), HSQ_EIMGCORRUPT);
    n = png_header_only(png, 0, 100);
    HSQ_ASSERT_EQ(hsq_img_decode(png, n, NULL, NULL, 0, &dec), HSQ_EIMGCORRUPT);
    HSQ_ASSERT_EQ(hsq_img_probe(png, n, NULL, &info), HSQ_EIMGCORRUPT);
    /* A plausible header with no IDAT is corrupt, not a crash. */
    n = png_header_only(png, 100, 100);
    HSQ_OK(hsq_img_probe(png, n, NULL, &info));
    HSQ_ASSERT_EQ(info.w, 100);
    HSQ_ASSERT_EQ(hsq_img_decode(png, n, NULL, NULL, 0, &dec), HSQ_EIMGCORRUPT);
    /* A broken IHDR CRC is caught by libpng. */
    png[30] ^= 1;
    HSQ_ASSERT_EQ(hsq_img_decode(png, n, NULL, NULL, 0, &dec), HSQ_EIMGCORRUPT);
    HSQ_ASSERT(dec.rgb == NULL);

    /* JPEG: patch the SOF0 of a real file to declare other sizes. */
    hsq_img src = gradient(16, 16);
    uint8_t *jpg;
    size_t jlen;
    HSQ_OK(hsq_img_encode_jpeg(&src, 90, &jpg, &jlen));
    hsq_img_free(&src);
    uint8_t *sof = find_sof0(jpg, jlen);
    HSQ_ASSERT(sof);
    /* FF C0, length(2), precision(1), height(2), width(2) */
    sof[5] = 40000 >> 8;
    sof[6] = 40000 & 0xff;
    sof[7] = 40000 >> 8;
    sof[8] = 40000 & 0xff;
    HSQ_ASSERT_EQ(hsq_img_probe(jpg, jlen, NULL, &info), HSQ_EIMGTOOLARGE);
    HSQ_ASSERT_EQ(hsq_img_decode(jpg, jlen, NULL, NULL, 0, &dec), HSQ_EIMGTOOLARGE);
    sof[7] = sof[8] = 0; /* width 0 */
    HSQ_ASSERT_EQ(hsq_img_probe(jpg, jlen, NULL, &info), HSQ_EIMGCORRUPT);
    HSQ_ASSERT_EQ(hsq_img_decode(jpg, jlen, NULL, NULL, 0, &dec), HSQ_EIMGCORRUPT);
    sof[5] = 0;
    sof[6] = 16;
    sof[7] = 0;
    sof[8] = 16;
    HSQ_OK(hsq_img_probe(jpg, jlen, NULL, &info));

    /* Configured limits: bytes, side, pixels. */
    hsq_img_limits lim;
    hsq_img_limits_default(&lim);
    lim.max_bytes = jlen - 1;
    HSQ_ASSERT_EQ(hsq_img_decode(jpg, jlen, &lim, NULL, 0, &dec), HSQ_EIMGTOOLARGE);
    hsq_img_limits_default(&lim);
    lim.max_side = 15;
    HSQ_ASSERT_EQ(hsq_img_decode(jpg, jlen, &lim, NULL, 0, &dec), HSQ_EIMGTOOLARGE);
    hsq_img_limits_default(&lim);
    lim.max_pixels = 16 * 16 - 1;
    HSQ_ASSERT_EQ(hsq_img_decode(jpg, jlen, &lim, NULL, 0, &dec), HSQ_EIMGTOOLARGE);
    lim.max_pixels = 16 * 16;
    HSQ_OK(hsq_img_decode(jpg, jlen, &lim, NULL, 0, &dec));
    hsq_img_free(&dec);
    free(jpg);

    n = png_header_only(png, 100, 100);
    hsq_img_limits_default(&lim);
    lim.max_side = 99;
    HSQ_ASSERT_EQ(hsq_img_decode(png, n, &lim, NULL, 0, &dec), HSQ_EIMGTOOLARGE);
}

/* CMYK (stored as YCCK with an Adobe APP14, as TurboJPEG and Photoshop write
 * it) decodes with the inverted-CMYK formula R = C * K / 255. */
static void test_cmyk_decode(void) {
    enum { W = 16, H = 16 };
    uint8_t cmyk[W * H * 4];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = cmyk + (y * W + x) * 4;
            p[0] = (uint8_t)(60 + x * 8);
            p[1] = (uint8_t)(200 - y * 6);
            p[2] = (uint8_t)(120 + (x + y) * 3);
            p[3] = (uint8_t)(255 - y * 4);
        }
    tjhandle tj = tjInitCompress();
    HSQ_ASSERT(tj);
    unsigned char *jpg = NULL;
    unsigned long jlen = 0;
    HSQ_OK(tjCompress2(tj, cmyk, W, 0, H, TJPF_CMYK, &jpg, &jlen, TJSAMP_444, 100, 0));
    tjDestroy(tj);
    HSQ_ASSERT(memmem(jpg, jlen, "Adobe", 5) != NULL);
    hsq_img_info info;
    HSQ_OK(hsq_img_probe(jpg, jlen, NULL, &info));
    HSQ_ASSERT_EQ(info.w, W);
    hsq_img dec = {0};
    HSQ_OK(hsq_img_decode(jpg, jlen, NULL, NULL, 0, &dec));
    HSQ_ASSERT_EQ(dec.w, W);
    HSQ_ASSERT_EQ(dec.h, H);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const uint8_t *p = cmyk + (y * W + x) * 4;
            expect_pixel(&dec, x, y, p[0] * p[3] / 255, p[1] * p[3] / 255, p[2] * p[3] / 255, 6);
        }
    hsq_img_free(&dec);
    tjFree(jpg);
}

/* ---- EXIF ---- */

/* The stored test picture: W x H, 8x8 blocks (so JPEG keeps them flat), four
 * distinct corner blocks on grey. */
enum { OW = 32, OH = 16 };
static const uint8_t corner_rgb[4][3] = {
    {255, 0, 0},     /* top-left: red */
    {0, 255, 0},     /* top-right: green */
    {0, 0, 255},     /* bottom-left: blue */
    {255, 255, 255}, /* bottom-right: white */
};

static hsq_img corners_image(void) {
    hsq_img img = constant(OW, OH, 128, 128, 128);
    for (uint32_t y = 0; y < OH; y++)
        for (uint32_t x = 0; x < OW; x++) {
            int c = -1;
            if (x < 8 && y < 8)
                c = 0;
            else if (x >= OW - 8 && y < 8)
                c = 1;
            else if (x < 8 && y >= OH - 8)
                c = 2;
            else if (x >= OW - 8 && y >= OH - 8)
                c = 3;
            if (c >= 0)
                memcpy(img.rgb + (y * OW + x) * 3, corner_rgb[c], 3);
        }
    return img;
}

/* A 4:4:4 quality-100 JPEG of img, with extra segments spliced in after SOI. */
static uint8_t *jpeg_with(const hsq_img *img, const uint8_t *extra, size_t extra_len, size_t *len) {
    tjhandle tj = tjInitCompress();
    HSQ_ASSERT(tj);
    unsigned char *jpg = NULL;
    unsigned long jlen = 0;
    HSQ_OK(tjCompress2(tj, img->rgb, (int)img->w, 0, (int)img->h, TJPF_RGB, &jpg, &jlen, TJSAMP_444,
                       100, 0));
    tjDestroy(tj);
    uint8_t *out = malloc(jlen + extra_len);
    HSQ_ASSERT(out);
    memcpy(out, jpg, 2);
    if (extra_len)
        memcpy(out + 2, extra, extra_len);
    memcpy(out + 2 + extra_len, jpg + 2, jlen - 2);
    *len = jlen + extra_len;
    tjFree(jpg);
    return out;
}

/* A TIFF block: header, IFD0 at offset 8 with the given entries and next-IFD
 * offset; be selects "MM". Entries are {tag, type, count, value}; a SHORT
 * value goes in the first two bytes of the value field. */
typedef struct {
    uint16_t tag, type;
    uint32_t count, value;
} tentry;

static void tput16(uint8_t *p, uint32_t v, int be) {
    if (be) {
        p[0] = (uint8_t)(v >> 8);
        p[1] = (uint8_t)v;
    } else {
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
    }
}

static void tput32(uint8_t *p, uint32_t v, int be) {
    if (be) {
        put_be32(p, v);
    } else {
        for (int i = 0; i < 4; i++)
            p[i] = (uint8_t)(v >> (8 * i));
    }
}

static size_t tiff_build(uint8_t *t, int be, const tentry *e, int n, uint32_t next) {
    t[0] = t[1] = be ? 'M' : 'I';
    tput16(t + 2, 42, be);
    tput32(t + 4, 8, be);
    tput16(t + 8, (uint32_t)n, be);
    uint8_t *q = t + 10;
    for (int i = 0; i < n; i++, q += 12) {
        tput16(q, e[i].tag, be);
        tput16(q + 2, e[i].type, be);
        tput32(q + 4, e[i].count, be);
        if (e[i].type == 3 && e[i].count == 1) {
            tput16(q + 8, e[i].value, be);
            q[10] = q[11] = 0;
        } else {
            tput32(q + 8, e[i].value, be);
        }
    }
    tput32(q, next, be);
    return (size_t)(q + 4 - t);
}

/* An APP1 segment "Exif\0\0" + tiff. */
static size_t app1(uint8_t *out, const uint8_t *tiff, size_t n) {
    out[0] = 0xff;
    out[1] = 0xe1;
    out[2] = (uint8_t)((n + 8) >> 8);
    out[3] = (uint8_t)(n + 8);
    memcpy(out + 4, "Exif\0\0", 6);
    memcpy(out + 10, tiff, n);
    return n + 10;
}

static size_t exif_app1(uint8_t *out, int be, uint32_t orientation) {
    uint8_t t[64];
    tentry e[] = {{0x010f, 2, 4, 0}, {0x0112, 3, 1, orientation}, {0x011a, 5, 1, 100}};
    size_t n = tiff_build(t, be, e, 3, 0);
    return app1(out, t, n);
}

/* Displayed corners (TL, TR, BL, BR) hold these stored corners, from the
 * EXIF definition of where the stored 0th row and 0th column are shown:
 * 1 top/left, 2 top/right, 3 bottom/right, 4 bottom/left, 5 left/top,
 * 6 right/top, 7 right/bottom, 8 left/bottom. */
static const int corner_map[9][4] = {
    {0, 0, 0, 0}, {0, 1, 2, 3}, {1, 0, 3, 2}, {3, 2, 1, 0}, {2, 3, 0, 1},
    {0, 2, 1, 3}, {2, 0, 3, 1}, {3, 1, 2, 0}, {1, 3, 0, 2},
};

static void expect_oriented(const hsq_img *dec, int o, int tol) {
    uint32_t w = o >= 5 ? OH : OW, h = o >= 5 ? OW : OH;
    HSQ_ASSERT_EQ(dec->w, w);
    HSQ_ASSERT_EQ(dec->h, h);
    const uint32_t xs[4] = {0, w - 1, 0, w - 1}, ys[4] = {0, 0, h - 1, h - 1};
    for (int k = 0; k < 4; k++) {
        const uint8_t *c = corner_rgb[corner_map[o][k]];
        expect_pixel(dec, xs[k], ys[k], c[0], c[1], c[2], tol);
        /* and the middle of the block, away from any edge ringing */
        expect_pixel(dec, k % 2 ? w - 4 : 3, k / 2 ? h - 4 : 3, c[0], c[1], c[2], tol);
    }
}

static void test_exif_orientations(void) {
    hsq_img src = corners_image();
    for (int be = 0; be < 2; be++)
        for (int o = 1; o <= 8; o++) {
            uint8_t seg[128];
            size_t sn = exif_app1(seg, be, (uint32_t)o);
            size_t len;
            uint8_t *jpg = jpeg_with(&src, seg, sn, &len);
            HSQ_ASSERT_EQ(hsq_img_orientation(jpg, len), o);
            hsq_img_info info;
            HSQ_OK(hsq_img_probe(jpg, len, NULL, &info));
            HSQ_ASSERT_EQ(info.orientation, o);
            HSQ_ASSERT_EQ(info.w, o >= 5 ? OH : OW);
            hsq_img dec = {0};
            HSQ_OK(hsq_img_decode(jpg, len, NULL, NULL, 0, &dec));
            expect_oriented(&dec, o, 8);
            hsq_img_free(&dec);
            /* keep_orientation: the pixels as stored */
            hsq_img_decode_opts opt = {0};
            opt.keep_orientation = 1;
            HSQ_OK(hsq_img_decode_ex(jpg, len, &opt, &dec, NULL, 0));
            expect_oriented(&dec, 1, 8);
            hsq_img_free(&dec);
            free(jpg);
        }

    /* hsq_img_orient on its own, bit-exact, and back: 6 then 8 is identity,
     * 3 twice, 2 twice, 5 twice. */
    static const int pairs[][2] = {{6, 8}, {8, 6}, {3, 3}, {2, 2}, {4, 4}, {5, 5}, {7, 7}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        hsq_img a = corners_image();
        HSQ_OK(hsq_img_orient(&a, pairs[i][0]));
        expect_oriented(&a, pairs[i][0], 0);
        HSQ_OK(hsq_img_orient(&a, pairs[i][1]));
        HSQ_ASSERT_EQ(a.w, OW);
        HSQ_ASSERT(memcmp(a.rgb, src.rgb, (size_t)OW * OH * 3) == 0);
        hsq_img_free(&a);
    }
    HSQ_ASSERT_EQ(hsq_img_orient(&src, 0), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_img_orient(&src, 9), HSQ_EINVAL);
    hsq_img odd = gradient(3, 5); /* odd sizes: the middle row/column stays */
    HSQ_OK(hsq_img_orient(&odd, 2));
    HSQ_OK(hsq_img_orient(&odd, 4));
    HSQ_OK(hsq_img_orient(&odd, 3)); /* 2 + 4 + 3 = identity */
    hsq_img g = gradient(3, 5);
    HSQ_ASSERT(memcmp(odd.rgb, g.rgb, 45) == 0);
    hsq_img_free(&g);
    hsq_img_free(&odd);
    hsq_img_free(&src);
}

/* opts.dst: a JPEG decodes into the caller's memory when it fits and needs
 * no second buffer (orientations 1-4), with the same bytes as an allocated
 * decode; otherwise (5-8, too small, PNG) it is allocated as usual, and a
 * failed decode leaves out alone. */
static void test_decode_into(void) {
    hsq_img src = corners_image();
    const size_t need = (size_t)OW * OH * 3;
    uint8_t *dst = malloc(need + 16);
    HSQ_ASSERT(dst != NULL);
    for (int o = 1; o <= 8; o++) {
        uint8_t seg[128];
        size_t sn = exif_app1(seg, 0, (uint32_t)o);
        size_t len;
        uint8_t *jpg = jpeg_with(&src, seg, sn, &len);
        hsq_img ref = {0}, dec = {0};
        HSQ_OK(hsq_img_decode(jpg, len, NULL, NULL, 0, &ref));
        hsq_img_decode_opts opt = {0};
        opt.dst = dst;
        opt.dst_cap = need + 16;
        HSQ_OK(hsq_img_decode_ex(jpg, len, &opt, &dec, NULL, 0));
        HSQ_ASSERT_EQ(dec.rgb == dst, o < 5);
        HSQ_ASSERT_EQ(dec.w, ref.w);
        HSQ_ASSERT_EQ(dec.h, ref.h);
        HSQ_ASSERT(memcmp(dec.rgb, ref.rgb, need) == 0);
        if (dec.rgb != dst)
            hsq_img_free(&dec);
        opt.dst_cap = need - 1; /* one byte short: allocated */
        HSQ_OK(hsq_img_decode_ex(jpg, len, &opt, &dec, NULL, 0));
        HSQ_ASSERT(dec.rgb != dst);
        HSQ_ASSERT(memcmp(dec.rgb, ref.rgb, need) == 0);
        hsq_img_free(&dec);
        opt.dst_cap = need;
        HSQ_ASSERT_EQ(hsq_img_decode_ex(jpg, len / 2, &opt, &dec, NULL, 0), HSQ_EIMGCORRUPT);
        HSQ_ASSERT(dec.rgb == NULL);
        hsq_img_free(&ref);
        free(jpg);
    }
    uint8_t *png;
    size_t plen;
    HSQ_OK(hsq_img_encode_png(&src, 0, &png, &plen));
    hsq_img dec = {0};
    hsq_img_decode_opts opt = {0};
    opt.dst = dst;
    opt.dst_cap = need;
    HSQ_OK(hsq_img_decode_ex(png, plen, &opt, &dec, NULL, 0));
    HSQ_ASSERT(dec.rgb != dst);
    HSQ_ASSERT(memcmp(dec.rgb, src.rgb, need) == 0);
    hsq_img_free(&dec);
    free(png);
    free(dst);
    hsq_img_free(&src);
}

/* Everything hostile about EXIF means orientation 1 (or the first good
 * answer), never a crash or a hang; decode still succeeds. */
static void test_exif_hostile(void) {
    uint8_t t[256];
    size_t n;
    /* Orientation values outside 1..8. */
    static const uint32_t bad[] = {0, 9, 255, 65535};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tentry e[] = {{0x0112, 3, 1, bad[i]}};
        n = tiff_build(t, 1, e, 1, 0);
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, n), 1);
    }
    /* Big- and little-endian both read right (not hostile; the control). */
    {
        tentry e[] = {{0x0112, 3, 1, 6}};
        n = tiff_build(t, 1, e, 1, 0);
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, n), 6);
        n = tiff_build(t, 0, e, 1, 0);
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, n), 6);
        /* the same bytes with the other byte order mark: 6 << 8 = 1536 -> 1 */
        t[0] = t[1] = 'M';
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, n), 1);
    }
    /* Wrong type (LONG) and count overflow. */
    {
        tentry e1[] = {{0x0112, 4, 1, 6}};
        n = tiff_build(t, 0, e1, 1, 0);
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, n), 1);
        tentry e2[] = {{0x0112, 3, 0xffffffffu, 6}};
        n = tiff_build(t, 0, e2, 1, 0);
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, n), 1);
        tentry e3[] = {{0x0112, 3, 0x80000001u, 6}};
        n = tiff_build(t, 1, e3, 1, 0);
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, n), 1);
    }
    /* IFD0 offset past the end, at the very end, inside the header. */
    {
        tentry e[] = {{0x0112, 3, 1, 6}};
        n = tiff_build(t, 0, e, 1, 0);
        static const uint32_t offs[] = {0xfffffff0u, 0x80000000u, 0, 4, 7};
        for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
            tput32(t + 4, offs[i], 0);
            HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, n), 1);
        }
        tput32(t + 4, (uint32_t)n - 1, 0);
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, n), 1);
        tput32(t + 4, (uint32_t)n - 2, 0); /* a count of 0 entries fits */
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, n), 1);
    }
    /* Entry count 65535 with one real entry: only what lies inside is read. */
    {
        tentry e[] = {{0x0112, 3, 1, 6}};
        n = tiff_build(t, 0, e, 1, 0);
        tput16(t + 8, 0xffff, 0);
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, n), 6);
        tput16(t + 8, 0xffff, 0);
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, 10 + 11), 1); /* entry cut short */
    }
    /* IFD loops: IFD0 (no orientation) whose next-IFD offset points back at
     * itself, and an EXIF SubIFD pointer to IFD0; and the orientation only
     * in the SubIFD (Skia bug 10799): none is followed -> 1. */
    {
        tentry e[] = {{0x010f, 2, 4, 0}, {0x8769, 4, 1, 8}};
        n = tiff_build(t, 0, e, 2, 8);
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, n), 1);
        tentry e2[] = {{0x8769, 4, 1, 26}}; /* SubIFD right after IFD0 (8 + 2 + 12 + 4) */
        n = tiff_build(t, 1, e2, 1, 8);
        tentry sub[] = {{0x0112, 3, 1, 6}};
        uint8_t tmp[64];
        size_t sn = tiff_build(tmp, 1, sub, 1, 26);
        memcpy(t + n, tmp + 8, sn - 8); /* the SubIFD body */
        n += sn - 8;
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, n), 1);
    }
    /* Not TIFF: bad byte order mark, bad magic (0x49 0x01 ...), too short. */
    {
        tentry e[] = {{0x0112, 3, 1, 6}};
        n = tiff_build(t, 0, e, 1, 0);
        t[1] = 0x01;
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, n), 1);
        n = tiff_build(t, 0, e, 1, 0);
        t[2] = 43;
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(t, n), 1);
        n = tiff_build(t, 0, e, 1, 0);
        for (size_t cut = 0; cut < n; cut++) /* every truncation: 1 or 6, never a read past */
        {
            uint8_t *c = malloc(cut ? cut : 1);
            memcpy(c, t, cut);
            int o = hsq_img_exif_orientation(c, cut);
            HSQ_ASSERT(o == 1 || (o == 6 && cut >= 22));
            free(c);
        }
        HSQ_ASSERT_EQ(hsq_img_exif_orientation(NULL, 100), 1);
    }
    /* Random damage: any answer in 1..8, no crash (ASan checks the reads). */
    {
        tentry e[] = {{0x010f, 2, 4, 0}, {0x0112, 3, 1, 6}, {0x8769, 4, 1, 8}};
        size_t base = tiff_build(t, 0, e, 3, 8);
        uint32_t seed = 12345;
        for (int it = 0; it < 20000; it++) {
            uint8_t c[64];
            memcpy(c, t, base);
            for (int k = 0; k < 3; k++) {
                seed = seed * 1103515245u + 12345u;
                c[(seed >> 8) % base] = (uint8_t)(seed >> 20);
            }
            seed = seed * 1103515245u + 12345u;
            size_t cl = base - (seed >> 16) % 4;
            uint8_t *h = malloc(cl);
            memcpy(h, c, cl);
            int o = hsq_img_exif_orientation(h, cl);
            HSQ_ASSERT(o >= 1 && o <= 8);
            free(h);
        }
    }

    /* In files: a hostile block decodes upright (1), full stop. */
    hsq_img src = corners_image();
    {
        tentry e[] = {{0x0112, 3, 1, 6}};
        n = tiff_build(t, 0, e, 1, 8); /* next IFD = itself */
        tput32(t + 4, 0xfffffff0u, 0);
        uint8_t seg[300];
        size_t sn = app1(seg, t, n);
        size_t len;
        uint8_t *jpg = jpeg_with(&src, seg, sn, &len);
        hsq_img dec = {0};
        HSQ_OK(hsq_img_decode(jpg, len, NULL, NULL, 0, &dec));
        expect_oriented(&dec, 1, 8);
        hsq_img_free(&dec);
        free(jpg);
    }
    /* Two Exif APP1 segments: the first counts (6), the second (3) is
     * ignored; an XMP APP1 before them is skipped. */
    {
        uint8_t seg[400];
        size_t sn = 0;
        static const char xmp[] = "http://ns.adobe.com/xap/1.0/";
        seg[sn++] = 0xff;
        seg[sn++] = 0xe1;
        seg[sn++] = 0;
        seg[sn++] = (uint8_t)(sizeof xmp + 2);
        memcpy(seg + sn, xmp, sizeof xmp);
        sn += sizeof xmp;
        sn += exif_app1(seg + sn, 1, 6);
        sn += exif_app1(seg + sn, 0, 3);
        size_t len;
        uint8_t *jpg = jpeg_with(&src, seg, sn, &len);
        HSQ_ASSERT_EQ(hsq_img_orientation(jpg, len), 6);
        hsq_img dec = {0};
        HSQ_OK(hsq_img_decode(jpg, len, NULL, NULL, 0, &dec));
        expect_oriented(&dec, 6, 8);
        hsq_img_free(&dec);
        free(jpg);
    }
    /* An APP1 whose length runs past the end of the file: corrupt, no crash. */
    {
        uint8_t seg[64];
        size_t sn = exif_app1(seg, 0, 6);
        uint8_t *bad = malloc(2 + sn);
        bad[0] = 0xff;
        bad[1] = 0xd8;
        memcpy(bad + 2, seg, sn);
        bad[4] = 0x7f; /* length 0x7f.. > what is there */
        HSQ_ASSERT_EQ(hsq_img_orientation(bad, 2 + sn), 1);
        hsq_img dec = {0};
        HSQ_ASSERT_EQ(hsq_img_decode(bad, 2 + sn, NULL, NULL, 0, &dec), HSQ_EIMGCORRUPT);
        free(bad);
    }
    hsq_img_free(&src);
}

/* PNG eXIf chunk (no "Exif" prefix), spliced in after IHDR with a CRC from
 * zlib; a bad CRC means the chunk is not trusted. */
static void test_png_exif(void) {
    hsq_img src = corners_image();
    uint8_t *png;
    size_t plen;
    HSQ_OK(hsq_img_encode_png(&src, 0, &png, &plen));
    uint8_t t[64];
    tentry e[] = {{0x0112, 3, 1, 8}};
    size_t tn = tiff_build(t, 1, e, 1, 0);
    size_t clen = 12 + tn, at = 8 + 25; /* after the signature and IHDR */
    uint8_t *p = malloc(plen + clen);
    memcpy(p, png, at);
    put_be32(p + at, (uint32_t)tn);
    memcpy(p + at + 4, "eXIf", 4);
    memcpy(p + at + 8, t, tn);
    put_be32(p + at + 8 + tn, (uint32_t)crc32(0, p + at + 4, (uInt)tn + 4));
    memcpy(p + at + clen, png + at, plen - at);
    HSQ_ASSERT_EQ(hsq_img_orientation(p, plen + clen), 8);
    hsq_img_info info;
    HSQ_OK(hsq_img_probe(p, plen + clen, NULL, &info));
    HSQ_ASSERT_EQ(info.orientation, 8);
    HSQ_ASSERT_EQ(info.w, OH);
    hsq_img dec = {0};
    HSQ_OK(hsq_img_decode(p, plen + clen, NULL, NULL, 0, &dec));
    expect_oriented(&dec, 8, 0); /* PNG is lossless: exact */
    hsq_img_free(&dec);
    /* Our output carries no eXIf, even re-encoded from this input. */
    HSQ_OK(hsq_img_decode(p, plen + clen, NULL, NULL, 0, &dec));
    uint8_t *re;
    size_t rlen;
    HSQ_OK(hsq_img_encode_png(&dec, 300, &re, &rlen));
    HSQ_ASSERT(memmem(re, rlen, "eXIf", 4) == NULL);
    free(re);
    hsq_img_free(&dec);
    /* Damage the value: the CRC no longer matches -> 1. */
    p[at + 8 + 10 + 9] = 6;
    HSQ_ASSERT_EQ(hsq_img_orientation(p, plen + clen), 1);
    HSQ_OK(hsq_img_decode(p, plen + clen, NULL, NULL, 0, &dec));
    expect_oriented(&dec, 1, 0);
    hsq_img_free(&dec);
    free(p);
    free(png);
    hsq_img_free(&src);
}

/* A decoded photo with EXIF (a GPS pointer included) re-encodes with no
 * metadata at all. */
static void test_outputs_carry_no_exif(void) {
    hsq_img src = corners_image();
    uint8_t t[64];
    tentry e[] = {{0x0112, 3, 1, 3}, {0x8825, 4, 1, 8}};
    size_t tn = tiff_build(t, 0, e, 2, 0);
    uint8_t seg[100];
    size_t sn = app1(seg, t, tn);
    size_t len;
    uint8_t *jpg = jpeg_with(&src, seg, sn, &len);
    HSQ_ASSERT(jpeg_has_metadata(jpg, len));
    hsq_img dec = {0};
    HSQ_OK(hsq_img_decode(jpg, len, NULL, NULL, 0, &dec));
    uint8_t *out;
    size_t olen;
    HSQ_OK(hsq_img_encode_jpeg_dpi(&dec, 90, 300, &out, &olen));
    HSQ_ASSERT(!jpeg_has_metadata(out, olen));
    HSQ_ASSERT(memmem(out, olen, "Exif", 4) == NULL);
    free(out);
    hsq_img_free(&dec);
    free(jpg);
    hsq_img_free(&src);
}

/* The scaled JPEG decode picks its scale on the displayed (rotated) sides. */
static void test_scaled_oriented(void) {
    hsq_img src = gradient(1600, 1200);
    uint8_t *base;
    size_t blen;
    HSQ_OK(hsq_img_encode_jpeg(&src, 85, &base, &blen));
    hsq_img_free(&src);
    uint8_t seg[128];
    size_t sn = exif_app1(seg, 0, 6);
    uint8_t *jpg = malloc(blen + sn);
    memcpy(jpg, base, 2);
    memcpy(jpg + 2, seg, sn);
    memcpy(jpg + 2 + sn, base + 2, blen - 2);
    /* Displayed 1200 x 1600; 200x200 needs a >= 400 crop: 1/2 -> 600 x 800
     * (1/4, 300 x 400, is too small; 3/8 is not a candidate). */
    hsq_img_size t1[] = {{200, 200}};
    hsq_img dec = {0};
    HSQ_OK(hsq_img_decode(jpg, blen + sn, NULL, t1, 1, &dec));
    HSQ_ASSERT_EQ(dec.w, 600);
    HSQ_ASSERT_EQ(dec.h, 800);
    hsq_img_free(&dec);
    /* A tall target 300 x 800 in the displayed frame: 1/2 (600 x 800) has a
     * crop of 300 x 800 < 2x, so only full size (1200 x 1600) works. */
    hsq_img_size t2[] = {{300, 800}};
    HSQ_OK(hsq_img_decode(jpg, blen + sn, NULL, t2, 1, &dec));
    HSQ_ASSERT_EQ(dec.w, 1200);
    HSQ_ASSERT_EQ(dec.h, 1600);
    hsq_img_free(&dec);
    free(jpg);
    free(base);
}

/* ---- progressive scan limit ---- */

static size_t find_marker(const uint8_t *p, size_t len, uint8_t m) {
    for (size_t i = 2; i + 1 < len; i++)
        if (p[i] == 0xff && p[i + 1] == m)
            return i;
    HSQ_FAIL_("marker %02x not found", m);
}

/* Count SOS markers the slow, obvious way (for the real progressive file). */
static int count_sos(const uint8_t *p, size_t len) {
    int n = 0;
    size_t i = 2;
    while (i + 4 <= len) {
        HSQ_ASSERT_EQ(p[i], 0xff);
        uint8_t m = p[i + 1];
        if (m == 0xd9)
            break;
        size_t seg = (size_t)p[i + 2] << 8 | p[i + 3];
        i += 2 + seg;
        if (m == 0xda) {
            n++;
            while (i + 1 < len && !(p[i] == 0xff && p[i + 1] != 0 && (p[i + 1] & 0xf8) != 0xd0))
                i++;
        }
    }
    return n;
}

static void test_scan_limit(void) {
    hsq_img src = gradient(64, 48);
    tjhandle tj = tjInitCompress();
    unsigned char *prog = NULL;
    unsigned long plen = 0;
    HSQ_OK(tjCompress2(tj, src.rgb, 64, 0, 48, TJPF_RGB, &prog, &plen, TJSAMP_420, 90,
                       TJFLAG_PROGRESSIVE));
    tjDestroy(tj);
    int scans = count_sos(prog, plen);
    HSQ_ASSERT(scans > 3 && scans < 20);

    /* A real progressive file decodes under the default limit... */
    hsq_img dec = {0};
    HSQ_OK(hsq_img_decode(prog, plen, NULL, NULL, 0, &dec));
    hsq_img_free(&dec);
    /* ...and is refused, with a message naming the photo, under a lower one. */
    hsq_img_limits lim;
    hsq_img_limits_default(&lim);
    HSQ_ASSERT_EQ(lim.max_scans, 100);
    lim.max_scans = (uint32_t)scans - 1;
    hsq_img_decode_opts o = {0};
    o.lim = &lim;
    o.what = "portrait";
    o.name = "me.jpg";
    char msg[HSQ_IMG_MSG_MAX];
    HSQ_ASSERT_EQ(hsq_img_decode_ex(prog, plen, &o, &dec, msg, sizeof msg), HSQ_EIMGTOOLARGE);
    char want[128];
    snprintf(want, sizeof want, "portrait 'me.jpg': too many progressive scans (more than %d)",
             scans - 1);
    HSQ_ASSERT_STR_EQ(msg, want);
    HSQ_ASSERT(dec.rgb == NULL);
    lim.max_scans = (uint32_t)scans;
    HSQ_OK(hsq_img_decode_ex(prog, plen, &o, &dec, msg, sizeof msg));
    HSQ_ASSERT_STR_EQ(msg, "");
    hsq_img_free(&dec);
    /* max_scans 0 in a caller's struct means the default, not "none". */
    lim.max_scans = 0;
    HSQ_OK(hsq_img_decode(prog, plen, &lim, NULL, 0, &dec));
    hsq_img_free(&dec);
    tjFree(prog);

    /* Crafted: one baseline scan repeated N times, the copies after the first
     * naming component 99 in their SOS header, which libjpeg refuses as
     * corrupt when it reaches the second scan. More than 100 copies are
     * refused as too large instead: the count ran before libjpeg decoded. */
    uint8_t *jpg;
    size_t jlen;
    HSQ_OK(hsq_img_encode_jpeg(&src, 90, &jpg, &jlen));
    size_t sos = find_marker(jpg, jlen, 0xda), eoi = jlen - 2;
    HSQ_ASSERT(jpg[eoi] == 0xff && jpg[eoi + 1] == 0xd9);
    size_t scan = eoi - sos;
    static const int copies[] = {1, 100, 101, 1000};
    for (size_t k = 0; k < sizeof copies / sizeof copies[0]; k++) {
        size_t n = sos + (size_t)copies[k] * scan + 2;
        uint8_t *b = malloc(n);
        memcpy(b, jpg, sos);
        for (int c = 0; c < copies[k]; c++) {
            uint8_t *d = b + sos + (size_t)c * scan;
            memcpy(d, jpg + sos, scan);
            if (c > 0)
                d[5] = 99; /* FF DA, length (2), Ns, Cs1 */
        }
        b[n - 2] = 0xff;
        b[n - 1] = 0xd9;
        int r = hsq_img_decode(b, n, NULL, NULL, 0, &dec);
        HSQ_ASSERT_EQ(r, copies[k] > 100 ? HSQ_EIMGTOOLARGE : copies[k] > 1 ? HSQ_EIMGCORRUPT : 0);
        hsq_img_free(&dec);
        free(b);
    }
    free(jpg);
    hsq_img_free(&src);
}

/* The marker walk and the EXIF parser under damage: every truncation of an
 * EXIF-bearing JPEG, a progressive JPEG and an eXIf PNG is corrupt (never a
 * crash, never a partial success), and byte flips anywhere give one of the
 * image errors or a valid image. */
static void test_hostile_files(void) {
    hsq_img src = corners_image();
    uint8_t *files[3];
    size_t lens[3];
    uint8_t seg[128];
    size_t sn = exif_app1(seg, 1, 6);
    files[0] = jpeg_with(&src, seg, sn, &lens[0]);
    tjhandle tj = tjInitCompress();
    unsigned char *prog = NULL;
    unsigned long plen = 0;
    HSQ_OK(tjCompress2(tj, src.rgb, OW, 0, OH, TJPF_RGB, &prog, &plen, TJSAMP_420, 90,
                       TJFLAG_PROGRESSIVE));
    tjDestroy(tj);
    files[1] = malloc(plen);
    memcpy(files[1], prog, plen);
    lens[1] = plen;
    tjFree(prog);
    uint8_t *png;
    size_t pl;
    HSQ_OK(hsq_img_encode_png(&src, 0, &png, &pl));
    uint8_t t[64];
    tentry e[] = {{0x0112, 3, 1, 6}};
    size_t tn = tiff_build(t, 0, e, 1, 0), at = 33;
    files[2] = malloc(pl + 12 + tn);
    memcpy(files[2], png, at);
    put_be32(files[2] + at, (uint32_t)tn);
    memcpy(files[2] + at + 4, "eXIf", 4);
    memcpy(files[2] + at + 8, t, tn);
    put_be32(files[2] + at + 8 + tn, (uint32_t)crc32(0, files[2] + at + 4, (uInt)tn + 4));
    memcpy(files[2] + at + 12 + tn, png + at, pl - at);
    lens[2] = pl + 12 + tn;
    free(png);
    hsq_img_free(&src);

    for (int f = 0; f < 3; f++) {
        hsq_img dec = {0};
        HSQ_OK(hsq_img_decode(files[f], lens[f], NULL, NULL, 0, &dec));
        HSQ_ASSERT_EQ(dec.w, f == 1 ? OW : OH);
        hsq_img_free(&dec);
        for (size_t cut = 0; cut < lens[f]; cut++) {
            uint8_t *c = malloc(cut ? cut : 1); /* exact size: ASan sees any overread */
            memcpy(c, files[f], cut);
            int r = hsq_img_decode(c, cut, NULL, NULL, 0, &dec);
            if (r != HSQ_EIMGCORRUPT)
                HSQ_FAIL_("file %d cut at %zu/%zu: %d", f, cut, lens[f], r);
            int o = hsq_img_orientation(c, cut);
            HSQ_ASSERT(o >= 1 && o <= 8);
            free(c);
        }
        uint32_t seed = 99u + (uint32_t)f;
        for (int it = 0; it < 3000; it++) {
            uint8_t *c = malloc(lens[f]);
            memcpy(c, files[f], lens[f]);
            for (int k = 0; k < 2; k++) {
                seed = seed * 1103515245u + 12345u;
                /* mostly the headers, where the walkers live */
                size_t pos = (seed >> 8) % (lens[f] < 200 ? lens[f] : 200);
                seed = seed * 1103515245u + 12345u;
                c[pos] = (uint8_t)(seed >> 16);
            }
            int r = hsq_img_decode(c, lens[f], NULL, NULL, 0, &dec);
            HSQ_ASSERT(r == 0 || r == HSQ_EIMGCORRUPT || r == HSQ_EIMGUNSUPP ||
                       r == HSQ_EIMGTOOLARGE);
            hsq_img_free(&dec);
            free(c);
        }
        free(files[f]);
    }
}

/* ---- DPI ---- */

static void test_jpeg_dpi(void) {
    hsq_img src = gradient(40, 30);
    uint8_t *buf;
    size_t len;
    HSQ_OK(hsq_img_encode_jpeg_dpi(&src, 90, 300, &buf, &len));
    /* SOI, APP0 "JFIF\0", version, units = 1 (dpi), X = Y = 300 */
    HSQ_ASSERT(buf[2] == 0xff && buf[3] == 0xe0);
    HSQ_ASSERT(memcmp(buf + 6, "JFIF\0", 5) == 0);
    HSQ_ASSERT_EQ(buf[13], 1);
    HSQ_ASSERT_EQ(buf[14] << 8 | buf[15], 300);
    HSQ_ASSERT_EQ(buf[16] << 8 | buf[17], 300);
    HSQ_ASSERT(!jpeg_has_metadata(buf, len));
    hsq_img dec = {0};
    HSQ_OK(hsq_img_decode(buf, len, NULL, NULL, 0, &dec));
    HSQ_ASSERT_EQ(dec.w, 40);
    hsq_img_free(&dec);
    free(buf);
    /* 254 and the 16-bit maximum; 0 leaves libjpeg's aspect-only header. */
    HSQ_OK(hsq_img_encode_jpeg_dpi(&src, 90, 254, &buf, &len));
    HSQ_ASSERT_EQ(buf[14] << 8 | buf[15], 254);
    free(buf);
    HSQ_OK(hsq_img_encode_jpeg_dpi(&src, 90, 65535, &buf, &len));
    HSQ_ASSERT_EQ(buf[16] << 8 | buf[17], 65535);
    free(buf);
    HSQ_OK(hsq_img_encode_jpeg(&src, 90, &buf, &len));
    HSQ_ASSERT_EQ(buf[13], 0);
    HSQ_ASSERT_EQ(buf[14] << 8 | buf[15], 1);
    free(buf);
    HSQ_ASSERT_EQ(hsq_img_encode_jpeg_dpi(&src, 90, 65536, &buf, &len), HSQ_EINVAL);
    hsq_img_free(&src);
}

/* ---- messages ---- */

static void test_decode_messages(void) {
    hsq_img src = gradient(40, 30);
    uint8_t *jpg;
    size_t len;
    HSQ_OK(hsq_img_encode_jpeg(&src, 90, &jpg, &len));
    hsq_img_free(&src);
    hsq_img dec = {0};
    char msg[HSQ_IMG_MSG_MAX];
    hsq_img_decode_opts o = {0};
    o.what = "portrait";
    o.name = "me.jpg";
    /* The worker's own wording ("%s: %s", label, hsq_strerror). */
    HSQ_ASSERT_EQ(hsq_img_decode_ex(jpg, len / 2, &o, &dec, msg, sizeof msg), HSQ_EIMGCORRUPT);
    HSQ_ASSERT_STR_EQ(msg, "portrait 'me.jpg': image is corrupt or truncated");
    o.name = "";
    HSQ_ASSERT_EQ(hsq_img_decode_ex(jpg, len / 2, &o, &dec, msg, sizeof msg), HSQ_EIMGCORRUPT);
    HSQ_ASSERT_STR_EQ(msg, "portrait: image is corrupt or truncated");
    o.what = NULL;
    HSQ_ASSERT_EQ(hsq_img_decode_ex("GIF89a", 6, &o, &dec, msg, sizeof msg), HSQ_EIMGUNSUPP);
    HSQ_ASSERT_STR_EQ(msg, "image: image format is not supported");
    /* Limits name their values. */
    hsq_img_limits lim;
    hsq_img_limits_default(&lim);
    lim.max_side = 32;
    o.lim = &lim;
    o.what = "background";
    o.name = "studio.jpg";
    HSQ_ASSERT_EQ(hsq_img_decode_ex(jpg, len, &o, &dec, msg, sizeof msg), HSQ_EIMGTOOLARGE);
    HSQ_ASSERT_STR_EQ(
        msg, "background 'studio.jpg': image is 40x30 pixels; the limit is 32 pixels per side");
    hsq_img_limits_default(&lim);
    lim.max_pixels = 1000;
    HSQ_ASSERT_EQ(hsq_img_decode_ex(jpg, len, &o, &dec, msg, sizeof msg), HSQ_EIMGTOOLARGE);
    HSQ_ASSERT_STR_EQ(
        msg, "background 'studio.jpg': image is 40x30 pixels (0.0 MP); the limit is 0.0 MP");
    hsq_img_limits_default(&lim);
    lim.max_bytes = 100;
    HSQ_ASSERT_EQ(hsq_img_decode_ex(jpg, len, &o, &dec, msg, sizeof msg), HSQ_EIMGTOOLARGE);
    char want[128];
    snprintf(want, sizeof want, "background 'studio.jpg': file is %zu bytes; the limit is 100",
             len);
    HSQ_ASSERT_STR_EQ(msg, want);
    /* A long name is cut, never overflowed; a small buffer likewise. */
    char name[300];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    o.name = name;
    HSQ_ASSERT_EQ(hsq_img_decode_ex(jpg, len, &o, &dec, msg, sizeof msg), HSQ_EIMGTOOLARGE);
    HSQ_ASSERT_EQ(strlen(msg), sizeof msg - 1);
    char small[8];
    HSQ_ASSERT_EQ(hsq_img_decode_ex(jpg, len, &o, &dec, small, sizeof small), HSQ_EIMGTOOLARGE);
    HSQ_ASSERT_STR_EQ(small, "backgro");
    /* Success clears the message. */
    HSQ_OK(hsq_img_decode_ex(jpg, len, NULL, &dec, msg, sizeof msg));
    HSQ_ASSERT_STR_EQ(msg, "");
    hsq_img_free(&dec);
    free(jpg);
}

/* Grey JPEG decodes to equal channels. */
static void test_grey_jpeg(void) {
    enum { W = 24, H = 8 };
    uint8_t grey[W * H];
    for (int i = 0; i < W * H; i++)
        grey[i] = (uint8_t)(i % W * 10);
    tjhandle tj = tjInitCompress();
    unsigned char *jpg = NULL;
    unsigned long jlen = 0;
    HSQ_OK(tjCompress2(tj, grey, W, 0, H, TJPF_GRAY, &jpg, &jlen, TJSAMP_GRAY, 100, 0));
    tjDestroy(tj);
    hsq_img dec = {0};
    HSQ_OK(hsq_img_decode(jpg, jlen, NULL, NULL, 0, &dec));
    for (int i = 0; i < W * H; i++) {
        HSQ_ASSERT_EQ(dec.rgb[3 * i], dec.rgb[3 * i + 1]);
        HSQ_ASSERT_EQ(dec.rgb[3 * i], dec.rgb[3 * i + 2]);
        HSQ_ASSERT(abs(dec.rgb[3 * i] - grey[i]) <= 4);
    }
    hsq_img_free(&dec);
    tjFree(jpg);
}

int main(void) {
    test_sniff();
    test_jpeg_roundtrip();
    test_png_roundtrip();
    test_png_variants();
    test_crop_box();
    test_resize_constant();
    test_resize_values();
    test_scaled_decode();
    test_errors_basic();
    test_truncation();
    test_limits();
    test_cmyk_decode();
    test_grey_jpeg();
    test_exif_orientations();
    test_decode_into();
    test_exif_hostile();
    test_png_exif();
    test_outputs_carry_no_exif();
    test_scaled_oriented();
    test_scan_limit();
    test_hostile_files();
    test_jpeg_dpi();
    test_decode_messages();
    printf("test_img: ok\n");
    return 0;
}
