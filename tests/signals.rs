//! End-to-end: signals during `ember record -- CMD`. The command gets them, ember waits for it,
//! writes every output whole, and passes the command's status through.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn spawn_recording(
    backend: &str,
    outputs: &[&std::path::Path],
    new_group: bool,
) -> std::process::Child {
    let exe = workload("shares", Build::NoFramePointers);
    let mut cmd = Command::new(EMBER);
    cmd.args(["record", "--backend", backend]);
    for o in outputs {
        cmd.arg("-o").arg(o);
    }
    cmd.arg("--").arg(&exe).arg("60");
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    if new_group {
        // Like a terminal's foreground job: ember and the command share a process group.
        cmd.process_group(0);
    }
    cmd.spawn().expect("spawn ember")
}

#[test]
fn ctrl_c_reaches_the_command_and_outputs_are_written() {
    let _serial = serial();
    for backend in BACKENDS {
        let dir = scratch();
        let (svg, folded) = (dir.path().join("a.svg"), dir.path().join("a.folded"));
        let child = spawn_recording(backend, &[&svg, &folded], true);
        let command = child_of(child.id());
        wait_for_cpu(command, 0.0, 0.5);
        let cpu = cpu_seconds(command);
        // What the terminal does on Ctrl-C: SIGINT to the whole foreground process group.
        kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGINT).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(130),
            "{backend}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_outputs_whole(&svg, &folded, cpu, backend);
    }
}

#[test]
fn sigterm_to_ember_is_passed_to_the_command() {
    let _serial = serial();
    for (backend, sig) in [
        ("perf", Signal::SIGTERM),
        ("perf", Signal::SIGINT),
        ("perf", Signal::SIGHUP),
        ("ptrace", Signal::SIGTERM),
        ("ptrace", Signal::SIGHUP),
    ] {
        let dir = scratch();
        let (svg, folded) = (dir.path().join("b.svg"), dir.path().join("b.folded"));
        let child = spawn_recording(backend, &[&svg, &folded], false);
        let command = child_of(child.id());
        wait_for_cpu(command, 0.0, 0.5);
        let cpu = cpu_seconds(command);
        // Sent to ember alone (as `kill PID` would): ember passes it on to the command.
        kill(Pid::from_raw(child.id() as i32), sig).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(128 + sig as i32),
            "{backend} {sig:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_outputs_whole(&svg, &folded, cpu, &format!("{backend} {sig:?}"));
    }
}
