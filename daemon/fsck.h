/* fsck.h - cross-check the LMDB records and the blob store.
 *
 * Finds blobs that no record references (orphans) and records that point
 * at blobs that are gone (dangling). A blob under a task that is currently
 * leased is not an orphan: its worker may be writing outputs right now. Nor
 * is one that a recorded intent is deleting (pending): everything under the
 * prefix of a user in the erasure ledger, and uploads of the ids hsqd's
 * start-up recovery set aside (queue.h); hsqd finishes both. With
 * repair, orphans are deleted and dangling references are dropped from their
 * records (an input is marked deleted, a missing output leaves the list), in
 * write transactions of bounded size. Safe to run while hsqd serves: LMDB
 * allows a second process, and the repair touches no queue state.
 */
#ifndef HSQ_DAEMON_FSCK_H
#define HSQ_DAEMON_FSCK_H

#include "common/blob.h"
#include "daemon/store.h"

#include <stdint.h>
#include <stdio.h>

typedef struct {
    uint64_t tasks;        /* task records checked */
    uint64_t blobs;        /* blob objects seen */
    uint64_t orphans;      /* blobs without a record */
    uint64_t orphan_bytes;
    uint64_t dangling;     /* references to missing blobs */
    uint64_t pending;      /* deletions in progress: missing blobs whose deletion is due
                              but not yet recorded (a sweep interrupted by a crash: the
                              next pass finishes it), and blobs an erasure or start-up
                              recovery is deleting */
    uint64_t recover_corrupt; /* 1: start-up recovery's record is unreadable. hsqd
                                 refuses to start on it, so no submit is in progress:
                                 every upload without a record (those the record stood
                                 for among them) is an orphan, and repair deletes the
                                 record after them */
    uint64_t repaired;     /* orphans deleted + references dropped (+ that record) */
    uint64_t tmp_removed;  /* stale temp files of crashed writes */
} hsq_fsck_report;

/* Run the check at wall-clock time now_ms (a missing blob whose retention
 * date has passed is pending, not dangling); with `log` non-NULL, one line
 * per finding is written there (keys only: they hold no user id).
 * Errors: HSQ_ESTORE, HSQ_ECORRUPT, -errno from the blob walk. */
int hsq_fsck_run(hsq_store *st, hsq_blob *blob, int repair, int64_t now_ms, FILE *log,
                 hsq_fsck_report *out);

#endif
