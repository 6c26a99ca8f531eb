/* hsq.h - libhsq, the C client library of the hsq job system.
 *
 * One function per protocol operation (submit, status, wait, result, cancel,
 * list, stats, requeue; purge, erase, export for operators), each a blocking request/reply over a ZeroMQ DEALER
 * socket connected to hsqd's client endpoint. The wire format and the types
 * reused below come from schemas/wire.h; schemas/PROTOCOL.md is the spec.
 *
 * Threads: an hsq_client is not thread-safe. Use one client per thread (a
 * client holds its own ZeroMQ context, so clients never share state).
 *
 * Timeouts: every call waits at most the client's timeout for the daemon to
 * accept the request and for its reply (hsq_client_wait adds its own wait
 * time on top). On a timeout the call returns HSQ_ETIMEOUT and the socket is
 * closed with linger 0 and reconnected, so a late reply can never be taken for
 * the answer to a later request; replies whose request id does not match the
 * one in flight are dropped too. A request that timed out may still have been
 * executed: submit with an idempotency key and resubmit to be safe.
 *
 * Ownership: strings passed in are only read during the call. Results come
 * back through out-params. hsq_str/hsq_bytes views inside them ("views" below)
 * point into memory the client owns and stay valid until the next call on the
 * same client, or hsq_client_close(), whichever comes first; copy what you
 * keep. hsq_client_result() is the exception: it returns an object that owns
 * its reply and lives until hsq_client_res_free(), independent of the client.
 *
 * Errors: every call returns 0 or a negative hsq code (schemas/err.h):
 *   - a code from the daemon's error reply (HSQ_ENOTFOUND, HSQ_EQUEUEFULL,
 *     HSQ_EBADREQ, HSQ_ECONFLICT, HSQ_EFORBIDDEN, HSQ_ETOOLARGE, ...), with the
 *     daemon's message in hsq_client_errmsg(); an error name this library does
 *     not know (a newer daemon) comes back as HSQ_EINTERNAL with its message;
 *   - HSQ_ETIMEOUT: no reply within the timeout (socket reset);
 *   - HSQ_EUNAVAIL: the request could not be handed to the daemon within the
 *     timeout (nothing listening on the endpoint; socket reset);
 *   - HSQ_EINVAL: an argument outside the protocol's limits or a string that
 *     is not UTF-8 (checked before anything is sent), or an endpoint ZeroMQ
 *     does not accept;
 *   - HSQ_EBADREQ / HSQ_EVERSION: the daemon's reply did not decode (socket
 *     reset; the message says what was wrong);
 *   - HSQ_ENOMEM, or -errno for other ZeroMQ failures.
 * hsq_client_errmsg() describes the last failure in a sentence.
 */
#ifndef HSQ_CLIENT_HSQ_H
#define HSQ_CLIENT_HSQ_H

#include "common/buf.h"
#include "schemas/err.h"
#include "schemas/wire.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HSQ_CLIENT_DEFAULT_ENDPOINT "ipc:///run/hsq/client.sock"
#define HSQ_CLIENT_DEFAULT_EVENTS "ipc:///run/hsq/events.sock"
#define HSQ_CLIENT_ENDPOINT_ENV "HSQ_ENDPOINT" /* overrides the default endpoint */
#define HSQ_CLIENT_DEFAULT_TIMEOUT_MS 10000
#define HSQ_CLIENT_SLOW_MS 60000 /* added to the timeout of purge and erase */
/* Overrides HSQ_CLIENT_SLOW_MS when it holds 0..86400000 (ms); any other
 * value is ignored. */
#define HSQ_CLIENT_SLOW_ENV "HSQ_CLIENT_SLOW_MS"

typedef struct hsq_client hsq_client;

/* Create a client for `endpoint` (NULL: $HSQ_ENDPOINT when set and non-empty,
 * else HSQ_CLIENT_DEFAULT_ENDPOINT). timeout_ms <= 0 selects
 * HSQ_CLIENT_DEFAULT_TIMEOUT_MS. Connecting is asynchronous: a daemon that is
 * not running shows up as HSQ_EUNAVAIL on the first call, not here.
 * *out is set only on success.
 * Errors: HSQ_EINVAL (endpoint refused by ZeroMQ), -errno (ZeroMQ). */
int hsq_client_open(hsq_client **out, const char *endpoint, int timeout_ms);

/* Close the socket (pending requests are dropped), free *c and set it to
 * NULL. NULL and *c == NULL are no-ops. */
void hsq_client_close(hsq_client **c);

/* Use CURVE encryption (required by hsqd on tcp:// endpoints). Keys are the
 * 40-character Z85 forms: the daemon's public key, then this client's key
 * pair. NULL for all three switches CURVE off. The socket is reconnected.
 * Errors: HSQ_EINVAL (a key is not 40 characters of Z85), -errno (ZeroMQ). */
int hsq_client_set_curve(hsq_client *c, const char *server_key, const char *public_key,
                         const char *secret_key);

/* Change the per-call timeout (<= 0: the default). */
void hsq_client_set_timeout(hsq_client *c, int timeout_ms);

/* The endpoint in use; valid until hsq_client_close(). */
const char *hsq_client_endpoint(const hsq_client *c);

/* Text of the last failure: the daemon's message for an error reply, else a
 * sentence about the transport or argument problem; "" after a success. Valid
 * until the next call on c. */
const char *hsq_client_errmsg(const hsq_client *c);

/* ---- submit ---- */

/* One image to upload. The bytes are copied into the request during the call. */
typedef struct {
    const char *kind; /* "portrait" | "clothing" | "background" */
    const char *name; /* file name shown in messages; NULL = none */
    const void *data;
    size_t len; /* 1..HSQ_MAX_FRAME_BYTES */
} hsq_client_input;

typedef struct {
    const char *user;   /* required, 1..HSQ_MAX_USER_LEN bytes */
    const char *key;    /* idempotency key; NULL = none */
    hsq_prio prio;      /* HSQ_PRIO_NORMAL when unsure */
    const char *prompt; /* NULL = none */
    size_t n_inputs;    /* 1..HSQ_MAX_INPUTS */
    const hsq_client_input *inputs;
    size_t n_outputs;                /* 1..HSQ_MAX_OUTPUTS */
    const hsq_wire_outspec *outputs; /* width, height, format, quality (0 = default) */
    const hsq_wire_settings *settings; /* backgrounds, styles, dpi; NULL = defaults */
    uint32_t keep_uploads_s; /* shorter retention for the photos, s after the end; 0 = policy */
    uint32_t keep_outputs_s; /* shorter retention for the outputs; 0 = policy */
} hsq_client_job;

/* Submit a job. On success *out holds the task id, its state and whether it
 * was created (0: an earlier submit with the same user and key returned its
 * task). No views.
 * Errors: HSQ_EINVAL (argument outside the limits), HSQ_EQUEUEFULL,
 * HSQ_EBADREQ, HSQ_ETOOLARGE, HSQ_EUNAVAIL, HSQ_ETIMEOUT, HSQ_EFORBIDDEN,
 * HSQ_EDISKFULL, HSQ_EINTERNAL ... (see the top of this file). */
int hsq_client_submit(hsq_client *c, const hsq_client_job *job, hsq_rep_submit *out);

/* ---- one task ---- */

/* Fill *out with the task's public view. `user` (NULL = any) must own the
 * task when given, otherwise the daemon answers HSQ_ENOTFOUND. The views in
 * *out (user, key, stage, err_msg, outputs[].key) are valid until the next
 * call on c.
 * Errors: HSQ_ENOTFOUND, HSQ_EINVAL, HSQ_EUNAVAIL, HSQ_ETIMEOUT, ... */
int hsq_client_status(hsq_client *c, uint64_t task, const char *user, hsq_wire_task *out);

/* Block in the daemon until the task's state differs from `since`
 * (HSQ_STATE_NONE: until the task is terminal) or wait_ms elapses
 * (0..HSQ_MAX_WAIT_MS; longer waits are a loop of calls). *out is the task
 * then; *timed_out (may be NULL) is 1 when wait_ms elapsed first, which is a
 * success (return 0). The call's own timeout is wait_ms plus the client's.
 * Views as in hsq_client_status().
 * Errors: as hsq_client_status(). */
int hsq_client_wait(hsq_client *c, uint64_t task, const char *user, hsq_state since,
                    uint32_t wait_ms, hsq_wire_task *out, int *timed_out);

/* Cancel a task that has not finished; *out (may be NULL) is the task after
 * the cancel. Views as in hsq_client_status().
 * Errors: HSQ_ENOTFOUND, HSQ_ECONFLICT (already terminal), ... */
int hsq_client_cancel(hsq_client *c, uint64_t task, const char *user, hsq_wire_task *out);

/* Put a failed or cancelled task back in the queue (operators). *out (may be
 * NULL) is the task after the requeue. Views as in hsq_client_status().
 * Errors: HSQ_ENOTFOUND, HSQ_ECONFLICT, HSQ_EFORBIDDEN, ... */
int hsq_client_requeue(hsq_client *c, uint64_t task, const char *user, hsq_wire_task *out);

/* ---- result ---- */

/* A task's outputs. The object owns the reply frames (no copy is made):
 * `task` views and `data[i]` stay valid until hsq_client_res_free(), whatever
 * else happens to the client. data[i] is the bytes of task.outputs[i]; the
 * library checks that n == task.n_outputs and that each length matches
 * outputs[i].size. It does not hash: compare sha256 yourself if you need to. */
typedef struct {
    hsq_wire_task task;
    uint32_t n;
    hsq_bytes data[HSQ_MAX_OUTPUTS];
    void *priv_;
} hsq_client_res;

/* Fetch the outputs of a succeeded task. *out is set only on success and is
 * freed with hsq_client_res_free().
 * Errors: HSQ_ENOTFOUND, HSQ_ECONFLICT (not succeeded), HSQ_EBADREQ (the
 * reply's frames do not match its metadata), HSQ_EUNAVAIL, HSQ_ETIMEOUT, ... */
int hsq_client_result(hsq_client *c, uint64_t task, const char *user, hsq_client_res **out);

/* Free a result and set *r to NULL; NULL and *r == NULL are no-ops. */
void hsq_client_res_free(hsq_client_res **r);

/* ---- lists and counters ---- */

/* One page of a user's tasks, newest first. limit 0 = the daemon's default
 * (20), else 1..HSQ_MAX_LIST; before 0 = from the newest, else the `next` of
 * the previous page. out->tasks (n entries) and their views are valid until
 * the next call on c; out->next == 0 when there are no more pages.
 * Errors: HSQ_EINVAL, HSQ_EBADREQ, HSQ_EUNAVAIL, HSQ_ETIMEOUT, ... */
int hsq_client_list(hsq_client *c, const char *user, uint32_t limit, uint64_t before,
                    hsq_rep_list *out);

/* Queue and worker counters (no views).
 * Errors: HSQ_EFORBIDDEN, HSQ_EUNAVAIL, HSQ_ETIMEOUT, ... */
int hsq_client_stats(hsq_client *c, hsq_wire_stats *out);

/* ---- retention and privacy (operators) ----
 * On CURVE endpoints these need an operator key (else HSQ_EFORBIDDEN). */

/* Run the retention sweeper now over at most `limit` due index entries
 * (0 = the daemon's default, 100000; else 1..1000000). With dry_run, count
 * what would go and delete nothing. out->more is 1 when due entries remain:
 * call again. The call waits up to HSQ_CLIENT_SLOW_MS on top of the timeout
 * (a pass deletes files). No views.
 * Errors: HSQ_EINVAL, HSQ_EFORBIDDEN, HSQ_EDISKFULL, HSQ_EUNAVAIL, HSQ_ETIMEOUT, ... */
int hsq_client_purge(hsq_client *c, int dry_run, uint32_t limit, hsq_rep_purge *out);

/* Erase every task, file, index entry and idempotency key of `user`,
 * including queued and running tasks (their workers are told to abort). hsqd
 * answers after the erasure is complete: it first commits a ledger entry
 * (which finishes the erasure after a crash) and erases in a later loop turn,
 * so the call waits up to HSQ_CLIENT_SLOW_MS on top of the timeout.
 * Idempotent: erasing a user with nothing left returns a receipt of zeros.
 * out->subject (the keyed hash the audit log names, never the user id) is a
 * view valid until the next call on c.
 * Errors: HSQ_EINVAL, HSQ_EFORBIDDEN, HSQ_EDISKFULL or HSQ_EUNAVAIL (the
 * erasure will complete by itself; ask again), HSQ_ETIMEOUT, ... */
int hsq_client_erase(hsq_client *c, const char *user, hsq_rep_erase *out);

/* The same, waiting as long as the erasure takes (wait_s 0) or up to
 * wait_s seconds: the one request stays pending on the socket, and every
 * timeout + HSQ_CLIENT_SLOW_MS a stats round trip checks that hsqd is
 * still there (waiting, if given, is called then with the seconds so
 * far). Errors: as hsq_client_erase; HSQ_ETIMEOUT after wait_s (the
 * erasure still completes: hsqd's ledger holds it); HSQ_EUNAVAIL when hsqd
 * stops answering. */
int hsq_client_erase_wait(hsq_client *c, const char *user, uint32_t wait_s,
                          void (*waiting)(void *ud, uint64_t waited_s), void *ud,
                          hsq_rep_erase *out);

/* One exported task: its record, prompt and inputs (rep), and the bytes of
 * every image still stored. in_data[i] is inputs[i]'s bytes, out_data[i]
 * task.outputs[i]'s; an entry with ptr NULL was deleted by retention. The
 * library checks each length against the recorded size. The object owns the
 * reply: every view stays valid until hsq_client_export_free(). */
typedef struct {
    hsq_rep_export rep; /* has_task is 1; rep.next is the cursor for the next call */
    hsq_bytes in_data[HSQ_MAX_INPUTS];
    hsq_bytes out_data[HSQ_MAX_OUTPUTS];
    void *priv_;
} hsq_client_export;

/* Fetch the user's next task with id > after (0 = the first), one task per
 * call so memory stays bounded. *out is NULL when there are no more tasks,
 * else an object to free with hsq_client_export_free(); loop with
 * after = (*out)->rep.next while it is non-zero.
 * Errors: HSQ_EINVAL, HSQ_EFORBIDDEN, HSQ_EBADREQ (frames do not match the
 * metadata), HSQ_EUNAVAIL, HSQ_ETIMEOUT, ... */
int hsq_client_export_next(hsq_client *c, const char *user, uint64_t after,
                           hsq_client_export **out);

/* Free an export object and set *e to NULL; NULL and *e == NULL are no-ops. */
void hsq_client_export_free(hsq_client_export **e);

/* ---- credits (operators) ---- */

/* Add `grant` credits to user's balance (negative takes credits back, but
 * never below what unfinished tasks have reserved: HSQ_ECONFLICT), or with
 * grant 0 only read it. out gets the balance and reservation afterwards;
 * out->user is a view valid until the next call on c.
 * Errors: HSQ_EINVAL, HSQ_EFORBIDDEN, HSQ_ECONFLICT, HSQ_EUNAVAIL, HSQ_ETIMEOUT, ... */
int hsq_client_credits(hsq_client *c, const char *user, int64_t grant, hsq_rep_credits *out);

#ifdef __cplusplus
}
#endif

#endif
