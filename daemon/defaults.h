/* defaults.h - hsqd's retention defaults, shared with `hsq purge`.
 *
 * `hsq purge` falls back to running the retention pass itself when hsqd is
 * not running; it must then apply the same policy hsqd would, so the
 * defaults live here rather than only in hsqd's config table (main.c).
 * Every value is in milliseconds (or entries, for the batch). README.md
 * "Retention, erasure and export" documents them.
 */
#ifndef HSQ_DAEMON_DEFAULTS_H
#define HSQ_DAEMON_DEFAULTS_H

#define HSQ_DEF_DAY_MS (86400ull * 1000ull)

#define HSQ_DEF_RETENTION_OUTPUTS_MS (30 * HSQ_DEF_DAY_MS)    /* outputs + metadata after success */
#define HSQ_DEF_RETENTION_UPLOADS_MS (7 * HSQ_DEF_DAY_MS)     /* portraits after the task ends */
#define HSQ_DEF_RETENTION_FAILED_MS (1 * HSQ_DEF_DAY_MS)      /* inputs of failed/cancelled tasks */
#define HSQ_DEF_RETENTION_REFERENCES_MS (1 * HSQ_DEF_DAY_MS)  /* clothing/background after success */
#define HSQ_DEF_RETENTION_PENDING_MS (7 * HSQ_DEF_DAY_MS)     /* unfinished tasks are cancelled */
#define HSQ_DEF_RETENTION_TOMBSTONE_MS (365 * HSQ_DEF_DAY_MS) /* tombstones after outputs expire */
#define HSQ_DEF_RETENTION_AUDIT_MS (730 * HSQ_DEF_DAY_MS)     /* audit log lines */
#define HSQ_DEF_SWEEP_BATCH 64                                /* index entries per loop turn */

#endif
