#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int hsq_log_level = HSQ_LOG_INFO;
int hsq_log_time = 0;

int hsq_log_level_parse(const char *s) {
    static const char *names[] = {"emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"};
    for (int i = 0; i < 8; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

void hsq_log_write(int level, const char *component, const char *fmt, ...) {
    char line[1024];
    int n = 0;
    if (hsq_log_time) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = snprintf(line, sizeof line, "<%d>%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ", level,
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, component);
    } else {
        n = snprintf(line, sizeof line, "<%d>%s ", level, component);
    }
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    /* One write so lines from several processes sharing stderr never interleave. */
    fwrite(line, 1, len, stderr);
    fflush(stderr);
}
