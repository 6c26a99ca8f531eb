/* blob.h - the blob store: image bytes on a filesystem tree.
 *
 * Keys are relative paths made of [A-Za-z0-9._-] segments joined by '/', at
 * most HSQ_BLOB_KEY_MAX bytes, never starting with '/' or '.', never holding
 * "..": anything else is HSQ_EINVAL, so a key can never escape the root.
 * A user's objects live under the prefix "u/<hex>/" where <hex> is a keyed
 * BLAKE2b hash (libsodium crypto_generichash) of the user id; the 32-byte key
 * is kept in <root>/.blobkey (0600), created on first open. Paths therefore
 * leak no user id, and erasing a user is a prefix delete.
 *
 * Writes are atomic: a temp file in the same directory, fsync, rename, fsync
 * of the directory. With HSQ_BLOB_DEFER the fsyncs are postponed until
 * hsq_blob_flush(), so a caller can group many writes under one durability
 * point (hsqd flushes before its LMDB commit). Readers never see a partial
 * object. Deleting a missing object is success (idempotent).
 *
 * One hsq_blob per thread; it is not thread-safe. Several processes may share
 * one root (hsqd writes inputs, workers write outputs).
 */
#ifndef HSQ_COMMON_BLOB_H
#define HSQ_COMMON_BLOB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HSQ_BLOB_KEY_MAX 255
#define HSQ_BLOB_PREFIX_LEN 35 /* "u/" + 32 hex + "/" */

enum { HSQ_BLOB_SYNC = 0, HSQ_BLOB_DEFER = 1 };

typedef struct hsq_blob hsq_blob;

/* Open (creating root and its key file if needed, mode 0700/0600).
 * Errors: -errno from mkdir/open/read, HSQ_ECORRUPT (key file of wrong size). */
int hsq_blob_open(hsq_blob **out, const char *root);

/* Flushes pending deferred writes (errors ignored: use hsq_blob_flush first to
 * see them), frees *b and sets it to NULL. */
void hsq_blob_close(hsq_blob **b);

const char *hsq_blob_root(const hsq_blob *b); /* valid until close */

/* Write "u/<32 hex>/" for user (len bytes) into out[HSQ_BLOB_PREFIX_LEN + 1]. */
void hsq_blob_user_prefix(const hsq_blob *b, const char *user, size_t len, char *out);

/* Store len bytes under key, replacing any object there.
 * Errors: HSQ_EINVAL (bad key), -ENOSPC, -EDQUOT, -EIO, other -errno. On error
 * nothing is left under key or in temp files. */
int hsq_blob_put(hsq_blob *b, const char *key, const void *data, size_t len, int flags);

/* Make every HSQ_BLOB_DEFER write since the last flush durable (fsync of each
 * file and of each directory touched). Errors: -errno of the first failure;
 * the pending list is cleared either way. */
int hsq_blob_flush(hsq_blob *b);

/* From now on, a flush with more than `min` distinct files and directories
 * to make durable does it with one syncfs(2) of the store's filesystem
 * instead of one fsync each: one cache flush of the device instead of
 * `min` or more, each of which waits behind every other write in flight
 * (LMDB's commits among them). Worth it for a thread whose flushes cover
 * many directories at once (the reaper's batches of deletions); it also
 * writes back whatever else is dirty on that filesystem, so the loop's own
 * handle keeps per-entry fsyncs. 0 (the default): never. */
void hsq_blob_set_syncfs(hsq_blob *b, size_t min);

/* The threshold for handles whose flushes cover many directories at once
 * (the reaper, the offline purge). */
#define HSQ_BLOB_SYNCFS_MIN 8

/* ---- staged puts: the bytes first, the key later ----
 *
 * A writer that cannot name an object yet stages its bytes: hsqd writes a
 * submit's large inputs off its loop before it assigns the task id their
 * keys hold. hsq_blob_stage writes and fsyncs a temp file in directory dir
 * (a prefix, created if missing, made durable when created) and returns its
 * name; hsq_blob_place renames it to its key; hsq_blob_unstage drops it. A
 * staged file is a temp file (".tmp.*"): no walk lists it, a prefix delete
 * removes it with its directory, and one whose owner died is removed as
 * stale after HSQ_BLOB_TMP_STALE_S like the temp file of any crashed put.
 * hsq_blob_stage and hsq_blob_unstage touch only the root's descriptor, so
 * several threads may share one handle for them (and for nothing else). */
#define HSQ_BLOB_STAGED_MAX 320 /* a staged name, with its NUL */

/* Errors: HSQ_EINVAL (bad dir), -ENOSPC, -EDQUOT, -EIO, other -errno; on
 * error nothing is left. */
int hsq_blob_stage(hsq_blob *b, const char *dir, const void *data, size_t len,
                   char out[HSQ_BLOB_STAGED_MAX]);

/* Rename a staged file to key (replacing any object there), creating the
 * key's directories. With HSQ_BLOB_DEFER the directory fsyncs that make
 * the name durable wait for the next hsq_blob_flush, as a deferred put's do
 * (the bytes are durable already). Errors: HSQ_EINVAL (bad key or staged
 * name), -ENOENT (the staged file is gone: a prefix delete took it), other
 * -errno. On error no directory made for the key is left; a staged file
 * that was there stays staged, except after a failed directory fsync
 * without HSQ_BLOB_DEFER, which removes the object (as put does). */
int hsq_blob_place(hsq_blob *b, const char *staged, const char *key, int flags);

/* Remove a staged file (missing is fine). Errors: HSQ_EINVAL, -errno. */
int hsq_blob_unstage(hsq_blob *b, const char *staged);

/* Read a whole object into a fresh malloc'd buffer (*data, caller frees).
 * Errors: -ENOENT, HSQ_EINVAL, HSQ_ETOOLARGE (object larger than max), -errno. */
int hsq_blob_get(hsq_blob *b, const char *key, size_t max, uint8_t **data, size_t *len);

/* Size of an object. Errors: -ENOENT, HSQ_EINVAL, -errno. */
int hsq_blob_size(hsq_blob *b, const char *key, uint64_t *size);

/* Delete one object (missing is fine). Errors: HSQ_EINVAL, -errno. */
int hsq_blob_delete(hsq_blob *b, const char *key);

/* Delete every object under prefix (a key ending in '/'), and the emptied
 * directories. Missing is fine. *bytes (optional) gets the bytes freed.
 * Errors: HSQ_EINVAL, -errno. */
int hsq_blob_delete_prefix(hsq_blob *b, const char *prefix, uint64_t *bytes);

/* hsq_blob_delete and hsq_blob_delete_prefix with flags: HSQ_BLOB_DEFER
 * leaves the directory fsync that makes the removal durable to the next
 * hsq_blob_flush, so one flush covers many deletions (a directory shared by
 * several is synced once). Until that flush returns 0, a crash may bring the
 * object back. */
int hsq_blob_delete_flags(hsq_blob *b, const char *key, int flags);
int hsq_blob_delete_prefix_flags(hsq_blob *b, const char *prefix, uint64_t *bytes, int flags);

/* Call fn for every object key in the store (for fsck); stops when fn returns
 * non-zero and returns that value. Temp files are not listed. */
int hsq_blob_walk(hsq_blob *b, int (*fn)(const char *key, uint64_t size, void *ud), void *ud);

/* Temp files older than this (seconds since their last write) are leftovers
 * of a crashed put; younger ones may belong to a put in progress elsewhere. */
#define HSQ_BLOB_TMP_STALE_S 3600

/* Remove temp files (".tmp.*") left by crashed puts anywhere in the store, if
 * last written more than HSQ_BLOB_TMP_STALE_S ago; safe while other processes
 * write. *removed (optional) gets how many. `hsq fsck --repair` runs it;
 * hsqd's janitor thread does the same within its own walk
 * (hsq_blob_walk_clean, janitor.h). Errors: -errno. */
int hsq_blob_clean_tmp(hsq_blob *b, uint64_t *removed);

/* Both in one pass over the tree: fn (may be NULL) for every object key, as
 * hsq_blob_walk, and stale temp files removed, as hsq_blob_clean_tmp.
 * Returns fn's non-zero value when it stops the walk. Errors: -errno. */
int hsq_blob_walk_clean(hsq_blob *b, int (*fn)(const char *key, uint64_t size, void *ud), void *ud,
                        uint64_t *removed);

/* 1 when key is well formed, else 0. */
int hsq_blob_key_ok(const char *key);

/* SHA-256 (libsodium). */
void hsq_sha256(const void *data, size_t len, uint8_t out[32]);

/* Lower-case hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void hsq_hex(const uint8_t *in, size_t n, char *out);

#ifdef __cplusplus
}
#endif

#endif
