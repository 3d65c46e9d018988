#ifndef STARLING_UTIL_LOG_H
#define STARLING_UTIL_LOG_H
#include "starling.h"

#if defined(__GNUC__)
#define STARLING_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define STARLING_PRINTF(a, b)
#endif

/* Formats and passes to the application's handler; cheap no-op when silent. */
void starling__log(starling_log_level level, const char *fmt, ...) STARLING_PRINTF(2, 3);
int starling__log_enabled(starling_log_level level);

#define SLOG_ERROR(...) starling__log(STARLING_LOG_ERROR, __VA_ARGS__)
#define SLOG_WARN(...) starling__log(STARLING_LOG_WARN, __VA_ARGS__)
#define SLOG_INFO(...) starling__log(STARLING_LOG_INFO, __VA_ARGS__)
#define SLOG_DEBUG(...)                                                                    \
    do {                                                                                   \
        if (starling__log_enabled(STARLING_LOG_DEBUG))                                     \
            starling__log(STARLING_LOG_DEBUG, __VA_ARGS__);                                \
    } while (0)
#endif
