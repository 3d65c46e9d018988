/* A self-pipe that wakes a thread blocked in poll(): signal from any thread. */
#ifndef STARLING_PLATFORM_WAKE_H
#define STARLING_PLATFORM_WAKE_H
typedef struct starling__wake {
    int rfd, wfd;
} starling__wake;

int starling__wake_init(starling__wake *w);
/* Async-signal-safe. */
void starling__wake_signal(starling__wake *w);
void starling__wake_drain(starling__wake *w);
void starling__wake_close(starling__wake *w);
#endif
