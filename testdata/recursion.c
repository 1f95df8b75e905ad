/* Recursion DEPTH frames deep (default 200) that burns CPU at the bottom, over and over, for
 * SECONDS of CPU time (default 1.5); with a third argument `kib`, through frames of 1 KiB each
 * (`recurse_kib`: 5,000 of them are 5 MB of stack). After `then`, a program to exec when done
 * (one program after another in the same process).
 *
 * Usage: recursion [DEPTH] [SECONDS] [kib|flat] [then PROGRAM ARGS...] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) unsigned long leaf_burn(void) {
    unsigned long x = sink;
    for (int i = 0; i < 2000000; i++) x = x * 6364136223846793005UL + 1;
    return x;
}

/* The volatile store after the call keeps gcc from turning this into a loop. */
__attribute__((noinline)) unsigned long recurse(int depth) {
    unsigned long r = depth == 0 ? leaf_burn() : recurse(depth - 1);
    sink += r;
    return r ^ (unsigned long)depth;
}

/* A frame of 1 KiB; the volatile pad is used after the call. */
__attribute__((noinline)) unsigned long recurse_kib(int depth) {
    volatile char pad[1024];
    pad[depth & 1023] = (char)depth;
    unsigned long r = depth == 0 ? leaf_burn() : recurse_kib(depth - 1);
    sink += r + pad[depth & 1023];
    return r ^ (unsigned long)depth;
}

int main(int argc, char **argv) {
    int depth = argc > 1 ? atoi(argv[1]) : 200;
    double seconds = argc > 2 ? atof(argv[2]) : 1.5;
    int kib = argc > 3 && strcmp(argv[3], "kib") == 0;
    double start = cpu_now();
    /* recurse(depth - 1) makes exactly `depth` recurse frames. */
    while (cpu_now() - start < seconds) {
        if (kib) recurse_kib(depth - 1);
        else recurse(depth - 1);
    }
    if (argc > 5 && strcmp(argv[4], "then") == 0) {
        execv(argv[5], argv + 5);
        perror("recursion: exec");
        return 127;
    }
    return 0;
}
