/* journal.c - see journal.h for the layout and the rules. */
#include "daemon/journal.h"

#include "common/alloc.h"
#include "common/fileio.h"
#include "common/le.h"
#include "schemas/err.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define MAGIC 0x4a515348u /* "HSQJ" read as a little-endian u32 */
#define MIN_SIZE (64u << 10)
#define FILL_CHUNK (1u << 20)

struct hsq_journal {
    int fd;        /* reads, the zero fill */
    int sync_fd;   /* appends: O_DSYNC, so each pwritev returns once durable */
    int unsynced;  /* a lazy append since the last sync (hsq_journal_append_lazy) */
    uint64_t size; /* bytes, all of them allocated and written */
    uint64_t tail; /* where the next record goes */
    uint64_t next_lsn;
    uint64_t last_off; /* where the last append began (hsq_journal_drop_last) */
    uint64_t hwm;      /* past every byte a record may have left (hsq_journal_wipe) */
    int replayed;
};

/* zlib's crc32 takes a uInt length; payloads stay far below 4 GiB. */
static uint32_t crc_add(uint32_t crc, const void *p, size_t n) {
    return (uint32_t)crc32(crc, p, (uInt)n);
}

static int fsync_dir_of(const char *path) {
    char copy[PATH_MAX];
    if (strlen(path) >= sizeof copy)
        return -ENAMETOOLONG;
    strcpy(copy, path);
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    int rc = fsync(dfd) == 0 ? 0 : -errno;
    close(dfd);
    return rc;
}

/* Write zeros from `from` to `to` and sync them: blocks that exist and hold
 * data, so later O_DSYNC writes need no allocation and no size change. */
static int zero_fill(int fd, uint64_t from, uint64_t to) {
    uint8_t *zero = calloc(1, FILL_CHUNK);
    if (!zero)
        return HSQ_ENOMEM;
    int rc = 0;
    for (; rc == 0 && from < to; from += FILL_CHUNK)
        rc = hsq_pwrite_all(fd, zero, to - from < FILL_CHUNK ? (size_t)(to - from) : FILL_CHUNK,
                            from);
    free(zero);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    return rc;
}

int hsq_journal_open(hsq_journal **out, const char *path, uint64_t size) {
    *out = NULL;
    if (size < MIN_SIZE)
        return HSQ_EINVAL;
    size = (size + 4095) & ~(uint64_t)4095;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int rc = 0;
    struct stat st;
    if (fstat(fd, &st) != 0)
        rc = -errno;
    else if ((uint64_t)st.st_size < size)
        rc = zero_fill(fd, (uint64_t)st.st_size, size);
    else
        size = (uint64_t)st.st_size;
    if (rc == 0 && (uint64_t)st.st_size < size)
        rc = fsync_dir_of(path); /* a new file: its name must last too */
    int sfd = -1;
    if (rc == 0 && (sfd = open(path, O_WRONLY | O_DSYNC | O_CLOEXEC)) < 0)
        rc = -errno;
    if (rc != 0) {
        close(fd);
        return rc;
    }
    hsq_journal *j = hsq_xcalloc(1, sizeof *j);
    j->fd = fd;
    j->sync_fd = sfd;
    j->size = size;
    j->next_lsn = 1;
    j->last_off = UINT64_MAX;
    j->hwm = size; /* unknown: older records may lie anywhere */
    *out = j;
    return 0;
}

void hsq_journal_close(hsq_journal **jp) {
    if (!jp || !*jp)
        return;
    hsq_journal *j = *jp;
    close(j->sync_fd);
    close(j->fd);
    free(j);
    *jp = NULL;
}

/* The record at off, if it is whole: magic, a length that fits, and its
 * CRC; its payload is then in *buf (grown as needed). 0, HSQ_ENOTFOUND (not
 * a whole record: the chain ends there), -errno, HSQ_ENOMEM. */
static int record_at(hsq_journal *j, uint64_t off, uint8_t **buf, size_t *cap, uint32_t *len,
                     uint64_t *lsn) {
    uint8_t h[HSQ_JOURNAL_HEADER];
    if (j->size - off < HSQ_JOURNAL_HEADER)
        return HSQ_ENOTFOUND;
    int rc = hsq_pread_all(j->fd, h, sizeof h, off);
    if (rc != 0)
        return rc;
    *len = hsq_rd_le32(h + 4);
    *lsn = hsq_rd_le64(h + 8);
    if (hsq_rd_le32(h) != MAGIC || *len > HSQ_JOURNAL_MAX_RECORD ||
        *len > j->size - off - HSQ_JOURNAL_HEADER)
        return HSQ_ENOTFOUND;
    if (*len > *cap) {
        uint8_t *nb = realloc(*buf, *len);
        if (!nb)
            return HSQ_ENOMEM;
        *buf = nb;
        *cap = *len;
    }
    if (*len && (rc = hsq_pread_all(j->fd, *buf, *len, off + HSQ_JOURNAL_HEADER)) != 0)
        return rc;
    if (crc_add(crc_add(0, h + 4, 12), *buf, *len) != hsq_rd_le32(h + 16))
        return HSQ_ENOTFOUND; /* torn or never finished */
    return 0;
}

static int walk(hsq_journal *j, uint64_t after, hsq_journal_fn fn, void *ud, uint64_t *end,
                uint64_t *last, int *have_last);

int hsq_journal_scan(hsq_journal *j, uint64_t after, hsq_journal_fn fn, void *ud) {
    uint64_t end, last;
    int have_last;
    return walk(j, after, fn, ud, &end, &last, &have_last);
}

int hsq_journal_replay(hsq_journal *j, uint64_t after, hsq_journal_fn fn, void *ud) {
    assert(!j->replayed);
    uint64_t off, prev;
    int have_prev;
    int rc = walk(j, after, fn, ud, &off, &prev, &have_prev);
    if (rc != 0)
        return rc;
    j->tail = off;
    j->last_off = UINT64_MAX;
    j->next_lsn = (have_prev && prev > after ? prev : after) + 1;
    j->replayed = 1;
    return 0;
}

/* The chain from offset 0: fn for each record past `after`; *end, *last
 * and *have_last say where it ended and its last lsn. */
static int walk(hsq_journal *j, uint64_t after, hsq_journal_fn fn, void *ud, uint64_t *end,
                uint64_t *last, int *have_last) {
    uint8_t *buf = NULL;
    size_t cap = 0;
    uint64_t off = 0, prev = 0;
    int have_prev = 0, delivered = 0, rc = 0;
    for (;;) {
        uint32_t len;
        uint64_t lsn;
        if ((rc = record_at(j, off, &buf, &cap, &len, &lsn)) != 0) {
            if (rc == HSQ_ENOTFOUND)
                rc = 0; /* the chain ends here */
            break;
        }
        if (have_prev && lsn != prev + 1)
            break;
        if (lsn > after) {
            if (!delivered && lsn != after + 1) {
                rc = HSQ_ECORRUPT; /* the records after `after` are gone */
                break;
            }
            delivered = 1;
            if (fn && (rc = fn(ud, lsn, buf, len)) != 0)
                break;
        }
        prev = lsn;
        have_prev = 1;
        off += HSQ_JOURNAL_HEADER + len;
    }
    free(buf);
    *end = off;
    *last = prev;
    *have_last = have_prev;
    return rc;
}

static int append(hsq_journal *j, const struct iovec *parts, int n, uint64_t *lsn, int sync);

int hsq_journal_append(hsq_journal *j, const struct iovec *parts, int n, uint64_t *lsn) {
    return append(j, parts, n, lsn, 1);
}

int hsq_journal_append_lazy(hsq_journal *j, const struct iovec *parts, int n, uint64_t *lsn) {
    return append(j, parts, n, lsn, 0);
}

static int append(hsq_journal *j, const struct iovec *parts, int n, uint64_t *lsn, int sync) {
    assert(j->replayed);
    if (n < 0 || n > HSQ_JOURNAL_MAX_PARTS)
        return HSQ_EINVAL;
    uint64_t len = 0;
    for (int i = 0; i < n; i++)
        len += parts[i].iov_len;
    if (len > HSQ_JOURNAL_MAX_RECORD)
        return HSQ_EINVAL;
    if (HSQ_JOURNAL_HEADER + len > j->size - j->tail)
        return HSQ_EDISKFULL;

    uint8_t h[HSQ_JOURNAL_HEADER];
    hsq_le32(h, MAGIC);
    hsq_le32(h + 4, (uint32_t)len);
    hsq_le64(h + 8, j->next_lsn);
    uint32_t crc = crc_add(0, h + 4, 12);
    for (int i = 0; i < n; i++)
        crc = crc_add(crc, parts[i].iov_base, parts[i].iov_len);
    hsq_le32(h + 16, crc);
    hsq_le32(h + 20, 0);

    struct iovec v[HSQ_JOURNAL_MAX_PARTS + 1];
    v[0].iov_base = h;
    v[0].iov_len = sizeof h;
    memcpy(v + 1, parts, (size_t)n * sizeof *parts);
    int nv = n + 1;
    struct iovec *cur = v;
    uint64_t off = j->tail, left = HSQ_JOURNAL_HEADER + len;
    /* A synced append after lazy ones writes through the plain descriptor
     * and syncs the file: O_DSYNC would sync only its own range. */
    int fd = sync && !j->unsynced ? j->sync_fd : j->fd;
    while (left > 0) {
        ssize_t w = pwritev(fd, cur, nv, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        off += (uint64_t)w;
        left -= (uint64_t)w;
        /* A short write (rare on a file): skip what went out and go on. */
        size_t done = (size_t)w;
        while (nv > 0 && done >= cur->iov_len) {
            done -= cur->iov_len;
            cur++;
            nv--;
        }
        if (nv > 0 && done) {
            cur->iov_base = (uint8_t *)cur->iov_base + done;
            cur->iov_len -= done;
        }
    }
    if (sync && fd == j->fd && fdatasync(j->fd) != 0)
        return -errno; /* (the record may be there: the caller fails the change) */
    j->unsynced = !sync;
    j->last_off = j->tail;
    j->tail = off;
    if (j->tail > j->hwm)
        j->hwm = j->tail;
    *lsn = j->next_lsn++;
    return 0;
}

int hsq_journal_drop_last(hsq_journal *j) {
    assert(j->replayed && j->last_off != UINT64_MAX);
    uint8_t zero[HSQ_JOURNAL_HEADER];
    memset(zero, 0, sizeof zero);
    int rc = hsq_pwrite_all(j->sync_fd, zero, sizeof zero, j->last_off);
    if (rc != 0)
        return rc;
    j->tail = j->last_off;
    j->last_off = UINT64_MAX;
    j->next_lsn--;
    return 0;
}

void hsq_journal_rewind(hsq_journal *j) {
    assert(j->replayed);
    j->tail = 0;
    j->last_off = UINT64_MAX;
}

void hsq_journal_restart(hsq_journal *j, uint64_t next_lsn) {
    hsq_journal_rewind(j);
    j->next_lsn = next_lsn;
}

int hsq_journal_wipe(hsq_journal *j) {
    uint64_t end = j->hwm > j->tail ? j->hwm : j->tail;
    int rc = zero_fill(j->fd, 0, end);
    if (rc != 0)
        return rc;
    j->tail = 0;
    j->hwm = 0;
    j->last_off = UINT64_MAX;
    return 0;
}

int hsq_journal_first_lsn(hsq_journal *j, uint64_t *lsn) {
    uint8_t *buf = NULL;
    size_t cap = 0;
    uint32_t len;
    uint64_t first;
    int rc = record_at(j, 0, &buf, &cap, &len, &first);
    free(buf);
    if (rc == 0)
        *lsn = first;
    return rc;
}

uint64_t hsq_journal_used(const hsq_journal *j) {
    return j->tail;
}

uint64_t hsq_journal_size(const hsq_journal *j) {
    return j->size;
}

uint64_t hsq_journal_next_lsn(const hsq_journal *j) {
    return j->next_lsn;
}
