/*
 * A program outside the tree, built against an *installed* libstarling (pkg-config or
 * find_package; tests/install): a coordinator and two communicators on loopback, one
 * thread each, all-reduce a vector and check every element on both members.
 * Uses only <starling.h>; exits 0 on success, 1 with a message otherwise.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <starling.h>

enum { NPEERS = 2, COUNT = 4099 };

static const char secret[] = "outside-secret";
static char coord_addr[64];

struct peer {
    int idx;
    int ok;
    char why[200];
};

static void *coord_main(void *coord)
{
    starling_coord_run(coord);
    return NULL;
}

/* Peer idx contributes idx + 1 + i at element i, so the sum is 3 + 2i: exact in f32
 * for every i below 2^23. */
static void *peer_main(void *arg)
{
    struct peer *p = arg;
    static float buf[NPEERS][COUNT];
    float *x = buf[p->idx];
    starling_config *cfg = NULL;
    starling_comm *comm = NULL;
    int rc;

    for (int i = 0; i < COUNT; i++)
        x[i] = (float)(p->idx + 1 + i);
    if ((rc = starling_config_create(&cfg)) != STARLING_OK)
        goto fail;
    starling_config_set_min_peers(cfg, NPEERS);
    starling_config_set_timeout_ms(cfg, 2000);
    starling_config_set_op_timeout_ms(cfg, 20000);
    rc = starling_comm_create(&comm, coord_addr, "outside", secret, sizeof secret - 1, cfg);
    starling_config_destroy(cfg);
    if (rc != STARLING_OK)
        goto fail;
    if ((rc = starling_update_topology(comm)) != STARLING_OK)
        goto fail;
    if (starling_comm_size(comm) != NPEERS) {
        snprintf(p->why, sizeof p->why, "epoch of %d members", starling_comm_size(comm));
        goto out;
    }
    rc = starling_allreduce(comm, x, x, COUNT, STARLING_F32, STARLING_SUM, NULL);
    if (rc != STARLING_OK)
        goto fail;
    for (int i = 0; i < COUNT; i++) {
        if (x[i] != (float)(3 + 2 * i)) {
            snprintf(p->why, sizeof p->why, "element %d is %g, expected %d", i, x[i], 3 + 2 * i);
            goto out;
        }
    }
    p->ok = 1;
    goto out;
fail:
    snprintf(p->why, sizeof p->why, "%s (%s)", starling_strerror(rc),
             comm ? starling_comm_errmsg(comm) : "no communicator");
out:
    starling_comm_destroy(comm);
    return NULL;
}

int main(void)
{
    starling_coord *coord;
    pthread_t coord_thr, thr[NPEERS];
    struct peer peers[NPEERS];
    int failed = 0, rc;

    alarm(50); /* a hang ends the process; each call below is bounded by its timeouts */
    if (starling_version() != STARLING_VERSION_NUMBER) {
        fprintf(stderr, "header %s, library %s\n", STARLING_VERSION_STRING,
                starling_version_string());
        return 1;
    }
    rc = starling_coord_create(&coord, "127.0.0.1:0", "outside", secret, sizeof secret - 1, NULL);
    if (rc != STARLING_OK) {
        fprintf(stderr, "coordinator: %s\n", starling_strerror(rc));
        return 1;
    }
    snprintf(coord_addr, sizeof coord_addr, "127.0.0.1:%d", starling_coord_port(coord));
    if (pthread_create(&coord_thr, NULL, coord_main, coord) != 0)
        return 1;
    for (int i = 0; i < NPEERS; i++) {
        memset(&peers[i], 0, sizeof peers[i]);
        peers[i].idx = i;
        if (pthread_create(&thr[i], NULL, peer_main, &peers[i]) != 0)
            return 1;
    }
    for (int i = 0; i < NPEERS; i++) {
        pthread_join(thr[i], NULL);
        if (!peers[i].ok) {
            fprintf(stderr, "peer %d: %s\n", i, peers[i].why);
            failed = 1;
        }
    }
    starling_coord_stop(coord);
    pthread_join(coord_thr, NULL);
    starling_coord_destroy(coord);
    if (!failed)
        printf("outside all-reduce of %d floats on %d members: ok (libstarling %s)\n", COUNT,
               NPEERS, starling_version_string());
    return failed;
}
