/* internal.h - private declarations of the model runtime (worker/model/).
 *
 * The CPU kernels work on NHWC float32 tensors with the batch as the
 * outermost dimension. They trust their arguments: graph.c checks every shape
 * against the file when it loads a model, so a kernel only ever sees
 * geometry it can honour. Tests and the bench call the kernels directly
 * through this header.
 */
#ifndef HSQ_WORKER_MODEL_INTERNAL_H
#define HSQ_WORKER_MODEL_INTERNAL_H

#include "worker/model/model.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Activation clamp applied by a kernel to its output (TFLite's fused
 * activation, or a RELU op folded into the op before it): lo <= y <= hi,
 * with -INFINITY / INFINITY for none. */
typedef struct {
    float lo, hi;
} hsq_act;

hsq_act hsq_act_none(void);

/* Geometry of a 2-D window op (conv, depthwise conv, pool, transposed conv).
 * pad_t/pad_l are the padding before the first row/column; the padding
 * after is whatever oh/ow imply (TFLite's SAME puts the odd pixel there). */
typedef struct {
    int n;          /* batch */
    int ih, iw, ic; /* input */
    int oh, ow, oc; /* output */
    int kh, kw;     /* window */
    int sh, sw;     /* strides */
    int dh, dw;     /* dilations (1 = none) */
    int pad_t, pad_l;
} hsq_geom;

/* TFLite's padding for one axis: the output size and the padding before.
 * same != 0: out = ceil(in / stride), total = max((out-1)*stride + (k-1)*dil
 * + 1 - in, 0), before = total / 2. Otherwise VALID: out = (in - (k-1)*dil -
 * 1) / stride + 1 (0 when the window does not fit), before = 0. */
void hsq_pad_same_valid(int same, int in, int k, int stride, int dil, int *out, int *before);

/* Weights of a convolution packed for the GEMM: OHWI [oc][K] with K = kh *
 * kw * ic becomes ceil(oc / HSQ_GEMM_NR) panels of K x HSQ_GEMM_NR floats
 * (zero-padded), plus the bias padded the same way. */
#define HSQ_GEMM_NR 16
typedef struct {
    float *panels; /* owned; 64-byte aligned */
    float *bias;   /* owned; npanels * HSQ_GEMM_NR */
    int k, oc, npanels;
} hsq_wpack;

/* bias may be NULL (zeros). Errors: HSQ_ENOMEM. */
int hsq_wpack_init(hsq_wpack *w, const float *ohwi, const float *bias, int oc, int k);
void hsq_wpack_free(hsq_wpack *w);

/* C[m][oc] = act(A * W + bias), C row-major with ldc floats per row. Row i
 * of A (K = w->k floats) is given in nseg equal segments (1 <= nseg <=
 * HSQ_GEMM_MAXSEG, nseg divides K): segment s is rows[i * nseg + s][0 ..
 * K / nseg). */
#define HSQ_GEMM_MAXSEG 32
void hsq_gemm(int m, int nseg, const float *const *rows, const hsq_wpack *w, hsq_act act, float *c,
              size_t ldc);

/* Floats of scratch hsq_conv2d needs for g (0 for a 1x1 unpadded conv). */
size_t hsq_conv2d_scratch(const hsq_geom *g);

/* CONV_2D: in [n][ih][iw][ic], out [n][oh][ow][oc]; scratch holds
 * hsq_conv2d_scratch(g) floats. 1x1 convs read the input directly, other
 * windows go through im2col in row chunks. */
void hsq_conv2d(const hsq_geom *g, const float *in, const hsq_wpack *w, hsq_act act, float *out,
                float *scratch);

/* DEPTHWISE_CONV_2D: w [kh][kw][oc] (the file's [1,kh,kw,oc]), oc = ic *
 * multiplier, output channel o reads input channel o / multiplier; bias
 * [oc] or NULL. */
void hsq_dwconv2d(const hsq_geom *g, const float *in, const float *w, const float *bias,
                  hsq_act act, float *out);

/* Convolution2DTransposeBias (MediaPipe custom op): out(oy, ox) = bias +
 * the sum of in(iy, ix) . w(ky, kx) over all iy * sh + ky - pad_t = oy (and
 * the same for x), file weights [oc][kh][kw][ic]. The GEMM sees them as kh *
 * kw * oc outputs over K = ic in (ky, kx, o) order; hsq_tconv2d_pack makes
 * that packing, with the bias folded in when the windows tile the output
 * (hsq_tconv2d_tiles: kernel = stride, no padding). scratch holds
 * hsq_tconv2d_scratch(g) floats. */
int hsq_tconv2d_tiles(const hsq_geom *g);
int hsq_tconv2d_pack(hsq_wpack *wp, const hsq_geom *g, const float *w, const float *bias);
size_t hsq_tconv2d_scratch(const hsq_geom *g);
void hsq_tconv2d(const hsq_geom *g, const float *in, const hsq_wpack *w, const float *bias,
                 hsq_act act, float *out, float *scratch);

/* AVERAGE_POOL_2D / MAX_POOL_2D (ic = oc): only in-bounds elements count,
 * so an average at a padded border divides by fewer elements (TFLite). */
void hsq_pool2d(const hsq_geom *g, int is_max, const float *in, hsq_act act, float *out);

/* Elementwise ADD / MUL with broadcasting: shapes are 4-D (left-padded with
 * 1s) and each dimension of a and b equals out's or is 1. */
enum { HSQ_BIN_ADD, HSQ_BIN_MUL };
void hsq_binary(int op, const int ad[4], const float *a, const int bd[4], const float *b,
                const int od[4], hsq_act act, float *out);

/* Elementwise RELU-family clamps, HARD_SWISH, LOGISTIC on n floats (in may
 * equal out). */
enum { HSQ_UN_CLAMP, HSQ_UN_HSWISH, HSQ_UN_LOGISTIC };
void hsq_unary(int op, hsq_act act, const float *in, size_t n, float *out);

/* PAD with zeros, 4-D: out dims od = id + before + after. */
void hsq_pad4(const int id[4], const int before[4], const int od[4], const float *in, float *out);

/* CONCATENATION along one axis, as copies: outer blocks of the output, each
 * made of inner[i] floats from input i in turn. */
void hsq_concat(size_t outer, int nin, const float *const *in, const size_t *inner, float *out);

/* RESIZE_BILINEAR, TFLite semantics (align_corners, half_pixel_centers),
 * in [n][ih][iw][c] -> out [n][oh][ow][c]. */
void hsq_resize_bilinear(int n, int ih, int iw, int c, int oh, int ow, int align_corners,
                         int half_pixel, const float *in, float *out);

/* The naive reference kernels (direct loops, no packing): the bench's
 * baseline and a second opinion in tests. Same layouts as above; the conv
 * takes the unpacked OHWI weights. */
void hsq_ref_conv2d(const hsq_geom *g, const float *in, const float *ohwi, const float *bias,
                    hsq_act act, float *out);
void hsq_ref_dwconv2d(const hsq_geom *g, const float *in, const float *w, const float *bias,
                      hsq_act act, float *out);
void hsq_ref_tconv2d(const hsq_geom *g, const float *in, const float *w, const float *bias,
                     hsq_act act, float *out);

/* 1 when the AVX2+FMA kernels run (CPU has them and they are not disabled). */
int hsq_ops_simd(void);

/* Force the portable kernels (on != 0) even on an AVX2 CPU, for tests and the
 * bench. Not thread-safe: call before running models. */
void hsq_ops_force_portable(int on);

/* Make a context run the reference kernels instead of the fast ones. */
void hsq_model_ctx_set_reference(hsq_model_ctx *c, int on);

/* Per-node timing, for the bench. With profiling on, hsq_model_run adds
 * each node's wall time to a per-context total. hsq_model_ctx_profile
 * describes node i ("CONV_2D 1x1/1 64x64x24->24") and returns its
 * accumulated seconds and MACs per image; it returns -1 past the last node
 * and 0 for a node folded into another (alias). */
void hsq_model_ctx_set_profile(hsq_model_ctx *c, int on);
int hsq_model_ctx_profile(const hsq_model_ctx *c, int i, char *desc, size_t len, double *sec,
                          uint64_t *macs);

/* IEEE half -> float (all values: subnormals, infinities, NaN). */
float hsq_half_to_float(uint16_t h);

#ifdef __cplusplus
}
#endif

#endif
