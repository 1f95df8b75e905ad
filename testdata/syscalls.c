/* Spends its time in the kernel: getpid() system calls and read()s of /dev/zero. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void getpid_loop(void) {
    for (int i = 0; i < 20000; i++) syscall(SYS_getpid);
}

__attribute__((noinline)) void read_zero_loop(int fd) {
    static char buf[65536];
    for (int i = 0; i < 200; i++)
        if (read(fd, buf, sizeof buf) < 0) exit(1);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    int fd = open("/dev/zero", O_RDONLY);
    if (fd < 0) return 1;
    double start = cpu_now();
    while (cpu_now() - start < seconds) {
        getpid_loop();
        read_zero_loop(fd);
    }
    return 0;
}
