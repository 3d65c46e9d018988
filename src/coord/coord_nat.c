/* Peers that accept no inbound connections (registered with data port 0: behind a NAT or
 * a firewall). Such a peer opens both of its ring links itself (core/links.c), so each of
 * its two neighbours must accept connections: two of them are never neighbours. Hence
 *   - admission: an epoch of n >= 2 members holds at most n/2 of them; the surplus waits
 *     (newcomers first, by the order check_formation assembled) until enough members that
 *     accept connections are there;
 *   - placement: after the ring-order policy, if two of them are neighbours, they are
 *     spread out: each follows one member that accepts connections, in the policy's order.
 * No byte is relayed: a reversed link carries the same bytes as any other. */
#include <inttypes.h>

#include "coord/coord_internal.h"
#include "util/log.h"

static int closed(starling_coord *c, uint64_t id)
{
    starling__coord_conn *q = starling__coord_find(c, id);
    return q && q->port == 0;
}

uint32_t starling__coord_fit_closed(starling_coord *c, uint32_t n)
{
    uint32_t k = 0, left_out = 0, ready = n, k0;
    for (uint32_t i = 0; i < n; i++)
        k += closed(c, c->ids[i]);
    k0 = k;
    for (uint32_t i = n; i-- > 0 && n > 1 && 2 * k > n;) {
        if (!closed(c, c->ids[i]))
            continue;
        for (uint32_t j = i; j + 1 < n; j++)
            c->ids[j] = c->ids[j + 1];
        n--;
        k--;
        left_out++;
    }
    if (left_out != c->closed_left_out) {
        if (left_out)
            SLOG_INFO("%u of the %u peers ready accept no inbound connections: %u of them wait "
                      "for more members that accept connections (no two may be neighbours)",
                      (unsigned)k0, (unsigned)ready, (unsigned)left_out);
        c->closed_left_out = left_out;
    }
    return n;
}

void starling__coord_spread_closed(starling_coord *c, uint32_t n)
{
    uint64_t *open = c->sort_a, *shut = c->sort_b; /* scratch until form()'s quorum check */
    uint32_t no = 0, nc = 0, adjacent = 0, i = 0;
    if (n < 2)
        return;
    for (uint32_t j = 0; j < n; j++) {
        int cl = closed(c, c->ids[j]);
        adjacent += cl && closed(c, c->ids[(j + 1) % n]);
        if (cl)
            shut[nc++] = c->ids[j];
        else
            open[no++] = c->ids[j];
    }
    if (!adjacent)
        return;
    /* open, closed, open, closed, ..., then the open ones left (nc <= no: fit_closed) */
    for (uint32_t j = 0; j < no; j++) {
        c->ids[i++] = open[j];
        if (j < nc)
            c->ids[i++] = shut[j];
    }
}
