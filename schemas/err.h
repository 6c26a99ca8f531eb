/* err.h - the one error vocabulary of hsq.
 *
 * Every function that can fail returns int: 0 on success, negative on failure.
 * System errors pass through as -errno; project errors live in the reserved band
 * HSQ_ERR_BASE - 1 ... HSQ_ERR_BASE - 199 (-1001 ... -1199), so one code space
 * covers both and hsq_strerror() answers for either.
 *
 * The table below is the single source: the enum, the stable wire names that
 * travel to clients ("queue_full") and the default messages are generated from
 * it. Wire names never change once released; new codes are appended.
 */
#ifndef HSQ_SCHEMAS_ERR_H
#define HSQ_SCHEMAS_ERR_H

#ifdef __cplusplus
extern "C" {
#endif

#define HSQ_ERR_BASE (-1000)

/* XX(suffix, offset, wire name, default message) */
#define HSQ_ERR_MAP(XX)                                                                    \
    XX(BADREQ, 1, "bad_request", "malformed or invalid request")                           \
    XX(NOTFOUND, 2, "not_found", "no such task")                                           \
    XX(FORBIDDEN, 3, "forbidden", "operation not allowed for this peer")                   \
    XX(QUEUEFULL, 4, "queue_full", "queue is full, retry later")                           \
    XX(TOOLARGE, 5, "too_large", "message, field or image exceeds a limit")                \
    XX(CONFLICT, 6, "conflict", "request conflicts with the task's current state")        \
    XX(UNAVAIL, 7, "unavailable", "service is not accepting requests now")                 \
    XX(INTERNAL, 8, "internal", "internal error")                                          \
    XX(VERSION, 9, "bad_version", "unsupported protocol version")                          \
    XX(TIMEOUT, 10, "timeout", "timed out")                                                \
    XX(NOMEM, 11, "no_memory", "out of memory")                                            \
    XX(INVAL, 12, "invalid_argument", "invalid argument")                                  \
    XX(STALE, 13, "stale_lease", "lease is no longer held (expired, reassigned or cancelled)") \
    XX(CANCELLED, 14, "cancelled", "task was cancelled")                                   \
    XX(STORE, 15, "store_error", "storage error")                                          \
    XX(CORRUPT, 16, "corrupt", "stored data is corrupt")                                   \
    XX(IMGCORRUPT, 17, "image_corrupt", "image is corrupt or truncated")                   \
    XX(IMGTOOLARGE, 18, "image_too_large", "image dimensions or size exceed the limits")   \
    XX(IMGUNSUPP, 19, "image_unsupported", "image format is not supported")                \
    XX(NOFACE, 20, "no_face", "no face found in the photo")                                \
    XX(FACESMALL, 21, "face_too_small", "the face in the photo is too small")              \
    XX(CUDASTICKY, 22, "gpu_fatal", "GPU context is unusable; worker must restart")        \
    XX(RETRYABLE, 23, "worker_error", "worker failed; the task may be retried")            \
    XX(UNKNOWNOP, 24, "unknown_op", "unknown operation")                                   \
    XX(DISKFULL, 25, "disk_full", "storage is full")                                       \
    XX(LOST, 26, "lease_expired", "worker stopped renewing its lease")                       \
    XX(RATELIMITED, 27, "rate_limited", "too many submits; retry after the time given")      \
    XX(NOCREDITS, 28, "insufficient_credits", "not enough credits for the outputs asked for")

typedef enum {
#define HSQ_ERR_ENUM_(s, off, name, msg) HSQ_E##s = HSQ_ERR_BASE - (off),
    HSQ_ERR_MAP(HSQ_ERR_ENUM_)
#undef HSQ_ERR_ENUM_
    HSQ_ERR_LAST_ = HSQ_ERR_BASE - 199
} hsq_err;

/* Human-readable message for any code: project codes from the table, negative
 * errno values from strerror(). Never NULL; the string is static. */
const char *hsq_strerror(int code);

/* Stable wire name ("queue_full"). System errors map to "internal" except
 * -ENOSPC/-EDQUOT ("disk_full") and -ENOMEM ("no_memory"). Never NULL. */
const char *hsq_errname(int code);

/* Inverse of hsq_errname for project codes: 0 (not found) or the code. Used by
 * peers decoding an error reply. */
int hsq_err_from_name(const char *name, unsigned long len);

#ifdef __cplusplus
}
#endif

#endif
