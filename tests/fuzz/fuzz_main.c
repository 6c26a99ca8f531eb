/* fuzz_main.c - plain driver for LLVMFuzzerTestOneInput.
 *
 * Used when the target is not built with clang -fsanitize=fuzzer, so that CI
 * runs the fuzz invariants on every build (and under ASan/UBSan in the
 * sanitizer setup). Deterministic: a seeded xorshift64* drives
 *   - mutations of valid messages made with the encoder (bit flips, byte
 *     sets from msgpack-significant values, inserts, deletes, truncation,
 *     chunk copies and splices between seeds, nframes changes), and
 *   - random bytes biased towards msgpack type markers.
 *
 * Usage: fuzz_wire [ITERATIONS [SEED]]   (default 200000, fixed seed)
 *        fuzz_wire FILE...               replay inputs (e.g. libFuzzer crashes)
 *        fuzz_wire --write-seeds DIR     write the seeds as a libFuzzer corpus
 * Stops early after FUZZ_MAX_SECONDS of wall time so a slow sanitizer build
 * stays inside the test timeout; prints what it covered.
 */
#include "schemas/err.h"
#include "schemas/wire.h"

#include "common/buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_SECONDS 60
#define MAX_INPUT 8192
#define MAX_SEEDS 32

static uint64_t rng_state;

static uint64_t rnd(void) {
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dull;
}

static size_t below(size_t n) {
    return n ? (size_t)(rnd() % n) : 0;
}

/* ------------------------------------------------------------ seeds */

typedef struct {
    uint8_t data[MAX_INPUT];
    size_t len;
} input;

static input seeds[MAX_SEEDS];
static size_t n_seeds;

static void add_seed(const hsq_wire_msg *m, size_t nframes) {
    hsq_wbuf b;
    hsq_wbuf_init(&b);
    if (hsq_wire_encode(m, &b) != 0 || b.len + 1 > MAX_INPUT || n_seeds == MAX_SEEDS) {
        fprintf(stderr, "fuzz_wire: seed %zu did not encode\n", n_seeds);
        exit(1);
    }
    seeds[n_seeds].data[0] = (uint8_t)nframes;
    memcpy(seeds[n_seeds].data + 1, b.data, b.len);
    seeds[n_seeds].len = b.len + 1;
    n_seeds++;
    hsq_wbuf_free(&b);
}

static hsq_wire_msg msg(hsq_msg_kind kind, hsq_op op, uint64_t rid) {
    hsq_wire_msg m;
    memset(&m, 0, sizeof(m));
    m.kind = kind;
    m.op = op;
    m.rid = rid;
    return m;
}

static void task_view(hsq_wire_task *t, uint64_t id, hsq_state st) {
    memset(t, 0, sizeof(*t));
    t->id = id;
    t->user = HSQ_STR_LIT("alice");
    t->key = HSQ_STR_LIT("k");
    t->state = (uint8_t)st;
    t->prio = HSQ_PRIO_NORMAL;
    t->attempts = 1;
    t->created_ms = 1700000000000;
    t->updated_ms = 1700000000500;
    t->progress = 100;
    t->stage = HSQ_STR_LIT("encode");
    t->n_inputs = 2;
    if (st == HSQ_STATE_FAILED) {
        t->err_code = HSQ_ENOFACE;
        t->err_msg = HSQ_STR_LIT("no face");
    }
    if (st == HSQ_STATE_SUCCEEDED) {
        t->n_outputs = 2;
        for (int i = 0; i < 2; i++) {
            t->outputs[i].key = HSQ_STR_LIT("u/ab/1/o.jpg");
            t->outputs[i].size = 4096;
            memset(t->outputs[i].sha256, 0x5a, 32);
            t->outputs[i].width = t->outputs[i].height = 512;
            t->outputs[i].format = HSQ_FMT_JPEG;
        }
    }
}

static void make_seeds(void) {
    static hsq_wire_task tasks[3];
    static hsq_wire_job jobs[2];
    hsq_wire_msg m = msg(HSQ_KIND_REQUEST, HSQ_OP_SUBMIT, 1);
    hsq_req_submit *s = &m.req.submit;
    s->user = HSQ_STR_LIT("alice");
    s->key = HSQ_STR_LIT("order-17");
    s->prio = HSQ_PRIO_LOW;
    s->prompt = HSQ_STR_LIT("grey suit");
    s->n_inputs = 3;
    s->inputs[0] = (hsq_wire_input){HSQ_STR_LIT("portrait"), HSQ_STR_LIT("a.jpg"), {0}, 0, 0};
    s->inputs[1] = (hsq_wire_input){HSQ_STR_LIT("clothing"), {0}, {0}, 1, 0};
    s->inputs[2] = (hsq_wire_input){HSQ_STR_LIT("background"), {0}, {0}, 2, 0};
    s->n_outputs = 2;
    s->outputs[0] = (hsq_wire_outspec){1024, 1024, HSQ_FMT_JPEG, 90};
    s->outputs[1] = (hsq_wire_outspec){256, 256, HSQ_FMT_PNG, 0};
    add_seed(&m, 3);

    m = msg(HSQ_KIND_REQUEST, HSQ_OP_WAIT, 2);
    m.req.wait = (hsq_req_wait){5, HSQ_STR_LIT("alice"), 1000, HSQ_STATE_QUEUED};
    add_seed(&m, 0);
    m = msg(HSQ_KIND_REQUEST, HSQ_OP_LIST, 3);
    m.req.list = (hsq_req_list){HSQ_STR_LIT("alice"), 50, 99};
    add_seed(&m, 0);
    m = msg(HSQ_KIND_REQUEST, HSQ_OP_READY, 4);
    m.req.ready = (hsq_req_ready){HSQ_STR_LIT("w1"), HSQ_STR_LIT("cpu"), {0}, 4};
    add_seed(&m, 0);
    m = msg(HSQ_KIND_REQUEST, HSQ_OP_HEARTBEAT, 5);
    m.req.heartbeat.n = 2;
    m.req.heartbeat.leases[0] = (hsq_wire_lease_ref){7, 70};
    m.req.heartbeat.leases[1] = (hsq_wire_lease_ref){8, 80};
    add_seed(&m, 0);
    m = msg(HSQ_KIND_REQUEST, HSQ_OP_DONE, 6);
    m.req.done.task = 7;
    m.req.done.token = 70;
    task_view(&tasks[0], 7, HSQ_STATE_SUCCEEDED);
    m.req.done.n_outputs = 2;
    memcpy(m.req.done.outputs, tasks[0].outputs, 2 * sizeof(hsq_wire_output));
    add_seed(&m, 0);
    m = msg(HSQ_KIND_REQUEST, HSQ_OP_FAIL, 7);
    m.req.fail = (hsq_req_fail){7, 70, HSQ_EIMGCORRUPT, HSQ_STR_LIT("truncated"), 1};
    add_seed(&m, 0);
    m = msg(HSQ_KIND_REQUEST, HSQ_OP_EVENT, 0);
    m.req.event = (hsq_event){7,  HSQ_STR_LIT("alice"),  HSQ_STATE_LEASED,
                              10, HSQ_STR_LIT("detect"), 1700000000000};
    add_seed(&m, 0);

    m = msg(HSQ_KIND_REPLY, HSQ_OP_RESULT, 8);
    task_view(&m.rep.task.task, 7, HSQ_STATE_SUCCEEDED);
    add_seed(&m, 2);
    m = msg(HSQ_KIND_REPLY, HSQ_OP_WAIT, 9);
    task_view(&m.rep.task.task, 7, HSQ_STATE_FAILED);
    m.rep.task.timed_out = 1;
    add_seed(&m, 0);
    m = msg(HSQ_KIND_REPLY, HSQ_OP_LIST, 10);
    task_view(&tasks[0], 9, HSQ_STATE_SUCCEEDED);
    task_view(&tasks[1], 8, HSQ_STATE_FAILED);
    task_view(&tasks[2], 7, HSQ_STATE_QUEUED);
    m.rep.list = (hsq_rep_list){3, tasks, 7};
    add_seed(&m, 0);
    m = msg(HSQ_KIND_REPLY, HSQ_OP_STATS, 11);
    m.rep.stats.queued = 3;
    m.rep.stats.queued_by_prio[HSQ_PRIO_HIGH] = 1;
    m.rep.stats.oldest_queued_ms = 1700000000000;
    m.rep.stats.uptime_s = 60;
    add_seed(&m, 0);
    m = msg(HSQ_KIND_REPLY, HSQ_OP_LEASE, 12);
    for (int i = 0; i < 2; i++) {
        hsq_wire_job *j = &jobs[i];
        memset(j, 0, sizeof(*j));
        j->task = 7 + (uint64_t)i;
        j->token = 70;
        j->attempt = 1;
        j->prio = HSQ_PRIO_HIGH;
        j->deadline_ms = 1700000030000;
        j->out_prefix = HSQ_STR_LIT("u/ab/7/");
        j->n_inputs = 2;
        j->inputs[0] = (hsq_wire_input){
            HSQ_STR_LIT("portrait"), {0}, HSQ_STR_LIT("in/7/0"), HSQ_NO_FRAME, 100};
        j->inputs[1] = (hsq_wire_input){HSQ_STR_LIT("clothing"), {0}, {0}, (uint32_t)i, 100};
        j->n_outputs = 1;
        j->outputs[0] = (hsq_wire_outspec){512, 512, HSQ_FMT_PNG, 0};
    }
    m.rep.lease = (hsq_rep_lease){2, jobs};
    add_seed(&m, 2);
    m = msg(HSQ_KIND_REPLY, HSQ_OP_HEARTBEAT, 13);
    m.rep.heartbeat.n_lost = 1;
    m.rep.heartbeat.lost[0] = 8;
    add_seed(&m, 0);
    m = msg(HSQ_KIND_REPLY, HSQ_OP_SUBMIT, 14);
    m.rep.submit = (hsq_rep_submit){7, HSQ_STATE_QUEUED, 1};
    add_seed(&m, 0);
    m = msg(HSQ_KIND_REPLY, HSQ_OP_READY, 15);
    m.rep.ready = (hsq_rep_ready){30000, 10000};
    add_seed(&m, 0);
    m = msg(HSQ_KIND_ERROR, HSQ_OP_SUBMIT, 16);
    m.rep.error = (hsq_rep_error){HSQ_EQUEUEFULL, HSQ_STR_LIT("queue is full")};
    add_seed(&m, 0);
}

/* ------------------------------------------------------------ mutation */

static const uint8_t interesting[] = {
    0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc7, 0xca,
    0xcb, 0xcc, 0xcf, 0xd0, 0xd3, 0xd4, 0xd8, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff};

static void mutate_once(input *in) {
    size_t pos = below(in->len);
    switch (below(9)) {
    case 0: /* flip a bit */
        if (in->len)
            in->data[pos] ^= (uint8_t)(1u << below(8));
        break;
    case 1: /* set a significant byte */
        if (in->len)
            in->data[pos] = interesting[below(sizeof(interesting))];
        break;
    case 2: /* set a random byte */
        if (in->len)
            in->data[pos] = (uint8_t)rnd();
        break;
    case 3: /* insert a byte */
        if (in->len < MAX_INPUT) {
            memmove(in->data + pos + 1, in->data + pos, in->len - pos);
            in->data[pos] = (uint8_t)(below(2) ? rnd() : interesting[below(sizeof(interesting))]);
            in->len++;
        }
        break;
    case 4: /* delete a run */
        if (in->len) {
            size_t n = 1 + below(in->len - pos < 8 ? in->len - pos : 8);
            memmove(in->data + pos, in->data + pos + n, in->len - pos - n);
            in->len -= n;
        }
        break;
    case 5: /* truncate */
        in->len = pos;
        break;
    case 6: { /* copy a chunk within the input */
        if (in->len < 2)
            break;
        size_t from = below(in->len), n = 1 + below(16);
        if (from + n > in->len)
            n = in->len - from;
        if (pos + n > MAX_INPUT)
            break;
        memmove(in->data + pos, in->data + from, n);
        if (pos + n > in->len)
            in->len = pos + n;
        break;
    }
    case 7: { /* splice the tail of another seed */
        const input *o = &seeds[below(n_seeds)];
        size_t from = below(o->len), n = o->len - from;
        if (pos + n > MAX_INPUT)
            n = MAX_INPUT - pos;
        memcpy(in->data + pos, o->data + from, n);
        in->len = pos + n;
        break;
    }
    default: /* frames */
        if (in->len)
            in->data[0] = (uint8_t)below(4);
        break;
    }
}

static void random_input(input *in) {
    in->len = below(96);
    for (size_t i = 0; i < in->len; i++)
        in->data[i] = below(3) ? interesting[below(sizeof(interesting))] : (uint8_t)rnd();
}

/* ------------------------------------------------------------ main */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whether the input decodes: reported, so a change that makes nearly every
 * mutation fail early (and the round-trip path untested) shows up. */
static int decodes(const input *in) {
    hsq_wire_msg m;
    if (in->len == 0 || hsq_wire_decode(in->data + 1, in->len - 1, in->data[0] & 3u, &m) != 0)
        return 0;
    hsq_wire_msg_free(&m);
    return 1;
}

static int replay(int argc, char **argv) {
    static uint8_t buf[1 << 20];
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            perror(argv[i]);
            return 1;
        }
        size_t n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
        printf("fuzz_wire: %s: ok (%zu bytes)\n", argv[i], n);
    }
    return 0;
}

static int write_seeds(const char *dir) {
    char path[4096];
    for (size_t i = 0; i < n_seeds; i++) {
        snprintf(path, sizeof(path), "%s/seed-%02zu", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(seeds[i].data, 1, seeds[i].len, f) != seeds[i].len) {
            perror(path);
            if (f)
                fclose(f);
            return 1;
        }
        fclose(f);
    }
    printf("fuzz_wire: wrote %zu seeds to %s\n", n_seeds, dir);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0) {
        make_seeds();
        return write_seeds(argv[2]);
    }
    if (argc > 1 && (argv[1][0] < '0' || argv[1][0] > '9'))
        return replay(argc, argv);
    unsigned long iters = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
    rng_state = argc > 2 ? strtoull(argv[2], NULL, 0) : 0x9e3779b97f4a7c15ull;
    if (rng_state == 0)
        rng_state = 1;

    make_seeds();
    for (size_t i = 0; i < n_seeds; i++) /* every seed must pass as is */
        LLVMFuzzerTestOneInput(seeds[i].data, seeds[i].len);

    static input in;
    double start = now_s();
    unsigned long done = 0, accepted = 0;
    for (; done < iters; done++) {
        if ((done & 1023) == 0 && now_s() - start > FUZZ_MAX_SECONDS)
            break;
        if (below(10) == 0) {
            random_input(&in);
        } else {
            in = seeds[below(n_seeds)];
            for (size_t k = 1 + below(below(4) ? 3 : 12); k > 0; k--)
                mutate_once(&in);
        }
        LLVMFuzzerTestOneInput(in.data, in.len);
        accepted += decodes(&in);
    }
    printf("fuzz_wire: %zu seeds, %lu of %lu inputs (%lu decoded and round-tripped) in %.1f s: "
           "ok\n",
           n_seeds, done, iters, accepted, now_s() - start);
    return 0;
}
