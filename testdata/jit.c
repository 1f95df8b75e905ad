/* A tiny JIT: copies machine code for a busy loop into an executable page at run time,
 * announces it in /tmp/perf-PID.map (the convention node, Python 3.12, the JVM agents and
 * LuaJIT use), and calls it over and over. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    /* Like real JITs, the generated function keeps a frame pointer:
     * push rbp; mov rbp, rsp; mov ecx, 1000000; loop: dec ecx; jnz loop; pop rbp; ret */
    static const unsigned char code[] = {0x55, 0x48, 0x89, 0xe5, 0xb9, 0x40, 0x42, 0x0f,
                                         0x00, 0xff, 0xc9, 0x75, 0xfc, 0x5d, 0xc3};
    unsigned char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) { perror("mmap"); return 1; }
    memcpy(page + 64, code, sizeof code);
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%d.map", (int)getpid());
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); return 1; }
    fprintf(f, "%lx %zx jitted_hot_loop\n", (unsigned long)(page + 64), sizeof code);
    fclose(f);
    void (*fn)(void) = (void (*)(void))(page + 64);
    double start = cpu_now();
    while (cpu_now() - start < seconds) fn();
    /* Leave the map behind as real JITs do: the profiler reads it after we exit. */
    return 0;
}
