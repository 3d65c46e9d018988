/*
 * mpi_allreduce.c -- OpenMPI all-reduce baseline for `make bench`.
 *
 *   mpirun --allow-run-as-root --oversubscribe -np N --mca btl tcp,self \
 *          --mca btl_tcp_if_include lo build/bench/mpi_allreduce --bytes 4,1M,64M,256M --iters 10
 *
 * For each size: an in-place f32 SUM MPI_Allreduce, --warmup untimed calls, then --iters timed
 * calls, each preceded by a refill of the buffer (untimed; every call reduces known values and
 * the first result is checked) and an MPI_Barrier. One call's time is the slowest rank's; the
 * median over calls is reported. Rank 0 prints one JSON line per size:
 *
 *   {"impl":"openmpi","peers":N,"bytes":S,"median_s":T,"busbw_GBps":S*2(N-1)/N/T/1e9,...}
 *
 * The buffer is allocated once, for the largest size, and written before any timing. glibc
 * serves allocations above 32 MiB with a fresh mmap each time, so OpenMPI's own per-call
 * scratch would pay ~10 us per 4 KiB page on every call; mallopt() below keeps such blocks in
 * the heap so they are reused (pass --no-malloc-fix to measure without it).
 *
 * Built by bench/run_bench.sh with mpicc (not part of the CMake build).
 */
#define _POSIX_C_SOURCE 200809L

#include <malloc.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SIZES 64

static int parse_size(const char *s, size_t *out)
{
    char *end;
    unsigned long long v;
    unsigned long long mult = 1;

    if (*s < '0' || *s > '9')
        return -1;
    v = strtoull(s, &end, 10);
    switch (*end) {
    case '\0': break;
    case 'k':
    case 'K':
        mult = 1ULL << 10;
        end++;
        break;
    case 'm':
    case 'M':
        mult = 1ULL << 20;
        end++;
        break;
    case 'g':
    case 'G':
        mult = 1ULL << 30;
        end++;
        break;
    default: return -1;
    }
    /* Accept "M", "MB" and "MiB" alike: all binary multiples. */
    if ((end[0] == 'i' || end[0] == 'I') && (end[1] == 'b' || end[1] == 'B'))
        end += 2;
    else if (end[0] == 'b' || end[0] == 'B')
        end++;
    if (*end != '\0' || v == 0 || v > SIZE_MAX / mult)
        return -1;
    *out = (size_t)(v * mult);
    return 0;
}

static int parse_sizes(char *list, size_t *sizes, int *n)
{
    char *save = NULL;
    char *tok;

    *n = 0;
    for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == MAX_SIZES || parse_size(tok, &sizes[*n]) != 0 || sizes[*n] % sizeof(float))
            return -1;
        (*n)++;
    }
    return *n > 0 ? 0 : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void fill(float *buf, size_t count, float v)
{
    size_t i;
    for (i = 0; i < count; i++)
        buf[i] = v;
}

static void usage(void)
{
    fprintf(stderr, "usage: mpi_allreduce [--bytes LIST] [--iters K] [--warmup W] "
                    "[--no-malloc-fix]\n  LIST: comma-separated sizes, suffixes K/M/G "
                    "(binary), multiples of 4\n");
}

int main(int argc, char **argv)
{
    char default_sizes[] = "4,1M,64M,256M";
    char *size_list = default_sizes;
    size_t sizes[MAX_SIZES];
    int nsizes = 0, iters = 10, warmup = 3, malloc_fix = 1;
    int rank, npeers, i, s, it, rc = 0;
    size_t max_bytes = 0;
    float *buf = NULL;
    double *times = NULL, *sorted = NULL;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--bytes") && i + 1 < argc) {
            size_list = argv[++i];
        } else if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
            iters = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) {
            warmup = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--no-malloc-fix")) {
            malloc_fix = 0;
        } else {
            usage();
            return 2;
        }
    }
    if (parse_sizes(size_list, sizes, &nsizes) != 0 || iters < 1 || warmup < 0) {
        usage();
        return 2;
    }

    /* Before MPI_Init, so OpenMPI's own allocations follow it too: no mmap'd chunks (they
     * would be unmapped on free and faulted in again on the next call), no heap trimming. */
    if (malloc_fix) {
        mallopt(M_MMAP_MAX, 0);
        mallopt(M_TRIM_THRESHOLD, 1 << 30);
        mallopt(M_TOP_PAD, 64 << 20);
    }

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &npeers);

    for (s = 0; s < nsizes; s++)
        if (sizes[s] > max_bytes)
            max_bytes = sizes[s];
    if (posix_memalign((void **)&buf, 4096, max_bytes) != 0) {
        fprintf(stderr, "mpi_allreduce: rank %d: cannot allocate %zu bytes\n", rank, max_bytes);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    times = malloc(sizeof(double) * (size_t)iters);
    sorted = malloc(sizeof(double) * (size_t)iters);
    if (!times || !sorted) {
        fprintf(stderr, "mpi_allreduce: rank %d: out of memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    /* Touch every page now, not inside the first timed call. */
    fill(buf, max_bytes / sizeof(float), 1.0f);

    for (s = 0; s < nsizes && rc == 0; s++) {
        size_t nbytes = sizes[s];
        size_t count = nbytes / sizeof(float);
        float mine = (float)(rank + 1);
        float expect = (float)npeers * (float)(npeers + 1) / 2.0f;
        double med, busbw;

        if (count > (size_t)INT32_MAX) {
            if (rank == 0)
                fprintf(stderr, "mpi_allreduce: %zu bytes exceeds MPI's int count\n", nbytes);
            rc = 1;
            break;
        }
        for (it = 0; it < warmup + iters; it++) {
            double t0, t1;
            fill(buf, count, mine);
            MPI_Barrier(MPI_COMM_WORLD);
            t0 = MPI_Wtime();
            MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            t1 = MPI_Wtime();
            if (it == 0 && (buf[0] != expect || buf[count - 1] != expect)) {
                fprintf(stderr,
                        "mpi_allreduce: rank %d: wrong sum at %zu bytes: %g %g, "
                        "expected %g\n",
                        rank, nbytes, buf[0], buf[count - 1], expect);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            if (it >= warmup)
                times[it - warmup] = t1 - t0;
        }
        /* A call lasts until its slowest rank is done. */
        MPI_Reduce(times, sorted, iters, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
        if (rank == 0) {
            double min;
            qsort(sorted, (size_t)iters, sizeof(double), cmp_double);
            min = sorted[0];
            med =
                (iters % 2) ? sorted[iters / 2] : 0.5 * (sorted[iters / 2 - 1] + sorted[iters / 2]);
            busbw = (double)nbytes * 2.0 * (npeers - 1) / npeers / med / 1e9;
            printf("{\"impl\": \"openmpi\", \"peers\": %d, \"bytes\": %zu, \"median_s\": %.9g, "
                   "\"busbw_GBps\": %.6g, \"min_s\": %.9g, \"max_s\": %.9g, \"iters\": %d, "
                   "\"malloc_fix\": %s}\n",
                   npeers, nbytes, med, busbw, min, sorted[iters - 1], iters,
                   malloc_fix ? "true" : "false");
            fflush(stdout);
        }
    }

    free(sorted);
    free(times);
    free(buf);
    MPI_Finalize();
    return rc;
}
