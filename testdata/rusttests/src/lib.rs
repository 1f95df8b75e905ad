//! Functions that burn CPU, each under its own name, for profiling test runs.

use std::time::{Duration, Instant};

// Inlined into each hot function, so each burns CPU under its own name.
#[inline(always)]
fn spin(seed: u64, secs: f64) -> u64 {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut x = seed;
    while Instant::now() < end {
        for i in 0..100_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
    }
    std::hint::black_box(x)
}

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
