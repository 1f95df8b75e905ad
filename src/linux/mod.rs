//! What ember asks of Linux outside perf events and ptrace: what /proc and /sys say
//! ([`procfs`]), and the scheduling of ember's own threads ([`sched`]). A leaf: it uses
//! nothing else of ember.

pub mod limits;
pub mod memory;
pub mod procfs;
pub mod sched;

pub use procfs::*;
