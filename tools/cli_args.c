/*
 * cli_args.c -- validation of option values for the `starling` program (the parser
 * itself is cli_opts.c).
 *
 * Every value from the command line is checked here before it reaches the library, so
 * a typo gives a message naming the option rather than an error from deep inside a run.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define CLI_SIZE_MAX ((uint64_t)64 << 30)
#define CLI_SECRET_MAX (64 * 1024)

int cli_get_long(const char *cmd, const char *opt, const char *text, long min, long max, long *out)
{
    char *end;
    long v;

    if (!text)
        return 0;
    errno = 0;
    v = strtol(text, &end, 10);
    if (errno || end == text || *end != '\0' || v < min || v > max)
        return cli_usage_error(cmd, "%s: expected an integer in %ld..%ld, got '%s'", opt, min, max,
                               text);
    *out = v;
    return 0;
}

int cli_parse_size(const char *text, uint64_t *out)
{
    const char *p = text;
    uint64_t v = 0, mult = 1;

    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (CLI_SIZE_MAX - (uint64_t)(*p - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    switch (*p) {
    case 'k':
    case 'K':
        mult = (uint64_t)1 << 10;
        p++;
        break;
    case 'm':
    case 'M':
        mult = (uint64_t)1 << 20;
        p++;
        break;
    case 'g':
    case 'G':
        mult = (uint64_t)1 << 30;
        p++;
        break;
    default: break;
    }
    /* "64MiB" and "64MB" read as "64M"; a bare "B" as bytes. */
    if (mult > 1 && (strcmp(p, "iB") == 0 || strcmp(p, "B") == 0))
        p += strlen(p);
    else if (mult == 1 && strcmp(p, "B") == 0)
        p++;
    if (*p != '\0')
        return -1;
    if (v > CLI_SIZE_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

int cli_get_size(const char *cmd, const char *opt, const char *text, uint64_t *out)
{
    if (!text)
        return 0;
    if (cli_parse_size(text, out) != 0)
        return cli_usage_error(cmd,
                               "%s: expected a size in bytes with an optional K, M or G "
                               "suffix (at most 64G), got '%s'",
                               opt, text);
    return 0;
}

int cli_get_size_list(const char *cmd, const char *opt, const char *text, uint64_t *out, int max,
                      int *n)
{
    char item[64];
    const char *p = text;
    int count = 0;

    if (!text)
        return 0;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || len >= sizeof item)
            return cli_usage_error(cmd, "%s: malformed size list '%s'", opt, text);
        if (count == max)
            return cli_usage_error(cmd, "%s: at most %d sizes", opt, max);
        memcpy(item, p, len);
        item[len] = '\0';
        if (cli_parse_size(item, &out[count]) != 0)
            return cli_usage_error(cmd,
                                   "%s: '%s' is not a size (bytes with an optional K, M or G "
                                   "suffix, at most 64G)",
                                   opt, item);
        count++;
        if (!comma)
            break;
        p = comma + 1;
    }
    *n = count;
    return 0;
}

int cli_get_dtype(const char *cmd, const char *opt, const char *text, starling_dtype *out)
{
    int v;
    if (!text)
        return 0;
    v = starling_dtype_from_name(text);
    if (v < 0)
        return cli_usage_error(cmd,
                               "%s: unknown data type '%s' (f32, f64, f16, bf16, i32, "
                               "i64, u8)",
                               opt, text);
    *out = (starling_dtype)v;
    return 0;
}

int cli_get_op(const char *cmd, const char *opt, const char *text, starling_op *out)
{
    int v;
    if (!text)
        return 0;
    v = starling_op_from_name(text);
    if (v < 0)
        return cli_usage_error(cmd, "%s: unknown operation '%s' (sum, avg, min, max)", opt, text);
    *out = (starling_op)v;
    return 0;
}

int cli_get_security(const char *cmd, const char *opt, const char *text)
{
    /* The library's setter is the one list of names: ask it, on a scratch config. */
    starling_config *cfg;
    int ok;
    if (!text || starling_config_create(&cfg) != STARLING_OK)
        return 0; /* no memory: the real setter will say so */
    ok = starling_config_set_security(cfg, text) == STARLING_OK;
    starling_config_destroy(cfg);
    if (ok)
        return 0;
    return cli_usage_error(cmd, "%s: expected aead, chacha20 or none, got '%s'", opt, text);
}

int cli_split_host_port(const char *text, char *host, size_t host_cap, int *port)
{
    const char *colon = strrchr(text, ':');
    size_t host_len;
    char *end;
    long p;

    if (!colon)
        return -1;
    host_len = (size_t)(colon - text);
    if (host_len == 0 || host_len >= host_cap)
        return -1;
    /* An IPv6 literal must be bracketed, else its colons are ambiguous. */
    if (memchr(text, ':', host_len) && !(text[0] == '[' && text[host_len - 1] == ']'))
        return -1;
    errno = 0;
    p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end != '\0' || p < 0 || p > 65535)
        return -1;
    memcpy(host, text, host_len);
    host[host_len] = '\0';
    *port = (int)p;
    return 0;
}

int cli_get_host_port(const char *cmd, const char *opt, const char *text)
{
    char host[256];
    int port;
    if (!text)
        return 0;
    if (cli_split_host_port(text, host, sizeof host, &port) != 0)
        return cli_usage_error(cmd, "%s: expected HOST:PORT (port 0..65535), got '%s'", opt, text);
    return 0;
}

int cli_get_coords(const char *cmd, const char *opt, const char *text)
{
    char one[256], host[256];
    const char *p = text;
    if (!text)
        return 0;
    do {
        size_t len = strcspn(p, ",");
        int port;
        if (len == 0 || len >= sizeof one)
            return cli_usage_error(cmd, "%s: expected HOST:PORT[,HOST:PORT...], got '%s'", opt,
                                   text);
        memcpy(one, p, len);
        one[len] = '\0';
        if (cli_split_host_port(one, host, sizeof host, &port) != 0)
            return cli_usage_error(cmd,
                                   "%s: expected HOST:PORT[,HOST:PORT...] (port 0..65535), "
                                   "got '%s'",
                                   opt, text);
        p += len;
    } while (*p++ == ',');
    return 0;
}

int cli_read_secret_file(const char *path, char **out, size_t *len, char *err, size_t err_cap)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0;

    if (!f) {
        snprintf(err, err_cap, "cannot open secret file '%s': %s", path, strerror(errno));
        return -1;
    }
    buf = malloc(CLI_SECRET_MAX + 1);
    if (!buf) {
        fclose(f);
        snprintf(err, err_cap, "out of memory");
        return -1;
    }
    n = fread(buf, 1, CLI_SECRET_MAX + 1, f);
    if (ferror(f)) {
        snprintf(err, err_cap, "cannot read secret file '%s': %s", path, strerror(errno));
        goto fail;
    }
    if (n > CLI_SECRET_MAX) {
        snprintf(err, err_cap, "secret file '%s' is larger than %d bytes", path, CLI_SECRET_MAX);
        goto fail;
    }
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n == 0) {
        snprintf(err, err_cap, "secret file '%s' is empty", path);
        goto fail;
    }
    buf[n] = '\0';
    fclose(f);
    *out = buf;
    *len = n;
    return 0;
fail:
    fclose(f);
    free(buf);
    return -1;
}

int cli_random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[64];
    size_t got = 0, k;
    int fd;

    if (nbytes > sizeof raw)
        return -1;
    fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0)
        return -1;
    while (got < nbytes) {
        ssize_t r = read(fd, raw + got, nbytes - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            close(fd);
            return -1;
        }
        got += (size_t)r;
    }
    close(fd);
    for (k = 0; k < nbytes; k++) {
        out[2 * k] = hex[raw[k] >> 4];
        out[2 * k + 1] = hex[raw[k] & 15];
    }
    out[2 * nbytes] = '\0';
    return 0;
}

const char *cli_format_bytes(double nbytes, char *buf, size_t cap)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    double v = nbytes;

    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%.0f B", v);
    else if (v == (double)(long long)v)
        snprintf(buf, cap, "%.0f %s", v, units[u]);
    else
        snprintf(buf, cap, "%.2f %s", v, units[u]);
    return buf;
}

const char *cli_format_seconds(double s, char *buf, size_t cap)
{
    if (s < 1e-6)
        snprintf(buf, cap, "%.0f ns", s * 1e9);
    else if (s < 1e-3)
        snprintf(buf, cap, "%.1f us", s * 1e6);
    else if (s < 1.0)
        snprintf(buf, cap, "%.2f ms", s * 1e3);
    else
        snprintf(buf, cap, "%.3f s", s);
    return buf;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void cli_sleep_ms(int ms)
{
    struct timespec ts;
    if (ms <= 0)
        return;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !cli_stop_signal)
        ;
}

void cli_log_prefixed(void *prefix, starling_log_level level, const char *msg)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    const char *lv = (unsigned)level < 4 ? names[level] : "?";
    /* One fprintf per message: stdio locks the stream, so lines from engine threads
     * do not interleave. */
    fprintf(stderr, "%s starling[%s] %s\n", prefix ? (const char *)prefix : "", lv, msg);
}
