//! Functions that burn CPU, each under its own name, for profiling test runs.

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// CPU time of the calling thread, in seconds (CLOCK_THREAD_CPUTIME_ID): the work is measured
/// in CPU time, so it is the same however busy the machine is.
fn thread_cpu_seconds() -> f64 {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the call.
    unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

// Inlined into each hot function, so each burns CPU under its own name: `secs` of this
// thread's CPU time.
#[inline(always)]
fn spin(seed: u64, secs: f64) -> u64 {
    let end = thread_cpu_seconds() + secs;
    let mut x = seed;
    while thread_cpu_seconds() < end {
        for i in 0..100_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
    }
    std::hint::black_box(x)
}

/// Burns `secs` of this thread's CPU time.
///
/// ```
/// // A doctest: rustdoc builds it in a temporary directory, runs it and deletes it, so
/// // `cargo ember test` sees a process whose binary is gone (and leaves it out).
/// assert_ne!(rusttests::alpha_hot(0.05), 0);
/// ```
#[inline(never)]
pub fn alpha_hot(secs: f64) -> u64 {
    spin(1, secs)
}

#[inline(never)]
pub fn beta_hot(secs: f64) -> u64 {
    spin(2, secs)
}

#[inline(never)]
pub fn gamma_hot(secs: f64) -> u64 {
    spin(3, secs)
}

#[inline(never)]
pub fn bench_hot_loop(secs: f64) -> u64 {
    spin(4, secs)
}
