/* model.h - run a TFLite model file on the CPU (and later the GPU).
 *
 * hsq loads the two MediaPipe .tflite files directly: a bounds-checked
 * flatbuffer reader of our own (a truncated or hostile file is an error,
 * never a crash), fp16 weights converted to fp32 once at load, DEQUANTIZE ops
 * dropped, and a plain-C backend that runs the graph on NHWC float32 tensors
 * with a batch dimension. An op the runtime does not implement is reported by
 * name at load time.
 *
 * Threads: a loaded hsq_model is immutable and may be shared; each thread
 * that runs it needs its own hsq_model_run state (hsq_model_ctx), which owns
 * the activation buffers, sized for the largest batch it has seen.
 *
 * Ops: CONV_2D, DEPTHWISE_CONV_2D, ADD, MUL (broadcasting), RELU, RELU6,
 * RELU_N1_TO_1, HARD_SWISH, LOGISTIC, AVERAGE_POOL_2D, MAX_POOL_2D, PAD,
 * RESHAPE, CONCATENATION, RESIZE_BILINEAR, DEQUANTIZE of fp16/fp32
 * constants, and MediaPipe's custom Convolution2DTransposeBias; TFLite's
 * SAME/VALID padding, strides, dilation and fused activations. Activations
 * are float32 with batch 1 in the file; no quantized tensors, no control
 * flow, one subgraph.
 *
 * CPU backend: AVX2+FMA kernels when the CPU has them (checked at run time;
 * the binary needs only baseline x86-64), portable C otherwise; one thread.
 * A batch runs image by image, so image i of a batch is bit-identical to a
 * batch-1 run of that image. A run uses about 30 KiB of stack.
 */
#ifndef HSQ_WORKER_MODEL_MODEL_H
#define HSQ_WORKER_MODEL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hsq_model hsq_model;
typedef struct hsq_model_ctx hsq_model_ctx;

/* Tensor shape, NHWC; dims[0] is the batch (1 in the file). */
typedef struct {
    int rank;
    int dims[4];
} hsq_shape;

/* Load and validate a .tflite file. On failure, err (if not NULL) gets one
 * sentence: "face_detection_short_range.tflite: unsupported op SQUARE" or
 * "...: tensor 12 buffer offset out of range".
 * Errors: -errno (cannot read), HSQ_ECORRUPT (malformed file),
 * HSQ_EIMGUNSUPP is NOT used here; unsupported ops are HSQ_EINVAL,
 * HSQ_ENOMEM. */
int hsq_model_load(hsq_model **out, const char *path, char *err, size_t errlen);

/* Same, from bytes in memory (copied as needed; buf may be freed after).
 * name (NULL = "model") prefixes the error sentence. */
int hsq_model_load_mem(hsq_model **out, const void *buf, size_t len, const char *name, char *err,
                       size_t errlen);

void hsq_model_free(hsq_model **m);

/* Graph inputs/outputs (index order of the file's subgraph inputs/outputs). */
int hsq_model_n_inputs(const hsq_model *m);
int hsq_model_n_outputs(const hsq_model *m);
hsq_shape hsq_model_input_shape(const hsq_model *m, int i);
hsq_shape hsq_model_output_shape(const hsq_model *m, int i);
const char *hsq_model_output_name(const hsq_model *m, int i);

/* Multiply-accumulates per image (for GFLOP/s reporting: 2 * macs). */
uint64_t hsq_model_macs(const hsq_model *m);

/* Bytes of activation memory a context holds for a batch of n (the arena
 * hsq_model_run grows to; weights and scratch not included). */
size_t hsq_model_arena_bytes(const hsq_model *m, int n);

/* A run context for m, which must outlive it. The activation arena is
 * allocated by the first run (hsq_model_arena_bytes(m, n) for batch n) and
 * grown when a larger batch comes.
 * Errors: HSQ_ENOMEM. */
int hsq_model_ctx_new(hsq_model_ctx **out, const hsq_model *m);
void hsq_model_ctx_free(hsq_model_ctx **c);

/* Run a batch of n images. in[i] points at the i-th graph input holding n
 * images back to back (NHWC float32). On success outs[j] points at output j
 * for all n images, owned by ctx and valid until the next run or free.
 * Outputs are laid out like inputs: output j of image i starts at
 * outs[j] + i * (elements of one image of output j).
 * Errors: HSQ_EINVAL (n < 1 or > 64, a NULL input), HSQ_ENOMEM. */
int hsq_model_run(hsq_model_ctx *c, int n, const float *const *in, const float **outs);

#ifdef __cplusplus
}
#endif

#endif
