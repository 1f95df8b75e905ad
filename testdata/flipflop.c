/* An adversary for stack completion: one thread whose depth flips between shallow (3 frames
 * of `descend`) and very deep (DEEP frames of 1 KiB each, far more than a 64 KiB stack copy
 * holds) every few microseconds, reached through two outer paths, `outer_a` and `outer_b`.
 * The frames under the outer function are the same whichever path was taken (same functions,
 * same sizes, same stack addresses), so nothing in a cut stack copy says which path it came
 * from; the leaf does: `leaf_a` is only ever called under `outer_a`, `leaf_b` under
 * `outer_b`. A profile with a stack that has `outer_a` over `leaf_b` (or the reverse) made
 * it up.
 *
 * Usage: flipflop [SECONDS of CPU] [DEEP] */
#include <stdlib.h>
#include "spin.h"

__attribute__((noinline)) void leaf_a(void) { SPIN(2000); }
__attribute__((noinline)) void leaf_b(void) { SPIN(2000); }

/* A 1 KiB frame; the volatile use after the call keeps gcc from making it a loop. */
__attribute__((noinline)) void descend(int depth, int path) {
    volatile char pad[1024];
    pad[depth & 1023] = (char)depth;
    if (depth == 0) {
        if (path) leaf_b();
        else leaf_a();
    } else {
        descend(depth - 1, path);
    }
    sink += pad[depth & 1023];
}

__attribute__((noinline)) void outer_a(int depth) {
    descend(depth, 0);
    sink++;
}

__attribute__((noinline)) void outer_b(int depth) {
    descend(depth, 1);
    sink++;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    int deep = argc > 2 ? atoi(argv[2]) : 200;
    double start = thread_cpu_seconds();
    /* The clock is read every 64 rounds: a syscall every few microseconds would draw ptrace's
     * stops to its exit (an interrupt from another CPU takes tens of microseconds on a VM,
     * and the stop comes at whichever is first, that or the next return from the kernel). */
    for (unsigned long i = 0; (i & 63) || thread_cpu_seconds() - start < seconds; i++) {
        /* Paths a, b, a, b; depths shallow, shallow, deep, deep: every combination. */
        int depth = (i & 2) ? deep : 2;
        if (i & 1) outer_b(depth);
        else outer_a(depth);
    }
    return 0;
}
