/* tflite.h - a bounds-checked reader for the TFLite flatbuffer container.
 *
 * Reads the parts of the TFLite schema (v3) that hsq runs: operator codes,
 * subgraph 0 (tensors, inputs, outputs, operators with their builtin options
 * decoded) and the buffers. It is our own reader, not the flatbuffers
 * library: every offset, vtable, vector length and string is checked against
 * the buffer before it is read, so a truncated or hostile file gives
 * HSQ_ECORRUPT with a message, never a crash or an overread. The schema is
 * walked top-down along a fixed path (Model -> SubGraph -> Operator ->
 * options), so the nesting depth is bounded by construction and a table that
 * points at itself cannot loop.
 *
 * Everything returned is owned by the hsq_tfl_model except the buffer data
 * views (hsq_tfl_bytes), which point into the caller's file bytes and are
 * valid until those bytes are freed.
 */
#ifndef HSQ_WORKER_MODEL_TFLITE_H
#define HSQ_WORKER_MODEL_TFLITE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Limits on what a file may declare; a file over them is HSQ_ECORRUPT. */
#define HSQ_TFL_MAX_RANK 8
#define HSQ_TFL_MAX_TENSORS 65536
#define HSQ_TFL_MAX_OPS 65536
#define HSQ_TFL_MAX_OPCODES 4096
#define HSQ_TFL_MAX_BUFFERS 65536
#define HSQ_TFL_MAX_OP_IO 256   /* inputs or outputs of one operator */
#define HSQ_TFL_MAX_GRAPH_IO 64 /* inputs or outputs of the subgraph */
#define HSQ_TFL_MAX_NAME 1024   /* longer names are cut (still NUL-terminated) */

/* TensorType values used by hsq (schema enum). */
enum {
    HSQ_TFL_FLOAT32 = 0,
    HSQ_TFL_FLOAT16 = 1,
    HSQ_TFL_INT32 = 2,
    HSQ_TFL_UINT8 = 3,
    HSQ_TFL_INT64 = 4,
    HSQ_TFL_INT8 = 9,
};

/* BuiltinOperator values used by hsq (schema enum). */
enum {
    HSQ_TFL_OP_ADD = 0,
    HSQ_TFL_OP_AVERAGE_POOL_2D = 1,
    HSQ_TFL_OP_CONCATENATION = 2,
    HSQ_TFL_OP_CONV_2D = 3,
    HSQ_TFL_OP_DEPTHWISE_CONV_2D = 4,
    HSQ_TFL_OP_DEQUANTIZE = 6,
    HSQ_TFL_OP_LOGISTIC = 14,
    HSQ_TFL_OP_MAX_POOL_2D = 17,
    HSQ_TFL_OP_MUL = 18,
    HSQ_TFL_OP_RELU = 19,
    HSQ_TFL_OP_RELU_N1_TO_1 = 20,
    HSQ_TFL_OP_RELU6 = 21,
    HSQ_TFL_OP_RESHAPE = 22,
    HSQ_TFL_OP_RESIZE_BILINEAR = 23,
    HSQ_TFL_OP_CUSTOM = 32,
    HSQ_TFL_OP_PAD = 34,
    HSQ_TFL_OP_HARD_SWISH = 117,
};

/* Padding and ActivationFunctionType (schema enums). */
enum { HSQ_TFL_PAD_SAME = 0, HSQ_TFL_PAD_VALID = 1 };
enum {
    HSQ_TFL_ACT_NONE = 0,
    HSQ_TFL_ACT_RELU = 1,
    HSQ_TFL_ACT_RELU_N1_TO_1 = 2,
    HSQ_TFL_ACT_RELU6 = 3,
    HSQ_TFL_ACT_TANH = 4,
    HSQ_TFL_ACT_SIGN_BIT = 5,
};

/* BuiltinOptions union types decoded into hsq_tfl_opts. */
enum {
    HSQ_TFL_OPT_NONE = 0,
    HSQ_TFL_OPT_CONV2D = 1,
    HSQ_TFL_OPT_DEPTHWISE = 2,
    HSQ_TFL_OPT_POOL2D = 5,
    HSQ_TFL_OPT_CONCAT = 10,
    HSQ_TFL_OPT_ADD = 11,
    HSQ_TFL_OPT_RESIZE_BILINEAR = 15,
    HSQ_TFL_OPT_RESHAPE = 17,
    HSQ_TFL_OPT_MUL = 21,
};

/* A view into the file bytes, valid while they live. */
typedef struct {
    const uint8_t *ptr;
    size_t len;
} hsq_tfl_bytes;

typedef struct {
    int32_t builtin; /* max(deprecated_builtin_code, builtin_code) */
    int32_t version;
    const char *custom; /* custom_code, "" when absent; owned by the model */
} hsq_tfl_opcode;

typedef struct {
    int32_t type; /* TensorType */
    int32_t rank; /* 0..HSQ_TFL_MAX_RANK */
    int32_t dims[HSQ_TFL_MAX_RANK];
    uint32_t buffer;  /* checked < n_buffers */
    int quantized;    /* has quantization scales (hsq runs none) */
    const char *name; /* "" when absent; owned by the model */
} hsq_tfl_tensor;

/* The builtin options hsq knows, decoded with the schema's defaults. Which
 * fields mean something depends on opt_type. */
typedef struct {
    int32_t padding; /* HSQ_TFL_PAD_* */
    int32_t stride_w, stride_h;
    int32_t dilation_w, dilation_h;
    int32_t depth_multiplier;
    int32_t filter_w, filter_h;
    int32_t act; /* fused activation, HSQ_TFL_ACT_* */
    int32_t axis;
    int32_t align_corners, half_pixel_centers;
    int32_t new_shape_n; /* -1 when the options carry no new_shape */
    int32_t new_shape[HSQ_TFL_MAX_RANK];
} hsq_tfl_opts;

typedef struct {
    uint32_t opcode; /* checked < n_opcodes */
    int32_t n_in, n_out;
    const int32_t *in, *out; /* -1 = absent, else checked < n_tensors */
    uint8_t opt_type;        /* BuiltinOptions union type */
    hsq_tfl_opts opts;
    hsq_tfl_bytes custom_options; /* empty when absent */
} hsq_tfl_op;

typedef struct {
    uint32_t version;
    const char *description; /* "" when absent */
    int32_t n_subgraphs;
    int32_t n_opcodes;
    hsq_tfl_opcode *opcodes;
    int32_t n_tensors;
    hsq_tfl_tensor *tensors;
    int32_t n_inputs, n_outputs;
    const int32_t *inputs, *outputs; /* checked < n_tensors */
    int32_t n_ops;
    hsq_tfl_op *ops;
    int32_t n_buffers;
    hsq_tfl_bytes *buffers; /* data views into the file; empty for none */
} hsq_tfl_model;

/* Parse the file bytes buf[0..len). *out is owned by the caller
 * (hsq_tfl_free) and its buffer views point into buf. On failure err (if not
 * NULL) gets one sentence without a file name ("tensor 12: buffer index 99
 * out of range").
 * Errors: HSQ_ECORRUPT (malformed, truncated, over a limit), HSQ_ENOMEM. */
int hsq_tfl_parse(hsq_tfl_model **out, const void *buf, size_t len, char *err, size_t errlen);

void hsq_tfl_free(hsq_tfl_model **m);

/* "CONV_2D" for a builtin code, "?" for one this table does not know. */
const char *hsq_tfl_op_name(int32_t builtin);

/* "FLOAT32" for a TensorType, "?" when unknown. */
const char *hsq_tfl_type_name(int32_t type);

#ifdef __cplusplus
}
#endif

#endif
