/* Runs server-side handshakes concurrently, each on a short-lived thread, so that one
 * slow or silent client delays nobody else: an acceptor hands over the accepted socket
 * and goes back to accept(). At most `max` handshakes run at once; beyond that new
 * connections are refused at once. Each handshake is bounded by its deadline. */
#ifndef STARLING_AUTH_HSPOOL_H
#define STARLING_AUTH_HSPOOL_H
#include <pthread.h>

#include "auth/handshake.h"

/* Called on the handshake's thread for an authenticated connection; takes the fd and
 * copies what it keeps of the seal (the connection's keys: auth/seal.h). */
typedef void (*starling__hs_done_fn)(void *user, int fd, const starling__msg_hello *hello,
                                     const starling__seal *seal);

typedef struct starling__hspool {
    pthread_mutex_t mu;
    pthread_cond_t idle;
    int active, max;
    int handshake_ms;
    const starling__key *key;
    const char *label; /* who is refusing, for the log */
    starling__hs_done_fn done;
    void *user;
} starling__hspool;

int starling__hspool_init(starling__hspool *p, const starling__key *key, int max,
                          int handshake_ms, const char *label, starling__hs_done_fn done,
                          void *user);
/* Takes ownership of `fd` in every case. */
void starling__hspool_submit(starling__hspool *p, int fd);
/* Waits for the handshakes in flight (each ends by its deadline), then frees. */
void starling__hspool_destroy(starling__hspool *p);
#endif
