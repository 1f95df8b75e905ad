//! A Rust workload for demangling tests: hot functions in a module and a generic impl, built
//! in release mode without frame pointers.

/// CPU time of this process, in seconds (CLOCK_PROCESS_CPUTIME_ID): the workload runs for an
/// amount of CPU time, the same however busy the machine is.
fn cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the call; 2 is CLOCK_PROCESS_CPUTIME_ID.
    unsafe { clock_gettime(2, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

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
    let end = cpu_seconds() + secs;
    let m = engine::Mixer::<2_000_000>;
    let mut acc = 0u64;
    while cpu_seconds() < end {
        acc = acc.wrapping_add(engine::rust_hot_function(acc));
        acc = acc.wrapping_add(m.churn(acc));
    }
    println!("{acc}");
}
