//! Names for the syscalls a waiting thread sits in, for the `[off-cpu] …` frames of
//! wall-clock profiles.

use crate::arch::Sysno;

use crate::model::WaitReason;

/// The name of syscall `nr`, if it has one (the `syscalls` crate's table, generated
/// from the kernel's).
pub fn name(nr: u64) -> Option<&'static str> {
    Sysno::new(usize::try_from(nr).ok()?).map(|s| s.name())
}

/// The number of the syscall named `name`.
pub fn number(name: &str) -> Option<u64> {
    name.parse::<Sysno>().ok().map(|s| s.id() as u64)
}

/// The leaf frame of an off-CPU stack: why the thread was not running.
pub fn wait_label(reason: WaitReason) -> String {
    let what = match reason {
        WaitReason::Unknown => "waiting".to_string(),
        WaitReason::Runnable => "runnable".to_string(),
        WaitReason::PageFault => "page fault".to_string(),
        WaitReason::Syscall(nr) => match name(nr) {
            Some(n) => n.to_string(),
            None => format!("syscall {nr}"),
        },
    };
    format!("[off-cpu] {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_usual_waits() {
        let label = |nr| wait_label(WaitReason::Syscall(nr));
        assert_eq!(label(0), "[off-cpu] read");
        assert_eq!(label(35), "[off-cpu] nanosleep");
        assert_eq!(label(202), "[off-cpu] futex");
        assert_eq!(label(230), "[off-cpu] clock_nanosleep");
        assert_eq!(label(232), "[off-cpu] epoll_wait");
        assert_eq!(label(100_000), "[off-cpu] syscall 100000");
        assert_eq!(wait_label(WaitReason::Unknown), "[off-cpu] waiting");
        assert_eq!(wait_label(WaitReason::Runnable), "[off-cpu] runnable");
        assert_eq!(wait_label(WaitReason::PageFault), "[off-cpu] page fault");
    }

    #[test]
    fn numbers_by_name() {
        assert_eq!(number("epoll_wait"), Some(232));
        assert_eq!(number("read"), Some(0));
        assert_eq!(number("no_such_call"), None);
        assert_eq!(name(334), Some("rseq"));
    }
}
