//! End-to-end: `ember record -a`, every process on the machine.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A workload started by the test, not by ember; killed and reaped however the test ends.
struct Background(Child);

impl Background {
    fn start(name: &str, args: &[&str]) -> Background {
        let exe = workload(name, Build::NoFramePointers);
        let child = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start workload");
        Background(child)
    }

    /// The process name of workload `name` (its file name, as the kernel cuts it).
    fn comm(name: &str) -> String {
        let exe = workload(name, Build::NoFramePointers);
        let file = exe.file_name().unwrap().to_string_lossy().into_owned();
        file.chars().take(15).collect()
    }

    /// Wait for it to end; what it printed.
    fn output(mut self) -> Vec<u8> {
        let child = std::mem::replace(&mut self.0, Command::new("true").spawn().unwrap());
        child.wait_with_output().expect("wait for workload").stdout
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The stacks rooted at process `name`.
fn of_process(stacks: &[Stack], name: &str) -> Vec<Stack> {
    stacks
        .iter()
        .filter(|s| s.frames.first().is_some_and(|f| f == name))
        .cloned()
        .collect()
}

/// A process that was running before ember started, found by nothing but `-a`: its stacks
/// under its name, named, in the shares it measured of itself.
#[test]
fn every_process_is_sampled_in_the_shares_it_measured() {
    let _serial = serial();
    let dir = scratch();
    let folded = dir.path().join("all.folded");
    let target = Background::start("shares", &["3"]);
    std::thread::sleep(Duration::from_millis(200));
    let out = record_ok(&["-a", "-d", "2", "-v", "-o", folded.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let truth_out = target.output();
    let stacks = of_process(&read_folded(&folded), &Background::comm("shares"));
    assert!(
        total(&stacks) > 500,
        "{} samples of shares\n{stderr}",
        total(&stacks)
    );
    let n = total(&stacks);
    let truths = assert_shares_match_truths(&stacks, &truth_out, n, 3.0, "-a");
    assert_eq!(truths, 3, "{}", String::from_utf8_lossy(&truth_out));
    // Whole stacks: through main to the process's start.
    for s in &stacks {
        if user_leaf(s) == "hot_sixty" {
            assert!(s.frames.iter().any(|f| f == "main"), "{:?}", s.frames);
        }
    }
}

/// A process that starts after sampling began and ends before it ends: its frames are named
/// from its files, read while it ran.
#[test]
fn processes_started_and_ended_during_the_recording_are_named() {
    let _serial = serial();
    let dir = scratch();
    let folded = dir.path().join("late.folded");
    let ember = attach(&["-a", "-d", "3", "-o", folded.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(500));
    let late = Background::start("shares", &["0.8"]);
    let printed = late.output();
    let (status, stderr) = ember.finish();
    assert!(status.success(), "{stderr}");
    let stacks = of_process(&read_folded(&folded), &Background::comm("shares"));
    assert!(
        total(&stacks) > 200,
        "{} samples of shares\n{stderr}",
        total(&stacks)
    );
    assert!(
        self_share(&stacks, "hot_sixty") > 40.0,
        "{:?}\n{}",
        stacks.iter().take(5).map(|s| &s.frames).collect::<Vec<_>>(),
        String::from_utf8_lossy(&printed)
    );
}

/// With a command, every process is sampled while it runs; ember ends with it, with its
/// status.
#[test]
fn with_a_command_the_recording_ends_with_it() {
    let _serial = serial();
    let dir = scratch();
    let folded = dir.path().join("cmd.folded");
    let exe = workload("crash", Build::NoFramePointers);
    let out = ember(&[
        "record",
        "-a",
        "-o",
        folded.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "segv",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(139), "{stderr}");
    let comm: String = exe
        .file_name()
        .unwrap()
        .to_string_lossy()
        .chars()
        .take(15)
        .collect();
    let stacks = of_process(&read_folded(&folded), &comm);
    assert!(samples_with(&stacks, "crash_burn") > 100, "{stderr}");
}

/// A cgroup named as Docker names a container's, removed when the test ends.
struct FakeContainer(std::path::PathBuf);

impl FakeContainer {
    /// Under the first cgroup hierarchy here that takes a new group (v1's pids, or v2's).
    fn create(id: &str) -> FakeContainer {
        let name = format!("docker-{id}.scope");
        for root in [
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup",
        ] {
            let dir = std::path::Path::new(root).join(&name);
            if std::fs::create_dir(&dir).is_ok() {
                return FakeContainer(dir);
            }
        }
        panic!("no cgroup hierarchy here takes a new group (this test needs root)");
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).expect("move into the group");
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A process in a container is named with its container's id, as `docker ps` shows it.
#[test]
fn processes_in_containers_are_named_with_the_container() {
    let _serial = serial();
    let dir = scratch();
    let folded = dir.path().join("c.folded");
    let id = "c0ffee0123456789".repeat(4);
    let group = FakeContainer::create(&id);
    let target = Background::start("shares", &["2"]);
    group.add(target.0.id());
    let out = record_ok(&["-a", "-d", "1", "-o", folded.to_str().unwrap()]);
    drop(target);
    let name = format!("{} [docker:c0ffee012345]", Background::comm("shares"));
    let stacks = of_process(&read_folded(&folded), &name);
    assert!(
        total(&stacks) > 100,
        "no samples under {name}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
