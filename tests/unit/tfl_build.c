/* tfl_build.c - write small .tflite files for tests (see tfl_build.h). */
#include "tfl_build.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXV 8 /* rank / vector fields */

typedef struct {
    uint8_t *data;
    size_t len;
} tb_buf;

typedef struct {
    int type, rank, dims[MAXV], buffer;
    char name[64];
} tb_tensor;

typedef struct {
    int builtin;
    char custom[64];
    int has_custom;
} tb_opcode;

typedef struct {
    int opcode, nin, nout;
    int in[64], out[8];
    int opt_type, has_opts;
    tfb_opts opts;
    uint8_t *custom;
    size_t custom_len;
} tb_op;

struct tfb {
    tb_buf *bufs;
    int nbufs;
    tb_tensor *tensors;
    int ntensors;
    tb_opcode opcodes[64];
    int nopcodes;
    tb_op *ops;
    int nops;
    int in[16], out[16], nin, nout;
    int legacy;
};

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q)
        abort();
    return q;
}

tfb *tfb_new(void) {
    tfb *b = calloc(1, sizeof *b);
    if (!b)
        abort();
    tfb_buffer(b, NULL, 0);
    return b;
}

void tfb_free(tfb *b) {
    if (!b)
        return;
    for (int i = 0; i < b->nbufs; i++)
        free(b->bufs[i].data);
    for (int i = 0; i < b->nops; i++)
        free(b->ops[i].custom);
    free(b->bufs);
    free(b->tensors);
    free(b->ops);
    free(b);
}

int tfb_buffer(tfb *b, const void *data, size_t len) {
    b->bufs = xrealloc(b->bufs, (size_t)(b->nbufs + 1) * sizeof *b->bufs);
    tb_buf *t = &b->bufs[b->nbufs];
    t->len = len;
    t->data = NULL;
    if (len) {
        t->data = xrealloc(NULL, len);
        memcpy(t->data, data, len);
    }
    return b->nbufs++;
}

int tfb_tensor(tfb *b, int type, int rank, const int *dims, int buffer, const char *name) {
    b->tensors = xrealloc(b->tensors, (size_t)(b->ntensors + 1) * sizeof *b->tensors);
    tb_tensor *t = &b->tensors[b->ntensors];
    memset(t, 0, sizeof *t);
    t->type = type;
    t->rank = rank;
    for (int i = 0; i < rank && i < MAXV; i++)
        t->dims[i] = dims[i];
    t->buffer = buffer;
    snprintf(t->name, sizeof t->name, "%s", name ? name : "");
    return b->ntensors++;
}

static size_t count(int rank, const int *dims) {
    size_t n = 1;
    for (int i = 0; i < rank; i++)
        n *= (size_t)dims[i];
    return n;
}

int tfb_const_f32(tfb *b, int rank, const int *dims, const float *data) {
    size_t n = count(rank, dims);
    uint8_t *bytes = xrealloc(NULL, n * 4);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &data[i], 4);
        for (int k = 0; k < 4; k++)
            bytes[4 * i + (size_t)k] = (uint8_t)(u >> (8 * k));
    }
    int buf = tfb_buffer(b, bytes, n * 4);
    free(bytes);
    return tfb_tensor(b, 0, rank, dims, buf, "const_f32");
}

uint16_t tfb_half(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    float a = fabsf(f);
    if (a == 0.0f)
        return sign;
    int e;
    float m = frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    uint16_t h;
    if (e - 1 >= -14) {
        /* normal: a = (1 + frac) * 2^(e-1) */
        float frac = m * 2.0f - 1.0f;
        float q = frac * 1024.0f;
        if (q != floorf(q) || e - 1 > 15)
            abort();
        h = (uint16_t)(((e - 1 + 15) << 10) | (int)q);
    } else {
        float q = a * 16777216.0f; /* a / 2^-24 */
        if (q != floorf(q) || q >= 1024.0f)
            abort();
        h = (uint16_t)q;
    }
    return (uint16_t)(sign | h);
}

int tfb_const_f16(tfb *b, int rank, const int *dims, const float *data) {
    size_t n = count(rank, dims);
    uint8_t *bytes = xrealloc(NULL, n * 2);
    for (size_t i = 0; i < n; i++) {
        uint16_t h = tfb_half(data[i]);
        bytes[2 * i] = (uint8_t)h;
        bytes[2 * i + 1] = (uint8_t)(h >> 8);
    }
    int buf = tfb_buffer(b, bytes, n * 2);
    free(bytes);
    int t16 = tfb_tensor(b, 1, rank, dims, buf, "const_f16");
    int t32 = tfb_tensor(b, 0, rank, dims, 0, "dequantized");
    tfb_op(b, 6, NULL, 1, &t16, 1, &t32, 0, NULL, NULL, 0);
    return t32;
}

int tfb_const_i32(tfb *b, int rank, const int *dims, const int32_t *data) {
    size_t n = count(rank, dims);
    uint8_t *bytes = xrealloc(NULL, n * 4);
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++)
            bytes[4 * i + (size_t)k] = (uint8_t)((uint32_t)data[i] >> (8 * k));
    int buf = tfb_buffer(b, bytes, n * 4);
    free(bytes);
    return tfb_tensor(b, 2, rank, dims, buf, "const_i32");
}

int tfb_opcode(tfb *b, int builtin, const char *custom) {
    for (int i = 0; i < b->nopcodes; i++)
        if (b->opcodes[i].builtin == builtin &&
            (!custom || strcmp(b->opcodes[i].custom, custom) == 0))
            return i;
    tb_opcode *o = &b->opcodes[b->nopcodes];
    o->builtin = builtin;
    o->has_custom = custom != NULL;
    snprintf(o->custom, sizeof o->custom, "%s", custom ? custom : "");
    return b->nopcodes++;
}

int tfb_op(tfb *b, int builtin, const char *custom, int nin, const int *in, int nout,
           const int *out, int opt_type, const tfb_opts *opts, const void *custom_opts,
           size_t custom_len) {
    b->ops = xrealloc(b->ops, (size_t)(b->nops + 1) * sizeof *b->ops);
    tb_op *o = &b->ops[b->nops];
    memset(o, 0, sizeof *o);
    o->opcode = tfb_opcode(b, builtin, custom);
    o->nin = nin;
    o->nout = nout;
    memcpy(o->in, in, (size_t)nin * sizeof(int));
    memcpy(o->out, out, (size_t)nout * sizeof(int));
    o->opt_type = opt_type;
    if (opts) {
        o->has_opts = 1;
        o->opts = *opts;
    }
    if (custom_len) {
        o->custom = xrealloc(NULL, custom_len);
        memcpy(o->custom, custom_opts, custom_len);
        o->custom_len = custom_len;
    }
    return b->nops++;
}

void tfb_legacy_opcodes(tfb *b, int on) { b->legacy = on; }

void tfb_io(tfb *b, int nin, const int *in, int nout, const int *out) {
    b->nin = nin;
    b->nout = nout;
    memcpy(b->in, in, (size_t)nin * sizeof(int));
    memcpy(b->out, out, (size_t)nout * sizeof(int));
}

/* ---- back-to-front serializer ---- */

typedef struct {
    uint8_t *buf;
    size_t cap, len; /* data occupies buf[cap - len, cap) */
} ser;

static void reserve(ser *s, size_t n) {
    if (s->len + n <= s->cap)
        return;
    size_t cap = s->cap ? s->cap : 1024;
    while (s->len + n > cap)
        cap *= 2;
    uint8_t *nb = xrealloc(NULL, cap);
    if (s->len)
        memcpy(nb + cap - s->len, s->buf + s->cap - s->len, s->len);
    free(s->buf);
    s->buf = nb;
    s->cap = cap;
}

/* Prepend bytes; returns the reference (distance from the end) of their
 * start. */
static size_t push(ser *s, const void *p, size_t n) {
    reserve(s, n);
    s->len += n;
    if (n)
        memcpy(s->buf + s->cap - s->len, p, n);
    return s->len;
}

static size_t push_u32(ser *s, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return push(s, b, 4);
}

/* Prepend a uoffset to the object at reference target. */
static size_t push_off(ser *s, size_t target) {
    return push_u32(s, (uint32_t)(s->len + 4 - target));
}

static size_t vec_i32(ser *s, int n, const int32_t *v) {
    for (int i = n - 1; i >= 0; i--)
        push_u32(s, (uint32_t)v[i]);
    return push_u32(s, (uint32_t)n);
}

static size_t vec_bytes(ser *s, const void *p, size_t n) {
    push(s, p, n);
    return push_u32(s, (uint32_t)n);
}

static size_t str(ser *s, const char *p) {
    uint8_t z = 0;
    push(s, &z, 1);
    push(s, p, strlen(p));
    return push_u32(s, (uint32_t)strlen(p));
}

static size_t vec_off(ser *s, int n, const size_t *refs) {
    for (int i = n - 1; i >= 0; i--)
        push_off(s, refs[i]);
    return push_u32(s, (uint32_t)n);
}

/* A table under construction: fields are scalars (1 or 4 bytes) or offsets
 * to objects already written. */
typedef struct {
    int n;
    struct {
        int id, size, is_off;
        uint32_t v;
        size_t ref;
    } f[16];
} tbl;

static void t_scalar(tbl *t, int id, int size, uint32_t v) {
    t->f[t->n].id = id;
    t->f[t->n].size = size;
    t->f[t->n].is_off = 0;
    t->f[t->n].v = v;
    t->n++;
}

static void t_off(tbl *t, int id, size_t ref) {
    t->f[t->n].id = id;
    t->f[t->n].size = 4;
    t->f[t->n].is_off = 1;
    t->f[t->n].ref = ref;
    t->n++;
}

static size_t t_end(ser *s, tbl *t) {
    size_t end = s->len, fref[16];
    int maxid = -1;
    for (int i = t->n - 1; i >= 0; i--) {
        if (t->f[i].is_off) {
            fref[i] = push_off(s, t->f[i].ref);
        } else if (t->f[i].size == 1) {
            uint8_t v = (uint8_t)t->f[i].v;
            fref[i] = push(s, &v, 1);
        } else {
            fref[i] = push_u32(s, t->f[i].v);
        }
        if (t->f[i].id > maxid)
            maxid = t->f[i].id;
    }
    size_t table = push_u32(s, 0); /* soffset, patched below */
    uint16_t vt[2 + 32];
    int nvt = 2 + maxid + 1;
    memset(vt, 0, sizeof vt);
    vt[0] = (uint16_t)(2 * nvt);
    vt[1] = (uint16_t)(table - end);
    for (int i = 0; i < t->n; i++)
        vt[2 + t->f[i].id] = (uint16_t)(table - fref[i]);
    uint8_t raw[2 * (2 + 32)];
    for (int i = 0; i < nvt; i++) {
        raw[2 * i] = (uint8_t)vt[i];
        raw[2 * i + 1] = (uint8_t)(vt[i] >> 8);
    }
    size_t vtab = push(s, raw, (size_t)(2 * nvt));
    uint32_t so = (uint32_t)(vtab - table);
    uint8_t *p = s->buf + s->cap - table;
    p[0] = (uint8_t)so;
    p[1] = (uint8_t)(so >> 8);
    p[2] = (uint8_t)(so >> 16);
    p[3] = (uint8_t)(so >> 24);
    return table;
}

uint8_t *tfb_finish(tfb *b, size_t *len) {
    ser s = {0};
    size_t *refs = xrealloc(NULL, (size_t)(b->nbufs + b->ntensors + b->nops + 64) * sizeof *refs);

    /* buffers */
    for (int i = 0; i < b->nbufs; i++) {
        tbl t = {0};
        if (b->bufs[i].len)
            t_off(&t, 0, vec_bytes(&s, b->bufs[i].data, b->bufs[i].len));
        refs[i] = t_end(&s, &t);
    }
    size_t buffers = vec_off(&s, b->nbufs, refs);

    /* tensors */
    for (int i = 0; i < b->ntensors; i++) {
        const tb_tensor *x = &b->tensors[i];
        tbl t = {0};
        size_t shape = vec_i32(&s, x->rank, x->dims);
        size_t name = str(&s, x->name);
        t_off(&t, 0, shape);
        t_scalar(&t, 1, 1, (uint32_t)x->type);
        t_scalar(&t, 2, 4, (uint32_t)x->buffer);
        t_off(&t, 3, name);
        refs[i] = t_end(&s, &t);
    }
    size_t tensors = vec_off(&s, b->ntensors, refs);

    /* operators */
    for (int i = 0; i < b->nops; i++) {
        const tb_op *o = &b->ops[i];
        tbl t = {0};
        size_t in = vec_i32(&s, o->nin, o->in), out = vec_i32(&s, o->nout, o->out);
        size_t opts = 0, custom = 0;
        if (o->has_opts) {
            tbl ot = {0};
            if (o->opts.has_vec)
                t_off(&ot, o->opts.vec_id, vec_i32(&s, o->opts.nvec, o->opts.vec));
            for (int k = 0; k < o->opts.nf; k++)
                t_scalar(&ot, o->opts.f[k].id, o->opts.f[k].size, (uint32_t)o->opts.f[k].v);
            opts = t_end(&s, &ot);
        }
        if (o->custom_len)
            custom = vec_bytes(&s, o->custom, o->custom_len);
        t_scalar(&t, 0, 4, (uint32_t)o->opcode);
        t_off(&t, 1, in);
        t_off(&t, 2, out);
        if (o->opt_type)
            t_scalar(&t, 3, 1, (uint32_t)o->opt_type);
        if (opts)
            t_off(&t, 4, opts);
        if (custom)
            t_off(&t, 5, custom);
        refs[i] = t_end(&s, &t);
    }
    size_t ops = vec_off(&s, b->nops, refs);

    size_t gin = vec_i32(&s, b->nin, b->in), gout = vec_i32(&s, b->nout, b->out);
    tbl sg = {0};
    t_off(&sg, 0, tensors);
    t_off(&sg, 1, gin);
    t_off(&sg, 2, gout);
    t_off(&sg, 3, ops);
    refs[0] = t_end(&s, &sg);
    size_t subgraphs = vec_off(&s, 1, refs);

    for (int i = 0; i < b->nopcodes; i++) {
        const tb_opcode *oc = &b->opcodes[i];
        tbl t = {0};
        size_t cname = oc->has_custom ? str(&s, oc->custom) : 0;
        t_scalar(&t, 0, 1, (uint32_t)(oc->builtin < 127 ? oc->builtin : 127));
        if (cname)
            t_off(&t, 1, cname);
        t_scalar(&t, 2, 4, 1);
        if (!b->legacy)
            t_scalar(&t, 3, 4, (uint32_t)oc->builtin);
        refs[i] = t_end(&s, &t);
    }
    size_t opcodes = vec_off(&s, b->nopcodes, refs);
    size_t desc = str(&s, "hsq test model");

    tbl model = {0};
    t_scalar(&model, 0, 4, 3);
    t_off(&model, 1, opcodes);
    t_off(&model, 2, subgraphs);
    t_off(&model, 3, desc);
    t_off(&model, 4, buffers);
    size_t root = t_end(&s, &model);
    push(&s, "TFL3", 4);
    push_off(&s, root);
    free(refs);

    uint8_t *outb = xrealloc(NULL, s.len);
    memcpy(outb, s.buf + s.cap - s.len, s.len);
    *len = s.len;
    free(s.buf);
    return outb;
}
