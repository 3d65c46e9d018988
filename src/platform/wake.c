#include "platform/wake.h"

#include <fcntl.h>
#include <unistd.h>

#include "starling.h"

int starling__wake_init(starling__wake *w)
{
    int fds[2];
    if (pipe(fds) != 0)
        return STARLING_E_OS;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    w->rfd = fds[0];
    w->wfd = fds[1];
    return STARLING_OK;
}

void starling__wake_signal(starling__wake *w)
{
    char c = 1;
    /* A full pipe already means "wake up": ignoring EAGAIN is correct. */
    ssize_t r = write(w->wfd, &c, 1);
    (void)r;
}

void starling__wake_drain(starling__wake *w)
{
    char buf[64];
    while (read(w->rfd, buf, sizeof buf) > 0) {
    }
}

void starling__wake_close(starling__wake *w)
{
    if (w->rfd >= 0)
        close(w->rfd);
    if (w->wfd >= 0)
        close(w->wfd);
    w->rfd = w->wfd = -1;
}
