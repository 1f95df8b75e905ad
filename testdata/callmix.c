/* Computes with a cheap system call every few microseconds: where do the samples land?
 * work() calls compute() (user space only) and getppid() in turn. A profiler whose samples are
 * drawn to the ends of system calls (the first place a thread that was interrupted from
 * another CPU can stop) puts far more than their share in the calls.
 *
 * The program measures its own truth: compute()'s CPU time per call, in calibration rounds
 * of compute() alone, times the calls, against all the CPU time it used:
 *   truth compute <percent>
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

__attribute__((noinline)) double calibrate(void) {
    double a = thread_cpu_seconds();
    for (int i = 0; i < CALLS / 10; i++) compute(CHUNK);
    return thread_cpu_seconds() - a;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    double alone = 0;
    long alone_calls = 0, mixed_calls = 0;
    double start = thread_cpu_seconds();
    while (thread_cpu_seconds() - start < seconds) {
        alone += calibrate();
        alone_calls += CALLS / 10;
        work();
        mixed_calls += CALLS;
    }
    double total = thread_cpu_seconds() - start;
    double computing = alone + mixed_calls * (alone / alone_calls);
    printf("truth compute %.2f\n", 100.0 * computing / total);
    return 0;
}
