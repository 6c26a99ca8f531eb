/* topics.h - which event topics someone is subscribed to.
 *
 * hsqd's events socket is an XPUB: libzmq hands it a message whenever a
 * topic gains its first subscriber (byte 1, then the topic) or loses its last
 * one (byte 0, then the topic), including when a subscriber disconnects. The
 * set kept here lets the core skip encoding an event no subscriber would
 * receive: with a topic per user, most users have nobody watching.
 *
 * Matching is ZeroMQ's: a subscription matches every topic it is a prefix
 * of, so "" matches all, and "al" matches "alice". Subscriptions longer than
 * HSQ_TOPIC_MAX bytes are counted but can match no event topic (user ids are
 * shorter) and are otherwise ignored.
 *
 * Ownership: the set owns copies of its topics. Not thread-safe; hsqd uses it
 * on the loop thread only.
 */
#ifndef HSQ_DAEMON_TOPICS_H
#define HSQ_DAEMON_TOPICS_H

#include <stddef.h>
#include <stdint.h>

#define HSQ_TOPIC_MAX 255
/* Distinct topics hsqd keeps at most: past that (a subscriber gone wild)
 * the set stops filtering and every event is published, as a plain PUB
 * would, until unsubscriptions bring it back under. */
#define HSQ_TOPICS_MAX (1u << 20)

typedef struct hsq_topics hsq_topics;

/* A set keeping at most max topics (hsqd: HSQ_TOPICS_MAX). Aborts on OOM,
 * like every bookkeeping allocation. */
hsq_topics *hsq_topics_new(size_t max);
void hsq_topics_free(hsq_topics *t);

/* Apply one message received on the XPUB socket. Returns 1 for a
 * subscription, 0 for an unsubscription (of a topic held or not), and
 * HSQ_EINVAL for anything else (an empty message, a first byte other than 0
 * or 1), which changes nothing. A topic subscribed twice must be
 * unsubscribed twice. */
int hsq_topics_apply(hsq_topics *t, const void *msg, size_t len);

/* Would an event on this topic reach anyone? (Always yes while more than
 * max topics are subscribed: those beyond it are not kept.) */
int hsq_topics_match(const hsq_topics *t, const void *topic, size_t len);

/* Distinct topics held (a long one included; not those beyond the cap). */
size_t hsq_topics_count(const hsq_topics *t);

#endif
