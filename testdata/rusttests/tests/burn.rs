//! Three tests, each burning CPU in its own function for a known time (1.2, 0.8 and 0.4 s of
//! its own CPU time); names longer than the 15 bytes the kernel keeps of a thread name.

use rusttests::{alpha_hot, beta_hot, gamma_hot};

#[test]
fn alpha_test_burns_cpu_for_a_while() {
    assert_ne!(alpha_hot(1.2), 0);
}

#[test]
fn beta_test_burns_cpu_for_a_while() {
    assert_ne!(beta_hot(0.8), 0);
}

#[test]
fn gamma_test_burns_cpu_for_a_while() {
    assert_ne!(gamma_hot(0.4), 0);
}

/// Fails only when asked to, so a failing run can be tested.
#[test]
fn fails_when_asked() {
    assert!(std::env::var_os("RUSTTESTS_FAIL").is_none(), "asked to fail");
}
