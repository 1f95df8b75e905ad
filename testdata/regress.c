/* A small call tree for `ember diff` and its gate: main calls parse() — which does a little
 * work of its own and calls tokenize() — and render(). Work per round, in units: parse 1,
 * tokenize 4, render 5, so parse's total is half the run and tokenize's 40 %. With "slow"
 * tokenize does 25 % more work (5 units): tokenize then takes 45.5 % and parse 54.5 %.
 * Runs SECONDS of its own CPU time, so a busy machine changes the wall time, not the shares.
 *
 * Usage: regress [SECONDS] [slow] */
#include <stdlib.h>
#include <string.h>
#include "spin.h"

static unsigned long tokenize_units = 4;

__attribute__((noinline)) void tokenize(unsigned long n) { SPIN(n * tokenize_units); }

/* Work before and after the call, so that it is a call and not a tail jump: parse stays on
 * tokenize's stacks. */
__attribute__((noinline)) void parse(unsigned long n) {
    SPIN(n / 2);
    tokenize(n);
    SPIN(n / 2);
}

__attribute__((noinline)) void render(unsigned long n) { SPIN(n * 5); }

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    if (argc > 2 && strcmp(argv[2], "slow") == 0) tokenize_units = 5;
    const unsigned long unit = 40000;
    double start = thread_cpu_seconds();
    while (thread_cpu_seconds() - start < seconds) {
        parse(unit);
        render(unit);
    }
    return 0;
}
