/* Burns CPU in crash_burn, then ends badly: crash_burn MODE where MODE is segv (139), abort
 * (134), kill (SIGKILL, 137) or exec (execs `sh -c 'exit 5'`). No core dumps. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

__attribute__((noinline)) void crash_burn(double seconds) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    double start = ts.tv_sec + ts.tv_nsec / 1e9, now = start;
    unsigned long x = sink;
    while (now - start < seconds) {
        for (int i = 0; i < 100000; i++) x = x * 6364136223846793005UL + 1;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        now = ts.tv_sec + ts.tv_nsec / 1e9;
    }
    sink = x;
}

int main(int argc, char **argv) {
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    const char *mode = argc > 1 ? argv[1] : "segv";
    crash_burn(0.4);
    if (strcmp(mode, "segv") == 0) *(volatile int *)0 = 1;
    if (strcmp(mode, "abort") == 0) abort();
    if (strcmp(mode, "kill") == 0) raise(SIGKILL);
    if (strcmp(mode, "exec") == 0) execl("/bin/sh", "sh", "-c", "exit 5", (char *)0);
    return 0;
}
