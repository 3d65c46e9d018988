#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>

/* volatile: read once per message (below), so that a handler changed while engine threads
 * log (the Python package removes its own at interpreter exit) is either the old or the
 * new one, never a NULL read after the check. */
static starling_log_fn volatile log_fn;
static void *volatile log_user;
static starling_log_level log_level = STARLING_LOG_INFO;

void starling_log_set_handler(starling_log_fn fn, void *user)
{
    log_fn = fn;
    log_user = user;
}

void starling_log_set_level(starling_log_level level) { log_level = level; }

int starling__log_enabled(starling_log_level level) { return log_fn && level <= log_level; }

void starling__log(starling_log_level level, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    starling_log_fn fn = log_fn;
    void *user = log_user;
    if (!fn || level > log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fn(user, level, buf);
}

void starling_log_stderr(void *user, starling_log_level level, const char *msg)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    (void)user;
    fprintf(stderr, "starling[%s] %s\n", (unsigned)level < 4 ? names[level] : "?", msg);
}
