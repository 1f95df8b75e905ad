//! The target while it is profiled: the launched command or the attached processes, what
//! ends sampling ([`Stop`]), signals passed on, and the exit code ember ends with.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::sampler::{CommandState, Sampler};
use crate::target::{self, GatedChild};

/// What stopped sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// The launched command ended with this exit code.
    CommandExited(i32),
    /// Every attached process ended.
    TargetsExited,
    /// `-d` elapsed.
    Deadline,
    /// SIGINT/SIGTERM/SIGHUP to ember while attached.
    Signal,
    /// The live view was told to quit.
    Quit,
}

/// What is being profiled, while it runs.
pub(super) enum Running {
    Command(GatedChild),
    Pids(Vec<u32>),
    /// Every process on the machine, until `-d` or a signal.
    System,
}

impl Running {
    /// Pass a signal ember received on, or decide to stop.
    pub(super) fn on_signal(&self, sig: Signal, from_process: bool) -> bool {
        match self {
            Running::Command(child) => {
                // ember keeps recording until the command ends, then writes everything.
                child.pass_on(sig, from_process);
                false
            }
            Running::Pids(_) | Running::System => true,
        }
    }

    pub(super) fn ended(&mut self, sampler: &dyn Sampler) -> Option<Stop> {
        match self {
            Running::Command(child) => match sampler.command_state() {
                CommandState::Running => None,
                CommandState::Exited(code) => {
                    child.reaped(code);
                    Some(Stop::CommandExited(code))
                }
                CommandState::NotReaped => child.try_wait().map(Stop::CommandExited),
            },
            Running::Pids(pids) => pids
                .iter()
                .all(|&p| !target::is_alive(p))
                .then_some(Stop::TargetsExited),
            Running::System => None,
        }
    }

    /// The exit code ember ends with once sampling stopped for `stop`: the command's (waiting
    /// for it after `-d`, still passing signals on), or 0 after attaching.
    pub(super) fn exit_code(&mut self, stop: Stop, notify: fn(&str)) -> i32 {
        match (stop, self) {
            (Stop::CommandExited(code), _) => code,
            // Quitting a live view ends the command it launched.
            (Stop::Quit, Running::Command(child)) => {
                child.signal(Signal::SIGTERM);
                wait_forwarding_signals(child)
            }
            // `-d` ended sampling; the command runs on and its status is still ours.
            (_, Running::Command(child)) => {
                notify(
                    "sampling stopped after -d and the outputs are written; waiting for the \
                     command to end",
                );
                wait_forwarding_signals(child)
            }
            (_, Running::Pids(_) | Running::System) => 0,
        }
    }
}

/// Wait for the command after sampling stopped, still passing signals on.
fn wait_forwarding_signals(child: &mut GatedChild) -> i32 {
    loop {
        if let Some((sig, from_process)) = target::take_signal() {
            child.pass_on(sig, from_process);
        }
        if let Some(code) = child.try_wait() {
            return code;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
