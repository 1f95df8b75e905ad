/* A frame bigger than any stack copy perf events take: main -> hold, whose 600 KiB of locals
 * lie between the work it calls and main, for SECONDS of CPU time (default 1.5). Unwinding
 * through hold needs the word just under main's frame, 600 KiB above the stack pointer. */
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) unsigned long burn(void) {
    unsigned long x = sink;
    for (int i = 0; i < 200000; i++) x = x * 6364136223846793005UL + 1;
    return x;
}

__attribute__((noinline)) void hold(double seconds) {
    volatile char big[600 * 1024];
    big[0] = 1;
    big[sizeof big - 1] = 1;
    double start = cpu_now();
    while (cpu_now() - start < seconds) sink += burn() + big[0];
}

int main(int argc, char **argv) {
    hold(argc > 1 ? atof(argv[1]) : 1.5);
    return 0;
}
