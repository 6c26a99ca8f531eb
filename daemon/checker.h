/* checker.h - a done's output checks (queue.h "checking") on libuv's thread
 * pool.
 *
 * The shell hands over each turn's checks as one batch; a pool thread stats
 * the outputs (hsq_checks_run) with the checker's own handle on the blob
 * store, and the loop gets the batch back through ready(ud), for the next
 * turn to collect and answer. Every call, and ready, runs on the loop
 * thread. Batches in flight when the loop stops are finished by libuv before
 * uv_loop_close can succeed: hsq_checker_free waits for none of them, so the
 * shell runs the loop until hsq_checker_busy is 0 first.
 */
#ifndef HSQ_DAEMON_CHECKER_H
#define HSQ_DAEMON_CHECKER_H

#include "daemon/queue.h"

#include <stddef.h>
#include <uv.h>

typedef struct hsq_checker hsq_checker;

/* Open a blob store handle on root. Errors: -errno, HSQ_ECORRUPT (the
 * store's key file). */
int hsq_checker_new(hsq_checker **out, uv_loop_t *loop, const char *blob_root,
                    void (*ready)(void *ud), void *ud);

/* Queue n checks (one pool request); takes ownership of the array, which
 * may be NULL when n is 0. */
void hsq_checker_submit(hsq_checker *k, hsq_check *v, size_t n);

/* The checks finished since the last call, in an array the caller owns
 * (hand it to hsq_queue_checked); NULL and *n = 0 when none. */
hsq_check *hsq_checker_collect(hsq_checker *k, size_t *n);

/* Batches submitted and not yet back. */
size_t hsq_checker_busy(const hsq_checker *k);

/* Free the checker and any checks not collected. Only when busy is 0.
 * NULL-safe. */
void hsq_checker_free(hsq_checker **k);

#endif
