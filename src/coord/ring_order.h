/* Choosing a ring order from measured links: pure functions, no coordinator state.
 *
 * The model. An all-reduce of B bytes on a ring of n moves 2(n-1) steps of B/n bytes,
 * each step as slow as the slowest link in use, plus a one-way latency per step:
 *   T = 2(n-1) * (B/n / min effective bandwidth + max rtt / 2).
 * Links are not independent: the ring links that leave a site share its uplink. So the
 * members are grouped into sites (joined by links, both ways, at least SITE_FRACTION as
 * fast as the fastest link measured), each site's uplink is taken to be as fast as the
 * fastest link measured out of it, and a ring link from site A to another site gets
 * min(its own bandwidth, uplink(A) / the number of ring links leaving A). A ring that
 * visits each site once crosses each uplink once; one that alternates between two sites
 * of three crosses each three times, and runs three times slower. */
#ifndef STARLING_COORD_RING_ORDER_H
#define STARLING_COORD_RING_ORDER_H

/* Up to this many members every order is tried; beyond it, a greedy heuristic. */
#define STARLING_ORDER_EXACT_MAX 9
/* The message size the expected times in the logs are for. */
#define STARLING_ORDER_REF_BYTES (64.0 * 1024 * 1024)

typedef struct starling__ring_model {
    int n;
    const double *bw;  /* bw[i*n+j]: bytes/s from member i to member j (0: unusable) */
    const double *rtt; /* seconds */
    int *site;         /* site of each member, 0.. */
    double *uplink;    /* per site: bytes/s out of it */
    int *cross;        /* scratch: ring links leaving each site */
} starling__ring_model;

/* Groups the members into sites. The model borrows bw and rtt (n*n each); returns
 * STARLING_E_NOMEM or STARLING_OK. */
int starling__ring_model_init(starling__ring_model *m, int n, const double *bw,
                              const double *rtt);
void starling__ring_model_free(starling__ring_model *m);

/* Expected seconds of a `bytes` all-reduce on the ring order[0] -> order[1] -> ... ->
 * order[0]; 1e300 if it uses an unusable link. */
double starling__ring_time(starling__ring_model *m, const int *order, double bytes);

/* Writes into order[0..n) the ring with the smallest expected time, starting at member 0:
 * exact up to STARLING_ORDER_EXACT_MAX members (ties: the first in lexicographic order),
 * else the best of the greedy rings (from each member, always to the fastest unvisited
 * link, ties to the lower index) improved by moving single members while that helps.
 * Keeps 0, 1, ..., n-1 when out of memory. */
void starling__ring_best(starling__ring_model *m, double bytes, int *order);
#endif
