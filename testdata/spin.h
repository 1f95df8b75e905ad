/* What the CPU-burning workloads share: their own thread's CPU time, and a loop that burns CPU
 * in whatever function uses it (a macro, so the work is that function's own). */
#include <time.h>

static volatile unsigned long sink;

/* This thread's CPU time (CLOCK_THREAD_CPUTIME_ID), in seconds. */
static double thread_cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* N rounds of a multiply-add the compiler cannot drop. */
#define SPIN(n)                                                                    \
    do {                                                                           \
        unsigned long x = sink;                                                    \
        for (unsigned long i = 0; i < (n); i++) x = x * 6364136223846793005UL + i; \
        sink = x;                                                                  \
    } while (0)
