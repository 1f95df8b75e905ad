/* A hot `static inline` function that gcc inlines into its caller: the profile must still
 * show it as a frame of its own (from DWARF inline info). */
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline __attribute__((always_inline)) unsigned long inlined_hot(unsigned long x) {
    for (int i = 0; i < 1000000; i++) x = x * 6364136223846793005UL + (unsigned long)i;
    return x;
}

__attribute__((noinline)) void caller_of_inline(double seconds) {
    double start = cpu_now();
    unsigned long x = sink;
    while (cpu_now() - start < seconds) x = inlined_hot(x);
    sink = x;
}

int main(int argc, char **argv) {
    caller_of_inline(argc > 1 ? atof(argv[1]) : 1.0);
    return 0;
}
