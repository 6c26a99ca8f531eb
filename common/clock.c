#include "common/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int64_t fake_offset_ms(void) {
    const char *path = getenv("HSQ_FAKE_CLOCK_FILE");
    if (!path || !*path)
        return 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long long off = 0;
    if (fscanf(f, "%lld", &off) != 1)
        off = 0;
    fclose(f);
    return (int64_t)off;
}

int64_t hsq_clock_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + fake_offset_ms();
}

uint64_t hsq_clock_mono_ms(void) {
    return hsq_clock_mono_us() / 1000;
}

uint64_t hsq_clock_mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
