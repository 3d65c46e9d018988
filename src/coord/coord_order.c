/* The ring order of the next epoch, by the policy of starling_config_set_ring_order:
 *   join      survivors keep their order, newcomers come after them by id (as assembled
 *             by starling__coord_check_formation; nothing to do here);
 *   name      by peer name, then id;
 *   measured  from the links the members measured (MSG_LINKS): once every ordered pair of
 *             members has a measurement, the order with the smallest expected all-reduce
 *             time (coord/ring_order.h), if it beats the current one by more than
 *             REORDER_GAIN; while some pair is unknown, the epoch being formed asks its
 *             members to measure, once per membership.
 * The links table holds the latest report of each registered peer; reports of peers
 * that are gone are dropped when a new report comes in. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord/coord_internal.h"
#include "coord/ring_order.h"
#include "util/alloc.h"
#include "util/config.h"
#include "util/log.h"

/* A new order must be expected this much faster than the current one: measurements are
 * noisy, and a new order costs a new epoch (every ring link re-made). */
#define REORDER_GAIN 0.8

/* Drops the reporter's old links and those of peers no longer registered (looked up in a
 * sorted list of the registered ids: the table can hold n^2 entries). */
static void drop_links(starling_coord *c, uint64_t reporter)
{
    uint64_t *reg = starling__malloc(sizeof *reg * (size_t)(c->nconns > 0 ? c->nconns : 1));
    int nreg = 0, keep = 0;
    if (!reg) { /* keep the departed peers' entries; they are never read for an epoch */
        for (int i = 0; i < c->nlinks; i++)
            if (c->links[i].from != reporter)
                c->links[keep++] = c->links[i];
        c->nlinks = keep;
        return;
    }
    for (int i = 0; i < c->nconns; i++)
        if (c->conns[i]->registered && !c->conns[i]->closing)
            reg[nreg++] = c->conns[i]->peer_id;
    qsort(reg, (size_t)nreg, sizeof *reg, starling__coord_cmp_id);
    for (int i = 0; i < c->nlinks; i++) {
        const starling__coord_link *l = &c->links[i];
        if (l->from != reporter &&
            bsearch(&l->from, reg, (size_t)nreg, sizeof *reg, starling__coord_cmp_id) &&
            bsearch(&l->to, reg, (size_t)nreg, sizeof *reg, starling__coord_cmp_id))
            c->links[keep++] = *l;
    }
    c->nlinks = keep;
    starling__free(reg);
}

int starling__coord_on_links(starling_coord *c, starling__coord_conn *p,
                             const starling__msg_links *m)
{
    for (uint32_t i = 0; i < m->n; i++)
        if (m->links[i].id == p->peer_id)
            return STARLING_E_PROTOCOL; /* a link to itself */
    drop_links(c, p->peer_id);
    if (c->nlinks + (int)m->n > c->links_cap) {
        int cap = c->nlinks + (int)m->n + 64;
        starling__coord_link *t = starling__realloc(c->links, sizeof *t * (size_t)cap);
        if (!t) {
            SLOG_WARN("coordinator: no memory for the links of peer %s: ignored", p->name);
            return STARLING_OK;
        }
        c->links = t;
        c->links_cap = cap;
    }
    for (uint32_t i = 0; i < m->n; i++) {
        starling__coord_link *l = &c->links[c->nlinks++];
        l->from = p->peer_id;
        l->to = m->links[i].id;
        l->bytes_per_s = (double)m->links[i].bytes_per_s;
        l->rtt_s = (double)m->links[i].rtt_us * 1e-6;
    }
    SLOG_INFO("peer %s measured its links to %u members", p->name, (unsigned)m->n);
    c->dirty = 1;
    return STARLING_OK;
}

static int cmp_name(const void *a, const void *b)
{
    const starling__coord_conn *x = *(starling__coord_conn *const *)a;
    const starling__coord_conn *y = *(starling__coord_conn *const *)b;
    int r = strcmp(x->name, y->name);
    return r ? r : (x->peer_id > y->peer_id) - (x->peer_id < y->peer_id);
}

static void order_by_name(starling_coord *c, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        c->who[i] = starling__coord_find(c, c->ids[i]);
    qsort(c->who, n, sizeof *c->who, cmp_name);
    for (uint32_t i = 0; i < n; i++)
        c->ids[i] = c->who[i]->peer_id;
}

/* Order-independent signature of a membership. */
static uint64_t membership(const uint64_t *ids, uint32_t n)
{
    uint64_t s = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t z = ids[i] + 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        s += z ^ (z >> 31);
    }
    return s;
}

/* A member's id and its position in c->ids, sorted by id for lookups. */
typedef struct id_pos {
    uint64_t id;
    int pos;
} id_pos;

static int cmp_id_pos(const void *a, const void *b)
{
    uint64_t x = ((const id_pos *)a)->id, y = ((const id_pos *)b)->id;
    return (x > y) - (x < y);
}

static int position_of(const id_pos *index, uint32_t n, uint64_t id)
{
    id_pos key = {id, 0};
    const id_pos *hit = bsearch(&key, index, n, sizeof *index, cmp_id_pos);
    return hit ? hit->pos : -1;
}

/* Fills the n x n matrices from the table (index: scratch for n entries); returns how
 * many ordered pairs are known. */
static size_t fill(starling_coord *c, uint32_t n, id_pos *index, double *bw, double *rtt,
                   char *known)
{
    size_t have = 0;
    for (uint32_t i = 0; i < n; i++)
        index[i] = (id_pos){c->ids[i], (int)i};
    qsort(index, n, sizeof *index, cmp_id_pos);
    for (int k = 0; k < c->nlinks; k++) {
        const starling__coord_link *l = &c->links[k];
        int i = position_of(index, n, l->from), j;
        if (i < 0 || (j = position_of(index, n, l->to)) < 0)
            continue;
        bw[(size_t)i * n + (size_t)j] = l->bytes_per_s;
        rtt[(size_t)i * n + (size_t)j] = l->rtt_s;
        have += !known[(size_t)i * n + (size_t)j];
        known[(size_t)i * n + (size_t)j] = 1;
    }
    return have;
}

static const char *name_of(starling_coord *c, uint64_t id)
{
    const starling__coord_conn *p = starling__coord_find(c, id);
    return p ? p->name : "?";
}

static void log_order(starling_coord *c, uint32_t n, starling__ring_model *m, const int *order,
                      double t_new, double t_old, const char *what)
{
    char names[400];
    size_t len = 0;
    int nsites = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (m->site[i] + 1 > nsites)
            nsites = m->site[i] + 1;
        if (len < sizeof names) {
            int w = snprintf(names + len, sizeof names - len, " %s", name_of(c, c->ids[order[i]]));
            len += w > 0 ? (size_t)w : 0;
        }
    }
    if (len >= sizeof names)
        memcpy(names + sizeof names - 5, " ...", 5);
    SLOG_INFO("ring order (measured, %d site%s) %s:%s; expected all-reduce of 64 MiB %.2f s "
              "(%.2f s in the previous order)",
              nsites, nsites == 1 ? "" : "s", what, names, t_new, t_old);
}

/* Orders by the links table if it covers every ordered pair of the members; else asks
 * the members to measure (once per membership). */
static void order_by_links(starling_coord *c, uint32_t n)
{
    size_t nn = (size_t)n * n;
    double *bw = starling__calloc(nn, sizeof *bw), *rtt = starling__calloc(nn, sizeof *rtt);
    char *known = starling__calloc(nn, 1);
    int *order = starling__malloc(sizeof *order * n), *ident = starling__malloc(sizeof *ident * n);
    uint64_t *ids = starling__malloc(sizeof *ids * n);
    id_pos *index = starling__malloc(sizeof *index * n);
    uint64_t set = membership(c->ids, n);
    starling__ring_model m = {0};

    if (!bw || !rtt || !known || !order || !ident || !ids || !index) {
        SLOG_WARN("coordinator: no memory to order the ring: keeping the join order");
    } else if (fill(c, n, index, bw, rtt, known) < nn - n) {
        if (set != c->probed_set) {
            c->probed_set = set;
            c->probe_now = c->probe_bytes;
            SLOG_INFO("coordinator: asking the %u members to measure their links "
                      "(probes of %u bytes)", (unsigned)n, (unsigned)c->probe_bytes);
        }
    } else if (starling__ring_model_init(&m, (int)n, bw, rtt) != STARLING_OK) {
        SLOG_WARN("coordinator: no memory to order the ring: keeping the join order");
    } else {
        double t_old, t_new;
        for (uint32_t i = 0; i < n; i++)
            ident[i] = (int)i;
        t_old = starling__ring_time(&m, ident, STARLING_ORDER_REF_BYTES);
        starling__ring_best(&m, STARLING_ORDER_REF_BYTES, order);
        t_new = starling__ring_time(&m, order, STARLING_ORDER_REF_BYTES);
        if (t_new < REORDER_GAIN * t_old) {
            log_order(c, n, &m, order, t_new, t_old, "changed");
            for (uint32_t i = 0; i < n; i++)
                ids[i] = c->ids[order[i]];
            memcpy(c->ids, ids, sizeof *ids * n);
        } else if (set != c->ordered_set) {
            log_order(c, n, &m, ident, t_old, t_old, "kept");
        }
        c->ordered_set = set;
    }
    starling__ring_model_free(&m);
    starling__free(bw);
    starling__free(rtt);
    starling__free(known);
    starling__free(order);
    starling__free(ident);
    starling__free(ids);
    starling__free(index);
}

void starling__coord_order(starling_coord *c, uint32_t n)
{
    c->probe_now = 0;
    if (c->order == STARLING__ORDER_NAME && n > 1)
        order_by_name(c, n);
    else if (c->order == STARLING__ORDER_MEASURED && n > 2) /* two members: one ring */
        order_by_links(c, n);
}
