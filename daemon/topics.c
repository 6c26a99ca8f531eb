#include "daemon/topics.h"

#include "common/alloc.h"
#include "schemas/err.h"

#include <stdlib.h>
#include <string.h>

/* A chained hash set of (un)subscribed topics. Matching looks up every
 * prefix length that some topic has, so by_len says which lengths to try. */
typedef struct topic {
    struct topic *next;
    uint64_t hash;
    size_t len;
    uint32_t refs;
    uint8_t bytes[];
} topic;

struct hsq_topics {
    topic **buckets;
    size_t nbuckets; /* a power of two */
    size_t n, max;
    uint32_t by_len[HSQ_TOPIC_MAX + 1]; /* topics held of each length */
    uint64_t dropped;                   /* subscriptions past max, not kept: match all */
};

static uint64_t hash_of(const uint8_t *b, size_t len) {
    uint64_t h = 1469598103934665603ull ^ len;
    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

hsq_topics *hsq_topics_new(size_t max) {
    hsq_topics *t = hsq_xcalloc(1, sizeof *t);
    t->max = max;
    t->nbuckets = 64;
    t->buckets = hsq_xcalloc(t->nbuckets, sizeof *t->buckets);
    return t;
}

void hsq_topics_free(hsq_topics *t) {
    if (!t)
        return;
    for (size_t b = 0; b < t->nbuckets; b++) {
        for (topic *e = t->buckets[b], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(t->buckets);
    free(t);
}

static topic **slot_of(const hsq_topics *t, const uint8_t *b, size_t len, uint64_t h) {
    topic **pp = &t->buckets[h & (t->nbuckets - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->bytes, b, len) == 0))
        pp = &(*pp)->next;
    return pp;
}

static void grow(hsq_topics *t) {
    size_t nb = t->nbuckets * 2;
    topic **nv = hsq_xcalloc(nb, sizeof *nv);
    for (size_t b = 0; b < t->nbuckets; b++) {
        for (topic *e = t->buckets[b], *next; e; e = next) {
            next = e->next;
            e->next = nv[e->hash & (nb - 1)];
            nv[e->hash & (nb - 1)] = e;
        }
    }
    free(t->buckets);
    t->buckets = nv;
    t->nbuckets = nb;
}

int hsq_topics_apply(hsq_topics *t, const void *msg, size_t len) {
    const uint8_t *m = msg;
    if (len == 0 || m[0] > 1)
        return HSQ_EINVAL;
    const uint8_t *b = m + 1;
    size_t blen = len - 1;
    uint64_t h = hash_of(b, blen);
    topic **pp = slot_of(t, b, blen, h);
    if (m[0] == 1) {
        if (*pp) {
            (*pp)->refs++;
            return 1;
        }
        if (t->n >= t->max) {
            t->dropped++;
            return 1;
        }
        topic *e = hsq_xmalloc(sizeof *e + blen);
        e->next = NULL;
        e->hash = h;
        e->len = blen;
        e->refs = 1;
        if (blen)
            memcpy(e->bytes, b, blen);
        *pp = e;
        t->n++;
        if (blen <= HSQ_TOPIC_MAX)
            t->by_len[blen]++;
        if (t->n > t->nbuckets)
            grow(t);
        return 1;
    }
    if (!*pp) {
        if (t->dropped > 0)
            t->dropped--; /* XPUB passes up only what it passed down: one not kept */
        return 0;
    }
    if (--(*pp)->refs == 0) {
        topic *e = *pp;
        *pp = e->next;
        free(e);
        t->n--;
        if (blen <= HSQ_TOPIC_MAX)
            t->by_len[blen]--;
    }
    return 0;
}

int hsq_topics_match(const hsq_topics *t, const void *topic_, size_t len) {
    if (t->dropped > 0)
        return 1;
    if (t->n == 0)
        return 0;
    const uint8_t *b = topic_;
    size_t max = len < HSQ_TOPIC_MAX ? len : HSQ_TOPIC_MAX;
    for (size_t l = 0; l <= max; l++)
        if (t->by_len[l] && *slot_of(t, b, l, hash_of(b, l)))
            return 1;
    return 0;
}

size_t hsq_topics_count(const hsq_topics *t) {
    return t->n;
}
