/* test_task.c - the task record (daemon/task.h): both layouts round-trip,
 * version 1 records still read, and damaged bytes are refused. */
#include "daemon/task.h"
#include "schemas/err.h"
#include "test.h"

#include <stdint.h>

static const uint8_t sha[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

/* Every field set, some to edge values: a timestamp before created (the
 * clock went back), one left 0, a negative error code and a huge token. */
static void full_task(hsq_task *t) {
    memset(t, 0, sizeof *t);
    t->id = 123456789;
    t->state = HSQ_STATE_SUCCEEDED;
    t->prio = 2;
    t->dead = 1;
    t->attempts = 3;
    t->created_ms = 1795000000000;
    t->updated_ms = 1795000000000 + 86400000;
    t->expires_ms = 1795000000000 + 30ll * 86400000;
    t->inputs_expire_ms = 1795000000000 - 5000;
    t->refs_expire_ms = 0;
    t->not_before_ms = INT64_MAX;
    t->deadline_ms = 1;
    t->token = UINT64_MAX - 7;
    t->round = 77;
    t->err_code = HSQ_ECORRUPT;
    t->progress = 100;
    t->user = HSQ_STR_LIT("alice@example");
    t->key = HSQ_STR_LIT("order-17");
    t->prompt = HSQ_STR_LIT("navy suit, soft light");
    t->stage = HSQ_STR_LIT("compose");
    t->err_msg = HSQ_STR_LIT("worker gone");
    t->worker = HSQ_STR_LIT("\x00\x80\x00\x41\xa7");
    t->n_inputs = 2;
    t->inputs[0] = (hsq_task_input){HSQ_STR_LIT("portrait"), HSQ_STR_LIT("me.jpg"), HSQ_IN_BLOB,
                                    2097152, HSQ_STR_LIT("u/abc/123456789/in-0")};
    t->inputs[1] = (hsq_task_input){HSQ_STR_LIT("clothing"), HSQ_STR_LIT(""), HSQ_IN_INLINE, 300,
                                    HSQ_STR_LIT("")};
    t->n_specs = 1;
    t->specs[0] = (hsq_wire_outspec){.width = 1024, .height = 1280, .format = 1, .quality = 90};
    t->n_outputs = 1;
    t->outputs[0].key = HSQ_STR_LIT("u/abc/123456789/out-0.jpg");
    t->outputs[0].size = 481234;
    memcpy(t->outputs[0].sha256, sha, 32);
    t->outputs[0].width = 1024;
    t->outputs[0].height = 1280;
    t->outputs[0].format = 1;
    t->outputs[0].background = 2;
    t->outputs[0].style = 3;
    t->outputs[0].spec = 0;
    t->settings = (hsq_bytes){(const uint8_t *)"\x81\xa1k\x01", 4};
    t->info = (hsq_bytes){(const uint8_t *)"\x80", 1};
    t->credits = -4;
    t->keep_uploads_s = 0;
    t->keep_outputs_s = HSQ_KEEP_POLICY;
}

#define SAME_STR(a, b)                                                                             \
    HSQ_ASSERT((a).len == (b).len && ((a).len == 0 || memcmp((a).ptr, (b).ptr, (a).len) == 0))

static void assert_same(const hsq_task *a, const hsq_task *b) {
    HSQ_ASSERT_U64_EQ(a->id, b->id);
    HSQ_ASSERT(a->state == b->state && a->prio == b->prio && a->dead == b->dead);
    HSQ_ASSERT_EQ(a->attempts, b->attempts);
    HSQ_ASSERT(a->created_ms == b->created_ms && a->updated_ms == b->updated_ms);
    HSQ_ASSERT(a->expires_ms == b->expires_ms && a->inputs_expire_ms == b->inputs_expire_ms);
    HSQ_ASSERT(a->refs_expire_ms == b->refs_expire_ms && a->not_before_ms == b->not_before_ms);
    HSQ_ASSERT(a->deadline_ms == b->deadline_ms);
    HSQ_ASSERT_U64_EQ(a->token, b->token);
    HSQ_ASSERT_U64_EQ(a->round, b->round);
    HSQ_ASSERT_EQ(a->err_code, b->err_code);
    HSQ_ASSERT_EQ(a->progress, b->progress);
    SAME_STR(a->user, b->user);
    SAME_STR(a->key, b->key);
    SAME_STR(a->prompt, b->prompt);
    SAME_STR(a->stage, b->stage);
    SAME_STR(a->err_msg, b->err_msg);
    SAME_STR(a->worker, b->worker);
    HSQ_ASSERT_EQ(a->n_inputs, b->n_inputs);
    for (uint32_t i = 0; i < a->n_inputs; i++) {
        SAME_STR(a->inputs[i].kind, b->inputs[i].kind);
        SAME_STR(a->inputs[i].name, b->inputs[i].name);
        SAME_STR(a->inputs[i].key, b->inputs[i].key);
        HSQ_ASSERT_EQ(a->inputs[i].where, b->inputs[i].where);
        HSQ_ASSERT_U64_EQ(a->inputs[i].size, b->inputs[i].size);
    }
    HSQ_ASSERT_EQ(a->n_specs, b->n_specs);
    HSQ_ASSERT(memcmp(a->specs, b->specs, a->n_specs * sizeof a->specs[0]) == 0);
    HSQ_ASSERT_EQ(a->n_outputs, b->n_outputs);
    for (uint32_t i = 0; i < a->n_outputs; i++) {
        const hsq_wire_output *x = &a->outputs[i], *y = &b->outputs[i];
        SAME_STR(x->key, y->key);
        HSQ_ASSERT_U64_EQ(x->size, y->size);
        HSQ_ASSERT(memcmp(x->sha256, y->sha256, 32) == 0);
        HSQ_ASSERT(x->width == y->width && x->height == y->height && x->format == y->format);
        HSQ_ASSERT(x->background == y->background && x->style == y->style && x->spec == y->spec);
    }
    SAME_STR(a->settings, b->settings);
    SAME_STR(a->info, b->info);
    HSQ_ASSERT(a->credits == b->credits);
    HSQ_ASSERT_EQ(a->keep_uploads_s, b->keep_uploads_s);
    HSQ_ASSERT_EQ(a->keep_outputs_s, b->keep_outputs_s);
}

static void test_roundtrip(void) {
    hsq_task t, back;
    full_task(&t);
    size_t size[3] = {0};
    for (int v = 1; v <= 2; v++) {
        hsq_wbuf b;
        hsq_wbuf_init(&b);
        hsq_task_encode_version(&t, v, &b);
        HSQ_ASSERT_EQ(((const uint8_t *)b.data)[0], v);
        HSQ_OK(hsq_task_decode(b.data, b.len, &back));
        assert_same(&t, &back);
        size[v] = b.len;
        hsq_wbuf_free(&b);
    }
    /* The default writes version 2. */
    hsq_wbuf b;
    hsq_wbuf_init(&b);
    hsq_task_encode(&t, &b);
    HSQ_ASSERT_EQ(((const uint8_t *)b.data)[0], 2);
    HSQ_ASSERT_EQ(b.len, size[2]);
    hsq_wbuf_free(&b);
    printf("full record: version 1 %zu bytes, version 2 %zu\n", size[1], size[2]);

    /* A task as a submit writes it: version 2 is at most two thirds. */
    memset(&t, 0, sizeof t);
    t.id = 4100000;
    t.state = HSQ_STATE_QUEUED;
    t.prio = 1;
    t.created_ms = 1795000000000;
    t.updated_ms = t.created_ms;
    t.inputs_expire_ms = t.created_ms + 7ll * 86400000;
    t.round = 64000;
    t.user = HSQ_STR_LIT("user-17");
    t.n_inputs = 1;
    t.inputs[0] = (hsq_task_input){HSQ_STR_LIT("portrait"), HSQ_STR_LIT("p.jpg"), HSQ_IN_INLINE,
                                   300, HSQ_STR_LIT("")};
    t.n_specs = 1;
    t.specs[0] = (hsq_wire_outspec){.width = 64, .height = 80, .format = 1};
    t.keep_uploads_s = t.keep_outputs_s = HSQ_KEEP_POLICY;
    for (int v = 1; v <= 2; v++) {
        hsq_wbuf_init(&b);
        hsq_task_encode_version(&t, v, &b);
        HSQ_OK(hsq_task_decode(b.data, b.len, &back));
        assert_same(&t, &back);
        size[v] = b.len;
        hsq_wbuf_free(&b);
    }
    printf("submitted record: version 1 %zu bytes, version 2 %zu\n", size[1], size[2]);
    HSQ_ASSERT(size[2] * 3 <= size[1] * 2);
}

/* Version 1 records from before credits and asked retention end early:
 * nothing reserved, the policy's retention. */
static void test_v1_short(void) {
    hsq_task t, back;
    full_task(&t);
    hsq_wbuf b;
    hsq_wbuf_init(&b);
    hsq_task_encode_version(&t, 1, &b);
    HSQ_OK(hsq_task_decode(b.data, b.len - 8, &back)); /* without the keep fields */
    HSQ_ASSERT(back.credits == t.credits);
    HSQ_ASSERT_EQ(back.keep_uploads_s, HSQ_KEEP_POLICY);
    HSQ_OK(hsq_task_decode(b.data, b.len - 16, &back)); /* ... and credits */
    HSQ_ASSERT(back.credits == 0);
    HSQ_ASSERT_EQ(back.keep_outputs_s, HSQ_KEEP_POLICY);
    hsq_wbuf_free(&b);
}

/* Every truncation, a byte too many, an unknown version, an overlong or
 * oversized varint, a length past the end, an unknown timestamp bit:
 * HSQ_ECORRUPT, never a read past the bytes (the sanitizers watch). */
static void test_damaged(void) {
    hsq_task t, back;
    full_task(&t);
    hsq_wbuf b;
    hsq_wbuf_init(&b);
    hsq_task_encode(&t, &b);
    for (size_t n = 0; n < b.len; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan sees any overrun */
        memcpy(copy, b.data, n);
        HSQ_ASSERT_EQ(hsq_task_decode(copy, n, &back), HSQ_ECORRUPT);
        free(copy);
    }
    uint8_t *p = malloc(b.len + 1);
    memcpy(p, b.data, b.len);
    p[b.len] = 0;
    HSQ_ASSERT_EQ(hsq_task_decode(p, b.len + 1, &back), HSQ_ECORRUPT);
    p[0] = 3;
    HSQ_ASSERT_EQ(hsq_task_decode(p, b.len, &back), HSQ_ECORRUPT);
    p[0] = 0;
    HSQ_ASSERT_EQ(hsq_task_decode(p, b.len, &back), HSQ_ECORRUPT);
    free(p);
    hsq_wbuf_free(&b);

    /* A minimal valid record, then one field at a time made bad: the id
     * as eleven varint bytes; as ten whose last has more than the top
     * bit; an unknown timestamp bit; a user length past the end. */
    /* state, prio, dead, attempts, created 5, mask, token, round, error,
     * progress, six strings, three counts, settings, info, credits, keep x2 */
    static const uint8_t tail[] = {
        HSQ_STATE_QUEUED, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    uint8_t rec[64];
    size_t n = 0;
    rec[n++] = 2;
    rec[n++] = 1; /* id */
    memcpy(rec + n, tail, sizeof tail);
    n += sizeof tail;
    HSQ_OK(hsq_task_decode(rec, n, &back));
    HSQ_ASSERT_U64_EQ(back.id, 1);
    HSQ_ASSERT(back.created_ms == 5 && back.user.len == 0 && back.n_inputs == 0);

    uint8_t bad[80];
    static const uint8_t overlong[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                       0x80, 0x80, 0x80, 0x80, 0x01};
    static const uint8_t toobig[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    static const uint8_t top[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    const struct {
        const uint8_t *id;
        size_t len;
        int ok;
    } ids[] = {{overlong, sizeof overlong, 0}, {toobig, sizeof toobig, 0}, {top, sizeof top, 1}};
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
        size_t m = 0;
        bad[m++] = 2;
        memcpy(bad + m, ids[k].id, ids[k].len);
        m += ids[k].len;
        memcpy(bad + m, tail, sizeof tail);
        m += sizeof tail;
        int rc = hsq_task_decode(bad, m, &back);
        HSQ_ASSERT_EQ(rc, ids[k].ok ? 0 : HSQ_ECORRUPT);
        if (ids[k].ok)
            HSQ_ASSERT_U64_EQ(back.id, UINT64_MAX);
    }
    memcpy(bad, rec, n);
    bad[7] = 0x80; /* the timestamp mask */
    HSQ_ASSERT_EQ(hsq_task_decode(bad, n, &back), HSQ_ECORRUPT);
    memcpy(bad, rec, n);
    bad[12] = 100; /* the user's length */
    HSQ_ASSERT_EQ(hsq_task_decode(bad, n, &back), HSQ_ECORRUPT);
}

int main(void) {
    test_roundtrip();
    test_v1_short();
    test_damaged();
    printf("task: ok\n");
    return 0;
}
