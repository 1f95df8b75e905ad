//! End-to-end symbolization: separate debug info, C++ and Rust names, JIT maps, dlopen'd
//! libraries, kernel frames, the vdso, deleted binaries.

mod common;

use std::path::PathBuf;

use common::*;

#[test]
fn stripped_binary_with_build_id_debug_dir_is_fully_symbolized() {
    let _serial = serial();
    let dir = scratch();
    let full = build_shares(dir.path());
    let stripped = dir.path().join("stripped");
    let debug = dir.path().join("shares.debug");
    split_debug(&full, &debug, &stripped);
    // Place it as DIR/.build-id/ab/cdef....debug.
    let hex = build_id_of(&full);
    let debug_dir = dir.path().join("debug");
    let target = debug_dir.join(".build-id").join(&hex[..2]);
    std::fs::create_dir_all(&target).unwrap();
    std::fs::rename(&debug, target.join(format!("{}.debug", &hex[2..]))).unwrap();

    let reference = record_folded(dir.path(), &["--lines"], &[full.to_str().unwrap(), "2"]);
    let plain = record_folded(
        dir.path(),
        &["--lines"],
        &[stripped.to_str().unwrap(), "0.5"],
    );
    // Without the debug file the stripped binary has no names for its own functions.
    assert_eq!(samples_with(&plain, "hot_sixty"), 0);
    assert!(plain
        .iter()
        .any(|s| s.frames.iter().any(|f| f.starts_with("stripped+0x"))));

    let found = record_folded(
        dir.path(),
        &["--lines", "--debug-dir", debug_dir.to_str().unwrap()],
        &[stripped.to_str().unwrap(), "2"],
    );
    assert_named_with_lines(&found, "build-id");
    assert_eq!(hot_labels(&found), hot_labels(&reference));
}

#[test]
fn stripped_binary_with_gnu_debuglink_is_fully_symbolized() {
    let _serial = serial();
    let dir = scratch();
    let full = build_shares(dir.path());
    let stripped = dir.path().join("linked");
    let debug = dir.path().join("linked.debug");
    split_debug(&full, &debug, &stripped);
    run_tool(
        "objcopy",
        &[
            os(&format!("--add-gnu-debuglink={}", debug.display())),
            os(&stripped),
        ],
    );
    // The debug file goes where GDB looks: next to the binary in .debug/.
    let dot_debug = dir.path().join(".debug");
    std::fs::create_dir_all(&dot_debug).unwrap();
    std::fs::rename(&debug, dot_debug.join("linked.debug")).unwrap();

    let reference = record_folded(dir.path(), &["--lines"], &[full.to_str().unwrap(), "2"]);
    let found = record_folded(dir.path(), &["--lines"], &[stripped.to_str().unwrap(), "2"]);
    assert_named_with_lines(&found, "debuglink");
    assert_eq!(hot_labels(&found), hot_labels(&reference));
}

#[test]
fn mini_debug_info_names_a_stripped_binary() {
    let _serial = serial();
    let dir = scratch();
    let full = build_shares(dir.path());
    // Fedora's recipe: keep the function symbols that are not dynamic, xz them, and add them
    // as .gnu_debugdata to the stripped binary.
    let script = r#"
        set -e
        nm -D "$1" --format=posix --defined-only | awk '{print $1}' | sort > dynsyms
        nm "$1" --format=posix --defined-only | awk '{ if ($2 == "T" || $2 == "t" || $2 == "D") print $1 }' | sort > funcsyms
        comm -13 dynsyms funcsyms > keep_symbols
        objcopy --only-keep-debug "$1" debug
        objcopy -S --remove-section .gdb_index --remove-section .comment --keep-symbols=keep_symbols debug mini_debuginfo
        cp "$1" mini
        strip --strip-all -R .comment mini
        xz -f mini_debuginfo
        objcopy --add-section .gnu_debugdata=mini_debuginfo.xz mini
    "#;
    let st = std::process::Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(&full)
        .current_dir(dir.path())
        .status()
        .expect("sh");
    assert!(st.success(), "building the MiniDebugInfo binary failed");
    let mini = dir.path().join("mini");
    let stacks = record_folded(dir.path(), &[], &[mini.to_str().unwrap(), "1.5"]);
    for f in ["hot_sixty", "hot_thirty", "hot_ten"] {
        assert!(
            samples_with(&stacks, f) > 0,
            "{f} not named from .gnu_debugdata"
        );
    }
    assert!(self_share(&stacks, "hot_sixty") > 50.0);
}

#[test]
fn cpp_names_are_demangled() {
    let _serial = serial();
    let dir = scratch();
    let exe = compile("g++", "cxx.cpp", dir.path(), "cxx", &[]);
    let stacks = record_folded(dir.path(), &[], &[exe.to_str().unwrap(), "1"]);
    for f in [
        "ember_test::Worker<unsigned long>::burn(unsigned long)",
        "ember_test::Worker<unsigned int>::burn(unsigned int)",
    ] {
        assert!(samples_with(&stacks, f) > 100, "{f} missing");
    }
    assert!(!stacks
        .iter()
        .any(|s| s.frames.iter().any(|f| f.starts_with("_Z"))));
}

/// testdata/rustload built in release mode with `debug` set to `debug` (full debug info:
/// `true`; `line-tables-only` as `cargo ember` builds), in a target directory of its own.
fn build_rustload(debug: &str) -> PathBuf {
    let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("rustload-{debug}"));
    let st = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--offline",
            "--quiet",
            "--manifest-path",
        ])
        .arg(testdata("rustload/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env("CARGO_PROFILE_RELEASE_DEBUG", debug)
        .status()
        .expect("cargo");
    assert!(st.success(), "building testdata/rustload failed");
    target_dir.join("release/rustload")
}

#[test]
fn rust_functions_have_their_path_with_line_tables_only() {
    let _serial = serial();
    let exe = build_rustload("line-tables-only");
    let dir = scratch();
    let stacks = record_folded(dir.path(), &[], &[exe.to_str().unwrap(), "1"]);
    // As `nm -C` names them: DWARF built with line tables only says `churn<2000000>`.
    for f in [
        "rustload::engine::rust_hot_function",
        "rustload::engine::Mixer<_>::churn",
        "rustload::main",
    ] {
        assert!(samples_with(&stacks, f) > 100, "{f} missing: {stacks:?}");
    }
    let short = stacks
        .iter()
        .flat_map(|s| &s.frames)
        .find(|f| f.starts_with("churn") || f.starts_with("rust_hot_function"));
    assert!(short.is_none(), "a short name: {short:?}");
    // Inlined frames and lines stay DWARF's.
    assert!(
        stacks
            .iter()
            .any(|s| s.frames.iter().any(|f| f.ends_with("_[i]"))),
        "no inlined frame"
    );
}

#[test]
fn rust_names_are_demangled_without_hashes() {
    let _serial = serial();
    let exe = build_rustload("true");
    let dir = scratch();
    let stacks = record_folded(dir.path(), &[], &[exe.to_str().unwrap(), "1"]);
    for f in [
        "rustload::engine::rust_hot_function",
        "rustload::engine::Mixer<_>::churn",
    ] {
        assert!(samples_with(&stacks, f) > 100, "{f} missing");
    }
    let hash = |f: &str| {
        f.rsplit("::").next().is_some_and(|last| {
            last.len() == 17
                && last.starts_with('h')
                && last[1..].chars().all(|c| c.is_ascii_hexdigit())
        })
    };
    assert!(!stacks.iter().any(|s| s
        .frames
        .iter()
        .any(|f| hash(f) || f.starts_with("_ZN") || f.starts_with("_R"))));
    // Built without frame pointers, yet unwound through std to the C entry point.
    let hot: Vec<&Stack> = stacks
        .iter()
        .filter(|s| {
            s.frames
                .iter()
                .any(|f| f == "rustload::engine::rust_hot_function")
        })
        .collect();
    let complete: u64 = hot
        .iter()
        .filter(|s| {
            s.frames.iter().any(|f| f == "std::rt::lang_start_internal") && s.frames[1] == "_start"
        })
        .map(|s| s.count)
        .sum();
    let all: u64 = hot.iter().map(|s| s.count).sum();
    assert!(
        complete * 10 >= all * 9,
        "{complete} of {all} stacks reach _start"
    );
}

#[test]
fn jit_frames_are_named_from_the_perf_map() {
    let _serial = serial();
    let dir = scratch();
    let exe = compile("gcc", "jit.c", dir.path(), "jit", &[]);
    let stacks = record_folded(
        dir.path(),
        &["--per-process"],
        &[exe.to_str().unwrap(), "1"],
    );
    let share = self_share(&stacks, "jitted_hot_loop_[j]");
    assert!(share > 80.0, "jitted_hot_loop has {share:.1}%");
    // ... called from main (in the typical stack: a sample on the JIT code's first
    // instruction, before it set up its frame, may skip a caller, as with any frame pointer).
    let s = stacks
        .iter()
        .filter(|s| user_leaf(s) == "jitted_hot_loop_[j]")
        .max_by_key(|s| s.count)
        .unwrap();
    assert_eq!(s.frames[s.frames.len() - 2], "main", "{:?}", s.frames);
    let pid = s.frames[0].rsplit('-').next().unwrap();
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
}

#[test]
fn dlopened_library_is_symbolized() {
    let _serial = serial();
    let dir = scratch();
    let lib = compile(
        "gcc",
        "plugin.c",
        dir.path(),
        "libplugin.so",
        &["-fPIC", "-shared"],
    );
    let exe = compile("gcc", "dlopen.c", dir.path(), "dlopen", &["-ldl"]);
    let stacks = record_folded(
        dir.path(),
        &[],
        &[exe.to_str().unwrap(), lib.to_str().unwrap(), "1"],
    );
    let share = self_share(&stacks, "plugin_hot");
    assert!(share > 80.0, "plugin_hot has {share:.1}%");
}

#[test]
fn kernel_frames_are_named_when_allowed() {
    let _serial = serial();
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root: kernel samples are refused to unprivileged users at perf_event_paranoid >= 2");
    }
    let dir = scratch();
    let exe = compile("gcc", "syscalls.c", dir.path(), "syscalls", &[]);
    let stacks = record_folded(dir.path(), &["--kernel"], &[exe.to_str().unwrap(), "1"]);
    let n = total(&stacks);
    let in_kernel: u64 = stacks
        .iter()
        .filter(|s| s.frames.iter().any(|f| f.ends_with("_[k]")))
        .map(|s| s.count)
        .sum();
    assert!(
        in_kernel * 100 > n * 30,
        "{in_kernel} of {n} samples in the kernel"
    );
    let kptr_hidden = std::fs::read_to_string("/proc/kallsyms")
        .map(|s| {
            s.lines()
                .take(20)
                .all(|l| l.starts_with("0000000000000000"))
        })
        .unwrap_or(true);
    if !kptr_hidden {
        assert!(
            stacks.iter().any(|s| s
                .frames
                .iter()
                .any(|f| f.contains("sys_") && f.ends_with("_[k]"))),
            "no named syscall entry among the kernel frames"
        );
    }
    // Kernel frames sit above the user frames that made the call, on every stack.
    for s in stacks.iter() {
        if let Some(first_k) = s.frames.iter().position(|f| f.ends_with("_[k]")) {
            assert!(
                s.frames[first_k..].iter().all(|f| f.ends_with("_[k]")),
                "user frame above a kernel frame: {:?}",
                s.frames
            );
        }
    }
    // The workload's system calls come from its loops under `main`: a kernel
    // sample taken there keeps the user stack that made the call.
    let from_loops: u64 = stacks
        .iter()
        .filter(|s| {
            let first_k = s.frames.iter().position(|f| f.ends_with("_[k]"));
            first_k.is_some_and(|k| {
                let user = &s.frames[..k];
                user.iter().any(|f| f == "main")
                    && user
                        .iter()
                        .any(|f| f == "getpid_loop" || f == "read_zero_loop")
            })
        })
        .map(|s| s.count)
        .sum();
    assert!(
        from_loops * 2 > in_kernel,
        "only {from_loops} of {in_kernel} kernel samples hang under main's syscall loops"
    );

    let user = record_folded(
        dir.path(),
        &["--user-only"],
        &[exe.to_str().unwrap(), "0.5"],
    );
    assert!(!user
        .iter()
        .any(|s| s.frames.iter().any(|f| f.ends_with("_[k]"))));
}

/// Assembly written as a bare label (no symbol type or size, like ld.so's `_start`) is
/// named by its label, not by the function before it, nor left as an address.
#[test]
fn assembly_labels_without_a_size_name_their_code() {
    let _serial = serial();
    let exe = workload("labels", Build::NoFramePointers);
    let dir = scratch();
    let stacks = record_folded(dir.path(), &[], &[exe.to_str().unwrap(), "30"]);
    let in_label = samples_with(&stacks, "label_spin");
    assert!(
        in_label as f64 > 0.9 * total(&stacks) as f64,
        "label_spin in {in_label} of {} samples: {:?}",
        total(&stacks),
        stacks
            .iter()
            .map(|s| s.frames.join(";"))
            .collect::<Vec<_>>()
    );
    for s in &stacks {
        let main = s.frames.iter().position(|f| f == "main");
        if let Some(leaf) = main.and_then(|m| s.frames.get(m + 1)) {
            assert!(
                !leaf.starts_with("labels+0x") && leaf != "frame_dummy",
                "{s:?}"
            );
        }
    }
}

#[test]
fn vdso_frames_are_named() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    let stacks = record_folded(dir.path(), &[], &[exe.to_str().unwrap(), "1"]);
    assert!(
        !stacks
            .iter()
            .any(|s| s.frames.iter().any(|f| f.starts_with("[vdso]"))),
        "unnamed vdso frames"
    );
}

#[test]
fn deleted_binary_is_still_symbolized() {
    let _serial = serial();
    let dir = scratch();
    let exe = dir.path().join("doomed");
    std::fs::copy(workload("shares", Build::NoFramePointers), &exe).unwrap();
    // The binary is deleted while it runs (once it has been executed: deleting it between
    // sh's fork and the child's exec would leave nothing to run), before ember gets to open
    // it.
    let script = r#""$1" 1 > /dev/null & pid=$!
until [ "$(readlink /proc/$pid/exe)" = "$1" ]; do sleep 0.01; done
rm -f "$1"; wait"#;
    let stacks = record_folded(
        dir.path(),
        &[],
        &["sh", "-c", script, "sh", exe.to_str().unwrap()],
    );
    assert!(!exe.exists());
    assert!(self_share(&stacks, "hot_sixty") > 40.0, "{stacks:?}");
}
