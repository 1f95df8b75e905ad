//! Mapping kernel objects' memory (perf ring buffers, BPF maps) into ember, and reading
//! another process's; giving the heap's free memory back.

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;

/// Map `len` bytes of `fd` (a perf event's buffer, a `BPF_F_MMAPABLE` map) shared, read and
/// write, anywhere.
pub fn map_shared(fd: RawFd, len: usize) -> io::Result<NonNull<u8>> {
    map_shared_at(fd, len, 0, true)
}

/// Map `len` bytes of `fd` from byte `offset` (a multiple of the page size) shared, read
/// only or read and write, anywhere.
pub fn map_shared_at(
    fd: RawFd,
    len: usize,
    offset: usize,
    writable: bool,
) -> io::Result<NonNull<u8>> {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a fresh shared mapping of a descriptor, as perf_event_open(2) and bpf(2)
    // document for these objects.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd,
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(NonNull::new(p as *mut u8).expect("mmap returned null"))
}

/// The size of a memory page.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Fill `buf` from address `addr` of process `pid` (`process_vm_readv`); false if any of it
/// cannot be read.
pub fn read_process(pid: u32, addr: u64, buf: &mut [u8]) -> bool {
    let len = buf.len();
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: one local buffer we own, of its own length; the remote side is only read.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    n >= 0 && n as usize == len
}

/// Hand the heap's free memory back to the system (glibc keeps what was freed for later;
/// after a window whose symbolization read a large program's debug info, that is hundreds of
/// MB a long recording would hold for nothing).
pub fn give_back_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}
