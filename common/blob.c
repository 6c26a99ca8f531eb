/* blob.c - the blob store on a directory tree (see blob.h).
 *
 * DESIGN. Every path is resolved relative to one directory fd (rootfd) with the
 * *at() calls, after the key has passed hsq_blob_key_ok(); so no key can name
 * anything outside the root, and the root may be renamed or be relative without
 * affecting an open store.
 *
 * Durability of a new object needs three things on disk: its data, its entry in
 * its directory, and the entries of any directory created for it. Synchronous
 * puts fsync all three before returning. Deferred puts rename first and record
 * the key, its directory and the parents of created directories; flush fsyncs
 * them. Until the flush a crash may leave a deferred object empty or missing,
 * which is fine because nothing refers to it before the caller's commit.
 *
 * Several processes share one root, and deleting an object removes its emptied
 * directories, so a put may find the directory it just created gone (ENOENT).
 * Puts therefore retry directory creation a few times. Temp files keep the
 * directory non-empty, so once a temp file exists the directory stays.
 */
#include "common/blob.h"

#include "common/alloc.h"
#include "schemas/err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KEY_FILE ".blobkey"
#define TMP_PREFIX ".tmp."
#define TMP_PREFIX_LEN (sizeof(TMP_PREFIX) - 1)
/* Part of the object name kept in a temp name: ".tmp." + 200 + ".<pid>.<counter>"
 * stays under NAME_MAX (255) even for the longest key segment. */
#define TMP_NAME_KEEP 200
#define TMP_NAME_SIZE 256
#define PUT_TRIES 16

typedef struct {
    char **v;
    size_t n, cap;
} strvec;

struct hsq_blob {
    int rootfd;
    char *root;
    uint8_t key[crypto_generichash_KEYBYTES];
    strvec files; /* deferred: keys whose data is not yet fsynced */
    strvec dirs;  /* deferred: directories ("" = root) whose entries are not yet fsynced */
    size_t syncfs_min; /* flush with syncfs above this many entries; 0 = never */
};

/* Shared by every handle in the process, so two handles (two threads) never
 * pick the same temp name. */
static atomic_ulong tmp_counter;

static void strvec_push(strvec *s, const char *p, size_t len) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->v = hsq_xrealloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = hsq_xstrndup(p, len);
}

static void strvec_clear(strvec *s) {
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    s->n = 0;
}

static void strvec_free(strvec *s) {
    strvec_clear(s);
    free(s->v);
    s->v = NULL;
    s->cap = 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- keys ---- */

static int seg_char_ok(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

/* Every '/'-separated segment of s[0..len) is non-empty, made of allowed
 * characters and does not start with '.' (which also rules out "." and ".."). */
static int segments_ok(const char *s, size_t len) {
    size_t seg = 0;
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '/') {
            if (seg == 0)
                return 0;
            seg = 0;
            continue;
        }
        if (!seg_char_ok(c) || (seg == 0 && c == '.'))
            return 0;
        seg++;
    }
    return seg > 0;
}

int hsq_blob_key_ok(const char *key) {
    if (!key)
        return 0;
    size_t len = strnlen(key, HSQ_BLOB_KEY_MAX + 1);
    return len <= HSQ_BLOB_KEY_MAX && segments_ok(key, len);
}

/* A prefix is a well-formed key followed by '/'. */
static int prefix_ok(const char *p) {
    if (!p)
        return 0;
    size_t len = strnlen(p, HSQ_BLOB_KEY_MAX + 1);
    return len >= 2 && len <= HSQ_BLOB_KEY_MAX && p[len - 1] == '/' && segments_ok(p, len - 1);
}

/* Length of the directory part of path[0..len): up to the last '/', 0 for root. */
static size_t dir_len(const char *path, size_t len) {
    while (len > 0 && path[len - 1] != '/')
        len--;
    return len ? len - 1 : 0;
}

/* ---- small syscall helpers ---- */

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EIO; /* shorter than fstat said: truncated behind our back */
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* close() that reports deferred write errors (NFS); EINTR still closes on Linux. */
static int close_checked(int fd) {
    if (close(fd) < 0 && errno != EINTR)
        return -errno;
    return 0;
}

/* Open directory path[0..len) under the root ("" = the root itself). */
static int open_dir(const hsq_blob *b, const char *path, size_t len) {
    char p[HSQ_BLOB_KEY_MAX + 1];
    if (len == 0) {
        p[0] = '.';
        p[1] = '\0';
    } else {
        memcpy(p, path, len);
        p[len] = '\0';
    }
    int fd = openat(b->rootfd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* fsync directory path[0..len); one that vanished meanwhile needs nothing. */
static int fsync_dir(const hsq_blob *b, const char *path, size_t len) {
    int fd = open_dir(b, path, len);
    if (fd == -ENOENT)
        return 0;
    if (fd < 0)
        return fd;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

static void tmp_name(char out[TMP_NAME_SIZE], const char *name) {
    unsigned long n = atomic_fetch_add(&tmp_counter, 1);
    snprintf(out, TMP_NAME_SIZE, TMP_PREFIX "%.*s.%ld.%lu", TMP_NAME_KEEP, name, (long)getpid(), n);
}

/* mkdir -p of dir[0..len) under the root, mode 0700. For each directory created,
 * made[n] is set where n is the length of its parent's path (0 = root): that
 * parent's entries need an fsync. */
static int make_dirs(hsq_blob *b, const char *dir, size_t len, uint8_t *made) {
    char p[HSQ_BLOB_KEY_MAX + 1];
    size_t parent = 0;
    memcpy(p, dir, len);
    p[len] = '\0';
    for (size_t i = 1; i <= len; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char saved = p[i];
        p[i] = '\0';
        if (mkdirat(b->rootfd, p, 0700) == 0) {
            made[parent] = 1;
        } else if (errno != EEXIST) {
            return -errno;
        }
        p[i] = saved;
        parent = i;
    }
    return 0;
}

/* Remove the emptied directories of path[0..dlen) from the deepest up, stopping
 * at the first that cannot go (not empty, or gone). Returns the length of the
 * deepest directory left (0 = root): fsyncing it makes the removals durable. */
static size_t prune_dirs(hsq_blob *b, const char *path, size_t dlen) {
    char p[HSQ_BLOB_KEY_MAX + 1];
    memcpy(p, path, dlen);
    while (dlen > 0) {
        p[dlen] = '\0';
        if (unlinkat(b->rootfd, p, AT_REMOVEDIR) < 0)
            break;
        dlen = dir_len(p, dlen);
    }
    return dlen;
}

/* ---- open / close ---- */

static void mkdir_parents(const char *path) {
    char *p = hsq_xstrndup(path, strlen(path));
    /* Errors on the way are ignored: the final mkdir or open reports them. */
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        (void)mkdir(p, 0700);
        *s = '/';
    }
    (void)mkdir(p, 0700);
    free(p);
}

static int read_key(int fd, uint8_t key[crypto_generichash_KEYBYTES]) {
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode) || st.st_size != crypto_generichash_KEYBYTES)
        return HSQ_ECORRUPT;
    int r = read_all(fd, key, crypto_generichash_KEYBYTES);
    return r == -EIO ? HSQ_ECORRUPT : r;
}

/* Create the key file. Two processes opening a fresh root at once must end up
 * with one key, so the complete temp file is linked into place (link fails if
 * the other one won) rather than renamed over. */
static int create_key(int rootfd) {
    uint8_t key[crypto_generichash_KEYBYTES];
    char tmp[TMP_NAME_SIZE];
    int r;

    randombytes_buf(key, sizeof key);
    tmp_name(tmp, KEY_FILE);
    int fd = openat(rootfd, tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = -errno;
        goto out;
    }
    r = write_all(fd, key, sizeof key);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    int rc = close_checked(fd);
    if (r == 0)
        r = rc;
    if (r == 0 && linkat(rootfd, tmp, rootfd, KEY_FILE, 0) < 0) {
        if (errno == EEXIST)
            r = 0;
        else if (errno == EPERM || errno == EOPNOTSUPP || errno == ENOSYS)
            r = renameat(rootfd, tmp, rootfd, KEY_FILE) < 0 ? -errno : 0; /* no hard links */
        else
            r = -errno;
    }
    (void)unlinkat(rootfd, tmp, 0);
    if (r == 0 && fsync(rootfd) < 0)
        r = -errno;
out:
    sodium_memzero(key, sizeof key);
    return r;
}

static int load_key(int rootfd, uint8_t key[crypto_generichash_KEYBYTES]) {
    for (int tries = 0; tries < 2; tries++) {
        int fd = openat(rootfd, KEY_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            int r = read_key(fd, key);
            close(fd);
            return r;
        }
        if (errno != ENOENT)
            return -errno;
        int r = create_key(rootfd);
        if (r < 0)
            return r;
    }
    return HSQ_EINTERNAL; /* created, then gone again: someone is deleting it */
}

int hsq_blob_open(hsq_blob **out, const char *root) {
    *out = NULL;
    if (!root || !*root)
        return HSQ_EINVAL;
    if (sodium_init() < 0)
        return HSQ_EINTERNAL;

    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        mkdir_parents(root);
        fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (fd < 0)
        return -errno;

    hsq_blob *b = hsq_xcalloc(1, sizeof(*b));
    b->rootfd = fd;
    b->root = hsq_xstrndup(root, strlen(root));
    int r = load_key(fd, b->key);
    if (r < 0) {
        hsq_blob_close(&b);
        return r;
    }
    *out = b;
    return 0;
}

void hsq_blob_close(hsq_blob **bp) {
    hsq_blob *b = bp ? *bp : NULL;
    if (!b)
        return;
    (void)hsq_blob_flush(b);
    strvec_free(&b->files);
    strvec_free(&b->dirs);
    close(b->rootfd);
    sodium_memzero(b->key, sizeof b->key);
    free(b->root);
    free(b);
    *bp = NULL;
}

const char *hsq_blob_root(const hsq_blob *b) {
    return b->root;
}

void hsq_blob_user_prefix(const hsq_blob *b, const char *user, size_t len, char *out) {
    uint8_t h[(HSQ_BLOB_PREFIX_LEN - 3) / 2];
    crypto_generichash(h, sizeof h, (const unsigned char *)(len ? user : ""), len, b->key,
                       sizeof b->key);
    out[0] = 'u';
    out[1] = '/';
    hsq_hex(h, sizeof h, out + 2);
    out[HSQ_BLOB_PREFIX_LEN - 1] = '/';
    out[HSQ_BLOB_PREFIX_LEN] = '\0';
}

/* ---- put / flush ---- */

/* Create a new temp file for `name` in directory dir[0..dlen) under the
 * root, making the directories when missing (made[] as make_dirs). Returns
 * its descriptor, with the directory's in *dfd, or -errno. Retries cover a
 * concurrent delete pruning the directory (ENOENT) and a temp name left by
 * a crashed process that had our pid (EEXIST). */
static int create_tmp(hsq_blob *b, const char *dir, size_t dlen, const char *name, uint8_t *made,
                      char tmp[TMP_NAME_SIZE], int *dfd) {
    for (int tries = 0;; tries++) {
        *dfd = open_dir(b, dir, dlen);
        if (*dfd == -ENOENT && tries < PUT_TRIES) {
            int r = make_dirs(b, dir, dlen, made);
            if (r < 0 && (r != -ENOENT || tries >= PUT_TRIES))
                return r;
            continue;
        }
        if (*dfd < 0)
            return *dfd;
        tmp_name(tmp, name);
        int fd = openat(*dfd, tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (fd >= 0)
            return fd;
        int r = -errno;
        close(*dfd);
        *dfd = -1;
        if ((r != -ENOENT && r != -EEXIST) || tries >= PUT_TRIES)
            return r;
    }
}

/* Make key's new directory entry durable, with the entries of the
 * directories made for it (made[] as make_dirs): fsyncs now, or with
 * HSQ_BLOB_DEFER at the next flush (0 then). dfd: key's directory, open, or
 * -1 to open it. */
static int name_durable(hsq_blob *b, const char *key, size_t dlen, const uint8_t *made, int dfd,
                        int flags) {
    if (flags & HSQ_BLOB_DEFER) {
        strvec_push(&b->dirs, key, dlen);
        for (size_t i = 0; i < dlen; i++)
            if (made[i])
                strvec_push(&b->dirs, key, i);
        return 0;
    }
    int r = dfd < 0 ? fsync_dir(b, key, dlen) : fsync(dfd) < 0 ? -errno : 0;
    for (size_t i = 0; r == 0 && i < dlen; i++)
        if (made[i])
            r = fsync_dir(b, key, i);
    return r;
}

int hsq_blob_put(hsq_blob *b, const char *key, const void *data, size_t len, int flags) {
    if (!hsq_blob_key_ok(key) || (flags & ~HSQ_BLOB_DEFER) || (len && !data))
        return HSQ_EINVAL;
    size_t klen = strlen(key);
    size_t dlen = dir_len(key, klen);
    const char *name = key + (dlen ? dlen + 1 : 0);
    uint8_t made[HSQ_BLOB_KEY_MAX + 1] = {0};
    char tmp[TMP_NAME_SIZE];
    int dfd = -1, r = 0;
    int fd = create_tmp(b, key, dlen, name, made, tmp, &dfd);
    if (fd < 0)
        return fd;

    r = write_all(fd, data, len);
    if (r == 0 && !(flags & HSQ_BLOB_DEFER) && fsync(fd) < 0)
        r = -errno;
    int rc = close_checked(fd);
    if (r == 0)
        r = rc;
    if (r == 0 && renameat(dfd, tmp, dfd, name) < 0)
        r = -errno;
    if (r < 0) {
        (void)unlinkat(dfd, tmp, 0);
        goto out;
    }

    if (flags & HSQ_BLOB_DEFER)
        strvec_push(&b->files, key, klen);
    r = name_durable(b, key, dlen, made, dfd, flags);
    if (r < 0)
        (void)unlinkat(dfd, name, 0); /* not durable: keep the "nothing left" promise */
out:
    close(dfd);
    return r;
}

/* ---- staged puts ---- */

#define STAGE_NAME "stage"

/* "<prefix>.tmp.<...>": a well-formed directory, then one of our temp names. */
static int staged_ok(const char *s) {
    if (!s)
        return 0;
    size_t len = strnlen(s, HSQ_BLOB_STAGED_MAX);
    if (len >= HSQ_BLOB_STAGED_MAX)
        return 0;
    size_t d = dir_len(s, len);
    if (d == 0 || d >= HSQ_BLOB_KEY_MAX || !segments_ok(s, d))
        return 0;
    const char *base = s + d + 1;
    size_t blen = len - d - 1;
    if (blen <= TMP_PREFIX_LEN || memcmp(base, TMP_PREFIX, TMP_PREFIX_LEN) != 0)
        return 0;
    for (size_t i = 0; i < blen; i++)
        if (!seg_char_ok((unsigned char)base[i]))
            return 0;
    return 1;
}

int hsq_blob_stage(hsq_blob *b, const char *dir, const void *data, size_t len,
                   char out[HSQ_BLOB_STAGED_MAX]) {
    out[0] = '\0';
    if (!prefix_ok(dir) || (len && !data))
        return HSQ_EINVAL;
    size_t dlen = strlen(dir) - 1;
    char tmp[TMP_NAME_SIZE];
    uint8_t made[HSQ_BLOB_KEY_MAX + 1] = {0};
    int dfd = -1, r = 0;
    int fd = create_tmp(b, dir, dlen, STAGE_NAME, made, tmp, &dfd);
    if (fd < 0)
        return fd;
    /* A directory made here is synced here: the object placed in it later
     * syncs only its own directory. */
    for (size_t i = 0; r == 0 && i < dlen; i++)
        if (made[i])
            r = fsync_dir(b, dir, i);

    if (r == 0)
        r = write_all(fd, data, len);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    int rc = close_checked(fd);
    if (r == 0)
        r = rc;
    if (r < 0)
        (void)unlinkat(dfd, tmp, 0);
    else
        snprintf(out, HSQ_BLOB_STAGED_MAX, "%s%s", dir, tmp);
    close(dfd);
    return r;
}

int hsq_blob_place(hsq_blob *b, const char *staged, const char *key, int flags) {
    if (!staged_ok(staged) || !hsq_blob_key_ok(key) || (flags & ~HSQ_BLOB_DEFER))
        return HSQ_EINVAL;
    size_t klen = strlen(key);
    size_t dlen = dir_len(key, klen);
    uint8_t made[HSQ_BLOB_KEY_MAX + 1] = {0};
    int r;

    /* Retries cover a concurrent delete pruning the key's directories
     * between their mkdir and the rename. */
    for (int tries = 0;; tries++) {
        r = dlen ? make_dirs(b, key, dlen, made) : 0;
        if (r == 0 && renameat(b->rootfd, staged, b->rootfd, key) == 0)
            break;
        if (r == 0)
            r = -errno;
        if (r == -ENOENT && tries < PUT_TRIES &&
            faccessat(b->rootfd, staged, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
            continue;
        /* The staged file itself is gone (a prefix delete took it), or
         * worse: leave no directory made for nothing. */
        (void)prune_dirs(b, key, dlen);
        return r;
    }

    r = name_durable(b, key, dlen, made, -1, flags);
    if (r < 0)
        (void)unlinkat(b->rootfd, key, 0); /* not durable: keep put's "nothing left" promise */
    return r;
}

int hsq_blob_unstage(hsq_blob *b, const char *staged) {
    if (!staged_ok(staged))
        return HSQ_EINVAL;
    if (unlinkat(b->rootfd, staged, 0) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

void hsq_blob_set_syncfs(hsq_blob *b, size_t min) {
    b->syncfs_min = min;
}

/* Sort and drop repeats: a key or directory written many times is synced once. */
static void strvec_uniq(strvec *s) {
    if (s->n < 2)
        return;
    qsort(s->v, s->n, sizeof(char *), cmp_str);
    size_t k = 1;
    for (size_t i = 1; i < s->n; i++) {
        if (strcmp(s->v[i], s->v[k - 1]) == 0)
            free(s->v[i]);
        else
            s->v[k++] = s->v[i];
    }
    s->n = k;
}

int hsq_blob_flush(hsq_blob *b) {
    int r = 0;

    strvec_uniq(&b->files);
    strvec_uniq(&b->dirs);
    if (b->syncfs_min && b->files.n + b->dirs.n > b->syncfs_min) {
        if (syncfs(b->rootfd) < 0)
            r = -errno;
        strvec_clear(&b->files);
        strvec_clear(&b->dirs);
        return r;
    }
    for (size_t i = 0; i < b->files.n; i++) {
        int fd = openat(b->rootfd, b->files.v[i], O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            if (errno != ENOENT && r == 0) /* deleted since: nothing to make durable */
                r = -errno;
            continue;
        }
        if (fsync(fd) < 0 && r == 0)
            r = -errno;
        close(fd);
    }
    for (size_t i = 0; i < b->dirs.n; i++) {
        int rd = fsync_dir(b, b->dirs.v[i], strlen(b->dirs.v[i]));
        if (rd < 0 && r == 0)
            r = rd;
    }
    strvec_clear(&b->files);
    strvec_clear(&b->dirs);
    return r;
}

/* ---- get / size ---- */

int hsq_blob_get(hsq_blob *b, const char *key, size_t max, uint8_t **data, size_t *len) {
    struct stat st;
    uint8_t *buf = NULL;
    int r;

    *data = NULL;
    *len = 0;
    if (!hsq_blob_key_ok(key))
        return HSQ_EINVAL;
    /* O_NONBLOCK: a FIFO planted in the tree must not hang the reader. */
    int fd = openat(b->rootfd, key, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        r = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = S_ISDIR(st.st_mode) ? -EISDIR : HSQ_EINVAL;
        goto out;
    }
    if ((uint64_t)st.st_size > max) {
        r = HSQ_ETOOLARGE;
        goto out;
    }
    buf = hsq_trymalloc((size_t)st.st_size);
    if (!buf) {
        r = HSQ_ENOMEM;
        goto out;
    }
    r = read_all(fd, buf, (size_t)st.st_size);
    if (r < 0) {
        free(buf);
        goto out;
    }
    *data = buf;
    *len = (size_t)st.st_size;
out:
    close(fd);
    return r;
}

int hsq_blob_size(hsq_blob *b, const char *key, uint64_t *size) {
    struct stat st;
    *size = 0;
    if (!hsq_blob_key_ok(key))
        return HSQ_EINVAL;
    if (fstatat(b->rootfd, key, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return S_ISDIR(st.st_mode) ? -EISDIR : HSQ_EINVAL;
    *size = (uint64_t)st.st_size;
    return 0;
}

/* ---- delete ---- */

/* The deletion's directory sync: now, or (deferred) at the next flush. */
static int sync_removal(hsq_blob *b, const char *path, size_t keep, int flags) {
    if (flags & HSQ_BLOB_DEFER) {
        strvec_push(&b->dirs, path, keep);
        return 0;
    }
    return fsync_dir(b, path, keep);
}

int hsq_blob_delete_flags(hsq_blob *b, const char *key, int flags) {
    if (!hsq_blob_key_ok(key) || (flags & ~HSQ_BLOB_DEFER))
        return HSQ_EINVAL;
    size_t dlen = dir_len(key, strlen(key));
    if (unlinkat(b->rootfd, key, 0) < 0) {
        if (errno != ENOENT)
            return -errno;
        (void)prune_dirs(b, key, dlen); /* a crash may have left them empty */
        return 0;
    }
    /* fsync, so a crash cannot resurrect an object whose record is gone. */
    return sync_removal(b, key, prune_dirs(b, key, dlen), flags);
}

int hsq_blob_delete(hsq_blob *b, const char *key) {
    return hsq_blob_delete_flags(b, key, 0);
}

/* Remove everything below the directory dfd (consumed), adding the sizes of the
 * removed files to *freed. Entries removed while reading may make readdir skip
 * others on some filesystems, so passes repeat until one removes nothing. */
static int remove_tree(int dfd, uint64_t *freed) {
    DIR *d = fdopendir(dfd);
    if (!d) {
        int r = -errno;
        close(dfd);
        return r;
    }
    int r = 0, removed;
    do {
        removed = 0;
        rewinddir(d);
        for (;;) {
            struct stat st;
            errno = 0;
            struct dirent *e = readdir(d);
            if (!e) {
                if (errno)
                    r = -errno;
                break;
            }
            const char *n = e->d_name;
            if (n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0')))
                continue;
            if (fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                    continue;
                r = -errno;
                break;
            }
            if (S_ISDIR(st.st_mode)) {
                int cfd = openat(dirfd(d), n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (cfd < 0) {
                    if (errno == ENOENT)
                        continue;
                    r = -errno;
                    break;
                }
                r = remove_tree(cfd, freed);
                if (r < 0)
                    break;
                if (unlinkat(dirfd(d), n, AT_REMOVEDIR) < 0) {
                    /* ENOTEMPTY: a concurrent put, which is a later write */
                    if (errno != ENOENT && errno != ENOTEMPTY && errno != EEXIST) {
                        r = -errno;
                        break;
                    }
                    continue;
                }
            } else {
                if (unlinkat(dirfd(d), n, 0) < 0) {
                    if (errno == ENOENT)
                        continue;
                    r = -errno;
                    break;
                }
                if (S_ISREG(st.st_mode))
                    *freed += (uint64_t)st.st_size;
            }
            removed++;
        }
    } while (r == 0 && removed > 0);
    closedir(d);
    return r;
}

int hsq_blob_delete_prefix_flags(hsq_blob *b, const char *prefix, uint64_t *bytes, int flags) {
    uint64_t freed = 0;
    if (bytes)
        *bytes = 0;
    if (!prefix_ok(prefix) || (flags & ~HSQ_BLOB_DEFER))
        return HSQ_EINVAL;
    size_t plen = strlen(prefix) - 1;
    int fd = open_dir(b, prefix, plen);
    if (fd == -ENOENT)
        return 0;
    if (fd < 0)
        return fd;
    int r = remove_tree(fd, &freed);
    if (bytes)
        *bytes = freed;
    if (r < 0)
        return r;
    return sync_removal(b, prefix, prune_dirs(b, prefix, plen), flags);
}

int hsq_blob_delete_prefix(hsq_blob *b, const char *prefix, uint64_t *bytes) {
    return hsq_blob_delete_prefix_flags(b, prefix, bytes, 0);
}

/* ---- walk / clean ---- */

typedef struct {
    int (*fn)(const char *key, uint64_t size, void *ud);
    void *ud;
    int clean;        /* remove stale temp files (and list objects to fn, if any) */
    time_t cutoff;    /* clean: temp files last modified before this are stale */
    uint64_t removed; /* clean: count */
    char path[HSQ_BLOB_KEY_MAX + 1];
} walker;

/* Open a directory to list it without touching its atime: reading every
 * directory would otherwise dirty every inode (relatime updates an atime
 * older than a day), and the writeback of a whole tree's inodes lands on
 * the disk that hsqd's commits wait for. O_NOATIME needs the owner (or
 * CAP_FOWNER); another user's directory is opened plainly. */
static int open_walk_dir(int dirfd, const char *name) {
    int fl = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    int fd = openat(dirfd, name, fl | O_NOATIME);
    if (fd < 0 && errno == EPERM)
        fd = openat(dirfd, name, fl);
    return fd < 0 ? -errno : fd;
}

/* Visit directory dfd (consumed), whose path under the root is w->path[0..plen). */
static int walk_dir(walker *w, int dfd, size_t plen) {
    DIR *d = fdopendir(dfd);
    if (!d) {
        int r = -errno;
        close(dfd);
        return r;
    }
    int r = 0;
    for (;;) {
        struct stat st;
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno)
                r = -errno;
            break;
        }
        const char *n = e->d_name;
        if (n[0] == '.') {
            /* Never a key segment: ".", "..", KEY_FILE, temp files. */
            if (!w->clean || strncmp(n, TMP_PREFIX, TMP_PREFIX_LEN) != 0)
                continue;
            if (fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
                st.st_mtime >= w->cutoff)
                continue;
            if (unlinkat(dirfd(d), n, 0) == 0)
                w->removed++;
            else if (errno != ENOENT) {
                r = -errno;
                break;
            }
            continue;
        }
        size_t nlen = strlen(n);
        size_t klen = plen + (plen ? 1 : 0) + nlen;
        if (klen > HSQ_BLOB_KEY_MAX || !segments_ok(n, nlen))
            continue; /* not something a put could have written */
        if (fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno == ENOENT)
                continue;
            r = -errno;
            break;
        }
        if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
            continue;
        if (plen)
            w->path[plen] = '/';
        memcpy(w->path + klen - nlen, n, nlen + 1);
        if (S_ISDIR(st.st_mode)) {
            int cfd = open_walk_dir(dirfd(d), n);
            if (cfd < 0) {
                if (cfd == -ENOENT)
                    continue;
                r = cfd;
                break;
            }
            r = walk_dir(w, cfd, klen);
        } else if (w->fn) {
            r = w->fn(w->path, (uint64_t)st.st_size, w->ud);
        }
        w->path[plen] = '\0';
        if (r != 0)
            break;
    }
    closedir(d);
    return r;
}

static int walk_root(hsq_blob *b, walker *w) {
    int fd = open_walk_dir(b->rootfd, ".");
    if (fd < 0)
        return fd;
    w->path[0] = '\0';
    return walk_dir(w, fd, 0);
}

int hsq_blob_walk(hsq_blob *b, int (*fn)(const char *key, uint64_t size, void *ud), void *ud) {
    walker w = {.fn = fn, .ud = ud};
    return walk_root(b, &w);
}

int hsq_blob_clean_tmp(hsq_blob *b, uint64_t *removed) {
    return hsq_blob_walk_clean(b, NULL, NULL, removed);
}

int hsq_blob_walk_clean(hsq_blob *b, int (*fn)(const char *key, uint64_t size, void *ud), void *ud,
                        uint64_t *removed) {
    walker w = {.fn = fn, .ud = ud, .clean = 1, .cutoff = time(NULL) - HSQ_BLOB_TMP_STALE_S};
    int r = walk_root(b, &w);
    if (removed)
        *removed = w.removed;
    return r;
}

/* ---- hashing ---- */

void hsq_sha256(const void *data, size_t len, uint8_t out[32]) {
    /* sodium_init() is idempotent and cheap once done. It fails only when the
     * system has no random source, where libsodium itself aborts on first use. */
    if (sodium_init() < 0)
        abort();
    crypto_hash_sha256(out, (const unsigned char *)(len ? data : ""), len);
}

void hsq_hex(const uint8_t *in, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}
