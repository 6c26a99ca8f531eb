/* graph.c - turn a parsed .tflite into an executable graph and run it.
 *
 * DESIGN. Loading walks subgraph 0's operators in file order (TFLite stores
 * them in execution order) and makes one node per op that computes. Every
 * op's output shape is recomputed from its inputs and options and must equal
 * the shape the file declares: the kernels trust their geometry, so this
 * check is what makes a hostile file an error instead of an overrun.
 *
 * Tensors come in three kinds. Constants are converted to fp32 once (fp16
 * weights included) and owned by the model; a DEQUANTIZE of a constant
 * makes no node, its output simply becomes that constant. Graph inputs are
 * read in place from the caller's buffers. Everything else is an activation
 * living in one arena per context. Some nodes make no copy: a RESHAPE's
 * output and a RELU folded into the op before it are aliases of their input's
 * storage (the "root").
 *
 * Batch. The file's activations all have batch 1; at run time the batch is n
 * and every activation is n images back to back. Arena offsets are planned
 * per image and multiplied by n at run time, which keeps the plan valid for
 * any n (intervals that are disjoint stay disjoint when scaled). The plan
 * reuses memory by liveness: a root is allocated (first fit) when its node
 * runs and released after the last node that reads it or any alias of it.
 * Graph outputs are never released. On the CPU the graph runs one image at
 * a time (image i of tensor t sits at t's base + i * its per-image size):
 * the weights are small enough to stay in cache anyway, while running a node
 * over the whole batch would push the activations out of L2 for nothing.
 */
#include "worker/model/internal.h"
#include "worker/model/tflite.h"

#include "common/alloc.h"
#include "schemas/err.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 64
#define MAX_FILE_BYTES (256u * 1024 * 1024)
#define MAX_DIM 65536          /* any single dimension */
#define MAX_WINDOW 256         /* kernel size, stride, dilation */
#define MAX_ELEMS (1u << 26)   /* floats in one tensor (per image): 256 MiB */
#define MAX_ARENA (1ull << 26) /* activation floats per image: 256 MiB */
#define ALIGN_FLOATS 16        /* 64-byte alignment of every tensor */
#define NO_USE (-1)
#define FOREVER 0x7fffffff

enum tkind { T_NONE, T_CONST, T_INPUT, T_ACT };

typedef struct {
    enum tkind kind;
    int rank;
    int dims[HSQ_TFL_MAX_RANK]; /* as in the file (batch 1) */
    size_t elems;               /* per image (activations), total (constants) */
    int root;                   /* storage owner: itself or the tensor it aliases */
    int input_idx;              /* T_INPUT */
    size_t off;                 /* T_ACT roots: arena offset per image, floats */
    int last;                   /* roots: index of the last node reading it */
    float *f;                   /* T_CONST float data (owned) */
    int32_t *i32;               /* T_CONST int32 data (owned) */
    int consumers;              /* node inputs that read this tensor */
    int is_output;
} tensor;

enum { N_CONV, N_DW, N_TCONV, N_POOL, N_BIN, N_UN, N_PAD, N_RESHAPE, N_CONCAT, N_RESIZE };

typedef struct {
    int kind;
    int tfl_op; /* index of the operator in the file */
    int nin;
    int *in; /* tensor ids, owned */
    int out;
    int skip; /* an alias: the node computes nothing */
    hsq_geom g;
    hsq_act act;
    hsq_wpack wp;          /* N_CONV */
    const float *w, *bias; /* borrowed from constant tensors */
    int flag;              /* pool: is_max; unary: HSQ_UN_*; binary: HSQ_BIN_* */
    int align_corners, half_pixel;
    /* 4-D views for N_BIN / N_PAD: dims, and where the batch sits (-1: a
     * constant operand with no batch). */
    int ad[4], bd[4], od[4];
    int abat, bbat, obat;
    int before[4];
    size_t outer;  /* N_CONCAT: outer blocks per image */
    size_t *inner; /* N_CONCAT: floats per block of each input, owned */
    uint64_t macs;
} node;

struct hsq_model {
    char name[64];
    int ntensors;
    tensor *t;
    int nnodes;
    node *nodes;
    int nin, nout;
    int *inputs, *outputs;
    char **out_names;
    size_t arena;   /* floats per image */
    size_t scratch; /* floats, independent of the batch */
    uint64_t macs;
};

struct hsq_model_ctx {
    const hsq_model *m;
    float *arena;
    size_t cap; /* floats */
    float *scratch;
    int reference;
    double *prof; /* per-node seconds when profiling */
};

/* ---- build context and errors ---- */

typedef struct {
    hsq_model *m;
    const hsq_tfl_model *f;
    char *err;
    size_t errlen;
    int op; /* operator being built, -1 outside */
    const char *opname;
} build;

__attribute__((format(printf, 3, 4))) static int bfail(build *b, int code, const char *fmt, ...) {
    if (b->err && b->errlen) {
        size_t n = 0;
        int k = b->op >= 0 ? snprintf(b->err, b->errlen, "%s: operator %d (%s): ", b->m->name,
                                      b->op, b->opname)
                           : snprintf(b->err, b->errlen, "%s: ", b->m->name);
        n = k > 0 ? (size_t)k : 0;
        if (n < b->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(b->err + n, b->errlen - n, fmt, ap);
            va_end(ap);
        }
    }
    return code;
}

static hsq_act act_from(int a) {
    hsq_act r = hsq_act_none();
    switch (a) {
    case HSQ_TFL_ACT_RELU:
        r.lo = 0.0f;
        break;
    case HSQ_TFL_ACT_RELU6:
        r.lo = 0.0f;
        r.hi = 6.0f;
        break;
    case HSQ_TFL_ACT_RELU_N1_TO_1:
        r.lo = -1.0f;
        r.hi = 1.0f;
        break;
    default:
        break;
    }
    return r;
}

static int check_act(build *b, int a) {
    if (a == HSQ_TFL_ACT_NONE || a == HSQ_TFL_ACT_RELU || a == HSQ_TFL_ACT_RELU6 ||
        a == HSQ_TFL_ACT_RELU_N1_TO_1)
        return 0;
    return bfail(b, HSQ_EINVAL, "unsupported fused activation %d", a);
}

/* ---- tensors ---- */

static int tensor_ref(build *b, int i, int *out) {
    const hsq_tfl_op *op = &b->f->ops[b->op];
    if (i >= op->n_in || op->in[i] < 0)
        return bfail(b, HSQ_ECORRUPT, "input %d missing", i);
    *out = op->in[i];
    return 0;
}

/* An input that must be a computed tensor (graph input or earlier output),
 * float32, rank want (0 = any up to 4). */
static int act_input(build *b, int i, int want_rank, int *out) {
    int t = -1, rc = tensor_ref(b, i, &t);
    if (rc)
        return rc;
    tensor *T = &b->m->t[t];
    if (T->kind == T_CONST ||
        (T->kind == T_NONE && b->f->n_buffers && b->f->buffers[b->f->tensors[t].buffer].len))
        return bfail(b, HSQ_EINVAL, "constant tensor %d as a data input is unsupported", t);
    if (T->kind == T_NONE)
        return bfail(b, HSQ_ECORRUPT, "tensor %d read before it is written", t);
    if (want_rank && T->rank != want_rank)
        return bfail(b, HSQ_EINVAL, "input %d has rank %d, expected %d", i, T->rank, want_rank);
    T->consumers++;
    *out = t;
    return 0;
}

static int shape_elems(build *b, const int *dims, int rank, size_t limit, size_t *out) {
    size_t e = 1;
    for (int i = 0; i < rank; i++) {
        if (dims[i] < 1 || dims[i] > MAX_DIM)
            return bfail(b, HSQ_ECORRUPT, "dimension %d out of range", dims[i]);
        e *= (size_t)dims[i];
        if (e > limit)
            return bfail(b, HSQ_ECORRUPT, "tensor too large");
    }
    *out = e;
    return 0;
}

/* A constant input: convert the file's data to fp32 (or copy int32) once. */
static int const_input(build *b, int i, int want_i32, int *out) {
    int t = -1, rc = tensor_ref(b, i, &t);
    if (rc)
        return rc;
    tensor *T = &b->m->t[t];
    const hsq_tfl_tensor *ft = &b->f->tensors[t];
    if (T->kind == T_CONST) {
        if (want_i32 ? !T->i32 : !T->f)
            return bfail(b, HSQ_EINVAL, "constant tensor %d has type %s", t,
                         hsq_tfl_type_name(ft->type));
        T->consumers++;
        *out = t;
        return 0;
    }
    if (T->kind != T_NONE)
        return bfail(b, HSQ_EINVAL, "tensor %d must be a constant", t);
    const hsq_tfl_bytes *data = &b->f->buffers[ft->buffer];
    if (b->f->n_buffers == 0 || data->len == 0)
        return bfail(b, HSQ_EINVAL, "tensor %d must be a constant but has no data", t);
    if (ft->quantized)
        return bfail(b, HSQ_EINVAL, "quantized tensor %d is unsupported", t);
    size_t n = 0;
    if ((rc = shape_elems(b, ft->dims, ft->rank, MAX_ELEMS, &n)))
        return rc;
    size_t esz = ft->type == HSQ_TFL_FLOAT16 ? 2 : 4;
    int ok_type = want_i32 ? ft->type == HSQ_TFL_INT32
                           : (ft->type == HSQ_TFL_FLOAT32 || ft->type == HSQ_TFL_FLOAT16);
    if (!ok_type)
        return bfail(b, HSQ_EINVAL, "constant tensor %d has type %s", t,
                     hsq_tfl_type_name(ft->type));
    if (data->len != n * esz)
        return bfail(b, HSQ_ECORRUPT, "tensor %d: %zu data bytes for %zu elements", t, data->len,
                     n);
    if (want_i32) {
        T->i32 = hsq_trymalloc(n * sizeof(int32_t));
        if (!T->i32)
            return bfail(b, HSQ_ENOMEM, "out of memory");
        for (size_t k = 0; k < n; k++) {
            const uint8_t *p = data->ptr + 4 * k;
            T->i32[k] = (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                                  (uint32_t)p[3] << 24);
        }
    } else {
        T->f = hsq_trymalloc(n * sizeof(float));
        if (!T->f)
            return bfail(b, HSQ_ENOMEM, "out of memory");
        for (size_t k = 0; k < n; k++) {
            const uint8_t *p = data->ptr + esz * k;
            if (esz == 2) {
                T->f[k] = hsq_half_to_float((uint16_t)(p[0] | p[1] << 8));
            } else {
                uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24;
                memcpy(&T->f[k], &u, sizeof u);
            }
        }
    }
    T->kind = T_CONST;
    T->rank = ft->rank;
    memcpy(T->dims, ft->dims, sizeof T->dims);
    T->elems = n;
    T->consumers++;
    *out = t;
    return 0;
}

/* Optional constant input (a bias): -1 when absent. */
static int opt_const_input(build *b, int i, int *out) {
    const hsq_tfl_op *op = &b->f->ops[b->op];
    *out = -1;
    if (i >= op->n_in || op->in[i] < 0)
        return 0;
    return const_input(b, i, 0, out);
}

/* Check a candidate activation shape from the file (rank 1..4, batch 1). */
static int act_shape_ok(build *b, const hsq_tfl_tensor *ft, int t) {
    if (ft->type != HSQ_TFL_FLOAT32)
        return bfail(b, HSQ_EINVAL, "tensor %d has type %s; activations must be FLOAT32", t,
                     hsq_tfl_type_name(ft->type));
    if (ft->quantized)
        return bfail(b, HSQ_EINVAL, "quantized tensor %d is unsupported", t);
    if (ft->rank < 1 || ft->rank > 4)
        return bfail(b, HSQ_EINVAL, "tensor %d has rank %d; activations need rank 1..4", t,
                     ft->rank);
    if (ft->dims[0] != 1)
        return bfail(b, HSQ_EINVAL, "tensor %d has batch %d in the file, expected 1", t,
                     ft->dims[0]);
    return 0;
}

/* The op's output: a tensor not yet written, declared with exactly the
 * shape the op computes (want, rank wr). */
static int act_output(build *b, const int *want, int wr, int *out) {
    const hsq_tfl_op *op = &b->f->ops[b->op];
    if (op->n_out != 1 || op->out[0] < 0)
        return bfail(b, HSQ_ECORRUPT, "expected exactly one output");
    int t = op->out[0];
    tensor *T = &b->m->t[t];
    const hsq_tfl_tensor *ft = &b->f->tensors[t];
    int rc;
    if (T->kind != T_NONE)
        return bfail(b, HSQ_ECORRUPT, "output tensor %d is written twice or is an input", t);
    if (b->f->n_buffers && b->f->buffers[ft->buffer].len)
        return bfail(b, HSQ_ECORRUPT, "output tensor %d has constant data", t);
    if ((rc = act_shape_ok(b, ft, t)))
        return rc;
    int same = ft->rank == wr;
    for (int i = 0; same && i < wr; i++)
        same = ft->dims[i] == want[i];
    if (!same) {
        char w[64], g[64];
        size_t wn = 0, gn = 0;
        for (int i = 0; i < wr && wn < sizeof w; i++)
            wn += (size_t)snprintf(w + wn, sizeof w - wn, "%s%d", i ? "," : "", want[i]);
        for (int i = 0; i < ft->rank && gn < sizeof g; i++)
            gn += (size_t)snprintf(g + gn, sizeof g - gn, "%s%d", i ? "," : "", ft->dims[i]);
        return bfail(b, HSQ_ECORRUPT, "output tensor %d declared [%s], computed [%s]", t, g, w);
    }
    size_t e = 0;
    if ((rc = shape_elems(b, ft->dims, ft->rank, MAX_ELEMS, &e)))
        return rc;
    T->kind = T_ACT;
    T->rank = ft->rank;
    memcpy(T->dims, ft->dims, sizeof T->dims);
    T->elems = e;
    *out = t;
    return 0;
}

/* 4-D view of a tensor: left-padded with 1s; *bat = index of the batch
 * dimension for activations, -1 for constants. */
static void view4(const tensor *T, int d[4], int *bat) {
    int pad = 4 - T->rank;
    for (int i = 0; i < 4; i++)
        d[i] = i < pad ? 1 : T->dims[i - pad];
    *bat = T->kind == T_CONST ? -1 : pad;
}

/* ---- per-op builders ---- */

static node *new_node(build *b, int kind, int nin) {
    hsq_model *m = b->m;
    node *n = &m->nodes[m->nnodes++];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->tfl_op = b->op;
    n->nin = nin;
    n->in = hsq_xcalloc((size_t)(nin ? nin : 1), sizeof(int));
    for (int i = 0; i < nin; i++)
        n->in[i] = -1;
    n->out = -1;
    n->act = hsq_act_none();
    n->abat = n->bbat = n->obat = -1;
    return n;
}

static int check_window(build *b, int k, int s, int d) {
    if (k < 1 || k > MAX_WINDOW || s < 1 || s > MAX_WINDOW || d < 1 || d > MAX_WINDOW)
        return bfail(b, HSQ_ECORRUPT, "window %d stride %d dilation %d out of range", k, s, d);
    return 0;
}

static int check_padding(build *b, int p) {
    if (p != HSQ_TFL_PAD_SAME && p != HSQ_TFL_PAD_VALID)
        return bfail(b, HSQ_ECORRUPT, "unknown padding %d", p);
    return 0;
}

static int want_opts(build *b, int type) {
    if (b->f->ops[b->op].opt_type != type)
        return bfail(b, HSQ_ECORRUPT, "builtin options of type %d, expected %d",
                     b->f->ops[b->op].opt_type, type);
    return 0;
}

/* Spatial geometry shared by conv, depthwise and pool. */
static int window_geom(build *b, const tensor *x, int kh, int kw, const hsq_tfl_opts *o, int dil,
                       hsq_geom *g) {
    int rc;
    if ((rc = check_padding(b, o->padding)) ||
        (rc = check_window(b, kh, o->stride_h, dil ? o->dilation_h : 1)) ||
        (rc = check_window(b, kw, o->stride_w, dil ? o->dilation_w : 1)))
        return rc;
    memset(g, 0, sizeof *g);
    g->n = 1;
    g->ih = x->dims[1];
    g->iw = x->dims[2];
    g->ic = x->dims[3];
    g->kh = kh;
    g->kw = kw;
    g->sh = o->stride_h;
    g->sw = o->stride_w;
    g->dh = dil ? o->dilation_h : 1;
    g->dw = dil ? o->dilation_w : 1;
    int same = o->padding == HSQ_TFL_PAD_SAME;
    hsq_pad_same_valid(same, g->ih, kh, g->sh, g->dh, &g->oh, &g->pad_t);
    hsq_pad_same_valid(same, g->iw, kw, g->sw, g->dw, &g->ow, &g->pad_l);
    if (g->oh < 1 || g->ow < 1)
        return bfail(b, HSQ_ECORRUPT, "window larger than the input");
    return 0;
}

static int build_conv(build *b, int depthwise) {
    const hsq_tfl_op *op = &b->f->ops[b->op];
    const hsq_tfl_opts *o = &op->opts;
    int x = -1, w = -1, bias = -1, y = -1, rc;
    if ((rc = want_opts(b, depthwise ? HSQ_TFL_OPT_DEPTHWISE : HSQ_TFL_OPT_CONV2D)) ||
        (rc = check_act(b, o->act)) || (rc = act_input(b, 0, 4, &x)) ||
        (rc = const_input(b, 1, 0, &w)) || (rc = opt_const_input(b, 2, &bias)))
        return rc;
    hsq_model *m = b->m;
    const tensor *X = &m->t[x], *W = &m->t[w];
    if (W->rank != 4)
        return bfail(b, HSQ_ECORRUPT, "weights have rank %d, expected 4", W->rank);
    int oc = depthwise ? W->dims[3] : W->dims[0];
    if (depthwise ? (W->dims[0] != 1 || oc % X->dims[3] != 0) : W->dims[3] != X->dims[3])
        return bfail(b, HSQ_ECORRUPT, "weights [%d,%d,%d,%d] do not fit %d input channels",
                     W->dims[0], W->dims[1], W->dims[2], W->dims[3], X->dims[3]);
    if (bias >= 0 && (m->t[bias].rank != 1 || m->t[bias].dims[0] != oc))
        return bfail(b, HSQ_ECORRUPT, "bias does not match %d output channels", oc);
    hsq_geom g;
    if ((rc = window_geom(b, X, W->dims[1], W->dims[2], o, 1, &g)))
        return rc;
    g.oc = oc;
    int want[4] = {1, g.oh, g.ow, oc};
    if ((rc = act_output(b, want, 4, &y)))
        return rc;
    node *n = new_node(b, depthwise ? N_DW : N_CONV, 3);
    n->in[0] = x;
    n->in[1] = w;
    n->in[2] = bias;
    n->out = y;
    n->g = g;
    n->act = act_from(o->act);
    n->w = W->f;
    n->bias = bias >= 0 ? m->t[bias].f : NULL;
    n->macs = (uint64_t)g.oh * g.ow * oc * g.kh * g.kw * (depthwise ? 1 : g.ic);
    if (!depthwise && hsq_wpack_init(&n->wp, n->w, n->bias, oc, g.kh * g.kw * g.ic) != 0)
        return bfail(b, HSQ_ENOMEM, "out of memory");
    size_t s = hsq_conv2d_scratch(&g);
    if (s > m->scratch)
        m->scratch = s;
    return 0;
}

/* MediaPipe's Convolution2DTransposeBias: custom_options is the raw C
 * struct {int32 padding (1 SAME, 2 VALID); int32 stride_w; int32 stride_h}.
 * SAME gives out = in * stride, VALID out = (in - 1) * stride + k; the
 * padding before is half the difference to the full (in - 1) * stride + k. */
static int build_tconv(build *b) {
    const hsq_tfl_op *op = &b->f->ops[b->op];
    int x = -1, w = -1, bias = -1, y = -1, rc;
    if (op->custom_options.len < 12)
        return bfail(b, HSQ_ECORRUPT, "custom options are %zu bytes, expected 12",
                     op->custom_options.len);
    int32_t opt[3];
    for (int i = 0; i < 3; i++) {
        const uint8_t *p = op->custom_options.ptr + 4 * i;
        opt[i] = (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
    }
    if (opt[0] != 1 && opt[0] != 2)
        return bfail(b, HSQ_ECORRUPT, "unknown padding %d", opt[0]);
    if ((rc = act_input(b, 0, 4, &x)) || (rc = const_input(b, 1, 0, &w)) ||
        (rc = opt_const_input(b, 2, &bias)))
        return rc;
    hsq_model *m = b->m;
    const tensor *X = &m->t[x], *W = &m->t[w];
    if (W->rank != 4 || W->dims[3] != X->dims[3])
        return bfail(b, HSQ_ECORRUPT, "weights do not fit %d input channels", X->dims[3]);
    int oc = W->dims[0];
    if (bias >= 0 && (m->t[bias].rank != 1 || m->t[bias].dims[0] != oc))
        return bfail(b, HSQ_ECORRUPT, "bias does not match %d output channels", oc);
    hsq_geom g;
    memset(&g, 0, sizeof g);
    g.n = 1;
    g.ih = X->dims[1];
    g.iw = X->dims[2];
    g.ic = X->dims[3];
    g.kh = W->dims[1];
    g.kw = W->dims[2];
    g.sw = opt[1];
    g.sh = opt[2];
    g.dh = g.dw = 1;
    g.oc = oc;
    if ((rc = check_window(b, g.kh, g.sh, 1)) || (rc = check_window(b, g.kw, g.sw, 1)))
        return rc;
    int full_h = (g.ih - 1) * g.sh + g.kh, full_w = (g.iw - 1) * g.sw + g.kw;
    g.oh = opt[0] == 1 ? g.ih * g.sh : full_h;
    g.ow = opt[0] == 1 ? g.iw * g.sw : full_w;
    g.pad_t = full_h > g.oh ? (full_h - g.oh) / 2 : 0;
    g.pad_l = full_w > g.ow ? (full_w - g.ow) / 2 : 0;
    int want[4] = {1, g.oh, g.ow, oc};
    if ((rc = act_output(b, want, 4, &y)))
        return rc;
    node *n = new_node(b, N_TCONV, 3);
    n->in[0] = x;
    n->in[1] = w;
    n->in[2] = bias;
    n->out = y;
    n->g = g;
    n->w = W->f;
    n->bias = bias >= 0 ? m->t[bias].f : NULL;
    n->macs = (uint64_t)g.ih * g.iw * g.ic * oc * g.kh * g.kw;
    if (hsq_tconv2d_pack(&n->wp, &g, n->w, n->bias) != 0)
        return bfail(b, HSQ_ENOMEM, "out of memory");
    size_t s = hsq_tconv2d_scratch(&g);
    if (s > m->scratch)
        m->scratch = s;
    return 0;
}

static int build_pool(build *b, int is_max) {
    const hsq_tfl_opts *o = &b->f->ops[b->op].opts;
    int x = -1, y = -1, rc;
    if ((rc = want_opts(b, HSQ_TFL_OPT_POOL2D)) || (rc = check_act(b, o->act)) ||
        (rc = act_input(b, 0, 4, &x)))
        return rc;
    hsq_geom g;
    if ((rc = window_geom(b, &b->m->t[x], o->filter_h, o->filter_w, o, 0, &g)))
        return rc;
    g.oc = g.ic;
    int want[4] = {1, g.oh, g.ow, g.oc};
    if ((rc = act_output(b, want, 4, &y)))
        return rc;
    node *n = new_node(b, N_POOL, 1);
    n->in[0] = x;
    n->out = y;
    n->g = g;
    n->flag = is_max;
    n->act = act_from(o->act);
    return 0;
}

/* ADD / MUL. Activation operands must have the output's rank so that their
 * batch dimensions line up; a constant may be any rank and has no batch. */
static int build_binary(build *b, int kind) {
    const hsq_tfl_op *op = &b->f->ops[b->op];
    int t[2] = {-1, -1}, y = -1, rc;
    if (op->opt_type != HSQ_TFL_OPT_NONE &&
        (rc = want_opts(b, kind == HSQ_BIN_ADD ? HSQ_TFL_OPT_ADD : HSQ_TFL_OPT_MUL)))
        return rc;
    if ((rc = check_act(b, op->opts.act)))
        return rc;
    if (op->n_in != 2)
        return bfail(b, HSQ_ECORRUPT, "%d inputs, expected 2", op->n_in);
    for (int i = 0; i < 2; i++) {
        if (op->in[i] < 0)
            return bfail(b, HSQ_ECORRUPT, "input %d missing", i);
        const tensor *T = &b->m->t[op->in[i]];
        int is_const = T->kind == T_CONST || (T->kind == T_NONE && b->f->n_buffers &&
                                              b->f->buffers[b->f->tensors[op->in[i]].buffer].len);
        rc = is_const ? const_input(b, i, 0, &t[i]) : act_input(b, i, 0, &t[i]);
        if (rc)
            return rc;
    }
    const tensor *A = &b->m->t[t[0]], *B = &b->m->t[t[1]];
    if (A->kind == T_CONST && B->kind == T_CONST)
        return bfail(b, HSQ_EINVAL, "both operands constant");
    if (A->rank > 4 || B->rank > 4)
        return bfail(b, HSQ_EINVAL, "rank over 4");
    int orank = A->rank > B->rank ? A->rank : B->rank;
    if ((A->kind != T_CONST && A->rank != orank) || (B->kind != T_CONST && B->rank != orank))
        return bfail(b, HSQ_EINVAL, "broadcast across the batch dimension is unsupported");
    int ad[4], bd[4], od[4], abat, bbat;
    view4(A, ad, &abat);
    view4(B, bd, &bbat);
    for (int i = 0; i < 4; i++) {
        if (ad[i] != bd[i] && ad[i] != 1 && bd[i] != 1)
            return bfail(b, HSQ_ECORRUPT, "shapes do not broadcast");
        od[i] = ad[i] > bd[i] ? ad[i] : bd[i];
    }
    if ((rc = act_output(b, od + 4 - orank, orank, &y)))
        return rc;
    node *n = new_node(b, N_BIN, 2);
    n->in[0] = t[0];
    n->in[1] = t[1];
    n->out = y;
    n->flag = kind;
    n->act = act_from(op->opts.act);
    memcpy(n->ad, ad, sizeof ad);
    memcpy(n->bd, bd, sizeof bd);
    memcpy(n->od, od, sizeof od);
    n->abat = abat;
    n->bbat = bbat;
    n->obat = 4 - orank;
    return 0;
}

static int build_unary(build *b, int kind, hsq_act act) {
    int x = -1, y = -1, rc;
    if ((rc = act_input(b, 0, 0, &x)))
        return rc;
    const tensor *X = &b->m->t[x];
    if ((rc = act_output(b, X->dims, X->rank, &y)))
        return rc;
    node *n = new_node(b, N_UN, 1);
    n->in[0] = x;
    n->out = y;
    n->flag = kind;
    n->act = act;
    return 0;
}

static int build_pad(build *b) {
    int x = -1, p = -1, y = -1, rc;
    if ((rc = act_input(b, 0, 0, &x)) || (rc = const_input(b, 1, 1, &p)))
        return rc;
    const tensor *X = &b->m->t[x], *P = &b->m->t[p];
    if (P->rank != 2 || P->dims[0] != X->rank || P->dims[1] != 2)
        return bfail(b, HSQ_ECORRUPT, "paddings shape does not match rank %d", X->rank);
    int want[4];
    for (int i = 0; i < X->rank; i++) {
        int32_t lo = P->i32[2 * i], hi = P->i32[2 * i + 1];
        if (lo < 0 || hi < 0 || lo > MAX_DIM || hi > MAX_DIM)
            return bfail(b, HSQ_ECORRUPT, "padding out of range");
        if (i == 0 && (lo || hi))
            return bfail(b, HSQ_EINVAL, "padding the batch dimension is unsupported");
        want[i] = X->dims[i] + lo + hi;
    }
    if ((rc = act_output(b, want, X->rank, &y)))
        return rc;
    node *n = new_node(b, N_PAD, 2);
    n->in[0] = x;
    n->in[1] = p;
    n->out = y;
    int bat;
    view4(X, n->ad, &n->abat);
    view4(&b->m->t[y], n->od, &bat);
    n->obat = bat;
    int pad = 4 - X->rank;
    for (int i = 0; i < 4; i++)
        n->before[i] = i < pad ? 0 : P->i32[2 * (i - pad)];
    return 0;
}

/* The output keeps its declared shape; only the element count (per image)
 * must agree. The shape operand and new_shape option say nothing more. */
static int build_reshape(build *b) {
    const hsq_tfl_op *op = &b->f->ops[b->op];
    int x = -1, y = -1, rc;
    if ((rc = act_input(b, 0, 0, &x)))
        return rc;
    if (op->n_out != 1 || op->out[0] < 0)
        return bfail(b, HSQ_ECORRUPT, "expected exactly one output");
    const hsq_tfl_tensor *ft = &b->f->tensors[op->out[0]];
    if ((rc = act_shape_ok(b, ft, op->out[0])))
        return rc;
    if ((rc = act_output(b, ft->dims, ft->rank, &y)))
        return rc;
    if (b->m->t[y].elems != b->m->t[x].elems)
        return bfail(b, HSQ_ECORRUPT, "reshape from %zu to %zu elements", b->m->t[x].elems,
                     b->m->t[y].elems);
    node *n = new_node(b, N_RESHAPE, 1);
    n->in[0] = x;
    n->out = y;
    return 0;
}

static int build_concat(build *b) {
    const hsq_tfl_op *op = &b->f->ops[b->op];
    const hsq_tfl_opts *o = &op->opts;
    int rc, y = -1;
    if ((rc = want_opts(b, HSQ_TFL_OPT_CONCAT)) || (rc = check_act(b, o->act)))
        return rc;
    if (op->n_in < 1)
        return bfail(b, HSQ_ECORRUPT, "no inputs");
    int *in = hsq_xcalloc((size_t)op->n_in, sizeof(int));
    for (int i = 0; i < op->n_in; i++)
        if ((rc = act_input(b, i, 0, &in[i]))) {
            free(in);
            return rc;
        }
    const tensor *T0 = &b->m->t[in[0]];
    int rank = T0->rank, axis = o->axis < 0 ? o->axis + rank : o->axis;
    if (axis < 0 || axis >= rank) {
        free(in);
        return bfail(b, HSQ_ECORRUPT, "axis %d out of range for rank %d", o->axis, rank);
    }
    if (axis == 0) {
        free(in);
        return bfail(b, HSQ_EINVAL, "concatenation along the batch is unsupported");
    }
    int want[4];
    memcpy(want, T0->dims, sizeof want);
    want[axis] = 0;
    for (int i = 0; i < op->n_in; i++) {
        const tensor *T = &b->m->t[in[i]];
        int ok = T->rank == rank;
        for (int d = 0; ok && d < rank; d++)
            ok = d == axis || T->dims[d] == T0->dims[d];
        if (!ok) {
            free(in);
            return bfail(b, HSQ_ECORRUPT, "input %d shape does not match", i);
        }
        want[axis] += T->dims[axis];
        if (want[axis] > MAX_DIM) {
            free(in);
            return bfail(b, HSQ_ECORRUPT, "concatenated dimension too large");
        }
    }
    if ((rc = act_output(b, want, rank, &y))) {
        free(in);
        return rc;
    }
    node *n = new_node(b, N_CONCAT, op->n_in);
    memcpy(n->in, in, (size_t)op->n_in * sizeof(int));
    free(in);
    n->out = y;
    n->act = act_from(o->act);
    n->inner = hsq_xcalloc((size_t)op->n_in, sizeof(size_t));
    n->outer = 1;
    for (int d = 1; d < axis; d++)
        n->outer *= (size_t)T0->dims[d];
    for (int i = 0; i < op->n_in; i++) {
        const tensor *T = &b->m->t[n->in[i]];
        n->inner[i] = 1;
        for (int d = axis; d < rank; d++)
            n->inner[i] *= (size_t)T->dims[d];
    }
    return 0;
}

static int build_resize(build *b) {
    const hsq_tfl_op *op = &b->f->ops[b->op];
    int x = -1, s = -1, y = -1, rc;
    if ((rc = want_opts(b, HSQ_TFL_OPT_RESIZE_BILINEAR)) || (rc = act_input(b, 0, 4, &x)) ||
        (rc = const_input(b, 1, 1, &s)))
        return rc;
    const tensor *X = &b->m->t[x], *S = &b->m->t[s];
    if (S->rank != 1 || S->dims[0] != 2)
        return bfail(b, HSQ_ECORRUPT, "size operand must hold 2 values");
    int oh = S->i32[0], ow = S->i32[1];
    if (oh < 1 || ow < 1 || oh > MAX_DIM || ow > MAX_DIM)
        return bfail(b, HSQ_ECORRUPT, "size %dx%d out of range", oh, ow);
    int want[4] = {1, oh, ow, X->dims[3]};
    if ((rc = act_output(b, want, 4, &y)))
        return rc;
    node *n = new_node(b, N_RESIZE, 2);
    n->in[0] = x;
    n->in[1] = s;
    n->out = y;
    n->align_corners = op->opts.align_corners != 0;
    n->half_pixel = op->opts.half_pixel_centers != 0;
    n->g.ih = X->dims[1];
    n->g.iw = X->dims[2];
    n->g.ic = n->g.oc = X->dims[3];
    n->g.oh = oh;
    n->g.ow = ow;
    return 0;
}

/* DEQUANTIZE of a constant: no node; the output becomes the fp32 constant. */
static int build_dequantize(build *b) {
    const hsq_tfl_op *op = &b->f->ops[b->op];
    int x = -1, rc;
    if (op->n_out != 1 || op->out[0] < 0)
        return bfail(b, HSQ_ECORRUPT, "expected exactly one output");
    int y = op->out[0];
    /* Only fp16/fp32 constants: const_input refuses anything else. */
    if ((rc = const_input(b, 0, 0, &x)))
        return rc;
    b->m->t[x].consumers--; /* read once here, not at run time */
    tensor *X = &b->m->t[x], *Y = &b->m->t[y];
    const hsq_tfl_tensor *fy = &b->f->tensors[y];
    if (Y->kind != T_NONE)
        return bfail(b, HSQ_ECORRUPT, "output tensor %d is written twice or is an input", y);
    if (fy->type != HSQ_TFL_FLOAT32 || fy->rank != X->rank ||
        memcmp(fy->dims, X->dims, (size_t)X->rank * sizeof(int)) != 0)
        return bfail(b, HSQ_ECORRUPT, "output does not match the input");
    Y->kind = T_CONST;
    Y->rank = X->rank;
    memcpy(Y->dims, X->dims, sizeof Y->dims);
    Y->elems = X->elems;
    Y->f = hsq_trymalloc(X->elems * sizeof(float));
    if (!Y->f)
        return bfail(b, HSQ_ENOMEM, "out of memory");
    memcpy(Y->f, X->f, X->elems * sizeof(float));
    return 0;
}

static int build_op(build *b) {
    const hsq_tfl_op *op = &b->f->ops[b->op];
    const hsq_tfl_opcode *oc = &b->f->opcodes[op->opcode];
    b->opname = oc->builtin == HSQ_TFL_OP_CUSTOM ? oc->custom : hsq_tfl_op_name(oc->builtin);
    switch (oc->builtin) {
    case HSQ_TFL_OP_CONV_2D:
        return build_conv(b, 0);
    case HSQ_TFL_OP_DEPTHWISE_CONV_2D:
        return build_conv(b, 1);
    case HSQ_TFL_OP_AVERAGE_POOL_2D:
        return build_pool(b, 0);
    case HSQ_TFL_OP_MAX_POOL_2D:
        return build_pool(b, 1);
    case HSQ_TFL_OP_ADD:
        return build_binary(b, HSQ_BIN_ADD);
    case HSQ_TFL_OP_MUL:
        return build_binary(b, HSQ_BIN_MUL);
    case HSQ_TFL_OP_RELU:
        return build_unary(b, HSQ_UN_CLAMP, act_from(HSQ_TFL_ACT_RELU));
    case HSQ_TFL_OP_RELU6:
        return build_unary(b, HSQ_UN_CLAMP, act_from(HSQ_TFL_ACT_RELU6));
    case HSQ_TFL_OP_RELU_N1_TO_1:
        return build_unary(b, HSQ_UN_CLAMP, act_from(HSQ_TFL_ACT_RELU_N1_TO_1));
    case HSQ_TFL_OP_HARD_SWISH:
        return build_unary(b, HSQ_UN_HSWISH, hsq_act_none());
    case HSQ_TFL_OP_LOGISTIC:
        return build_unary(b, HSQ_UN_LOGISTIC, hsq_act_none());
    case HSQ_TFL_OP_PAD:
        return build_pad(b);
    case HSQ_TFL_OP_RESHAPE:
        return build_reshape(b);
    case HSQ_TFL_OP_CONCATENATION:
        return build_concat(b);
    case HSQ_TFL_OP_RESIZE_BILINEAR:
        return build_resize(b);
    case HSQ_TFL_OP_DEQUANTIZE:
        return build_dequantize(b);
    case HSQ_TFL_OP_CUSTOM:
        if (strcmp(oc->custom, "Convolution2DTransposeBias") == 0)
            return build_tconv(b);
        return bfail(b, HSQ_EINVAL, "unsupported custom op %s", oc->custom);
    default:
        return bfail(b, HSQ_EINVAL, "unsupported op %s (builtin %d)", hsq_tfl_op_name(oc->builtin),
                     oc->builtin);
    }
}

/* ---- planning ---- */

static int root_of(const hsq_model *m, int t) {
    while (m->t[t].root != t)
        t = m->t[t].root;
    return t;
}

/* Fold a RELU-family clamp into the op that produced its input when nothing
 * else reads that input, and make RESHAPE an alias. */
static void fuse(hsq_model *m) {
    for (int i = 0; i < m->nnodes; i++) {
        node *n = &m->nodes[i];
        if (n->kind == N_RESHAPE) {
            n->skip = 1;
            m->t[n->out].root = n->in[0];
            continue;
        }
        if (n->kind != N_UN || n->flag != HSQ_UN_CLAMP)
            continue;
        int x = n->in[0];
        const tensor *X = &m->t[x];
        if (X->kind != T_ACT || X->consumers != 1 || X->is_output || X->root != x)
            continue;
        node *p = NULL;
        for (int j = i - 1; j >= 0; j--)
            if (m->nodes[j].out == x) {
                p = &m->nodes[j];
                break;
            }
        if (!p || p->skip || p->kind == N_UN || p->kind == N_PAD || p->kind == N_RESIZE)
            continue;
        p->act.lo = fmaxf(p->act.lo, n->act.lo);
        p->act.hi = fminf(p->act.hi, n->act.hi);
        n->skip = 1;
        m->t[n->out].root = x;
    }
}

/* First-fit interval allocation over per-image float offsets. */
typedef struct {
    size_t off, size;
    int t;
} block;

static int plan(build *b) {
    hsq_model *m = b->m;
    for (int t = 0; t < m->ntensors; t++)
        m->t[t].last = NO_USE;
    for (int i = 0; i < m->nnodes; i++) {
        const node *n = &m->nodes[i];
        for (int k = 0; k < n->nin; k++)
            if (n->in[k] >= 0 && m->t[n->in[k]].kind != T_CONST) {
                int r = root_of(m, n->in[k]);
                m->t[r].last = i;
            }
    }
    for (int j = 0; j < m->nout; j++)
        m->t[root_of(m, m->outputs[j])].last = FOREVER;

    /* Graph outputs get a region of their own at the start of the arena:
     * images run one after another, so a later image's intermediates must
     * never land on an earlier image's outputs. */
    size_t base = 0;
    for (int j = 0; j < m->nout; j++) {
        tensor *R = &m->t[root_of(m, m->outputs[j])];
        if (R->kind != T_ACT || R->last != FOREVER)
            continue;
        R->last = FOREVER - 1; /* placed */
        R->off = base;
        base += (R->elems + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
    }
    if (base > MAX_ARENA) {
        b->op = -1;
        return bfail(b, HSQ_EINVAL, "outputs need more than %llu floats per image",
                     (unsigned long long)MAX_ARENA);
    }
    block *live = hsq_xcalloc((size_t)m->ntensors + 1, sizeof *live);
    int nlive = 0;
    size_t peak = base;
    for (int i = 0; i < m->nnodes; i++) {
        const node *n = &m->nodes[i];
        /* Outputs were placed above. */
        if (!n->skip && m->t[n->out].last != FOREVER - 1) {
            tensor *Y = &m->t[n->out];
            size_t size = (Y->elems + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
            size_t at = base;
            int pos = 0;
            for (; pos < nlive; pos++) {
                if (live[pos].off >= at + size)
                    break;
                at = live[pos].off + live[pos].size;
            }
            memmove(&live[pos + 1], &live[pos], (size_t)(nlive - pos) * sizeof *live);
            live[pos] = (block){at, size, n->out};
            nlive++;
            Y->off = at;
            if (at + size > peak)
                peak = at + size;
            if (peak > MAX_ARENA) {
                free(live);
                b->op = -1;
                return bfail(b, HSQ_EINVAL, "activations need more than %llu floats per image",
                             (unsigned long long)MAX_ARENA);
            }
            if (Y->last == NO_USE)
                Y->last = i; /* never read: free right away */
        }
        /* Release every root whose last reader is this node. */
        for (int k = 0; k < nlive;) {
            if (m->t[live[k].t].last == i) {
                memmove(&live[k], &live[k + 1], (size_t)(nlive - k - 1) * sizeof *live);
                nlive--;
            } else {
                k++;
            }
        }
    }
    free(live);
    m->arena = peak;
    return 0;
}

/* ---- load ---- */

static void model_free_parts(hsq_model *m) {
    if (m->t)
        for (int i = 0; i < m->ntensors; i++) {
            free(m->t[i].f);
            free(m->t[i].i32);
        }
    if (m->nodes)
        for (int i = 0; i < m->nnodes; i++) {
            free(m->nodes[i].in);
            free(m->nodes[i].inner);
            hsq_wpack_free(&m->nodes[i].wp);
        }
    if (m->out_names)
        for (int i = 0; i < m->nout; i++)
            free(m->out_names[i]);
    free(m->out_names);
    free(m->t);
    free(m->nodes);
    free(m->inputs);
    free(m->outputs);
}

void hsq_model_free(hsq_model **mp) {
    if (!*mp)
        return;
    model_free_parts(*mp);
    free(*mp);
    *mp = NULL;
}

static int build_graph(build *b) {
    hsq_model *m = b->m;
    const hsq_tfl_model *f = b->f;
    int rc;
    b->op = -1;
    if (f->n_subgraphs != 1)
        return bfail(b, HSQ_EINVAL, "%d subgraphs; only single-subgraph models are supported",
                     f->n_subgraphs);
    if (f->n_inputs < 1 || f->n_outputs < 1)
        return bfail(b, HSQ_ECORRUPT, "model has no inputs or no outputs");
    m->ntensors = f->n_tensors;
    m->t = hsq_xcalloc((size_t)(m->ntensors ? m->ntensors : 1), sizeof *m->t);
    for (int i = 0; i < m->ntensors; i++) {
        m->t[i].root = i;
        m->t[i].input_idx = -1;
    }
    m->nodes = hsq_xcalloc((size_t)(f->n_ops ? f->n_ops : 1), sizeof *m->nodes);
    m->nin = f->n_inputs;
    m->nout = f->n_outputs;
    m->inputs = hsq_xcalloc((size_t)m->nin, sizeof(int));
    m->outputs = hsq_xcalloc((size_t)m->nout, sizeof(int));
    m->out_names = hsq_xcalloc((size_t)m->nout, sizeof(char *));
    for (int i = 0; i < m->nin; i++) {
        int t = f->inputs[i];
        tensor *T = &m->t[t];
        const hsq_tfl_tensor *ft = &f->tensors[t];
        if (T->kind != T_NONE)
            return bfail(b, HSQ_ECORRUPT, "tensor %d listed twice as an input", t);
        if ((rc = act_shape_ok(b, ft, t)) ||
            (rc = shape_elems(b, ft->dims, ft->rank, MAX_ELEMS, &T->elems)))
            return rc;
        T->kind = T_INPUT;
        T->rank = ft->rank;
        memcpy(T->dims, ft->dims, sizeof T->dims);
        T->input_idx = i;
        m->inputs[i] = t;
    }
    for (b->op = 0; b->op < f->n_ops; b->op++)
        if ((rc = build_op(b)))
            return rc;
    b->op = -1;
    for (int j = 0; j < m->nout; j++) {
        int t = f->outputs[j];
        if (m->t[t].kind != T_ACT && m->t[t].kind != T_INPUT)
            return bfail(b, HSQ_EINVAL, "output tensor %d is not computed by the graph", t);
        m->outputs[j] = t;
        m->t[t].is_output = 1;
        m->out_names[j] = hsq_xstrndup(f->tensors[t].name, strlen(f->tensors[t].name));
    }
    fuse(m);
    if ((rc = plan(b)))
        return rc;
    for (int i = 0; i < m->nnodes; i++)
        m->macs += m->nodes[i].macs;
    return 0;
}

int hsq_model_load_mem(hsq_model **out, const void *buf, size_t len, const char *name, char *err,
                       size_t errlen) {
    char perr[200];
    hsq_tfl_model *f = NULL;
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!name)
        name = "model";
    int rc = hsq_tfl_parse(&f, buf, len, perr, sizeof perr);
    if (rc) {
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", name, perr);
        return rc;
    }
    hsq_model *m = hsq_xcalloc(1, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    build b = {.m = m, .f = f, .err = err, .errlen = errlen, .op = -1, .opname = ""};
    rc = build_graph(&b);
    hsq_tfl_free(&f);
    if (rc) {
        hsq_model_free(&m);
        return rc;
    }
    *out = m;
    return 0;
}

int hsq_model_load(hsq_model **out, const char *path, char *err, size_t errlen) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", base, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", base, strerror(e));
        close(fd);
        return -e;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > (off_t)MAX_FILE_BYTES) {
        if (err && errlen)
            snprintf(err, errlen, "%s: not a regular file of at most %u bytes", base,
                     MAX_FILE_BYTES);
        close(fd);
        return S_ISREG(st.st_mode) ? HSQ_ECORRUPT : HSQ_EINVAL;
    }
    size_t len = (size_t)st.st_size;
    uint8_t *buf = hsq_trymalloc(len);
    if (!buf) {
        close(fd);
        return HSQ_ENOMEM;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            if (err && errlen)
                snprintf(err, errlen, "%s: read: %s", base, strerror(e));
            free(buf);
            close(fd);
            return -e;
        }
        got += (size_t)r;
    }
    close(fd);
    int rc = hsq_model_load_mem(out, buf, len, base, err, errlen);
    free(buf);
    return rc;
}

/* ---- queries ---- */

int hsq_model_n_inputs(const hsq_model *m) { return m->nin; }

int hsq_model_n_outputs(const hsq_model *m) { return m->nout; }

static hsq_shape shape_of(const tensor *T) {
    hsq_shape s;
    memset(&s, 0, sizeof s);
    s.rank = T->rank;
    for (int i = 0; i < T->rank && i < 4; i++)
        s.dims[i] = T->dims[i];
    return s;
}

hsq_shape hsq_model_input_shape(const hsq_model *m, int i) {
    hsq_shape s = {0, {0, 0, 0, 0}};
    return i >= 0 && i < m->nin ? shape_of(&m->t[m->inputs[i]]) : s;
}

hsq_shape hsq_model_output_shape(const hsq_model *m, int i) {
    hsq_shape s = {0, {0, 0, 0, 0}};
    return i >= 0 && i < m->nout ? shape_of(&m->t[m->outputs[i]]) : s;
}

const char *hsq_model_output_name(const hsq_model *m, int i) {
    return i >= 0 && i < m->nout ? m->out_names[i] : NULL;
}

uint64_t hsq_model_macs(const hsq_model *m) { return m->macs; }

size_t hsq_model_arena_bytes(const hsq_model *m, int n) {
    return m->arena * sizeof(float) * (size_t)(n > 0 ? n : 0);
}

/* ---- run ---- */

int hsq_model_ctx_new(hsq_model_ctx **out, const hsq_model *m) {
    hsq_model_ctx *c = hsq_xcalloc(1, sizeof *c);
    c->m = m;
    if (m->scratch) {
        c->scratch = hsq_trymalloc(m->scratch * sizeof(float));
        if (!c->scratch) {
            free(c);
            *out = NULL;
            return HSQ_ENOMEM;
        }
    }
    *out = c;
    return 0;
}

void hsq_model_ctx_free(hsq_model_ctx **cp) {
    hsq_model_ctx *c = *cp;
    if (!c)
        return;
    free(c->arena);
    free(c->scratch);
    free(c->prof);
    free(c);
    *cp = NULL;
}

void hsq_model_ctx_set_reference(hsq_model_ctx *c, int on) { c->reference = on != 0; }

void hsq_model_ctx_set_profile(hsq_model_ctx *c, int on) {
    free(c->prof);
    c->prof = on ? hsq_xcalloc((size_t)(c->m->nnodes ? c->m->nnodes : 1), sizeof(double)) : NULL;
}

static const char *const node_names[] = {
    "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV_BIAS", "POOL_2D",        "BINARY", "UNARY",
    "PAD",     "RESHAPE",           "CONCATENATION",       "RESIZE_BILINEAR"};

int hsq_model_ctx_profile(const hsq_model_ctx *c, int i, char *desc, size_t len, double *sec,
                          uint64_t *macs) {
    const hsq_model *m = c->m;
    if (i < 0 || i >= m->nnodes)
        return -1;
    const node *n = &m->nodes[i];
    const tensor *Y = &m->t[n->out];
    const char *name = node_names[n->kind];
    if (n->kind == N_UN)
        name = n->flag == HSQ_UN_CLAMP    ? "RELU"
               : n->flag == HSQ_UN_HSWISH ? "HARD_SWISH"
                                          : "LOGISTIC";
    else if (n->kind == N_BIN)
        name = n->flag == HSQ_BIN_ADD ? "ADD" : "MUL";
    else if (n->kind == N_POOL)
        name = n->flag ? "MAX_POOL_2D" : "AVERAGE_POOL_2D";
    if (n->kind == N_CONV || n->kind == N_DW || n->kind == N_POOL || n->kind == N_TCONV)
        snprintf(desc, len, "%s %dx%d/%d %dx%dx%d->%d", name, n->g.kh, n->g.kw, n->g.sh, n->g.ih,
                 n->g.iw, n->g.ic, n->g.oc);
    else
        snprintf(desc, len, "%s %zu floats", name, Y->elems);
    *sec = c->prof ? c->prof[i] : 0.0;
    *macs = n->macs;
    return n->skip ? 0 : 1;
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Tensor t of image img in a batch of n. */
static const float *tptr(const hsq_model_ctx *c, int n, int img, const float *const *in, int t) {
    const hsq_model *m = c->m;
    int r = root_of(m, t);
    const tensor *T = &m->t[r];
    switch (T->kind) {
    case T_CONST:
        return T->f;
    case T_INPUT:
        return in[T->input_idx] + (size_t)img * T->elems;
    default:
        return c->arena + T->off * (size_t)n + (size_t)img * T->elems;
    }
}

static void with_batch(const int src[4], int bat, int n, int dst[4]) {
    memcpy(dst, src, 4 * sizeof(int));
    if (bat >= 0)
        dst[bat] = n;
}

static void run_node(hsq_model_ctx *c, const node *nd, int n, int img, const float *const *in) {
    const hsq_model *m = c->m;
    const float *x = tptr(c, n, img, in, nd->in[0]);
    float *y = (float *)tptr(c, n, img, in, nd->out);
    const int one = 1;
    hsq_geom g = nd->g;
    g.n = one;
    switch (nd->kind) {
    case N_CONV:
        if (c->reference)
            hsq_ref_conv2d(&g, x, nd->w, nd->bias, nd->act, y);
        else
            hsq_conv2d(&g, x, &nd->wp, nd->act, y, c->scratch);
        break;
    case N_DW:
        if (c->reference)
            hsq_ref_dwconv2d(&g, x, nd->w, nd->bias, nd->act, y);
        else
            hsq_dwconv2d(&g, x, nd->w, nd->bias, nd->act, y);
        break;
    case N_TCONV:
        if (c->reference)
            hsq_ref_tconv2d(&g, x, nd->w, nd->bias, nd->act, y);
        else
            hsq_tconv2d(&g, x, &nd->wp, nd->bias, nd->act, y, c->scratch);
        break;
    case N_POOL:
        hsq_pool2d(&g, nd->flag, x, nd->act, y);
        break;
    case N_BIN: {
        int ad[4], bd[4], od[4];
        with_batch(nd->ad, nd->abat, one, ad);
        with_batch(nd->bd, nd->bbat, one, bd);
        with_batch(nd->od, nd->obat, one, od);
        hsq_binary(nd->flag, ad, x, bd, tptr(c, n, img, in, nd->in[1]), od, nd->act, y);
        break;
    }
    case N_UN:
        hsq_unary(nd->flag, nd->act, x, m->t[nd->out].elems, y);
        break;
    case N_PAD: {
        int ad[4], od[4];
        with_batch(nd->ad, nd->abat, one, ad);
        with_batch(nd->od, nd->obat, one, od);
        hsq_pad4(ad, nd->before, od, x, y);
        break;
    }
    case N_CONCAT: {
        const float *srcs[HSQ_TFL_MAX_OP_IO];
        for (int k = 0; k < nd->nin; k++)
            srcs[k] = tptr(c, n, img, in, nd->in[k]);
        hsq_concat(nd->outer, nd->nin, srcs, nd->inner, y);
        if (nd->act.lo > -INFINITY || nd->act.hi < INFINITY)
            hsq_unary(HSQ_UN_CLAMP, nd->act, y, m->t[nd->out].elems, y);
        break;
    }
    case N_RESIZE:
        hsq_resize_bilinear(one, g.ih, g.iw, g.ic, g.oh, g.ow, nd->align_corners, nd->half_pixel, x,
                            y);
        break;
    default:
        break;
    }
}

int hsq_model_run(hsq_model_ctx *c, int n, const float *const *in, const float **outs) {
    const hsq_model *m = c->m;
    if (n < 1 || n > MAX_BATCH || !in)
        return HSQ_EINVAL;
    for (int i = 0; i < m->nin; i++)
        if (!in[i])
            return HSQ_EINVAL;
    size_t need = m->arena * (size_t)n;
    if (need > c->cap) {
        float *a = hsq_trymalloc((need ? need : 1) * sizeof(float));
        if (!a)
            return HSQ_ENOMEM;
        free(c->arena);
        c->arena = a;
        c->cap = need;
    }
    for (int img = 0; img < n; img++)
        for (int i = 0; i < m->nnodes; i++) {
            if (m->nodes[i].skip)
                continue;
            double t0 = c->prof ? mono() : 0.0;
            run_node(c, &m->nodes[i], n, img, in);
            if (c->prof)
                c->prof[i] += mono() - t0;
        }
    for (int j = 0; j < m->nout; j++)
        outs[j] = tptr(c, n, 0, in, m->outputs[j]);
    return 0;
}
