/* Alternates burning CPU in burn() and sleeping in snooze(), 10 ms each, for SECS seconds
 * (default 2). A CPU profile sees only burn(); a wall-clock (--off-cpu) profile sees about
 * half of each. Prints the wall-time shares it measured itself:
 *   truth burn <percent>
 *   truth snooze <percent> */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void burn(double seconds) {
    double end = now() + seconds;
    unsigned long x = sink;
    while (now() < end)
        for (int i = 0; i < 10000; i++) x = x * 6364136223846793005UL + i;
    sink = x;
}

__attribute__((noinline)) void snooze(double seconds) {
    struct timespec ts = {0, (long)(seconds * 1e9)};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    double t_burn = 0, t_snooze = 0;
    double start = now();
    while (now() - start < seconds) {
        double a = now();
        burn(0.010);
        double b = now();
        snooze(0.010);
        double c = now();
        t_burn += b - a;
        t_snooze += c - b;
    }
    double total = t_burn + t_snooze;
    printf("truth burn %.2f\n", 100.0 * t_burn / total);
    printf("truth snooze %.2f\n", 100.0 * t_snooze / total);
    return 0;
}
