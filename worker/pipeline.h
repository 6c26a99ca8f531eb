/* pipeline.h - the headshot pipeline over one leased batch of jobs.
 *
 * Per batch (docs/worker.md, DESIGN.md "Pipeline"):
 *
 *   decode    each job's portrait (and its clothing / background reference),
 *             in parallel across jobs on the pool
 *   detect    BlazeFace once for every decoded portrait (one tensor)
 *   frame     per job and per distinct output aspect: eye levelling and the
 *             head-and-shoulders crop (frame.h), rendered at each output size
 *   segment   selfie segmentation once for every framed crop (one tensor)
 *   matte     mask upsample + colour guided filter at full output size,
 *             times the frame's coverage; foreground colour estimation;
 *             clothing region (person below the chin) and face region
 *   compose   per style: clothing colour transfer, skin smoothing, tone on
 *             the foreground; per background: composite with light wrap and
 *             harmonisation, sharpen
 *   encode    JPEG / PNG with the DPI from the settings (a passport-size
 *             output gets 300 when none is set)
 *
 * Outputs are every combination background x style x size, in that order
 * (background-major), each with its indexes, as schemas/PROTOCOL.md says.
 *
 * The style stages run on the foreground before compositing, not on the
 * composite: a chosen background colour therefore stays exact (tone and
 * clothing never touch it), and the garment's recolour does not bleed into
 * the new backdrop along the alpha edge.
 *
 * Failures are per job: a job whose portrait does not decode, has no face or
 * too small a face fails with a message naming the stage and the photo
 * ("detect: no face found in portrait 'cat.png': ..."), and the others of the
 * batch go on. A failure of a batched model run (out of memory) fails every
 * job still in the batch, as retryable.
 *
 * Timings: each job's info carries per-stage wall-clock milliseconds. The
 * batched stages (detect, segment) report the whole batch's run, which every
 * job of the batch waited for.
 *
 * Threads: an hsq_pipe owns the two models, one model context each, and a
 * pool of `threads` - 1 helper threads (the caller is the last one). Per-job
 * work (decode, matte, compose, encode) is spread over the pool; the model
 * runs use the calling thread. hsq_pipe_run is not reentrant on one pipe:
 * call it from one thread at a time (but see hsq_pipe_decode).
 */
#ifndef HSQ_WORKER_PIPELINE_H
#define HSQ_WORKER_PIPELINE_H

#include "common/buf.h"
#include "schemas/wire.h"
#include "worker/img.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HSQ_PIPE_FACE_MODEL "face_detection_short_range.tflite"
#define HSQ_PIPE_SEG_MODEL "selfie_segmentation.tflite"
#define HSQ_PIPE_MAX_THREADS 64
#define HSQ_PIPE_STAGE_LEN 16

typedef struct hsq_pipe hsq_pipe;

/* One input image of a job: bytes (borrowed, valid during hsq_pipe_run) and
 * the client's file name for messages (may be NULL or ""). data NULL = no
 * such input. */
typedef struct {
    const uint8_t *data;
    size_t len;
    const char *name;
} hsq_pipe_input;

/* One encoded output, owned by the job (hsq_pipe_job_clear frees it). */
typedef struct {
    uint8_t *data;
    size_t len;
    uint32_t width, height;
    uint8_t format; /* hsq_fmt */
    uint8_t background, style, spec;
} hsq_pipe_output;

typedef struct {
    /* in (borrowed, valid during hsq_pipe_run) */
    hsq_pipe_input portrait, clothing, background;
    uint32_t n_specs;
    const hsq_wire_outspec *specs;
    hsq_bytes settings;       /* raw msgpack map; empty = defaults */
    const atomic_int *abort;  /* checked between stages; may be NULL */

    /* out */
    int err;       /* 0, or an hsq code */
    int retryable; /* when err != 0 */
    int aborted;   /* 1: stopped because *abort was set (err is HSQ_ECANCELLED) */
    char errmsg[HSQ_MAX_ERRMSG_LEN + 1];
    uint32_t n_out;
    hsq_pipe_output out[HSQ_MAX_OUTPUTS];
    hsq_wire_info info; /* stage names point into stage_names */
    char stage_names[HSQ_MAX_STAGES][HSQ_PIPE_STAGE_LEN];
} hsq_pipe_job;

/* Load both models from models_dir (HSQ_PIPE_FACE_MODEL, HSQ_PIPE_SEG_MODEL)
 * and start threads - 1 helper threads (threads 1..HSQ_PIPE_MAX_THREADS).
 * On failure err gets one sentence naming the file and the problem.
 * Errors: -errno (a model file cannot be read), HSQ_ECORRUPT, HSQ_EINVAL
 * (unsupported op, threads out of range, a model that is not the expected
 * one), HSQ_ENOMEM. */
int hsq_pipe_new(hsq_pipe **out, const char *models_dir, int threads, const hsq_img_limits *lim,
                 char *err, size_t errlen);

/* Stop the pool, free the models; *p = NULL. NULL-safe. */
void hsq_pipe_free(hsq_pipe **p);

/* Run n jobs (1..HSQ_MAX_BATCH) as one batch. Each job's out fields are
 * reset first, then set: either n_out outputs and info, or err/errmsg.
 * Returns 0 (per-job outcomes are in the jobs) or HSQ_EINVAL for a bad n. */
int hsq_pipe_run(hsq_pipe *p, hsq_pipe_job *const *jobs, size_t n);

/* The same batch in two halves, for a worker that decodes its next batch
 * while the current one is in the models (docs/worker.md "Overlap"):
 *
 *   hsq_pipe_decode  phase 1 (settings, portrait, references) on the calling
 *                    thread only, never on the pool, so it may run while
 *                    another thread is inside hsq_pipe_run or hsq_pipe_finish
 *                    on the same pipe (the photo buffers have their own lock)
 *   hsq_pipe_finish  phases 2-6 and the cleanup; *b = NULL
 *
 * At most one thread in hsq_pipe_decode and one in hsq_pipe_run/finish at a
 * time. The jobs must stay valid until hsq_pipe_finish returns, and every
 * batch decoded must be finished (that also releases its photo buffers).
 * hsq_pipe_decode errors: HSQ_EINVAL for a bad n (per-job outcomes are in
 * the jobs, as for hsq_pipe_run). */
typedef struct hsq_pipe_batch hsq_pipe_batch;
int hsq_pipe_decode(hsq_pipe *p, hsq_pipe_job *const *jobs, size_t n, hsq_pipe_batch **b);
void hsq_pipe_finish(hsq_pipe *p, hsq_pipe_batch **b);

/* Free a job's outputs and reset its out fields. */
void hsq_pipe_job_clear(hsq_pipe_job *j);

/* The settings actually used: defaults filled in (one light-grey vignette,
 * one "natural" style) when the decoded settings have none. */
void hsq_pipe_settings_effective(hsq_wire_settings *s);

/* The DPI written into an output of w x h: settings dpi when non-zero, else
 * the preset's (passport 300), else 0. */
uint32_t hsq_pipe_dpi_for(const hsq_wire_settings *s, uint32_t w, uint32_t h);

/* Model access for the bench: multiply-accumulates per image of each model
 * (face, seg). */
uint64_t hsq_pipe_face_macs(const hsq_pipe *p);
uint64_t hsq_pipe_seg_macs(const hsq_pipe *p);

#ifdef __cplusplus
}
#endif

#endif
