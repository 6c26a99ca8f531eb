/* clock.h - injectable time.
 *
 * The queue core never reads a clock: shells pass `now` in. Times are
 * milliseconds since the Unix epoch (wall clock, for retention dates that
 * users see) and a monotonic millisecond counter for timers and latency.
 * HSQ_FAKE_CLOCK_FILE lets tests move wall time: when set in the environment,
 * hsq_clock_wall_ms() adds the signed millisecond offset read from that file.
 */
#ifndef HSQ_COMMON_CLOCK_H
#define HSQ_COMMON_CLOCK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int64_t hsq_clock_wall_ms(void);
uint64_t hsq_clock_mono_ms(void);
uint64_t hsq_clock_mono_us(void);

#ifdef __cplusplus
}
#endif

#endif
