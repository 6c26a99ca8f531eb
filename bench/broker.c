/* broker.c - broker benchmark: hsqd end to end against beanstalkd.
 *
 * DESIGN. One run on one machine measures, side by side:
 *
 *   hsqd       the real daemon binary on a temp data dir, driven over ZeroMQ by
 *              P producer threads (DEALER, pipelined submits, a window of
 *              in-flight submits each) and W no-op worker threads, a small
 *              fleet (DEALER each: ready {prefetch 4, the protocol's most},
 *              then four lease {max 64, wait_ms} requests kept in flight
 *              (parked while others are answered), answering every job at
 *              once with `done`). A worker reports one fake output
 *              per job: an empty file (hsqd checks that it exists with the
 *              reported size), no image bytes, no fsync, on tmpfs when there is
 *              one. This measures the protocol and the broker, not the worker.
 *   beanstalkd the Debian binary, without binlog and with `-b DIR -f0` (fsync
 *              every write), driven over its text protocol by one producer
 *              connection (pipelined `put`) and one consumer connection
 *              (pipelined `reserve-with-timeout`, then `delete`).
 *
 * Latencies: "ack" is request sent -> acknowledgement received (submit reply,
 * INSERTED); "submit->lease" is request sent -> the job reaching the consumer
 * (lease reply, RESERVED). Producers and consumers record (job id, time) in
 * their own tables, joined by id after the run, so no thread ever waits on
 * another's bookkeeping. In the paced runs the send time is the scheduled
 * time, not the actual one, so a stalled sender cannot hide its own delay
 * (coordinated omission).
 *
 * Throughput is end to end: jobs whose completion was acknowledged (done
 * reply, DELETED) divided by the time from the first send to the last
 * acknowledgement, so a backlog built during the run is paid for in the drain.
 * Producers hold back while a window's worth of jobs is sent but not yet with
 * the consumer (see backlog below), so that at saturation submit->lease stays
 * a latency instead of the age of a queue that grows for the whole run.
 *
 * Process handling: daemons are children with PR_SET_PDEATHSIG, stopped with
 * TERM then KILL. hsqd reports its endpoints on --ready-fd; beanstalkd has no
 * readiness signal and cannot bind port 0, so a free port is picked by binding
 * port 0 and closing it, and readiness is a successful connect (retried with
 * another port when beanstalkd exits, e.g. because the port was taken).
 *
 * Only libzmq, libc, pthreads and hsq's own wire codec are used.
 */
#include "common/buf.h"
#include "daemon/journal.h"
#include "schemas/err.h"
#include "schemas/wire.h"

#include <zmq.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PRODUCERS 64
#define BENCH_PREFETCH HSQ_MAX_PREFETCH /* lease requests each no-op worker keeps parked */
#define MAX_WORKERS 16
#define MAX_EXTRA_ARGS 64
#define CURVE_FLOOR 0.5 /* CURVE throughput / plaintext: below this a full run fails */
#define BS_TUBE_TTR 600 /* s: far beyond a run, so no job is ever auto-released */

/* ------------------------------------------------------------------ */
/* options */

typedef struct {
    const char *hsqd;      /* path of the hsqd binary */
    const char *attach;    /* --attach: paced load on this client endpoint only */
    int disk_probe;        /* --disk-probe PAGES: only the paced commit-shaped disk probe */
    int disk_mirror;       /* --disk-mirror: with it, the journal mirrored to two files */
    int paced_secs_set;    /* --paced-secs given */
    const char *ack_log;   /* --ack-log: one line per ack (attach mode) */
    const char *hsqd_args; /* argv template after the binary; %D and %F substituted */
    const char *extra[MAX_EXTRA_ARGS];
    int n_extra;
    const char *out_dir;    /* parent of the throughput runs' blob store; NULL: auto */
    const char *beanstalkd; /* path of the beanstalkd binary */
    const char *dir;        /* parent of the temp dirs (data dir, fsync file) */
    int quick;
    int keep; /* keep the temp dir */
    int run_hsqd, run_bs;
    int run_paced, run_rss, run_big;
    int run_curve;       /* the throughput runs again with CURVE on */
    int run_nodisk;      /* ... and with LMDB on tmpfs (what is left without the disk) */
    double secs;         /* one throughput run */
    int repeat;          /* throughput runs per system; median reported */
    int producers;       /* hsqd producer threads */
    int workers;         /* hsqd no-op worker threads */
    int window;          /* hsqd submits in flight per producer */
    int bs_window;       /* beanstalkd puts / reserves in flight */
    int64_t max_backlog; /* producers wait while this many jobs are sent, not leased;
                            -1: the system's total window, 0: unbounded */
    int users;           /* distinct user ids per producer */
    size_t job_bytes;    /* input frame / job body size */
    double paced_rate;   /* jobs/s */
    double paced_secs;
    uint64_t rss_tasks;
    double rss_timeout; /* s; stop queueing after this long */
    size_t big_bytes;
    double big_secs;
    int big_window;
    size_t disk_mb;
    uint32_t lease_wait_ms;
    int verbose;
} opts;

/* ------------------------------------------------------------------ */
/* small helpers */

static int verbose;

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("bench-broker: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

__attribute__((format(printf, 1, 2))) static void note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("bench-broker: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

__attribute__((format(printf, 1, 2))) static void debug(const char *fmt, ...) {
    if (!verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("bench-broker: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until_ns(uint64_t t) {
    struct timespec ts = {(time_t)(t / 1000000000u), (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void sleep_ms(int ms) {
    sleep_until_ns(now_ns() + (uint64_t)ms * 1000000u);
}

/* xorshift64*: bytes that no filesystem or transport can compress away. */
static void fill_random(void *p, size_t n, uint64_t seed) {
    uint64_t x = seed | 1;
    uint8_t *b = p;
    for (size_t i = 0; i < n; i += 8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t v = x * 2685821657736338717ull;
        size_t k = n - i < 8 ? n - i : 8;
        memcpy(b + i, &v, k);
    }
}

/* (id, time) records and plain sample vectors. */
typedef struct {
    uint64_t id, t;
} rec;

typedef struct {
    rec *v;
    size_t n, cap;
} recvec;

typedef struct {
    uint64_t *v;
    size_t n, cap;
} u64vec;

static void recvec_push(recvec *a, uint64_t id, uint64_t t) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 4096;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = (rec){id, t};
}

static void u64vec_push(u64vec *a, uint64_t x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 4096;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = x;
}

static void recvec_append(recvec *dst, const recvec *src) {
    for (size_t i = 0; i < src->n; i++)
        recvec_push(dst, src->v[i].id, src->v[i].t);
}

static void u64vec_append(u64vec *dst, const u64vec *src) {
    for (size_t i = 0; i < src->n; i++)
        u64vec_push(dst, src->v[i]);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_rec(const void *a, const void *b) {
    return cmp_u64(a, b); /* by id, the first member */
}

/* Nearest-rank percentile in ms of samples in ns; sorts v. NaN when empty. */
static double pct_ms(u64vec *v, double q) {
    if (v->n == 0)
        return 0.0 / 0.0;
    qsort(v->v, v->n, sizeof *v->v, cmp_u64);
    size_t k = (size_t)(q * (double)v->n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > v->n)
        k = v->n;
    return (double)v->v[k - 1] / 1e6;
}

/* Join sent (id, t_send) with got (id, t_got) by id into latencies. Sorts both. */
static void join_latency(recvec *sent, recvec *got, u64vec *out) {
    if (sent->n == 0 || got->n == 0)
        return;
    qsort(sent->v, sent->n, sizeof *sent->v, cmp_rec);
    qsort(got->v, got->n, sizeof *got->v, cmp_rec);
    size_t i = 0, j = 0;
    while (i < sent->n && j < got->n) {
        if (sent->v[i].id < got->v[j].id) {
            i++;
        } else if (sent->v[i].id > got->v[j].id) {
            j++;
        } else {
            uint64_t a = sent->v[i].t, b = got->v[j].t;
            u64vec_push(out, b > a ? b - a : 0);
            i++;
            j++;
        }
    }
}

/* Backlog: jobs sent by the producers and not yet handed to a consumer.
 * With a bound, producers hold back while it is reached (closed loop), so the
 * submit->lease latency stays a latency and not the age of a growing queue. */
typedef struct {
    atomic_uint_fast64_t sent;   /* producers, before each send */
    atomic_uint_fast64_t leased; /* consumer, per job received */
    atomic_uint_fast64_t peak;   /* highest sent - leased seen by a producer */
    uint64_t max;                /* 0 = unbounded */
} backlog;

static void backlog_init(backlog *b, uint64_t max) {
    atomic_init(&b->sent, 0);
    atomic_init(&b->leased, 0);
    atomic_init(&b->peak, 0);
    b->max = max;
}

/* 1 when a producer may send one more job now (and counts it as sent). */
static int backlog_take(backlog *b) {
    uint64_t sent = atomic_load(&b->sent), leased = atomic_load(&b->leased);
    uint64_t depth = sent > leased ? sent - leased : 0;
    uint64_t peak = atomic_load(&b->peak);
    while (depth > peak && !atomic_compare_exchange_weak(&b->peak, &peak, depth))
        ;
    if (b->max && depth >= b->max)
        return 0;
    atomic_fetch_add(&b->sent, 1);
    return 1;
}

/* One measured run of one system. */
typedef struct {
    int ok;
    uint64_t jobs;      /* completed end to end */
    uint64_t submitted; /* acknowledged submits */
    uint64_t errors;
    uint64_t peak_backlog;
    double secs;
    double jobs_s;
    double submits_s;            /* acknowledged submits / (first send -> last ack) */
    double ack_p50, ack_p99;     /* ms */
    double lease_p50, lease_p99; /* ms */
    double server_us, harness_us; /* CPU per completed job (all threads); 0 = not measured */
    char err[256];
} result;

static void result_fill(result *r, u64vec *ack, recvec *sent, recvec *got) {
    u64vec lease = {0};
    join_latency(sent, got, &lease);
    r->ack_p50 = pct_ms(ack, 0.50);
    r->ack_p99 = pct_ms(ack, 0.99);
    r->lease_p50 = pct_ms(&lease, 0.50);
    r->lease_p99 = pct_ms(&lease, 0.99);
    r->jobs_s = r->secs > 0 ? (double)r->jobs / r->secs : 0;
    free(lease.v);
}

/* ------------------------------------------------------------------ */
/* child processes */

typedef struct {
    pid_t pid;
    char log[512]; /* stdout+stderr of the child */
} proc;

static void print_log_tail(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[1024];
    char *ring[20] = {0};
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        free(ring[n % 20]);
        ring[n % 20] = xstrdup(line);
        n++;
    }
    fclose(f);
    int first = n > 20 ? n - 20 : 0;
    fprintf(stderr, "---- last lines of %s ----\n", path);
    for (int i = first; i < n; i++)
        fputs(ring[i % 20], stderr);
    for (int i = 0; i < 20; i++)
        free(ring[i]);
}

/* Start argv[0] with stdin /dev/null and stdout/stderr into log. keep_fd (or
 * -1) is inherited; every other descriptor of ours is close-on-exec (pipes
 * are made with O_CLOEXEC, ZeroMQ and sockets set it themselves). */
static int proc_start(proc *p, char *const argv[], const char *log, int keep_fd) {
    snprintf(p->log, sizeof p->log, "%s", log);
    int out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out < 0)
        return -errno;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(out);
        return -e;
    }
    if (pid == 0) {
        /* Die with the benchmark, even when it is killed. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        int in = open("/dev/null", O_RDONLY);
        if (in < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
            _exit(127);
        if (keep_fd >= 0)
            fcntl(keep_fd, F_SETFD, 0);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(out);
    p->pid = pid;
    return 0;
}

/* 1 when the child has exited (reaped), 0 when still running. */
static int proc_exited(proc *p, int *status) {
    if (p->pid <= 0)
        return 1;
    int st = 0;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid) {
        p->pid = 0;
        if (status)
            *status = st;
        return 1;
    }
    return 0;
}

/* TERM, then KILL after timeout_ms. Returns the wait status, or -1. */
static int proc_stop(proc *p, int timeout_ms) {
    if (p->pid <= 0)
        return -1;
    int st = 0;
    kill(p->pid, SIGTERM);
    uint64_t until = now_ns() + (uint64_t)timeout_ms * 1000000u;
    while (!proc_exited(p, &st)) {
        if (now_ns() > until) {
            note("pid %d ignored TERM for %d ms; sending KILL", (int)p->pid, timeout_ms);
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            p->pid = 0;
            break;
        }
        sleep_ms(5);
    }
    return st;
}

/* RssAnon / VmRSS / RssFile / RssShmem of pid, in kB; -1 when unreadable. */
typedef struct {
    long rss, anon, file, shmem;
} memstat;

static memstat read_mem(pid_t pid) {
    memstat m = {-1, -1, -1, -1};
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return m;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        long v;
        if (sscanf(line, "VmRSS: %ld", &v) == 1)
            m.rss = v;
        else if (sscanf(line, "RssAnon: %ld", &v) == 1)
            m.anon = v;
        else if (sscanf(line, "RssFile: %ld", &v) == 1)
            m.file = v;
        else if (sscanf(line, "RssShmem: %ld", &v) == 1)
            m.shmem = v;
    }
    fclose(f);
    return m;
}

/* CPU seconds (user + system, every thread) a child has used so far; -1
 * when unreadable. */
static double proc_cpu_s(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    /* Fields after the command name, which is in parentheses and may hold
     * blanks: state is field 3, utime 14, stime 15. */
    char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds this process (the harness: every thread) has used so far. */
static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Per completed job, both sides of a run (the harness shares the CPUs). */
static void cpu_per_job(result *r, double server0, double server1, double self0, double self1) {
    if (r->jobs == 0 || server0 < 0 || server1 < 0)
        return;
    r->server_us = (server1 - server0) * 1e6 / (double)r->jobs;
    r->harness_us = (self1 - self0) * 1e6 / (double)r->jobs;
}

static int rm_rf(const char *path) {
    /* The temp tree holds an LMDB env and a blob store: nothing a shell
     * glob would mangle, and fork+exec keeps this file free of nftw. */
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        execl("/bin/rm", "rm", "-rf", "--", path, (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

static const char *fs_name(const char *dir) {
    struct statfs s;
    if (statfs(dir, &s) != 0)
        return "?";
    switch ((unsigned long)s.f_type) {
    case 0xEF53:
        return "ext4";
    case 0x58465342:
        return "xfs";
    case 0x9123683E:
        return "btrfs";
    case 0x01021994:
        return "tmpfs";
    case 0x794c7630:
        return "overlayfs";
    case 0x2fc12fc1:
        return "zfs";
    case 0x6969:
        return "nfs";
    default:
        return "other";
    }
}

/* ------------------------------------------------------------------ */
/* disk: sequential write with fsync per chunk */

/* MB/s (10^6 bytes) writing total_mb MB in chunk-byte writes, each followed by
 * fsync, to a fresh file in dir. <0 on error. */
static double disk_write_mbps(const char *dir, size_t total_mb, size_t chunk) {
    char path[1100];
    snprintf(path, sizeof path, "%.1024s/fsync-probe.tmp", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        note("open %s: %s", path, strerror(errno));
        return -1;
    }
    uint8_t *buf = xmalloc(chunk);
    fill_random(buf, chunk, 0x5eed);
    size_t total = total_mb * 1000000u;
    size_t n_chunks = (total + chunk - 1) / chunk;
    uint64_t t0 = now_ns();
    double mbps = -1;
    size_t i;
    for (i = 0; i < n_chunks; i++) {
        buf[0] = (uint8_t)i; /* each chunk differs */
        size_t off = 0;
        while (off < chunk) {
            ssize_t w = write(fd, buf + off, chunk - off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                note("write %s: %s", path, strerror(errno));
                goto out;
            }
            off += (size_t)w;
        }
        if (fsync(fd) != 0) {
            note("fsync %s: %s", path, strerror(errno));
            goto out;
        }
    }
    mbps = (double)(n_chunks * chunk) / 1e6 / ((double)(now_ns() - t0) / 1e9);
out:
    close(fd);
    unlink(path);
    free(buf);
    return mbps;
}

/* The disk's own latency for a commit-shaped write, paced like the paced
 * runs: every 1/rate s, `pages` 4 KiB pwrites at random page offsets of a
 * 4 MiB file (a hot LMDB working set), fdatasync, then one 4 KiB pwrite at
 * offset 0 through an O_DSYNC descriptor: the shape of an LMDB commit (dirty
 * pages, sync, meta page). Latency from the scheduled start, like the paced rows; no queueing,
 * parsing or sockets: what the disk alone allows. 0 on success. */
typedef struct {
    double p50, p99, max;
    uint64_t n;
} disk_lat;

#define JOURNAL_PROBE_BYTES 1024u

static void lat_summary(disk_lat *out, u64vec *lat) {
    out->n = lat->n;
    out->p50 = pct_ms(lat, 0.50);
    out->p99 = pct_ms(lat, 0.99);
    out->max = pct_ms(lat, 1.0);
}

/* A probe's journal: created (zero-filled) and positioned at its end. */
static int probe_journal_open(const char *path, hsq_journal **j) {
    int rc = hsq_journal_open(j, path, 16u << 20);
    return rc == 0 ? hsq_journal_replay(*j, 0, NULL, NULL) : rc;
}

/* One record on the disk; a full journal starts over at offset 0, as a
 * checkpoint would let it. */
static int probe_append(hsq_journal *j, void *rec, size_t bytes) {
    struct iovec v = {rec, bytes};
    uint64_t lsn;
    int rc = hsq_journal_append(j, &v, 1, &lsn);
    if (rc == HSQ_EDISKFULL) {
        hsq_journal_rewind(j);
        rc = hsq_journal_append(j, &v, 1, &lsn);
    }
    return rc;
}

static int disk_commit_probe(const char *dir, int pages, double rate, double secs, disk_lat *out) {
    char path[1100];
    snprintf(path, sizeof path, "%.1024s/commit-probe.tmp", dir);
    const off_t size = 4 << 20; /* a hot LMDB working set: 1024 pages */
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int meta = fd < 0 ? -1 : open(path, O_WRONLY | O_DSYNC | O_CLOEXEC);
    int rc = -1;
    uint8_t *page = xmalloc(4096), *zero = calloc(1, 1 << 20);
    u64vec lat = {0};
    if (fd < 0 || meta < 0 || !zero) {
        note("commit probe %s: %s", path, strerror(errno));
        goto out;
    }
    /* Allocate every block first: LMDB rewrites pages of a file it grew. */
    for (off_t off = 0; off < size; off += 1 << 20)
        if (pwrite(fd, zero, 1 << 20, off) != 1 << 20) {
            note("commit probe write: %s", strerror(errno));
            goto out;
        }
    if (fsync(fd) != 0)
        goto out;
    fill_random(page, 4096, 0xd15c);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    uint64_t period = (uint64_t)(1e9 / rate), t0 = now_ns();
    uint64_t n = (uint64_t)(secs * rate);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t at = t0 + i * period;
        sleep_until_ns(at); /* returns at once when behind */
        for (int k = 0; k < pages; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            off_t off = (off_t)(1 + (seed >> 33) % (uint64_t)(size / 4096 - 1)) * 4096;
            page[0] = (uint8_t)i;
            if (pwrite(fd, page, 4096, off) != 4096)
                goto out;
        }
        if (fdatasync(fd) != 0 || pwrite(meta, page, 4096, 0) != 4096)
            goto out;
        u64vec_push(&lat, now_ns() - at);
    }
    lat_summary(out, &lat);
    rc = 0;
out:
    if (rc != 0 && fd >= 0)
        note("commit probe %s: %s", path, strerror(errno));
    if (meta >= 0)
        close(meta);
    if (fd >= 0) {
        close(fd);
        unlink(path);
    }
    free(page);
    free(zero);
    free(lat.v);
    return rc;
}

/* The journal's append (daemon/journal.h) at the same pacing: one record of
 * `bytes` per request, the size of a turn's redo for one small submit (its
 * task record, input, queue and index keys). What an acknowledgement would
 * wait for if it waited for the journal instead of the LMDB commit: the
 * lower bound for a journal-first design on this disk. 0 on success. */
static int journal_probe(const char *dir, size_t bytes, double rate, double secs, disk_lat *out) {
    char path[1100];
    snprintf(path, sizeof path, "%.1024s/journal-probe.tmp", dir);
    hsq_journal *j = NULL;
    uint8_t *rec = xmalloc(bytes);
    u64vec lat = {0};
    int rc = probe_journal_open(path, &j);
    fill_random(rec, bytes, 0x10a1);
    uint64_t period = (uint64_t)(1e9 / rate), t0 = now_ns();
    uint64_t n = (uint64_t)(secs * rate);
    for (uint64_t i = 0; rc == 0 && i < n; i++) {
        uint64_t at = t0 + i * period;
        sleep_until_ns(at);
        rec[0] = (uint8_t)i;
        rc = probe_append(j, rec, bytes);
        u64vec_push(&lat, now_ns() - at);
    }
    if (rc != 0) {
        note("journal probe %s: %s", path, hsq_strerror(rc));
    } else {
        lat_summary(out, &lat);
    }
    hsq_journal_close(&j);
    unlink(path);
    free(rec);
    free(lat.v);
    return rc == 0 ? 0 : -1;
}

/* The same records appended to two journals at once, each by a thread of
 * its own, and a request done when the first of the two has its record on
 * the disk: whether the disk's stalls hit two files apart (then a mirrored
 * journal would cut the tail) or together. Each file takes its records in
 * order; one that lags catches up while the other answers. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t target; /* requests 1..target are asked for */
    uint64_t first;  /* requests 1..first are on the disk in at least one file */
    int quit, err;
    uint8_t *rec;
    size_t bytes;
} mirror;

typedef struct {
    mirror *m;
    hsq_journal *j;
} mirror_arg;

static void *mirror_main(void *p) {
    mirror_arg *a = p;
    mirror *m = a->m;
    uint64_t done = 0;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        while (!m->quit && done >= m->target)
            pthread_cond_wait(&m->cv, &m->mu);
        if (m->quit)
            break;
        pthread_mutex_unlock(&m->mu);
        int rc = probe_append(a->j, m->rec, m->bytes);
        pthread_mutex_lock(&m->mu);
        if (rc != 0)
            m->err = rc;
        done++;
        if (done > m->first)
            m->first = done;
        pthread_cond_broadcast(&m->cv);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

static int mirror_probe(const char *dir, size_t bytes, double rate, double secs, disk_lat *out) {
    mirror m = {.bytes = bytes};
    pthread_mutex_init(&m.mu, NULL);
    pthread_cond_init(&m.cv, NULL);
    m.rec = xmalloc(bytes);
    fill_random(m.rec, bytes, 0x10a2);
    mirror_arg a[2] = {{&m, NULL}, {&m, NULL}};
    char path[2][1100];
    int rc = 0, started = 0;
    pthread_t th[2];
    for (int i = 0; i < 2 && rc == 0; i++) {
        snprintf(path[i], sizeof path[i], "%.1024s/journal-mirror-%d.tmp", dir, i);
        rc = probe_journal_open(path[i], &a[i].j);
    }
    for (int i = 0; i < 2 && rc == 0; i++)
        if (pthread_create(&th[i], NULL, mirror_main, &a[i]) == 0)
            started++;
        else
            rc = -EAGAIN;
    u64vec lat = {0};
    uint64_t period = (uint64_t)(1e9 / rate), t0 = now_ns();
    uint64_t n = (uint64_t)(secs * rate);
    for (uint64_t i = 1; rc == 0 && i <= n; i++) {
        uint64_t at = t0 + (i - 1) * period;
        sleep_until_ns(at);
        pthread_mutex_lock(&m.mu);
        m.target = i;
        pthread_cond_broadcast(&m.cv);
        while (m.first < i && !m.err)
            pthread_cond_wait(&m.cv, &m.mu);
        rc = m.err;
        pthread_mutex_unlock(&m.mu);
        u64vec_push(&lat, now_ns() - at);
    }
    pthread_mutex_lock(&m.mu);
    m.quit = 1;
    pthread_cond_broadcast(&m.cv);
    pthread_mutex_unlock(&m.mu);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (rc != 0) {
        note("mirror probe %s: %s", dir, hsq_strerror(rc));
    } else {
        lat_summary(out, &lat);
    }
    for (int i = 0; i < 2; i++) {
        hsq_journal_close(&a[i].j);
        unlink(path[i]);
    }
    pthread_cond_destroy(&m.cv);
    pthread_mutex_destroy(&m.mu);
    free(m.rec);
    free(lat.v);
    return rc == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* beanstalkd */

typedef struct {
    int fd;
    char *r;
    size_t rlen, rcap;
    char *w;
    size_t wlen, wcap;
} conn;

static int tcp_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void conn_init(conn *c, int fd) {
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->rcap = 1 << 16;
    c->r = xmalloc(c->rcap);
    c->wcap = 1 << 16;
    c->w = xmalloc(c->wcap);
}

/* Connect to 127.0.0.1:port; 0, or -errno with a message in err. */
static int conn_open(conn *c, int port, char *err, size_t errlen) {
    int fd = tcp_connect(port);
    if (fd < 0) {
        snprintf(err, errlen, "connect to port %d: %s", port, strerror(-fd));
        return fd;
    }
    conn_init(c, fd);
    return 0;
}

static void conn_free(conn *c) {
    if (c->fd >= 0)
        close(c->fd);
    free(c->r);
    free(c->w);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

static void conn_put(conn *c, const void *p, size_t n) {
    if (c->wlen + n > c->wcap) {
        while (c->wlen + n > c->wcap)
            c->wcap *= 2;
        c->w = xrealloc(c->w, c->wcap);
    }
    memcpy(c->w + c->wlen, p, n);
    c->wlen += n;
}

__attribute__((format(printf, 2, 3))) static void conn_printf(conn *c, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    conn_put(c, tmp, (size_t)n);
}

/* Write everything queued; 0 or -errno. The peer never stops reading for
 * long (beanstalkd is non-blocking), so blocking writes are fine. */
static int conn_flush(conn *c) {
    size_t off = 0;
    while (off < c->wlen) {
        ssize_t n = write(c->fd, c->w + off, c->wlen - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        off += (size_t)n;
    }
    c->wlen = 0;
    return 0;
}

/* Wait up to timeout_ns (0: don't wait) for input and read what is there.
 * Returns bytes read (0 on timeout) or -1 on EOF/error. */
static ssize_t conn_fill(conn *c, uint64_t timeout_ns) {
    struct pollfd pfd = {c->fd, POLLIN, 0};
    struct timespec ts = {(time_t)(timeout_ns / 1000000000u), (long)(timeout_ns % 1000000000u)};
    int r = ppoll(&pfd, 1, &ts, NULL);
    if (r < 0)
        return errno == EINTR ? 0 : -1;
    if (r == 0)
        return 0;
    if (c->rcap - c->rlen < 4096) {
        c->rcap *= 2;
        c->r = xrealloc(c->r, c->rcap);
    }
    ssize_t n = read(c->fd, c->r + c->rlen, c->rcap - c->rlen);
    if (n <= 0)
        return n == 0 || errno != EINTR ? -1 : 0;
    c->rlen += (size_t)n;
    return n;
}

/* Length of the first line (up to and excluding "\r\n") or -1 if incomplete. */
static ssize_t conn_line(const conn *c, size_t from) {
    for (size_t i = from; i + 1 < c->rlen; i++)
        if (c->r[i] == '\r' && c->r[i + 1] == '\n')
            return (ssize_t)(i - from);
    return -1;
}

static void conn_consume(conn *c, size_t n) {
    memmove(c->r, c->r + n, c->rlen - n);
    c->rlen -= n;
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    close(fd);
    return ntohs(a.sin_port);
}

typedef struct {
    proc p;
    int port;
} bs_server;

/* Start beanstalkd on a free loopback port; binlog_dir NULL = no binlog,
 * else -b binlog_dir -f0. 0 or -1. */
static int bs_start(const opts *o, bs_server *s, const char *binlog_dir, const char *log) {
    for (int attempt = 0; attempt < 8; attempt++) {
        int port = free_port();
        if (port <= 0)
            die("cannot pick a free port: %s", strerror(-port));
        char portstr[16];
        snprintf(portstr, sizeof portstr, "%d", port);
        /* -z: room for the 2 MB jobs some callers may try; no cost otherwise */
        char *argv[12];
        int n = 0;
        argv[n++] = (char *)o->beanstalkd;
        argv[n++] = "-l";
        argv[n++] = "127.0.0.1";
        argv[n++] = "-p";
        argv[n++] = portstr;
        argv[n++] = "-z";
        argv[n++] = "4194304";
        if (binlog_dir) {
            argv[n++] = "-b";
            argv[n++] = (char *)binlog_dir;
            argv[n++] = "-f0";
        }
        argv[n] = NULL;
        int rc = proc_start(&s->p, argv, log, -1);
        if (rc < 0)
            die("cannot start %s: %s", o->beanstalkd, strerror(-rc));
        /* Readiness: the first successful connect. Give up on this port when
         * the process exits (port taken meanwhile) and try another. */
        uint64_t until = now_ns() + 10ull * 1000000000u;
        int st = 0;
        for (;;) {
            if (proc_exited(&s->p, &st)) {
                debug("beanstalkd on port %d exited (status %d); retrying", port, st);
                break;
            }
            int fd = tcp_connect(port);
            if (fd >= 0) {
                close(fd);
                s->port = port;
                return 0;
            }
            if (now_ns() > until) {
                proc_stop(&s->p, 2000);
                break;
            }
            sleep_ms(2);
        }
    }
    print_log_tail(log);
    return -1;
}

typedef struct {
    int port;
    double rate; /* 0 = as fast as the window allows */
    uint64_t dur_ns;
    int window;
    size_t size;
    backlog *bl;
    /* out */
    uint64_t t_start, t_end;
    recvec sent; /* (job id, t_send) */
    u64vec ack;
    uint64_t acked, errors;
    char err[128];
} bs_prod;

static void *bs_prod_main(void *arg) {
    bs_prod *P = arg;
    conn c;
    if (conn_open(&c, P->port, P->err, sizeof P->err) != 0)
        return NULL;
    char *body = xmalloc(P->size + 2);
    fill_random(body, P->size, 42);
    body[0] = 'J'; /* real job; sentinels start with 'E' */
    memcpy(body + P->size, "\r\n", 2);
    uint64_t *ring = xmalloc((size_t)P->window * sizeof *ring);
    size_t head = 0, inflight = 0;
    uint64_t period = P->rate > 0 ? (uint64_t)(1e9 / P->rate) : 0;
    uint64_t start = now_ns(), next = start, stop_at = start + P->dur_ns;
    P->t_start = start;
    for (;;) {
        uint64_t t = now_ns();
        int sending = t < stop_at;
        if (!sending && inflight == 0)
            break;
        int held = 0;
        while (sending && inflight < (size_t)P->window && (!period || t >= next)) {
            if (!backlog_take(P->bl)) {
                held = 1;
                break;
            }
            conn_printf(&c, "put 0 0 %d %zu\r\n", BS_TUBE_TTR, P->size);
            conn_put(&c, body, P->size + 2);
            ring[(head + inflight) % (size_t)P->window] = period ? next : t;
            inflight++;
            next += period;
        }
        if (conn_flush(&c) != 0) {
            snprintf(P->err, sizeof P->err, "write: %s", strerror(errno));
            break;
        }
        uint64_t wait = 200000000u; /* 200 ms */
        if (sending && period && inflight < (size_t)P->window)
            wait = next > t ? next - t : 0;
        else if (sending && !period && inflight < (size_t)P->window)
            wait = 0;
        /* Held by the backlog bound: look again in 0.5 ms, or at once when a
         * reply comes in (it is timestamped when it arrives either way). */
        if (held)
            wait = 500000;
        if (conn_fill(&c, wait) < 0) {
            snprintf(P->err, sizeof P->err, "connection closed by beanstalkd");
            break;
        }
        ssize_t len;
        uint64_t tr = now_ns();
        while (inflight > 0 && (len = conn_line(&c, 0)) >= 0) {
            unsigned long long id;
            uint64_t ts = ring[head];
            head = (head + 1) % (size_t)P->window;
            inflight--;
            if (sscanf(c.r, "INSERTED %llu", &id) == 1) {
                P->acked++;
                recvec_push(&P->sent, id, ts);
                u64vec_push(&P->ack, tr - ts);
                P->t_end = tr;
            } else {
                if (!P->errors)
                    snprintf(P->err, sizeof P->err, "put: %.*s", (int)len, c.r);
                P->errors++;
            }
            conn_consume(&c, (size_t)len + 2);
        }
    }
    free(ring);
    free(body);
    conn_free(&c);
    return NULL;
}

typedef struct {
    int port;
    int window;
    backlog *bl;
    atomic_uint_fast64_t target; /* jobs to delete; UINT64_MAX until known */
    /* out */
    recvec got; /* (job id, t_reserved) */
    uint64_t deleted, t_last, errors;
    char err[128];
} bs_cons;

static void *bs_cons_main(void *arg) {
    bs_cons *C = arg;
    conn c;
    if (conn_open(&c, C->port, C->err, sizeof C->err) != 0)
        return NULL;
    /* Outstanding deletes in order: id, with the top bit set for sentinels. */
    u64vec dq = {0};
    size_t dq_head = 0;
    uint64_t reserved = 0;
    int outstanding = 0; /* reserves sent, not answered */
    for (int i = 0; i < C->window; i++, outstanding++)
        conn_printf(&c, "reserve-with-timeout 1\r\n");
    for (;;) {
        uint64_t target = atomic_load(&C->target);
        if (C->deleted >= target)
            break;
        if (conn_flush(&c) != 0 || conn_fill(&c, 200000000u) < 0) {
            snprintf(C->err, sizeof C->err, "connection to beanstalkd lost");
            break;
        }
        ssize_t len;
        while ((len = conn_line(&c, 0)) >= 0) {
            unsigned long long id;
            size_t bytes;
            uint64_t t = now_ns();
            if (sscanf(c.r, "RESERVED %llu %zu", &id, &bytes) == 2) {
                size_t need = (size_t)len + 2 + bytes + 2;
                if (c.rlen < need)
                    break; /* body not complete yet */
                int sentinel = c.r[len + 2] == 'E';
                if (!sentinel) {
                    recvec_push(&C->got, id, t);
                    reserved++;
                    atomic_fetch_add(&C->bl->leased, 1);
                }
                conn_printf(&c, "delete %llu\r\n", id);
                u64vec_push(&dq, id | (sentinel ? 1ull << 63 : 0));
                outstanding--;
                conn_consume(&c, need);
            } else if (strncmp(c.r, "DELETED", 7) == 0 || strncmp(c.r, "NOT_FOUND", 9) == 0) {
                if (dq_head < dq.n) {
                    uint64_t d = dq.v[dq_head++];
                    if (!(d >> 63)) {
                        if (c.r[0] == 'D') {
                            C->deleted++;
                            C->t_last = t;
                        } else {
                            C->errors++;
                        }
                    }
                }
                conn_consume(&c, (size_t)len + 2);
            } else if (strncmp(c.r, "TIMED_OUT", 9) == 0 ||
                       strncmp(c.r, "DEADLINE_SOON", 13) == 0) {
                outstanding--;
                conn_consume(&c, (size_t)len + 2);
            } else {
                if (!C->errors)
                    snprintf(C->err, sizeof C->err, "reserve: %.*s", (int)len, c.r);
                C->errors++;
                outstanding--;
                conn_consume(&c, (size_t)len + 2);
            }
        }
        /* Keep `window` reserves queued until every real job is reserved. */
        target = atomic_load(&C->target);
        while (outstanding < C->window && reserved < target) {
            conn_printf(&c, "reserve-with-timeout 1\r\n");
            outstanding++;
        }
        if (dq_head > 4096 && dq_head * 2 > dq.n) {
            memmove(dq.v, dq.v + dq_head, (dq.n - dq_head) * sizeof *dq.v);
            dq.n -= dq_head;
            dq_head = 0;
        }
    }
    free(dq.v);
    conn_free(&c);
    return NULL;
}

/* Queue enough sentinel jobs to answer every reserve the consumer still has
 * pending, so that the deletes queued behind them run now instead of after
 * the reserves' timeouts. */
static void bs_put_sentinels(int port, int n) {
    conn c;
    char err[64];
    if (conn_open(&c, port, err, sizeof err) != 0)
        return;
    for (int i = 0; i < n; i++)
        conn_printf(&c, "put 0 0 %d 1\r\nE\r\n", BS_TUBE_TTR);
    conn_flush(&c);
    for (int got = 0; got < n;) {
        if (conn_fill(&c, 2000000000u) <= 0)
            break;
        ssize_t len;
        while ((len = conn_line(&c, 0)) >= 0) {
            conn_consume(&c, (size_t)len + 2);
            got++;
        }
    }
    conn_free(&c);
}

static result bs_run(const opts *o, pid_t pid, int port, double rate, double secs) {
    result r = {0};
    double server0 = proc_cpu_s(pid), self0 = self_cpu_s();
    backlog bl;
    backlog_init(&bl, o->max_backlog < 0 ? (uint64_t)o->bs_window : (uint64_t)o->max_backlog);
    bs_prod P = {.port = port,
                 .rate = rate,
                 .dur_ns = (uint64_t)(secs * 1e9),
                 .window = o->bs_window,
                 .size = o->job_bytes,
                 .bl = &bl};
    bs_cons *C = xmalloc(sizeof *C);
    memset(C, 0, sizeof *C);
    C->port = port;
    C->window = o->bs_window;
    C->bl = &bl;
    atomic_init(&C->target, UINT64_MAX);
    pthread_t tp, tc;
    pthread_create(&tc, NULL, bs_cons_main, C);
    pthread_create(&tp, NULL, bs_prod_main, &P);
    pthread_join(tp, NULL);
    atomic_store(&C->target, P.acked);
    bs_put_sentinels(port, o->bs_window);
    pthread_join(tc, NULL);

    r.submitted = P.acked;
    r.jobs = C->deleted;
    cpu_per_job(&r, server0, proc_cpu_s(pid), self0, self_cpu_s());
    r.errors = P.errors + C->errors;
    r.peak_backlog = atomic_load(&bl.peak);
    r.secs = (double)(C->t_last > P.t_start ? C->t_last - P.t_start : 0) / 1e9;
    r.ok = P.err[0] == 0 && C->err[0] == 0 && r.jobs == P.acked && r.jobs > 0;
    snprintf(r.err, sizeof r.err, "%.120s%s%.120s", P.err, P.err[0] && C->err[0] ? "; " : "",
             C->err);
    result_fill(&r, &P.ack, &P.sent, &C->got);
    free(P.sent.v);
    free(P.ack.v);
    free(C->got.v);
    free(C);
    return r;
}

/* ------------------------------------------------------------------ */
/* hsqd */

typedef struct {
    proc p;
    char client_ep[256], worker_ep[256], events_ep[256];
    char data[1024];
} hsqd_server;

/* Split the template on blanks, substituting %D (data dir), %F (ready fd)
 * and %% (a percent sign) inside each word. With curve_dir (the CURVE run),
 * hsqd gets <curve_dir>/server.key and <curve_dir>/clients and the
 * template's --insecure is dropped, so a plaintext fallback cannot pass for
 * an encrypted run. */
static int build_hsqd_argv(const opts *o, const char *data, const char *blob_dir,
                           const char *curve_dir, int ready_fd, char **argv, int max) {
    int n = 0;
    argv[n++] = xstrdup(o->hsqd);
    const char *s = o->hsqd_args;
    while (*s) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s)
            break;
        char word[2048];
        size_t w = 0;
        while (*s && *s != ' ' && *s != '\t') {
            char tmp[1100];
            const char *add = NULL;
            if (s[0] == '%' && s[1] == 'D') {
                add = data;
                s += 2;
            } else if (s[0] == '%' && s[1] == 'F') {
                snprintf(tmp, sizeof tmp, "%d", ready_fd);
                add = tmp;
                s += 2;
            } else if (s[0] == '%' && s[1] == '%') {
                add = "%";
                s += 2;
            } else {
                tmp[0] = *s++;
                tmp[1] = 0;
                add = tmp;
            }
            size_t k = strlen(add);
            if (w + k >= sizeof word)
                die("--hsqd-args word too long");
            memcpy(word + w, add, k);
            w += k;
        }
        word[w] = 0;
        if (curve_dir && strcmp(word, "--insecure") == 0)
            continue;
        if (n >= max - 1)
            die("too many hsqd arguments");
        argv[n++] = xstrdup(word);
    }
    for (int i = 0; i < o->n_extra; i++) {
        if (curve_dir && strcmp(o->extra[i], "--insecure") == 0)
            continue;
        if (n >= max - 1)
            die("too many hsqd arguments");
        argv[n++] = xstrdup(o->extra[i]);
    }
    if (blob_dir) {
        if (n >= max - 2)
            die("too many hsqd arguments");
        char kv[1200];
        snprintf(kv, sizeof kv, "blob_dir=%s", blob_dir);
        argv[n++] = xstrdup("--set");
        argv[n++] = xstrdup(kv);
    }
    if (curve_dir) {
        if (n >= max - 4)
            die("too many hsqd arguments");
        char kv[1200];
        snprintf(kv, sizeof kv, "curve_secret_key_file=%s/server.key", curve_dir);
        argv[n++] = xstrdup("--set");
        argv[n++] = xstrdup(kv);
        snprintf(kv, sizeof kv, "clients_file=%s/clients", curve_dir);
        argv[n++] = xstrdup("--set");
        argv[n++] = xstrdup(kv);
    }
    argv[n] = NULL;
    return n;
}

/* Start hsqd on data dir `data` and read its endpoints from the ready fd. */
static int hsqd_start(const opts *o, hsqd_server *s, const char *data, const char *blob_dir,
                      const char *curve_dir, const char *log) {
    memset(s, 0, sizeof *s);
    snprintf(s->data, sizeof s->data, "%s", data);
    if (mkdir(data, 0700) != 0 && errno != EEXIST)
        die("mkdir %s: %s", data, strerror(errno));
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        die("pipe: %s", strerror(errno));
    char *argv[MAX_EXTRA_ARGS + 32];
    int argc = build_hsqd_argv(o, data, blob_dir, curve_dir, pfd[1], argv,
                               (int)(sizeof argv / sizeof *argv));
    if (verbose) {
        fprintf(stderr, "bench-broker: starting");
        for (int i = 0; i < argc; i++)
            fprintf(stderr, " %s", argv[i]);
        fputc('\n', stderr);
    }
    int rc = proc_start(&s->p, argv, log, pfd[1]);
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    close(pfd[1]);
    if (rc < 0) {
        close(pfd[0]);
        note("cannot start %s: %s", o->hsqd, strerror(-rc));
        return -1;
    }
    /* Read until EOF: hsqd closes the fd once it serves. */
    char buf[2048];
    size_t len = 0;
    uint64_t until = now_ns() + 30ull * 1000000000u;
    for (;;) {
        struct pollfd p = {pfd[0], POLLIN, 0};
        int left = (int)(((int64_t)until - (int64_t)now_ns()) / 1000000);
        if (left <= 0) {
            note("hsqd did not report ready within 30 s");
            goto fail;
        }
        int r = poll(&p, 1, left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue;
        ssize_t n = read(pfd[0], buf + len, sizeof buf - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len >= sizeof buf - 1)
            break;
    }
    buf[len] = 0;
    close(pfd[0]);
    pfd[0] = -1;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "client=", 7) == 0)
            snprintf(s->client_ep, sizeof s->client_ep, "%s", line + 7);
        else if (strncmp(line, "worker=", 7) == 0)
            snprintf(s->worker_ep, sizeof s->worker_ep, "%s", line + 7);
        else if (strncmp(line, "events=", 7) == 0)
            snprintf(s->events_ep, sizeof s->events_ep, "%s", line + 7);
    }
    if (!s->client_ep[0] || !s->worker_ep[0]) {
        int st = 0;
        if (proc_exited(&s->p, &st))
            note("hsqd exited before it was ready (status %d)", st);
        else
            note("hsqd closed its ready fd without naming client= and worker= endpoints");
        goto fail;
    }
    debug("hsqd pid %d client=%s worker=%s", (int)s->p.pid, s->client_ep, s->worker_ep);
    return 0;
fail:
    if (pfd[0] >= 0)
        close(pfd[0]);
    proc_stop(&s->p, 3000);
    print_log_tail(log);
    return -1;
}

/* Receive all parts of one message into parts[] (max n); returns the number
 * of parts, 0 on timeout (EAGAIN), -1 on error. Extra parts are dropped. */
static int zrecv_multi(void *sock, zmq_msg_t *parts, int max, int flags) {
    int n = 0;
    for (;;) {
        zmq_msg_t tmp;
        zmq_msg_t *m = n < max ? &parts[n] : &tmp;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, sock, n == 0 ? flags : 0) < 0) {
            zmq_msg_close(m);
            if (n == 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
            return -1;
        }
        int more = zmq_msg_more(m);
        if (m == &tmp)
            zmq_msg_close(m);
        else
            n++;
        if (!more)
            return n;
    }
}

static void zclose_parts(zmq_msg_t *parts, int n) {
    for (int i = 0; i < n; i++)
        zmq_msg_close(&parts[i]);
}

/* A client's CURVE keys (Z85, NUL-terminated): hsqd's public key and the
 * client's own pair. */
typedef struct {
    char server[41], pub[41], sec[41];
} curve_keys;

/* A DEALER connected to ep; with keys, a CURVE client (NULL: plaintext). */
static void *zsocket_dealer(void *ctx, const char *ep, const curve_keys *keys) {
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    if (!s)
        die("zmq_socket: %s", zmq_strerror(errno));
    if (keys && (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, keys->server, 41) != 0 ||
                 zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, keys->pub, 41) != 0 ||
                 zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, keys->sec, 41) != 0))
        die("CURVE socket options: %s", zmq_strerror(errno));
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    /* The windows bound what is queued; no HWM drops or blocks on top. */
    zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero);
    if (zmq_connect(s, ep) != 0)
        die("zmq_connect %s: %s", ep, zmq_strerror(errno));
    return s;
}

static int zsend_meta(void *sock, const hsq_wbuf *meta, const void *frame, size_t flen) {
    if (zmq_send(sock, meta->data, meta->len, frame ? ZMQ_SNDMORE : 0) < 0)
        return -errno;
    if (frame && zmq_send(sock, frame, flen, 0) < 0)
        return -errno;
    return 0;
}

/* Wait until the monotonic time `until` for input on sock, to the
 * nanosecond: ZMQ_EVENTS, then ppoll on ZMQ_FD (which only says "look
 * again"), and again. 1 when readable. */
static int zwait_until_ns(void *sock, uint64_t until) {
    int fd;
    size_t len = sizeof fd;
    if (zmq_getsockopt(sock, ZMQ_FD, &fd, &len) != 0)
        return 0;
    for (;;) {
        int ev = 0;
        len = sizeof ev;
        if (zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &len) != 0)
            return 0;
        if (ev & ZMQ_POLLIN)
            return 1;
        uint64_t t = now_ns();
        if (t >= until)
            return 0;
        struct timespec ts = {(time_t)((until - t) / 1000000000u),
                              (long)((until - t) % 1000000000u)};
        struct pollfd p = {fd, POLLIN, 0};
        if (ppoll(&p, 1, &ts, NULL) < 0 && errno != EINTR)
            return 0;
    }
}

/* Wait up to ms (-1: forever) for input on sock; 1 when readable. */
static int zwait(void *sock, long ms) {
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    int r = zmq_poll(&it, 1, ms);
    return r > 0 && (it.revents & ZMQ_POLLIN);
}

typedef struct {
    void *ctx;
    const char *ep;
    const curve_keys *curve; /* NULL: plaintext */
    int index;
    int users;
    double rate;     /* 0 = unpaced */
    uint64_t dur_ns; /* 0 = until `count` */
    uint64_t count;  /* 0 = until dur_ns */
    int window;
    const uint8_t *payload;
    size_t size;
    atomic_int *stop; /* shared: set on queue_full in the fill run */
    backlog *bl;
    /* out */
    uint64_t t_start, t_end;
    recvec sent; /* (task id, t_send) */
    u64vec ack;
    uint64_t acked, errors, queue_full;
    char err[256];
} hq_prod;

static void *hq_prod_main(void *arg) {
    hq_prod *P = arg;
    void *s = zsocket_dealer(P->ctx, P->ep, P->curve);
    hsq_wbuf wb;
    hsq_wbuf_init(&wb);
    u64vec tsend = {0}; /* indexed by rid - 1 */
    uint64_t period = P->rate > 0 ? (uint64_t)(1e9 / P->rate) : 0;
    uint64_t rid = 0, inflight = 0;
    uint64_t start = now_ns(), next = start;
    uint64_t stop_at = P->dur_ns ? start + P->dur_ns : UINT64_MAX;
    char user[64];
    P->t_start = start;
    zmq_msg_t parts[4];
    for (;;) {
        uint64_t t = now_ns();
        int sending =
            t < stop_at && (!P->count || rid < P->count) && !(P->stop && atomic_load(P->stop));
        if (!sending && inflight == 0)
            break;
        int held = 0;
        while (sending && inflight < (uint64_t)P->window && (!period || t >= next) &&
               (!P->count || rid < P->count)) {
            if (!backlog_take(P->bl)) {
                held = 1;
                break;
            }
            hsq_wire_msg m;
            memset(&m, 0, sizeof m);
            m.v = HSQ_WIRE_VERSION;
            m.kind = HSQ_KIND_REQUEST;
            m.op = HSQ_OP_SUBMIT;
            m.rid = ++rid;
            hsq_req_submit *q = &m.req.submit;
            snprintf(user, sizeof user, "bench-p%d-u%d", P->index,
                     (int)(rid % (uint64_t)(P->users > 0 ? P->users : 1)));
            q->user = hsq_str_c(user);
            q->prio = HSQ_PRIO_NORMAL;
            q->n_inputs = 1;
            q->inputs[0].kind = HSQ_STR_LIT("portrait");
            q->inputs[0].name = HSQ_STR_LIT("bench.jpg");
            q->inputs[0].frame = 0;
            q->n_outputs = 1;
            q->outputs[0] = (hsq_wire_outspec){
                .width = 512, .height = 512, .format = HSQ_FMT_JPEG, .quality = 90};
            hsq_wbuf_reset(&wb);
            int rc = hsq_wire_encode(&m, &wb);
            if (rc != 0) {
                snprintf(P->err, sizeof P->err, "hsq_wire_encode(submit): %s", hsq_strerror(rc));
                goto out;
            }
            u64vec_push(&tsend, period ? next : t);
            if ((rc = zsend_meta(s, &wb, P->payload, P->size)) != 0) {
                snprintf(P->err, sizeof P->err, "send: %s", zmq_strerror(-rc));
                goto out;
            }
            inflight++;
            next += period;
            t = now_ns();
        }
        long wait_ms = 200;
        if (sending && inflight < (uint64_t)P->window) {
            if (!period) {
                wait_ms = 0;
            } else {
                uint64_t d = next > t ? next - t : 0;
                wait_ms = (long)(d / 1000000u);
            }
        }
        /* Held by the backlog bound: look again in 1 ms, or at once when a
         * reply comes in (it is timestamped when it arrives either way), so no
         * core the broker needs is spent spinning. */
        if (held)
            wait_ms = 1;
        /* Paced: wait for a reply or the next send time to the nanosecond
         * (zmq_poll counts in ms; sleeping the rest would leave a reply that
         * arrives meanwhile unread, and its ack time late by up to a period). */
        int ready = sending && period && inflight < (uint64_t)P->window && !held
                        ? zwait_until_ns(s, next)
                        : zwait(s, wait_ms);
        if (!ready)
            continue;
        int n;
        while ((n = zrecv_multi(s, parts, 4, ZMQ_DONTWAIT)) > 0) {
            uint64_t tr = now_ns();
            hsq_wire_msg m;
            int rc = hsq_wire_decode(zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]),
                                     (size_t)(n - 1), &m);
            if (rc != 0) {
                snprintf(P->err, sizeof P->err, "undecodable reply: %s (%s)", m.errmsg,
                         hsq_strerror(rc));
                hsq_wire_msg_free(&m);
                zclose_parts(parts, n);
                goto out;
            }
            if (m.op == HSQ_OP_SUBMIT && m.rid >= 1 && m.rid <= tsend.n) {
                inflight--;
                uint64_t ts = tsend.v[m.rid - 1];
                if (m.kind == HSQ_KIND_REPLY) {
                    P->acked++;
                    P->t_end = tr;
                    recvec_push(&P->sent, m.rep.submit.task, ts);
                    u64vec_push(&P->ack, tr - ts);
                } else {
                    if (m.kind == HSQ_KIND_ERROR && m.rep.error.code == HSQ_EQUEUEFULL) {
                        P->queue_full++;
                        if (P->stop)
                            atomic_store(P->stop, 1);
                    }
                    if (!P->errors)
                        snprintf(P->err, sizeof P->err, "submit refused: %s: %.*s",
                                 hsq_errname(m.rep.error.code), (int)m.rep.error.message.len,
                                 m.rep.error.message.ptr);
                    P->errors++;
                }
            }
            hsq_wire_msg_free(&m);
            zclose_parts(parts, n);
        }
    }
out:
    zmq_close(s);
    hsq_wbuf_free(&wb);
    free(tsend.v);
    return NULL;
}

/* The no-op benchmark workers: threads sharing this state, one socket each.
 * They live as long as their hsqd: a worker that disconnected with a lease
 * parked could be handed tasks that nobody would ever answer until the
 * lease expired, so runs share the workers instead of starting their own. */
typedef struct {
    void *ctx;
    const char *ep;
    const curve_keys *curve; /* NULL: plaintext */
    const char *blob_root;   /* hsqd's blob store, where the empty outputs go */
    int rootfd;              /* ... opened */
    char empty[2048];        /* an empty file beside it (same filesystem): linked as outputs */
    uint32_t wait_ms;
    atomic_int quit;
    atomic_int failed;           /* set with err when a worker gave up */
    pthread_mutex_t lock;        /* guards got, bl and err */
    recvec got;                  /* (task id, t_lease) */
    atomic_uint_fast64_t done;   /* done acks */
    atomic_uint_fast64_t t_last; /* time of the last done ack */
    atomic_uint_fast64_t errors;
    backlog *bl; /* the current run's, or NULL between runs */
    char err[256]; /* the first worker error */
} hq_worker;

/* Put an empty file at blob_root/key (and its directories). hsqd checks that
 * a reported output exists with the reported size, so the no-op worker
 * leaves an empty file there: no bytes, no fsync, no temp-file rename, unlike
 * a real worker, since what is measured is the broker, not the worker's disk.
 * Every task has a directory of its own, so the common case is one mkdir of
 * the key's directory and one link of the worker's empty file into it (no
 * new inode); the ancestors are made only when that mkdir says they are
 * missing (the first task of a user), and a file is created instead where
 * the empty file has all the links its filesystem allows. Both go relative
 * to the root's descriptor. The harness shares the CPUs with hsqd, so what
 * it spends here is taken from the broker: creating each file with its own
 * inode and full path was half of the harness's CPU. */
static int touch_blob(int rootfd, const char *empty, hsq_str key) {
    char path[2048];
    int n = snprintf(path, sizeof path, "%.*s", (int)key.len, key.ptr);
    if (n < 0 || (size_t)n >= sizeof path)
        return -ENAMETOOLONG;
    char *leaf = strrchr(path, '/');
    if (!leaf)
        return -EINVAL;
    *leaf = 0;
    int rc = mkdirat(rootfd, path, 0700);
    if (rc != 0 && errno == ENOENT) {
        for (char *p = path; (p = strchr(p, '/')); p++) {
            *p = 0;
            rc = mkdirat(rootfd, path, 0700);
            *p = '/';
            if (rc != 0 && errno != EEXIST)
                return -errno;
        }
        rc = mkdirat(rootfd, path, 0700);
    }
    if (rc != 0 && errno != EEXIST)
        return -errno;
    *leaf = '/';
    if (linkat(AT_FDCWD, empty, rootfd, path, 0) == 0)
        return 0;
    if (errno != EMLINK && errno != EEXIST)
        return -errno;
    int fd = openat(rootfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    close(fd);
    return 0;
}

/* SHA-256 of zero bytes: the fake outputs are empty files. */
static const uint8_t sha256_empty[32] = {
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55};

static void *hq_worker_main(void *arg) {
    hq_worker *W = arg;
    char err[sizeof W->err] = "";
    void *s = zsocket_dealer(W->ctx, W->ep, W->curve);
    hsq_wbuf wb;
    hsq_wbuf_init(&wb);
    uint64_t rid = 0;
    int rc;
    hsq_wire_msg m;
    zmq_msg_t parts[HSQ_MAX_INPUTS * HSQ_MAX_BATCH + 2];
    const int max_parts = (int)(sizeof parts / sizeof *parts);

    memset(&m, 0, sizeof m);
    m.v = HSQ_WIRE_VERSION;
    m.kind = HSQ_KIND_REQUEST;
    m.op = HSQ_OP_READY;
    m.rid = ++rid;
    m.req.ready.name = HSQ_STR_LIT("bench-noop");
    m.req.ready.backend = HSQ_STR_LIT("cpu");
    m.req.ready.device = HSQ_STR_LIT("bench-broker no-op worker (writes no outputs)");
    m.req.ready.max_batch = HSQ_MAX_BATCH;
    m.req.ready.prefetch = BENCH_PREFETCH;
    if ((rc = hsq_wire_encode(&m, &wb)) != 0 || (rc = zsend_meta(s, &wb, NULL, 0)) != 0) {
        snprintf(err, sizeof err, "ready: %s", hsq_strerror(rc));
        goto out;
    }
    int ready = 0, lease_out = 0;
    uint64_t pending_done = 0;
    while (!atomic_load(&W->quit)) {
        while (ready && lease_out < BENCH_PREFETCH) {
            memset(&m, 0, sizeof m);
            m.v = HSQ_WIRE_VERSION;
            m.kind = HSQ_KIND_REQUEST;
            m.op = HSQ_OP_LEASE;
            m.rid = ++rid;
            m.req.lease.max = HSQ_MAX_BATCH;
            m.req.lease.wait_ms = W->wait_ms;
            hsq_wbuf_reset(&wb);
            if ((rc = hsq_wire_encode(&m, &wb)) != 0 || (rc = zsend_meta(s, &wb, NULL, 0)) != 0) {
                snprintf(err, sizeof err, "lease: %s", hsq_strerror(rc));
                goto out;
            }
            lease_out++;
        }
        if (!zwait(s, 100))
            continue;
        int n;
        while ((n = zrecv_multi(s, parts, max_parts, ZMQ_DONTWAIT)) > 0) {
            uint64_t t = now_ns();
            hsq_wire_msg r;
            rc = hsq_wire_decode(zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]), (size_t)(n - 1),
                                 &r);
            if (rc != 0) {
                snprintf(err, sizeof err, "undecodable message from hsqd: %s (%s)", r.errmsg,
                         hsq_strerror(rc));
                hsq_wire_msg_free(&r);
                zclose_parts(parts, n);
                goto out;
            }
            if (r.kind == HSQ_KIND_ERROR) {
                if (atomic_fetch_add(&W->errors, 1) == 0) {
                    pthread_mutex_lock(&W->lock);
                    snprintf(W->err, sizeof W->err, "%s refused: %s: %.*s", hsq_op_name(r.op),
                             hsq_errname(r.rep.error.code), (int)r.rep.error.message.len,
                             r.rep.error.message.ptr);
                    pthread_mutex_unlock(&W->lock);
                }
                if (r.op == HSQ_OP_LEASE && lease_out)
                    lease_out--;
                else if (r.op == HSQ_OP_DONE && pending_done)
                    pending_done--;
                else if (r.op == HSQ_OP_READY) {
                    hsq_wire_msg_free(&r);
                    zclose_parts(parts, n);
                    goto out;
                }
            } else if (r.kind == HSQ_KIND_REPLY && r.op == HSQ_OP_READY) {
                ready = 1;
                debug("worker ready: lease_ms=%u heartbeat_ms=%u", r.rep.ready.lease_ms,
                      r.rep.ready.heartbeat_ms);
            } else if (r.kind == HSQ_KIND_REPLY && r.op == HSQ_OP_LEASE) {
                if (lease_out)
                    lease_out--;
                /* Answer every job at once; the encoded dones go out back to
                 * back, and the next lease follows them while the other one
                 * stays parked (prefetch). */
                pthread_mutex_lock(&W->lock);
                for (uint32_t i = 0; i < r.rep.lease.n; i++)
                    recvec_push(&W->got, r.rep.lease.jobs[i].task, t);
                if (W->bl)
                    atomic_fetch_add(&W->bl->leased, r.rep.lease.n);
                pthread_mutex_unlock(&W->lock);
                for (uint32_t i = 0; i < r.rep.lease.n; i++) {
                    const hsq_wire_job *j = &r.rep.lease.jobs[i];
                    hsq_wire_msg d;
                    memset(&d, 0, sizeof d);
                    d.v = HSQ_WIRE_VERSION;
                    d.kind = HSQ_KIND_REQUEST;
                    d.op = HSQ_OP_DONE;
                    d.rid = ++rid;
                    d.req.done.task = j->task;
                    d.req.done.token = j->token;
                    d.req.done.n_outputs = 1;
                    char key[HSQ_MAX_KEY_LEN + 1];
                    int kl = snprintf(key, sizeof key, "%.*sout-0.jpg", (int)j->out_prefix.len,
                                      j->out_prefix.ptr);
                    hsq_wire_output *op = &d.req.done.outputs[0];
                    op->key = (hsq_str){key, (size_t)kl < sizeof key ? (size_t)kl : sizeof key - 1};
                    op->size = 0;
                    memcpy(op->sha256, sha256_empty, 32);
                    if ((rc = touch_blob(W->rootfd, W->empty, op->key)) != 0) {
                        snprintf(err, sizeof err, "cannot create output %.150s: %s", key,
                                 strerror(-rc));
                        hsq_wire_msg_free(&r);
                        zclose_parts(parts, n);
                        goto out;
                    }
                    op->width = 1;
                    op->height = 1;
                    op->format = HSQ_FMT_JPEG;
                    hsq_wbuf_reset(&wb);
                    if ((rc = hsq_wire_encode(&d, &wb)) != 0 ||
                        (rc = zsend_meta(s, &wb, NULL, 0)) != 0) {
                        snprintf(err, sizeof err, "done: %s", hsq_strerror(rc));
                        hsq_wire_msg_free(&r);
                        zclose_parts(parts, n);
                        goto out;
                    }
                    pending_done++;
                }
            } else if (r.kind == HSQ_KIND_REPLY && r.op == HSQ_OP_DONE) {
                if (pending_done)
                    pending_done--;
                uint64_t last = atomic_load(&W->t_last);
                while (last < t && !atomic_compare_exchange_weak(&W->t_last, &last, t))
                    ;
                atomic_fetch_add(&W->done, 1);
            }
            /* abort commands and anything else: nothing to stop, ignored */
            hsq_wire_msg_free(&r);
            zclose_parts(parts, n);
        }
    }
out:
    if (!atomic_load(&W->quit))
        atomic_store(&W->failed, 1);
    if (err[0]) {
        pthread_mutex_lock(&W->lock);
        if (!W->err[0])
            memcpy(W->err, err, sizeof err);
        pthread_mutex_unlock(&W->lock);
    }
    zmq_close(s);
    hsq_wbuf_free(&wb);
    return NULL;
}

typedef struct {
    void *ctx;
    char blobs[1100];
    int own_blobs;  /* blobs was made for this hsqd: removed with it ... */
    int keep_blobs; /* ... unless --keep */
    hsqd_server srv;
    hq_worker *w; /* NULL: no workers (fill run) */
    pthread_t wt[MAX_WORKERS];
    int nw;
    int curve;              /* CURVE on both endpoints */
    curve_keys web, worker; /* the producers' (web role) and the worker's keys */
} hq_env;

static void hq_worker_start(hq_env *e, const char *blob_root, uint32_t wait_ms, int n) {
    hq_worker *W = xmalloc(sizeof *W);
    memset(W, 0, sizeof *W);
    W->ctx = e->ctx;
    W->ep = e->srv.worker_ep;
    W->curve = e->curve ? &e->worker : NULL;
    W->blob_root = blob_root;
    W->rootfd = open(blob_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (W->rootfd < 0)
        die("cannot open %s: %s", blob_root, strerror(errno));
    snprintf(W->empty, sizeof W->empty, "%s.empty", blob_root);
    int fd = open(W->empty, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        die("cannot create %s: %s", W->empty, strerror(errno));
    close(fd);
    W->wait_ms = wait_ms;
    pthread_mutex_init(&W->lock, NULL);
    atomic_init(&W->quit, 0);
    atomic_init(&W->failed, 0);
    atomic_init(&W->done, 0);
    atomic_init(&W->t_last, 0);
    atomic_init(&W->errors, 0);
    e->w = W;
    for (e->nw = 0; e->nw < n; e->nw++)
        pthread_create(&e->wt[e->nw], NULL, hq_worker_main, W);
}

static void hq_worker_stop(hq_env *e) {
    if (!e->w)
        return;
    atomic_store(&e->w->quit, 1);
    for (int i = 0; i < e->nw; i++)
        pthread_join(e->wt[i], NULL);
    e->nw = 0;
    pthread_mutex_destroy(&e->w->lock);
    close(e->w->rootfd);
    unlink(e->w->empty);
    free(e->w->got.v);
    free(e->w);
    e->w = NULL;
}

/* One hsqd run: `np` producers for `secs` (or `count` each), each paced at
 * `rate` (0: as fast as its window allows), plus the shared worker when
 * there is one. End to end when a worker runs, submit-only otherwise. */
static result hq_run(const opts *o, hq_env *e, int np, double rate, double secs, uint64_t count,
                     const uint8_t *payload, size_t size, int window, atomic_int *stop) {
    result r = {0};
    hq_prod *P = xmalloc((size_t)np * sizeof *P);
    pthread_t *t = xmalloc((size_t)np * sizeof *t);
    uint64_t done0 = e->w ? atomic_load(&e->w->done) : 0;
    size_t got0 = 0;
    double server0 = proc_cpu_s(e->srv.p.pid), self0 = self_cpu_s();
    backlog bl;
    /* Only with a consumer: the fill run queues on purpose. */
    uint64_t bmax = o->max_backlog < 0 ? (uint64_t)np * (uint64_t)window : (uint64_t)o->max_backlog;
    backlog_init(&bl, e->w ? bmax : 0);
    if (e->w) {
        pthread_mutex_lock(&e->w->lock);
        got0 = e->w->got.n;
        e->w->bl = &bl;
        pthread_mutex_unlock(&e->w->lock);
    }
    for (int i = 0; i < np; i++) {
        memset(&P[i], 0, sizeof P[i]);
        P[i].ctx = e->ctx;
        P[i].ep = e->srv.client_ep;
        P[i].curve = e->curve ? &e->web : NULL;
        P[i].index = i;
        P[i].users = o->users;
        P[i].rate = rate;
        P[i].dur_ns = (uint64_t)(secs * 1e9);
        P[i].count = count;
        P[i].window = window;
        P[i].payload = payload;
        P[i].size = size;
        P[i].stop = stop;
        P[i].bl = &bl;
        pthread_create(&t[i], NULL, hq_prod_main, &P[i]);
    }
    uint64_t t_start = UINT64_MAX, t_end = 0;
    recvec sent = {0};
    u64vec ack = {0};
    for (int i = 0; i < np; i++) {
        pthread_join(t[i], NULL);
        r.submitted += P[i].acked;
        r.errors += P[i].errors;
        if (P[i].t_start < t_start)
            t_start = P[i].t_start;
        if (P[i].t_end > t_end)
            t_end = P[i].t_end;
        recvec_append(&sent, &P[i].sent);
        u64vec_append(&ack, &P[i].ack);
        if (P[i].err[0] && !r.err[0])
            snprintf(r.err, sizeof r.err, "producer %d: %s", i, P[i].err);
        free(P[i].sent.v);
        free(P[i].ack.v);
    }
    recvec got = {0};
    if (e->w) {
        /* Drain: wait until every acknowledged submit has been done. The
         * bound is generous; a lost task shows up as the shortfall below. */
        uint64_t until = now_ns() + 60ull * 1000000000u;
        while (atomic_load(&e->w->done) - done0 < r.submitted && !atomic_load(&e->w->failed) &&
               now_ns() < until)
            sleep_ms(1);
        r.jobs = atomic_load(&e->w->done) - done0;
        uint64_t tl = atomic_load(&e->w->t_last);
        r.secs = tl > t_start ? (double)(tl - t_start) / 1e9 : 0;
        if (r.jobs < r.submitted && !r.err[0])
            snprintf(r.err, sizeof r.err,
                     "only %" PRIu64 " of %" PRIu64
                     " acknowledged submits were done within 60 s%s%.150s",
                     r.jobs, r.submitted, e->w->err[0] ? "; worker: " : "", e->w->err);
        pthread_mutex_lock(&e->w->lock);
        for (size_t i = got0; i < e->w->got.n; i++)
            recvec_push(&got, e->w->got.v[i].id, e->w->got.v[i].t);
        e->w->bl = NULL;
        pthread_mutex_unlock(&e->w->lock);
        r.errors += atomic_load(&e->w->errors);
    } else {
        r.jobs = r.submitted;
        r.secs = t_end > t_start ? (double)(t_end - t_start) / 1e9 : 0;
    }
    cpu_per_job(&r, server0, proc_cpu_s(e->srv.p.pid), self0, self_cpu_s());
    r.peak_backlog = atomic_load(&bl.peak);
    r.submits_s = t_end > t_start ? (double)r.submitted / ((double)(t_end - t_start) / 1e9) : 0;
    r.ok = r.jobs > 0 && r.jobs == r.submitted && !(r.err[0] && r.submitted == 0);
    result_fill(&r, &ack, &sent, &got);
    free(sent.v);
    free(ack.v);
    free(got.v);
    free(P);
    free(t);
    return r;
}

static void write_text(const char *path, mode_t mode, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    size_t n = strlen(text);
    if (fd < 0 || write(fd, text, n) != (ssize_t)n || close(fd) != 0)
        die("write %s: %s", path, strerror(errno));
}

/* Keys for a CURVE run, as `hsq keygen` and an operator would set them up:
 * hsqd's secret key in dir/server.key (0600), the producers' key with the
 * web role and the worker's with the worker role in dir/clients. */
static void curve_setup(hq_env *e, const char *dir) {
    char server_pub[41], server_sec[41], path[1200], text[512];
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        die("mkdir %s: %s", dir, strerror(errno));
    if (zmq_curve_keypair(server_pub, server_sec) != 0 ||
        zmq_curve_keypair(e->web.pub, e->web.sec) != 0 ||
        zmq_curve_keypair(e->worker.pub, e->worker.sec) != 0)
        die("zmq_curve_keypair: %s (libzmq without CURVE?)", zmq_strerror(errno));
    memcpy(e->web.server, server_pub, sizeof server_pub);
    memcpy(e->worker.server, server_pub, sizeof server_pub);
    snprintf(path, sizeof path, "%s/server.key", dir);
    snprintf(text, sizeof text, "%s\n", server_sec);
    write_text(path, 0600, text);
    snprintf(path, sizeof path, "%s/clients", dir);
    snprintf(text, sizeof text,
             "# bench-broker CURVE run\n%s web bench-producers\n%s worker bench-worker\n",
             e->web.pub, e->worker.pub);
    write_text(path, 0600, text);
}

/* Start hsqd (and the worker when with_worker) in data dir `name` under root. */
/* blob_dir: hsqd's blob store root (NULL: its default, <data dir>/blobs). */
/* curve: encrypt both endpoints (keys under root/<name>-keys). */
static int hq_env_start(const opts *o, hq_env *e, const char *root, const char *name,
                        int with_worker, const char *blob_dir, int curve) {
    char data[1024], log[1100], keys[1100];
    snprintf(data, sizeof data, "%s/%s", root, name);
    snprintf(log, sizeof log, "%s/%s.log", root, name);
    snprintf(keys, sizeof keys, "%s/%s-keys", root, name);
    memset(e, 0, sizeof *e);
    if (curve) {
        e->curve = 1;
        curve_setup(e, keys);
    }
    e->ctx = zmq_ctx_new();
    if (!e->ctx)
        die("zmq_ctx_new: %s", zmq_strerror(errno));
    if (blob_dir) {
        /* A blob root of its own in the shared one: the janitor of each hsqd
         * walks its blob store at start, and the outputs of the runs before
         * (hundreds of thousands of files) would be its to walk. */
        snprintf(e->blobs, sizeof e->blobs, "%s/%s-blobs", blob_dir, name);
        if (mkdir(e->blobs, 0700) != 0 && errno != EEXIST)
            die("mkdir %s: %s", e->blobs, strerror(errno));
        e->own_blobs = 1;
        e->keep_blobs = o->keep;
    } else {
        snprintf(e->blobs, sizeof e->blobs, "%s/blobs", data);
    }
    if (hsqd_start(o, &e->srv, data, blob_dir ? e->blobs : NULL, curve ? keys : NULL, log) != 0) {
        zmq_ctx_term(e->ctx);
        e->ctx = NULL;
        return -1;
    }
    if (with_worker)
        hq_worker_start(e, e->blobs, o->lease_wait_ms, o->workers);
    return 0;
}

/* Stop worker and hsqd; 0 when hsqd exited cleanly and logged no sanitizer
 * report, else -1 (and its log tail is shown). */
static int hq_env_stop(hq_env *e) {
    hq_worker_stop(e);
    int st = proc_stop(&e->srv.p, 10000);
    if (e->own_blobs && !e->keep_blobs)
        rm_rf(e->blobs); /* empty files by the hundred thousand, on tmpfs: memory */
    if (e->ctx)
        zmq_ctx_term(e->ctx);
    e->ctx = NULL;
    int bad = !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    FILE *f = fopen(e->srv.p.log, "r");
    if (f) {
        char line[1024];
        while (fgets(line, sizeof line, f)) {
            if (strstr(line, "Sanitizer") || strstr(line, "runtime error:"))
                bad = 1;
            const char *s = strstr(line, "stopped turns=");
            if (s) /* hsqd's own account: loop turns, messages, time committing */
                note("hsqd %.*s", (int)strcspn(s, "\n"), s);
        }
        fclose(f);
    }
    if (bad) {
        if (WIFSIGNALED(st))
            note("hsqd ended by signal %d", WTERMSIG(st));
        else
            note("hsqd exited with status %d or logged a sanitizer report", WEXITSTATUS(st));
        print_log_tail(e->srv.p.log);
    }
    return bad ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* attach mode: a paced load generator for another benchmark (bench/purge.py)
 *
 * One producer thread's worth of paced submits (--rate, --window, --users,
 * --job-bytes) against an hsqd that someone else runs, until SIGTERM or
 * SIGINT (or --paced-secs when given). With --ack-log FILE every acknowledged
 * submit is one line "SEND_NS LATENCY_NS": the scheduled send time on
 * CLOCK_MONOTONIC (Python's time.monotonic() reads the same clock) and the
 * time to its ack, so the caller can cut the run into its own phases. Prints
 * acks, errors and p50/p99/max; exit 1 when nothing was acknowledged. */

static atomic_int attach_stop;

static void on_attach_signal(int sig) {
    (void)sig;
    atomic_store(&attach_stop, 1);
}

static int run_attach(const opts *o) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_attach_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    void *ctx = zmq_ctx_new();
    if (!ctx)
        die("zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    uint8_t *payload = xmalloc(o->job_bytes);
    fill_random(payload, o->job_bytes, 7);
    backlog bl;
    backlog_init(&bl, 0); /* no consumer here: never held back */
    hq_prod P;
    memset(&P, 0, sizeof P);
    P.ctx = ctx;
    P.ep = o->attach;
    P.users = o->users;
    P.rate = o->paced_rate;
    P.dur_ns = o->paced_secs_set ? (uint64_t)(o->paced_secs * 1e9) : 0;
    P.window = o->window;
    P.payload = payload;
    P.size = o->job_bytes;
    P.stop = &attach_stop;
    P.bl = &bl;
    hq_prod_main(&P);
    int rc = 0;
    if (o->ack_log) {
        FILE *f = fopen(o->ack_log, "w");
        if (!f)
            die("%s: %s", o->ack_log, strerror(errno));
        for (size_t i = 0; i < P.sent.n && i < P.ack.n; i++)
            fprintf(f, "%" PRIu64 " %" PRIu64 "\n", P.sent.v[i].t, P.ack.v[i]);
        if (fclose(f) != 0)
            die("%s: %s", o->ack_log, strerror(errno));
    }
    uint64_t mx = 0;
    for (size_t i = 0; i < P.ack.n; i++)
        mx = P.ack.v[i] > mx ? P.ack.v[i] : mx;
    printf("attach %s: %" PRIu64 " acks, %" PRIu64 " errors, ack p50 %.3f p99 %.3f max %.3f ms%s%s\n",
           o->attach, P.acked, P.errors, pct_ms(&P.ack, 0.50), pct_ms(&P.ack, 0.99),
           (double)mx / 1e6, P.err[0] ? "; " : "", P.err);
    if (P.acked == 0)
        rc = 1;
    free(P.sent.v);
    free(P.ack.v);
    free(payload);
    zmq_ctx_term(ctx);
    return rc;
}

/* ------------------------------------------------------------------ */
/* report */

typedef struct {
    int ran;
    result tput; /* median of the throughput repeats */
    result paced;
} sys_res;

static int cmp_result(const void *a, const void *b) {
    double x = ((const result *)a)->jobs_s, y = ((const result *)b)->jobs_s;
    return x < y ? -1 : x > y;
}

/* Median by jobs/s of n runs (all must be ok; else the first failure). */
static result median_result(result *rs, int n) {
    for (int i = 0; i < n; i++)
        if (!rs[i].ok)
            return rs[i];
    qsort(rs, (size_t)n, sizeof *rs, cmp_result);
    return rs[n / 2];
}

static void show_run(const char *what, const result *r) {
    if (r->ok)
        note("%-26s %8.0f jobs/s  %" PRIu64 " jobs in %.2f s  ack p50 %.3f p99 %.3f ms  "
             "s->l p50 %.3f p99 %.3f ms  peak backlog %" PRIu64 "  cpu/job server %.0f "
             "harness %.0f us%s",
             what, r->jobs_s, r->jobs, r->secs, r->ack_p50, r->ack_p99, r->lease_p50, r->lease_p99,
             r->peak_backlog, r->server_us, r->harness_us, r->errors ? "  (with refusals)" : "");
    else
        note("%-30s FAILED: %s (%" PRIu64 " submitted, %" PRIu64 " done, %" PRIu64 " errors)", what,
             r->err[0] ? r->err : "no jobs completed", r->submitted, r->jobs, r->errors);
}

/* A fresh hsqd (data dir root/name, blob store blob_dir or its own, CURVE
 * or not) for the throughput runs alone: o->repeat runs, their median in
 * sr->tput. Returns -1 when it did not start or did not stop cleanly. */
static int tput_only(const opts *o, const char *root, const char *name, const char *blob_dir,
                     int curve, const char *label, const uint8_t *job, result *runs,
                     sys_res *sr) {
    hq_env e;
    if (hq_env_start(o, &e, root, name, 1, blob_dir, curve) != 0)
        return -1;
    sr->ran = 1;
    for (int i = 0; i < o->repeat; i++) {
        runs[i] = hq_run(o, &e, o->producers, 0, o->secs, 0, job, o->job_bytes, o->window, NULL);
        show_run(label, &runs[i]);
    }
    sr->tput = median_result(runs, o->repeat);
    return hq_env_stop(&e);
}

/* One table cell: a latency in ms, "-" when there were no samples. */
static const char *cell(char *buf, size_t n, double ms) {
    if (ms != ms)
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, "%.3f", ms);
    return buf;
}

static void print_result(const char *name, const result *r) {
    if (!r->ok) {
        printf("%-30s %10s  %s\n", name, "FAILED", r->err[0] ? r->err : "no jobs completed");
        return;
    }
    char a[32], b[32], c[32], d[32];
    printf("%-30s %10.0f %11s %11s %11s %11s\n", name, r->jobs_s, cell(a, sizeof a, r->ack_p50),
           cell(b, sizeof b, r->ack_p99), cell(c, sizeof c, r->lease_p50),
           cell(d, sizeof d, r->lease_p99));
}

static void row(const char *name, const sys_res *s) {
    if (!s->ran)
        printf("%-30s %10s\n", name, "-");
    else
        print_result(name, &s->tput);
}

static void paced_row(const char *name, const sys_res *s) {
    if (s->ran)
        print_result(name, &s->paced);
}

/* CPU per job of a throughput median, and the rate the machine's CPUs
 * would allow at that cost if nothing else ever waited: a ceiling. */
static void cpu_row(const char *name, const sys_res *s, long ncpu) {
    if (!s->ran || !s->tput.ok || s->tput.server_us <= 0)
        return;
    double total = s->tput.server_us + s->tput.harness_us;
    printf("%-30s %10.0f %11.0f %11.0f %11.0f\n", name, s->tput.server_us, s->tput.harness_us,
           total, total > 0 ? (double)ncpu * 1e6 / total : 0);
}

/* ------------------------------------------------------------------ */
/* main */

/* Queue limits are raised so that they never shape a run: the benchmark is
 * about the broker's cost, and the fill run needs a million queued tasks. */
static const char *DEFAULT_HSQD_ARGS =
    "--data-dir %D --ready-fd %F --insecure "
    "--set client_endpoint=tcp://127.0.0.1:* --set worker_endpoint=tcp://127.0.0.1:* "
    "--set events_endpoint=tcp://127.0.0.1:* "
    "--set max_queued=100000000 --set max_queued_per_user=100000000";

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench-broker [options]\n"
            "  --quick              smoke run (< 1 minute): short runs, small fill\n"
            "  --hsqd PATH          hsqd binary (default build/daemon/hsqd)\n"
            "  --hsqd-args TEMPLATE hsqd arguments; %%D = data dir, %%F = ready fd\n"
            "                       (default: %s)\n"
            "  --hsqd-arg ARG       one more hsqd argument (repeatable)\n"
            "  --out-dir DIR        parent of the blob store of the throughput and paced\n"
            "                       runs, where the worker's empty outputs go (default\n"
            "                       /dev/shm when it is a tmpfs; \"data\": the data dir)\n"
            "  --beanstalkd PATH    beanstalkd binary (default /usr/bin/beanstalkd)\n"
            "  --dir DIR            where temp data goes (default $TMPDIR or /var/tmp);\n"
            "                       hsqd's data dir, beanstalkd's binlog and the fsync\n"
            "                       probe all live there: pick the disk you care about\n"
            "  --only hsqd|beanstalkd\n"
            "  --no-paced --no-rss --no-big --no-curve --no-tmpfs   skip those parts\n"
            "  --secs S             length of one throughput run (10; quick 2)\n"
            "  --repeat N           throughput runs per system, median shown (3; quick 1)\n"
            "  --producers N        hsqd producer threads (2)\n"
            "  --workers N          hsqd no-op worker threads, prefetch 4 each (4)\n"
            "  --window N           hsqd submits in flight per producer (256)\n"
            "  --bs-window N        beanstalkd puts and reserves in flight (64)\n"
            "  --max-backlog N      producers hold back while N jobs are sent but not yet\n"
            "                       leased/reserved (default: the system's window, i.e.\n"
            "                       producers x window for hsqd, bs-window for beanstalkd;\n"
            "                       0 = unbounded: the queue grows when producers outrun\n"
            "                       the consumer, and the run ends with a drain)\n"
            "  --users N            distinct user ids per producer (64)\n"
            "  --job-bytes N        input frame / job body bytes (300)\n"
            "  --rate R             paced run rate, jobs/s (1000)\n"
            "  --paced-secs S       paced run length (10; quick 2)\n"
            "  --queued N           tasks queued for the RSS figure (1000000; quick 20000)\n"
            "  --fill-timeout S     stop queueing after S s (600)\n"
            "  --big-bytes N        large payload size (2097152)\n"
            "  --big-secs S         large payload run length (10; quick 2)\n"
            "  --big-window N       large submits in flight per producer (4)\n"
            "  --disk-mb N          fsync probe size in MB (256; quick 32)\n"
            "  --lease-wait-ms N    worker lease wait_ms (200)\n"
            "  --attach EP          only a paced load (--rate, --window, --users,\n"
            "                       --job-bytes) on the client endpoint EP of an hsqd\n"
            "                       run by someone else, until SIGTERM (or --paced-secs)\n"
            "  --disk-probe PAGES   only the disk's commit-shaped latency in --dir: every\n"
            "                       1/--rate s for --paced-secs, PAGES random 4 KiB\n"
            "                       pwrites, fdatasync, one O_DSYNC meta page write;\n"
            "                       then a 1 KiB journal append (daemon/journal.c)\n"
            "  --disk-mirror        with --disk-probe: also the journal mirrored to two\n"
            "                       files, each request done when the first has it\n"
            "  --ack-log FILE       attach mode: \"SEND_NS LATENCY_NS\" per ack\n"
            "                       (CLOCK_MONOTONIC)\n"
            "  --keep               keep the temp dir (logs, data)\n"
            "  -v                   verbose\n",
            DEFAULT_HSQD_ARGS);
}

static long parse_num(const char *flag, const char *v, double lo, double hi) {
    char *end;
    double d = strtod(v ? v : "", &end);
    if (!v || end == v || *end || d < lo || d > hi)
        die("%s wants a number in [%g, %g]", flag, lo, hi);
    return (long)d;
}

static double parse_dbl(const char *flag, const char *v, double lo, double hi) {
    char *end;
    double d = strtod(v ? v : "", &end);
    if (!v || end == v || *end || d < lo || d > hi)
        die("%s wants a number in [%g, %g]", flag, lo, hi);
    return d;
}

int main(int argc, char **argv) {
    opts o = {0};
    o.hsqd = "build/daemon/hsqd";
    o.hsqd_args = DEFAULT_HSQD_ARGS;
    o.beanstalkd = "/usr/bin/beanstalkd";
    o.dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
    o.run_hsqd = o.run_bs = o.run_paced = o.run_rss = o.run_big = o.run_curve = 1;
    o.run_nodisk = 1;
    o.secs = -1;
    o.repeat = -1;
    o.producers = 2;
    o.workers = 4;
    o.window = 256;
    o.bs_window = 64;
    o.max_backlog = -1;
    o.users = 64;
    o.job_bytes = 300;
    o.paced_rate = 1000;
    o.paced_secs = -1;
    o.rss_tasks = 0;
    o.rss_timeout = 600;
    o.big_bytes = 2u << 20;
    o.big_secs = -1;
    o.big_window = 4;
    o.disk_mb = 0;
    o.lease_wait_ms = 200;
    int rss_set = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && (v || (die("%s needs a value", name), 0)) && ++i)
        if (strcmp(a, "--quick") == 0)
            o.quick = 1;
        else if (strcmp(a, "--keep") == 0)
            o.keep = 1;
        else if (strcmp(a, "-v") == 0)
            o.verbose = 1;
        else if (strcmp(a, "--no-paced") == 0)
            o.run_paced = 0;
        else if (strcmp(a, "--no-rss") == 0)
            o.run_rss = 0;
        else if (strcmp(a, "--no-big") == 0)
            o.run_big = 0;
        else if (strcmp(a, "--no-curve") == 0)
            o.run_curve = 0;
        else if (strcmp(a, "--no-tmpfs") == 0)
            o.run_nodisk = 0;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (ARG("--hsqd"))
            o.hsqd = v;
        else if (ARG("--hsqd-args"))
            o.hsqd_args = v;
        else if (ARG("--hsqd-arg")) {
            if (o.n_extra >= MAX_EXTRA_ARGS)
                die("too many --hsqd-arg");
            o.extra[o.n_extra++] = v;
        } else if (ARG("--out-dir"))
            o.out_dir = v;
        else if (ARG("--beanstalkd"))
            o.beanstalkd = v;
        else if (ARG("--dir"))
            o.dir = v;
        else if (ARG("--only")) {
            if (strcmp(v, "hsqd") == 0)
                o.run_bs = 0;
            else if (strcmp(v, "beanstalkd") == 0)
                o.run_hsqd = 0;
            else
                die("--only wants hsqd or beanstalkd");
        } else if (ARG("--secs"))
            o.secs = parse_dbl(a, v, 0.1, 3600);
        else if (ARG("--repeat"))
            o.repeat = (int)parse_num(a, v, 1, 99);
        else if (ARG("--workers"))
            o.workers = (int)parse_num(a, v, 1, MAX_WORKERS);
        else if (ARG("--producers"))
            o.producers = (int)parse_num(a, v, 1, MAX_PRODUCERS);
        else if (ARG("--window"))
            o.window = (int)parse_num(a, v, 1, 65536);
        else if (ARG("--bs-window"))
            o.bs_window = (int)parse_num(a, v, 1, 65536);
        else if (ARG("--max-backlog"))
            o.max_backlog = parse_num(a, v, 0, 1e9);
        else if (ARG("--users"))
            o.users = (int)parse_num(a, v, 1, 1e6);
        else if (ARG("--job-bytes"))
            o.job_bytes = (size_t)parse_num(a, v, 2, 1 << 20);
        else if (ARG("--rate"))
            o.paced_rate = parse_dbl(a, v, 1, 1e7);
        else if (ARG("--paced-secs")) {
            o.paced_secs = parse_dbl(a, v, 0.1, 3600);
            o.paced_secs_set = 1;
        }
        else if (ARG("--queued")) {
            o.rss_tasks = (uint64_t)parse_num(a, v, 1, 1e9);
            rss_set = 1;
        } else if (ARG("--fill-timeout"))
            o.rss_timeout = parse_dbl(a, v, 1, 86400);
        else if (ARG("--big-bytes"))
            o.big_bytes = (size_t)parse_num(a, v, 1, HSQ_MAX_FRAME_BYTES);
        else if (ARG("--big-secs"))
            o.big_secs = parse_dbl(a, v, 0.1, 3600);
        else if (ARG("--big-window"))
            o.big_window = (int)parse_num(a, v, 1, 1024);
        else if (ARG("--disk-mb"))
            o.disk_mb = (size_t)parse_num(a, v, 1, 1 << 20);
        else if (ARG("--attach"))
            o.attach = v;
        else if (ARG("--disk-probe"))
            o.disk_probe = (int)parse_num(a, v, 1, 1024);
        else if (!strcmp(a, "--disk-mirror"))
            o.disk_mirror = 1;
        else if (ARG("--ack-log"))
            o.ack_log = v;
        else if (ARG("--lease-wait-ms"))
            o.lease_wait_ms = (uint32_t)parse_num(a, v, 0, HSQ_MAX_WAIT_MS);
        else {
            usage(stderr);
            die("unknown argument: %s", a);
        }
#undef ARG
    }
    if (o.secs < 0)
        o.secs = o.quick ? 2 : 10;
    if (o.repeat < 0)
        o.repeat = o.quick ? 1 : 3;
    if (o.paced_secs < 0)
        o.paced_secs = o.quick ? 2 : 10;
    if (!rss_set)
        o.rss_tasks = o.quick ? 20000 : 1000000;
    if (o.big_secs < 0)
        o.big_secs = o.quick ? 2 : 10;
    if (!o.disk_mb)
        o.disk_mb = o.quick ? 32 : 256;
    verbose = o.verbose;
    signal(SIGPIPE, SIG_IGN);
    if (o.attach)
        return run_attach(&o);
    if (o.disk_probe) {
        /* For other benchmarks' reference rows (bench/purge.py). */
        disk_lat d;
        if (disk_commit_probe(o.dir, o.disk_probe, o.paced_rate, o.paced_secs, &d) != 0)
            return 1;
        printf("disk %d pages: n %" PRIu64 " p50 %.3f p99 %.3f max %.3f ms\n", o.disk_probe, d.n,
               d.p50, d.p99, d.max);
        if (journal_probe(o.dir, JOURNAL_PROBE_BYTES, o.paced_rate, o.paced_secs, &d) != 0)
            return 1;
        printf("journal append %u bytes: n %" PRIu64 " p50 %.3f p99 %.3f max %.3f ms\n",
               JOURNAL_PROBE_BYTES, d.n, d.p50, d.p99, d.max);
        if (o.disk_mirror) {
            if (mirror_probe(o.dir, JOURNAL_PROBE_BYTES, o.paced_rate, o.paced_secs, &d) != 0)
                return 1;
            printf("journal append %u bytes to 2 files, first on disk: n %" PRIu64
                   " p50 %.3f p99 %.3f max %.3f ms\n",
                   JOURNAL_PROBE_BYTES, d.n, d.p50, d.p99, d.max);
        }
        return 0;
    }

    char root[1024];
    snprintf(root, sizeof root, "%s/hsq-bench.XXXXXX", o.dir);
    if (!mkdtemp(root))
        die("mkdtemp %s: %s", root, strerror(errno));
    char outdir[1024] = "";
    if (!o.out_dir) {
        struct statfs sf;
        if (statfs("/dev/shm", &sf) == 0 && (unsigned long)sf.f_type == 0x01021994 &&
            access("/dev/shm", W_OK) == 0)
            o.out_dir = "/dev/shm";
    } else if (strcmp(o.out_dir, "data") == 0) {
        o.out_dir = NULL;
    }
    if (o.out_dir && o.run_hsqd) {
        snprintf(outdir, sizeof outdir, "%s/hsq-bench-out.XXXXXX", o.out_dir);
        if (!mkdtemp(outdir))
            die("mkdtemp %s: %s", outdir, strerror(errno));
    }

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("bench-broker: %s run, %ld CPUs, data in %s (%s)\n", o.quick ? "quick" : "full", ncpu,
           root, fs_name(root));
    if (strcmp(fs_name(root), "tmpfs") == 0)
        printf("WARNING: the data dir is on tmpfs, where fsync costs nothing: pass --dir on a "
               "disk\n");
    printf("jobs: %zu-byte input, %d s x %d runs (median), hsqd %d producers x window %d, "
           "%d workers x prefetch %d, beanstalkd window %d\n",
           o.job_bytes, (int)o.secs, o.repeat, o.producers, o.window, o.workers, BENCH_PREFETCH,
           o.bs_window);
    if (o.run_hsqd)
        printf("hsqd throughput/paced runs: worker outputs (empty files) in %s (%s)\n",
               outdir[0] ? outdir : "the data dir", outdir[0] ? fs_name(outdir) : fs_name(root));
    fflush(stdout);

    int failed = 0;
    sys_res hq = {0}, cv = {0}, nd = {0}, bs0 = {0}, bs1 = {0};
    result *runs = xmalloc((size_t)o.repeat * sizeof *runs);
    uint8_t *small = xmalloc(o.job_bytes);
    fill_random(small, o.job_bytes, 7);

    /* ---- hsqd ---- */
    int hq_skipped = 0;
    memstat m0 = {-1, -1, -1, -1}, m1 = m0;
    result fill = {0}, big = {0};
    double disk = -1, disk_before = -1, disk_after = -1;
    if (o.run_hsqd && access(o.hsqd, X_OK) != 0) {
        note("%s: %s; hsqd rows skipped (build it, or pass --hsqd PATH)", o.hsqd, strerror(errno));
        hq_skipped = 1;
        failed = 1;
    } else if (o.run_hsqd) {
        /* Throughput and paced runs: the blob store (where only the worker's
         * empty outputs land; 300-byte inputs are kept inline in LMDB) is on
         * tmpfs when one is there, so that the figures are hsqd's and not
         * the filesystem's inode allocator's. */
        hq_env e;
        if (hq_env_start(&o, &e, root, "hsqd", 1, outdir[0] ? outdir : NULL, 0) != 0) {
            failed = 1;
        } else {
            hq.ran = 1;
            for (int i = 0; i < o.repeat; i++) {
                runs[i] =
                    hq_run(&o, &e, o.producers, 0, o.secs, 0, small, o.job_bytes, o.window, NULL);
                show_run("hsqd throughput", &runs[i]);
            }
            hq.tput = median_result(runs, o.repeat);
            if (o.run_paced) {
                hq.paced = hq_run(&o, &e, 1, o.paced_rate, o.paced_secs, 0, small, o.job_bytes,
                                  o.window, NULL);
                show_run("hsqd paced", &hq.paced);
            }
            if (hq_env_stop(&e) != 0)
                failed = 1;
        }
        /* The same throughput runs with CURVE on both endpoints: a second
         * hsqd (no --insecure) with a ZAP allowlist, the producers holding a
         * web key and the worker a worker key. Reported as a ratio to the
         * plaintext figure of this same run. */
        if (o.run_curve && hq.ran &&
            tput_only(&o, root, "hsqd-curve", outdir[0] ? outdir : NULL, 1, "hsqd CURVE throughput",
                      small, runs, &cv) != 0)
            failed = 1;
        /* The same throughput runs with hsqd's data dir on tmpfs, where
         * fsync returns at once: the disk is out of the picture and what is
         * left is CPU (hsqd and this load generator share the machine's
         * cores). A diagnostic row: hsqd has no mode without sync. */
        if (o.run_nodisk && hq.ran && outdir[0] &&
            tput_only(&o, outdir, "hsqd-tmpfs", outdir, 0, "hsqd tmpfs throughput", small, runs,
                      &nd) != 0)
            failed = 1;
        /* Large payloads: a fresh hsqd with its blob store in the data dir,
         * on the disk where the 2 MB inputs are written and fsynced. The disk
         * is probed right before and right after, with hsqd idle, and the
         * better figure is the disk's: on a shared machine a neighbour's burst
         * during one probe would otherwise flatter the ratio. */
        if (o.run_big && hq.ran) {
            if (hq_env_start(&o, &e, root, "hsqd-big", 1, NULL, 0) != 0) {
                failed = 1;
            } else {
                disk_before = disk_write_mbps(root, o.disk_mb, 2u << 20);
                uint8_t *payload = xmalloc(o.big_bytes);
                fill_random(payload, o.big_bytes, 99);
                big = hq_run(&o, &e, o.producers, 0, o.big_secs, 0, payload, o.big_bytes,
                             o.big_window, NULL);
                show_run("hsqd large payloads", &big);
                free(payload);
                disk_after = disk_write_mbps(root, o.disk_mb, 2u << 20);
                disk = disk_before > disk_after ? disk_before : disk_after;
                note("disk: %zu MB in 2 MiB writes, fsync after each: %.1f MB/s before, "
                     "%.1f MB/s after the large-payload run",
                     o.disk_mb, disk_before, disk_after);
                if (hq_env_stop(&e) != 0)
                    failed = 1;
            }
        }
        if (o.run_rss && hq.ran) {
            hq_env f;
            if (hq_env_start(&o, &f, root, "hsqd-fill", 0, NULL, 0) != 0) {
                failed = 1;
            } else {
                m0 = read_mem(f.srv.p.pid);
                atomic_int stop;
                atomic_init(&stop, 0);
                uint64_t each = (o.rss_tasks + (uint64_t)o.producers - 1) / (uint64_t)o.producers;
                fill = hq_run(&o, &f, o.producers, 0, o.rss_timeout, each, small, o.job_bytes,
                              o.window, &stop);
                show_run("hsqd fill (no worker)", &fill);
                m1 = read_mem(f.srv.p.pid);
                if (hq_env_stop(&f) != 0)
                    failed = 1;
            }
        }
    }

    /* ---- beanstalkd ---- */
    if (o.run_bs && access(o.beanstalkd, X_OK) != 0) {
        note("%s: %s; beanstalkd rows skipped (apt-get install beanstalkd)", o.beanstalkd,
             strerror(errno));
        failed = 1;
    } else if (o.run_bs) {
        for (int b = 0; b < 2; b++) {
            sys_res *sr = b ? &bs1 : &bs0;
            char log[1100], binlog[1100];
            snprintf(log, sizeof log, "%s/beanstalkd%s.log", root, b ? "-f0" : "");
            snprintf(binlog, sizeof binlog, "%s/binlog", root);
            if (b && mkdir(binlog, 0700) != 0)
                die("mkdir %s: %s", binlog, strerror(errno));
            bs_server s;
            if (bs_start(&o, &s, b ? binlog : NULL, log) != 0) {
                note("beanstalkd did not start");
                failed = 1;
                continue;
            }
            sr->ran = 1;
            const char *name = b ? "beanstalkd -b -f0" : "beanstalkd (no binlog)";
            for (int i = 0; i < o.repeat; i++) {
                runs[i] = bs_run(&o, s.p.pid, s.port, 0, o.secs);
                show_run(name, &runs[i]);
            }
            sr->tput = median_result(runs, o.repeat);
            if (o.run_paced) {
                sr->paced = bs_run(&o, s.p.pid, s.port, o.paced_rate, o.paced_secs);
                show_run(name, &sr->paced);
            }
            proc_stop(&s.p, 5000);
        }
    }

    /* ---- report ---- */
    printf("\n%-30s %10s %11s %11s %11s %11s\n", "system", "jobs/s", "p50 ack ms", "p99 ack ms",
           "p50 s->l ms", "p99 s->l ms");
    if (o.run_hsqd)
        row(hq_skipped ? "hsqd (not built)" : "hsqd (fsync, group commit)", &hq);
    if (o.run_hsqd && o.run_curve)
        row("hsqd CURVE (fsync, group c.)", &cv);
    if (nd.ran)
        row("hsqd, LMDB on tmpfs (no disk)", &nd);
    if (o.run_bs) {
        row("beanstalkd (no binlog)", &bs0);
        row("beanstalkd -b -f0", &bs1);
    }
    if (hq.ran && bs1.ran && hq.tput.ok && bs1.tput.ok && bs1.tput.jobs_s > 0)
        printf("%-30s %9.2fx\n", "ratio hsqd / beanstalkd -f0", hq.tput.jobs_s / bs1.tput.jobs_s);
    if (cv.ran && hq.tput.ok && cv.tput.ok && hq.tput.jobs_s > 0) {
        double ratio = cv.tput.jobs_s / hq.tput.jobs_s;
        int low = ratio < CURVE_FLOOR;
        printf("%-30s %9.2fx  (floor %.2f%s)\n", "ratio hsqd CURVE / plaintext", ratio, CURVE_FLOOR,
               low ? ": BELOW" : "");
        /* A quick run is too short to judge; a full run below the floor fails. */
        if (low && !o.quick)
            failed = 1;
    }
    if (cv.ran && !cv.tput.ok)
        failed = 1;
    if (nd.ran && hq.tput.ok && nd.tput.ok && nd.tput.jobs_s > 0)
        printf("%-30s %9.2fx  (1.00x: the disk costs nothing)\n", "ratio hsqd / hsqd on tmpfs",
               hq.tput.jobs_s / nd.tput.jobs_s);
    if (nd.ran && !nd.tput.ok)
        failed = 1;
    if (hq.tput.server_us > 0 || bs0.tput.server_us > 0) {
        printf("\nCPU per completed job, us (server: every thread of the daemon; harness: "
               "this\nprocess, producers and consumer; both on the same %ld CPUs)\n",
               ncpu);
        printf("%-30s %10s %11s %11s %11s\n", "system", "server", "harness", "total",
               "CPU ceiling");
        cpu_row("hsqd (fsync, group commit)", &hq, ncpu);
        cpu_row("hsqd CURVE (fsync, group c.)", &cv, ncpu);
        cpu_row("hsqd, LMDB on tmpfs (no disk)", &nd, ncpu);
        cpu_row("beanstalkd (no binlog)", &bs0, ncpu);
        cpu_row("beanstalkd -b -f0", &bs1, ncpu);
        printf("CPU ceiling = CPUs / total CPU per job: jobs/s if the CPUs were never idle.\n");
    }
    if (o.run_paced && (hq.ran || bs0.ran || bs1.ran)) {
        printf("\npaced at %.0f jobs/s (latency from the scheduled send time)\n", o.paced_rate);
        paced_row("hsqd", &hq);
        paced_row("beanstalkd (no binlog)", &bs0);
        paced_row("beanstalkd -b -f0", &bs1);
        /* The floor under every durable row: the disk alone, same pacing,
         * the least a durable ack can write (one page, sync, meta page). A
         * many-page probe is no floor: random pages over a file fall behind
         * at this rate here, while LMDB's pages sit close together. */
        disk_lat d1;
        if (disk_commit_probe(root, 1, o.paced_rate, o.paced_secs, &d1) == 0) {
            printf("%-30s %10s %11.3f %11.3f   (max %.3f ms)\n", "disk: 1 page, sync, meta", "",
                   d1.p50, d1.p99, d1.max);
            if (hq.ran && hq.paced.ok)
                printf("%-30s %10s %10.2fx %10.2fx\n", "ratio hsqd / disk", "",
                       hq.paced.ack_p50 / d1.p50, hq.paced.ack_p99 / d1.p99);
        } else {
            failed = 1;
        }
        if (journal_probe(root, JOURNAL_PROBE_BYTES, o.paced_rate, o.paced_secs, &d1) == 0)
            printf("%-30s %10s %11.3f %11.3f   (max %.3f ms)\n", "disk: journal append, 1 KiB", "",
                   d1.p50, d1.p99, d1.max);
        else
            failed = 1;
    }
    for (const sys_res *s = &hq; s; s = s == &hq ? &bs0 : s == &bs0 ? &bs1 : NULL)
        if (s->ran && (!s->tput.ok || (o.run_paced && !s->paced.ok)))
            failed = 1;
    if (o.run_hsqd && o.run_rss && hq.ran) {
        printf("\n");
        if (m1.anon >= 0 && fill.submitted > 0) {
            printf("hsqd memory with %" PRIu64 " tasks queued, no worker: RssAnon %.1f MiB "
                   "(%.1f MiB at start, %.0f bytes/task), VmRSS %.1f MiB, RssFile %.1f MiB\n",
                   fill.submitted, (double)m1.anon / 1024, (double)m0.anon / 1024,
                   (double)(m1.anon - m0.anon) * 1024 / (double)fill.submitted,
                   (double)m1.rss / 1024, (double)m1.file / 1024);
            if (fill.submitted < o.rss_tasks)
                printf("  (asked for %" PRIu64 "; stopped early: %s)\n", o.rss_tasks,
                       fill.err[0] ? fill.err : "fill timeout");
            printf("  queueing rate without a worker: %.0f submits/s, ack p50 %.3f p99 %.3f ms\n",
                   fill.jobs_s, fill.ack_p50, fill.ack_p99);
        } else {
            printf("hsqd memory: not measured (%s)\n", fill.err[0] ? fill.err : "fill failed");
            failed = 1;
        }
    }
    if (o.run_hsqd && o.run_big && hq.ran) {
        if (big.ok && disk > 0) {
            double mbs = big.submits_s * (double)o.big_bytes / 1e6;
            printf("hsqd %.1f MiB payloads: %.1f submits/s = %.1f MB/s (ack p50 %.1f p99 %.1f ms)\n"
                   "disk sequential write, fsync per 2 MiB: %.1f MB/s (best of %.1f before, "
                   "%.1f after)\nratio payload / disk: %.2f\n",
                   (double)o.big_bytes / (1 << 20), big.submits_s, mbs, big.ack_p50, big.ack_p99,
                   disk, disk_before, disk_after, mbs / disk);
        } else {
            printf("hsqd large payloads: not measured (%s)\n", big.err[0]  ? big.err
                                                               : disk <= 0 ? "disk probe failed"
                                                                           : "failed");
            failed = 1;
        }
    }
    printf("s->l = submit to lease (hsqd) / put to reserve (beanstalkd). The hsqd worker is a "
           "no-op:\nit answers each job at once and leaves an empty output file (no bytes, no "
           "fsync).\n");

    free(runs);
    free(small);
    if (o.keep) {
        printf("kept %s%s%s\n", root, outdir[0] ? " and " : "", outdir);
    } else {
        rm_rf(root);
        if (outdir[0])
            rm_rf(outdir);
    }
    return failed;
}
