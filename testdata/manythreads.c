/* Starts N threads (default 1000) that each burn a little CPU, and joins them. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static volatile unsigned long sink;

static void *worker(void *arg) {
    unsigned long x = (unsigned long)arg;
    for (int i = 0; i < 2000000; i++) x = x * 6364136223846793005UL + 1;
    sink += x;
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    pthread_t *t = calloc(n, sizeof *t);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (int i = 0; i < n; i++)
        if (pthread_create(&t[i], &attr, worker, (void *)(long)i) != 0) { perror("pthread_create"); return 1; }
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    return 0;
}
