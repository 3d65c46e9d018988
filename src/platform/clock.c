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

void starling__sleep_ns(int64_t ns)
{
    struct timespec ts;
    if (ns <= 0)
        return;
    ts.tv_sec = (time_t)(ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void starling__sleep_ms(int ms) { starling__sleep_ns((int64_t)ms * 1000000); }

int starling__ms_until(int64_t deadline_ms)
{
    int64_t left = deadline_ms - starling__now_ms();
    if (left <= 0)
        return 0;
    return left > 2147483647 ? 2147483647 : (int)left;
}
