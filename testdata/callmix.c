/* Computes with a cheap system call every few microseconds: where do the samples land?
 * work() calls compute() (user space only) and getppid() in turn. A profiler whose samples are
 * drawn to the ends of system calls (the first place a thread that was interrupted from
 * another CPU can stop) puts far more than their share in the calls.
 *
 * The program measures its own truth: the CPU time of the mixed rounds, less what their
 * system calls cost (measured in short rounds of getppid() alone between them), against all
 * the CPU time it used:
 *   truth compute <percent>
 * It calibrates the small side: the calls are a tenth of the time, so a 10 % error in their
 * cost moves the truth by one point, where 10 % on compute()'s would move it by nine (and a
 * busy machine's bursts, landing in a calibration round, gave errors of that size).
 *
 * Usage: callmix [SECONDS] */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "spin.h"

#define CHUNK 1000
#define CALLS 1000

__attribute__((noinline)) void compute(unsigned long n) { SPIN(n); }

__attribute__((noinline)) void work(void) {
    for (int i = 0; i < CALLS; i++) {
        compute(CHUNK);
        syscall(SYS_getppid);
    }
}

__attribute__((noinline)) void calls_alone(void) {
    for (int i = 0; i < CALLS / 10; i++) syscall(SYS_getppid);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    double alone = 0, mixed = 0;
    long alone_calls = 0, mixed_calls = 0;
    double start = thread_cpu_seconds();
    while (thread_cpu_seconds() - start < seconds) {
        double a = thread_cpu_seconds();
        calls_alone();
        double b = thread_cpu_seconds();
        work();
        mixed += thread_cpu_seconds() - b;
        alone += b - a;
        alone_calls += CALLS / 10;
        mixed_calls += CALLS;
    }
    double total = thread_cpu_seconds() - start;
    double computing = mixed - mixed_calls * (alone / alone_calls);
    printf("truth compute %.2f\n", 100.0 * computing / total);
    return 0;
}
