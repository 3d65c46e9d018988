/* Shared state: named tensors plus a step counter, kept identical across members.
 *
 * starling_sync_state() all-gathers a 32-byte record per member (layout hash, state
 * hash, step). Every member then computes the same verdict from the same records: the
 * state most members hold is the truth (ties: the one the lowest rank holds). If anyone
 * differs, the serialized truth is cut into one slice per up-to-date member and moved
 * with a ring all-gather of variable-size blocks, so every holder sends at once and
 * each link carries the state once. Members that differed verify the hash before
 * anything of theirs is overwritten. */
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "core/internal.h"
#include "util/alloc.h"

#define RECORD_BYTES 32

static int find(const starling_comm *c, const char *name)
{
    for (int i = 0; i < c->ntensors; i++)
        if (strcmp(c->tensors[i].name, name) == 0)
            return i;
    return -1;
}

int starling_state_register(starling_comm *c, const char *name, void *data, size_t count,
                            starling_dtype dtype)
{
    size_t nlen, esize = starling_dtype_size(dtype);
    state_tensor *t;
    int at;
    if (!c || !name || (!data && count) || esize == 0)
        return STARLING_E_INVALID;
    nlen = strlen(name);
    if (nlen == 0 || nlen >= sizeof c->tensors[0].name)
        return STARLING_E_INVALID;
    if (count > ((size_t)1 << 40) / esize)
        return STARLING_E_LIMIT;
    if (find(c, name) >= 0)
        return STARLING_E_INVALID;
    t = starling__realloc(c->tensors, sizeof *t * (size_t)(c->ntensors + 1));
    if (!t)
        return STARLING_E_NOMEM;
    c->tensors = t;
    /* Kept sorted by name: the hash and the wire order must not depend on the order of
     * registration. */
    for (at = c->ntensors; at > 0 && strcmp(t[at - 1].name, name) > 0; at--)
        t[at] = t[at - 1];
    memcpy(t[at].name, name, nlen + 1);
    t[at].data = data;
    t[at].count = count;
    t[at].dtype = dtype;
    c->ntensors++;
    return STARLING_OK;
}

int starling_state_unregister(starling_comm *c, const char *name)
{
    int i;
    if (!c || !name)
        return STARLING_E_INVALID;
    i = find(c, name);
    if (i < 0)
        return STARLING_E_NOT_FOUND;
    memmove(&c->tensors[i], &c->tensors[i + 1], sizeof c->tensors[0] * (size_t)(c->ntensors - i - 1));
    c->ntensors--;
    return STARLING_OK;
}

int starling_state_set_step(starling_comm *c, uint64_t step)
{
    if (!c)
        return STARLING_E_INVALID;
    c->step = step;
    return STARLING_OK;
}

uint64_t starling_state_step(const starling_comm *c) { return c ? c->step : 0; }

static size_t tensor_bytes(const state_tensor *t) { return t->count * starling_dtype_size(t->dtype); }

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t layout_hash(const starling_comm *c)
{
    XXH3_state_t *st = XXH3_createState();
    uint64_t h;
    if (!st)
        return 0;
    XXH3_64bits_reset(st);
    for (int i = 0; i < c->ntensors; i++) {
        uint8_t meta[16];
        put_u64(meta, (uint64_t)c->tensors[i].dtype);
        put_u64(meta + 8, (uint64_t)c->tensors[i].count);
        XXH3_64bits_update(st, c->tensors[i].name, strlen(c->tensors[i].name) + 1);
        XXH3_64bits_update(st, meta, sizeof meta);
    }
    h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

/* XXH3-128 over names, layout, bytes and the step. The bytes come from the registered
 * tensors, or, when `blob` is given, from a serialized state (tensors in name order,
 * then the step): so received bytes are checked before they replace anything. */
static int state_hash(const starling_comm *c, const uint8_t *blob, XXH128_hash_t *out)
{
    XXH3_state_t *st = XXH3_createState();
    uint8_t meta[16];
    size_t off = 0;
    if (!st)
        return STARLING_E_NOMEM;
    XXH3_128bits_reset(st);
    for (int i = 0; i < c->ntensors; i++) {
        const state_tensor *t = &c->tensors[i];
        put_u64(meta, (uint64_t)t->dtype);
        put_u64(meta + 8, (uint64_t)t->count);
        XXH3_128bits_update(st, t->name, strlen(t->name) + 1);
        XXH3_128bits_update(st, meta, sizeof meta);
        XXH3_128bits_update(st, blob ? blob + off : (const uint8_t *)t->data, tensor_bytes(t));
        off += tensor_bytes(t);
    }
    if (blob) {
        XXH3_128bits_update(st, blob + off, 8);
    } else {
        put_u64(meta, c->step);
        XXH3_128bits_update(st, meta, 8);
    }
    *out = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    return STARLING_OK;
}

int starling_state_hash_hex(const starling_comm *c, char out[33])
{
    XXH128_hash_t h;
    int rc;
    if (!c || !out)
        return STARLING_E_INVALID;
    if ((rc = state_hash(c, NULL, &h)))
        return rc;
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64);
    return STARLING_OK;
}

static int allgatherv(starling_comm *c, const void *send, void *recv, const size_t *counts, int n)
{
    struct starling_request *r = starling__request_new(JOB_COLL), *h;
    int rc;
    if (!r)
        return STARLING_E_NOMEM;
    r->vcounts = starling__malloc(sizeof(size_t) * (size_t)n);
    if (!r->vcounts) {
        starling__request_unref(r);
        return STARLING_E_NOMEM;
    }
    memcpy(r->vcounts, counts, sizeof(size_t) * (size_t)n);
    r->vn = n;
    r->coll = COLL_ALLGATHERV;
    r->sendbuf = send;
    r->recvbuf = recv;
    r->dtype = STARLING_U8;
    r->op = STARLING_SUM;
    if ((rc = starling__submit(c, r, &h))) {
        starling__request_unref(r);
        return rc;
    }
    rc = starling__request_wait_into(c, h);
    starling__request_unref(h);
    return rc;
}

/* Index of the record the majority holds; ties go to the lowest rank's. */
static int majority(const uint8_t *rec, int n)
{
    int best = 0, best_votes = 0;
    for (int i = 0; i < n; i++) {
        int votes = 0;
        for (int j = 0; j < n; j++)
            votes += memcmp(rec + RECORD_BYTES * i + 8, rec + RECORD_BYTES * j + 8, 24) == 0;
        if (votes > best_votes) {
            best = i;
            best_votes = votes;
        }
    }
    return best;
}

int starling_sync_state(starling_comm *c, int *changed)
{
    uint8_t mine[RECORD_BYTES], *rec = NULL, *blob = NULL;
    size_t *counts = NULL, total = 0, off = 0;
    XXH128_hash_t h;
    int n, rank, truth, holders = 0, me_holder, j = 0, rc;

    if (changed)
        *changed = 0;
    if (!c)
        return STARLING_E_INVALID;
    n = starling_comm_size(c);
    rank = starling_comm_rank(c);
    if (n < 1) {
        snprintf(c->errmsg, sizeof c->errmsg, "not a member yet: call starling_update_topology first");
        return STARLING_E_STATE;
    }
    if ((rc = state_hash(c, NULL, &h)))
        return rc;
    put_u64(mine, layout_hash(c));
    put_u64(mine + 8, h.high64);
    put_u64(mine + 16, h.low64);
    put_u64(mine + 24, c->step);
    rec = starling__malloc((size_t)RECORD_BYTES * (size_t)n);
    counts = starling__calloc((size_t)n, sizeof *counts);
    if (!rec || !counts) {
        rc = STARLING_E_NOMEM;
        goto out;
    }
    if ((rc = starling_allgather(c, mine, rec, RECORD_BYTES, STARLING_U8, NULL)))
        goto out;
    for (int i = 1; i < n; i++)
        if (get_u64(rec + RECORD_BYTES * i) != get_u64(rec)) {
            snprintf(c->errmsg, sizeof c->errmsg,
                     "shared state layout differs between rank 0 and rank %d (names, dtypes "
                     "or sizes)", i);
            rc = STARLING_E_MISMATCH;
            goto out;
        }
    truth = majority(rec, n);
    for (int i = 0; i < n; i++)
        holders += memcmp(rec + RECORD_BYTES * i + 8, rec + RECORD_BYTES * truth + 8, 24) == 0;
    if (holders == n)
        goto out;
    me_holder = memcmp(mine + 8, rec + RECORD_BYTES * truth + 8, 24) == 0;

    for (int i = 0; i < c->ntensors; i++)
        total += tensor_bytes(&c->tensors[i]);
    total += 8;
    for (int i = 0; i < n; i++) {
        if (memcmp(rec + RECORD_BYTES * i + 8, rec + RECORD_BYTES * truth + 8, 24) == 0) {
            counts[i] = total * (size_t)(j + 1) / (size_t)holders - total * (size_t)j / (size_t)holders;
            j++;
        }
    }
    blob = starling__alloc_aligned(total);
    if (!blob) {
        rc = STARLING_E_NOMEM;
        goto out;
    }
    if (me_holder) {
        for (int i = 0; i < c->ntensors; i++) {
            memcpy(blob + off, c->tensors[i].data, tensor_bytes(&c->tensors[i]));
            off += tensor_bytes(&c->tensors[i]);
        }
        put_u64(blob + off, c->step);
    }
    off = 0;
    for (int i = 0; i < rank; i++)
        off += counts[i];
    if ((rc = allgatherv(c, blob + off, blob, counts, n)))
        goto out;
    if (!me_holder) {
        XXH128_hash_t got;
        if ((rc = state_hash(c, blob, &got)))
            goto out;
        if (got.high64 != get_u64(rec + RECORD_BYTES * truth + 8) ||
            got.low64 != get_u64(rec + RECORD_BYTES * truth + 16)) {
            snprintf(c->errmsg, sizeof c->errmsg, "shared state failed its hash after transfer");
            rc = STARLING_E_CORRUPT;
            goto out;
        }
        off = 0;
        for (int i = 0; i < c->ntensors; i++) {
            memcpy(c->tensors[i].data, blob + off, tensor_bytes(&c->tensors[i]));
            off += tensor_bytes(&c->tensors[i]);
        }
        c->step = get_u64(blob + off);
        if (changed)
            *changed = 1;
    }
out:
    starling__free(rec);
    starling__free(counts);
    starling__free(blob);
    return rc;
}
