#include "common/fault.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int loaded;
static char want[128];
static long want_n = 1, stall_ms = -1, seen;

/* "name[@N][~MS]" */
static void load(void) {
    loaded = 1;
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
    if (!loaded)
        load();
    if (!want[0] || strcmp(point, want) != 0)
        return;
    if (++seen < want_n)
        return;
    if (stall_ms < 0)
        kill(getpid(), SIGKILL);
    struct timespec ts = {stall_ms / 1000, (stall_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}
