//! Loading the program into the kernel: aya-obj reads the object (its maps, functions, BTF
//! and relocations), aya makes the maps, and the two system calls that load the object's
//! BTF and the program are made here.
//!
//! Why not aya's `EbpfLoader`: in aya 0.14, `EbpfLoader::new()` reads and parses the
//! kernel's own BTF (`/sys/kernel/btf/vmlinux`, megabytes) whether the object needs it or
//! not, and that was over a third of ember's CPU in a recording of a few seconds. This
//! program has no CO-RE relocations and needs none of the kernel's types. (aya 0.15 reads
//! them only when an object needs them, but needs a newer Rust than ember builds with.)

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use aya::maps::MapData;
use aya_obj::btf::BtfFeatures;
use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info, bpf_prog_type};

use super::{refused, BpfError};

/// The program loaded, and the maps it uses, by name.
pub(super) struct Loaded {
    pub program: OwnedFd,
    pub maps: HashMap<String, MapData>,
}

/// Load program `name` of `object` (a perf-event program), its maps made first with the
/// sizes in `max_entries` (by map name) in place of the object's.
pub(super) fn load(
    object: &[u8],
    name: &str,
    max_entries: &[(&str, u32)],
) -> Result<Loaded, BpfError> {
    let mut obj = aya_obj::Object::parse(object).map_err(|e| object_error(&e))?;
    if obj.has_btf_relocations() {
        return Err(BpfError::Load(
            "the program's object has CO-RE relocations, and ember loads it without the \
             kernel's types"
                .into(),
        ));
    }
    if let Some(name) = global_data(&obj) {
        return Err(BpfError::Load(format!(
            "the program's object has global data ({name}: constants, strings such as \
             bpf_printk's), which ember's loader does not load"
        )));
    }
    let btf = load_object_btf(&mut obj)?;
    let maps = create_maps(&mut obj, btf.as_ref().map(|fd| fd.as_fd()), max_entries)?;
    let text_sections: HashSet<usize> = obj.functions.keys().map(|&(s, _)| s).collect();
    let fds = maps
        .iter()
        .map(|(n, (def, data))| (n.as_str(), data.fd().as_fd().as_raw_fd(), def));
    obj.relocate_maps(fds, &text_sections)
        .map_err(|e| object_error(&e))?;
    obj.relocate_calls(&text_sections)
        .map_err(|e| object_error(&e))?;
    let program = obj
        .programs
        .get(name)
        .ok_or_else(|| BpfError::Load(format!("no program `{name}` in the object")))?;
    let function = &obj.functions[&program.function_key()];
    let program = load_program(name, &obj.license, function, btf.as_ref())?;
    Ok(Loaded {
        program,
        maps: maps.into_iter().map(|(n, (_, data))| (n, data)).collect(),
    })
}

/// The first map of `obj` that holds global data (`.data`, `.rodata`, `.bss`): loaders fill
/// and freeze those, this one does not.
fn global_data(obj: &aya_obj::Object) -> Option<&str> {
    use aya_obj::EbpfSectionKind as Kind;
    obj.maps
        .iter()
        .find(|(_, m)| matches!(m.section_kind(), Kind::Data | Kind::Rodata | Kind::Bss))
        .map(|(name, _)| name.as_str())
}

fn object_error(e: &dyn std::error::Error) -> BpfError {
    let mut why = format!("ember's BPF object: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        why.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    BpfError::Load(why)
}

/// The object's BTF (its own types: the maps' keys and values, its functions), fixed up as
/// loaders do and handed to the kernel; `None` if the object has none.
fn load_object_btf(obj: &mut aya_obj::Object) -> Result<Option<OwnedFd>, BpfError> {
    // Every feature of BTF this object uses is in the kernels ember's program runs on
    // (bpf_loop: 5.17 and later).
    let features = BtfFeatures::new(true, true, true, true, true, true, true, true);
    let Some(btf) = obj
        .fixup_and_sanitize_btf(&features)
        .map_err(|e| object_error(&e))?
    else {
        return Ok(None);
    };
    let bytes = btf.to_bytes();
    // SAFETY: an all-zero bpf_attr is the "no options" value of every command.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing the BTF_LOAD member of the union.
    let u = unsafe { &mut attr.__bindgen_anon_7 };
    u.btf = bytes.as_ptr() as u64;
    u.btf_size = bytes.len() as u32;
    bpf_fd(bpf_cmd::BPF_BTF_LOAD, &mut attr)
        .map(Some)
        .map_err(|e| refused("the kernel refused the program's BTF", &e))
}

/// Each map of the object made in the kernel: its definition and its handle, by name.
fn create_maps(
    obj: &mut aya_obj::Object,
    btf: Option<BorrowedFd<'_>>,
    max_entries: &[(&str, u32)],
) -> Result<HashMap<String, (aya_obj::Map, MapData)>, BpfError> {
    let mut maps = HashMap::new();
    for (name, mut map) in obj.maps.drain() {
        if let Some(&(_, n)) = max_entries.iter().find(|(m, _)| *m == name) {
            map.set_max_entries(n);
        }
        let data = MapData::create(map.clone(), &name, btf)
            .map_err(|e| refused(&format!("could not make map `{name}`"), &e))?;
        maps.insert(name, (map, data));
    }
    Ok(maps)
}

/// `bpf(BPF_PROG_LOAD)` of `function` (the program with its subprograms linked in); where
/// the kernel refuses it, once more with the verifier's log, for its reason.
fn load_program(
    name: &str,
    license: &std::ffi::CStr,
    function: &aya_obj::Function,
    btf: Option<&OwnedFd>,
) -> Result<OwnedFd, BpfError> {
    let func_info = function.func_info.func_info_bytes();
    let line_info = function.line_info.line_info_bytes();
    // SAFETY: an all-zero bpf_attr is the "no options" value of every command.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing the PROG_LOAD member of the union.
    let u = unsafe { &mut attr.__bindgen_anon_3 };
    u.prog_type = bpf_prog_type::BPF_PROG_TYPE_PERF_EVENT as u32;
    u.insns = function.instructions.as_ptr() as u64;
    u.insn_cnt = function.instructions.len() as u32;
    u.license = license.as_ptr() as u64;
    for (to, from) in u.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *to = from as std::ffi::c_char;
    }
    if let Some(btf) = btf {
        u.prog_btf_fd = btf.as_raw_fd() as u32;
        if function.func_info_rec_size > 0 {
            u.func_info = func_info.as_ptr() as u64;
            u.func_info_cnt = function.func_info.len() as u32;
            u.func_info_rec_size = function.func_info_rec_size as u32;
        }
        if function.line_info_rec_size > 0 {
            u.line_info = line_info.as_ptr() as u64;
            u.line_info_cnt = function.line_info.len() as u32;
            u.line_info_rec_size = function.line_info_rec_size as u32;
        }
    }
    match bpf_fd(bpf_cmd::BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(fd),
        Err(e) => Err(with_verifier_log(&mut attr, e)),
    }
}

/// The reason the kernel refused a program: the verifier's, from its log (loaded once more
/// with it), else the system call's error (privileges, an old kernel).
fn with_verifier_log(attr: &mut bpf_attr, first: io::Error) -> BpfError {
    // The log of a refusal deep in the program runs to megabytes; kernels since 6.4 keep
    // its end, where the reason is.
    let mut log = vec![0u8; 4 << 20];
    {
        // SAFETY: the PROG_LOAD member, as written by `load_program`.
        let u = unsafe { &mut attr.__bindgen_anon_3 };
        u.log_level = 1;
        u.log_buf = log.as_mut_ptr() as u64;
        u.log_size = log.len() as u32;
    }
    let again = bpf_fd(bpf_cmd::BPF_PROG_LOAD, attr);
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    match (again, super::verifier_reason(&text)) {
        (Err(_), Some(reason)) => BpfError::Verifier(reason),
        _ => refused("the kernel refused to load the program", &first),
    }
}

/// How often program `fd` ran and its time in all (counted where
/// `kernel.bpf_stats_enabled` is 1).
pub(super) fn run_stats(fd: BorrowedFd<'_>) -> io::Result<(u64, std::time::Duration)> {
    // SAFETY: plain integers; all-zero is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info = &mut info as *mut bpf_prog_info as u64;
    attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok((
        info.run_cnt,
        std::time::Duration::from_nanos(info.run_time_ns),
    ))
}

/// A `bpf` command that returns a new descriptor (tried again where the kernel says to, as
/// loaders do: a load can meet memory still being freed).
fn bpf_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    let mut tries = 0;
    let fd = loop {
        match bpf(cmd, attr) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < 5 => tries += 1,
            r => break r?,
        }
    };
    // SAFETY: the command returned a descriptor of its own, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: `attr` is a live bpf_attr, its pointers to memory that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    /// The loader hands the kernel none of its own types, nor global data: the program
    /// must need neither.
    #[test]
    fn the_program_has_no_relocations_against_the_kernels_types() {
        let obj = aya_obj::Object::parse(super::super::OBJECT).unwrap();
        assert!(!obj.has_btf_relocations());
        assert_eq!(super::global_data(&obj), None);
        assert!(obj.programs.contains_key("unwind"));
    }
}
