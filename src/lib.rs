//! ember: a sampling CPU profiler for Linux.
//!
//! The pipeline runs one way: [`target`] launches the command (or checks the PIDs to attach
//! to), [`sampler`] collects records in the perf ring-buffer format from perf events or ptrace,
//! [`process`] and [`modules`] keep each process's memory map and the files mapped in it,
//! [`unwind`] turns samples into addresses, [`waits`] accounts off-CPU time, [`profile`]
//! aggregates them, [`symbolize`] names them, [`stacks`] joins the two, and [`output`] writes
//! the files. [`record`] ties them together: a reader thread copies what the sampler produced,
//! a processing thread unwinds and aggregates it. [`load`] and [`render`] read saved profiles
//! back for `ember flamegraph`, `diff` and `report`; [`top`] is the live view; [`cli`] and
//! [`cargo`] are the command lines of `ember` and `cargo ember`.

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!(
    "ember profiles Linux x86-64 processes (perf events, ptrace and the x86-64 unwinder): \
     build it for x86_64-unknown-linux-gnu"
);

pub mod arch;
pub mod cargo;
pub mod cli;
pub mod linux;
pub mod load;
pub mod model;
pub mod modules;
pub mod output;
pub mod process;
pub mod profile;
pub mod python;
pub mod record;
pub mod render;
pub mod sampler;
pub mod serve;
pub mod stacks;
pub mod symbolize;
pub mod target;
pub mod top;
pub mod unwind;
pub mod unwind_table;
pub mod waits;
