/* Loads PLUGIN.so with dlopen() once running, then burns CPU in its function. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: dlopen PLUGIN.so [SECONDS]\n"); return 2; }
    double seconds = argc > 2 ? atof(argv[2]) : 1.0;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    void (*hot)(double) = (void (*)(double))dlsym(h, "plugin_hot");
    if (!hot) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    double start = cpu_now();
    while (cpu_now() - start < seconds) hot(seconds);
    return 0;
}
