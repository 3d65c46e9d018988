/*
 * cli_main.c -- entry point of the `starling` program: dispatch to subcommands.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

void cli_usage(FILE *out)
{
    fputs("usage: starling <command> [options]\n"
          "\n"
          "commands:\n"
          "  run [--peers N] [--algo ddp|diloco|streaming] [--steps S] [--inner-steps H]\n"
          "      [--fragments P] [--compress SPEC] [--kill RANK@STEP]...\n"
          "      [--freeze RANK@STEP:SECONDS]... [--join @STEP]... [--no-faults] [--seed N]\n"
          "      [--noniid ALPHA] [--checkpoint-every K] [--resume DIR] [--out DIR] [--json]\n"
          "      [--hidden W,W] [--batch B] [--lr X] [--data DIR] [--set KEY=VALUE]...\n"
          "      [--eval-every K] [--timeout-ms N] [--deadline-s N] [--verbose]\n"
          "      [--byzantine K --attack NAME --aggregator SPEC [--f F] [--nnm]]\n"
          "      The main job: start a coordinator and N peer processes on loopback and\n"
          "      train the built-in model (an MLP on Fashion-MNIST, or a synthetic stand-in\n"
          "      when /usr/share/datasets/fashion-mnist is absent, announced on stdout).\n"
          "      Defaults (= `make demo`): 4 peers, diloco, 2000 steps, H=50, batch 128,\n"
          "      --compress int8 (diloco only), evaluation every 5% of the steps, and a\n"
          "      fault schedule: peer 1 killed at 40% of the steps, a newcomer joining at\n"
          "      60%. Any --kill/--freeze/--join replaces that schedule;\n"
          "      --no-faults drops it. RANK is the peer's index at start (0..N-1), not its\n"
          "      ring rank; STEP < S. --kill sends SIGKILL when that peer reports STEP,\n"
          "      --freeze SIGSTOP then SIGCONT after SECONDS, --join starts a new peer once\n"
          "      the run passes STEP. --set passes any trainer key (docs/training.md).\n"
          "      --checkpoint-every K: the rank-0 peer writes OUT/checkpoint every K steps\n"
          "      (resume with --resume OUT/checkpoint). Writes OUT/metrics.csv,\n"
          "      OUT/summary.json and OUT/plot.png (gnuplot), default OUT ./starling-run;\n"
          "      a progress line on a terminal; --json: the summary is the last line of\n"
          "      stdout. Exit 0 if the run completed and all survivors' state hashes agree.\n"
          "      --byzantine K: the last K starting peers attack (NAME: sign_flip, noise,\n"
          "      alie, ipm, label_flip, garbage) and every peer aggregates with SPEC (e.g.\n"
          "      median, krum, geomed; --nnm puts nearest-neighbour mixing first) assuming\n"
          "      F (default K) Byzantine peers (Streaming DiLoCo: fragment syncs then block).\n"
          "\n"
          "  coordinator --listen HOST:PORT --run NAME [--secret-file PATH | --secret-env VAR]\n"
          "              [--timeout-ms N] [--min-peers N] [--ring-order join|name|measured]\n"
          "              [--probe-bytes SIZE] [--verbose]\n"
          "      Run the control plane of a run. The secret comes from PATH (trailing newline\n"
          "      removed) or the environment variable VAR (default " CLI_SECRET_ENV ").\n"
          "      --ring-order: join (default: survivors keep their order, newcomers last),\n"
          "      name (by peer name) or measured (peers measure their links with probes of\n"
          "      SIZE, default 2M, and the ring avoids the slow ones; docs/architecture.md).\n"
          "      Stops cleanly on SIGINT or SIGTERM.\n"
          "\n"
          "  bench allreduce --peers N --bytes SIZE[,SIZE...] --iters K [--warmup W]\n"
          "              [--streams S] [--dtype T] [--op OP] [--timeout-ms N]\n"
          "              [--deadline-s N] [--json] [--verbose]\n"
          "      Start a coordinator and N peer processes on loopback and time all-reduces.\n"
          "      SIZE takes K, M or G suffixes (powers of 1024). Prints per size the median\n"
          "      and minimum time, algorithm and bus bandwidth (busbw = S*2(N-1)/N / t,\n"
          "      GB/s = 1e9 B/s), bytes sent per peer against the ring bound 2(N-1)/N*S,\n"
          "      and the peak RSS of rank 0. --json prints one JSON object per size.\n"
          "      Defaults: --warmup 1, --streams 1, --dtype f32, --op sum.\n"
          "  bench latency --peers N [--iters K] [...]\n"
          "      Same as allreduce with --bytes 4 (default --iters 100).\n"
          "  bench codec SPEC [--count N] [--data normal|skewed|negative|constant|tiny]\n"
          "              [--iters K] [--seed S] [--reference pccl] [--json]\n"
          "      Encode and decode N f32 values (default 16M; K, M, G suffixes) with the\n"
          "      codec SPEC (e.g. int8, bf16, topk:0.01, int8+zstd:3; see docs/codecs.md) on\n"
          "      one thread. Prints the encoded size and ratio, the max, rms and relative\n"
          "      rms error of decode(encode(x)), and encode, decode and round-trip GB/s\n"
          "      (f32 input bytes / median of K runs, default 5). Data: normal (mean 0,\n"
          "      sd 1; the default), skewed (lognormal), negative, constant, tiny (sd 1e-8).\n"
          "      --reference pccl adds PCCL's 8-bit scheme (1 MiB chunks, truncation) and\n"
          "      our int8 at the default block and at equal bytes (block 65536).\n"
          "\n"
          "  demo [--peers N] [--steps N] [--elements N] [--step-ms N] [--timeout-ms N]\n"
          "       [--verbose]\n"
          "      Fault-tolerance walk-through on loopback: N peers (default 4) all-reduce,\n"
          "      one is killed with SIGKILL, the survivors recover, a new peer joins and\n"
          "      receives the shared state; the final state hashes are compared.\n"
          "\n"
          "  help            this text\n"
          "  --version       print the version\n",
          out);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "starling%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nrun 'starling help' for usage\n", stderr);
    return CLI_EXIT_USAGE;
}

static int print_version(void)
{
    printf("starling %s (library %s, protocol %d)\n", STARLING_VERSION_STRING,
           starling_version_string(), STARLING_PROTOCOL_VERSION);
    return CLI_EXIT_OK;
}

int main(int argc, char **argv)
{
    const char *cmd;

    if (argc < 2) {
        cli_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0)
        return argc == 2 ? print_version() : cli_usage_error(NULL, "'%s' takes no arguments", cmd);
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        cli_usage(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(cmd, "coordinator") == 0)
        return cmd_coordinator(argc, argv);
    if (strcmp(cmd, "bench") == 0)
        return cmd_bench(argc, argv);
    if (strcmp(cmd, "demo") == 0)
        return cmd_demo(argc, argv);
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc, argv);
    /* Hidden: the children that bench, demo and run start (same binary, via
     * /proc/self/exe). */
    if (strcmp(cmd, "bench-peer") == 0)
        return cmd_bench_peer(argc, argv);
    if (strcmp(cmd, "demo-peer") == 0)
        return cmd_demo_peer(argc, argv);
    if (strcmp(cmd, "run-peer") == 0)
        return cmd_run_peer(argc, argv);

    fprintf(stderr, "starling: unknown %s '%s'\n\n", cmd[0] == '-' ? "option" : "command", cmd);
    cli_usage(stderr);
    return CLI_EXIT_USAGE;
}
