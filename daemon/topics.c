#include "daemon/topics.h"

#include "common/alloc.h"
#include "schemas/err.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *bytes;
    size_t len;
    uint32_t refs;
} topic;

/* Sorted by (len, bytes): a match looks up one prefix length at a time. */
struct hsq_topics {
    topic *v;
    size_t n, cap;
    uint32_t by_len[HSQ_TOPIC_MAX + 1]; /* topics held of each length */
};

hsq_topics *hsq_topics_new(void) {
    return hsq_xcalloc(1, sizeof(hsq_topics));
}

void hsq_topics_free(hsq_topics *t) {
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].bytes);
    free(t->v);
    free(t);
}

static int cmp(const topic *a, const uint8_t *b, size_t blen) {
    if (a->len != blen)
        return a->len < blen ? -1 : 1;
    return blen ? memcmp(a->bytes, b, blen) : 0;
}

/* Index of the first topic not below (b, blen). */
static size_t lower_bound(const hsq_topics *t, const uint8_t *b, size_t blen) {
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp(&t->v[mid], b, blen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int held(const hsq_topics *t, const uint8_t *b, size_t blen, size_t *at) {
    *at = lower_bound(t, b, blen);
    return *at < t->n && cmp(&t->v[*at], b, blen) == 0;
}

int hsq_topics_apply(hsq_topics *t, const void *msg, size_t len) {
    const uint8_t *m = msg;
    if (len == 0 || m[0] > 1)
        return HSQ_EINVAL;
    const uint8_t *b = m + 1;
    size_t blen = len - 1, at;
    int found = held(t, b, blen, &at);
    if (m[0] == 1) {
        if (found) {
            t->v[at].refs++;
            return 1;
        }
        if (t->n == t->cap) {
            t->cap = t->cap ? t->cap * 2 : 16;
            t->v = hsq_xrealloc(t->v, t->cap * sizeof *t->v);
        }
        memmove(&t->v[at + 1], &t->v[at], (t->n - at) * sizeof *t->v);
        t->v[at].bytes = hsq_xmalloc(blen ? blen : 1);
        if (blen)
            memcpy(t->v[at].bytes, b, blen);
        t->v[at].len = blen;
        t->v[at].refs = 1;
        t->n++;
        if (blen <= HSQ_TOPIC_MAX)
            t->by_len[blen]++;
        return 1;
    }
    if (found && --t->v[at].refs == 0) {
        free(t->v[at].bytes);
        memmove(&t->v[at], &t->v[at + 1], (t->n - at - 1) * sizeof *t->v);
        t->n--;
        if (blen <= HSQ_TOPIC_MAX)
            t->by_len[blen]--;
    }
    return 0;
}

int hsq_topics_match(const hsq_topics *t, const void *topic_, size_t len) {
    if (t->n == 0)
        return 0;
    size_t at, max = len < HSQ_TOPIC_MAX ? len : HSQ_TOPIC_MAX;
    for (size_t l = 0; l <= max; l++)
        if (t->by_len[l] && held(t, topic_, l, &at))
            return 1;
    return 0;
}

size_t hsq_topics_count(const hsq_topics *t) {
    return t->n;
}
