/* A shared library loaded with dlopen() after the program started (see dlopen.c). */
static volatile unsigned long sink;

__attribute__((noinline)) void plugin_hot(double seconds_unused) {
    (void)seconds_unused;
    unsigned long x = sink;
    for (int i = 0; i < 5000000; i++) x = x * 6364136223846793005UL + 1;
    sink = x;
}
