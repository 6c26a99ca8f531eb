/* cond.h - condition variables on the monotonic clock.
 *
 * hsqd's background threads (reaper.c, janitor.c) rest until a monotonic
 * deadline unless they are told to stop; a wall-clock deadline would
 * stretch or shrink with every clock step.
 */
#ifndef HSQ_DAEMON_COND_H
#define HSQ_DAEMON_COND_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Initialise cv so that hsq_cond_wait_until_us's deadlines are monotonic. */
static inline void hsq_cond_init_mono(pthread_cond_t *cv) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

/* Wait on cv (mu held) until woken or until monotonic time until_us (as
 * hsq_clock_mono_us). Returns ETIMEDOUT at the deadline, else 0. */
static inline int hsq_cond_wait_until_us(pthread_cond_t *cv, pthread_mutex_t *mu,
                                         uint64_t until_us) {
    struct timespec ts = {(time_t)(until_us / 1000000u), (long)(until_us % 1000000u) * 1000};
    return pthread_cond_timedwait(cv, mu, &ts);
}

#endif
