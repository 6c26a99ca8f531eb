/* test_img.c - worker/img: decode, limits, crop/resize, encode.
 *
 * Images are made in memory: a synthetic gradient through our own encoders,
 * and every PNG colour type through libpng directly, so the decoder's
 * conversions are checked against independently written expectations.
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

    /* 200x200 needs a >= 400x400 crop: 3/8 gives 600x450 (crop 450), 1/4
     * gives 400x300 (crop 300, too small). */
    hsq_img_size t1[] = {{200, 200}};
    HSQ_OK(hsq_img_decode(buf, len, NULL, t1, 1, &dec));
    HSQ_ASSERT_EQ(dec.w, 600);
    HSQ_ASSERT_EQ(dec.h, 450);
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

/* A CMYK JPEG (stored as YCCK) is a valid file we cannot use. */
static void test_cmyk_unsupported(void) {
    enum { W = 16, H = 16 };
    uint8_t cmyk[W * H * 4];
    for (int i = 0; i < W * H * 4; i++)
        cmyk[i] = (uint8_t)i;
    tjhandle tj = tjInitCompress();
    HSQ_ASSERT(tj);
    unsigned char *jpg = NULL;
    unsigned long jlen = 0;
    HSQ_OK(tjCompress2(tj, cmyk, W, 0, H, TJPF_CMYK, &jpg, &jlen, TJSAMP_444, 90, 0));
    tjDestroy(tj);
    hsq_img dec = {0};
    HSQ_ASSERT_EQ(hsq_img_decode(jpg, jlen, NULL, NULL, 0, &dec), HSQ_EIMGUNSUPP);
    tjFree(jpg);
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
    test_cmyk_unsupported();
    test_grey_jpeg();
    printf("test_img: ok\n");
    return 0;
}
