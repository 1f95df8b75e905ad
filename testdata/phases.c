/* Two phases, one after the other: alpha() burns SECONDS of CPU time, then beta() as long.
 * For timelines: every alpha sample comes before every beta sample.
 *
 * Usage: phases [SECONDS] */
#include <stdlib.h>

#include "spin.h"

__attribute__((noinline)) void alpha(double seconds) {
    double end = thread_cpu_seconds() + seconds;
    while (thread_cpu_seconds() < end) SPIN(20000);
}

__attribute__((noinline)) void beta(double seconds) {
    double end = thread_cpu_seconds() + seconds;
    while (thread_cpu_seconds() < end) SPIN(20000);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    alpha(seconds);
    beta(seconds);
    return 0;
}
