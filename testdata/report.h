/* What the fixed-work workloads print about a run, for the scripts that compare profilers
 * (scripts/compare.sh, slowdown.sh, backends.sh):
 *   work_seconds X   wall time from report_begin() to report_end()
 *   cpu_seconds X    the process's CPU time (user + system)
 *   end_ns X         when the work ended, CLOCK_REALTIME in nanoseconds */
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>

static struct timespec report_start;

/* Call as the work starts. */
static void report_begin(void) { clock_gettime(CLOCK_MONOTONIC, &report_start); }

/* Call when the work is done. */
static void report_end(void) {
    struct timespec w1;
    clock_gettime(CLOCK_MONOTONIC, &w1);
    printf("work_seconds %.4f\n",
           (w1.tv_sec - report_start.tv_sec) + (w1.tv_nsec - report_start.tv_nsec) / 1e9);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("cpu_seconds %.4f\n", ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
                                     (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    printf("end_ns %lld\n", (long long)end.tv_sec * 1000000000LL + end.tv_nsec);
}
