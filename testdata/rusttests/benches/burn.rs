//! A `harness = false` bench: a plain main that burns CPU.

fn main() {
    let secs = if std::env::args().any(|a| a == "--bench") { 1.0 } else { 0.1 };
    println!("{}", rusttests::bench_hot_loop(secs));
}
