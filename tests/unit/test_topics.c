/* test_topics.c - the events socket's subscription set: ZeroMQ's prefix
 * matching, reference counts, and messages that are not (un)subscriptions. */
#include "daemon/topics.h"
#include "schemas/err.h"
#include "test.h"

#include <string.h>

static int sub(hsq_topics *t, int on, const char *topic) {
    char m[300];
    size_t n = strlen(topic);
    m[0] = (char)on;
    memcpy(m + 1, topic, n);
    return hsq_topics_apply(t, m, n + 1);
}

static int match(const hsq_topics *t, const char *topic) {
    return hsq_topics_match(t, topic, strlen(topic));
}

static void test_prefixes(void) {
    hsq_topics *t = hsq_topics_new(HSQ_TOPICS_MAX);
    HSQ_ASSERT(!match(t, "alice"));
    HSQ_ASSERT(!match(t, ""));
    HSQ_ASSERT_EQ(sub(t, 1, "alice"), 1);
    HSQ_ASSERT(match(t, "alice"));
    HSQ_ASSERT(match(t, "alice2")); /* a prefix, as a SUB socket matches */
    HSQ_ASSERT(!match(t, "alic"));
    HSQ_ASSERT(!match(t, "bob"));
    HSQ_ASSERT_EQ(sub(t, 1, "b"), 1);
    HSQ_ASSERT(match(t, "bob"));
    HSQ_ASSERT(!match(t, "carol"));
    HSQ_ASSERT_EQ(hsq_topics_count(t), 2);
    /* "" matches everything. */
    HSQ_ASSERT_EQ(sub(t, 1, ""), 1);
    HSQ_ASSERT(match(t, "carol"));
    HSQ_ASSERT(match(t, ""));
    HSQ_ASSERT_EQ(sub(t, 0, ""), 0);
    HSQ_ASSERT(!match(t, "carol"));
    HSQ_ASSERT_EQ(sub(t, 0, "alice"), 0);
    HSQ_ASSERT(!match(t, "alice"));
    HSQ_ASSERT(match(t, "bob"));
    HSQ_ASSERT_EQ(hsq_topics_count(t), 1);
    hsq_topics_free(t);
}

static void test_refs_and_junk(void) {
    hsq_topics *t = hsq_topics_new(HSQ_TOPICS_MAX);
    /* Subscribed twice (a verbose peer, or two after an unsubscription
     * raced): the first unsubscription keeps it. */
    sub(t, 1, "u1");
    sub(t, 1, "u1");
    sub(t, 0, "u1");
    HSQ_ASSERT(match(t, "u1"));
    sub(t, 0, "u1");
    HSQ_ASSERT(!match(t, "u1"));
    /* Unsubscribing what is not held changes nothing. */
    HSQ_ASSERT_EQ(sub(t, 0, "nobody"), 0);
    HSQ_ASSERT_EQ(hsq_topics_count(t), 0);
    /* Not subscription messages. */
    HSQ_ASSERT_EQ(hsq_topics_apply(t, "", 0), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_topics_apply(t, "\x02zz", 3), HSQ_EINVAL);
    HSQ_ASSERT_EQ(hsq_topics_count(t), 0);
    /* A topic longer than any user id is held but matches nothing. */
    char longt[HSQ_TOPIC_MAX + 3];
    memset(longt, 'x', sizeof longt - 1);
    longt[sizeof longt - 1] = '\0';
    HSQ_ASSERT_EQ(sub(t, 1, longt), 1);
    HSQ_ASSERT_EQ(hsq_topics_count(t), 1);
    HSQ_ASSERT(!match(t, longt));
    HSQ_ASSERT_EQ(sub(t, 0, longt), 0);
    HSQ_ASSERT_EQ(hsq_topics_count(t), 0);
    /* Binary topics with NULs, many of them, in any order. */
    char k[8];
    for (int i = 999; i >= 0; i--) {
        k[0] = 1;
        k[1] = 'u';
        k[2] = '\0';
        memcpy(k + 3, &i, sizeof i);
        HSQ_ASSERT_EQ(hsq_topics_apply(t, k, 3 + sizeof i), 1);
    }
    HSQ_ASSERT_EQ(hsq_topics_count(t), 1000);
    for (int i = 0; i < 1000; i++) {
        memcpy(k + 3, &i, sizeof i);
        HSQ_ASSERT(hsq_topics_match(t, k + 1, 2 + sizeof i));
    }
    int i = 1000;
    memcpy(k + 3, &i, sizeof i);
    HSQ_ASSERT(!hsq_topics_match(t, k + 1, 2 + sizeof i));
    for (i = 0; i < 1000; i += 2) {
        k[0] = 0;
        memcpy(k + 3, &i, sizeof i);
        HSQ_ASSERT_EQ(hsq_topics_apply(t, k, 3 + sizeof i), 0);
    }
    HSQ_ASSERT_EQ(hsq_topics_count(t), 500);
    for (i = 0; i < 1000; i++) {
        memcpy(k + 3, &i, sizeof i);
        HSQ_ASSERT_EQ(hsq_topics_match(t, k + 1, 2 + sizeof i), i % 2);
    }
    hsq_topics_free(t);
}

/* Past its cap the set keeps nothing more and matches everything, until
 * unsubscriptions bring it back under. */
static void test_cap(void) {
    hsq_topics *t = hsq_topics_new(3);
    sub(t, 1, "a");
    sub(t, 1, "b");
    sub(t, 1, "c");
    HSQ_ASSERT(!match(t, "zed"));
    HSQ_ASSERT_EQ(sub(t, 1, "d"), 1);
    HSQ_ASSERT_EQ(sub(t, 1, "e"), 1);
    HSQ_ASSERT_EQ(hsq_topics_count(t), 3);
    HSQ_ASSERT(match(t, "zed")); /* d and e were not kept: publish everything */
    sub(t, 0, "e");
    HSQ_ASSERT(match(t, "zed"));
    sub(t, 0, "d");
    HSQ_ASSERT(!match(t, "zed")); /* back under: filtering again */
    HSQ_ASSERT(match(t, "a"));
    sub(t, 0, "a");
    HSQ_ASSERT_EQ(sub(t, 1, "f"), 1); /* room again: kept */
    HSQ_ASSERT_EQ(hsq_topics_count(t), 3);
    HSQ_ASSERT(match(t, "f"));
    HSQ_ASSERT(!match(t, "a"));
    hsq_topics_free(t);
}

int main(void) {
    test_prefixes();
    test_refs_and_junk();
    test_cap();
    printf("test_topics: ok\n");
    return 0;
}
