#ifndef STARLING_PLATFORM_CLOCK_H
#define STARLING_PLATFORM_CLOCK_H
#include <stdint.h>
/* Monotonic milliseconds since an arbitrary origin. */
int64_t starling__now_ms(void);
/* Monotonic nanoseconds. */
int64_t starling__now_ns(void);
void starling__sleep_ms(int ms);
/* Sleeps ns nanoseconds (resumed after a signal); nothing if ns <= 0. */
void starling__sleep_ns(int64_t ns);
/* Milliseconds left until `deadline_ms` (0 if past), capped at INT32 max. */
int starling__ms_until(int64_t deadline_ms);
#endif
