/* Three non-inlined hot functions with a fixed work ratio (60/30/10). The program measures
 * the thread CPU time each one really took and prints its own truth:
 *   truth <function> <percent>
 * The end-to-end tests compare ember's self-time shares with these.
 *
 * Usage: shares [SECONDS] [ROUNDS] [swap]. "swap" gives hot_ten the sixty share and hot_sixty
 * the ten (a "changed" program for differential flamegraphs).
 * With ROUNDS > 0 it does exactly that much work instead
 * of running for SECONDS of CPU time, and prints the wall time the work took
 * ("work_seconds X"), which is what scripts/compare.sh compares across profilers. */
#include <stdio.h>
#include <stdlib.h>
#include "report.h"
#include "spin.h"

static unsigned long w_sixty = 6, w_ten = 1;

__attribute__((noinline)) void hot_sixty(unsigned long n) { SPIN(n * w_sixty); }
__attribute__((noinline)) void hot_thirty(unsigned long n) { SPIN(n * 3); }
__attribute__((noinline)) void hot_ten(unsigned long n) { SPIN(n * w_ten); }

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    long rounds = argc > 2 ? atol(argv[2]) : 0;
    if (argc > 3 && argv[3][0] == 's') w_sixty = 1, w_ten = 6;
    const unsigned long chunk = 200000;
    double t[3] = {0, 0, 0};
    report_begin();
    double start = thread_cpu_seconds();
    for (long r = 0; rounds > 0 ? r < rounds : thread_cpu_seconds() - start < seconds; r++) {
        double a = thread_cpu_seconds();
        hot_sixty(chunk);
        double b = thread_cpu_seconds();
        hot_thirty(chunk);
        double c = thread_cpu_seconds();
        hot_ten(chunk);
        double d = thread_cpu_seconds();
        t[0] += b - a;
        t[1] += c - b;
        t[2] += d - c;
    }
    double total = thread_cpu_seconds() - start;
    report_end();
    printf("truth hot_sixty %.2f\n", 100.0 * t[0] / total);
    printf("truth hot_thirty %.2f\n", 100.0 * t[1] / total);
    printf("truth hot_ten %.2f\n", 100.0 * t[2] / total);
    return 0;
}
