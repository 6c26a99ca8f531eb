/* bench/pipeline.c - the headshot pipeline on one core, next to vipsthumbnail.
 *
 * Input: a 12-megapixel (4000x3000) JPEG made in-process from
 * samples/astronaut.png with the project's own resize and encode (the 512 px
 * portrait upscaled to 3000x3000 and padded left and right to 4000 by
 * repeating its edge columns, quality 90, 4:2:0), so the face is in the
 * middle of a landscape photo the way a phone takes one.
 *
 * Rows (every figure the median of --runs runs, after one warm-up run):
 *
 *   headshot, batch 1   hsq_pipe_run on one job, one 1024x1280 JPEG out, the
 *                       default settings (studio vignette, "natural" style);
 *                       per-stage ms from the job's info, whole-job wall ms,
 *                       images/s
 *   headshot, batch 4   four such jobs in one hsq_pipe_run: per-image ms
 *                       (batched stages: the batch's time / 4)
 *   decode+resize+encode  worker/resize.c on the same file (decode at the
 *                       DCT scale it picks, centre crop, resize, encode q90)
 *   vipsthumbnail       `vipsthumbnail FILE -s 1024x1280 -m centre -o
 *                       OUT[Q=90]` run as a subprocess (fork + exec + wait,
 *                       so process start and library init are in its time,
 *                       as a shell user would see it), VIPS_CONCURRENCY=1
 *   models              each model's ms/image and GFLOP/s (2 x MACs / time)
 *                       at batch 1 and 8 on the runtime's kernels
 *
 * One core: the process pins itself to the first CPU of its affinity mask
 * before anything else (vipsthumbnail inherits the pin) and the pipeline runs
 * with threads = 1; the model runtime is single-threaded.
 *
 * Floors (issue 3): whole job <= 250 ms; decode+resize+encode <= 1.5 x
 * vipsthumbnail; both models >= 10 GFLOP/s. The exit status is 0 whatever
 * the figures (it is a measurement, not a test), 1 when something failed to
 * run.
 *
 *   bench-pipeline [--models DIR] [--samples DIR] [--runs N] [--no-vips]
 *                  [--vips PATH] [--save DIR]
 *
 * DIR defaults: $HSQ_MODELS_DIR or ./models, ./samples. --save writes the
 * input JPEG and the outputs there, for looking at.
 */
#include "worker/pipeline.h"
#include "common/clock.h"
#include "schemas/err.h"
#include "schemas/wire.h"
#include "worker/img.h"
#include "worker/model/model.h"
#include "worker/resize.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define OUT_W 1024
#define OUT_H 1280
#define IN_W 4000
#define IN_H 3000
#define MAX_RUNS 101

static double now_ms(void) { return (double)hsq_clock_mono_us() / 1e3; }

/* This process's CPU time: on a shared machine the wall clock also counts
 * the time other processes had the core; the CPU time does not. */
static double cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static cpu_set_t all_cpus; /* the affinity we started with */

static int pin_one_cpu(int *cpu) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return -errno;
    all_cpus = set;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set)) {
            CPU_ZERO(&set);
            CPU_SET(c, &set);
            *cpu = c;
            return sched_setaffinity(0, sizeof set, &set) == 0 ? 0 : -errno;
        }
    return HSQ_EINVAL;
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *b = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (b = malloc((size_t)n)) != NULL &&
            fread(b, 1, (size_t)n, f) != (size_t)n) {
            free(b);
            b = NULL;
        }
        *len = n > 0 ? (size_t)n : 0;
    }
    fclose(f);
    return b;
}

static int spit(const char *dir, const char *name, const uint8_t *p, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -errno;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : HSQ_EINTERNAL;
}

/* The 12 MP test photo: astronaut.png upscaled to IN_H x IN_H, centred in
 * IN_W x IN_H with its edge columns repeated, encoded at quality 90. */
static int make_input(const char *samples, uint8_t **jpg, size_t *len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/astronaut.png", samples);
    size_t n;
    uint8_t *png = slurp(path, &n);
    if (!png) {
        fprintf(stderr, "bench-pipeline: cannot read %s (run scripts/samples)\n", path);
        return -1;
    }
    hsq_img src = {0}, up = {0};
    int r = hsq_img_decode(png, n, NULL, NULL, 0, &src);
    free(png);
    if (!r)
        r = hsq_img_resize(&src, 0, 0, src.w, src.h, IN_H, IN_H, &up);
    hsq_img_free(&src);
    if (r) {
        fprintf(stderr, "bench-pipeline: %s: %s\n", path, hsq_strerror(r));
        return -1;
    }
    hsq_img big = {IN_W, IN_H, malloc((size_t)IN_W * IN_H * 3)};
    if (!big.rgb)
        return -1;
    const uint32_t pad = (IN_W - IN_H) / 2;
    for (uint32_t y = 0; y < IN_H; y++) {
        uint8_t *row = big.rgb + (size_t)y * IN_W * 3;
        const uint8_t *s = up.rgb + (size_t)y * IN_H * 3;
        memcpy(row + (size_t)pad * 3, s, (size_t)IN_H * 3);
        for (uint32_t x = 0; x < pad; x++) {
            memcpy(row + (size_t)x * 3, s, 3);
            memcpy(row + (size_t)(pad + IN_H + x) * 3, s + (size_t)(IN_H - 1) * 3, 3);
        }
    }
    hsq_img_free(&up);
    r = hsq_img_encode_jpeg(&big, 90, jpg, len);
    hsq_img_free(&big);
    return r ? -1 : 0;
}

/* ---- the headshot pipeline ---- */

enum { NST = 9 };
static const char *const stages[NST] = {"decode",  "detect", "frame", "segment", "matte",
                                        "compose", "encode", "cpu",   "total"};

typedef struct {
    double st[NST]; /* per image, ms */
} row;

static double stage_ms(const hsq_pipe_job *j, const char *name) {
    for (uint32_t i = 0; i < j->info.n_stages; i++)
        if (j->info.stages[i].name.len == strlen(name) &&
            memcmp(j->info.stages[i].name.ptr, name, strlen(name)) == 0)
            return j->info.stages[i].ms;
    return 0;
}

/* Median per stage over runs of a batch of nb jobs of the same photo. */
static int bench_headshot(hsq_pipe *p, const uint8_t *jpg, size_t len, int nb, int runs,
                          const char *save, row *out) {
    static const hsq_wire_outspec spec = {OUT_W, OUT_H, HSQ_FMT_JPEG, 90};
    hsq_pipe_job jobs[4];
    hsq_pipe_job *jp[4];
    double v[NST][MAX_RUNS];
    memset(jobs, 0, sizeof jobs);
    for (int k = 0; k < nb; k++) {
        jobs[k].portrait = (hsq_pipe_input){jpg, len, "bench.jpg"};
        jobs[k].n_specs = 1;
        jobs[k].specs = &spec;
        jp[k] = &jobs[k];
    }
    for (int run = -1; run < runs; run++) {
        double t0 = now_ms(), c0 = cpu_ms();
        hsq_pipe_run(p, jp, (size_t)nb);
        double t = now_ms() - t0, c = cpu_ms() - c0;
        for (int k = 0; k < nb; k++)
            if (jobs[k].err) {
                fprintf(stderr, "bench-pipeline: job failed: %s\n", jobs[k].errmsg);
                return -1;
            }
        if (run < 0) {
            if (save && nb == 1 && jobs[0].n_out == 1)
                spit(save, "bench-out-1024x1280.jpg", jobs[0].out[0].data, jobs[0].out[0].len);
            continue;
        }
        for (int s = 0; s < NST - 2; s++) {
            double sum = 0;
            int batched = strcmp(stages[s], "detect") == 0 || strcmp(stages[s], "segment") == 0;
            for (int k = 0; k < nb; k++)
                sum += stage_ms(&jobs[k], stages[s]);
            /* a batched stage's figure is the whole batch's, in every job */
            v[s][run] = batched ? sum / nb / nb : sum / nb;
        }
        v[NST - 2][run] = c / nb;
        v[NST - 1][run] = t / nb;
    }
    for (int s = 0; s < NST; s++)
        out->st[s] = median(v[s], runs);
    for (int k = 0; k < nb; k++)
        hsq_pipe_job_clear(&jobs[k]);
    return 0;
}

/* ---- the worker's overlap on two cores ---- */

#define OV_BATCH 2
#define OV_BATCHES 4

typedef struct {
    hsq_pipe *p;
    hsq_pipe_job *jp[OV_BATCHES][OV_BATCH];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    hsq_pipe_batch *slot; /* decoded, waiting for the finishing thread */
    int taken;            /* batches the finishing thread has taken */
} ov_state;

/* The prepare thread of hsq-worker (worker.c prep_main), reduced: decode each
 * batch on this thread and hand it over through a one-batch slot. */
static void *ov_decode_main(void *arg) {
    ov_state *o = arg;
    /* As in worker.c: decoding ahead only takes CPU nobody else wants. */
    struct sched_param sp = {0};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
    for (int k = 0; k < OV_BATCHES; k++) {
        hsq_pipe_batch *b;
        hsq_pipe_decode(o->p, o->jp[k], OV_BATCH, &b);
        pthread_mutex_lock(&o->mu);
        while (o->slot)
            pthread_cond_wait(&o->cv, &o->mu);
        o->slot = b;
        pthread_cond_broadcast(&o->cv);
        pthread_mutex_unlock(&o->mu);
    }
    return NULL;
}

/* Images/s for OV_BATCHES batches of OV_BATCH jobs on a 2-thread pipe:
 * one after the other (hsq_pipe_run), and overlapped (a decoding thread one
 * batch ahead of this thread's hsq_pipe_finish). */
static int bench_overlap(const char *models, const uint8_t *jpg, size_t len, int runs,
                         double *seq_ips, double *ov_ips) {
    static const hsq_wire_outspec spec = {OUT_W, OUT_H, HSQ_FMT_JPEG, 90};
    char err[512];
    ov_state o;
    memset(&o, 0, sizeof o);
    if (hsq_pipe_new(&o.p, models, 2, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "bench-pipeline: %s\n", err);
        return -1;
    }
    hsq_pipe_job jobs[OV_BATCHES][OV_BATCH];
    memset(jobs, 0, sizeof jobs);
    for (int k = 0; k < OV_BATCHES; k++)
        for (int i = 0; i < OV_BATCH; i++) {
            jobs[k][i].portrait = (hsq_pipe_input){jpg, len, "bench.jpg"};
            jobs[k][i].n_specs = 1;
            jobs[k][i].specs = &spec;
            o.jp[k][i] = &jobs[k][i];
        }
    pthread_mutex_init(&o.mu, NULL);
    pthread_cond_init(&o.cv, NULL);
    double vs[MAX_RUNS], vo[MAX_RUNS];
    int rc = 0;
    for (int run = -1; run < runs && rc == 0; run++) {
        double t0 = now_ms();
        for (int k = 0; k < OV_BATCHES; k++)
            hsq_pipe_run(o.p, o.jp[k], OV_BATCH);
        double ts = now_ms() - t0;
        t0 = now_ms();
        pthread_t t;
        if (pthread_create(&t, NULL, ov_decode_main, &o) != 0) {
            rc = -1;
            break;
        }
        for (int k = 0; k < OV_BATCHES; k++) {
            pthread_mutex_lock(&o.mu);
            while (!o.slot)
                pthread_cond_wait(&o.cv, &o.mu);
            hsq_pipe_batch *b = o.slot;
            o.slot = NULL;
            pthread_cond_broadcast(&o.cv);
            pthread_mutex_unlock(&o.mu);
            hsq_pipe_finish(o.p, &b);
        }
        pthread_join(t, NULL);
        double to = now_ms() - t0;
        for (int k = 0; k < OV_BATCHES; k++)
            for (int i = 0; i < OV_BATCH; i++)
                if (jobs[k][i].err) {
                    fprintf(stderr, "bench-pipeline: job failed: %s\n", jobs[k][i].errmsg);
                    rc = -1;
                }
        if (run >= 0) {
            vs[run] = OV_BATCHES * OV_BATCH * 1e3 / ts;
            vo[run] = OV_BATCHES * OV_BATCH * 1e3 / to;
        }
    }
    for (int k = 0; k < OV_BATCHES; k++)
        for (int i = 0; i < OV_BATCH; i++)
            hsq_pipe_job_clear(&jobs[k][i]);
    pthread_mutex_destroy(&o.mu);
    pthread_cond_destroy(&o.cv);
    hsq_pipe_free(&o.p);
    if (rc == 0) {
        *seq_ips = median(vs, runs);
        *ov_ips = median(vo, runs);
    }
    return rc;
}

/* ---- decode + resize + encode: ours and vipsthumbnail ---- */

static int bench_resize(const uint8_t *jpg, size_t len, int runs, double *total, double st[3]) {
    static const hsq_wire_outspec spec = {OUT_W, OUT_H, HSQ_FMT_JPEG, 90};
    hsq_pipe_job j;
    memset(&j, 0, sizeof j);
    j.portrait = (hsq_pipe_input){jpg, len, "bench.jpg"};
    j.n_specs = 1;
    j.specs = &spec;
    double v[4][MAX_RUNS];
    static const char *const names[3] = {"decode", "resize", "encode"};
    for (int run = -1; run < runs; run++) {
        double t0 = now_ms();
        hsq_resize_run(&j, NULL);
        double t = now_ms() - t0;
        if (j.err) {
            fprintf(stderr, "bench-pipeline: resize failed: %s\n", j.errmsg);
            return -1;
        }
        if (run >= 0) {
            v[0][run] = t;
            for (int s = 0; s < 3; s++)
                v[1 + s][run] = stage_ms(&j, names[s]);
        }
        hsq_pipe_job_clear(&j);
    }
    *total = median(v[0], runs);
    for (int s = 0; s < 3; s++)
        st[s] = median(v[1 + s], runs);
    return 0;
}

static int run_vips(const char *vips, const char *in, const char *out) {
    char target[1100];
    snprintf(target, sizeof target, "%s[Q=90]", out);
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        execl(vips, vips, in, "-s", "1024x1280", "-m", "centre", "-o", target, (char *)NULL);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0)
        return -errno;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : HSQ_EINTERNAL;
}

static int bench_vips(const char *vips, const uint8_t *jpg, size_t len, int runs, double *ms) {
    char dir[] = "/tmp/hsq-bench-XXXXXX";
    if (!mkdtemp(dir))
        return -errno;
    char in[64], out[64];
    snprintf(in, sizeof in, "%s/in.jpg", dir);
    snprintf(out, sizeof out, "%s/out.jpg", dir);
    int r = spit(dir, "in.jpg", jpg, len);
    double v[MAX_RUNS];
    setenv("VIPS_CONCURRENCY", "1", 1);
    for (int run = -1; run < runs && r == 0; run++) {
        double t0 = now_ms();
        r = run_vips(vips, in, out);
        if (run >= 0)
            v[run] = now_ms() - t0;
    }
    if (r == 0) {
        size_t n;
        uint8_t *o = slurp(out, &n);
        hsq_img_info info;
        if (!o || hsq_img_probe(o, n, NULL, &info) != 0 || info.w != OUT_W || info.h != OUT_H) {
            fprintf(stderr, "bench-pipeline: vipsthumbnail made no %dx%d JPEG\n", OUT_W, OUT_H);
            r = HSQ_EINTERNAL;
        }
        free(o);
        *ms = median(v, runs);
    }
    unlink(in);
    unlink(out);
    rmdir(dir);
    return r;
}

/* ---- models ---- */

static int bench_model(const char *dir, const char *file, int runs, double ms[2], double gf[2]) {
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    hsq_model *m = NULL;
    hsq_model_ctx *c = NULL;
    if (hsq_model_load(&m, path, err, sizeof err) != 0) {
        fprintf(stderr, "bench-pipeline: %s\n", err);
        return -1;
    }
    if (hsq_model_ctx_new(&c, m) != 0) {
        hsq_model_free(&m);
        return -1;
    }
    hsq_shape s = hsq_model_input_shape(m, 0);
    size_t per = 1;
    for (int k = 1; k < s.rank; k++)
        per *= (size_t)s.dims[k];
    float *in = malloc(per * 8 * sizeof(float));
    if (!in)
        return -1;
    uint32_t x = 12345;
    for (size_t i = 0; i < per * 8; i++) {
        x = x * 1664525u + 1013904223u;
        in[i] = (float)(x >> 8) / 16777216.0f;
    }
    const float *ins[1] = {in}, *outs[16];
    static const int batch[2] = {1, 8};
    double flop = 2.0 * (double)hsq_model_macs(m);
    for (int b = 0; b < 2; b++) {
        double v[MAX_RUNS];
        for (int run = -1; run < runs; run++) {
            double t0 = now_ms();
            if (hsq_model_run(c, batch[b], ins, outs) != 0)
                return -1;
            if (run >= 0)
                v[run] = (now_ms() - t0) / batch[b];
        }
        ms[b] = median(v, runs);
        gf[b] = flop / (ms[b] * 1e-3) / 1e9;
    }
    free(in);
    hsq_model_ctx_free(&c);
    hsq_model_free(&m);
    return 0;
}

/* ---- report ---- */

static const char *verdict(int ok) { return ok ? "ok" : "BELOW FLOOR"; }

int main(int argc, char **argv) {
    const char *models = getenv("HSQ_MODELS_DIR"), *samples = "samples", *save = NULL;
    const char *vips = "/usr/bin/vipsthumbnail";
    int runs = 11, use_vips = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--models") == 0 && i + 1 < argc)
            models = argv[++i];
        else if (strcmp(argv[i], "--samples") == 0 && i + 1 < argc)
            samples = argv[++i];
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--vips") == 0 && i + 1 < argc)
            vips = argv[++i];
        else if (strcmp(argv[i], "--no-vips") == 0)
            use_vips = 0;
        else if (strcmp(argv[i], "--save") == 0 && i + 1 < argc)
            save = argv[++i];
        else {
            fprintf(stderr, "usage: bench-pipeline [--models DIR] [--samples DIR] [--runs N] "
                            "[--no-vips] [--vips PATH] [--save DIR]\n");
            return 2;
        }
    }
    if (!models || !*models)
        models = "models";
    runs = runs < 1 ? 1 : runs > MAX_RUNS ? MAX_RUNS : runs;
    int cpu = -1;
    if (pin_one_cpu(&cpu) != 0)
        fprintf(stderr, "bench-pipeline: cannot pin to one CPU; figures may use several\n");

    uint8_t *jpg = NULL;
    size_t len = 0;
    if (make_input(samples, &jpg, &len) != 0)
        return 1;
    if (save)
        spit(save, "bench-in-4000x3000.jpg", jpg, len);
    printf("bench-pipeline: one core (cpu %d, threads 1), %d runs per row (median), input "
           "%dx%d JPEG q90 (%.1f MB) from astronaut.png, output %dx%d JPEG q90\n\n",
           cpu, runs, IN_W, IN_H, (double)len / 1e6, OUT_W, OUT_H);

    char err[512];
    hsq_pipe *p = NULL;
    if (hsq_pipe_new(&p, models, 1, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "bench-pipeline: %s\n", err);
        return 1;
    }
    row r1, r4;
    if (bench_headshot(p, jpg, len, 1, runs, save, &r1) != 0 ||
        bench_headshot(p, jpg, len, 4, runs, NULL, &r4) != 0)
        return 1;
    hsq_pipe_free(&p);

    printf("headshot pipeline, ms per image (stages: wall ms from the job's info, batched "
           "stages divided by the batch; cpu: process CPU time; total: wall)\n");
    printf("%-9s", "batch");
    for (int s = 0; s < NST; s++)
        printf(" %8s", stages[s]);
    printf(" %9s  %s\n", "images/s", "floor: total <= 250 ms");
    const row *rows[2] = {&r1, &r4};
    for (int k = 0; k < 2; k++) {
        printf("%-9d", k ? 4 : 1);
        for (int s = 0; s < NST; s++)
            printf(" %8.1f", rows[k]->st[s]);
        printf(" %9.2f  %s\n", 1e3 / rows[k]->st[NST - 1], verdict(rows[k]->st[NST - 1] <= 250.0));
    }

    double ours, st[3], vms = 0;
    if (bench_resize(jpg, len, runs, &ours, st) != 0)
        return 1;
    int have_vips = 0;
    if (use_vips) {
        if (access(vips, X_OK) != 0)
            fprintf(stderr, "bench-pipeline: no %s (Debian: libvips-tools; scripts/deps)\n", vips);
        else if (bench_vips(vips, jpg, len, runs, &vms) != 0)
            fprintf(stderr, "bench-pipeline: vipsthumbnail failed\n");
        else
            have_vips = 1;
    }
    printf("\ndecode+resize+encode to %dx%d (centre crop), ms\n", OUT_W, OUT_H);
    printf("%-22s %8s %8s %8s %8s\n", "", "decode", "resize", "encode", "total");
    printf("%-22s %8.1f %8.1f %8.1f %8.1f\n", "hsq (worker/resize.c)", st[0], st[1], st[2], ours);
    if (have_vips) {
        printf("%-22s %8s %8s %8s %8.1f  (subprocess, VIPS_CONCURRENCY=1)\n", "vipsthumbnail", "",
               "", "", vms);
        printf("%-22s %35.2fx  floor <= 1.50x: %s\n", "ratio hsq / vips", ours / vms,
               verdict(ours / vms <= 1.5));
    } else {
        printf("%-22s %35s\n", "vipsthumbnail", "not run");
    }

    static const char *const files[2] = {HSQ_PIPE_FACE_MODEL, HSQ_PIPE_SEG_MODEL};
    static const char *const names[2] = {"face_detection_short_range", "selfie_segmentation"};
    printf("\nmodels, one core\n%-28s %10s %10s %10s %10s  %s\n", "", "b1 ms", "b1 GFLOP/s",
           "b8 ms/img", "b8 GFLOP/s", "floor >= 10 GFLOP/s");
    for (int m = 0; m < 2; m++) {
        double ms[2], gf[2];
        if (bench_model(models, files[m], runs, ms, gf) != 0)
            return 1;
        printf("%-28s %10.2f %10.1f %10.2f %10.1f  %s\n", names[m], ms[0], gf[0], ms[1], gf[1],
               verdict(gf[0] >= 10 && gf[1] >= 10));
    }

    /* The worker's overlap needs two cores: give the process back the CPUs it
     * started with. */
    int ncpu = CPU_COUNT(&all_cpus);
    printf("\nhsq-worker overlap, %d batches of %d, pipe threads 2, all %d CPUs\n", OV_BATCHES,
           OV_BATCH, ncpu);
    double seq_ips = 0, ov_ips = 0;
    if (ncpu < 2 || sched_setaffinity(0, sizeof all_cpus, &all_cpus) != 0) {
        printf("%-28s not run: needs 2 CPUs\n", "");
    } else {
        if (bench_overlap(models, jpg, len, runs < 3 ? runs : 3, &seq_ips, &ov_ips) != 0)
            return 1;
        printf("%-28s %10s %10s %10s\n", "", "images/s", "", "ratio");
        printf("%-28s %10.2f\n", "one batch after the other", seq_ips);
        printf("%-28s %10.2f %10s %9.2fx\n", "next batch decoded ahead", ov_ips, "", ov_ips / seq_ips);
    }
    free(jpg);
    return 0;
}
