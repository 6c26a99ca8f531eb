/* journal.h - an append-only redo journal in one preallocated file.
 *
 * What it is for. An LMDB commit writes every page a turn touched, scattered
 * over the file, and syncs twice; on the 2-core bench machine that shape has
 * a p99 of 10-12 ms at 1,000 commits/s, while one small write through an
 * O_DSYNC descriptor into blocks that already exist has a p99 near 1 ms
 * (docs/bench.md, "The journal"). A journal lets an acknowledgement wait for
 * the small write only, with the B-tree pages checkpointed later.
 *
 * Layout. The file is zero-filled to its full size when it is created, so an
 * append never allocates blocks or changes the file's size, and the sync that
 * O_DSYNC implies is a data-only one. Records follow each other from offset 0:
 *
 *   u32 magic "HSQJ" | u32 payload length | u64 lsn | u32 crc32 | u32 zero
 *   | payload
 *
 * (little-endian; the CRC covers the length, the lsn and the payload). Each
 * record's lsn is the one before plus one. The valid records are the chain
 * from offset 0 that keeps that rule with good CRCs; the first record that
 * breaks it (zeros, a torn write, an older record left behind by a rewind)
 * ends the journal.
 *
 * Use. Open, then replay once with the lsn the caller's durable state already
 * holds (its checkpoint), then append; after a checkpoint that holds every
 * lsn so far, rewind to start writing from offset 0 again. One thread at a
 * time; nothing here is shared between processes.
 */
#ifndef HSQ_DAEMON_JOURNAL_H
#define HSQ_DAEMON_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct hsq_journal hsq_journal;

#define HSQ_JOURNAL_HEADER 24u   /* bytes before each payload */
#define HSQ_JOURNAL_MAX_PARTS 15 /* iovec parts one append takes */
#define HSQ_JOURNAL_MAX_RECORD (64u << 20)

/* Open PATH, creating it, or growing it to `size` bytes (rounded up to 4 KiB)
 * with zeros written and synced, directory entry included. An existing file
 * larger than `size` keeps its size. On success *out owns the handle (free
 * with hsq_journal_close). Errors: -errno from open/write/fsync, HSQ_EINVAL
 * for a size under 64 KiB. */
int hsq_journal_open(hsq_journal **out, const char *path, uint64_t size);

/* Close and null *j; NULL and a NULL *j are fine. */
void hsq_journal_close(hsq_journal **j);

/* Called once per record replayed, in lsn order; `p` is valid until the call
 * returns. A non-zero return stops the replay and is returned by it. */
typedef int (*hsq_journal_fn)(void *ud, uint64_t lsn, const void *p, size_t n);

/* Walk the chain and call fn for each record with lsn > after. Afterwards the
 * next append goes right after the chain's last record, with lsn one past the
 * larger of that record's and `after`. Must be called once before appending;
 * fn may be NULL (nothing to apply, only find the end).
 * Errors: HSQ_ECORRUPT when the first record past `after` is not after + 1
 * (records the caller was promised are missing), -errno from reads,
 * HSQ_ENOMEM, or fn's return. */
int hsq_journal_replay(hsq_journal *j, uint64_t after, hsq_journal_fn fn, void *ud);

/* The same walk without changing where appends go (after the replay): the
 * records past `after`, for a caller that must apply them again. */
int hsq_journal_scan(hsq_journal *j, uint64_t after, hsq_journal_fn fn, void *ud);

/* Append one record made of n parts (n <= HSQ_JOURNAL_MAX_PARTS) and return
 * once it is on the disk; *lsn gets its lsn. Errors: HSQ_EDISKFULL when the
 * record does not fit in the room left (checkpoint, rewind, append again),
 * HSQ_EINVAL for too many parts or a record over HSQ_JOURNAL_MAX_RECORD,
 * -errno from the write. On any error the record is not in the journal, the
 * tail has not moved and the lsn is not used. */
int hsq_journal_append(hsq_journal *j, const struct iovec *parts, int n, uint64_t *lsn);

/* The same, without waiting for the disk: the record becomes durable with
 * the next hsq_journal_append (which then syncs the whole file), and until
 * then a power cut may take it, and only it and later lazy ones: the chain
 * ends at the first record that did not reach the disk. */
int hsq_journal_append_lazy(hsq_journal *j, const struct iovec *parts, int n, uint64_t *lsn);

/* Start writing at offset 0 again; lsns go on increasing. Only after the
 * caller's durable state holds every lsn appended so far: a crash before the
 * next append replays the old chain, all of it at or below that state. */
void hsq_journal_rewind(hsq_journal *j);

/* Start writing at offset 0 again with the given next lsn: for a journal
 * kept in two files that take turns (store_lmdb.c), where the lsns go on
 * from the other file's. The same rule as hsq_journal_rewind. */
void hsq_journal_restart(hsq_journal *j, uint64_t next_lsn);

/* Take back the last append (its header is zeroed, durably, so the chain
 * ends before it; the tail and the lsn go back). Only right after an
 * append, for a change the caller then failed to make anywhere else.
 * Errors: -errno from the write; the record may then still replay. */
int hsq_journal_drop_last(hsq_journal *j);

/* Zero every byte a record may have reached since the open (or the last
 * wipe), sync, and start at offset 0: for records that must not outlive
 * what they describe (an erased user's). The lsn goes on. The caller must
 * not append meanwhile; another thread may call this while the owner leaves
 * j alone. Errors: -errno, HSQ_ENOMEM. */
int hsq_journal_wipe(hsq_journal *j);

/* The lsn of the record at offset 0, if it is whole (magic, size and CRC
 * good): which of two files holds the older records. Errors:
 * HSQ_ENOTFOUND (no record there), -errno, HSQ_ENOMEM. */
int hsq_journal_first_lsn(hsq_journal *j, uint64_t *lsn);

/* Bytes from offset 0 to the end of the last record, and the file's size. */
uint64_t hsq_journal_used(const hsq_journal *j);
uint64_t hsq_journal_size(const hsq_journal *j);

/* The lsn the next append will get. */
uint64_t hsq_journal_next_lsn(const hsq_journal *j);

#endif
