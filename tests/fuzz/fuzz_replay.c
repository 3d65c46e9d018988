/* Replays saved fuzz inputs through LLVMFuzzerTestOneInput without libFuzzer, so the
 * corpus runs under ctest with any compiler (and under ASan when STARLING_SANITIZE is on).
 *
 *   fuzz_frames_replay FILE|DIR...
 *
 * Each argument is a file, or a directory whose regular files (not starting with '.')
 * are replayed in turn. Exits 0 if every input ran, 1 if one could not be read, 2 on no
 * argument; a failing check in the target aborts the process. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = 1;
    if (!f) {
        fprintf(stderr, "fuzz_replay: %s: %s\n", path, strerror(errno));
        return 1;
    }
    for (;;) {
        size_t got;
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            uint8_t *nbuf = realloc(buf, ncap);
            if (!nbuf) {
                fprintf(stderr, "fuzz_replay: %s: out of memory\n", path);
                goto out;
            }
            buf = nbuf;
            cap = ncap;
        }
        got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "fuzz_replay: %s: read error\n", path);
        goto out;
    }
    /* An exact-size copy, so that ASan catches a read one byte past the input. */
    {
        uint8_t *exact = malloc(len ? len : 1);
        if (!exact) {
            fprintf(stderr, "fuzz_replay: %s: out of memory\n", path);
            goto out;
        }
        if (len)
            memcpy(exact, buf, len);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
    }
    rc = 0;
out:
    free(buf);
    fclose(f);
    return rc;
}

static int replay_path(const char *path, unsigned *count)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    int rc = 0;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "fuzz_replay: %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        rc = replay_file(path);
        *count += rc == 0;
        return rc;
    }
    d = opendir(path);
    if (!d) {
        fprintf(stderr, "fuzz_replay: %s: %s\n", path, strerror(errno));
        return 1;
    }
    while ((e = readdir(d)) != NULL) {
        char sub[4096];
        if (e->d_name[0] == '.')
            continue;
        if ((size_t)snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) >= sizeof sub) {
            fprintf(stderr, "fuzz_replay: %s/%s: path too long\n", path, e->d_name);
            rc = 1;
            continue;
        }
        if (stat(sub, &st) == 0 && S_ISREG(st.st_mode)) {
            int r = replay_file(sub);
            *count += r == 0;
            rc |= r;
        }
    }
    closedir(d);
    return rc;
}

int main(int argc, char **argv)
{
    unsigned count = 0;
    int rc = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++)
        rc |= replay_path(argv[i], &count);
    printf("fuzz_replay: %u input(s) replayed\n", count);
    return rc ? 1 : 0;
}
