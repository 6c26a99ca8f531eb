/* wire.h - the hsq wire contract and its one codec (msgpack-c).
 *
 * A message is multipart: frame 0 is a msgpack map (the "meta"), frames 1..N
 * are raw binary payloads (image bytes) referenced from the meta by index
 * (meta frame index 0 == first binary frame). schemas/PROTOCOL.md documents
 * every field; this header is the C view of the same contract.
 *
 * Meta keys common to all messages:
 *   "v"   protocol version (uint, must equal HSQ_WIRE_VERSION)
 *   "rid" request id (uint, chosen by the requester, echoed in the reply)
 *   "op"  operation name (requests and broker->worker commands), or
 *   "re"  operation name being answered (replies), with either
 *   "error" {"code": wire error name, "message": str} (error replies).
 *
 * Decoding is strict: wrong types, missing required fields, unknown fields,
 * out-of-range numbers, over-long strings and frame indexes that do not match
 * the frames present are all HSQ_EBADREQ (HSQ_ETOOLARGE for size limits,
 * HSQ_EVERSION for an unknown version, HSQ_EUNKNOWNOP for an unknown op), with
 * a message naming the field in hsq_wire_msg.errmsg.
 *
 * Ownership: hsq_wire_decode() fills a caller-provided hsq_wire_msg whose
 * hsq_str/hsq_bytes views point into the caller's meta buffer or into memory
 * owned by the message; they are valid until hsq_wire_msg_free(), and the
 * caller's meta buffer must outlive the message too. Encoders append to an
 * hsq_wbuf owned by the caller; they read the struct and never keep pointers.
 */
#ifndef HSQ_SCHEMAS_WIRE_H
#define HSQ_SCHEMAS_WIRE_H

#include "common/buf.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HSQ_WIRE_VERSION 1

/* Limits enforced by the codec. */
#define HSQ_MAX_META_BYTES (64 * 1024) /* frame 0 */
#define HSQ_MAX_USER_LEN 128           /* user id, idempotency key */
#define HSQ_MAX_NAME_LEN 255           /* file names, worker names, stages */
#define HSQ_MAX_KEY_LEN 255            /* blob keys */
#define HSQ_MAX_PROMPT_LEN 4096
#define HSQ_MAX_ERRMSG_LEN 1024
#define HSQ_MAX_INPUTS 8   /* images per job */
#define HSQ_MAX_OUTPUTS 16 /* outputs per job */
#define HSQ_MAX_BATCH 64   /* tasks per lease */
#define HSQ_MAX_PREFETCH 4 /* lease requests a worker may have parked */
#define HSQ_MAX_LIST 100   /* tasks per list page */
#define HSQ_MAX_DIM 8192   /* output width/height */
#define HSQ_MAX_WAIT_MS 60000
#define HSQ_MAX_FRAME_BYTES (50u * 1024 * 1024) /* one image frame */

typedef enum {
    HSQ_OP_NONE = 0,
    /* client -> hsqd */
    HSQ_OP_SUBMIT,
    HSQ_OP_STATUS,
    HSQ_OP_WAIT,
    HSQ_OP_RESULT,
    HSQ_OP_CANCEL,
    HSQ_OP_LIST,
    HSQ_OP_STATS,
    HSQ_OP_REQUEUE,
    /* worker -> hsqd */
    HSQ_OP_READY,
    HSQ_OP_LEASE,
    HSQ_OP_HEARTBEAT,
    HSQ_OP_PROGRESS,
    HSQ_OP_DONE,
    HSQ_OP_FAIL,
    /* hsqd -> worker (unsolicited command, rid 0) */
    HSQ_OP_ABORT,
    /* hsqd PUB socket (frame 0 is the topic, frame 1 the meta) */
    HSQ_OP_EVENT,
    /* operator -> hsqd: retention and privacy */
    HSQ_OP_PURGE,  /* run the retention sweeper now */
    HSQ_OP_ERASE,  /* erase-user */
    HSQ_OP_EXPORT, /* export-user, one task per reply */
    /* operator -> hsqd: the credit ledger */
    HSQ_OP_CREDITS, /* show a user's credits, or grant (or take back) some */
    HSQ_OP_COUNT_
} hsq_op;

typedef enum {
    HSQ_KIND_REQUEST = 1, /* has "op" */
    HSQ_KIND_REPLY,       /* has "re", success */
    HSQ_KIND_ERROR        /* has "re" and "error" */
} hsq_msg_kind;

typedef enum {
    HSQ_STATE_NONE = 0,
    HSQ_STATE_QUEUED = 1,
    HSQ_STATE_LEASED,
    HSQ_STATE_SUCCEEDED,
    HSQ_STATE_FAILED,
    HSQ_STATE_CANCELLED,
    HSQ_STATE_EXPIRED,
    HSQ_STATE_COUNT_
} hsq_state;

typedef enum { HSQ_PRIO_HIGH = 0, HSQ_PRIO_NORMAL = 1, HSQ_PRIO_LOW = 2, HSQ_PRIO_COUNT_ } hsq_prio;

typedef enum { HSQ_FMT_JPEG = 1, HSQ_FMT_PNG = 2 } hsq_fmt;

/* ---- headshot settings (submit -> task -> lease) and result info (done) ----
 * Both travel as a msgpack map nested in the meta. The codec validates the
 * map strictly against the shapes below but hands it on as raw bytes
 * (hsq_bytes views into the meta), so hsqd stores and forwards settings and
 * info without interpreting them; the worker and clients decode them with
 * hsq_wire_settings_decode / hsq_wire_info_decode. */
#define HSQ_MAX_BACKGROUNDS 4
#define HSQ_MAX_STYLES 4
#define HSQ_MAX_STAGES 16
#define HSQ_MAX_SETTINGS_BYTES 4096
#define HSQ_MAX_INFO_BYTES 2048

typedef enum {
    HSQ_BG_SOLID = 1,    /* color */
    HSQ_BG_GRADIENT = 2, /* color at the top to color2 at the bottom */
    HSQ_BG_VIGNETTE = 3, /* studio: color at the centre, darker toward the edges */
    HSQ_BG_REFERENCE = 4 /* the job's "background" input, cover-fit, blurred by blur_px */
} hsq_bg_kind;

typedef struct {
    uint8_t kind;      /* hsq_bg_kind; "solid" | "gradient" | "vignette" | "reference" */
    uint8_t color[3];  /* sRGB */
    uint8_t color2[3]; /* gradient end */
    uint16_t blur_px;  /* reference only: Gaussian sigma in output pixels, 0..64 */
} hsq_wire_background;

typedef struct {
    hsq_str name;     /* e.g. "natural"; 0..32 bytes */
    uint8_t retouch;  /* skin smoothing 0..100 (0 = off) */
    uint8_t tone;     /* exposure and white balance normalisation 0..100 */
    uint8_t sharpen;  /* 0..100 */
    uint8_t clothing; /* colour transfer from the "clothing" input 0..100 */
} hsq_wire_style;

/* Every combination background x style x output size is one output; the
 * product is at most HSQ_MAX_OUTPUTS. No backgrounds = one light grey
 * vignette; no styles = one "natural" style. */
typedef struct {
    uint32_t n_backgrounds;
    hsq_wire_background backgrounds[HSQ_MAX_BACKGROUNDS];
    uint32_t n_styles;
    hsq_wire_style styles[HSQ_MAX_STYLES];
    uint16_t dpi; /* pixels per inch written into outputs; 0 = none, 72..1200 */
} hsq_wire_settings;

typedef struct {
    hsq_str name; /* stage: "decode", "detect", "frame", "segment", ... */
    uint32_t ms;
} hsq_wire_stage;

/* What a worker reports about a finished job. */
typedef struct {
    uint32_t faces;      /* faces seen in the portrait */
    uint32_t face_score; /* subject's detection score x 1000 */
    hsq_str backend;     /* "cpu" | "cuda" */
    uint32_t n_stages;
    hsq_wire_stage stages[HSQ_MAX_STAGES];
} hsq_wire_info;

const char *hsq_op_name(hsq_op op);      /* "submit"; "?" when out of range */
hsq_op hsq_op_from_name(hsq_str name);   /* HSQ_OP_NONE when unknown */
const char *hsq_state_name(hsq_state s); /* "queued" ... */
const char *hsq_prio_name(hsq_prio p);   /* "high" "normal" "low" */
int hsq_prio_from_name(hsq_str name);    /* -1 when unknown */
const char *hsq_fmt_name(hsq_fmt f);     /* "jpeg" "png" */
int hsq_state_is_terminal(hsq_state s);  /* succeeded, failed, cancelled, expired */

/* Every str the codec passes is RFC 3629 UTF-8: no overlong forms, no
 * surrogates, nothing above U+10FFFF. hsq_utf8_seq: the length (1-4) of the
 * valid sequence starting at s, of which n > 0 bytes are there, or 0 when
 * none does. hsq_utf8_valid: 1 when all of s[0..n) is valid. */
size_t hsq_utf8_seq(const void *s, size_t n);
int hsq_utf8_valid(const void *s, size_t n);

/* One uploaded image. In a submit, `frame` names the binary frame holding the
 * bytes (required). In a lease, either `key` names a blob-store object or
 * `frame` names an inline frame of the lease reply. */
#define HSQ_NO_FRAME UINT32_MAX
typedef struct {
    hsq_str kind; /* "portrait" | "clothing" | "background" */
    hsq_str name; /* client's file name, for messages; may be empty */
    hsq_str key;  /* blob key (lease only); empty when inline */
    uint32_t frame;
    uint64_t size; /* bytes (lease only; set by hsqd) */
} hsq_wire_input;

/* One requested output. */
typedef struct {
    uint32_t width;  /* 1..HSQ_MAX_DIM */
    uint32_t height; /* 1..HSQ_MAX_DIM */
    uint8_t format;  /* hsq_fmt */
    uint8_t quality; /* 1..100, JPEG only; 0 = default (90) */
} hsq_wire_outspec;

/* One produced output, stored in the blob store by the worker. */
typedef struct {
    hsq_str key;        /* blob key */
    uint64_t size;      /* bytes */
    uint8_t sha256[32]; /* of the stored bytes */
    uint32_t width;
    uint32_t height;
    uint8_t format;     /* hsq_fmt */
    uint8_t background; /* index into settings.backgrounds (0 when none given) */
    uint8_t style;      /* index into settings.styles (0 when none given) */
    uint8_t spec;       /* index into the job's output specs (sizes) */
} hsq_wire_output;

/* The public view of one task (status, wait, cancel, requeue, result, list). */
typedef struct {
    uint64_t id;
    hsq_str user;
    hsq_str key;        /* idempotency key; may be empty */
    uint8_t state;      /* hsq_state */
    uint8_t prio;       /* hsq_prio */
    uint32_t attempts;  /* leases handed out so far */
    int64_t created_ms; /* wall clock, ms since epoch */
    int64_t updated_ms;
    int64_t expires_ms; /* when the sweeper deletes its data; 0 = not set yet */
    uint32_t progress;  /* 0..100 */
    hsq_str stage;      /* last progress stage; may be empty */
    int32_t err_code;   /* hsq code of the last error; 0 = none */
    hsq_str err_msg;    /* may be empty */
    uint32_t n_inputs;
    uint32_t n_outputs; /* outputs[] valid when state == succeeded */
    hsq_wire_output outputs[HSQ_MAX_OUTPUTS];
    hsq_bytes settings;        /* raw msgpack map as submitted; may be empty */
    hsq_bytes info;            /* raw msgpack map from the worker's done; may be empty */
    int64_t uploads_expire_ms; /* when the uploaded portraits are deleted */
    int64_t refs_expire_ms;    /* when clothing/background references are deleted */
} hsq_wire_task;

/* One leased task as handed to a worker. */
typedef struct {
    uint64_t task;
    uint64_t token;   /* fencing token; echo it in heartbeat/progress/done/fail */
    uint32_t attempt; /* 1 on the first lease */
    uint8_t prio;
    int64_t deadline_ms; /* lease deadline (wall clock) */
    hsq_str out_prefix;  /* blob key prefix for this task's outputs ("u/<hash>/<task>/") */
    hsq_str prompt;
    uint32_t n_inputs;
    hsq_wire_input inputs[HSQ_MAX_INPUTS];
    uint32_t n_outputs;
    hsq_wire_outspec outputs[HSQ_MAX_OUTPUTS];
    hsq_bytes settings; /* raw msgpack map; may be empty (defaults) */
} hsq_wire_job;

typedef struct {
    uint64_t task;
    uint64_t token;
} hsq_wire_lease_ref;

typedef struct {
    uint64_t queued, leased, succeeded, failed, cancelled, expired;
    uint64_t queued_by_prio[HSQ_PRIO_COUNT_];
    uint64_t delayed;         /* queued but waiting out a retry backoff */
    uint64_t dead;            /* failed after the last attempt */
    uint64_t workers;         /* connected, ready workers */
    uint64_t workers_busy;    /* holding at least one lease */
    uint64_t submitted_total; /* since start */
    uint64_t completed_total; /* since start */
    uint64_t retries_total;   /* lease expiries + retryable failures since start */
    int64_t oldest_queued_ms; /* created_ms of the oldest queued task; 0 = none */
    uint64_t uptime_s;
} hsq_wire_stats;

/* ---- requests ---- */
typedef struct {
    hsq_str user;      /* required, 1..HSQ_MAX_USER_LEN */
    hsq_str key;       /* idempotency key, optional */
    uint8_t prio;      /* default normal */
    hsq_str prompt;    /* optional */
    uint32_t n_inputs; /* 1..HSQ_MAX_INPUTS; inputs[i].frame == i required */
    hsq_wire_input inputs[HSQ_MAX_INPUTS];
    uint32_t n_outputs; /* 1..HSQ_MAX_OUTPUTS */
    hsq_wire_outspec outputs[HSQ_MAX_OUTPUTS];
    hsq_bytes settings; /* optional raw msgpack map (hsq_wire_settings) */
    /* Shorter retention asked by the user, in seconds after the task ends;
     * 0 (HSQ_KEEP_POLICY, the default, omitted on the wire) = the policy's,
     * so a zeroed struct never deletes early. hsqd applies min(policy,
     * asked): a submit can shorten, never extend. keep_uploads_s = 1:
     * "delete my photos as soon as my headshots are ready" (the sweeper's
     * next turn). keep_uploads_s covers the clothing/background references
     * too. */
    uint32_t keep_uploads_s;
    uint32_t keep_outputs_s;
} hsq_req_submit;

#define HSQ_KEEP_POLICY 0

/* status, result, cancel, requeue */
typedef struct {
    uint64_t task; /* required */
    hsq_str user;  /* optional: when given, must own the task (else not_found) */
} hsq_req_task;

typedef struct {
    uint64_t task;
    hsq_str user;        /* optional, as above */
    uint32_t timeout_ms; /* 0..HSQ_MAX_WAIT_MS */
    uint8_t since;       /* hsq_state: reply once the state differs from this;
                            0 = reply once the task is terminal */
} hsq_req_wait;

typedef struct {
    hsq_str user;    /* required */
    uint32_t limit;  /* 1..HSQ_MAX_LIST, default 20 */
    uint64_t before; /* page cursor: tasks with id < before; 0 = newest */
} hsq_req_list;

typedef struct {
    hsq_str name;       /* worker name (for logs and stats) */
    hsq_str backend;    /* "cpu" | "cuda" */
    hsq_str device;     /* free text, e.g. "NVIDIA H200" */
    uint32_t max_batch; /* 1..HSQ_MAX_BATCH */
    uint32_t prefetch;  /* lease requests it may have parked at once: 0..HSQ_MAX_PREFETCH; 0 = 1 */
} hsq_req_ready;

typedef struct {
    uint32_t max;     /* 1..HSQ_MAX_BATCH */
    uint32_t wait_ms; /* park up to this long when nothing is queued; 0..HSQ_MAX_WAIT_MS */
} hsq_req_lease;

typedef struct {
    uint32_t n; /* 1..HSQ_MAX_BATCH */
    hsq_wire_lease_ref leases[HSQ_MAX_BATCH];
} hsq_req_heartbeat;

typedef struct {
    uint64_t task;
    uint64_t token;
    uint32_t pct; /* 0..100 */
    hsq_str stage;
} hsq_req_progress;

typedef struct {
    uint64_t task;
    uint64_t token;
    uint32_t n_outputs; /* 1..HSQ_MAX_OUTPUTS */
    hsq_wire_output outputs[HSQ_MAX_OUTPUTS];
    hsq_bytes info; /* optional raw msgpack map (hsq_wire_info) */
} hsq_req_done;

typedef struct {
    uint64_t task;
    uint64_t token;
    int32_t code; /* hsq error code (sent as its wire name) */
    hsq_str message;
    uint8_t retryable;
} hsq_req_fail;

typedef struct {
    uint8_t dry_run; /* count what would go, delete nothing */
    uint32_t limit;  /* index entries to handle, 1..1000000; default 100000 */
} hsq_req_purge;

typedef struct {
    hsq_str user; /* required */
} hsq_req_erase;

typedef struct {
    hsq_str user;   /* required */
    uint64_t after; /* cursor: the next task with id > after; 0 = first */
} hsq_req_export;

typedef struct {
    hsq_str user;  /* required */
    int64_t grant; /* added to the balance (negative takes back); 0 = show only */
} hsq_req_credits;

/* hsqd -> worker */
typedef struct {
    uint64_t task;
    uint64_t token;
} hsq_cmd_abort;

/* hsqd PUB */
typedef struct {
    uint64_t task;
    hsq_str user;
    uint8_t state;
    uint32_t progress;
    hsq_str stage;
    int64_t at_ms;
} hsq_event;

/* ---- replies ---- */
typedef struct {
    uint64_t task;
    uint8_t state;
    uint8_t created; /* 0 when an idempotent resubmit returned an existing task */
} hsq_rep_submit;

typedef struct {
    hsq_wire_task task; /* status, cancel, requeue, result (outputs as frames 0..n-1) */
    uint8_t timed_out;  /* wait only */
} hsq_rep_task;

typedef struct {
    uint32_t n;
    hsq_wire_task *tasks; /* owned by the message */
    uint64_t next;        /* cursor for the next page; 0 = no more */
} hsq_rep_list;

typedef struct {
    uint32_t lease_ms;
    uint32_t heartbeat_ms;
} hsq_rep_ready;

typedef struct {
    uint32_t n;
    hsq_wire_job *jobs; /* owned by the message */
} hsq_rep_lease;

typedef struct {
    uint32_t n_lost; /* leases no longer held: stop work on these */
    uint64_t lost[HSQ_MAX_BATCH];
} hsq_rep_heartbeat;

typedef struct {
    int32_t code; /* hsq error code (HSQ_E*) */
    hsq_str message;
} hsq_rep_error;

typedef struct {
    uint8_t dry_run;
    uint8_t more; /* due entries remain beyond the limit */
    uint64_t inputs, outputs, tasks, tombstones, cancelled, bytes, errors;
} hsq_rep_purge;

/* The receipt of an erasure. */
typedef struct {
    uint64_t tasks;  /* task records removed (any state) */
    uint64_t active; /* of which queued or leased (cancelled, workers told) */
    uint64_t bytes;  /* blob bytes deleted */
    int64_t at_ms;   /* when it completed */
    hsq_str subject; /* hex keyed hash of the user id, as in the audit log */
} hsq_rep_erase;

/* A user's credits after a credits request. */
typedef struct {
    hsq_str user;
    int64_t balance;  /* credits owned, reservations included */
    int64_t reserved; /* held by the user's unfinished tasks */
} hsq_rep_credits;

/* One task of an export: the full record, inputs and outputs as frames. */
typedef struct {
    uint8_t has_task;   /* 0: no more tasks (task is empty) */
    hsq_wire_task task; /* outputs[i] bytes in frame out_frames[i] (HSQ_NO_FRAME: deleted) */
    hsq_str prompt;
    uint32_t n_inputs;
    hsq_wire_input inputs[HSQ_MAX_INPUTS]; /* frame = HSQ_NO_FRAME when deleted by retention */
    uint32_t out_frames[HSQ_MAX_OUTPUTS];
    uint64_t next; /* cursor for the next call; 0 = this was the last */
} hsq_rep_export;

typedef struct {
    uint32_t v;
    hsq_msg_kind kind;
    hsq_op op; /* request op, or the op answered */
    uint64_t rid;
    union {
        hsq_req_submit submit;
        hsq_req_task task; /* status, result, cancel, requeue */
        hsq_req_wait wait;
        hsq_req_list list;
        hsq_req_ready ready;
        hsq_req_lease lease;
        hsq_req_heartbeat heartbeat;
        hsq_req_progress progress;
        hsq_req_done done;
        hsq_req_fail fail;
        hsq_cmd_abort abort;
        hsq_event event;
        hsq_req_purge purge;
        hsq_req_erase erase;
        hsq_req_export export_;
        hsq_req_credits credits;
    } req;
    union {
        hsq_rep_submit submit;
        hsq_rep_task task; /* status, wait, result, cancel, requeue */
        hsq_rep_list list;
        hsq_wire_stats stats;
        hsq_rep_ready ready;
        hsq_rep_lease lease;
        hsq_rep_heartbeat heartbeat;
        hsq_rep_error error;
        hsq_rep_purge purge;
        hsq_rep_erase erase;
        hsq_rep_export export_;
        hsq_rep_credits credits;
        /* progress, done, fail: empty success */
    } rep;
    char errmsg[160]; /* decode failure detail, NUL-terminated */
    void *priv_;      /* codec-owned memory (zone, arrays) */
} hsq_wire_msg;

/* Decode frame 0. `nframes` is the number of binary frames that followed it;
 * frame indexes are checked against it (submit: exactly n_inputs frames, and
 * inputs[i].frame == i). On failure the message holds nothing to free, but
 * calling hsq_wire_msg_free() is harmless; msg->errmsg says what was wrong,
 * and msg->op / msg->rid are set when they could be read, so the error reply
 * can echo them.
 * Errors: HSQ_EBADREQ, HSQ_ETOOLARGE, HSQ_EVERSION, HSQ_EUNKNOWNOP. */
int hsq_wire_decode(const void *meta, size_t len, size_t nframes, hsq_wire_msg *msg);

/* Release what the codec allocated for msg; msg is zeroed. */
void hsq_wire_msg_free(hsq_wire_msg *msg);

/* Encode msg (kind, op, rid and the matching union member) as a msgpack meta
 * frame appended to out. The caller sends the frames the message references.
 * Errors: HSQ_EINVAL (kind/op combination that does not exist, or a field
 * outside its limits: the encoder refuses what the decoder would refuse). */
int hsq_wire_encode(const hsq_wire_msg *msg, hsq_wbuf *out);

/* Settings and info maps (see above). Decode: raw is a msgpack map (empty
 * raw = defaults: zero backgrounds and styles, dpi 0; info all zero); views
 * point into raw. Errors: HSQ_EBADREQ, HSQ_ETOOLARGE with a sentence in err.
 * Encode appends one map to out. Errors: HSQ_EINVAL. */
int hsq_wire_settings_decode(hsq_bytes raw, hsq_wire_settings *out, char *err, size_t errlen);
int hsq_wire_settings_encode(const hsq_wire_settings *s, hsq_wbuf *out);
int hsq_wire_info_decode(hsq_bytes raw, hsq_wire_info *out, char *err, size_t errlen);
int hsq_wire_info_encode(const hsq_wire_info *in, hsq_wbuf *out);
const char *hsq_bg_name(hsq_bg_kind k); /* "solid" ...; "?" when out of range */

/* Convenience: encode an error reply for op/rid. */
int hsq_wire_encode_error(hsq_op op, uint64_t rid, int code, const char *message, hsq_wbuf *out);

#ifdef __cplusplus
}
#endif

#endif
