//! ember: a sampling CPU profiler for Linux.
//!
//! The pipeline runs one way: [`target`] launches the command, [`sampler`] collects perf
//! records, [`process`] keeps each process's memory map, [`unwind`] turns samples into
//! addresses, [`profile`] aggregates them, [`symbolize`] names them and [`output`] writes
//! the files. [`record`] ties them together.

pub mod cargo;
pub mod cli;
pub mod load;
pub mod modules;
pub mod output;
pub mod process;
pub mod profile;
pub mod record;
pub mod render;
pub mod sampler;
pub mod stacks;
pub mod symbolize;
pub mod target;
pub mod unwind;
pub mod waits;
