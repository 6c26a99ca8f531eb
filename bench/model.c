/* bench/model.c - CPU speed of the model runtime on the two MediaPipe models.
 *
 * For each model: milliseconds per image and achieved GFLOP/s (2 x MACs per
 * image / time) at batch 1 and batch 8 with the kernels this CPU gets
 * (AVX2+FMA when present), the portable C kernels at batch 1, and a
 * reference row: the same graph run in the same process on the naive
 * direct-convolution kernels (worker/model/ops_ref.c), with the speed-up of
 * each row over it. The runtime is single-threaded, so every figure is one
 * core. Timing: R rounds of k runs each (k chosen so a round takes about
 * 0.2 s); each round is timed both by this thread's CPU time (what one core
 * spent, unaffected by other processes taking the core away) and by the
 * wall clock. The table gives the best round's CPU time, the GFLOP/s and
 * speed-up from it, and the best and median wall time beside it: on a quiet
 * machine the two agree, on a shared one the CPU time is the fair figure.
 *
 *   bench-model [--models DIR] [--rounds R] [--quick] [--profile]
 *
 * DIR defaults to $HSQ_MODELS_DIR, then ./models (scripts/models fetches
 * them). --profile adds the ten slowest nodes of each model at batch 1.
 */
#include "worker/model/model.h"
#include "worker/model/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now(void) { return clock_s(CLOCK_MONOTONIC); }

static double cpu(void) { return clock_s(CLOCK_THREAD_CPUTIME_ID); }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    double cpu;          /* best round, thread CPU seconds per image */
    double best, median; /* wall seconds per image */
} timing;

/* Time runs of c at batch n: rounds of k runs, k sized to ~target seconds. */
static timing measure(hsq_model_ctx *c, int n, const float *const *in, int rounds, double target) {
    const float *outs[16];
    double t0 = now();
    if (hsq_model_run(c, n, in, outs) != 0) {
        fprintf(stderr, "bench-model: run failed\n");
        exit(1);
    }
    double one = now() - t0;
    int k = one > 0 ? (int)(target / one) : 1;
    k = k < 1 ? 1 : (k > 1000 ? 1000 : k);
    double *per = calloc((size_t)rounds, sizeof *per), *pc = calloc((size_t)rounds, sizeof *pc);
    if (!per || !pc)
        exit(1);
    for (int r = 0; r < rounds; r++) {
        t0 = now();
        double c0 = cpu();
        for (int i = 0; i < k; i++)
            hsq_model_run(c, n, in, outs);
        pc[r] = (cpu() - c0) / k / n;
        per[r] = (now() - t0) / k / n;
    }
    qsort(per, (size_t)rounds, sizeof *per, cmp_double);
    qsort(pc, (size_t)rounds, sizeof *pc, cmp_double);
    timing t = {pc[0], per[0], per[rounds / 2]};
    free(per);
    free(pc);
    return t;
}

static void row(const char *model, int batch, const char *kernels, timing t, double flop,
                double ref) {
    printf("%-27s %5d  %-9s %8.3f %8.2f %7.1fx %9.3f %8.3f\n", model, batch, kernels, t.cpu * 1e3,
           flop / t.cpu / 1e9, ref / t.cpu, t.best * 1e3, t.median * 1e3);
}

static void profile(hsq_model_ctx *c, const float *const *in) {
    const float *outs[16];
    hsq_model_ctx_set_profile(c, 1);
    int runs = 20;
    for (int i = 0; i < runs; i++)
        hsq_model_run(c, 1, in, outs);
    enum { TOP = 10 };
    int idx[TOP];
    double sec[TOP];
    for (int k = 0; k < TOP; k++)
        idx[k] = -1, sec[k] = 0;
    char desc[128];
    double s, total = 0;
    uint64_t macs;
    for (int i = 0; hsq_model_ctx_profile(c, i, desc, sizeof desc, &s, &macs) >= 0; i++) {
        total += s;
        for (int k = 0; k < TOP; k++)
            if (s > sec[k]) {
                memmove(&idx[k + 1], &idx[k], (size_t)(TOP - k - 1) * sizeof idx[0]);
                memmove(&sec[k + 1], &sec[k], (size_t)(TOP - k - 1) * sizeof sec[0]);
                idx[k] = i, sec[k] = s;
                break;
            }
    }
    printf("  slowest nodes (batch 1, %d runs):\n", runs);
    for (int k = 0; k < TOP && idx[k] >= 0; k++) {
        hsq_model_ctx_profile(c, idx[k], desc, sizeof desc, &s, &macs);
        printf("    %4d %-46s %7.3f ms %5.1f%%", idx[k], desc, s / runs * 1e3, 100 * s / total);
        if (macs)
            printf(" %6.1f GFLOP/s", 2.0 * (double)macs / (s / runs) / 1e9);
        printf("\n");
    }
    hsq_model_ctx_set_profile(c, 0);
}

int main(int argc, char **argv) {
    const char *dir = getenv("HSQ_MODELS_DIR");
    int rounds = 9, prof = 0;
    double target = 0.2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--models") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--quick") == 0) {
            rounds = 3;
            target = 0.05;
        } else if (strcmp(argv[i], "--profile") == 0) {
            prof = 1;
        } else {
            fprintf(stderr,
                    "usage: bench-model [--models DIR] [--rounds R] [--quick] [--profile]\n");
            return 2;
        }
    }
    if (!dir || !*dir)
        dir = "models";
    if (rounds < 1)
        rounds = 1;
    static const char *const files[] = {"face_detection_short_range.tflite",
                                        "selfie_segmentation.tflite"};
    printf("bench-model: one core, kernels: %s\n",
           hsq_ops_simd() ? "AVX2+FMA (run-time check)" : "portable C");
    printf("%-27s %5s  %-9s %8s %8s %8s %9s %8s\n", "model", "batch", "kernels", "cpu ms",
           "GFLOP/s", "vs ref", "wall best", "median");
    int failed = 0;
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char path[1024], err[256];
        snprintf(path, sizeof path, "%s/%s", dir, files[f]);
        hsq_model *m = NULL;
        if (hsq_model_load(&m, path, err, sizeof err) != 0) {
            fprintf(stderr, "bench-model: %s (run scripts/models, or pass --models DIR)\n", err);
            failed = 1;
            continue;
        }
        hsq_shape s = hsq_model_input_shape(m, 0);
        size_t per = 1;
        for (int k = 1; k < s.rank; k++)
            per *= (size_t)s.dims[k];
        /* Deterministic inputs in the models' [-1, 1] / [0, 1] range. */
        float *in = malloc(per * 8 * sizeof(float));
        if (!in)
            return 1;
        uint32_t x = 12345;
        for (size_t i = 0; i < per * 8; i++) {
            x = x * 1664525u + 1013904223u;
            in[i] = (float)(x >> 8) / 16777216.0f;
        }
        const float *ins[1] = {in};
        double flop = 2.0 * (double)hsq_model_macs(m);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(strlen(files[f]) - 7), files[f]);

        hsq_model_ctx *c = NULL;
        if (hsq_model_ctx_new(&c, m) != 0)
            return 1;
        hsq_model_ctx_set_reference(c, 1);
        timing ref = measure(c, 1, ins, rounds < 3 ? rounds : 3, target);
        hsq_model_ctx_set_reference(c, 0);
        int simd = hsq_ops_simd();
        const char *kname = simd ? "avx2" : "portable";
        timing b1 = measure(c, 1, ins, rounds, target);
        timing b8 = measure(c, 8, ins, rounds, target);
        row(name, 1, kname, b1, flop, ref.cpu);
        row(name, 8, kname, b8, flop, ref.cpu);
        if (simd) {
            hsq_ops_force_portable(1);
            timing p1 = measure(c, 1, ins, rounds, target);
            hsq_ops_force_portable(0);
            row(name, 1, "portable", p1, flop, ref.cpu);
        }
        row(name, 1, "reference", ref, flop, ref.cpu);
        printf("%-27s %.1f M MACs/image, activations %.1f MiB/image\n", "",
               (double)hsq_model_macs(m) / 1e6, (double)hsq_model_arena_bytes(m, 1) / (1 << 20));
        if (prof)
            profile(c, ins);
        hsq_model_ctx_free(&c);
        hsq_model_free(&m);
        free(in);
    }
    return failed;
}
