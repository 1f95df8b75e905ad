//! Three tests, each burning CPU in its own function for a known time (1.2, 0.8 and 0.4 s of
//! its own CPU time); names longer than the 15 bytes the kernel keeps of a thread name.

use rusttests::{alpha_hot, beta_hot, gamma_hot};

/// `secs`, or half as much again for the test `RUSTTESTS_SLOWER` names (a regression).
fn cost(test: &str, secs: f64) -> f64 {
    match std::env::var("RUSTTESTS_SLOWER") {
        Ok(t) if t == test => secs * 1.5,
        _ => secs,
    }
}

#[test]
fn alpha_test_burns_cpu_for_a_while() {
    assert_ne!(alpha_hot(cost("alpha", 1.2)), 0);
}

#[test]
fn beta_test_burns_cpu_for_a_while() {
    assert_ne!(beta_hot(cost("beta", 0.8)), 0);
}

#[test]
fn gamma_test_burns_cpu_for_a_while() {
    assert_ne!(gamma_hot(cost("gamma", 0.4)), 0);
}

/// Fails only when asked to, so a failing run can be tested.
#[test]
fn fails_when_asked() {
    assert!(std::env::var_os("RUSTTESTS_FAIL").is_none(), "asked to fail");
}
