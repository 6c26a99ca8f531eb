/* task.h - the task record as stored in LMDB.
 *
 * A record is a length-prefixed binary layout with varint numbers (not
 * msgpack: it never leaves the daemon, and a fixed field order decodes
 * without a zone).
 * The first byte is the record version; a record of an unknown version is
 * HSQ_ECORRUPT, so a downgrade cannot misread newer data.
 *
 * hsq_task_decode() fills views (hsq_str) that point into the encoded bytes:
 * when those bytes come from LMDB they are valid until the transaction ends
 * or the same key is written, whichever comes first. Encode before writing.
 */
#ifndef HSQ_DAEMON_TASK_H
#define HSQ_DAEMON_TASK_H

#include "common/buf.h"
#include "schemas/wire.h"

#include <stdint.h>

#define HSQ_TASK_RECORD_VERSION 2 /* written; version 1 records are still read */

/* Where an input's bytes live. */
enum { HSQ_IN_INLINE = 0, HSQ_IN_BLOB = 1, HSQ_IN_GONE = 2 /* deleted by retention */ };

typedef struct {
    hsq_str kind;
    hsq_str name;
    uint8_t where;   /* HSQ_IN_INLINE (inputs DB) or HSQ_IN_BLOB (blob store) */
    uint64_t size;
    hsq_str key;     /* blob key when where == HSQ_IN_BLOB */
} hsq_task_input;

typedef struct {
    uint64_t id;
    uint8_t state;          /* hsq_state */
    uint8_t prio;           /* hsq_prio */
    uint8_t dead;           /* failed after the last attempt (dead letter) */
    uint32_t attempts;
    int64_t created_ms;
    int64_t updated_ms;
    int64_t expires_ms;     /* outputs and metadata deletion (0 = not terminal yet) */
    int64_t inputs_expire_ms; /* portrait deletion (retention_pending until terminal) */
    int64_t refs_expire_ms;   /* clothing/background reference deletion */
    int64_t not_before_ms;  /* retry backoff: not dispatched before (queued only) */
    int64_t deadline_ms;    /* lease deadline (leased only) */
    uint64_t token;         /* current fencing token (leased only; 0 otherwise) */
    uint64_t round;         /* fair-share round, part of the pending key */
    int32_t err_code;
    uint32_t progress;
    hsq_str user;
    hsq_str key;            /* idempotency key */
    hsq_str prompt;
    hsq_str stage;
    hsq_str err_msg;
    hsq_str worker;         /* routing id of the worker holding the lease */
    uint32_t n_inputs;
    hsq_task_input inputs[HSQ_MAX_INPUTS];
    uint32_t n_specs;
    hsq_wire_outspec specs[HSQ_MAX_OUTPUTS];
    uint32_t n_outputs;
    hsq_wire_output outputs[HSQ_MAX_OUTPUTS];
    uint32_t keep_uploads_s; /* asked shorter retention (HSQ_KEEP_POLICY = none) */
    uint32_t keep_outputs_s;
    hsq_bytes settings;     /* raw msgpack map from the submit (validated by the codec) */
    hsq_bytes info;         /* raw msgpack map from the worker's done */
    int64_t credits;        /* credits reserved for this task, not yet consumed or
                               refunded (0 when credits are off or settled) */
} hsq_task;

/* Append the record for t to out (out is not reset first). */
void hsq_task_encode(const hsq_task *t, hsq_wbuf *out);

/* The same in a given layout version (1 or 2; task.c says how they
 * differ): tests write version 1 records to check they still decode. */
void hsq_task_encode_version(const hsq_task *t, int version, hsq_wbuf *out);

/* Decode len bytes at p into t (views into p). Errors: HSQ_ECORRUPT. */
int hsq_task_decode(const void *p, size_t len, hsq_task *t);

/* Fill the public view of t (views borrowed from t). */
void hsq_task_to_wire(const hsq_task *t, hsq_wire_task *out);

#endif
