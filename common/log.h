/* log.h - one line per event on stderr, for journald.
 *
 * Format: "<N>component key=value ..." where <N> is the syslog priority prefix
 * that journald understands (sd-daemon(3)). Only shells (main.c, srv.c, the
 * worker loop, the CLI) log; libraries return codes. Arguments are not
 * evaluated when the level is filtered out.
 */
#ifndef HSQ_COMMON_LOG_H
#define HSQ_COMMON_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

enum { HSQ_LOG_ERR = 3, HSQ_LOG_WARN = 4, HSQ_LOG_NOTICE = 5, HSQ_LOG_INFO = 6, HSQ_LOG_DEBUG = 7 };

extern int hsq_log_level; /* messages with level > hsq_log_level are dropped */
extern int hsq_log_time;  /* prefix a wall-clock timestamp (outside systemd) */

int hsq_log_level_parse(const char *s); /* "err".."debug" -> level, or -1 */

void hsq_log_write(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define hsq_log(level, component, ...)                                                             \
    do {                                                                                           \
        if ((level) <= hsq_log_level)                                                              \
            hsq_log_write((level), (component), __VA_ARGS__);                                      \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
