/* N threads (default 50) that each burn a little CPU in pool_work() and sleep in between, for
 * SECS seconds (default: until killed). For attaching to a process with many threads. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

__attribute__((noinline)) void pool_work(void) {
    unsigned long x = sink;
    for (int i = 0; i < 300000; i++) x = x * 6364136223846793005UL + i;
    sink = x;
}

static void *worker(void *arg) {
    (void)arg;
    struct timespec ts = {0, 5 * 1000 * 1000};
    for (;;) {
        pool_work();
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 50;
    double secs = argc > 2 ? atof(argv[2]) : 0;
    pthread_t t;
    for (int i = 0; i < n; i++)
        if (pthread_create(&t, NULL, worker, NULL) != 0) { perror("pthread_create"); return 1; }
    printf("ready\n");
    fflush(stdout);
    if (secs > 0) {
        usleep((useconds_t)(secs * 1e6));
        return 0;
    }
    for (;;) pause();
}
