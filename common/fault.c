#include "common/fault.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char want[128];
static long want_n = 1, stall_ms = -1;
static atomic_long seen; /* points run on the loop and on the reaper thread */

/* "name[@N][~MS]" */
static void load(void) {
    const char *e = getenv("HSQ_FAULT");
    if (!e || strlen(e) >= sizeof want)
        return;
    strcpy(want, e);
    char *tilde = strchr(want, '~');
    if (tilde) {
        *tilde = '\0';
        stall_ms = strtol(tilde + 1, NULL, 10);
        if (stall_ms < 0)
            stall_ms = 0;
    }
    char *at = strchr(want, '@');
    if (at) {
        *at = '\0';
        want_n = strtol(at + 1, NULL, 10);
    }
}

void hsq_fault(const char *point) {
    pthread_once(&once, load);
    if (!want[0] || strcmp(point, want) != 0)
        return;
    if (atomic_fetch_add(&seen, 1) + 1 < want_n)
        return;
    if (stall_ms < 0)
        kill(getpid(), SIGKILL);
    struct timespec ts = {stall_ms / 1000, (stall_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}
