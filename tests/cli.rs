//! The command line as a shell user meets it: completions a real bash offers, and man pages.

mod common;

use common::*;

/// What bash's completion of `words` (the last one being typed) offers, with ember's
/// completion script loaded as a user would (`source <(ember completions bash)`).
fn bash_completes(words: &[&str]) -> Vec<String> {
    let script = format!(
        "source <({EMBER} completions bash); COMP_WORDS=({}); COMP_CWORD={}; \
         COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
         _ember ember \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        words.len() - 1
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_commands_and_options() {
    assert_eq!(bash_completes(&["ember", "rec"]), vec!["record"]);
    let options = bash_completes(&["ember", "record", "--off"]);
    assert_eq!(options, vec!["--off-cpu"]);
    let backends = bash_completes(&["ember", "record", "--backend", ""]);
    assert_eq!(backends, vec!["auto", "perf", "ptrace"]);
}

#[test]
fn man_pages_are_written_for_every_command() {
    let dir = scratch();
    let out = ember(&["man", "-o", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    for (page, option) in [
        ("ember.1", "record"),
        ("ember-record.1", "off\\-cpu"),
        ("ember-diff.1", "fail\\-over"),
        ("ember-top.1", "once"),
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
        assert!(text.contains(option), "{page} does not mention {option}");
    }
    let unwritable = ember(&["man", "-o", "/proc/ember-man"]);
    assert_eq!(unwritable.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unwritable.stderr).contains("cannot write man pages"));
}
