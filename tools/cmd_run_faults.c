/*
 * cmd_run_faults.c -- the fault schedule of `starling run`: --kill (SIGKILL when that peer
 * reports STEP), --freeze (SIGSTOP, then SIGCONT from a timer thread after SECONDS) and
 * --join (a newcomer once the run passes STEP), driven by the peers' report lines.
 */
#include <pthread.h>
#include <signal.h>

#include "cmd_run.h"

/* --freeze: SIGCONT is sent by this thread, since a frozen peer may stall every report
 * line that would otherwise give the parent a chance to act. */
static void *timer_main(void *arg)
{
    run_state *s = arg;
    for (;;) {
        int k, stop;
        pthread_mutex_lock(&s->mu);
        stop = s->timer_stop;
        for (k = 0; k < RUN_MAX_EVENTS; k++)
            if (s->thaw_pid[k] > 0 && (stop || cli_now() >= s->thaw_at[k])) {
                kill(s->thaw_pid[k], SIGCONT);
                s->thaw_pid[k] = 0;
            }
        pthread_mutex_unlock(&s->mu);
        if (stop)
            return NULL;
        cli_sleep_ms(20);
    }
}

void run_thaw_start(run_state *s)
{
    if (!s->timer_started && pthread_create(&s->timer, NULL, timer_main, s) == 0)
        s->timer_started = 1;
}

/* Thaws every peer still frozen and joins the thread. */
void run_thaw_stop(run_state *s)
{
    if (!s->timer_started)
        return;
    pthread_mutex_lock(&s->mu);
    s->timer_stop = 1;
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->timer, NULL);
    s->timer_started = 0;
}

void run_apply_schedule(run_state *s, int child, unsigned long long step)
{
    run_opts *o = s->o;
    int k;

    for (k = 0; k < o->nkills; k++) {
        run_event *e = &o->kills[k];
        if (!e->done && e->rank == child && step >= (unsigned long long)e->step &&
            !s->g->kids[child].reaped) {
            e->done = 1;
            run_say(s, "peer-%d reached step %llu: killing it with SIGKILL", child, step);
            cli_group_kill(s->g, child);
            s->kids[child].killed = 1;
        }
    }
    for (k = 0; k < o->nfreezes; k++) {
        run_event *e = &o->freezes[k];
        if (!e->done && e->rank == child && step >= (unsigned long long)e->step &&
            !s->kids[child].killed && !s->g->kids[child].reaped) {
            e->done = 1;
            run_say(s, "peer-%d reached step %llu: freezing it (SIGSTOP) for %.1f s", child, step,
                    e->secs);
            pthread_mutex_lock(&s->mu);
            s->thaw_pid[k] = s->g->kids[child].pid;
            s->thaw_at[k] = cli_now() + e->secs;
            pthread_mutex_unlock(&s->mu);
            s->kids[child].frozen_ever = 1;
            kill(s->g->kids[child].pid, SIGSTOP);
        }
    }
    for (k = 0; k < o->njoins; k++) {
        run_event *e = &o->joins[k];
        int idx;
        if (e->done || s->max_step < (unsigned long long)e->step)
            continue;
        e->done = 1;
        idx = s->g->n;
        if (idx >= RUN_MAX_CHILDREN)
            continue;
        if (run_spawn_peer(s, idx, 1) < 0)
            continue;
        e->rank = idx; /* from now on, the newcomer's child index */
        run_say(s, "the run passed step %llu: starting newcomer peer-%d (pid %ld)", s->max_step,
                idx, (long)s->g->kids[idx].pid);
    }
}

/* A newcomer started near the end may find no run left to join: once every admitted
 * peer has finished, one still waiting for admission is stopped, not counted a failure. */
void run_end_late_joiners(run_state *s)
{
    int k;
    for (k = 0; k < s->g->n; k++)
        if (s->kids[k].admitted && !s->kids[k].killed && !s->kids[k].failed && !s->kids[k].finished)
            return;
    for (k = s->o->peers; k < s->g->n; k++)
        if (!s->kids[k].admitted && !s->kids[k].killed) {
            run_say(s, "newcomer peer-%d was not admitted before the run ended: stopping it", k);
            cli_group_kill(s->g, k);
            s->kids[k].killed = 1;
            s->kids[k].late = 1;
        }
}
