/* test_tflite.c - worker/model/tflite.c: the flatbuffer reader on valid and
 * hostile files.
 *
 * Valid: a synthetic model (tfl_build.c) parses to what was written, old and
 * new operator-code fields included, and the two real models (when
 * scripts/models has fetched them) parse to the facts in
 * shared/notes/models.md. Hostile: empty, short and garbage files; every
 * 32-bit word and every 16-bit half-word of a synthetic model replaced by
 * values that make offsets point past the end, at themselves or backwards,
 * vectors and strings claim huge lengths, vtables loop onto their own table;
 * the real models truncated at many offsets and with random byte flips. Each
 * must give an error (a truncated file always) or load, and never crash or
 * read out of bounds: the meson test runs this under ASan/UBSan in the
 * sanitizer build. Variants that load are also run once when small. The
 * real models are read from HSQ_MODELS_DIR, else <argv[1]>/models (meson
 * passes the source root); without them their cases are skipped.
 */
#include "worker/model/internal.h"
#include "worker/model/model.h"
#include "worker/model/tflite.h"

#include "schemas/err.h"
#include "test.h"
#include "tfl_build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x1234567887654321ull;

static uint32_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

static long n_loaded, n_refused, n_ran;
static int run_every = 1; /* run one loaded variant in run_every */

/* Parse and load buf; the result must be a clean success or one of the
 * documented errors with a message. Loaded models with a modest arena are
 * run once on zeros. Returns the load result. */
static int try_load(const uint8_t *buf, size_t len) {
    char err[256];
    hsq_tfl_model *f = NULL;
    int prc = hsq_tfl_parse(&f, buf, len, err, sizeof err);
    if (prc) {
        HSQ_ASSERT(f == NULL);
        HSQ_ASSERT(prc == HSQ_ECORRUPT || prc == HSQ_ENOMEM);
        HSQ_ASSERT(err[0] != '\0');
    } else {
        HSQ_ASSERT(f != NULL);
        hsq_tfl_free(&f);
        HSQ_ASSERT(f == NULL);
    }
    hsq_model *m = NULL;
    err[0] = 'x';
    int rc = hsq_model_load_mem(&m, buf, len, "hostile.tflite", err, sizeof err);
    if (rc) {
        HSQ_ASSERT(m == NULL);
        if (rc != HSQ_ECORRUPT && rc != HSQ_EINVAL && rc != HSQ_ENOMEM)
            HSQ_FAIL_("unexpected code %d (%s)", rc, err);
        HSQ_ASSERT(strncmp(err, "hostile.tflite: ", 16) == 0);
        /* a parse failure is a load failure */
        n_refused++;
        return rc;
    }
    HSQ_ASSERT(prc == 0);
    HSQ_ASSERT(err[0] == '\0');
    n_loaded++;
    /* A loaded model has sane queries and runs (when small enough). */
    HSQ_ASSERT(hsq_model_n_inputs(m) >= 1 && hsq_model_n_outputs(m) >= 1);
    size_t in_elems[16] = {0}, total = 0;
    int nin = hsq_model_n_inputs(m);
    if (n_loaded % run_every == 0 && nin <= 16 && hsq_model_arena_bytes(m, 1) <= (64u << 20)) {
        for (int i = 0; i < nin; i++) {
            hsq_shape s = hsq_model_input_shape(m, i);
            in_elems[i] = 1;
            for (int k = 0; k < s.rank; k++)
                in_elems[i] *= (size_t)s.dims[k];
            total += in_elems[i];
        }
        if (total <= (16u << 20)) {
            float *zeros = calloc(total ? total : 1, sizeof(float));
            const float *in[16];
            HSQ_ASSERT(zeros);
            for (int i = 0; i < nin; i++)
                in[i] = zeros;
            hsq_model_ctx *c = NULL;
            HSQ_OK(hsq_model_ctx_new(&c, m));
            const float *outs[64];
            HSQ_OK(hsq_model_run(c, 1, in, outs));
            hsq_model_ctx_free(&c);
            free(zeros);
            n_ran++;
        }
    }
    hsq_model_free(&m);
    return 0;
}

/* ---- a synthetic model ---- */

/* x [1,6,5,3] -> CONV 3x3/2 (fp16 weights) -> RELU -> RESHAPE [1,6,4] ->
 * CONCAT with itself (axis 1) -> y; plus a custom transposed conv branch. */
static uint8_t *synthetic(size_t *len, int legacy) {
    tfb *b = tfb_new();
    tfb_legacy_opcodes(b, legacy);
    int xd[4] = {1, 6, 5, 3}, cd[4] = {1, 3, 3, 4}, wd[4] = {4, 3, 3, 3}, bd[1] = {4};
    int rd[3] = {1, 9, 4}, yd[3] = {1, 18, 4}, td[4] = {1, 6, 6, 2}, twd[4] = {2, 2, 2, 4};
    float w[108], bias[4] = {0.5f, -0.25f, 0.125f, 1.0f}, tw[32], tb[2] = {0.5f, -0.5f};
    for (int i = 0; i < 108; i++)
        w[i] = (float)((i * 37) % 64 - 32) / 64.0f;
    for (int i = 0; i < 32; i++)
        tw[i] = (float)((i * 11) % 16 - 8) / 16.0f;
    int tx = tfb_tensor(b, 0, 4, xd, 0, "input");
    int tw16 = tfb_const_f16(b, 4, wd, w), tbias = tfb_const_f32(b, 1, bd, bias);
    int tc = tfb_tensor(b, 0, 4, cd, 0, "conv"), tr = tfb_tensor(b, 0, 4, cd, 0, "relu");
    int tre = tfb_tensor(b, 0, 3, rd, 0, "reshaped"), ty = tfb_tensor(b, 0, 3, yd, 0, "out");
    int tbd[1] = {2};
    int ttw = tfb_const_f16(b, 4, twd, tw), ttb = tfb_const_f32(b, 1, tbd, tb);
    int tt = tfb_tensor(b, 0, 4, td, 0, "tconv");
    tfb_opts co = {0};
    co.nf = 3;
    co.f[0].id = 0, co.f[0].size = 1, co.f[0].v = HSQ_TFL_PAD_SAME;
    co.f[1].id = 1, co.f[1].size = 4, co.f[1].v = 2;
    co.f[2].id = 2, co.f[2].size = 4, co.f[2].v = 2;
    int ci[3] = {tx, tw16, tbias};
    tfb_op(b, HSQ_TFL_OP_CONV_2D, NULL, 3, ci, 1, &tc, HSQ_TFL_OPT_CONV2D, &co, NULL, 0);
    tfb_op(b, HSQ_TFL_OP_RELU, NULL, 1, &tc, 1, &tr, 0, NULL, NULL, 0);
    tfb_opts ro = {0};
    ro.has_vec = 1, ro.vec_id = 0, ro.nvec = 3, ro.vec[0] = 1, ro.vec[1] = 9, ro.vec[2] = 4;
    tfb_op(b, HSQ_TFL_OP_RESHAPE, NULL, 1, &tr, 1, &tre, HSQ_TFL_OPT_RESHAPE, &ro, NULL, 0);
    tfb_opts ko = {0};
    ko.nf = 1, ko.f[0].id = 0, ko.f[0].size = 4, ko.f[0].v = 1;
    int cc[2] = {tre, tre};
    tfb_op(b, HSQ_TFL_OP_CONCATENATION, NULL, 2, cc, 1, &ty, HSQ_TFL_OPT_CONCAT, &ko, NULL, 0);
    uint8_t raw[12] = {1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0};
    int ti[3] = {tr, ttw, ttb};
    tfb_op(b, HSQ_TFL_OP_CUSTOM, "Convolution2DTransposeBias", 3, ti, 1, &tt, 0, NULL, raw, 12);
    int outs[2] = {ty, tt};
    tfb_io(b, 1, &tx, 2, outs);
    uint8_t *buf = tfb_finish(b, len);
    tfb_free(b);
    return buf;
}

static void test_valid_synthetic(void) {
    for (int legacy = 0; legacy < 2; legacy++) {
        size_t len;
        uint8_t *buf = synthetic(&len, legacy);
        hsq_tfl_model *f = NULL;
        char err[256];
        int rc = hsq_tfl_parse(&f, buf, len, err, sizeof err);
        if (rc)
            HSQ_FAIL_("parse: %d %s", rc, err);
        HSQ_ASSERT_EQ(f->version, 3);
        HSQ_ASSERT_STR_EQ(f->description, "hsq test model");
        HSQ_ASSERT_EQ(f->n_subgraphs, 1);
        HSQ_ASSERT_EQ(f->n_inputs, 1);
        HSQ_ASSERT_EQ(f->n_outputs, 2);
        HSQ_ASSERT_EQ(f->n_ops, 7); /* 2 DEQUANTIZE + 5 */
        HSQ_ASSERT_EQ(f->opcodes[f->ops[0].opcode].builtin, HSQ_TFL_OP_DEQUANTIZE);
        const hsq_tfl_op *conv = &f->ops[2];
        HSQ_ASSERT_EQ(f->opcodes[conv->opcode].builtin, HSQ_TFL_OP_CONV_2D);
        HSQ_ASSERT_EQ(conv->opt_type, HSQ_TFL_OPT_CONV2D);
        HSQ_ASSERT_EQ(conv->opts.stride_w, 2);
        HSQ_ASSERT_EQ(conv->opts.dilation_h, 1); /* schema default */
        HSQ_ASSERT_EQ(conv->n_in, 3);
        const hsq_tfl_tensor *x = &f->tensors[conv->in[0]];
        HSQ_ASSERT_STR_EQ(x->name, "input");
        HSQ_ASSERT_EQ(x->rank, 4);
        HSQ_ASSERT_EQ(x->dims[2], 5);
        const hsq_tfl_op *rs = &f->ops[4];
        HSQ_ASSERT_EQ(rs->opts.new_shape_n, 3);
        HSQ_ASSERT_EQ(rs->opts.new_shape[1], 9);
        const hsq_tfl_op *t = &f->ops[6];
        HSQ_ASSERT_EQ(f->opcodes[t->opcode].builtin, HSQ_TFL_OP_CUSTOM);
        HSQ_ASSERT_STR_EQ(f->opcodes[t->opcode].custom, "Convolution2DTransposeBias");
        HSQ_ASSERT_EQ(t->custom_options.len, 12);
        HSQ_ASSERT_EQ(t->custom_options.ptr[4], 2);
        hsq_tfl_free(&f);
        hsq_model *m = NULL;
        rc = hsq_model_load_mem(&m, buf, len, "synthetic.tflite", err, sizeof err);
        if (rc)
            HSQ_FAIL_("load: %d %s", rc, err);
        hsq_model_free(&m);
        HSQ_ASSERT_EQ(try_load(buf, len), 0);
        free(buf);
    }
    /* A builtin code only the int field can hold (GELU = 150): the reader
     * takes the max of the two fields, so the loader names it. */
    tfb *b = tfb_new();
    int d[4] = {1, 2, 2, 1};
    int tx = tfb_tensor(b, 0, 4, d, 0, "x"), ty = tfb_tensor(b, 0, 4, d, 0, "y");
    tfb_op(b, 150, NULL, 1, &tx, 1, &ty, 0, NULL, NULL, 0);
    tfb_io(b, 1, &tx, 1, &ty);
    size_t len;
    uint8_t *buf = tfb_finish(b, &len);
    tfb_free(b);
    hsq_tfl_model *f = NULL;
    HSQ_OK(hsq_tfl_parse(&f, buf, len, NULL, 0));
    HSQ_ASSERT_EQ(f->opcodes[0].builtin, 150);
    HSQ_ASSERT_STR_EQ(hsq_tfl_op_name(150), "GELU");
    HSQ_ASSERT_STR_EQ(hsq_tfl_op_name(-1), "?");
    HSQ_ASSERT_STR_EQ(hsq_tfl_op_name(100000), "?");
    hsq_tfl_free(&f);
    hsq_tfl_free(&f);
    free(buf);
}

/* ---- hostile inputs ---- */

static void test_short_and_garbage(void) {
    static const uint8_t head[8] = {0x10, 0, 0, 0, 'T', 'F', 'L', '3'};
    char err[128];
    hsq_tfl_model *f = NULL;
    HSQ_ASSERT_EQ(hsq_tfl_parse(&f, NULL, 0, err, sizeof err), HSQ_ECORRUPT);
    HSQ_ASSERT(strstr(err, "too short") != NULL);
    HSQ_ASSERT_EQ(hsq_tfl_parse(&f, head, 0, err, sizeof err), HSQ_ECORRUPT);
    for (size_t n = 0; n <= sizeof head; n++)
        HSQ_ASSERT(try_load(head, n) != 0);
    static const uint8_t wrong_id[16] = {8, 0, 0, 0, 'T', 'F', 'L', '2'};
    HSQ_ASSERT_EQ(hsq_tfl_parse(&f, wrong_id, sizeof wrong_id, err, sizeof err), HSQ_ECORRUPT);
    HSQ_ASSERT(strstr(err, "TFL3") != NULL);
    /* Random garbage, with and without a valid identifier. */
    uint8_t g[4096];
    for (int i = 0; i < 3000; i++) {
        size_t n = (size_t)(rnd() % sizeof g);
        for (size_t k = 0; k < n; k++)
            g[k] = (uint8_t)rnd();
        if (i % 2 && n >= 8)
            memcpy(g + 4, "TFL3", 4);
        if (i % 4 == 1 && n >= 8) { /* a root offset that lands inside */
            uint32_t r = 8 + rnd() % (uint32_t)(n - 7);
            g[0] = (uint8_t)r, g[1] = (uint8_t)(r >> 8), g[2] = g[3] = 0;
        }
        HSQ_ASSERT(try_load(g, n) != 0 || 1);
    }
    /* err may be NULL or tiny. */
    HSQ_ASSERT_EQ(hsq_tfl_parse(&f, wrong_id, sizeof wrong_id, NULL, 0), HSQ_ECORRUPT);
    HSQ_ASSERT_EQ(hsq_tfl_parse(&f, wrong_id, sizeof wrong_id, err, 1), HSQ_ECORRUPT);
    HSQ_ASSERT(err[0] == '\0');
    hsq_model *m = NULL;
    HSQ_ASSERT_EQ(hsq_model_load_mem(&m, wrong_id, sizeof wrong_id, NULL, err, 5), HSQ_ECORRUPT);
    HSQ_ASSERT_EQ(strlen(err), 4);
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16),
    p[3] = (uint8_t)(v >> 24);
}

/* Every word and half-word of the synthetic model, overwritten with values
 * chosen to break offsets, lengths and vtables. */
static void test_word_replacement(void) {
    size_t len;
    uint8_t *orig = synthetic(&len, 0);
    uint8_t *buf = malloc(len);
    HSQ_ASSERT(buf);
    for (size_t pos = 0; pos + 4 <= len; pos++) {
        uint32_t vals[] = {0,
                           1,
                           2,
                           4,
                           0x7fffffffu,
                           0xffffffffu,
                           0x80000000u,
                           0x00010000u,
                           (uint32_t)len,
                           (uint32_t)(len - pos),     /* exactly the end */
                           (uint32_t)(len - pos - 1), /* the last byte */
                           (uint32_t)(len - pos - 4),
                           (uint32_t)(-(int32_t)pos), /* soffset: vtable at byte 0 */
                           (uint32_t)(int32_t)(pos - len),
                           (uint32_t)(len / 4),
                           0x3fffffffu};
        for (size_t k = 0; k < sizeof vals / sizeof vals[0]; k++) {
            memcpy(buf, orig, len);
            put32(buf + pos, vals[k]);
            try_load(buf, len);
        }
        if (pos + 2 <= len)
            for (uint32_t v16 = 0; v16 < 6; v16++) {
                static const uint16_t h[] = {0, 2, 3, 0xffff, 0x8000, 4};
                memcpy(buf, orig, len);
                buf[pos] = (uint8_t)h[v16];
                buf[pos + 1] = (uint8_t)(h[v16] >> 8);
                try_load(buf, len);
            }
    }
    /* Truncated anywhere: always an error. */
    for (size_t n = 0; n < len; n++)
        if (try_load(orig, n) == 0)
            HSQ_FAIL_("synthetic model truncated to %zu of %zu bytes loaded", n, len);
    /* Truncation that keeps the whole flatbuffer but a copy in a bigger
     * buffer with trailing junk still loads (trailing bytes are unused). */
    uint8_t *big = malloc(len + 100);
    HSQ_ASSERT(big);
    memcpy(big, orig, len);
    memset(big + len, 0xa5, 100);
    HSQ_ASSERT_EQ(try_load(big, len + 100), 0);
    free(big);
    free(buf);
    free(orig);
}

/* ---- the real models ---- */

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    rewind(fp);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    HSQ_ASSERT(buf);
    HSQ_ASSERT(fread(buf, 1, (size_t)n, fp) == (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static int test_real(const char *dir, const char *file, int face) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    size_t len;
    uint8_t *orig = read_file(path, &len);
    if (!orig) {
        printf("tflite: %s absent (run scripts/models); its cases skipped\n", path);
        return 0;
    }
    hsq_tfl_model *f = NULL;
    char err[256];
    HSQ_OK(hsq_tfl_parse(&f, orig, len, err, sizeof err));
    /* Facts from shared/notes/models.md sections 1-3. */
    HSQ_ASSERT_EQ(f->n_subgraphs, 1);
    HSQ_ASSERT_EQ(f->n_inputs, 1);
    HSQ_ASSERT_EQ(f->inputs[0], 0);
    if (face) {
        HSQ_ASSERT_STR_EQ(f->description, "keras2tflite_facedetector-front.tflite.generated");
        HSQ_ASSERT_EQ(f->n_ops, 164);
        HSQ_ASSERT_EQ(f->n_outputs, 2);
        HSQ_ASSERT_EQ(f->outputs[0], 175);
        HSQ_ASSERT_EQ(f->outputs[1], 174);
        HSQ_ASSERT_STR_EQ(f->tensors[175].name, "regressors");
        HSQ_ASSERT_STR_EQ(f->tensors[174].name, "classificators");
    } else {
        HSQ_ASSERT_EQ(f->n_ops, 246);
        HSQ_ASSERT_EQ(f->n_outputs, 1);
        HSQ_ASSERT_EQ(f->outputs[0], 249);
        HSQ_ASSERT_STR_EQ(f->tensors[249].name, "activation_10");
        int found = 0;
        for (int i = 0; i < f->n_ops; i++) {
            const hsq_tfl_op *op = &f->ops[i];
            if (f->opcodes[op->opcode].builtin != HSQ_TFL_OP_CUSTOM)
                continue;
            HSQ_ASSERT_STR_EQ(f->opcodes[op->opcode].custom, "Convolution2DTransposeBias");
            static const uint8_t want[12] = {1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0};
            HSQ_ASSERT_EQ(op->custom_options.len, 12);
            HSQ_ASSERT(memcmp(op->custom_options.ptr, want, 12) == 0);
            const hsq_tfl_tensor *w = &f->tensors[op->in[1]];
            HSQ_ASSERT(w->rank == 4 && w->dims[0] == 1 && w->dims[1] == 2 && w->dims[2] == 2 &&
                       w->dims[3] == 16);
            found++;
        }
        HSQ_ASSERT_EQ(found, 1);
    }
    int dq = 0, f16 = 0;
    for (int i = 0; i < f->n_ops; i++)
        dq += f->opcodes[f->ops[i].opcode].builtin == HSQ_TFL_OP_DEQUANTIZE;
    for (int i = 0; i < f->n_tensors; i++)
        f16 += f->tensors[i].type == HSQ_TFL_FLOAT16;
    HSQ_ASSERT_EQ(dq, face ? 74 : 110);
    HSQ_ASSERT_EQ(f16, face ? 74 : 110);
    hsq_tfl_free(&f);
    HSQ_ASSERT_EQ(try_load(orig, len), 0);

    uint8_t *buf = malloc(len);
    HSQ_ASSERT(buf);
    /* Truncations: every offset in the first 4 KiB and the last 512 bytes,
     * then a stride through the rest. */
    long trunc = 0;
    for (size_t n = 0; n < len; n += (n < 4096 || n + 512 >= len) ? 1 : 97) {
        if (try_load(orig, n) == 0)
            HSQ_FAIL_("%s truncated to %zu of %zu bytes loaded", file, n, len);
        trunc++;
    }
    /* Byte flips at random positions, one at a time, and some in bursts.
     * Most land in weights and load fine; running every one of those would
     * only re-test the kernels, so one in 20 runs. */
    long flips = 0;
    run_every = 20;
    for (int i = 0; i < 800; i++) {
        memcpy(buf, orig, len);
        int k = i % 10 == 0 ? 8 : 1;
        for (int j = 0; j < k; j++) {
            size_t p = (size_t)(rnd() % (uint32_t)len);
            buf[p] ^= (uint8_t)(1u << (rnd() % 8));
        }
        try_load(buf, len);
        flips++;
    }
    /* Flips concentrated in the flatbuffer's metadata (the first and last
     * kilobytes hold tables and vtables in these files). */
    for (int i = 0; i < 800; i++) {
        memcpy(buf, orig, len);
        size_t p = i % 2 ? (size_t)(rnd() % 1024) : len - 1 - (size_t)(rnd() % 1024);
        buf[p] = (uint8_t)rnd();
        try_load(buf, len);
        flips++;
    }
    run_every = 1;
    printf("tflite: %s: %ld truncations refused, %ld flipped variants\n", file, trunc, flips);
    free(buf);
    free(orig);
    return 1;
}

int main(int argc, char **argv) {
    test_valid_synthetic();
    test_short_and_garbage();
    test_word_replacement();
    const char *dir = getenv("HSQ_MODELS_DIR");
    char def[1024];
    if (!dir || !*dir) {
        snprintf(def, sizeof def, "%s/models", argc > 1 ? argv[1] : ".");
        dir = def;
    }
    int real = test_real(dir, "face_detection_short_range.tflite", 1);
    real += test_real(dir, "selfie_segmentation.tflite", 0);
    printf("tflite: ok: %ld loads, %ld refused, %ld runs; %d real model(s)\n", n_loaded, n_refused,
           n_ran, real);
    return 0;
}
