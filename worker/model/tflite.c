/* tflite.c - bounds-checked reader for the TFLite flatbuffer container.
 *
 * DESIGN. A flatbuffer is a graph of tables linked by 32-bit offsets: a
 * table starts with a signed offset to its vtable (u16 vtable size, u16
 * table size, then one u16 offset per field, 0 = absent); reference fields
 * hold an unsigned offset from the field itself to a table, vector or
 * string; vectors start with a u32 element count. Every read below goes
 * through in_range() first and uses memcpy, so unaligned or overlapping
 * objects are harmless; a field must lie inside its table's declared size and
 * a vector's count is checked against the bytes left in the file before
 * anything is allocated for it, so memory use is bounded by the file size.
 * The reader follows the schema top-down (Model -> SubGraph -> Tensor /
 * Operator -> options), never a generic recursion, so depth is fixed and a
 * cyclic or self-referencing file cannot make it loop.
 */
#include "worker/model/tflite.h"

#include "common/alloc.h"
#include "schemas/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Schema field ids. */
enum {
    MODEL_VERSION = 0,
    MODEL_OPCODES = 1,
    MODEL_SUBGRAPHS = 2,
    MODEL_DESC = 3,
    MODEL_BUFFERS = 4
};
enum { OPC_DEPRECATED = 0, OPC_CUSTOM = 1, OPC_VERSION = 2, OPC_BUILTIN = 3 };
enum { SG_TENSORS = 0, SG_INPUTS = 1, SG_OUTPUTS = 2, SG_OPERATORS = 3 };
enum { TEN_SHAPE = 0, TEN_TYPE = 1, TEN_BUFFER = 2, TEN_NAME = 3, TEN_QUANT = 4 };
enum { QUANT_SCALE = 2 };
enum { BUF_DATA = 0, BUF_OFFSET = 1, BUF_SIZE = 2 };
enum {
    OP_OPCODE = 0,
    OP_INPUTS = 1,
    OP_OUTPUTS = 2,
    OP_OPT_TYPE = 3,
    OP_OPTS = 4,
    OP_CUSTOM_OPTS = 5,
    OP_LARGE_CUSTOM_OFFSET = 9,
    OP_LARGE_CUSTOM_SIZE = 10,
};

typedef struct {
    const uint8_t *b;
    size_t len;
    char *err;
    size_t errlen;
    char where[48]; /* "tensor 12", prefixed to messages */
} rd;

typedef struct {
    size_t pos;     /* table start (its soffset) */
    size_t vt;      /* vtable start */
    uint16_t vtlen; /* vtable bytes */
    uint16_t tlen;  /* table bytes, soffset included */
} tbl;

__attribute__((format(printf, 2, 3))) static int fail(rd *r, const char *fmt, ...) {
    if (r->err && r->errlen) {
        size_t n = 0;
        if (r->where[0]) {
            int k = snprintf(r->err, r->errlen, "%s: ", r->where);
            n = k > 0 ? (size_t)k : 0;
            if (n >= r->errlen)
                n = r->errlen - 1;
        }
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err + n, r->errlen - n, fmt, ap);
        va_end(ap);
    }
    return HSQ_ECORRUPT;
}

static int nomem(rd *r) {
    if (r->err && r->errlen)
        snprintf(r->err, r->errlen, "out of memory");
    return HSQ_ENOMEM;
}

static uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t ld32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t ld64(const uint8_t *p) { return (uint64_t)ld32(p) | (uint64_t)ld32(p + 4) << 32; }

static int in_range(const rd *r, size_t pos, size_t n) {
    return pos <= r->len && n <= r->len - pos;
}

/* Follow the u32 offset stored at pos. */
static int deref(rd *r, size_t pos, size_t *target, const char *what) {
    if (!in_range(r, pos, 4))
        return fail(r, "%s: offset field out of range", what);
    uint32_t v = ld32(r->b + pos);
    if (v == 0)
        return fail(r, "%s: offset points at itself", what);
    if ((uint64_t)v >= r->len - pos)
        return fail(r, "%s: offset %u points past the end", what, v);
    *target = pos + v;
    return 0;
}

static int table_at(rd *r, size_t pos, tbl *t, const char *what) {
    if (!in_range(r, pos, 4))
        return fail(r, "%s: table out of range", what);
    int64_t vt = (int64_t)pos - (int64_t)(int32_t)ld32(r->b + pos);
    if (vt < 0 || !in_range(r, (size_t)vt, 4))
        return fail(r, "%s: vtable out of range", what);
    t->pos = pos;
    t->vt = (size_t)vt;
    t->vtlen = ld16(r->b + t->vt);
    t->tlen = ld16(r->b + t->vt + 2);
    if (t->vtlen < 4 || (t->vtlen & 1) || !in_range(r, t->vt, t->vtlen))
        return fail(r, "%s: bad vtable", what);
    if (t->tlen < 4 || !in_range(r, pos, t->tlen))
        return fail(r, "%s: table size out of range", what);
    return 0;
}

/* *pos = position of field id (size bytes wide), 0 when absent. */
static int field(rd *r, const tbl *t, int id, size_t size, size_t *pos, const char *what) {
    size_t e = 4 + 2 * (size_t)id;
    *pos = 0;
    if (e + 2 > t->vtlen)
        return 0;
    uint16_t off = ld16(r->b + t->vt + e);
    if (off == 0)
        return 0;
    if (off < 4 || (size_t)off + size > t->tlen)
        return fail(r, "%s: field %d outside its table", what, id);
    *pos = t->pos + off;
    return 0;
}

static int f_i32(rd *r, const tbl *t, int id, int32_t def, int32_t *v, const char *what) {
    size_t p;
    int rc = field(r, t, id, 4, &p, what);
    if (rc)
        return rc;
    *v = p ? (int32_t)ld32(r->b + p) : def;
    return 0;
}

static int f_u32(rd *r, const tbl *t, int id, uint32_t *v, const char *what) {
    size_t p;
    int rc = field(r, t, id, 4, &p, what);
    if (rc)
        return rc;
    *v = p ? ld32(r->b + p) : 0;
    return 0;
}

static int f_u64(rd *r, const tbl *t, int id, uint64_t *v, const char *what) {
    size_t p;
    int rc = field(r, t, id, 8, &p, what);
    if (rc)
        return rc;
    *v = p ? ld64(r->b + p) : 0;
    return 0;
}

/* A byte-wide field (int8, uint8 or bool), sign-extended when sgn. */
static int f_i8(rd *r, const tbl *t, int id, int sgn, int32_t def, int32_t *v, const char *what) {
    size_t p;
    int rc = field(r, t, id, 1, &p, what);
    if (rc)
        return rc;
    *v = p ? (sgn ? (int32_t)(int8_t)r->b[p] : (int32_t)r->b[p]) : def;
    return 0;
}

/* Vector at pos: *start = first element, *count elements of elem bytes. */
static int vec_at(rd *r, size_t pos, size_t elem, uint32_t max, size_t *start, uint32_t *count,
                  const char *what) {
    if (!in_range(r, pos, 4))
        return fail(r, "%s: vector out of range", what);
    uint32_t n = ld32(r->b + pos);
    if (n > max)
        return fail(r, "%s: %u elements, limit %u", what, n, max);
    if ((uint64_t)n > (r->len - pos - 4) / elem)
        return fail(r, "%s: vector length %u runs past the end", what, n);
    *start = pos + 4;
    *count = n;
    return 0;
}

/* A vector field; absent = empty. */
static int f_vec(rd *r, const tbl *t, int id, size_t elem, uint32_t max, size_t *start,
                 uint32_t *count, const char *what) {
    size_t p, v;
    int rc = field(r, t, id, 4, &p, what);
    *start = 0;
    *count = 0;
    if (rc || !p)
        return rc;
    if ((rc = deref(r, p, &v, what)))
        return rc;
    return vec_at(r, v, elem, max, start, count, what);
}

/* A table field; *present = 0 when absent. */
static int f_table(rd *r, const tbl *t, int id, tbl *out, int *present, const char *what) {
    size_t p, v;
    int rc = field(r, t, id, 4, &p, what);
    *present = 0;
    if (rc || !p)
        return rc;
    if ((rc = deref(r, p, &v, what)) || (rc = table_at(r, v, out, what)))
        return rc;
    *present = 1;
    return 0;
}

/* Element i of a vector of tables. */
static int vec_table(rd *r, size_t start, uint32_t i, tbl *out, const char *what) {
    size_t v;
    int rc = deref(r, start + 4 * (size_t)i, &v, what);
    return rc ? rc : table_at(r, v, out, what);
}

/* A string field, copied (cut at HSQ_TFL_MAX_NAME bytes); absent = "". */
static int f_str(rd *r, const tbl *t, int id, char **out, const char *what) {
    size_t start;
    uint32_t n;
    int rc = f_vec(r, t, id, 1, UINT32_MAX, &start, &n, what);
    if (rc)
        return rc;
    size_t k = n > HSQ_TFL_MAX_NAME ? HSQ_TFL_MAX_NAME : n;
    char *s = hsq_trymalloc(k + 1);
    if (!s)
        return nomem(r);
    if (k)
        memcpy(s, r->b + start, k);
    s[k] = '\0';
    *out = s;
    return 0;
}

/* A vector of int32 copied into *out (NULL when empty), each checked to lie
 * in [lo, hi]. */
static int f_i32vec(rd *r, const tbl *t, int id, uint32_t max, int32_t lo, int32_t hi,
                    int32_t **out, int32_t *count, const char *what) {
    size_t start;
    uint32_t n;
    int rc = f_vec(r, t, id, 4, max, &start, &n, what);
    *out = NULL;
    *count = 0;
    if (rc || n == 0)
        return rc;
    int32_t *v = hsq_trymalloc((size_t)n * sizeof *v);
    if (!v)
        return nomem(r);
    for (uint32_t i = 0; i < n; i++) {
        v[i] = (int32_t)ld32(r->b + start + 4 * (size_t)i);
        if (v[i] < lo || v[i] > hi) {
            int32_t bad = v[i];
            free(v);
            return fail(r, "%s: element %u = %d out of range [%d, %d]", what, i, bad, lo, hi);
        }
    }
    *out = v;
    *count = (int32_t)n;
    return 0;
}

/* ---- the TFLite schema ---- */

static int parse_opcodes(rd *r, hsq_tfl_model *m, const tbl *root) {
    size_t start;
    uint32_t n;
    int rc = f_vec(r, root, MODEL_OPCODES, 4, HSQ_TFL_MAX_OPCODES, &start, &n, "operator_codes");
    if (rc)
        return rc;
    m->opcodes = calloc(n ? n : 1, sizeof *m->opcodes);
    if (!m->opcodes)
        return nomem(r);
    for (uint32_t i = 0; i < n; i++) {
        hsq_tfl_opcode *oc = &m->opcodes[i];
        tbl t;
        int32_t dep, bi;
        char *custom = NULL;
        snprintf(r->where, sizeof r->where, "operator code %u", i);
        if ((rc = vec_table(r, start, i, &t, "table")) ||
            (rc = f_i8(r, &t, OPC_DEPRECATED, 1, 0, &dep, "deprecated_builtin_code")) ||
            (rc = f_i32(r, &t, OPC_BUILTIN, 0, &bi, "builtin_code")) ||
            (rc = f_i32(r, &t, OPC_VERSION, 1, &oc->version, "version")) ||
            (rc = f_str(r, &t, OPC_CUSTOM, &custom, "custom_code")))
            return rc;
        oc->custom = custom;
        m->n_opcodes = (int32_t)i + 1;
        oc->builtin = dep > bi ? dep : bi;
        if (oc->builtin < 0)
            return fail(r, "negative builtin code %d", oc->builtin);
    }
    m->n_opcodes = (int32_t)n;
    r->where[0] = '\0';
    return 0;
}

static int parse_buffers(rd *r, hsq_tfl_model *m, const tbl *root) {
    size_t start;
    uint32_t n;
    int rc = f_vec(r, root, MODEL_BUFFERS, 4, HSQ_TFL_MAX_BUFFERS, &start, &n, "buffers");
    if (rc)
        return rc;
    m->buffers = calloc(n ? n : 1, sizeof *m->buffers);
    if (!m->buffers)
        return nomem(r);
    m->n_buffers = (int32_t)n;
    for (uint32_t i = 0; i < n; i++) {
        tbl t;
        size_t ds;
        uint32_t dn;
        uint64_t off, size;
        snprintf(r->where, sizeof r->where, "buffer %u", i);
        if ((rc = vec_table(r, start, i, &t, "table")) ||
            (rc = f_vec(r, &t, BUF_DATA, 1, UINT32_MAX, &ds, &dn, "data")) ||
            (rc = f_u64(r, &t, BUF_OFFSET, &off, "offset")) ||
            (rc = f_u64(r, &t, BUF_SIZE, &size, "size")))
            return rc;
        if (dn) {
            m->buffers[i].ptr = r->b + ds;
            m->buffers[i].len = dn;
        } else if (off > 1 && size > 0) {
            /* Large models keep tensor data after the flatbuffer. */
            if (off > r->len || size > r->len - off)
                return fail(r, "data at offset %llu size %llu outside the file",
                            (unsigned long long)off, (unsigned long long)size);
            m->buffers[i].ptr = r->b + off;
            m->buffers[i].len = (size_t)size;
        }
    }
    r->where[0] = '\0';
    return 0;
}

static int parse_tensor(rd *r, hsq_tfl_model *m, const tbl *t, hsq_tfl_tensor *ten) {
    size_t start;
    uint32_t n;
    char *name = NULL;
    tbl q;
    int present, rc;
    int32_t type;
    if ((rc = f_vec(r, t, TEN_SHAPE, 4, UINT32_MAX, &start, &n, "shape")))
        return rc;
    if (n > HSQ_TFL_MAX_RANK)
        return fail(r, "rank %u over the limit %d", n, HSQ_TFL_MAX_RANK);
    ten->rank = (int32_t)n;
    for (uint32_t i = 0; i < n; i++)
        ten->dims[i] = (int32_t)ld32(r->b + start + 4 * (size_t)i);
    if ((rc = f_i8(r, t, TEN_TYPE, 1, HSQ_TFL_FLOAT32, &type, "type")) ||
        (rc = f_u32(r, t, TEN_BUFFER, &ten->buffer, "buffer")))
        return rc;
    ten->type = type;
    if (ten->buffer >= (uint32_t)m->n_buffers && !(ten->buffer == 0 && m->n_buffers == 0))
        return fail(r, "buffer index %u out of range (%d buffers)", ten->buffer, m->n_buffers);
    if ((rc = f_table(r, t, TEN_QUANT, &q, &present, "quantization")))
        return rc;
    if (present) {
        if ((rc = f_vec(r, &q, QUANT_SCALE, 4, UINT32_MAX, &start, &n, "quantization scale")))
            return rc;
        ten->quantized = n > 0;
    }
    if ((rc = f_str(r, t, TEN_NAME, &name, "name")))
        return rc;
    ten->name = name;
    return 0;
}

static int parse_options(rd *r, hsq_tfl_op *op, const tbl *t) {
    hsq_tfl_opts *o = &op->opts;
    int rc = 0;
    size_t start;
    uint32_t n;
    switch (op->opt_type) {
    case HSQ_TFL_OPT_CONV2D:
        (void)((rc = f_i8(r, t, 0, 1, 0, &o->padding, "padding")) ||
               (rc = f_i32(r, t, 1, 0, &o->stride_w, "stride_w")) ||
               (rc = f_i32(r, t, 2, 0, &o->stride_h, "stride_h")) ||
               (rc = f_i8(r, t, 3, 1, 0, &o->act, "fused_activation_function")) ||
               (rc = f_i32(r, t, 4, 1, &o->dilation_w, "dilation_w_factor")) ||
               (rc = f_i32(r, t, 5, 1, &o->dilation_h, "dilation_h_factor")));
        break;
    case HSQ_TFL_OPT_DEPTHWISE:
        (void)((rc = f_i8(r, t, 0, 1, 0, &o->padding, "padding")) ||
               (rc = f_i32(r, t, 1, 0, &o->stride_w, "stride_w")) ||
               (rc = f_i32(r, t, 2, 0, &o->stride_h, "stride_h")) ||
               (rc = f_i32(r, t, 3, 0, &o->depth_multiplier, "depth_multiplier")) ||
               (rc = f_i8(r, t, 4, 1, 0, &o->act, "fused_activation_function")) ||
               (rc = f_i32(r, t, 5, 1, &o->dilation_w, "dilation_w_factor")) ||
               (rc = f_i32(r, t, 6, 1, &o->dilation_h, "dilation_h_factor")));
        break;
    case HSQ_TFL_OPT_POOL2D:
        (void)((rc = f_i8(r, t, 0, 1, 0, &o->padding, "padding")) ||
               (rc = f_i32(r, t, 1, 0, &o->stride_w, "stride_w")) ||
               (rc = f_i32(r, t, 2, 0, &o->stride_h, "stride_h")) ||
               (rc = f_i32(r, t, 3, 0, &o->filter_w, "filter_width")) ||
               (rc = f_i32(r, t, 4, 0, &o->filter_h, "filter_height")) ||
               (rc = f_i8(r, t, 5, 1, 0, &o->act, "fused_activation_function")));
        break;
    case HSQ_TFL_OPT_CONCAT:
        (void)((rc = f_i32(r, t, 0, 0, &o->axis, "axis")) ||
               (rc = f_i8(r, t, 1, 1, 0, &o->act, "fused_activation_function")));
        break;
    case HSQ_TFL_OPT_ADD:
    case HSQ_TFL_OPT_MUL:
        rc = f_i8(r, t, 0, 1, 0, &o->act, "fused_activation_function");
        break;
    case HSQ_TFL_OPT_RESIZE_BILINEAR:
        (void)((rc = f_i8(r, t, 2, 0, 0, &o->align_corners, "align_corners")) ||
               (rc = f_i8(r, t, 3, 0, 0, &o->half_pixel_centers, "half_pixel_centers")));
        break;
    case HSQ_TFL_OPT_RESHAPE:
        if ((rc = f_vec(r, t, 0, 4, UINT32_MAX, &start, &n, "new_shape")))
            break;
        if (n > HSQ_TFL_MAX_RANK) {
            rc = fail(r, "new_shape rank %u over the limit %d", n, HSQ_TFL_MAX_RANK);
            break;
        }
        if (start) {
            o->new_shape_n = (int32_t)n;
            for (uint32_t i = 0; i < n; i++)
                o->new_shape[i] = (int32_t)ld32(r->b + start + 4 * (size_t)i);
        }
        break;
    default:
        break; /* options hsq does not use */
    }
    return rc;
}

static int parse_op(rd *r, hsq_tfl_model *m, const tbl *t, hsq_tfl_op *op) {
    int32_t *in = NULL, *out = NULL, ot;
    tbl ot_tbl;
    int present, rc;
    size_t start;
    uint32_t n;
    uint64_t loff, lsize;
    op->opts.dilation_w = op->opts.dilation_h = 1;
    op->opts.new_shape_n = -1;
    if ((rc = f_u32(r, t, OP_OPCODE, &op->opcode, "opcode_index")))
        return rc;
    if (op->opcode >= (uint32_t)m->n_opcodes)
        return fail(r, "opcode index %u out of range (%d codes)", op->opcode, m->n_opcodes);
    rc = f_i32vec(r, t, OP_INPUTS, HSQ_TFL_MAX_OP_IO, -1, m->n_tensors - 1, &in, &op->n_in,
                  "inputs");
    op->in = in;
    if (rc)
        return rc;
    rc = f_i32vec(r, t, OP_OUTPUTS, HSQ_TFL_MAX_OP_IO, -1, m->n_tensors - 1, &out, &op->n_out,
                  "outputs");
    op->out = out;
    if (rc)
        return rc;
    if ((rc = f_i8(r, t, OP_OPT_TYPE, 0, 0, &ot, "builtin_options_type")))
        return rc;
    op->opt_type = (uint8_t)ot;
    if ((rc = f_table(r, t, OP_OPTS, &ot_tbl, &present, "builtin_options")))
        return rc;
    if (present && op->opt_type != HSQ_TFL_OPT_NONE && (rc = parse_options(r, op, &ot_tbl)))
        return rc;
    if ((rc = f_vec(r, t, OP_CUSTOM_OPTS, 1, UINT32_MAX, &start, &n, "custom_options")))
        return rc;
    if (n) {
        op->custom_options.ptr = r->b + start;
        op->custom_options.len = n;
    }
    if ((rc = f_u64(r, t, OP_LARGE_CUSTOM_OFFSET, &loff, "large_custom_options_offset")) ||
        (rc = f_u64(r, t, OP_LARGE_CUSTOM_SIZE, &lsize, "large_custom_options_size")))
        return rc;
    if (!n && loff > 1 && lsize > 0) {
        if (loff > r->len || lsize > r->len - loff)
            return fail(r, "large custom options outside the file");
        op->custom_options.ptr = r->b + loff;
        op->custom_options.len = (size_t)lsize;
    }
    return 0;
}

static int parse_subgraph(rd *r, hsq_tfl_model *m, const tbl *sg) {
    size_t start;
    uint32_t n;
    int rc;
    int32_t *io;
    if ((rc = f_vec(r, sg, SG_TENSORS, 4, HSQ_TFL_MAX_TENSORS, &start, &n, "subgraph tensors")))
        return rc;
    m->tensors = calloc(n ? n : 1, sizeof *m->tensors);
    if (!m->tensors)
        return nomem(r);
    m->n_tensors = (int32_t)n;
    for (uint32_t i = 0; i < n; i++) {
        tbl t;
        snprintf(r->where, sizeof r->where, "tensor %u", i);
        if ((rc = vec_table(r, start, i, &t, "table")) ||
            (rc = parse_tensor(r, m, &t, &m->tensors[i])))
            return rc;
    }
    r->where[0] = '\0';
    rc = f_i32vec(r, sg, SG_INPUTS, HSQ_TFL_MAX_GRAPH_IO, 0, m->n_tensors - 1, &io, &m->n_inputs,
                  "subgraph inputs");
    m->inputs = io;
    if (rc)
        return rc;
    rc = f_i32vec(r, sg, SG_OUTPUTS, HSQ_TFL_MAX_GRAPH_IO, 0, m->n_tensors - 1, &io, &m->n_outputs,
                  "subgraph outputs");
    m->outputs = io;
    if (rc)
        return rc;
    if ((rc = f_vec(r, sg, SG_OPERATORS, 4, HSQ_TFL_MAX_OPS, &start, &n, "subgraph operators")))
        return rc;
    m->ops = calloc(n ? n : 1, sizeof *m->ops);
    if (!m->ops)
        return nomem(r);
    m->n_ops = (int32_t)n;
    for (uint32_t i = 0; i < n; i++) {
        tbl t;
        snprintf(r->where, sizeof r->where, "operator %u", i);
        if ((rc = vec_table(r, start, i, &t, "table")) || (rc = parse_op(r, m, &t, &m->ops[i])))
            return rc;
    }
    r->where[0] = '\0';
    return 0;
}

int hsq_tfl_parse(hsq_tfl_model **out, const void *buf, size_t len, char *err, size_t errlen) {
    rd r = {.b = buf, .len = len, .err = err, .errlen = errlen};
    tbl root, sg;
    size_t rootpos, sgstart;
    uint32_t nsg;
    char *desc = NULL;
    int rc;
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!buf || len < 8)
        return fail(&r, "file too short (%zu bytes)", len);
    if (memcmp(r.b + 4, "TFL3", 4) != 0)
        return fail(&r, "not a TFLite file (no TFL3 identifier)");
    hsq_tfl_model *m = calloc(1, sizeof *m);
    if (!m)
        return nomem(&r);
    if ((rc = deref(&r, 0, &rootpos, "root")) || (rc = table_at(&r, rootpos, &root, "model")) ||
        (rc = f_u32(&r, &root, MODEL_VERSION, &m->version, "version")) ||
        (rc = f_str(&r, &root, MODEL_DESC, &desc, "description")))
        goto out;
    m->description = desc;
    if (m->version != 3) {
        rc = fail(&r, "schema version %u, expected 3", m->version);
        goto out;
    }
    if ((rc = parse_opcodes(&r, m, &root)) || (rc = parse_buffers(&r, m, &root)))
        goto out;
    if ((rc = f_vec(&r, &root, MODEL_SUBGRAPHS, 4, 1024, &sgstart, &nsg, "subgraphs")))
        goto out;
    if (nsg == 0) {
        rc = fail(&r, "no subgraph");
        goto out;
    }
    m->n_subgraphs = (int32_t)nsg;
    if ((rc = vec_table(&r, sgstart, 0, &sg, "subgraph 0")) || (rc = parse_subgraph(&r, m, &sg)))
        goto out;
out:
    if (rc) {
        hsq_tfl_free(&m);
        return rc;
    }
    *out = m;
    return 0;
}

void hsq_tfl_free(hsq_tfl_model **mp) {
    hsq_tfl_model *m = *mp;
    if (!m)
        return;
    if (m->opcodes)
        for (int32_t i = 0; i < m->n_opcodes; i++)
            free((char *)m->opcodes[i].custom);
    if (m->tensors)
        for (int32_t i = 0; i < m->n_tensors; i++)
            free((char *)m->tensors[i].name);
    if (m->ops)
        for (int32_t i = 0; i < m->n_ops; i++) {
            free((int32_t *)m->ops[i].in);
            free((int32_t *)m->ops[i].out);
        }
    free(m->opcodes);
    free(m->tensors);
    free(m->ops);
    free(m->buffers);
    free((int32_t *)m->inputs);
    free((int32_t *)m->outputs);
    free((char *)m->description);
    free(m);
    *mp = NULL;
}

static const char *const op_names[] = {"ADD",
                                       "AVERAGE_POOL_2D",
                                       "CONCATENATION",
                                       "CONV_2D",
                                       "DEPTHWISE_CONV_2D",
                                       "DEPTH_TO_SPACE",
                                       "DEQUANTIZE",
                                       "EMBEDDING_LOOKUP",
                                       "FLOOR",
                                       "FULLY_CONNECTED",
                                       "HASHTABLE_LOOKUP",
                                       "L2_NORMALIZATION",
                                       "L2_POOL_2D",
                                       "LOCAL_RESPONSE_NORMALIZATION",
                                       "LOGISTIC",
                                       "LSH_PROJECTION",
                                       "LSTM",
                                       "MAX_POOL_2D",
                                       "MUL",
                                       "RELU",
                                       "RELU_N1_TO_1",
                                       "RELU6",
                                       "RESHAPE",
                                       "RESIZE_BILINEAR",
                                       "RNN",
                                       "SOFTMAX",
                                       "SPACE_TO_DEPTH",
                                       "SVDF",
                                       "TANH",
                                       "CONCAT_EMBEDDINGS",
                                       "SKIP_GRAM",
                                       "CALL",
                                       "CUSTOM",
                                       "EMBEDDING_LOOKUP_SPARSE",
                                       "PAD",
                                       "UNIDIRECTIONAL_SEQUENCE_RNN",
                                       "GATHER",
                                       "BATCH_TO_SPACE_ND",
                                       "SPACE_TO_BATCH_ND",
                                       "TRANSPOSE",
                                       "MEAN",
                                       "SUB",
                                       "DIV",
                                       "SQUEEZE",
                                       "UNIDIRECTIONAL_SEQUENCE_LSTM",
                                       "STRIDED_SLICE",
                                       "BIDIRECTIONAL_SEQUENCE_RNN",
                                       "EXP",
                                       "TOPK_V2",
                                       "SPLIT",
                                       "LOG_SOFTMAX",
                                       "DELEGATE",
                                       "BIDIRECTIONAL_SEQUENCE_LSTM",
                                       "CAST",
                                       "PRELU",
                                       "MAXIMUM",
                                       "ARG_MAX",
                                       "MINIMUM",
                                       "LESS",
                                       "NEG",
                                       "PADV2",
                                       "GREATER",
                                       "GREATER_EQUAL",
                                       "LESS_EQUAL",
                                       "SELECT",
                                       "SLICE",
                                       "SIN",
                                       "TRANSPOSE_CONV",
                                       "SPARSE_TO_DENSE",
                                       "TILE",
                                       "EXPAND_DIMS",
                                       "EQUAL",
                                       "NOT_EQUAL",
                                       "LOG",
                                       "SUM",
                                       "SQRT",
                                       "RSQRT",
                                       "SHAPE",
                                       "POW",
                                       "ARG_MIN",
                                       "FAKE_QUANT",
                                       "REDUCE_PROD",
                                       "REDUCE_MAX",
                                       "PACK",
                                       "LOGICAL_OR",
                                       "ONE_HOT",
                                       "LOGICAL_AND",
                                       "LOGICAL_NOT",
                                       "UNPACK",
                                       "REDUCE_MIN",
                                       "FLOOR_DIV",
                                       "REDUCE_ANY",
                                       "SQUARE",
                                       "ZEROS_LIKE",
                                       "FILL",
                                       "FLOOR_MOD",
                                       "RANGE",
                                       "RESIZE_NEAREST_NEIGHBOR",
                                       "LEAKY_RELU",
                                       "SQUARED_DIFFERENCE",
                                       "MIRROR_PAD",
                                       "ABS",
                                       "SPLIT_V",
                                       "UNIQUE",
                                       "CEIL",
                                       "REVERSE_V2",
                                       "ADD_N",
                                       "GATHER_ND",
                                       "COS",
                                       "WHERE",
                                       "RANK",
                                       "ELU",
                                       "REVERSE_SEQUENCE",
                                       "MATRIX_DIAG",
                                       "QUANTIZE",
                                       "MATRIX_SET_DIAG",
                                       "ROUND",
                                       "HARD_SWISH",
                                       "IF",
                                       "WHILE",
                                       "NON_MAX_SUPPRESSION_V4",
                                       "NON_MAX_SUPPRESSION_V5",
                                       "SCATTER_ND",
                                       "SELECT_V2",
                                       "DENSIFY",
                                       "SEGMENT_SUM",
                                       "BATCH_MATMUL",
                                       "PLACEHOLDER_FOR_GREATER_OP_CODES",
                                       "CUMSUM",
                                       "CALL_ONCE",
                                       "BROADCAST_TO",
                                       "RFFT2D",
                                       "CONV_3D",
                                       "IMAG",
                                       "REAL",
                                       "COMPLEX_ABS",
                                       "HASHTABLE",
                                       "HASHTABLE_FIND",
                                       "HASHTABLE_IMPORT",
                                       "HASHTABLE_SIZE",
                                       "REDUCE_ALL",
                                       "CONV_3D_TRANSPOSE",
                                       "VAR_HANDLE",
                                       "READ_VARIABLE",
                                       "ASSIGN_VARIABLE",
                                       "BROADCAST_ARGS",
                                       "RANDOM_STANDARD_NORMAL",
                                       "BUCKETIZE",
                                       "RANDOM_UNIFORM",
                                       "MULTINOMIAL",
                                       "GELU",
                                       "DYNAMIC_UPDATE_SLICE",
                                       "RELU_0_TO_1",
                                       "UNSORTED_SEGMENT_PROD",
                                       "UNSORTED_SEGMENT_MAX",
                                       "UNSORTED_SEGMENT_SUM",
                                       "ATAN2",
                                       "UNSORTED_SEGMENT_MIN",
                                       "SIGN"};

const char *hsq_tfl_op_name(int32_t builtin) {
    if (builtin < 0 || (size_t)builtin >= sizeof op_names / sizeof op_names[0])
        return "?";
    return op_names[builtin];
}

const char *hsq_tfl_type_name(int32_t type) {
    static const char *const names[] = {"FLOAT32", "FLOAT16",    "INT32",  "UINT8",     "INT64",
                                        "STRING",  "BOOL",       "INT16",  "COMPLEX64", "INT8",
                                        "FLOAT64", "COMPLEX128", "UINT64", "RESOURCE",  "VARIANT",
                                        "UINT32",  "UINT16",     "INT4"};
    if (type < 0 || (size_t)type >= sizeof names / sizeof names[0])
        return "?";
    return names[type];
}
