/* Two threads, each burning CPU in its own function, for a given number of seconds of CPU
 * time each — or, with ROUNDS > 0, for a fixed amount of work each, printing how long the work
 * took ("work_seconds"), the process's CPU time and when it ended (scripts/compare.sh).
 *
 * Usage: threads [SECONDS] [ROUNDS] */
#include <pthread.h>
#include <stdlib.h>

#include "report.h"

static volatile unsigned long sink;
static double seconds = 1.5;
static long rounds = 0;

static double thread_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void thread_a_hot(void) {
    double start = thread_cpu();
    unsigned long x = 1;
    for (long r = 0; rounds > 0 ? r < rounds : thread_cpu() - start < seconds; r++)
        for (int i = 0; i < 100000; i++) x = x * 2862933555777941757UL + 3037000493UL;
    sink = x;
}

__attribute__((noinline)) void thread_b_hot(void) {
    double start = thread_cpu();
    unsigned long x = 7;
    for (long r = 0; rounds > 0 ? r < rounds : thread_cpu() - start < seconds; r++)
        for (int i = 0; i < 100000; i++) x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    sink = x;
}

static void *run_a(void *arg) { (void)arg; thread_a_hot(); return NULL; }
static void *run_b(void *arg) { (void)arg; thread_b_hot(); return NULL; }

int main(int argc, char **argv) {
    if (argc > 1) seconds = atof(argv[1]);
    if (argc > 2) rounds = atol(argv[2]);
    report_begin();
    pthread_t a, b;
    pthread_create(&a, NULL, run_a, NULL);
    pthread_create(&b, NULL, run_b, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    report_end();
    return 0;
}
