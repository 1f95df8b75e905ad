//! A recording's metadata: what was profiled, its processes, threads and executables, the
//! processes `--process` keeps, and warnings about what the profile lacks.

use std::collections::{HashMap, HashSet};

use super::RecordOptions;
use crate::model::{Frame, ModuleId};
use crate::process::ProcessTable;
use crate::profile::Profile;

/// What a profile's metadata says about the recording it comes from.
pub(super) struct About {
    pub description: Vec<String>,
    pub event: &'static str,
    /// When it began, by the wall clock.
    pub start: Option<std::time::SystemTime>,
    pub duration: std::time::Duration,
    pub parse_errors: u64,
    /// Processes were taken over by ptrace because their stacks outgrew perf events' copies.
    pub taken_over: bool,
    /// Stacks were walked in the kernel (`--unwind`).
    pub walked_in_kernel: bool,
}

/// Give `profile` its metadata (what was profiled, processes, threads, warnings), keeping only
/// the processes `opts.filter` keeps.
pub(super) fn fill_metadata(
    profile: &mut Profile,
    procs: &ProcessTable,
    opts: &RecordOptions,
    about: About,
) {
    let meta = &mut profile.meta;
    meta.command = about.description;
    meta.frequency = opts.sampling.frequency;
    meta.event = about.event.to_string();
    meta.duration = about.duration;
    meta.start = about.start;
    describe_processes(profile, procs, opts);
    if !opts.target.filter.is_empty() {
        keep_filtered(profile, procs, opts);
    }
    // After filtering: a file that could not be read matters only where it was sampled.
    warn_about_inputs(profile, procs, about.parse_errors);
    let how = if about.walked_in_kernel {
        Sampled::InKernel
    } else if about.event.starts_with("ptrace") {
        Sampled::Ptrace
    } else if about.taken_over {
        Sampled::TakenOver
    } else {
        Sampled::Copies
    };
    warn_about_cut_stacks(profile, how);
}

/// How the stacks were taken, for what the warning about cut ones says.
enum Sampled {
    Ptrace,
    TakenOver,
    Copies,
    InKernel,
}

/// Stacks cut short at the root end (`[truncated]`) hang off a tower of their own instead
/// of under their callers: where more than 1 % of the samples are, say so and what helps.
fn warn_about_cut_stacks(profile: &mut Profile, how: Sampled) {
    let total = profile.total_samples();
    let cut = profile.samples_rooted_at(Frame::Truncated);
    if cut * 100 <= total {
        return;
    }
    let help = match how {
        Sampled::Ptrace => {
            "the stack was deeper than the 8 MiB ember copies, or not in a mapping of its own"
        }
        Sampled::TakenOver => {
            "perf events copy at most --stack-size bytes of stack per sample, and these were \
             taken before ptrace took their process over (it copies whole stacks; see -v)"
        }
        Sampled::Copies => {
            "perf events copy at most --stack-size bytes of stack per sample (65016 at most), \
             too few for these deep stacks without frame pointers; --backend ptrace copies \
             whole stacks, at a higher cost per sample"
        }
        Sampled::InKernel => {
            "the walk in the kernel handed over where it had no rows — before ember had told \
             it where the program's files are (its first milliseconds), or in code without \
             .eh_frame — and the 16 KiB copied there did not reach the root (see -v)"
        }
    };
    profile.meta.warnings.push(format!(
        "{:.0} % of the samples ({cut}) have stacks cut short before their thread's first \
         frame, shown under [truncated]: {help}",
        100.0 * cut as f64 / total as f64
    ));
}

/// Names of processes, executables and threads (with names the kernel cut mapped back).
fn describe_processes(profile: &mut Profile, procs: &ProcessTable, opts: &RecordOptions) {
    let meta = &mut profile.meta;
    for p in procs.processes() {
        let name = match &p.container {
            Some(c) => format!("{} [{c}]", p.name),
            None => p.name.clone(),
        };
        meta.processes.insert(p.pid, name);
        if let Some(exe) = &p.exe {
            meta.executables.insert(p.pid, exe.clone());
        }
    }
    for (&tid, t) in procs.threads() {
        let name = opts
            .target
            .thread_name_fixes
            .get(&t.name)
            .cloned()
            .unwrap_or_else(|| t.name.clone());
        meta.threads.insert(tid, (t.pid, name));
    }
}

/// Records that could not be read, and files that could not be opened that the profile has
/// samples in (once each, saying what it means for the profile). A process that was left out
/// (`--process`, `cargo ember`'s filter) or a file never sampled needs no names.
fn warn_about_inputs(profile: &mut Profile, procs: &ProcessTable, parse_errors: u64) {
    if parse_errors > 0 {
        profile.meta.warnings.push(format!(
            "{parse_errors} malformed perf records were skipped"
        ));
    }
    let mut samples_in: HashMap<ModuleId, u64> = HashMap::new();
    for (_, _, frames, count) in profile.stacks() {
        let mut seen = HashSet::new();
        for f in frames {
            if let Frame::Module { module, .. } = profile.frames()[f as usize] {
                if seen.insert(module) {
                    *samples_in.entry(module).or_default() += count;
                }
            }
        }
    }
    for (id, m) in procs.modules.iter() {
        let (Some(e), Some(n)) = (&m.error, samples_in.get(&id)) else {
            continue;
        };
        if m.path.starts_with('/') {
            profile.meta.warnings.push(format!(
                "{}: {e}; the {n} samples in it show its frames as {}+0xADDR",
                m.path,
                m.short_name()
            ));
        }
    }
}

/// Keep only the processes `opts.filter` keeps.
fn keep_filtered(profile: &mut Profile, procs: &ProcessTable, opts: &RecordOptions) {
    let keep: HashSet<u32> = procs
        .processes()
        .filter(|p| opts.target.filter.keeps(&p.name, p.exe.as_deref()))
        .map(|p| p.pid)
        .collect();
    let before = profile.total_samples();
    profile.retain_processes(|pid| keep.contains(&pid));
    let meta = &mut profile.meta;
    meta.processes.retain(|pid, _| keep.contains(pid));
    meta.threads.retain(|_, (pid, _)| keep.contains(pid));
    let threads = &meta.threads;
    meta.lifetimes.retain(|tid, _| threads.contains_key(tid));
    if profile.total_samples() == 0 && before > 0 {
        profile.meta.warnings.push(format!(
            "no process matched the filter; {before} samples of other processes were left out"
        ));
    }
}
