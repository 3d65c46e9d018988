#include "platform/clock.h"

#include <errno.h>
#include <time.h>

int64_t starling__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t starling__now_ms(void) { return starling__now_ns() / 1000000; }

void starling__sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int starling__ms_until(int64_t deadline_ms)
{
    int64_t left = deadline_ms - starling__now_ms();
    if (left <= 0)
        return 0;
    return left > 2147483647 ? 2147483647 : (int)left;
}
