/* test_journal.c - the redo journal (daemon/journal.h) on a real file: what
 * comes back after a reopen, where the chain ends (zeros, a torn record, an
 * older record left behind by a rewind), a gap, a full journal; taking
 * back an append, restarting at an lsn, wiping. */
#include "daemon/journal.h"
#include "schemas/err.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64], path[128];

#define SIZE (64u << 10)

typedef struct {
    uint64_t lsn[256];
    char text[256][64]; /* the first 63 bytes */
    size_t len[256];
    int n;
} seen;

static int collect(void *ud, uint64_t lsn, const void *p, size_t n) {
    seen *s = ud;
    HSQ_ASSERT(s->n < 256);
    size_t keep = n < 64 ? n : 63;
    s->lsn[s->n] = lsn;
    s->len[s->n] = n;
    memcpy(s->text[s->n], p, keep);
    s->text[s->n][keep] = 0;
    s->n++;
    return 0;
}

static uint64_t add(hsq_journal *j, const char *text) {
    /* Two parts, as a turn's header and its body would be. */
    size_t half = strlen(text) / 2;
    struct iovec v[2] = {{(void *)text, half}, {(void *)(text + half), strlen(text) - half}};
    uint64_t lsn = 0;
    HSQ_OK(hsq_journal_append(j, v, 2, &lsn));
    return lsn;
}

static hsq_journal *reopen(hsq_journal **j, uint64_t after, seen *s) {
    hsq_journal_close(j);
    HSQ_OK(hsq_journal_open(j, path, SIZE));
    memset(s, 0, sizeof *s);
    HSQ_OK(hsq_journal_replay(*j, after, collect, s));
    return *j;
}

static void fresh(void) {
    unlink(path);
}

/* Records come back in order after a reopen, and only those past `after`. */
static void test_round_trip(void) {
    fresh();
    hsq_journal *j = NULL;
    seen s;
    reopen(&j, 0, &s);
    HSQ_ASSERT_EQ(s.n, 0);
    HSQ_ASSERT_U64_EQ(hsq_journal_size(j), SIZE);
    struct stat st;
    HSQ_OK(stat(path, &st));
    HSQ_ASSERT_EQ(st.st_size, SIZE); /* zero-filled to its size at once */
    HSQ_ASSERT_U64_EQ(add(j, "first submit"), 1);
    HSQ_ASSERT_U64_EQ(add(j, "second"), 2);
    HSQ_ASSERT_U64_EQ(add(j, ""), 3); /* an empty record is a record */
    HSQ_ASSERT_U64_EQ(add(j, "fourth one"), 4);
    uint64_t used = hsq_journal_used(j);
    HSQ_ASSERT_U64_EQ(used, 4 * HSQ_JOURNAL_HEADER + 12 + 6 + 0 + 10);

    reopen(&j, 0, &s);
    HSQ_ASSERT_EQ(s.n, 4);
    HSQ_ASSERT_STR_EQ(s.text[0], "first submit");
    HSQ_ASSERT_STR_EQ(s.text[2], "");
    HSQ_ASSERT_STR_EQ(s.text[3], "fourth one");
    HSQ_ASSERT_U64_EQ(s.lsn[3], 4);
    HSQ_ASSERT_U64_EQ(hsq_journal_used(j), used); /* appends go on after them */
    HSQ_ASSERT_U64_EQ(hsq_journal_next_lsn(j), 5);

    reopen(&j, 2, &s); /* a checkpoint holds 1 and 2 */
    HSQ_ASSERT_EQ(s.n, 2);
    HSQ_ASSERT_U64_EQ(s.lsn[0], 3);
    HSQ_ASSERT_STR_EQ(s.text[1], "fourth one");

    reopen(&j, 9, &s); /* a checkpoint past them all: nothing, lsns go on */
    HSQ_ASSERT_EQ(s.n, 0);
    HSQ_ASSERT_U64_EQ(hsq_journal_next_lsn(j), 10);
    hsq_journal_close(&j);
    HSQ_ASSERT(j == NULL);
    hsq_journal_close(&j);
}

/* A record whose bytes did not all reach the disk ends the chain, and the
 * next append takes its place. */
static void test_torn_tail(void) {
    fresh();
    hsq_journal *j = NULL;
    seen s;
    reopen(&j, 0, &s);
    add(j, "kept one");
    uint64_t at = hsq_journal_used(j);
    add(j, "torn record");
    hsq_journal_close(&j);

    int fd = open(path, O_WRONLY);
    HSQ_ASSERT(fd >= 0);
    HSQ_ASSERT_EQ(pwrite(fd, "X", 1, (off_t)(at + HSQ_JOURNAL_HEADER + 3)), 1);
    close(fd);

    reopen(&j, 0, &s);
    HSQ_ASSERT_EQ(s.n, 1);
    HSQ_ASSERT_STR_EQ(s.text[0], "kept one");
    HSQ_ASSERT_U64_EQ(hsq_journal_used(j), at);
    HSQ_ASSERT_U64_EQ(add(j, "retried"), 2);
    reopen(&j, 0, &s);
    HSQ_ASSERT_EQ(s.n, 2);
    HSQ_ASSERT_STR_EQ(s.text[1], "retried");

    /* A header with a bad length ends it too. */
    fd = open(path, O_WRONLY);
    uint8_t big[4] = {0xff, 0xff, 0xff, 0x7f};
    HSQ_ASSERT_EQ(pwrite(fd, big, 4, (off_t)(at + 4)), 4);
    close(fd);
    reopen(&j, 0, &s);
    HSQ_ASSERT_EQ(s.n, 1);
    hsq_journal_close(&j);
}

/* After a rewind the old records behind the new ones are older and end the
 * chain; a crash right after the rewind replays only records the checkpoint
 * holds. */
static void test_rewind(void) {
    fresh();
    hsq_journal *j = NULL;
    seen s;
    reopen(&j, 0, &s);
    for (int i = 0; i < 5; i++)
        add(j, "a record from before the checkpoint");
    hsq_journal_rewind(j); /* the caller checkpointed 1..5 */
    HSQ_ASSERT_U64_EQ(hsq_journal_used(j), 0);

    reopen(&j, 5, &s); /* crash before the next append */
    HSQ_ASSERT_EQ(s.n, 0);
    HSQ_ASSERT_U64_EQ(hsq_journal_next_lsn(j), 6);
    hsq_journal_rewind(j);

    /* Same sizes as the old ones, so record 3 starts right where 7 ends,
     * whole and with a good CRC: only its lsn says it is not part of the
     * chain. */
    HSQ_ASSERT_U64_EQ(add(j, "six: a record after the checkpoint!"), 6);
    HSQ_ASSERT_U64_EQ(add(j, "seven: a record after the checkpoin"), 7);
    uint64_t used = hsq_journal_used(j);
    reopen(&j, 5, &s);
    HSQ_ASSERT_EQ(s.n, 2);
    HSQ_ASSERT_STR_EQ(s.text[0], "six: a record after the checkpoint!");
    HSQ_ASSERT_STR_EQ(s.text[1], "seven: a record after the checkpoin");
    HSQ_ASSERT_U64_EQ(hsq_journal_used(j), used);
    HSQ_ASSERT_U64_EQ(hsq_journal_next_lsn(j), 8);
    hsq_journal_close(&j);
}

/* The checkpoint says 2, but the journal starts at 4: records 3 were
 * promised and are gone, which must not pass silently. */
static void test_gap(void) {
    fresh();
    hsq_journal *j = NULL;
    seen s;
    reopen(&j, 3, &s);
    add(j, "four");
    hsq_journal_close(&j);
    HSQ_OK(hsq_journal_open(&j, path, SIZE));
    memset(&s, 0, sizeof s);
    HSQ_ASSERT_EQ(hsq_journal_replay(j, 2, collect, &s), HSQ_ECORRUPT);
    HSQ_ASSERT_EQ(s.n, 0);
    hsq_journal_close(&j);
}

static int stop_at_two(void *ud, uint64_t lsn, const void *p, size_t n) {
    (void)p;
    (void)n;
    *(int *)ud += 1;
    return lsn == 2 ? -EIO : 0;
}

/* The callback's error stops the replay and comes back. */
static void test_callback_error(void) {
    fresh();
    hsq_journal *j = NULL;
    seen s;
    reopen(&j, 0, &s);
    add(j, "1");
    add(j, "2");
    add(j, "3");
    hsq_journal_close(&j);
    HSQ_OK(hsq_journal_open(&j, path, SIZE));
    int calls = 0;
    HSQ_ASSERT_EQ(hsq_journal_replay(j, 0, stop_at_two, &calls), -EIO);
    HSQ_ASSERT_EQ(calls, 2);
    hsq_journal_close(&j);
}

/* A full journal refuses the record without moving; after a rewind it fits. */
static void test_full(void) {
    fresh();
    hsq_journal *j = NULL;
    seen s;
    reopen(&j, 0, &s);
    static char blob[8000];
    memset(blob, 'b', sizeof blob);
    struct iovec v = {blob, sizeof blob};
    uint64_t lsn = 0;
    int n = 0;
    while (hsq_journal_append(j, &v, 1, &lsn) == 0)
        n++;
    HSQ_ASSERT_EQ(n, SIZE / (sizeof blob + HSQ_JOURNAL_HEADER));
    uint64_t used = hsq_journal_used(j);
    HSQ_ASSERT_EQ(hsq_journal_append(j, &v, 1, &lsn), HSQ_EDISKFULL);
    HSQ_ASSERT_U64_EQ(hsq_journal_used(j), used);
    HSQ_ASSERT_U64_EQ(hsq_journal_next_lsn(j), (uint64_t)n + 1);
    struct iovec many[HSQ_JOURNAL_MAX_PARTS + 1];
    for (int i = 0; i <= HSQ_JOURNAL_MAX_PARTS; i++)
        many[i] = (struct iovec){blob, 1};
    HSQ_ASSERT_EQ(hsq_journal_append(j, many, HSQ_JOURNAL_MAX_PARTS + 1, &lsn), HSQ_EINVAL);
    hsq_journal_rewind(j);
    HSQ_OK(hsq_journal_append(j, &v, 1, &lsn));
    HSQ_ASSERT_U64_EQ(lsn, (uint64_t)n + 1);
    reopen(&j, (uint64_t)n, &s);
    HSQ_ASSERT_EQ(s.n, 1);
    HSQ_ASSERT_EQ(s.len[0], sizeof blob);
    HSQ_ASSERT_EQ(s.text[0][62], 'b');
    hsq_journal_close(&j);

    /* Sizes: too small is refused; an existing larger file keeps its size. */
    HSQ_ASSERT_EQ(hsq_journal_open(&j, path, 4096), HSQ_EINVAL);
    HSQ_ASSERT(j == NULL);
    HSQ_OK(hsq_journal_open(&j, path, 2 * SIZE));
    HSQ_ASSERT_U64_EQ(hsq_journal_size(j), 2 * SIZE);
    hsq_journal_close(&j);
    HSQ_OK(hsq_journal_open(&j, path, SIZE));
    HSQ_ASSERT_U64_EQ(hsq_journal_size(j), 2 * SIZE);
    memset(&s, 0, sizeof s);
    HSQ_OK(hsq_journal_replay(j, (uint64_t)n, collect, &s));
    HSQ_ASSERT_EQ(s.n, 1); /* growing kept the records */
    hsq_journal_close(&j);
    HSQ_ASSERT_EQ(hsq_journal_open(&j, "/nonexistent-dir/journal", SIZE), -ENOENT);
}

static int file_has(const char *needle) {
    FILE *f = fopen(path, "rb");
    HSQ_ASSERT(f != NULL);
    static char buf[SIZE];
    size_t n = fread(buf, 1, sizeof buf, f), nl = strlen(needle);
    fclose(f);
    for (size_t i = 0; i + nl <= n; i++)
        if (memcmp(buf + i, needle, nl) == 0)
            return 1;
    return 0;
}

/* What the store's two files need (store_lmdb.c): take back the last
 * append, say which file's first record is older, start over at a given
 * lsn, and wipe every byte a record reached. */
static void test_drop_restart_wipe(void) {
    fresh();
    hsq_journal *j = NULL;
    seen s;
    reopen(&j, 0, &s);
    uint64_t lsn;
    HSQ_ASSERT_EQ(hsq_journal_first_lsn(j, &lsn), HSQ_ENOTFOUND);
    add(j, "one");
    add(j, "two");
    add(j, "three");
    HSQ_OK(hsq_journal_drop_last(j));
    HSQ_ASSERT_U64_EQ(hsq_journal_next_lsn(j), 3);
    HSQ_ASSERT_U64_EQ(hsq_journal_used(j), 2 * HSQ_JOURNAL_HEADER + 6);
    reopen(&j, 0, &s);
    HSQ_ASSERT_EQ(s.n, 2); /* "three" is gone, durably */
    HSQ_ASSERT_STR_EQ(s.text[1], "two");
    HSQ_OK(hsq_journal_first_lsn(j, &lsn));
    HSQ_ASSERT_U64_EQ(lsn, 1);

    hsq_journal_restart(j, 40);
    HSQ_ASSERT_U64_EQ(add(j, "secret-abc"), 40);
    HSQ_OK(hsq_journal_first_lsn(j, &lsn));
    HSQ_ASSERT_U64_EQ(lsn, 40);
    reopen(&j, 39, &s);
    HSQ_ASSERT_EQ(s.n, 1); /* the older records behind it end the chain */
    HSQ_ASSERT_STR_EQ(s.text[0], "secret-abc");

    HSQ_ASSERT(file_has("secret-abc") && file_has("two"));
    HSQ_OK(hsq_journal_wipe(j));
    HSQ_ASSERT(!file_has("secret-abc") && !file_has("two"));
    HSQ_ASSERT_EQ(hsq_journal_first_lsn(j, &lsn), HSQ_ENOTFOUND);
    HSQ_ASSERT_U64_EQ(add(j, "after"), 41); /* the lsn goes on */

    /* Lazy appends chain like the others; a synced one after them syncs
     * the file (they come back either way after a close: the page cache). */
    struct iovec v = {(void *)"lazy", 4};
    HSQ_OK(hsq_journal_append_lazy(j, &v, 1, &lsn));
    HSQ_ASSERT_U64_EQ(lsn, 42);
    HSQ_ASSERT_U64_EQ(add(j, "synced"), 43);
    reopen(&j, 40, &s);
    HSQ_ASSERT_EQ(s.n, 3);
    HSQ_ASSERT_STR_EQ(s.text[1], "lazy");
    HSQ_ASSERT_STR_EQ(s.text[2], "synced");
    hsq_journal_close(&j);
}

int main(void) {
    strcpy(dir, "/tmp/hsq-journal-XXXXXX");
    HSQ_ASSERT(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/journal", dir);
    test_round_trip();
    test_torn_tail();
    test_rewind();
    test_gap();
    test_callback_error();
    test_full();
    test_drop_restart_wipe();
    unlink(path);
    rmdir(dir);
    return 0;
}
