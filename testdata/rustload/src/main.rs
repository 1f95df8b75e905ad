//! A Rust workload for demangling tests: hot functions in a module and a generic impl, built
//! in release mode without frame pointers.

use std::time::{Duration, Instant};

mod engine {
    pub struct Mixer<const N: usize>;

    impl<const N: usize> Mixer<N> {
        #[inline(never)]
        pub fn churn(&self, seed: u64) -> u64 {
            let mut x = seed;
            for i in 0..(N as u64) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
            }
            std::hint::black_box(x)
        }
    }

    #[inline(never)]
    pub fn rust_hot_function(seed: u64) -> u64 {
        let mut x = seed;
        for i in 0..3_000_000u64 {
            x ^= x.rotate_left(7).wrapping_add(i);
        }
        std::hint::black_box(x)
    }
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let m = engine::Mixer::<2_000_000>;
    let mut acc = 0u64;
    while Instant::now() < end {
        acc = acc.wrapping_add(engine::rust_hot_function(acc));
        acc = acc.wrapping_add(m.churn(acc));
    }
    println!("{acc}");
}
