/* tfl_build.h - write small .tflite files for tests.
 *
 * A minimal flatbuffer writer for the parts of the TFLite schema that
 * worker/model reads, so tests can make one-op models, odd shapes and
 * hostile variants without a converter. Objects are written back to front
 * like the real flatbuffers builder, but without alignment padding (our
 * reader never assumes alignment). All allocation failures abort: test code.
 */
#ifndef HSQ_TESTS_TFL_BUILD_H
#define HSQ_TESTS_TFL_BUILD_H

#include <stddef.h>
#include <stdint.h>

typedef struct tfb tfb;

/* Builtin options: scalar fields (id, byte size 1 or 4, value) and at most
 * one int32 vector field (when has_vec). */
typedef struct {
    int nf;
    struct {
        int id, size;
        int32_t v;
    } f[8];
    int has_vec, vec_id;
    int nvec;
    int32_t vec[8];
} tfb_opts;

tfb *tfb_new(void);
void tfb_free(tfb *b);

/* A buffer with these bytes (copied); returns its index (0 is the empty
 * sentinel every model starts with). */
int tfb_buffer(tfb *b, const void *data, size_t len);

/* A tensor; buffer 0 = no data. Returns its index. */
int tfb_tensor(tfb *b, int type, int rank, const int *dims, int buffer, const char *name);

/* A float32 constant tensor holding data (a new buffer). */
int tfb_const_f32(tfb *b, int rank, const int *dims, const float *data);

/* An fp16 constant (data must be exactly representable) followed by a
 * DEQUANTIZE op into a new float32 tensor, whose index is returned. */
int tfb_const_f16(tfb *b, int rank, const int *dims, const float *data);

/* An int32 constant tensor. */
int tfb_const_i32(tfb *b, int rank, const int *dims, const int32_t *data);

/* An operator code (deduplicated); custom may be NULL. */
int tfb_opcode(tfb *b, int builtin, const char *custom);

/* An operator. opts may be NULL (no builtin options table); custom options
 * are raw bytes (may be NULL). */
int tfb_op(tfb *b, int builtin, const char *custom, int nin, const int *in, int nout,
           const int *out, int opt_type, const tfb_opts *opts, const void *custom_opts,
           size_t custom_len);

void tfb_io(tfb *b, int nin, const int *in, int nout, const int *out);

/* Write operator codes the old way: only the byte field 0 (codes < 127). */
void tfb_legacy_opcodes(tfb *b, int on);

/* Serialize; returns a malloc'd buffer of *len bytes (caller frees). */
uint8_t *tfb_finish(tfb *b, size_t *len);

/* float -> IEEE half for values exactly representable (asserts). */
uint16_t tfb_half(float f);

#endif
