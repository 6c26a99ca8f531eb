/* janitor.h - whole-tree walks of the blob store, on a thread of their own.
 *
 * Two jobs need every file of the blob store looked at, and a walk is
 * O(files): millions of outputs make it minutes, far too long to hold up
 * start-up (systemd's start timeout) or a loop turn.
 *
 *   recovery   right after start: uploads a crash left behind, i.e.
 *              input blobs of task ids in the ranges the core handed out
 *              (queue.h "start-up recovery"), and outputs under those ids.
 *              The core has already moved its next id past them, so no
 *              submit can write one of those keys while the walk deletes
 *              them. A second walk of the same ranges follows settle_ms
 *              later: a worker that held a lease whose commit the crash
 *              lost may still write outputs under its id until its next
 *              heartbeat is refused, and if it then dies before its `done`
 *              (which would have them deleted), nothing else would.
 *   temp files in the same walk and then every interval: temp files of puts
 *              that died (a worker killed while writing an output holds a
 *              user's image in one), once older than HSQ_BLOB_TMP_STALE_S.
 *
 * The thread has its own blob store handle and walks with hsq_recover_walk
 * (queue.h): matching uploads are deleted after the walk, each with its
 * directory sync, so the report means "gone". Recovery walks are reported to
 * the loop thread, which gives them to hsq_queue_recovered, until one
 * succeeds; a failed walk is retried a minute later. Stop interrupts a walk
 * between two files: the ranges stay recorded and the next start walks them
 * again.
 *
 * Thread safety: every call is made from the loop thread; wake(ud) is called
 * on the janitor's thread when the recovery walk has finished.
 */
#ifndef HSQ_DAEMON_JANITOR_H
#define HSQ_DAEMON_JANITOR_H

#include "daemon/queue.h"

#include <stddef.h>
#include <stdint.h>

typedef struct hsq_janitor hsq_janitor;

typedef struct {
    int rc;               /* 0, or why the walk failed (-errno) */
    hsq_recover_counts n; /* what it looked at and deleted (queue.h) */
    uint64_t ms;          /* how long it took */
    int final;            /* the last recovery walk, and it succeeded */
} hsq_janitor_report;

/* Open a blob store handle on root and start the thread, which walks at once
 * with the n ranges (copied; n may be 0: temp files only), walks them again
 * settle_ms after the first walk that succeeded (0: no second walk), then
 * every interval_s seconds for temp files (0: never again).
 * Errors: -errno (open, pthread_create), HSQ_ECORRUPT (the store's key file). */
int hsq_janitor_start(hsq_janitor **out, const char *blob_root, const hsq_id_range *r, size_t n,
                      uint64_t settle_ms, uint64_t interval_s, void (*wake)(void *ud), void *ud);

/* 1 when a recovery walk has ended since the last call, with its figures
 * in *out; else 0. rc says whether it succeeded: after a failure the next
 * walk, a minute later, reports again. final is set on the success of the
 * last one (the first walk with no ranges or no settle time, else the
 * second); none reports after it. */
int hsq_janitor_collect(hsq_janitor *j, hsq_janitor_report *out);

/* Every walk so far, for the metrics: how many finished, what they deleted
 * (uploads of the recovery ranges, stale temp files), and the last one's
 * duration. */
typedef struct {
    uint64_t walks;
    uint64_t uploads_removed, tmp_removed;
    uint64_t last_ms;
} hsq_janitor_totals;
void hsq_janitor_get_totals(hsq_janitor *j, hsq_janitor_totals *out);

/* Stop the walk in progress between two files, join the thread, free.
 * NULL-safe. */
void hsq_janitor_stop(hsq_janitor **j);

#endif
