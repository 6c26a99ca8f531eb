/* job.h - one leased job as the worker holds it, and the glue that runs a
 * batch of them: fetch the inputs from the blob store, run the headshot
 * pipeline (worker/pipeline.h), store the outputs, encode the info map.
 *
 * An hsq_job owns copies of everything it needs from the lease reply, so it
 * outlives the message it came in. Threading contract (worker.c): the main
 * thread creates the job and hands it to the processing thread; while the
 * processing thread holds it, the main thread reads only the fields marked
 * "immutable" and may set `aborted`; the processing thread hands it back when
 * hsq_job_run() returns, and the main thread alone frees it.
 *
 * This module does not log and does not touch sockets: it returns codes and a
 * message for the broker, and the shell decides what to log and send.
 */
#ifndef HSQ_WORKER_JOB_H
#define HSQ_WORKER_JOB_H

#include "common/blob.h"
#include "common/buf.h"
#include "schemas/wire.h"
#include "worker/img.h"
#include "worker/pipeline.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    HSQ_JOB_PENDING = 0, /* not run yet */
    HSQ_JOB_DONE,        /* outputs stored; report `done` */
    HSQ_JOB_FAILED,      /* report `fail` {err, errmsg, retryable}; nothing stored */
    HSQ_JOB_ABORTED      /* dropped on request; nothing stored, report nothing */
} hsq_job_status;

typedef struct hsq_job {
    /* immutable after hsq_job_new */
    uint64_t task, token;
    uint32_t attempt;
    uint64_t session; /* set by the owner: connection it came on */
    char out_prefix[HSQ_MAX_KEY_LEN + 1];
    int has_portrait;
    /* The inputs by kind (the first of each): JOB_IN_PORTRAIT, _CLOTHING,
     * _BACKGROUND. name "" when the client sent none; key "" when inline. */
    struct {
        int present;
        char name[HSQ_MAX_NAME_LEN + 1];
        char key[HSQ_MAX_KEY_LEN + 1];
        uint8_t *data; /* inline bytes (owned), or NULL */
        size_t len;
    } in[3];
    uint8_t *settings; /* raw settings map (owned), or NULL */
    size_t settings_len;
    uint32_t n_specs;
    hsq_wire_outspec specs[HSQ_MAX_OUTPUTS];

    /* set by the main thread at any time, read by the pipeline between stages */
    atomic_int aborted;

    /* owned by whoever holds the job (see above) */
    hsq_job_status status;
    int err; /* hsq code when FAILED */
    int retryable;
    char errmsg[HSQ_MAX_ERRMSG_LEN + 1];
    uint32_t n_out;                       /* outputs stored so far */
    hsq_wire_output out[HSQ_MAX_OUTPUTS]; /* out[i].key points into out_keys[i] */
    char out_keys[HSQ_MAX_OUTPUTS][HSQ_MAX_KEY_LEN + 1];
    uint8_t info[HSQ_MAX_INFO_BYTES]; /* encoded hsq_wire_info for `done` */
    size_t info_len;
    uint64_t ms; /* pipeline time, set by the shell */

    struct hsq_job *next;  /* main thread's list link */
    struct hsq_job *qnext; /* hand-off queue link (worker.c, locked) */
} hsq_job;

enum { HSQ_JOB_IN_PORTRAIT = 0, HSQ_JOB_IN_CLOTHING = 1, HSQ_JOB_IN_BACKGROUND = 2 };

typedef struct {
    hsq_blob *blob; /* the calling thread's own handle */
    hsq_img_limits lim;
    hsq_pipe *pipe; /* models and pool, used by one thread at a time; NULL = resize pipeline */
} hsq_job_env;

/* Copy one job out of a decoded lease reply. frames are the binary frames
 * that followed the reply's meta (inline inputs refer to them by index);
 * they are copied, so the message may be freed afterwards, and so are the
 * settings. The first input of each kind (portrait, clothing, background)
 * is kept.
 * Errors: HSQ_ENOMEM (copying an inline input), HSQ_EBADREQ (an inline frame
 * index with no frame: the codec should have refused it). */
int hsq_job_new(hsq_job **out, const hsq_wire_job *wj, const hsq_bytes *frames, size_t nframes);

/* Free the job (and its inline bytes) and set *j to NULL. Stored outputs are
 * not touched: see hsq_job_delete_outputs. */
void hsq_job_free(hsq_job **j);

/* The key of output i (the i-th combination, format fmt):
 * out_prefix + "out-<i>-<token>.<ext>". The token
 * makes keys unique per lease, so a worker whose lease was lost can delete
 * what it wrote without touching the outputs of the lease that replaced it.
 * Errors: HSQ_EINVAL (too long, or not a valid blob key). */
int hsq_job_output_key(const hsq_job *j, uint32_t i, uint8_t fmt, char *out, size_t outlen);

/* Run n jobs (1..HSQ_MAX_BATCH) as one pipeline batch, setting each job's
 * status (DONE, FAILED or ABORTED) and result fields (outputs with their
 * background/style/spec, the encoded info). `aborted` is checked between
 * stages; an aborted or failed job leaves nothing in the blob store, and
 * one job's failure does not fail the others. */
void hsq_job_run_batch(hsq_job *const *jobs, size_t n, const hsq_job_env *env);

/* hsq_job_run_batch in two halves, so that one thread can fetch and decode
 * the next batch while another runs the current one through the models and
 * stores its outputs (worker.c; pipeline.h hsq_pipe_decode):
 *
 *   hsq_job_prepare_batch  checks, fetches the inputs (env->blob), decodes
 *                          on the calling thread; returns the batch (never
 *                          NULL: allocation failure aborts, as everywhere)
 *   hsq_job_finish_batch   models, outputs, store (env->blob), frees b
 *
 * Each half takes the env of the thread that calls it (a blob handle of its
 * own; the same pipe). At most one prepare and one finish at a time per
 * pipe; every prepared batch must be finished. */
typedef struct hsq_job_batch hsq_job_batch;
hsq_job_batch *hsq_job_prepare_batch(hsq_job *const *jobs, size_t n, const hsq_job_env *env);
void hsq_job_finish_batch(hsq_job_batch *b, const hsq_job_env *env);

/* hsq_job_run_batch of one job; returns its status. */
hsq_job_status hsq_job_run(hsq_job *j, const hsq_job_env *env);

/* Delete the outputs recorded in j (after a refused `done`, or a job dropped
 * after it finished); clears j->n_out. Returns the first error (-errno) but
 * tries every key. */
int hsq_job_delete_outputs(hsq_job *j, hsq_blob *blob);

#ifdef __cplusplus
}
#endif

#endif
