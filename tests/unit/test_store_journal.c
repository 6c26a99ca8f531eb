/* test_store_journal.c - the store in journal mode (daemon/store.h) on real
 * files: every commit that returned is there after a SIGKILL, and after a
 * power cut simulated on the files (data.mdb as the last checkpoint's sync
 * left it, with newer meta pages that did reach the disk); a full journal
 * file and a record too big for one; a second process gets reads only.
 * (journal.h's own rules, gaps and torn records: test_journal.c.) */
#include "daemon/journal.h"
#include "daemon/store.h"
#include "schemas/err.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[64], db[128];

static void fresh(void) {
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", db);
    HSQ_ASSERT_EQ(system(cmd), 0);
}

/* Wait for child pid, which must have exited with status 0. */
static void wait_ok(pid_t pid) {
    int ws;
    HSQ_ASSERT_EQ(waitpid(pid, &ws, 0), pid);
    HSQ_ASSERT(WIFEXITED(ws));
    HSQ_ASSERT_EQ(WEXITSTATUS(ws), 0);
}

static hsq_store *open_journal(uint64_t jbytes, uint32_t ck_ms) {
    hsq_store *s = NULL;
    hsq_store_opts o = {jbytes, ck_ms};
    HSQ_OK(hsq_store_open_opts(&s, db, 64ull << 20, &o));
    return s;
}

/* Record i: key u64be i in TASKS, a value that says i and has `pad` bytes.
 * Every third commit also deletes record i - 2. */
static void put_rec(hsq_store *s, uint64_t i, size_t pad) {
    uint8_t k[8];
    static char v[1 << 20];
    hsq_be64(k, i);
    int n = snprintf(v, sizeof v, "record-%llu|", (unsigned long long)i);
    memset(v + n, 'x', pad);
    HSQ_OK(hsq_store_put(s, HSQ_DB_TASKS, k, sizeof k, v, (size_t)n + pad));
}

static void commit_rec(hsq_store *s, uint64_t i, size_t pad) {
    HSQ_OK(hsq_store_begin(s, 0));
    put_rec(s, i, pad);
    if (i % 3 == 0 && i >= 2) {
        uint8_t k[8];
        hsq_be64(k, i - 2);
        HSQ_OK(hsq_store_del(s, HSQ_DB_TASKS, k, sizeof k));
    }
    HSQ_OK(hsq_store_commit(s));
}

static int deleted(uint64_t i, uint64_t acked) {
    return (i + 2) % 3 == 0 && i + 2 <= acked; /* deleted by commit i + 2 */
}

/* Records 0 .. acked (inclusive) as commit_rec left them; nothing past
 * acked + 1 (the commit in flight may or may not be there). */
static void check_recs(hsq_store *s, uint64_t acked) {
    HSQ_OK(hsq_store_begin(s, 1));
    for (uint64_t i = 0; i <= acked; i++) {
        uint8_t k[8];
        hsq_be64(k, i);
        hsq_bytes v;
        int rc = hsq_store_get(s, HSQ_DB_TASKS, k, sizeof k, &v);
        if ((i + 2) % 3 == 0 && i + 2 == acked + 1)
            continue; /* the commit in flight deletes it, or not */
        if (deleted(i, acked)) {
            HSQ_ASSERT_EQ(rc, HSQ_ENOTFOUND);
            continue;
        }
        if (rc != 0)
            fprintf(stderr, "record %llu of %llu: %s\n", (unsigned long long)i,
                    (unsigned long long)acked, hsq_strerror(rc));
        HSQ_OK(rc);
        char want[32];
        int n = snprintf(want, sizeof want, "record-%llu|", (unsigned long long)i);
        HSQ_ASSERT(v.len >= (size_t)n && memcmp(v.ptr, want, (size_t)n) == 0);
    }
    /* The whole tree reads back, in order, ending at most one past acked. */
    hsq_cursor *c;
    HSQ_OK(hsq_cursor_open(s, HSQ_DB_TASKS, &c));
    hsq_bytes k, v;
    uint64_t prev = 0, n = 0;
    for (int rc = hsq_cursor_get(c, HSQ_CUR_FIRST, &k, &v); rc == 0;
         rc = hsq_cursor_get(c, HSQ_CUR_NEXT, &k, &v)) {
        HSQ_ASSERT_EQ(k.len, 8);
        uint64_t id = hsq_rd_be64(k.ptr);
        HSQ_ASSERT(n == 0 || id > prev);
        HSQ_ASSERT(id <= acked + 1);
        prev = id;
        n++;
    }
    hsq_cursor_close(&c);
    /* LMDB's own count (kept in the tree's root record) agrees with the
     * walk: a tree put together from pages of different snapshots would
     * not. */
    uint64_t count = 0;
    HSQ_OK(hsq_store_count(s, HSQ_DB_TASKS, &count));
    if (count != n)
        fprintf(stderr, "count %llu, walked %llu\n", (unsigned long long)count,
                (unsigned long long)n);
    HSQ_ASSERT_U64_EQ(count, n);
    hsq_store_abort(s);
    HSQ_ASSERT(n > 0);
}

/* A child commits records and reports each one that returned on a pipe;
 * the parent kills it with SIGKILL after 3,000, reads what was
 * reported, and opens the store: all of it is there. Small journal files
 * and frequent checkpoints, so the files take turns many times and a
 * checkpoint is often in flight at the kill. */
static void test_sigkill(void) {
    fresh();
    int p[2];
    HSQ_OK(pipe(p));
    pid_t pid = fork();
    HSQ_ASSERT(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        hsq_store *s = open_journal(64u << 10, 2);
        for (uint64_t i = 0;; i++) {
            commit_rec(s, i, i % 7 == 0 ? 3000 : 40);
            if (write(p[1], &i, sizeof i) != sizeof i)
                _exit(3);
        }
    }
    close(p[1]);
    uint64_t acked = 0, got = 0, i;
    while (read(p[0], &i, sizeof i) == sizeof i) {
        acked = i;
        if (++got == 3000)
            kill(pid, SIGKILL);
    }
    close(p[0]);
    int st;
    HSQ_ASSERT_EQ(waitpid(pid, &st, 0), pid);
    HSQ_ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    HSQ_ASSERT(acked >= 2999);
    hsq_store *s = open_journal(64u << 10, 2);
    check_recs(s, acked);
    /* And it goes on: more commits, a clean close, a reopen. */
    for (uint64_t j = acked + 2; j < acked + 50; j++)
        commit_rec(s, j, 40);
    hsq_store_close(&s);
    s = open_journal(64u << 10, 2);
    hsq_bytes v;
    uint8_t k[8];
    hsq_be64(k, acked + 49);
    HSQ_OK(hsq_store_begin(s, 1));
    HSQ_OK(hsq_store_get(s, HSQ_DB_TASKS, k, sizeof k, &v));
    hsq_store_abort(s);
    hsq_store_close(&s);
}

/* A SIGKILL before the first periodic checkpoint: only the open's own
 * checkpoint is on disk, in one of the two slots. A lazy commit and a
 * synced one are both there afterwards. */
static void test_kill_early(void) {
    fresh();
    int p[2];
    HSQ_OK(pipe(p));
    pid_t pid = fork();
    HSQ_ASSERT(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        hsq_store *s = open_journal(1u << 20, 60000);
        uint8_t k[8];
        HSQ_OK(hsq_store_begin(s, 0));
        hsq_be64(k, 1);
        HSQ_OK(hsq_store_put(s, HSQ_DB_TASKS, k, 8, "lazy", 4));
        HSQ_OK(hsq_store_commit_lazy(s));
        HSQ_OK(hsq_store_begin(s, 0));
        hsq_be64(k, 2);
        HSQ_OK(hsq_store_put(s, HSQ_DB_TASKS, k, 8, "synced", 6));
        HSQ_OK(hsq_store_commit(s));
        if (write(p[1], "x", 1) != 1)
            _exit(3);
        pause();
        _exit(0);
    }
    close(p[1]);
    char c;
    HSQ_ASSERT_EQ(read(p[0], &c, 1), 1);
    close(p[0]);
    kill(pid, SIGKILL);
    int ws;
    HSQ_ASSERT_EQ(waitpid(pid, &ws, 0), pid);
    hsq_store *s = open_journal(1u << 20, 60000);
    HSQ_OK(hsq_store_begin(s, 1));
    for (uint64_t i = 1; i <= 2; i++) {
        uint8_t k[8];
        hsq_bytes v;
        hsq_be64(k, i);
        HSQ_OK(hsq_store_get(s, HSQ_DB_TASKS, k, 8, &v));
    }
    hsq_store_abort(s);
    hsq_store_close(&s);

    /* A checkpoint file with bytes but no whole slot: with records in the
     * journal that is refused; a store whose journal never got one (its
     * first checkpoint was torn) opens as new. */
    char path[200];
    snprintf(path, sizeof path, "%s/checkpoint", db);
    HSQ_OK(truncate(path, 100));
    hsq_store_opts o = {1u << 20, 60000};
    HSQ_ASSERT_EQ(hsq_store_open_opts(&s, db, 64ull << 20, &o), HSQ_ECORRUPT);
    fresh();
    HSQ_OK(mkdir(db, 0700));
    int fd = open(path, O_WRONLY | O_CREAT, 0600);
    HSQ_ASSERT(fd >= 0);
    HSQ_ASSERT_EQ(write(fd, "HSQ", 3), 3);
    close(fd);
    s = open_journal(1u << 20, 60000);
    hsq_store_close(&s);
}

/* A journal record that is whole (its CRC holds) but does not parse as
 * changes stops the open with HSQ_ECORRUPT instead of applying part of it;
 * a journal size under the journal's minimum is refused. */
static void test_bad_record(void) {
    fresh();
    pid_t pid = fork();
    HSQ_ASSERT(pid >= 0);
    if (pid == 0) {
        hsq_store *s = open_journal(1u << 20, 60000);
        commit_rec(s, 1, 10);
        _exit(0); /* a crash: the record is past the open's checkpoint */
    }
    wait_ok(pid);
    /* The open's checkpoint moved appends to journal-1: its first record
     * is the one after the checkpoint. Put one that has an unknown op. */
    char path[200];
    snprintf(path, sizeof path, "%s/journal-1", db);
    hsq_journal *j = NULL;
    HSQ_OK(hsq_journal_open(&j, path, 1u << 20));
    uint64_t first = 0;
    HSQ_OK(hsq_journal_first_lsn(j, &first));
    HSQ_OK(hsq_journal_replay(j, first, NULL, NULL));
    hsq_journal_restart(j, first);
    static const uint8_t bad[10] = {7, 1, 8, 0, 0, 0, 0, 0, 0, 0};
    struct iovec v = {(void *)bad, sizeof bad};
    uint64_t lsn;
    HSQ_OK(hsq_journal_append(j, &v, 1, &lsn));
    HSQ_ASSERT_U64_EQ(lsn, first);
    hsq_journal_close(&j);
    hsq_store *s = NULL;
    hsq_store_opts o = {1u << 20, 60000};
    HSQ_ASSERT_EQ(hsq_store_open_opts(&s, db, 64ull << 20, &o), HSQ_ECORRUPT);
    HSQ_ASSERT(s == NULL);

    fresh();
    o.journal_bytes = 4096;
    HSQ_ASSERT_EQ(hsq_store_open_opts(&s, db, 64ull << 20, &o), HSQ_EINVAL);
}

static void copy_file(const char *from, const char *to, off_t len) {
    int a = open(from, O_RDONLY), b = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    HSQ_ASSERT(a >= 0 && b >= 0);
    static char buf[1 << 16];
    off_t done = 0;
    while (len < 0 || done < len) {
        size_t want = sizeof buf;
        if (len >= 0 && (off_t)want > len - done)
            want = (size_t)(len - done);
        ssize_t r = read(a, buf, want);
        HSQ_ASSERT(r >= 0);
        if (r == 0)
            break;
        HSQ_ASSERT_EQ(write(b, buf, (size_t)r), r);
        done += r;
    }
    close(a);
    close(b);
}

/* A power cut. The child commits 200 records, checkpoints, and stops (the
 * parent copies data.mdb: what the checkpoint's sync left on the disk);
 * then it commits 300 more (journaled; LMDB's pages, batch by batch, only
 * in the page cache) and dies. The disk after the cut: the copy, except that LMDB's
 * meta pages are the newest ones (they did reach the disk, the pages they
 * point to did not), and the journal and checkpoint files as they are
 * (their writes were synced). Opening it must find all 500. Without the
 * checkpoint's meta pages written back, LMDB opens the newest meta page
 * over pages that are not there. */
static void test_power_cut(void) {
    fresh();
    int go[2], ready[2];
    HSQ_OK(pipe(go));
    HSQ_OK(pipe(ready));
    pid_t pid = fork();
    HSQ_ASSERT(pid >= 0);
    if (pid == 0) {
        close(go[1]);
        close(ready[0]);
        hsq_store *s = open_journal(1u << 20, 60000); /* no checkpoint unless asked */
        for (uint64_t i = 0; i < 200; i++)
            commit_rec(s, i, 200);
        HSQ_OK(hsq_store_checkpoint(s));
        char c = 'c';
        if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
            _exit(3);
        for (uint64_t i = 200; i < 500; i++) {
            commit_rec(s, i, 200);
            if (i % 50 == 49) {
                /* A pause: the batch goes to data.mdb (no checkpoint). */
                usleep(3000);
                HSQ_OK(hsq_store_begin(s, 1));
                hsq_store_abort(s);
            }
        }
        if (write(ready[1], &c, 1) != 1)
            _exit(3);
        pause(); /* killed */
        _exit(0);
    }
    close(go[0]);
    close(ready[1]);
    char c;
    HSQ_ASSERT_EQ(read(ready[0], &c, 1), 1);
    char data[200], synced[220];
    snprintf(data, sizeof data, "%s/data.mdb", db);
    snprintf(synced, sizeof synced, "%s/synced.mdb", dir);
    copy_file(data, synced, -1);
    struct stat st;
    HSQ_OK(stat(synced, &st));
    HSQ_ASSERT_EQ(write(go[1], &c, 1), 1);
    HSQ_ASSERT_EQ(read(ready[0], &c, 1), 1);
    kill(pid, SIGKILL);
    int ws;
    HSQ_ASSERT_EQ(waitpid(pid, &ws, 0), pid);
    close(go[1]);
    close(ready[0]);

    /* The dir as the kill left it, for the second cut below. */
    char cmd[400];
    snprintf(cmd, sizeof cmd, "cp -a %s %s/killed", db, dir);
    HSQ_ASSERT_EQ(system(cmd), 0);

    /* First cut: the newest meta pages over the synced copy, cut to its
     * length: the meta pages reached the disk, the pages they point to did
     * not. */
    static uint8_t meta[2 * 4096];
    int fd = open(data, O_RDONLY);
    HSQ_ASSERT(fd >= 0);
    HSQ_ASSERT_EQ(pread(fd, meta, sizeof meta, 0), (ssize_t)sizeof meta);
    close(fd);
    copy_file(synced, data, st.st_size);
    fd = open(data, O_WRONLY);
    HSQ_ASSERT(fd >= 0);
    HSQ_ASSERT_EQ(pwrite(fd, meta, sizeof meta, 0), (ssize_t)sizeof meta);
    close(fd);
    unlink(synced);
    hsq_store *s = open_journal(1u << 20, 60000);
    check_recs(s, 499);
    hsq_store_close(&s);

    /* Second cut: every write after the checkpoint reached the disk except
     * those that grew the file. What the checkpoint's snapshot needs is
     * then only there if no later commit reused its pages (the pin). */
    snprintf(cmd, sizeof cmd, "rm -rf %s && mv %s/killed %s", db, dir, db);
    HSQ_ASSERT_EQ(system(cmd), 0);
    HSQ_OK(truncate(data, st.st_size));
    s = open_journal(1u << 20, 60000);
    check_recs(s, 499);
    hsq_store_close(&s);
}

/* Appends that outrun the checkpoints: with 64 KiB files and checkpoints
 * only when a file is half full, a commit finds its file full and waits for
 * the checkpoint that frees the other. A record over a quarter of a file
 * is not journaled: that commit checkpoints at once. A SIGKILL after both
 * loses nothing. */
static void test_full_and_big(void) {
    fresh();
    pid_t pid = fork();
    HSQ_ASSERT(pid >= 0);
    if (pid == 0) {
        hsq_store *s = open_journal(64u << 10, 60000);
        for (uint64_t i = 0; i < 400; i++)
            commit_rec(s, i, i == 150 || i == 151 ? 40000 : 900);
        _exit(0); /* no close: the store must come back from its files */
    }
    wait_ok(pid);
    hsq_store *s = open_journal(64u << 10, 60000);
    check_recs(s, 399);
    hsq_store_jstats js;
    hsq_store_journal_stats(s, &js);
    HSQ_ASSERT(js.on && js.size == 64u << 10);
    hsq_store_close(&s);
}

/* While one process owns the journal, another that opens the store reads
 * what it committed and may not write. */
static void test_second_process(void) {
    fresh();
    hsq_store *s = open_journal(1u << 20, 5);
    for (uint64_t i = 0; i < 20; i++)
        commit_rec(s, i, 10);
    HSQ_OK(hsq_store_checkpoint(s)); /* the batch in data.mdb, for the reader */
    pid_t pid = fork();
    HSQ_ASSERT(pid >= 0);
    if (pid == 0) {
        hsq_store *o = NULL;
        if (hsq_store_open(&o, db, 64ull << 20) != 0)
            _exit(2);
        if (hsq_store_begin(o, 0) != HSQ_EUNAVAIL)
            _exit(3);
        uint8_t k[8];
        hsq_bytes v;
        hsq_be64(k, 19);
        if (hsq_store_begin(o, 1) != 0 || hsq_store_get(o, HSQ_DB_TASKS, k, 8, &v) != 0)
            _exit(4);
        hsq_store_abort(o);
        hsq_store_close(&o);
        _exit(0);
    }
    wait_ok(pid);
    commit_rec(s, 20, 10); /* the owner goes on */
    hsq_store_close(&s);
}

static uint64_t fake_us;
static uint64_t fake_clock(void) {
    return fake_us;
}

static int batch_open(hsq_store *s) {
    return hsq_store_flush_in_ms(s) != UINT32_MAX;
}

/* The batch's schedule, on a clock the test moves. Under load (a commit
 * every millisecond) a batch lasts 20 ms: hsq_store_begin commits it once
 * due, hsq_store_maintain (after a turn's replies) up to 3 ms sooner, so
 * the next turn's requests do not wait for its page writes. An idle
 * store's batch goes 2 ms after its last commit. Batches are not
 * checkpoints: none is due before checkpoint_ms (100 here). */
static void test_batch_schedule(void) {
    fresh();
    hsq_store *s = open_journal(1u << 20, 100);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    fake_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    hsq_store_set_clock(s, fake_clock);
    hsq_store_jstats j0, j1;
    hsq_store_journal_stats(s, &j0);
    HSQ_ASSERT(!batch_open(s));
    uint64_t t0 = fake_us, i = 0;
    for (; fake_us <= t0 + 16000; fake_us += 1000) {
        commit_rec(s, i++, 10);
        hsq_store_maintain(s);
        HSQ_ASSERT(batch_open(s)); /* due at t0 + 20 ms, maintain from 17 */
    }
    commit_rec(s, i++, 10); /* t0 + 17: begin does not commit it early */
    HSQ_ASSERT(batch_open(s));
    hsq_store_maintain(s);
    HSQ_ASSERT(!batch_open(s));

    commit_rec(s, i++, 10); /* a new batch, then nothing for a while */
    fake_us += 1000;
    hsq_store_maintain(s);
    HSQ_ASSERT(batch_open(s));
    HSQ_ASSERT_EQ(hsq_store_flush_in_ms(s), 1);
    fake_us += 1000; /* 2 ms idle */
    HSQ_OK(hsq_store_begin(s, 1));
    HSQ_ASSERT(!batch_open(s));
    hsq_store_abort(s);

    hsq_store_journal_stats(s, &j1);
    HSQ_ASSERT_U64_EQ(j1.checkpoints, j0.checkpoints);
    check_recs(s, i - 1);
    hsq_store_close(&s);
}

int main(void) {
    strcpy(dir, "/tmp/hsq-storej-XXXXXX");
    HSQ_ASSERT(mkdtemp(dir) != NULL);
    snprintf(db, sizeof db, "%s/db", dir);
    test_sigkill();
    test_kill_early();
    test_power_cut();
    test_full_and_big();
    test_second_process();
    test_bad_record();
    test_batch_schedule();
    fresh();
    rmdir(dir);
    return 0;
}
