/* fileio.h - whole positional reads and writes: loop over short transfers
 * and EINTR. For the on-disk formats written in place (daemon/journal.c,
 * the store's checkpoint file); common/blob.c streams whole files instead. */
#ifndef HSQ_COMMON_FILEIO_H
#define HSQ_COMMON_FILEIO_H

#include <stddef.h>
#include <stdint.h>

/* Read n bytes at off. Errors: -errno; -EIO when the file ends first. */
int hsq_pread_all(int fd, void *p, size_t n, uint64_t off);

/* Write n bytes at off. Errors: -errno; -EIO when a write writes nothing. */
int hsq_pwrite_all(int fd, const void *p, size_t n, uint64_t off);

#endif
