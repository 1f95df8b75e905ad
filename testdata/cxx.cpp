// C++: namespaces, templates and overloads, for demangling.
#include <cstdlib>
#include <ctime>

namespace ember_test {
namespace detail {
static volatile unsigned long sink;
}

template <typename T>
struct Worker {
    __attribute__((noinline)) T burn(T seed) {
        T x = seed;
        for (int i = 0; i < 3000000; i++) x = x * static_cast<T>(6364136223846793005UL) + static_cast<T>(i);
        detail::sink += static_cast<unsigned long>(x);
        return x;
    }
};
}  // namespace ember_test

static double cpu_now() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? std::atof(argv[1]) : 1.0;
    ember_test::Worker<unsigned long> a;
    ember_test::Worker<unsigned int> b;
    double start = cpu_now();
    while (cpu_now() - start < seconds) {
        a.burn(1);
        b.burn(2);
    }
    return 0;
}
