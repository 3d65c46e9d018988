/*
 * cmd_run_output.c -- what `starling run` shows and writes: the narrative and the progress
 * line on stdout, OUT/metrics.csv (one row per peer report), and at the end the
 * comparison of the survivors' state hashes, OUT/summary.json, OUT/plot.png (gnuplot) and
 * the result table.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_run.h"

void run_clear_progress(run_state *s)
{
    if (s->tty && s->progress_shown) {
        fputs("\r\033[K", stdout);
        s->progress_shown = 0;
    }
}

void run_say(run_state *s, const char *fmt, ...)
{
    va_list ap;
    run_clear_progress(s);
    printf("[%7.2fs] ", cli_now() - s->t0);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static int alive_count(const run_state *s)
{
    int k, n = 0;
    for (k = 0; k < s->g->n; k++)
        if (!s->kids[k].killed && !s->kids[k].failed && !s->g->kids[k].reaped)
            n++;
    return n;
}

static double total_bytes(const run_state *s)
{
    double b = 0;
    int k;
    for (k = 0; k < s->g->n; k++)
        b += (double)s->kids[k].bytes;
    return b;
}

void run_show_progress(run_state *s)
{
    double loss = 0;
    int k, n = 0;
    double now = cli_now();
    if (!s->tty || now - s->last_draw < 0.1)
        return;
    s->last_draw = now;
    for (k = 0; k < s->g->n; k++)
        if (!s->kids[k].killed && s->kids[k].step > 0) {
            loss += s->kids[k].loss;
            n++;
        }
    printf("\r\033[Kstep %llu/%ld  loss %.4f  test acc ", s->max_step, s->o->steps,
           n ? loss / n : 0.0);
    if (s->last_acc >= 0)
        printf("%.2f%%", 100.0 * s->last_acc);
    else
        printf("  -   ");
    printf("  sent %.2f MB  peers %d  %.1f s", total_bytes(s) / 1e6, alive_count(s), now - s->t0);
    fflush(stdout);
    s->progress_shown = 1;
}

int run_metrics_open(run_state *s)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.csv", s->o->out);
    s->csv = fopen(path, "w");
    if (!s->csv) {
        fprintf(stderr, "starling run: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(s->csv, "step,peer,loss,test_accuracy,test_loss,bytes_sent,peers,epoch\n");
    return 0;
}

void run_metrics_row(run_state *s, unsigned long long step, int index, double loss, double acc,
                     double tloss, unsigned long long bytes, int peers, unsigned long long epoch)
{
    if (s->csv)
        fprintf(s->csv, "%llu,%d,%.6f,%.6f,%.6f,%llu,%d,%llu\n", step, index, loss, acc, tloss,
                bytes, peers, epoch);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

typedef struct run_result {
    int completed, survivors, agree;
    const char *hash;
    double acc, loss, wall;
} run_result;

/* JSON has no NaN or Inf: a diverged run (e.g. an unprotected mean under attack) reports
 * its loss as null. */
static void json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.6f", v);
    else
        fputs("null", f);
}

static void write_summary(FILE *f, const run_state *s, const run_result *r)
{
    const run_opts *o = s->o;
    const char *v;
    int k, first = 1;

    fprintf(f, "{\"algo\":");
    json_str(f, o->algo);
    fprintf(f, ",\"peers\":%d,\"steps\":%ld", o->peers, o->steps);
    if ((v = run_set_value(o, "inner_steps")))
        fprintf(f, ",\"inner_steps\":%s", v);
    fprintf(f, ",\"test_accuracy\":");
    json_num(f, r->acc);
    fprintf(f, ",\"test_loss\":");
    json_num(f, r->loss);
    fprintf(f, ",\"bytes_sent\":{");
    for (k = 0; k < s->g->n; k++) {
        fprintf(f, "%s\"peer-%d\":%llu", first ? "" : ",", k, s->kids[k].bytes);
        first = 0;
    }
    fprintf(f, "},\"local_steps\":{");
    for (k = 0, first = 1; k < s->g->n; k++) {
        fprintf(f, "%s\"peer-%d\":%llu", first ? "" : ",", k, s->kids[k].local_steps);
        first = 0;
    }
    fprintf(f, "},\"rounds_cut\":{");
    for (k = 0, first = 1; k < s->g->n; k++) {
        fprintf(f, "%s\"peer-%d\":%llu", first ? "" : ",", k, s->kids[k].rounds_cut);
        first = 0;
    }
    fprintf(f, "},\"wall_time_s\":%.3f,\"peers_alive\":%d,\"hashes_agree\":%s,\"hash\":", r->wall,
            r->survivors, r->agree ? "true" : "false");
    json_str(f, r->hash ? r->hash : "");
    fprintf(f, ",\"compress\":");
    json_str(f, (v = run_set_value(o, "compress")) ? v : "none");
    fprintf(f, ",\"byzantine\":%d,\"attack\":", o->byzantine);
    json_str(f, o->byzantine > 0 ? o->attack_set + strlen("attack=") : "none");
    fprintf(f, ",\"aggregator\":");
    json_str(f, o->aggregator[0] ? o->aggregator : "none");
    fprintf(f, ",\"kills\":[");
    for (k = 0, first = 1; k < o->nkills; k++)
        if (o->kills[k].done) {
            fprintf(f, "%s{\"rank\":%d,\"step\":%ld}", first ? "" : ",", o->kills[k].rank,
                    o->kills[k].step);
            first = 0;
        }
    fprintf(f, "],\"freezes\":[");
    for (k = 0, first = 1; k < o->nfreezes; k++)
        if (o->freezes[k].done) {
            fprintf(f, "%s{\"rank\":%d,\"step\":%ld,\"seconds\":%g}", first ? "" : ",",
                    o->freezes[k].rank, o->freezes[k].step, o->freezes[k].secs);
            first = 0;
        }
    fprintf(f, "],\"dropped\":[");
    for (k = 0, first = 1; k < s->g->n; k++)
        if (s->kids[k].dropped) {
            fprintf(f, "%s%d", first ? "" : ",", k);
            first = 0;
        }
    fprintf(f, "],\"joins\":[");
    for (k = 0, first = 1; k < o->njoins; k++)
        if (o->joins[k].done) {
            int idx = o->joins[k].rank;
            fprintf(f, "%s{\"step\":%ld,\"peer\":%d,\"admitted\":%s}", first ? "" : ",",
                    o->joins[k].step, idx, idx >= 0 && s->kids[idx].admitted ? "true" : "false");
            first = 0;
        }
    fprintf(f, "],\"data\":\"%s\",\"completed\":%s,\"options\":{",
            o->synthetic ? "synthetic" : "fashion-mnist", r->completed ? "true" : "false");
    for (k = 0; k < o->nsets; k++) {
        const char *eq = strchr(o->sets[k], '=');
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(eq - o->sets[k]), o->sets[k]);
        fprintf(f, "%s", k ? "," : "");
        json_str(f, key);
        fputc(':', f);
        json_str(f, eq + 1);
    }
    fprintf(f, "}}\n");
}

/* Loss and accuracy against steps and against MB sent, per peer, with gnuplot. */
static void write_plot(const run_state *s)
{
    char path[4200], cmdline[4400];
    FILE *gp;
    int n = s->g->n;

    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        printf("plot: gnuplot not found, plot.png skipped (apt-get install gnuplot-nox)\n");
        return;
    }
    snprintf(path, sizeof path, "%s/plot.png", s->o->out);
    snprintf(cmdline, sizeof cmdline, "cd '%s' && gnuplot 2>/dev/null", s->o->out);
    if (strchr(s->o->out, '\'')) {
        printf("plot: output directory name contains a quote, plot.png skipped\n");
        return;
    }
    gp = popen(cmdline, "w");
    if (!gp) {
        printf("plot: cannot run gnuplot, plot.png skipped\n");
        return;
    }
    fprintf(gp,
            "set terminal pngcairo size 1400,1000 noenhanced\n"
            "set output 'plot.png'\n"
            "set datafile separator ','\n"
            "set key autotitle columnhead\n"
            "set multiplot layout 2,2 title 'starling run: %s, %d peers, %ld steps'\n"
            "set grid\n",
            s->o->algo, s->o->peers, s->o->steps);
    /* Column 2 is the peer: rows of other peers become NaN and are skipped. Test
     * accuracy comes from whichever peer evaluated (ring rank 0 during the run, every
     * survivor at the end): one series. */
    fprintf(gp, "set datafile missing NaN\n");
    fprintf(gp,
            "set xlabel 'step'\nset ylabel 'training loss (mini-batch)'\nset logscale y\n"
            "plot for [p=0:%d] 'metrics.csv' using 1:(column(2)==p ? $3 : NaN) "
            "with lines title sprintf('peer-%%d', p)\n",
            n - 1);
    fprintf(gp, "unset logscale y\nset xlabel 'step'\nset ylabel 'test accuracy'\n"
                "plot 'metrics.csv' using 1:($4 >= 0 ? $4 : NaN) with linespoints pt 7 "
                "title 'test accuracy'\n");
    fprintf(gp,
            "set xlabel 'MB sent by the peer'\nset ylabel 'training loss (mini-batch)'\n"
            "set logscale y\n"
            "plot for [p=0:%d] 'metrics.csv' using ($6/1e6):(column(2)==p ? $3 : NaN) "
            "with points pt 7 ps 0.3 title sprintf('peer-%%d', p)\n",
            n - 1);
    fprintf(gp, "unset logscale y\nset xlabel 'MB sent by the evaluating peer'\n"
                "set ylabel 'test accuracy'\n"
                "plot 'metrics.csv' using ($6/1e6):($4 >= 0 ? $4 : NaN) with points pt 7 "
                "title 'test accuracy'\n");
    fprintf(gp, "unset multiplot\nset output\n");
    if (pclose(gp) != 0 || !run_file_exists(s->o->out, "plot.png"))
        printf("plot: gnuplot failed, plot.png not written\n");
}

int run_finish(run_state *s, int waited_ok)
{
    run_opts *o = s->o;
    run_result r;
    char path[4200];
    FILE *f;
    int k, missing = 0;
    unsigned long long hash_step = 0;

    memset(&r, 0, sizeof r);
    r.wall = cli_now() - s->t0;
    r.agree = 1;
    r.acc = -1;
    r.loss = -1;
    /* A peer frozen past the failure timeout is expelled by the others; if it then trained
     * on alone, its state is not the run's. It is reported as dropped, not as a survivor
     * that disagrees: the run's state is the one most finished peers hold. */
    {
        const char *major = NULL;
        int best = 0, j;
        for (k = 0; k < s->g->n; k++) {
            int c = 0;
            if (s->kids[k].killed || !s->kids[k].have_hash)
                continue;
            for (j = 0; j < s->g->n; j++)
                c += !s->kids[j].killed && s->kids[j].have_hash &&
                     strcmp(s->kids[j].hash, s->kids[k].hash) == 0;
            if (c > best) {
                best = c;
                major = s->kids[k].hash;
            }
        }
        for (k = 0; major && k < s->g->n; k++)
            if (s->kids[k].frozen_ever && !s->kids[k].killed && s->kids[k].have_hash &&
                strcmp(s->kids[k].hash, major) != 0) {
                run_say(s,
                        "peer-%d, frozen past the failure timeout, was dropped from the run and "
                        "trained on alone; its state is not counted",
                        k);
                s->kids[k].killed = 1;
                s->kids[k].dropped = 1;
            }
    }
    for (k = 0; k < s->g->n; k++) {
        run_kid *kid = &s->kids[k];
        if (kid->killed)
            continue;
        if (!kid->finished || !kid->have_hash) {
            missing++;
            r.agree = 0;
            continue;
        }
        r.survivors++;
        if (!r.hash) {
            r.hash = kid->hash;
            hash_step = kid->hash_step;
            r.acc = kid->final_acc;
            r.loss = kid->final_loss;
        } else if (strcmp(r.hash, kid->hash) != 0 || kid->hash_step != hash_step) {
            r.agree = 0;
        }
    }
    if (r.survivors == 0)
        r.agree = 0;
    r.completed = waited_ok && missing == 0 && r.survivors > 0;
    run_clear_progress(s);

    snprintf(path, sizeof path, "%s/summary.json", o->out);
    f = fopen(path, "w");
    if (f) {
        write_summary(f, s, &r);
        if (fclose(f) != 0)
            fprintf(stderr, "starling run: writing %s failed\n", path);
    } else {
        fprintf(stderr, "starling run: cannot write %s: %s\n", path, strerror(errno));
    }
    if (s->csv) {
        fclose(s->csv);
        s->csv = NULL;
    }
    if (s->g->n > 0 && s->max_step > 0)
        write_plot(s);

    printf("\nresult: %s after %.1f s: %d peer%s alive", r.completed && r.agree ? "OK" : "FAILED",
           r.wall, r.survivors, r.survivors == 1 ? "" : "s");
    if (r.acc >= 0)
        printf(", test accuracy %.2f%%, test loss %.4f", 100.0 * r.acc, r.loss);
    printf("\n");
    for (k = 0; k < s->g->n; k++) {
        char b[32];
        run_kid *kid = &s->kids[k];
        printf("  peer-%-3d %-9s sent %10s  %s%s\n", k,
               kid->late       ? "too late"
               : kid->dropped  ? "dropped"
               : kid->killed   ? "killed"
               : kid->finished ? "finished"
               : kid->failed   ? "failed"
                               : "unfinished",
               cli_format_bytes((double)kid->bytes, b, sizeof b), kid->have_hash ? "hash " : "",
               kid->have_hash ? kid->hash : "");
    }
    printf("state hashes of the survivors: %s\n", r.agree ? "all equal" : "DIFFER or missing");
    printf("outputs: %s/metrics.csv, %s/summary.json, %s/plot.png\n", o->out, o->out, o->out);
    if (o->json)
        write_summary(stdout, s, &r);
    fflush(stdout);
    return r.completed && r.agree ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}
