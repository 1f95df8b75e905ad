/* A parent that forks and execs children (itself, with another role) that burn CPU in named
 * functions; the first child forks and execs a grandchild of its own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline __attribute__((always_inline)) void spin(double seconds) {
    double start = cpu_now();
    unsigned long x = 3;
    while (cpu_now() - start < seconds)
        for (int i = 0; i < 100000; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    sink = x;
}

/* The store after spin() keeps gcc from turning these into tail calls. */
__attribute__((noinline)) void parent_burn(void) { spin(0.3); sink++; }
__attribute__((noinline)) void child_one_burn(void) { spin(0.5); sink++; }
__attribute__((noinline)) void child_two_burn(void) { spin(0.5); sink++; }
__attribute__((noinline)) void grandchild_burn(void) { spin(0.5); sink++; }

static pid_t spawn(const char *self, const char *role) {
    pid_t pid = fork();
    if (pid == 0) {
        execl(self, self, role, (char *)NULL);
        perror("execl");
        _exit(127);
    }
    return pid;
}

int main(int argc, char **argv) {
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0) return 1;
    self[n] = 0;
    const char *role = argc > 1 ? argv[1] : "parent";
    if (strcmp(role, "child-one") == 0) {
        pid_t g = spawn(self, "grandchild");
        child_one_burn();
        waitpid(g, NULL, 0);
    } else if (strcmp(role, "child-two") == 0) {
        child_two_burn();
    } else if (strcmp(role, "grandchild") == 0) {
        grandchild_burn();
    } else {
        pid_t a = spawn(self, "child-one");
        pid_t b = spawn(self, "child-two");
        parent_burn();
        waitpid(a, NULL, 0);
        waitpid(b, NULL, 0);
    }
    return 0;
}
