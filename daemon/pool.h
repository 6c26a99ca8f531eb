/* pool.h - the queue core's file work on libuv's thread pool: a done's
 * output checks (queue.h "checking") and a submit's large inputs (queue.h
 * "staging").
 *
 * The shell hands over each turn's checks and each turn's stages as one
 * batch each; a pool thread runs the batch (hsq_checks_run, hsq_stages_run)
 * with the pool's own handle on the blob store, and the loop gets it back
 * through ready(ud), for the next turn to collect and answer. Every call,
 * and ready, runs on the loop thread. Batches in flight when the loop stops
 * are finished by libuv before uv_loop_close can succeed: hsq_pool_free
 * waits for none of them, so the shell runs the loop until hsq_pool_busy is
 * 0 first.
 */
#ifndef HSQ_DAEMON_POOL_H
#define HSQ_DAEMON_POOL_H

#include "daemon/queue.h"

#include <stddef.h>
#include <uv.h>

typedef struct hsq_pool hsq_pool;

/* Open a blob store handle on root. Errors: -errno, HSQ_ECORRUPT (the
 * store's key file). */
int hsq_pool_new(hsq_pool **out, uv_loop_t *loop, const char *blob_root, void (*ready)(void *ud),
                 void *ud);

/* Queue n checks as one pool request, or n stages as one request each
 * (their files are written in parallel); takes ownership of the array,
 * which may be NULL when n is 0. */
void hsq_pool_check(hsq_pool *p, hsq_check *v, size_t n);
void hsq_pool_stage(hsq_pool *p, hsq_stage *v, size_t n);

/* The checks (stages, at most max of them, oldest first) finished since
 * the last call, in an array the caller owns (hand it to
 * hsq_queue_checked, hsq_queue_staged); NULL and *n = 0 when none. */
hsq_check *hsq_pool_checked(hsq_pool *p, size_t *n);
hsq_stage *hsq_pool_staged(hsq_pool *p, size_t max, size_t *n);

/* Stages finished and not collected yet. */
size_t hsq_pool_staged_left(const hsq_pool *p);

/* Batches submitted and not yet back. */
size_t hsq_pool_busy(const hsq_pool *p);

/* Free the pool, any checks not collected, and any stages not collected
 * with their staged files. Only when busy is 0. NULL-safe. */
void hsq_pool_free(hsq_pool **p);

#endif
