#include "coord/ring_order.h"

#include <string.h>

#include "starling.h"
#include "util/alloc.h"

#define UNUSABLE 1e300
#define IMPROVE_MAX 64    /* members up to which the greedy ring is improved move by move */
#define SITE_FRACTION 0.25/* links this close to the fastest join members into a site */

static int find(int *parent, int i)
{
    while (parent[i] != i)
        i = parent[i] = parent[parent[i]];
    return i;
}

/* Sites: members joined, both ways, by links at least SITE_FRACTION as fast as the
 * fastest (union-find over `parent`), numbered 0.. in order of their first member. */
static void group_sites(starling__ring_model *m, int *parent)
{
    const int n = m->n;
    double fastest = 0;
    int nsites = 0;
    for (int i = 0; i < n * n; i++)
        if (m->bw[i] > fastest)
            fastest = m->bw[i];
    for (int i = 0; i < n; i++)
        parent[i] = i;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (m->bw[i * n + j] >= SITE_FRACTION * fastest &&
                m->bw[j * n + i] >= SITE_FRACTION * fastest)
                parent[find(parent, j)] = find(parent, i);
    for (int i = 0; i < n; i++)
        m->site[i] = -1;
    for (int i = 0; i < n; i++) {
        int r = find(parent, i);
        if (m->site[r] < 0)
            m->site[r] = nsites++;
        m->site[i] = m->site[r];
    }
}

int starling__ring_model_init(starling__ring_model *m, int n, const double *bw,
                              const double *rtt)
{
    size_t k = (size_t)(n > 0 ? n : 1);
    int *parent = starling__malloc(sizeof *parent * k);
    memset(m, 0, sizeof *m);
    m->n = n;
    m->bw = bw;
    m->rtt = rtt;
    m->site = starling__malloc(sizeof *m->site * k);
    m->uplink = starling__calloc(k, sizeof *m->uplink);
    m->cross = starling__calloc(k, sizeof *m->cross);
    if (!parent || !m->site || !m->uplink || !m->cross) {
        starling__free(parent);
        starling__ring_model_free(m);
        return STARLING_E_NOMEM;
    }
    group_sites(m, parent);
    starling__free(parent);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (m->site[i] != m->site[j] && bw[i * n + j] > m->uplink[m->site[i]])
                m->uplink[m->site[i]] = bw[i * n + j];
    return STARLING_OK;
}

void starling__ring_model_free(starling__ring_model *m)
{
    starling__free(m->site);
    starling__free(m->uplink);
    starling__free(m->cross);
    m->site = m->cross = NULL;
    m->uplink = NULL;
}

double starling__ring_time(starling__ring_model *m, const int *order, double bytes)
{
    const int n = m->n;
    double min_bw = 0, max_rtt = 0;
    if (n < 2)
        return 0;
    memset(m->cross, 0, sizeof *m->cross * (size_t)n);
    for (int i = 0; i < n; i++) {
        int a = order[i], b = order[(i + 1) % n];
        m->cross[m->site[a]] += m->site[a] != m->site[b];
    }
    for (int i = 0; i < n; i++) {
        int a = order[i], b = order[(i + 1) % n];
        double v = m->bw[a * n + b];
        if (!(v > 0))
            return UNUSABLE;
        if (m->site[a] != m->site[b] && m->uplink[m->site[a]] / m->cross[m->site[a]] < v)
            v = m->uplink[m->site[a]] / m->cross[m->site[a]];
        if (i == 0 || v < min_bw)
            min_bw = v;
        if (m->rtt[a * n + b] > max_rtt)
            max_rtt = m->rtt[a * n + b];
    }
    return 2.0 * (n - 1) * (bytes / n / min_bw + max_rtt / 2);
}

/* The next permutation of p[0..k) in lexicographic order; 0 after the last. */
static int next_permutation(int *p, int k)
{
    int i = k - 2, j = k - 1;
    while (i >= 0 && p[i] > p[i + 1])
        i--;
    if (i < 0)
        return 0;
    while (p[j] < p[i])
        j--;
    int t = p[i];
    p[i] = p[j];
    p[j] = t;
    for (int a = i + 1, b = k - 1; a < b; a++, b--) {
        t = p[a];
        p[a] = p[b];
        p[b] = t;
    }
    return 1;
}

static void exact(starling__ring_model *m, double bytes, int *order, int *p)
{
    const int n = m->n;
    double best;
    for (int i = 0; i < n; i++)
        p[i] = order[i] = i;
    best = starling__ring_time(m, p, bytes);
    while (next_permutation(p + 1, n - 1)) {
        double t = starling__ring_time(m, p, bytes);
        if (t < best) {
            best = t;
            memcpy(order, p, sizeof *order * (size_t)n);
        }
    }
}

/* From `start`, always on to the unvisited member behind the fastest link. */
static void greedy(const double *bw, int n, int start, int *p, char *used)
{
    memset(used, 0, (size_t)n);
    p[0] = start;
    used[start] = 1;
    for (int k = 1; k < n; k++) {
        int a = p[k - 1], next = -1;
        for (int b = 0; b < n; b++)
            if (!used[b] && (next < 0 || bw[a * n + b] > bw[a * n + next]))
                next = b;
        p[k] = next;
        used[next] = 1;
    }
}

/* Moves the member at position i to position j (shifting those between). */
static void move(int *p, int i, int j)
{
    int v = p[i];
    if (i < j)
        memmove(p + i, p + i + 1, sizeof *p * (size_t)(j - i));
    else
        memmove(p + j + 1, p + j, sizeof *p * (size_t)(i - j));
    p[j] = v;
}

/* One pass of single-member moves; 1 if one made the ring faster (it is kept). */
static int improve(starling__ring_model *m, double bytes, int *p)
{
    const int n = m->n;
    double cur = starling__ring_time(m, p, bytes);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            if (i == j)
                continue;
            move(p, i, j);
            if (starling__ring_time(m, p, bytes) < cur)
                return 1;
            move(p, j, i);
        }
    return 0;
}

static void heuristic(starling__ring_model *m, double bytes, int *order, int *p, char *used)
{
    const int n = m->n;
    double best = 0;
    for (int s = 0; s < n; s++) {
        int passes = n <= IMPROVE_MAX ? n * n : 0; /* each pass that helps is strictly faster */
        greedy(m->bw, n, s, p, used);
        while (passes-- > 0 && improve(m, bytes, p))
            ;
        double t = starling__ring_time(m, p, bytes);
        if (s == 0 || t < best) {
            best = t;
            memcpy(order, p, sizeof *order * (size_t)n);
        }
    }
}

/* Rotates the ring so that member 0 comes first (the same ring, one way to write it). */
static void rotate_to_zero(int *order, int *p, int n)
{
    int at = 0;
    while (order[at] != 0)
        at++;
    for (int i = 0; i < n; i++)
        p[i] = order[(at + i) % n];
    memcpy(order, p, sizeof *order * (size_t)n);
}

void starling__ring_best(starling__ring_model *m, double bytes, int *order)
{
    const int n = m->n;
    int *p;
    char *used;
    for (int i = 0; i < n; i++)
        order[i] = i;
    if (n < 3)
        return;
    p = starling__malloc(sizeof *p * (size_t)n);
    used = starling__malloc((size_t)n);
    if (!p || !used) { /* keep the given order */
        starling__free(p);
        starling__free(used);
        return;
    }
    if (n <= STARLING_ORDER_EXACT_MAX)
        exact(m, bytes, order, p);
    else
        heuristic(m, bytes, order, p, used);
    rotate_to_zero(order, p, n);
    starling__free(p);
    starling__free(used);
}
