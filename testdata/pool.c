/* N threads (default 50) that each burn a little CPU in pool_work() and sleep 5 ms in between,
 * for SECS seconds (default: until killed). For attaching to a process with many threads.
 * With ROUNDS > 0 (pool N 0 ROUNDS) each thread does exactly ROUNDS rounds, and the program
 * prints how long that took (report.h: "work_seconds X", ...), for scripts/backends.sh. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "report.h"

static volatile unsigned long sink;

__attribute__((noinline)) void pool_work(void) {
    unsigned long x = sink;
    for (int i = 0; i < 300000; i++) x = x * 6364136223846793005UL + i;
    sink = x;
}

static long rounds;

static void *worker(void *arg) {
    (void)arg;
    struct timespec ts = {0, 5 * 1000 * 1000};
    for (long r = 0; rounds == 0 || r < rounds; r++) {
        pool_work();
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 50;
    double secs = argc > 2 ? atof(argv[2]) : 0;
    rounds = argc > 3 ? atol(argv[3]) : 0;
    pthread_t *t = calloc(n, sizeof *t);
    report_begin();
    for (int i = 0; i < n; i++)
        if (pthread_create(&t[i], NULL, worker, NULL) != 0) { perror("pthread_create"); return 1; }
    if (rounds > 0) {
        for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
        report_end();
        return 0;
    }
    printf("ready\n");
    fflush(stdout);
    if (secs > 0) {
        usleep((useconds_t)(secs * 1e6));
        return 0;
    }
    for (;;) pause();
}
