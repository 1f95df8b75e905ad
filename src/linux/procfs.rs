//! What Linux tells ember through /proc and /sys: thread lists, names, states, memory maps,
//! sysctls and the online CPUs.

use std::io;

/// The CPUs the kernel reports online, e.g. "0-3,6".
pub fn online_cpus() -> io::Result<Vec<u32>> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    parse_cpu_list(&s).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, s))
}

pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 65536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// A sysctl by its dotted name (`kernel.perf_event_paranoid`), trimmed.
pub fn read_sysctl(name: &str) -> Option<String> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The thread ids of a process, from `/proc/PID/task`.
pub fn list_threads(pid: u32) -> io::Result<Vec<u32>> {
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// The container or systemd service process `pid` runs in, from its cgroups
/// (`/proc/PID/cgroup`); `None` for one in neither.
pub fn container_of(pid: u32) -> Option<String> {
    container_from_cgroups(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

/// A container id (its first 12 hex digits, as `docker ps` shows it, after the runtime's
/// name where the path says it: `docker-`, `cri-containerd-`, `crio-`, `libpod-`) or a
/// systemd service (`nginx.service`), from the lines of a `/proc/PID/cgroup`.
pub fn container_from_cgroups(text: &str) -> Option<String> {
    let paths = || text.lines().filter_map(|l| l.splitn(3, ':').nth(2));
    let container = paths().flat_map(|p| p.split('/')).find_map(|part| {
        let part = part.strip_suffix(".scope").unwrap_or(part);
        let (runtime, id) = match part.rsplit_once('-') {
            Some((runtime, id)) => (Some(runtime), id),
            None => (None, part),
        };
        let is_id = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
        is_id.then(|| match runtime {
            Some(r) if !r.is_empty() => format!("{r}:{}", &id[..12]),
            _ => id[..12].to_string(),
        })
    });
    container.or_else(|| {
        paths()
            .flat_map(|p| p.split('/'))
            .find(|part| part.ends_with(".service") && !part.starts_with("user@"))
            .map(str::to_string)
    })
}

/// The ids of every process, from `/proc`, in order.
pub fn list_processes() -> io::Result<Vec<u32>> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// A field of `/proc/TASK/status` (`TASK` a PID, a TID or `self`), trimmed.
pub fn status_field(task: &str, field: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{task}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// The name (`comm`) of thread `tid` of process `pid`; empty if it is gone.
pub fn comm(pid: u32, tid: u32) -> Vec<u8> {
    let mut c = std::fs::read(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
    if c.last() == Some(&b'\n') {
        c.pop();
    }
    c
}

/// Read the state letter and flags of a process from `/proc/PID/stat`.
pub fn proc_state(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may contain anything: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 9 of stat (flags) is the 7th after the name.
    let flags = fields.get(6)?.parse().ok()?;
    Some((state, flags))
}

/// The CPU time a process used so far (user and system, all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, the 12th and 13th after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Some(ticks as f64 / hz as f64)
}

/// The name (`comm`) of process `pid` as a string, without the newline.
pub fn process_name(pid: u32) -> io::Result<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
    Ok(comm.trim_end_matches('\n').to_string())
}

/// The executable of process `pid` (the path it was started from; " (deleted)" cut off).
pub fn executable(pid: u32) -> Option<String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let exe = exe.to_string_lossy();
    Some(exe.trim_end_matches(" (deleted)").to_string())
}

/// The text of `/proc/PID/maps` (read with [`parse_maps_line`]).
pub fn maps(pid: u32) -> io::Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
}

/// Where a mapping's file can be opened even after it was deleted or replaced on disk.
pub fn map_file(pid: u32, start: u64, end: u64) -> std::path::PathBuf {
    format!("/proc/{pid}/map_files/{start:x}-{end:x}").into()
}

/// The directory of thread `tid` of process `pid` (its `stat`, `schedstat`, `syscall`).
pub fn task_dir(pid: u32, tid: u32) -> String {
    format!("/proc/{pid}/task/{tid}")
}

/// The file descriptors this process has open.
pub fn own_fds() -> io::Result<Vec<i32>> {
    Ok(std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsLine<'a> {
    pub start: u64,
    pub end: u64,
    pub executable: bool,
    pub offset: u64,
    /// (major, minor, inode); `None` for anonymous memory.
    pub dev_ino: Option<(u32, u32, u64)>,
    /// The path or pseudo-name (`[vdso]`); empty for anonymous memory.
    pub path: &'a str,
}

/// Parse `start-end perms offset maj:min inode   path`.
pub fn parse_maps_line(line: &str) -> Option<MapsLine<'_>> {
    let mut rest = line;
    let mut field = || {
        let r = rest.trim_start();
        let end = r.find(' ').unwrap_or(r.len());
        let (f, tail) = r.split_at(end);
        rest = tail;
        f
    };
    let (range, perms, offset, dev, inode) = (field(), field(), field(), field(), field());
    let path = rest.trim_start();
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end < start || perms.len() < 3 {
        return None;
    }
    let offset = u64::from_str_radix(offset, 16).ok()?;
    let (maj, min) = dev.split_once(':')?;
    let maj = u32::from_str_radix(maj, 16).ok()?;
    let min = u32::from_str_radix(min, 16).ok()?;
    let inode: u64 = inode.parse().ok()?;
    Some(MapsLine {
        start,
        end,
        executable: perms.as_bytes()[2] == b'x',
        offset,
        dev_ino: (inode != 0).then_some((maj, min, inode)),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_and_services_from_cgroups() {
        let id = "3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";
        let docker = format!("0::/system.slice/docker-{id}.scope\n");
        assert_eq!(
            container_from_cgroups(&docker).as_deref(),
            Some("docker:3f2a1b4c5d6e")
        );
        let kube = format!("0::/kubepods/burstable/pod1234/{id}\n");
        assert_eq!(
            container_from_cgroups(&kube).as_deref(),
            Some("3f2a1b4c5d6e")
        );
        let crio = format!("4:memory:/kubepods.slice/crio-{id}.scope\n0::/\n");
        assert_eq!(
            container_from_cgroups(&crio).as_deref(),
            Some("crio:3f2a1b4c5d6e")
        );
        let unit = "0::/system.slice/nginx.service\n";
        assert_eq!(
            container_from_cgroups(unit).as_deref(),
            Some("nginx.service")
        );
        let none = "0::/user.slice/user-0.slice/user@0.service/app.slice\n4:memory:/process_api/84aebfc28f510d9c6df14b27095d7b7a\n";
        assert_eq!(container_from_cgroups(none), None);
        assert_eq!(container_from_cgroups("0::/\n"), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-4,7"), Some(vec![0, 2, 3, 4, 7]));
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list("3-1"), None);
    }
    #[test]
    fn parses_proc_maps_lines() {
        let l = parse_maps_line(
            "7f1c2a028000-7f1c2a1bd000 r-xp 00028000 fe:01 1835056                    /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!(l.start, 0x7f1c2a028000);
        assert_eq!(l.end, 0x7f1c2a1bd000);
        assert!(l.executable);
        assert_eq!(l.offset, 0x28000);
        assert_eq!(l.dev_ino, Some((0xfe, 1, 1835056)));
        assert_eq!(l.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        let v = parse_maps_line(
            "7ffd5b7f0000-7ffd5b7f2000 r-xp 00000000 00:00 0                          [vdso]",
        )
        .unwrap();
        assert_eq!(v.path, "[vdso]");
        assert_eq!(v.dev_ino, None);
        let anon = parse_maps_line("7f00-8f00 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(anon.path, "");
        assert!(!anon.executable);
        let spaces =
            parse_maps_line("1000-2000 r-xp 00000000 08:01 12 /tmp/a b (deleted)").unwrap();
        assert_eq!(spaces.path, "/tmp/a b (deleted)");
        assert!(parse_maps_line("garbage").is_none());
        assert!(parse_maps_line("2000-1000 r-xp 0 0:0 0 x").is_none());
        assert!(parse_maps_line("").is_none());
    }
}
