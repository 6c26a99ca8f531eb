/* reaper.h - the sweeper's file deletions, on a thread of their own.
 *
 * The queue core hands the files of expired data over as hsq_reap entries
 * (queue.h "reaping"); the shell passes them here and gets them back with
 * rc and bytes filled in, for a later turn to update the records. The
 * thread has its own handle on the blob store. It deletes a batch (up to 64
 * entries) with the directory syncs deferred, then makes the batch durable
 * with one flush (each directory touched is fsynced once; on ext4 the first
 * fsync commits the journal for all of them), and only then reports the
 * batch: a record never changes for a deletion a crash could undo. After
 * each batch it rests as long as the batch took (at most 250 ms): deleting
 * files keeps the filesystem's journal busy, and the loop's LMDB commits
 * wait on the same disk.
 *
 * Thread safety: every call is made from the loop thread; wake(ud) is
 * called on the reaper's thread after each finished batch (uv_async_send is
 * the intended callback).
 */
#ifndef HSQ_DAEMON_REAPER_H
#define HSQ_DAEMON_REAPER_H

#include "daemon/queue.h"

#include <stddef.h>

typedef struct hsq_reaper hsq_reaper;

/* Open a blob store handle on root and start the thread.
 * Errors: -errno (open, pthread_create), HSQ_ECORRUPT (the store's key file). */
int hsq_reaper_start(hsq_reaper **out, const char *blob_root, void (*wake)(void *ud), void *ud);

/* Queue n entries for deletion; takes ownership of the array (which may be
 * NULL when n is 0). */
void hsq_reaper_submit(hsq_reaper *r, hsq_reap *v, size_t n);

/* The entries finished since the last call, in an array the caller owns
 * (hand it to hsq_queue_reaped); NULL and *n = 0 when none. */
hsq_reap *hsq_reaper_collect(hsq_reaper *r, size_t *n);

/* Finish the batch in progress, drop what was not started and what was not
 * collected (their index entries stay due: the next start redoes them), join
 * the thread and free everything. NULL-safe. */
void hsq_reaper_stop(hsq_reaper **r);

#endif
