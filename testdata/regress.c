/* A small call tree for `ember diff` and its gate: main calls parse() — which does a little
 * work of its own and calls tokenize() — and render(). Work per round, in units: parse 1,
 * tokenize 4, render 5, so parse's total is half the run and tokenize's 40 %. With "slow"
 * tokenize does 25 % more work (5 units): tokenize then takes 45.5 % and parse 54.5 %.
 * Runs SECONDS of its own CPU time, so a busy machine changes the wall time, not the shares,
 * and prints what each function really took of it (its thread CPU time), parse's in total:
 *   truth <function> <percent>
 * A round lasts a few milliseconds, many sampling periods at the rates the tests use.
 *
 * Usage: regress [SECONDS] [slow] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "spin.h"

static unsigned long tokenize_units = 4;

static double tokenize_seconds;

__attribute__((noinline)) void tokenize(unsigned long n) { SPIN(n * tokenize_units); }

/* Work before and after the call, so that it is a call and not a tail jump: parse stays on
 * tokenize's stacks. */
__attribute__((noinline)) void parse(unsigned long n) {
    SPIN(n / 2);
    double start = thread_cpu_seconds();
    tokenize(n);
    tokenize_seconds += thread_cpu_seconds() - start;
    SPIN(n / 2);
}

__attribute__((noinline)) void render(unsigned long n) { SPIN(n * 5); }

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    if (argc > 2 && strcmp(argv[2], "slow") == 0) tokenize_units = 5;
    const unsigned long unit = 400000;
    double parse_seconds = 0, render_seconds = 0;
    double start = thread_cpu_seconds(), now = start;
    while (now - start < seconds) {
        parse(unit);
        double parsed = thread_cpu_seconds();
        render(unit);
        parse_seconds += parsed - now;
        now = thread_cpu_seconds();
        render_seconds += now - parsed;
    }
    double total = now - start;
    printf("truth parse %.2f\ntruth tokenize %.2f\ntruth render %.2f\n",
           100 * parse_seconds / total, 100 * tokenize_seconds / total,
           100 * render_seconds / total);
    return 0;
}
